//! Path-vector gossip between neighbouring routers.
//!
//! Each router advertises to each neighbour its best path to every machine
//! it can reach, with the services there. Updates are incremental and
//! numbered: only what changed since the last advert to that neighbour is
//! sent, at once on any change. Pings carry the latest number, so a
//! neighbour that missed one asks for the full table (`Resync`). A router
//! never advertises a path back through the neighbour it would go to
//! (split horizon), and refuses paths that contain itself (loops). Once
//! converged, the only periodic traffic is the ping: announcement bytes
//! grow with changes, not with the size of the table.
//!
//! The work per update is proportional to the change too: a neighbour's
//! record holds the routes it was told (shared with the table, not
//! copied), and an update looks only at the machines the table's journal
//! says changed since the last one ([`RouteTable::changed_since`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::path::{MachineId, ServiceName};
use crate::route::{Advert, Route, RouteTable};

/// One announcement from a neighbour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Announce {
    /// Numbers this neighbour's updates to the receiver, from 1.
    pub seq: u64,
    /// Replaces everything said before.
    pub full: bool,
    pub entries: Vec<RouteAd>,
}

/// A route to one machine: the path from the announcer to it, announcer
/// first; an empty path withdraws the route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteAd {
    pub machine: MachineId,
    pub path: Vec<MachineId>,
    pub services: Vec<ServiceName>,
}

/// Gossip state kept for one neighbour.
#[derive(Default, Debug)]
pub struct PeerGossip {
    /// The number of the last update sent to it.
    pub seq_out: u64,
    /// The number of the last update applied from it.
    pub seq_in: u64,
    /// What it was last told, to send only differences: the route whose
    /// advert it got, per machine.
    sent: HashMap<MachineId, Arc<Route>>,
    /// The table's journal position `sent` is up to date with.
    seen: u64,
}

/// What `peer` is told of route `r`: nothing when the path goes through
/// `peer` itself (split horizon).
fn advert_of<'a>(r: Option<&'a Arc<Route>>, peer: &MachineId) -> Option<&'a Arc<Route>> {
    r.filter(|r| !r.path.contains(peer))
}

/// Whether two routes give the same advert (path and services).
fn same_advert(a: &Route, b: &Route) -> bool {
    a.path == b.path && a.services == b.services
}

/// A route as announced: its path starts here, at the announcer.
fn route_ad(r: &Route) -> RouteAd {
    RouteAd { machine: r.machine.clone(), path: r.path.clone(), services: r.services.clone() }
}

impl PeerGossip {
    /// The update for `peer` after a change: every machine whose advert
    /// differs from what it was told. `None` when nothing differs.
    pub fn update(&mut self, table: &RouteTable, peer: &MachineId) -> Option<Announce> {
        // The machines that may differ, sorted and once each: those the
        // journal names, or, if it no longer reaches back far enough,
        // every machine known now or told before.
        let maybe: BTreeSet<MachineId> = match table.changed_since(self.seen) {
            Some(changed) => changed.cloned().collect(),
            None => table.machines().chain(self.sent.keys()).cloned().collect(),
        };
        self.seen = table.journal_end();
        let mut entries = Vec::new();
        for m in maybe {
            let now = advert_of(table.best(&m), peer);
            match (self.sent.get(&m), now) {
                (Some(told), Some(now)) if same_advert(told, now) => {}
                (None, None) => {}
                (_, Some(now)) => {
                    entries.push(route_ad(now));
                    self.sent.insert(m, now.clone());
                }
                (Some(_), None) => {
                    entries.push(RouteAd { machine: m.clone(), path: Vec::new(), services: Vec::new() });
                    self.sent.remove(&m);
                }
            }
        }
        if entries.is_empty() {
            return None;
        }
        self.seq_out += 1;
        Some(Announce { seq: self.seq_out, full: false, entries })
    }

    /// The whole table for `peer`, after a link comes up or on `Resync`.
    pub fn full(&mut self, table: &RouteTable, peer: &MachineId) -> Announce {
        self.sent = table.machines().filter_map(|m| advert_of(table.best(m), peer).map(|r| (m.clone(), r.clone()))).collect();
        self.seen = table.journal_end();
        self.seq_out += 1;
        let mut entries: Vec<RouteAd> = self.sent.values().map(|r| route_ad(r)).collect();
        entries.sort_by(|a, b| a.machine.cmp(&b.machine));
        Announce { seq: self.seq_out, full: true, entries }
    }

