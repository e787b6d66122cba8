//! Path-vector gossip between neighbouring routers.
//!
//! Each router advertises to each neighbour its best path to every machine
//! it can reach, with the services there. Updates are incremental and
//! numbered: only what changed since the last advert to that neighbour is
//! sent, at once on any change. Pings carry the latest number, so a
//! neighbour that missed one asks for the full table (`Resync`). A router
//! never advertises a path back through the neighbour it would go to
//! (split horizon), and refuses paths that contain itself (loops). Nor
//! does it advertise a path that, with the neighbour in front, would be
//! longer than the hop limit ([`crate::path::HOP_LIMIT`]): the neighbour
//! could only fail over it, and its own neighbours farther still. Once
//! converged, the only periodic traffic is the ping: announcement bytes
//! grow with changes, not with the size of the table.
//!
//! The work per update is proportional to the change too: a neighbour's
//! record holds the routes it was told (shared with the table, not
//! copied), and an update looks only at the machines the table's journal
//! says changed since the last one ([`RouteTable::changed_since`]).
//!
//! Lost links travel with the changes they cause (root-cause
//! notification). Without them, removing a machine sets off path
//! exploration: each router told its path is gone switches at once to a
//! neighbour's longer path, which went through the same dead machine,
//! and announces it; that one fails in turn, and paths grow by a hop or
//! so per exchange until no loop-free one is left. mesh-bench's
//! `discovery` counted 1.54 million announcements and 96 s of CPU to
//! remove one of 1,000 routers. So a router that loses a link says so:
//! the update that replaces paths it told over the link names the link
//! ([`Announce::lost`]); the receiver sets aside every advert for those
//! machines crossing it, whichever neighbour sent it, for half a period
//! ([`RouteTable::apply_lost`]), and passes the report on with the
//! changes it causes there. Dead paths vanish everywhere in one wave per
//! lost link, so the dead machine's degree, not the size of the mesh,
//! bounds what exploration is left: 12,400 announcements (3 per link and
//! direction) and half a second of CPU in the same benchmark.
//!
//! Why not hold back worse paths for a while, as BGP's MRAI timer does,
//! sending withdrawals at once? Because here nothing would be withdrawn
//! during the hold: every router still has some neighbour's dead path,
//! so no one runs out of routes, and when the holds expire the same
//! exploration runs in lockstep, one hold per step. A model of the
//! benchmark's 250-router graph with every router holding took 206 holds
//! and 96,800 announcements to withdraw one machine, as many as the
//! benchmark counted with no hold (98,000). Added to root causes, a hold
//! saved a tenth of the announcements in the model, and would cost a
//! gap: while a router holds a worse but real path, neighbours that set
//! aside its old one have no route. So changes still go out at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::path::{MachineId, ServiceName, HOP_LIMIT};
use crate::route::{Advert, Link, Route, RouteTable};

/// One announcement from a neighbour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Announce {
    /// Numbers this neighbour's updates to the receiver, from 1.
    pub seq: u64,
    /// Replaces everything said before.
    pub full: bool,
    pub entries: Vec<RouteAd>,
    /// Links lost that paths told before crossed: for the machines in
    /// `entries`, the receiver sets aside every path crossing them, from
    /// whichever neighbour. Absent from older routers, and left out when
    /// empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<Link>,
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
    /// The position in the table's log of lost links read so far.
    lost_seen: u64,
}

