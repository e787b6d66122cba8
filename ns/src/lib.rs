//! ns: the core of the mesh, below the file system.
//!
//! Modules, from the bottom up, floor by floor: a module imports only
//! from floors below its own, so no two modules import each other (check
//! with `grep 'crate::' ns/src/**/*.rs`, comments aside).
//!
//! 1. [`path`]: machine and service names, addresses (`/svc/S`,
//!    `/n/M/svc/S`, `/n/M/svc/S/N`) and terminal names
//!    ([`path::TermName`]: `local`, `loopback`, `net-M`); [`error`]: the
//!    error strings, Plan 9 style, and their errno table; [`cbor`]: one
//!    CBOR message, encoded and decoded (the registry's, the tree's, the
//!    pipeline's); [`bind`]: the mount table of a namespace: bind,
//!    unmount, unions.
//! 2. [`route`]: the route table: best route per machine, nearest replica;
//!    [`policy`]: who may reach what, the rules and their check;
//!    [`nsfile`]: namespace files, the lines `mesh ns` builds one from.
//! 3. [`gossip`]: path-vector announcements, incremental and numbered,
//!    naming the links lost (the protocol; its I/O is in `peers`);
//!    [`deploy`]: the deployment file.
//! 4. [`envelope`]: what every frame carries, and its CBOR encoding with
//!    zero-copy payloads.
//! 5. [`conv`]: conversation endpoints: ordered input, end-to-end credit,
//!    end of input, hangup; the [`conv::Service`] trait; [`outlet`]: a
//!    link's sending side, inline writes when it is idle, else a bounded
//!    queue and the writer task, reporting to an [`outlet::Owner`];
//!    [`pairs`]: end-to-end sessions per pair of machines, sealing and
//!    opening conversation messages; `tamper`: a relay that misbehaves
//!    on purpose, in debug builds, for the tests.
//! 6. [`crossed`]: the conversations that crossed a link, failed when it
//!    dies; [`client`]: the library a local process uses to reach its
//!    router; [`probe`]: the `echo` and `sink` services; [`session`]: a
//!    link's session, what it keeps across connections, and the proofs
//!    of its resume handshake.
//! 7. [`term`]: terminals, their counters and traces, and the table of
//!    them ([`term::Terms`]).
//! 8. `clients`: the table of local clients; [`config`]: a router's
//!    configuration and link security.
//! 9. [`router`]: forwarding, resolution, local delivery, the tables; the
//!    [`router::Routing`] and [`router::Discovery`] traits the parts
//!    above plug in by.
//! 10. [`text`]: the text of the router's `ctl` and `svc/S/info` files;
//!     `peers`: gossip and keepalive over the links, the router's
//!     `Routing`; [`registry`]: the registry protocol and service, and the
//!     client that is the router's `Discovery`; `lost`: what a lost link
//!     costs, the conversations that crossed it failed at both ends;
//!     `sealing`: end to end as forwarding uses it, sealing what leaves,
//!     opening what arrives, answering handshakes.
//! 11. `local`: serving a local client's link.
//! 12. `inbound`: a link's reader, its acknowledgements and backlog, and
//!     what a neighbour's envelopes may say.
//! 13. [`link`]: handshakes, the links' tasks, dialing; `resume`: a
//!     session resumed on a new connection, both sides of its handshake.
//! 14. `start`: `Router::new`, the router with its parts plugged in.

pub mod bind;
pub mod cbor;
pub mod client;
pub(crate) mod clients;
pub mod config;
pub mod conv;
pub mod crossed;
pub mod deploy;
pub mod envelope;
pub mod error;
pub mod gossip;
mod inbound;
pub mod link;
mod local;
mod lost;
pub mod nsfile;
pub mod outlet;
pub mod pairs;
pub mod path;
mod peers;
pub mod policy;
pub mod probe;
pub mod registry;
mod resume;
pub mod route;
pub mod router;
mod sealing;
pub mod session;
mod start;
mod tamper;
pub mod term;
pub mod text;

pub use conv::{Conv, Msg, Service};
pub use envelope::{Envelope, Kind};
pub use path::{Addr, MachineId, Name, ServiceName};
pub use router::{Config, Router};
