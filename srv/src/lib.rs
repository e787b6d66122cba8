//! srv: the mesh's services and servers.
//!
//! Modules:
//!
//! - [`commands`]: the client commands, over a router's Unix socket.
//! - [`exec`]: the `exec` kind: one process per conversation, its standard
//!   input and output being the conversation.
//! - [`kinds`]: what each `kind` of the deployment file becomes.
//! - [`up`]: running the routers of a deployment file in one process, as
//!   `mesh up` does.

pub mod commands;
pub mod exec;
pub mod fs;
pub mod kinds;
pub mod parser;
pub mod pty;
pub mod up;