/// What `peer` is told of route `r`: nothing when the path goes through
/// `peer` itself (split horizon), or when, with `peer` in front, it would
/// be longer than the hop limit allows (the peer could not use it).
fn advert_of<'a>(r: Option<&'a Arc<Route>>, peer: &MachineId) -> Option<&'a Arc<Route>> {
    r.filter(|r| !r.path.contains(peer) && r.path.len() < HOP_LIMIT)
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
        let lost = self.lost_links(table, peer);
        let mut crossed = vec![false; lost.len()];
        let mut entries = Vec::new();
        for m in maybe {
            let now = advert_of(table.best(&m), peer);
            let told = self.sent.get(&m);
            match (told, now) {
                (Some(told), Some(now)) if same_advert(told, now) => continue,
                (None, None) => continue,
                _ => {}
            }
            // A path told before and replaced now: say which lost links
            // it crossed, so the peer drops other paths over them too.
            if let Some(told) = told {
                for (c, l) in crossed.iter_mut().zip(&lost) {
                    *c |= l.crossed_by(&told.path);
                }
            }
            match now {
                Some(now) => {
                    entries.push(route_ad(now));
                    self.sent.insert(m, now.clone());
                }
                None => {
                    entries.push(RouteAd { machine: m.clone(), path: Vec::new(), services: Vec::new() });
                    self.sent.remove(&m);
                }
            }
        }
        if entries.is_empty() {
            return None;
        }
        self.seq_out += 1;
        let lost = lost.into_iter().zip(crossed).filter(|(_, c)| *c).map(|(l, _)| l).collect();
        Some(Announce { seq: self.seq_out, full: false, entries, lost })
    }

    /// The links lost since the last update, less those `peer` ends (it
    /// knows, and no path it holds crosses them).
    fn lost_links(&mut self, table: &RouteTable, peer: &MachineId) -> Vec<Link> {
        let lost = match table.lost_since(self.lost_seen) {
            Some(l) => l.filter(|l| !l.has_end(peer)).cloned().collect(),
            None => Vec::new(),
        };
        self.lost_seen = table.lost_end();
        lost
    }

    /// The whole table for `peer`, after a link comes up or on `Resync`.
    pub fn full(&mut self, table: &RouteTable, peer: &MachineId) -> Announce {
        self.sent =
            table.machines().filter_map(|m| advert_of(table.best(m), peer).map(|r| (m.clone(), r.clone()))).collect();
        self.seen = table.journal_end();
        self.lost_seen = table.lost_end();
        self.seq_out += 1;
        let mut entries: Vec<RouteAd> = self.sent.values().map(|r| route_ad(r)).collect();
        entries.sort_by(|a, b| a.machine.cmp(&b.machine));
        Announce { seq: self.seq_out, full: true, entries, lost: Vec::new() }
    }

    /// Whether an announcement follows the last one applied; if not, the
    /// receiver asks for the full table instead of applying it.
    pub fn accepts(&self, a: &Announce) -> bool {
        a.full || a.seq == self.seq_in + 1
    }
}