    /// Whether an announcement follows the last one applied; if not, the
    /// receiver asks for the full table instead of applying it.
    pub fn accepts(&self, a: &Announce) -> bool {
        a.full || a.seq == self.seq_in + 1
    }
}

/// Converts received entries into adverts for [`RouteTable::apply`].
pub fn adverts(a: &Announce) -> impl Iterator<Item = (MachineId, Advert)> + '_ {
    a.entries
        .iter()
        .map(|e| (e.machine.clone(), Advert { path: e.path.clone(), services: e.services.clone() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> MachineId {
        s.parse().unwrap()
    }

    #[test]
    fn incremental_updates_and_split_horizon() {
        let mut t = RouteTable::new(n("a"));
        t.set_local(vec![n("pty")]);
        t.peer_up(&n("b"));
        t.peer_up(&n("c"));
        let mut g = PeerGossip::default();
        let full = g.full(&t, &n("b"));
        // b is told about a and c, never about b itself.
        let told: Vec<_> = full.entries.iter().map(|e| e.machine.as_str()).collect();
        assert_eq!(told, ["a", "c"]);
        assert_eq!(g.update(&t, &n("b")), None, "nothing changed, nothing sent");
        t.set_local(vec![n("pty"), n("display")]);
        let up = g.update(&t, &n("b")).unwrap();
        assert_eq!((up.seq, up.entries.len()), (2, 1));
        assert_eq!(up.entries[0].services, vec![n("display"), n("pty")]);
        t.peer_down(&n("c"));
        let up = g.update(&t, &n("b")).unwrap();
        assert_eq!(up.entries, vec![RouteAd { machine: n("c"), path: vec![], services: vec![] }]);
    }

    #[test]
    fn updates_keep_a_neighbour_exactly_informed() {
        // What b holds, applying every announcement, always equals what a
        // would tell it from scratch: its best routes, less those via b.
        let names: Vec<MachineId> = ["b", "c", "d", "e", "f"].iter().map(|s| n(s)).collect();
        let mut t = RouteTable::new(n("a"));
        t.peer_up(&n("b"));
        let mut g = PeerGossip::default();
        let mut mirror: HashMap<MachineId, (Vec<MachineId>, Vec<ServiceName>)> = HashMap::new();
        let mut x: u64 = 1;
        let mut below = |k: usize| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) % k as u64) as usize
        };
        for step in 0..2000 {
            let peer = names[below(3)].clone();
            match below(5) {
                0 => {
                    t.peer_down(&peer);
                }
                1 => {
                    t.peer_up(&peer);
                }
                2 => {
                    t.set_local(vec![names[below(5)].clone()]);
                }
                _ => {
                    let m = names[below(5)].clone();
                    let mut path = vec![peer.clone()];
                    if below(2) == 0 {
                        path.push(names[below(5)].clone());
                    }
                    if *path.last().unwrap() != m {
                        path.push(m.clone());
                    }
                    let _ = t.apply(&peer, false, [(m, Advert { path, services: vec![n("svc")] })]);
                }
            }
            // Sometimes several changes go out in one update.
            if below(3) == 0 {
                continue;
            }
            let ann = if below(50) == 0 { Some(g.full(&t, &n("b"))) } else { g.update(&t, &n("b")) };
            if let Some(a) = ann {
                if a.full {
                    mirror.clear();
                }
                for e in a.entries {
                    if e.path.is_empty() {
                        mirror.remove(&e.machine);
                    } else {
                        mirror.insert(e.machine, (e.path, e.services));
                    }
                }
            }
            let want: HashMap<MachineId, (Vec<MachineId>, Vec<ServiceName>)> = t
                .routes()
                .into_iter()
                .filter(|r| !r.path.contains(&n("b")))
                .map(|r| (r.machine.clone(), (r.path.clone(), r.services.clone())))
                .collect();
            assert_eq!(mirror, want, "step {step}");
        }
    }

    #[test]
    fn gaps_are_detected() {
        let g = PeerGossip { seq_in: 4, ..Default::default() };
        assert!(g.accepts(&Announce { seq: 5, full: false, entries: vec![] }));
        assert!(!g.accepts(&Announce { seq: 7, full: false, entries: vec![] }));
        assert!(g.accepts(&Announce { seq: 9, full: true, entries: vec![] }));
    }
}
