//! Pipelines of the deployment file: a conversation with the first stage
//! whose return path is the other stages.
//!
//! A pipeline starts on the machine serving its first stage, once every
//! stage is routable from there. Its conversation is listed in that
//! machine's tree like one opened through `clone`, so people can type into
//! it (`svc/pty/N/data`) and read what comes out of the last stage.
//!
//! [`supervise`] keeps it running as its `restart` key says (see
//! [`crate::restart`]): after it failed (a stage or a link lost, a stage
//! not reachable in time) or, with `always`, after any end, it is
//! started again. Waiting for its stages to become reachable (a link down
//! for longer than a flap) is not a failure of its own and never gives
//! up. Its state is a line of the router's `ctl`, each end an event there.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ns::deploy::{Deployment, Pipeline, Restart};
use ns::{Addr, MachineId, Router};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::fs::handle::Slot;
use crate::fs::Namespace;
use crate::restart::{self, Backoff, GIVE_UP};

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

/// How one run of a pipeline ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Its first stage ended its output (a shell that exited).
    Clean,
    /// A stage, or a link it crossed, failed.
    Failed(String),
    /// Not all stages could be reached within [`ROUTE_WAIT`].
    Unreachable(String),
}

/// One run of `p`: started, then read until it ends.
async fn run_once(tree: &Arc<Namespace>, p: &Pipeline) -> Ended {
    let slot = match start(tree, p).await {
        Ok(slot) => slot,
        Err(e) => return Ended::Unreachable(e),
    };
    loop {
        match slot.stream.read(usize::MAX).await {
            Ok(b) if b.is_empty() => return Ended::Clean,
            Ok(_) => {}
            Err(e) => return Ended::Failed(e),
        }
    }
}

/// Runs `p` from `tree`'s router until `stop`, started again as its
/// `restart` key says (see the module's doc).
pub async fn supervise(tree: Arc<Namespace>, p: Pipeline, stop: CancellationToken) {
    let r = tree.router().clone();
    let name = format!("pipeline {}", p.name);
    let mut backoff = Backoff::default();
    loop {
        r.set_state(&name, format!("running restarts {}", backoff.restarts));
        let began = tokio::time::Instant::now();
        let ended = tokio::select! {
            _ = stop.cancelled() => return,
            e = run_once(&tree, &p) => e,
        };
        let why = match &ended {
            Ended::Clean => "its first stage ended".to_string(),
            Ended::Failed(e) | Ended::Unreachable(e) => e.clone(),
        };
        // Waiting for stages to become reachable is not a failure of its
        // own: tried again unless the pipeline is never restarted.
        let wanted = match &ended {
            Ended::Unreachable(_) => p.restart != Restart::Never,
            _ => restart::wanted(p.restart, ended != Ended::Clean),
        };
        let wait = match &ended {
            _ if !wanted => None,
            Ended::Unreachable(_) => Some(backoff.not_yet()),
            _ => backoff.ended(began.elapsed()),
        };
        let Some(wait) = wait else {
            let more = if wanted { format!("; ended {GIVE_UP} times in a row, not restarted") } else { String::new() };
            info!(pipeline = %p.name, "pipeline ended: {why}{more}");
            r.log_event(format!("{name} ended: {why}{more}"));
            r.set_state(&name, format!("ended restarts {} last {why}", backoff.restarts));
            return;
        };
        let restarts = backoff.restarts;
        warn!(pipeline = %p.name, "pipeline ended: {why}; restarting in {wait:?}");
        r.log_event(format!("{name} ended: {why}; restart {restarts} in {}s", wait.as_secs()));
        r.set_state(&name, format!("waiting {}s restarts {} last {why}", wait.as_secs(), restarts - 1));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
