//! The meshes under test: chains of routers in this process, and the two
//! services every workload talks to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use ns::{Addr, Config, Name, Router};
use tokio_util::sync::CancellationToken;

pub use ns::probe::{Echo, Sink};

/// Parses a mesh path; the ones here are fixed, but say which if not.
pub fn addr(s: &str) -> anyhow::Result<Addr> {
    Addr::parse(s).map_err(|e| anyhow!("{s}: {e}"))
}

/// Parses a name (machine or service).
pub fn name(s: &str) -> anyhow::Result<Name> {
    Name::new(s).map_err(|e| anyhow!("{s}: {e}"))
}

/// Routers in a chain, each linked to the next; shut down on drop.
pub struct Chain {
    routers: Vec<Router>,
    stop: CancellationToken,
}

impl Chain {
    /// Routers `(id, listen dial string)`, each dialing the one after it,
    /// every one offering `echo` and `sink`. Waits until the first knows
    /// a route to the last, so the first message does not race gossip.
    pub async fn new(nodes: &[(&str, String)]) -> anyhow::Result<Chain> {
        Chain::build(nodes, false).await
    }

    /// Like [`Chain::new`], with every tcp and ws link authenticated and
    /// encrypted (Noise), as a deployment is by default.
    pub async fn new_secure(nodes: &[(&str, String)]) -> anyhow::Result<Chain> {
        Chain::build(nodes, true).await
    }

    async fn build(nodes: &[(&str, String)], secure: bool) -> anyhow::Result<Chain> {
        let stop = CancellationToken::new();
        let mut chain = Chain { routers: Vec::new(), stop: stop.clone() };
        let mut bound = Vec::new();
        // Every machine pins every other's key.
        let keys: Vec<dial::Identity> = nodes.iter().map(|_| dial::Identity::generate()).collect();
        for (i, (id, listen)) in nodes.iter().enumerate() {
            let mut cfg = Config::new(name(id)?);
            if secure {
                let mut trust = dial::Trust::new();
                for (j, (other, _)) in nodes.iter().enumerate().filter(|(j, _)| *j != i) {
                    trust.pin(other.to_string(), keys[j].public()).map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                cfg.security = Some(Arc::new(ns::link::Security { identity: keys[i].clone(), trust }));
            }
            let r = Router::new(cfg, stop.child_token());
            r.add_service(name("echo")?, Arc::new(Echo));
            r.add_service(name("sink")?, Arc::new(Sink));
            let ds: dial::DialString = listen.parse().with_context(|| format!("listen address of {id}"))?;
            bound.push(r.listen(&ds).await.with_context(|| format!("{id} listens on {listen}"))?);
            chain.routers.push(r);
        }
        for (i, ds) in bound.iter().enumerate().skip(1) {
            chain.routers[i - 1]
                .dial_now(ds.clone())
                .await
                .with_context(|| format!("{} dials {ds}", nodes[i - 1].0))?;
        }
        if chain.routers.len() > 1 {
            let last = nodes[nodes.len() - 1].0;
            chain.wait_route(last, nodes.len() - 1, Duration::from_secs(10)).await?;
        }
        Ok(chain)
    }

    /// A single router with no links, for the FUSE workloads.
    pub fn single(id: &str) -> anyhow::Result<Chain> {
        let stop = CancellationToken::new();
        let r = Router::new(Config::new(name(id)?), stop.child_token());
        r.add_service(name("echo")?, Arc::new(Echo));
        r.add_service(name("sink")?, Arc::new(Sink));
        Ok(Chain { routers: vec![r], stop })
    }

    /// The first router: where the workloads open conversations.
    pub fn head(&self) -> &Router {
        &self.routers[0]
    }

    /// The `i`th router of the chain, from 0.
    pub fn router(&self, i: usize) -> anyhow::Result<&Router> {
        self.routers.get(i).ok_or_else(|| anyhow!("the chain has no router {i}"))
    }

    /// Waits until the head routes to `machine` over `hops` hops.
    async fn wait_route(&self, machine: &str, hops: usize, limit: Duration) -> anyhow::Result<()> {
        let m = name(machine)?;
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if self.head().table().best(&m).is_some_and(|r| r.hops() == hops) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        bail!("{} has no {hops}-hop route to {machine} after {limit:?}:\n{}", self.head().id(), self.head().routes())
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        for r in &self.routers {
            r.shutdown();
        }
        self.stop.cancel();
    }
}