/// Converts received entries into adverts for [`RouteTable::apply`].
pub fn adverts(a: &Announce) -> impl Iterator<Item = (MachineId, Advert)> + '_ {
    a.entries.iter().map(|e| (e.machine.clone(), Advert { path: e.path.clone(), services: e.services.clone() }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

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
        let ann = |seq, full| Announce { seq, full, entries: vec![], lost: vec![] };
        assert!(g.accepts(&ann(5, false)));
        assert!(!g.accepts(&ann(7, false)));
        assert!(g.accepts(&ann(9, true)));
    }

    fn later() -> tokio::time::Instant {
        tokio::time::Instant::now() + std::time::Duration::from_secs(3600)
    }

    fn path_ad(path: &[&str]) -> Advert {
        Advert { path: path.iter().map(|s| n(s)).collect(), services: vec![n("svc")] }
    }

    fn gone() -> Advert {
        Advert { path: vec![], services: vec![] }
    }

    #[test]
    fn lost_links_go_with_the_paths_they_replace() {
        let mut t = RouteTable::new(n("a"));
        for p in ["b", "c", "d"] {
            t.peer_up(&n(p));
        }
        t.apply(&n("b"), false, [(n("v"), path_ad(&["b", "v"])), (n("y"), path_ad(&["b", "v", "y"]))]).unwrap();
        t.apply(&n("d"), false, [(n("y"), path_ad(&["d", "y"]))]).unwrap();
        let mut g = PeerGossip::default();
        g.full(&t, &n("c"));
        // b reports v-y lost: a never told c a path over it, so c hears
        // nothing of it.
        t.apply_lost(&n("b"), false, &[Link::new(n("v"), n("y"))], later(), [(n("y"), gone())]).unwrap();
        assert_eq!(g.update(&t, &n("c")), None);
        // b goes: what a told c over a-b is replaced, with the link.
        t.peer_down(&n("b"));
        let up = g.update(&t, &n("c")).unwrap();
        assert_eq!(up.lost, vec![Link::new(n("a"), n("b"))]);
        let told: Vec<_> = up.entries.iter().map(|e| (e.machine.as_str(), e.path.len())).collect();
        assert_eq!(told, [("b", 0), ("v", 0)]);
        // Said once.
        t.set_local(vec![n("pty")]);
        assert!(g.update(&t, &n("c")).unwrap().lost.is_empty());
    }

    /// Route tables linked as a graph, exchanging announcements in the
    /// order they are sent, as routers on reliable links do.
    struct Net {
        tables: BTreeMap<MachineId, RouteTable>,
        gossip: BTreeMap<(MachineId, MachineId), PeerGossip>,
        queue: std::collections::VecDeque<(MachineId, MachineId, Announce)>,
        root_cause: bool,
        /// Announcements delivered.
        sent: usize,
    }

    impl Net {
        fn new(edges: &[(String, String)], root_cause: bool) -> Net {
            let mut net = Net {
                tables: BTreeMap::new(),
                gossip: BTreeMap::new(),
                queue: Default::default(),
                root_cause,
                sent: 0,
            };
            for (a, b) in edges {
                for (x, y) in [(a, b), (b, a)] {
                    let t = net.tables.entry(n(x)).or_insert_with(|| RouteTable::new(n(x)));
                    t.set_local(vec![n("svc")]);
                    t.peer_up(&n(y));
                    net.gossip.insert((n(x), n(y)), PeerGossip::default());
                }
            }
            for ((x, y), g) in &mut net.gossip {
                net.queue.push_back((x.clone(), y.clone(), g.full(&net.tables[x], y)));
            }
            net.run();
            net
        }

        /// Queues what changed at `m` for each of its neighbours.
        fn tell(&mut self, m: &MachineId) {
            for ((x, y), g) in self.gossip.range_mut((m.clone(), n("0"))..) {
                if x != m {
                    break;
                }
                if let Some(a) = g.update(&self.tables[x], y) {
                    self.queue.push_back((x.clone(), y.clone(), a));
                }
            }
        }

        fn run(&mut self) {
            while let Some((from, to, a)) = self.queue.pop_front() {
                if !self.gossip.contains_key(&(to.clone(), from.clone())) {
                    continue;
                }
                self.sent += 1;
                let lost = if self.root_cause { &a.lost[..] } else { &[] };
                let t = self.tables.get_mut(&to).unwrap();
                t.apply_lost(&from, a.full, lost, later(), adverts(&a)).unwrap();
                self.tell(&to);
            }
        }

        /// Removes machine `v`: its neighbours see their links go.
        fn remove(&mut self, v: &str) {
            self.tables.remove(&n(v));
            let links: Vec<(MachineId, MachineId)> =
                self.gossip.keys().filter(|(x, y)| *x == n(v) || *y == n(v)).cloned().collect();
            for (x, y) in links {
                self.gossip.remove(&(x.clone(), y.clone()));
                if let Some(t) = self.tables.get_mut(&x) {
                    t.peer_down(&y);
                    self.tell(&x);
                }
            }
            self.run();
        }
    }

    /// The announcements it takes to remove one machine from a mesh
    /// where every surviving table then lacks it.
    fn removal(edges: &[(String, String)], v: &str, root_cause: bool) -> usize {
        let mut net = Net::new(edges, root_cause);
        let all = net.tables.len();
        assert!(net.tables.values().all(|t| t.routes().len() == all), "converged");
        net.sent = 0;
        net.remove(v);
        for (m, t) in &net.tables {
            assert!(t.best(&n(v)).is_none(), "{m} still routes to {v}");
            assert_eq!(t.routes().len(), all - 1, "{m}");
        }
        net.sent
    }

    #[test]
    fn lost_links_end_path_exploration() {
        // A 5x5 grid losing its centre: without reports, the routers
        // around it try each other's dead paths, longer and longer.
        let grid: Vec<(String, String)> = (0..5)
            .flat_map(|i| (0..5).flat_map(move |j| [(i, j, i + 1, j), (i, j, i, j + 1)]))
            .filter(|&(_, _, i, j)| i < 5 && j < 5)
            .map(|(a, b, c, d)| (format!("g{a}{b}"), format!("g{c}{d}")))
            .collect();
        let (grid_without, grid_with) = (removal(&grid, "g22", false), removal(&grid, "g22", true));
        // Two random cycles over 24 machines, as mesh-bench's discovery.
        let mut x: u64 = 7;
        let mut cycle = || {
            let mut v: Vec<usize> = (0..24).collect();
            for i in (1..v.len()).rev() {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                v.swap(i, ((x >> 33) % (i as u64 + 1)) as usize);
            }
            (0..v.len()).map(|i| (v[i], v[(i + 1) % v.len()])).collect::<Vec<_>>()
        };
        let mut pairs: Vec<(usize, usize)> =
            cycle().into_iter().chain(cycle()).map(|(a, b)| (a.min(b), a.max(b))).collect();
        pairs.sort();
        pairs.dedup();
        let random: Vec<(String, String)> =
            pairs.into_iter().map(|(a, b)| (format!("m{a}"), format!("m{b}"))).collect();
        let (random_without, random_with) = (removal(&random, "m12", false), removal(&random, "m12", true));
        eprintln!("grid {grid_without} -> {grid_with}, random {random_without} -> {random_with}");
        assert!(grid_with * 10 < grid_without, "grid: {grid_with} with reports, {grid_without} without");
        assert!(random_with * 10 < random_without, "random: {random_with} with reports, {random_without} without");
    }
}
