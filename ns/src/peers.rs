//! What routers say to each other over their links: route announcements
//! ([`crate::gossip`]'s protocol), resyncs, and the pings that keep links
//! alive and carry the latest announcement's number.
//!
//! [`Gossip`] owns the per-neighbour gossip state and the two tasks: one
//! sends each neighbour what changed (at once on a change, and every
//! period) and expires reports of lost links; the other pings every half
//! period and closes links silent for two. Silence is counted in its own
//! rounds too ([`Quiet`]): a round that comes late because this router's
//! runtime was starved does not make the neighbour's frames, waiting
//! unread meanwhile, look missing. It plugs into forwarding as the
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
        let mut quiet = HashMap::new();
        loop {
            tokio::select! {
                _ = r.shutdown_token().cancelled() => return,
                _ = tick.tick() => self.ping_all(&r, &mut quiet),
            }
        }
    }

    /// The neighbours linked now, with their terminals; not those whose
    /// connection was lost and is being resumed (told what changed, and
    /// heard from, once it is back).
    fn linked(r: &Router) -> Vec<(MachineId, Arc<Term>)> {
        r.terms()
            .into_iter()
            .filter_map(|t| match &t.kind {
                TermKind::Net(m) if !t.is_resuming() => Some((m.clone(), t)),
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
                // Never waits on a busy link (it would hold up every
                // neighbour's updates): one that cannot take it now is
                // owed the full table next round.
                let env = r.control(&peer, Kind::Routes(ann));
                if !term.try_send(env) {
                    lock(&self.resync).insert(peer.clone());
                }
            }
        }
    }

    /// Pings every neighbour and hangs up on those silent for two periods
    /// (more on a long path: [`silence_allowed`]) and [`ROUNDS`] rounds
    /// (four missed pings). A ping that finds the link's queue full is not
    /// sent: the link is busy, and whatever it delivers counts as alive.
    fn ping_all(&self, r: &Router, quiet: &mut HashMap<MachineId, Quiet>) {
        let linked = Self::linked(r);
        quiet.retain(|m, _| linked.iter().any(|(p, _)| p == m));
        for (peer, term) in linked {
            let limit = silence_allowed(r.config().period, term.stats.min_rtt_us.load(Relaxed));
            let verdict = quiet.entry(peer.clone()).or_default().round(term.last_rx.load(Relaxed), now_us(), limit);
            if let Some(silent) = verdict {
                warn!(term = %term.name, silent_ms = silent / 1000, "neighbour silent, closing its connection");
                r.log_event(format!("{} silent for {} ms", term.name, silent / 1000));
                term.end_connection();
                continue;
            }
            // What was read since the last acknowledgement, on a link
            // too quiet to have owed one.
            if let Some(n) = term.session.as_ref().and_then(|s| s.ack_due()) {
                term.ack(n);
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
                    // The link's reader never waits on its own link: a
                    // resync not sent now is asked for by the next gap.
                    term.try_send(r.control(peer, Kind::Resync));
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
                // Not waited for: a link too busy to take a pong now is
                // carrying frames, which count as alive.
                term.try_send(r.control(peer, Kind::Pong { stamp }));
                let behind = self.on && lock(&self.peers).get(peer).is_some_and(|g| seq > g.seq_in);
                if behind {
                    term.try_send(r.control(peer, Kind::Resync));
                }
                Ok(())
            }
            Kind::Pong { stamp } => {
                // Everything sent before the ping has been read across.
                if let Some(c) = &term.crossed {
                    let ago = std::time::Duration::from_micros(now_us().saturating_sub(stamp));
                    c.confirmed(tokio::time::Instant::now() - ago);
                }
                let rtt = now_us().saturating_sub(stamp).max(1);
                term.stats.rtt_us.store(rtt, Relaxed);
                let _ = term.stats.min_rtt_us.fetch_update(Relaxed, Relaxed, |m| (m == 0 || rtt < m).then_some(rtt));
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

/// Keepalive rounds in a row that heard nothing from a neighbour before
/// it may be taken for dead: two periods' worth when rounds are on time.
const ROUNDS: u32 = 4;

/// Round trips of the path that a neighbour may be silent beyond two
/// periods. TCP on a lossy path stalls while it retransmits, each retry
/// waiting twice as long (from about its round trip plus 200 ms); two
/// retries lost in a row on a 50 ms path are 0.75 s of silence, three
/// 1.75 s. So silence is allowed to grow with the path's round trip: on a
/// LAN it adds nothing, a 50 ms path gets 1.8 s.
const RTTS_ALLOWED: u64 = 16;

/// How long a neighbour may be silent (microseconds): two keepalive
/// periods, and [`RTTS_ALLOWED`] of the least round trip measured on its
/// link (0: none yet).
fn silence_allowed(period: std::time::Duration, min_rtt_us: u64) -> u64 {
    2 * period.as_micros() as u64 + RTTS_ALLOWED * min_rtt_us
}

/// What the keepalive heard from one neighbour, round by round.
///
/// Silence alone, as time since the last frame, also counts the time this
/// router could not read: a runtime starved for a second (a thousand
/// process starts) finds every neighbour "silent" when its round finally
/// runs, though their frames wait unread in the socket. Counting rounds as
/// well means a late round counts once however late, and the link's reader
/// gets to run before the next: a real cut is still found after two
/// periods when the router keeps time, and after [`ROUNDS`] of its rounds
/// when it is slow, never falsely after one stall.
#[derive(Default)]
pub(crate) struct Quiet {
    /// The neighbour's last frame, as of the last round.
    rx: u64,
    /// Rounds since that changed.
    rounds: u32,
}

impl Quiet {
    /// One round at `now` (microseconds, as `last_rx`): the silence, when
    /// the neighbour last heard at `last_rx` is to be taken for dead.
    pub(crate) fn round(&mut self, last_rx: u64, now: u64, limit: u64) -> Option<u64> {
        if last_rx != self.rx {
            *self = Quiet { rx: last_rx, rounds: 0 };
        } else {
            self.rounds = self.rounds.saturating_add(1);
        }
        let silent = now.saturating_sub(last_rx);
        (silent > limit && self.rounds >= ROUNDS).then_some(silent)
    }
}

/// Sleeps until `t`, or for ever.
async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;
    /// Two periods of 500 ms, as by default.
    const LIMIT: u64 = 1000 * MS;

    /// Rounds every 250 ms from `from`, nothing heard after `rx`: when the
    /// neighbour is taken for dead.
    fn dead_at(q: &mut Quiet, rx: u64, from: u64) -> u64 {
        (0..100).map(|i| from + i * 250 * MS).find(|&t| q.round(rx, t, LIMIT).is_some()).expect("a verdict")
    }

    #[test]
    fn a_cut_is_found_after_two_periods_when_rounds_keep_time() {
        let mut q = Quiet::default();
        assert_eq!(q.round(0, 100 * MS, LIMIT), None);
        // The last frame at 200 ms; the link is cut then.
        assert_eq!(q.round(200 * MS, 350 * MS, LIMIT), None);
        let t = dead_at(&mut q, 200 * MS, 600 * MS);
        assert_eq!(t, 1350 * MS, "the first round past the limit");
    }

    #[test]
    fn a_long_path_is_allowed_longer_silences() {
        let period = std::time::Duration::from_millis(500);
        assert_eq!(silence_allowed(period, 0), LIMIT);
        // Loopback: nothing to speak of.
        assert_eq!(silence_allowed(period, 80), LIMIT + 1280);
        // 50 ms: a silence of 1.75 s (three retransmissions lost in a row)
        // is allowed.
        assert_eq!(silence_allowed(period, 50 * MS), 1800 * MS);
    }

    #[test]
    fn a_late_round_is_not_the_neighbours_silence() {
        let mut q = Quiet::default();
        assert_eq!(q.round(0, 0, LIMIT), None);
        assert_eq!(q.round(200 * MS, 250 * MS, LIMIT), None);
        // Starved for 1.5 s: the next round sees the old frame only.
        assert_eq!(q.round(200 * MS, 1750 * MS, LIMIT), None);
        // The reader ran meanwhile: frames that waited are heard.
        assert_eq!(q.round(1760 * MS, 2000 * MS, LIMIT), None);
        // Starved again, twice in a row, then on time: still alive until
        // four rounds have heard nothing.
        assert_eq!(q.round(1760 * MS, 3500 * MS, LIMIT), None);
        assert_eq!(q.round(1760 * MS, 5000 * MS, LIMIT), None);
        assert_eq!(q.round(1760 * MS, 5250 * MS, LIMIT), None);
        assert_eq!(q.round(1760 * MS, 5500 * MS, LIMIT), Some(5500 * MS - 1760 * MS), "four silent rounds");
    }
}
