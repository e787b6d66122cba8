//! Pipelines of the deployment file: a conversation with the first stage
//! whose return path is the other stages.
//!
//! A pipeline starts on the machine serving its first stage, once every
//! stage is routable from there. Its conversation is listed in that
//! machine's tree like one opened through `clone`, so people can type into
//! it (`svc/pty/N/data`) and read what comes out of the last stage.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ns::deploy::{Deployment, Pipeline};
use ns::{Addr, MachineId, Router};
use tracing::info;

use crate::fs::handle::Slot;
use crate::fs::Namespace;

/// How long a pipeline waits for its stages to become routable.
pub const ROUTE_WAIT: Duration = Duration::from_secs(15);

/// The machine that runs a pipeline: the one named by its first stage, or
/// the first machine (by id) whose deployment serves that service.
pub fn home(dep: &Deployment, p: &Pipeline) -> Option<MachineId> {
    let first = p.stages.first()?;
    if let Some(m) = &first.machine {
        return Some(m.clone());
    }
    dep.machines.values().find(|m| m.services.iter().any(|s| s.name == first.service)).map(|m| m.id.clone())
}

/// Whether every stage can be reached from `r`.
fn routable(r: &Router, p: &Pipeline) -> bool {
    let t = r.table();
    p.stages.iter().all(|s| match &s.machine {
        Some(m) => t.best(m).is_some_and(|rt| rt.services.contains(&s.service)),
        None => t.nearest(s.service.as_str()).is_some(),
    })
}

/// Starts `p` from `tree`'s router once its stages are routable. The
/// conversation lives as long as the returned slot.
pub async fn start(tree: &Arc<Namespace>, p: &Pipeline) -> Result<Arc<Slot>, String> {
    let r = tree.router();
    let deadline = tokio::time::Instant::now() + ROUTE_WAIT;
    while !routable(r, p) {
        if tokio::time::Instant::now() > deadline {
            let stages: Vec<String> = p.stages.iter().map(Addr::to_string).collect();
            return Err(format!(
                "pipeline {}: stages not all routable after {ROUTE_WAIT:?}: {}",
                p.name,
                stages.join(" ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (first, rest) = p.stages.split_first().ok_or("empty pipeline")?;
    let slot = tree.open_pipeline(first.clone(), rest.to_vec());
    // The first message starts the first stage's conversation.
    slot.stream.writer().send(Bytes::new()).await?;
    info!(pipeline = %p.name, conv = slot.n, "pipeline started");
    Ok(slot)
}
