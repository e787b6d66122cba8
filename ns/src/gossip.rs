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

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::path::{MachineId, ServiceName};
use crate::route::{Advert, RouteTable};

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
    /// What it was last told, to send only differences.
    sent: HashMap<MachineId, Advert>,
}

impl PeerGossip {
    /// The update for `peer` after a change: every machine whose advert
    /// differs from what it was told. `None` when nothing differs.
    pub fn update(&mut self, table: &RouteTable, peer: &MachineId) -> Option<Announce> {
        let now = adverts_for(table, peer);
        let mut entries = Vec::new();
        for (m, ad) in &now {
            if self.sent.get(m) != Some(ad) {
                entries.push(RouteAd { machine: m.clone(), path: ad.path.clone(), services: ad.services.clone() });
            }
        }
        for m in self.sent.keys() {
            if !now.contains_key(m) {
                entries.push(RouteAd { machine: m.clone(), path: Vec::new(), services: Vec::new() });
            }
        }
        if entries.is_empty() {
            return None;
        }
        entries.sort_by(|a, b| a.machine.cmp(&b.machine));
        self.sent = now;
        self.seq_out += 1;
        Some(Announce { seq: self.seq_out, full: false, entries })
    }

    /// The whole table for `peer`, after a link comes up or on `Resync`.
    pub fn full(&mut self, table: &RouteTable, peer: &MachineId) -> Announce {
        self.sent = adverts_for(table, peer);
        self.seq_out += 1;
        let mut entries: Vec<RouteAd> = self
            .sent
            .iter()
            .map(|(m, ad)| RouteAd { machine: m.clone(), path: ad.path.clone(), services: ad.services.clone() })
            .collect();
        entries.sort_by(|a, b| a.machine.cmp(&b.machine));
        Announce { seq: self.seq_out, full: true, entries }
    }

    /// Whether an announcement follows the last one applied; if not, the
    /// receiver asks for the full table instead of applying it.
    pub fn accepts(&self, a: &Announce) -> bool {
        a.full || a.seq == self.seq_in + 1
    }
}

/// What this router tells `peer`: its best path to every machine, except
/// paths through `peer` itself.
fn adverts_for(table: &RouteTable, peer: &MachineId) -> HashMap<MachineId, Advert> {
    table
        .routes()
        .into_iter()
        .filter(|r| !r.path.contains(peer))
        .map(|r| (r.machine.clone(), Advert { path: r.path.clone(), services: r.services.clone() }))
        .collect()
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
    fn gaps_are_detected() {
        let g = PeerGossip { seq_in: 4, ..Default::default() };
        assert!(g.accepts(&Announce { seq: 5, full: false, entries: vec![] }));
        assert!(!g.accepts(&Announce { seq: 7, full: false, entries: vec![] }));
        assert!(g.accepts(&Announce { seq: 9, full: true, entries: vec![] }));
    }
}
