//! srv: the mesh's services and servers.
//!
//! Modules:
//!
//! - [`browse`]: the whole tree without FUSE, for `mesh ls` and `mesh cat`.
//! - [`commands`]: the client commands, over a router's Unix socket.
//! - [`demo`]: `mesh demo`, the seed's scenario recorded to an MP4.
//! - [`exec`]: the `exec` kind: one process per conversation, its standard
//!   input and output being the conversation.
//! - [`fs`]: the namespace as files, mounted through FUSE and served to
//!   other machines. It knows service kinds only through
//!   [`fs::KindExtras`]; [`kinds`] builds on it, never the other way.
//! - [`keys`]: machine keys for network links, and `mesh keygen`.
//! - [`kinds`]: what each `kind` of the deployment file becomes, and what
//!   it adds to the tree.
//! - [`nsproc`]: `mesh ns`, a command in a namespace of its own.
//! - [`pipeline`]: the deployment file's pipelines, started where their
//!   first stage is served.
//! - [`restart`]: when what ended (a pipeline, a pty's command) is started
//!   again: the `restart` key, its waits and its limit.
//! - [`slots`]: bounds on a service's processes (starting, alive,
//!   waiting), and starts off the router's workers; [`exec`] uses it.
//! - [`up`]: running the routers of a deployment file in one process, as
//!   `mesh up` does.

pub mod browse;
pub mod commands;
pub mod demo;
pub mod exec;
pub mod fs;
pub mod graph;
pub mod keys;
pub mod kinds;
pub mod nsproc;
pub mod parser;
pub mod pipeline;
pub mod pty;
pub mod restart;
pub mod slots;
pub mod up;
