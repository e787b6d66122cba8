//! Starting a router: the forwarding core of [`crate::router`] with its
//! parts plugged in and their tasks running — gossip and keepalive
//! (`peers`) always, the registry client ([`crate::registry`])
//! when [`Config::registry`] names a machine. The one place that names
//! them all, as mini-redis's `server.rs` wires its parts.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::peers::Gossip;
use crate::registry;
use crate::router::{Config, Discovery, Router};

impl Router {
    /// Starts a router; it runs until `shutdown` is cancelled.
    pub fn new(cfg: Config, shutdown: CancellationToken) -> Router {
        let gossip = Arc::new(Gossip::new(&cfg));
        let client = cfg.registry.clone().map(|m| Arc::new(registry::Client::new(m)));
        let discovery = client.clone().map(|c| c as Arc<dyn Discovery>);
        let r = Router::with(cfg, shutdown, gossip.clone(), discovery);
        r.spawn(gossip.clone().run(r.clone()));
        r.spawn(gossip.keepalive(r.clone()));
        if let Some(c) = client {
            r.spawn(c.run(r.clone()));
        }
        r
    }
}
