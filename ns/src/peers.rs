//! What routers say to each other over their links: route announcements
//! ([`crate::gossip`]'s protocol), resyncs, and the pings that keep links
//! alive and carry the latest announcement's number.
//!
//! [`Gossip`] owns the per-neighbour gossip state and the two tasks: one
//! sends each neighbour what changed (at once on a change, and every
//! period) and expires reports of lost links; the other pings every half
//! period and closes links silent for two. It plugs into forwarding as the
//! router's [`Routing`], so the router never names the protocol.
//!
//! Lock order: the router's route table before `peers`; `resync` is
//! taken alone.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::conv::lock;
use crate::envelope::{Envelope, Kind};
use crate::gossip::{adverts, PeerGossip};
use crate::path::MachineId;
use crate::route::MAX_ROUTES_PER_PEER;
use crate::router::{Config, Router, Routing};
use crate::term::{now_us, Term, TermKind};

/// A router's gossip with its neighbours.
pub(crate) struct Gossip {
    /// Exchange routes at all (`Config::gossip`).
    on: bool,
    /// Send and heed reports of lost links (`Config::root_cause`).
    root_cause: bool,
    /// Per neighbour: what it was told and what it told.
    peers: Mutex<HashMap<MachineId, PeerGossip>>,
    /// Neighbours owed a full table.
    resync: Mutex<HashSet<MachineId>>,
    /// Wakes the sending task.
    changed: Notify,
}

impl Gossip {
    pub(crate) fn new(cfg: &Config) -> Gossip {
        Gossip {
            on: cfg.gossip,
            root_cause: cfg.root_cause,
            peers: Default::default(),
            resync: Default::default(),
            changed: Notify::new(),
        }
    }

    /// Sends updates to the neighbours, expires reports of lost links.
    pub(crate) async fn run(self: Arc<Self>, r: Router) {
        let period = r.config().period;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let expiry = r.table().next_expiry();
            tokio::select! {
                _ = r.shutdown_token().cancelled() => return,
                _ = self.changed.notified() => self.send_updates(&r).await,
                _ = sleep_until(expiry) => r.update_table(|t| t.expire(tokio::time::Instant::now())),
                _ = tick.tick() => self.send_updates(&r).await,
            }
        }
    }

    /// Pings the neighbours and notices silent ones, in a task of its own
    /// so that a link whose writer is stuck cannot delay the verdict.
    pub(crate) async fn keepalive(self: Arc<Self>, r: Router) {
        let mut tick = tokio::time::interval(r.config().period / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = r.shutdown_token().cancelled() => return,
                _ = tick.tick() => self.ping_all(&r),
            }
        }
    }

    /// The neighbours linked now, with their terminals.
    fn linked(r: &Router) -> Vec<(MachineId, Arc<Term>)> {
        r.terms()
            .into_iter()
            .filter_map(|t| match &t.kind {
                TermKind::Net(m) => Some((m.clone(), t)),
                _ => None,
            })
            .collect()
    }

    /// Sends each neighbour what changed since it was last told.
    async fn send_updates(&self, r: &Router) {
        if !self.on {
            return;
        }
        for (peer, term) in Self::linked(r) {
            let full = lock(&self.resync).remove(&peer);
            let ann = {
                let table = r.table();
                let mut g = lock(&self.peers);
                let g = g.entry(peer.clone()).or_default();
                if full {
                    Some(g.full(&table, &peer))
                } else {
                    g.update(&table, &peer)
                }
            };
            if let Some(mut ann) = ann {
                if !self.root_cause {
                    ann.lost.clear();
                }
                debug!(%peer, seq = ann.seq, full = ann.full, entries = ann.entries.len(), lost = ann.lost.len(), "announce");
                let env = r.control(&peer, Kind::Routes(ann));
                let _ = term.send(env).await;
            }
        }
    }

    /// Pings every neighbour and hangs up on those silent for two periods
    /// (four missed pings). A ping that finds the link's queue full is not
    /// sent: the link is busy, and whatever it delivers counts as alive.
    fn ping_all(&self, r: &Router) {
        let limit = 2 * r.config().period.as_micros() as u64;
        for (peer, term) in Self::linked(r) {
            let silent = now_us().saturating_sub(term.last_rx.load(Relaxed));
            if silent > limit {
                warn!(term = %term.name, silent_ms = silent / 1000, "neighbour silent, closing link");
                r.log_event(format!("{} silent for {} ms", term.name, silent / 1000));
                term.hangup();
                continue;
            }
            let seq = lock(&self.peers).get(&peer).map(|g| g.seq_out).unwrap_or(0);
            let env = r.control(&peer, Kind::Ping { stamp: now_us(), seq });
            term.try_send(env);
        }
    }

    /// Handles one control envelope from neighbour `peer`.
    async fn receive(&self, r: &Router, term: &Term, peer: &MachineId, env: Envelope) -> Result<(), String> {
        match env.kind {
            Kind::Routes(a) => {
                if !self.on {
                    return Ok(());
                }
                let accepted = lock(&self.peers).get(peer).is_some_and(|g| g.accepts(&a));
                if !accepted {
                    debug!(%peer, seq = a.seq, "gap in announcements, asking for the full table");
                    let _ = term.send(r.control(peer, Kind::Resync)).await;
                    return Ok(());
                }
                let lost = if self.root_cause { &a.lost[..] } else { &[] };
                let until = tokio::time::Instant::now() + r.config().lost_link_hold();
                match r.write_table(|t| t.apply_lost(peer, a.full, lost, until, adverts(&a))) {
                    Ok(change) => {
                        if let Some(g) = lock(&self.peers).get_mut(peer) {
                            g.seq_in = a.seq;
                        }
                        r.after_change(change);
                        Ok(())
                    }
                    Err(n) => Err(format!("{n} routes, over the cap of {MAX_ROUTES_PER_PEER}")),
                }
            }
            Kind::Resync => {
                lock(&self.resync).insert(peer.clone());
                self.changed.notify_one();
                Ok(())
            }
            Kind::Ping { stamp, seq } => {
                let _ = term.send(r.control(peer, Kind::Pong { stamp })).await;
                let behind = self.on && lock(&self.peers).get(peer).is_some_and(|g| seq > g.seq_in);
                if behind {
                    let _ = term.send(r.control(peer, Kind::Resync)).await;
                }
                Ok(())
            }
            Kind::Pong { stamp } => {
                term.stats.rtt_us.store(now_us().saturating_sub(stamp), Relaxed);
                Ok(())
            }
            other => Err(format!("unexpected {} from a neighbour", crate::term::kind_name(&other))),
        }
    }
}

impl Routing for Gossip {
    fn link_up(&self, peer: &MachineId) {
        lock(&self.peers).insert(peer.clone(), Default::default());
        lock(&self.resync).insert(peer.clone());
    }

    fn link_down(&self, peer: &MachineId) {
        lock(&self.peers).remove(peer);
    }

    fn table_changed(&self) {
        self.changed.notify_one();
    }

    fn receive<'a>(
        &'a self,
        r: &'a Router,
        term: &'a Term,
        peer: &'a MachineId,
        env: Envelope,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(Gossip::receive(self, r, term, peer, env))
    }
}

/// Sleeps until `t`, or for ever.
async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
