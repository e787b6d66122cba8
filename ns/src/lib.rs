//! ns: the core of the mesh, below the file system.
//!
//! Modules, from the bottom up:
//!
//! - [`path`]: machine and service names, and addresses (`/svc/S`,
//!   `/n/M/svc/S`, `/n/M/svc/S/N`).
//! - [`error`]: the error strings, Plan 9 style, and their errno table.
//! - [`cbor`]: one CBOR message, encoded and decoded (the registry's, the
//!   tree's, the pipeline's).
//! - [`envelope`]: what every frame carries, and its CBOR encoding with
//!   zero-copy payloads.
//! - [`conv`]: conversation endpoints: ordered input, end-to-end credit,
//!   end of input, hangup; the [`conv::Service`] trait.
//! - [`route`]: the route table: best route per machine, nearest replica.
//! - [`gossip`]: path-vector announcements, incremental and numbered,
//!   naming the links lost.
//! - [`registry`]: the registry protocol and the router's client of it.
//! - [`term`]: terminals and their counters and traces; [`crossed`]: the
//!   conversations that crossed a link, failed when it dies.
//! - [`router`]: forwarding, resolution, local delivery, the gossip task.
//! - [`link`]: handshakes, link readers, dialing, local clients;
//!   [`outlet`]: a link's sending side, inline writes when it is idle,
//!   else a bounded queue and the writer task.
//! - [`client`]: the library a local process uses to reach its router.
//! - [`bind`]: the mount table of a namespace: bind, unmount, unions;
//!   [`nsfile`]: namespace files, the lines `mesh ns` builds one from.
//! - [`query`]: the router's state as text files, without FUSE.
//! - [`deploy`]: the deployment file.

pub mod bind;
pub mod cbor;
pub mod client;
pub mod conv;
pub mod crossed;
pub mod deploy;
pub mod envelope;
pub mod error;
pub mod gossip;
pub mod link;
pub mod nsfile;
pub mod outlet;
pub mod path;
pub mod query;
pub mod registry;
pub mod route;
pub mod router;
pub mod term;

pub use conv::{Conv, Msg, Service};
pub use envelope::{Envelope, Kind};
pub use path::{Addr, MachineId, Name, ServiceName};
pub use router::{Config, Router};
