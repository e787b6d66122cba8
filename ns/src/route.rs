//! The route table: how to reach each machine, and who serves what.
//!
//! Routes are kept per machine, not per service: each neighbour advertises
//! a path to each machine it can reach, with that machine's services; the
//! registry adds routes of its own. The best route to a machine has the
//! fewest hops, ties broken by the neighbour's id; the nearest replica of a
//! service is the machine with the best route, ties broken by machine id.
//! Both rules are deterministic, so every router agrees on them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::sync::Arc;

use crate::path::{bang_path, MachineId, ServiceName};

/// At most this many machines are accepted from one neighbour, so a
/// misbehaving peer cannot grow the table without bound.
pub const MAX_ROUTES_PER_PEER: usize = 4096;

/// One way to reach a machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub machine: MachineId,
    /// The terminal the first hop leaves by: `local` or `net-M`.
    pub term: String,
    /// Machines from here to the destination, both ends included.
    pub path: Vec<MachineId>,
    pub services: Vec<ServiceName>,
    /// Where the route came from: `local`, `gossip` or `registry`.
    pub source: &'static str,
}

impl Route {
    pub fn hops(&self) -> usize {
        self.path.len() - 1
    }

    /// The neighbour the route leaves by (none for this machine).
    pub fn next_hop(&self) -> Option<&MachineId> {
        self.path.get(1)
    }
}

/// A neighbour's advert for one machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// From the neighbour to the machine, both included.
    pub path: Vec<MachineId>,
    pub services: Vec<ServiceName>,
}

/// All routes this router knows.
pub struct RouteTable {
    me: MachineId,
    local: Vec<ServiceName>,
    /// Adverts by neighbour, then by destination.
    peers: BTreeMap<MachineId, HashMap<MachineId, Advert>>,
    /// Routes from the registry: destination -> (path from the first hop).
    registry: HashMap<MachineId, Advert>,
    /// The chosen route for each reachable machine, derived.
    best: HashMap<MachineId, Arc<Route>>,
}

/// What a change did to reachability.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Machines whose best route or services changed (to re-advertise).
    pub changed: BTreeSet<MachineId>,
    /// Machines no longer reachable at all.
    pub lost: BTreeSet<MachineId>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.lost.is_empty()
    }
}

impl RouteTable {
    pub fn new(me: MachineId) -> RouteTable {
        let mut t = RouteTable {
            me,
            local: Vec::new(),
            peers: BTreeMap::new(),
            registry: HashMap::new(),
            best: HashMap::new(),
        };
        t.recompute();
        t
    }

    pub fn me(&self) -> &MachineId {
        &self.me
    }

    /// Sets the services offered on this machine.
    pub fn set_local(&mut self, mut services: Vec<ServiceName>) -> Change {
        services.sort();
        services.dedup();
        self.local = services;
        self.recompute()
    }

    /// A neighbour is up: it is reachable in one hop even before it says more.
    pub fn peer_up(&mut self, peer: &MachineId) -> Change {
        let ads = self.peers.entry(peer.clone()).or_default();
        ads.entry(peer.clone())
            .or_insert_with(|| Advert { path: vec![peer.clone()], services: Vec::new() });
        self.recompute()
    }

    /// A neighbour is gone: every route through it is withdrawn at once.
    pub fn peer_down(&mut self, peer: &MachineId) -> Change {
        self.peers.remove(peer);
        self.registry.retain(|_, ad| ad.path.first() != Some(peer));
        self.recompute()
    }

    /// Applies adverts from a neighbour; an empty path withdraws. With
    /// `full`, the adverts replace everything the neighbour said before.
    /// Paths through this machine are refused (loops). Fails, changing
    /// nothing, when the neighbour would exceed its route cap.
    pub fn apply(
        &mut self,
        peer: &MachineId,
        full: bool,
        ads: impl IntoIterator<Item = (MachineId, Advert)>,
    ) -> Result<Change, usize> {
        let mut next = if full { HashMap::new() } else { self.peers.get(peer).cloned().unwrap_or_default() };
        for (m, ad) in ads {
            let valid = !ad.path.is_empty()
                && ad.path.first() == Some(peer)
                && ad.path.last() == Some(&m)
                && !ad.path.contains(&self.me);
            if valid {
                next.insert(m, ad);
            } else {
                next.remove(&m);
            }
        }
        if next.len() > MAX_ROUTES_PER_PEER {
            return Err(next.len());
        }
        next.entry(peer.clone()).or_insert_with(|| Advert { path: vec![peer.clone()], services: Vec::new() });
        self.peers.insert(peer.clone(), next);
        Ok(self.recompute())
    }

    /// Replaces the routes learned from the registry.
    pub fn set_registry(&mut self, ads: HashMap<MachineId, Advert>) -> Change {
        let me = self.me.clone();
        self.registry = ads
            .into_iter()
            .filter(|(m, ad)| *m != me && !ad.path.is_empty() && !ad.path.contains(&me))
            .collect();
        self.recompute()
    }

    /// Adds one route learned from the registry.
    pub fn add_registry(&mut self, m: MachineId, ad: Advert) -> Change {
        if m != self.me && !ad.path.is_empty() && !ad.path.contains(&self.me) {
            self.registry.insert(m, ad);
        }
        self.recompute()
    }

    /// Whether neighbour `peer` advertises a route to `m` (or is `m`):
    /// what it may speak for.
    pub fn peer_reaches(&self, peer: &MachineId, m: &MachineId) -> bool {
        peer == m || self.peers.get(peer).is_some_and(|ads| ads.contains_key(m))
    }

    /// The best route to `m`.
    pub fn best(&self, m: &MachineId) -> Option<&Arc<Route>> {
        self.best.get(m)
    }

    /// Every route to `m`, best first (the alternatives for failover).
    pub fn alternatives(&self, m: &MachineId) -> Vec<Route> {
        let mut v = self.candidates(m);
        v.sort_by(|a, b| rank(a).cmp(&rank(b)));
        v
    }

    /// The nearest machine serving `service`.
    pub fn nearest(&self, service: &str) -> Option<&Arc<Route>> {
        self.best
            .values()
            .filter(|r| r.services.iter().any(|s| s.as_str() == service))
            .min_by(|a, b| (a.hops(), &a.machine).cmp(&(b.hops(), &b.machine)))
    }

    /// Every reachable machine's best route, sorted by machine.
    pub fn routes(&self) -> Vec<Arc<Route>> {
        let mut v: Vec<_> = self.best.values().cloned().collect();
        v.sort_by(|a, b| a.machine.cmp(&b.machine));
        v
    }

    /// Every service reachable, with its nearest route.
    pub fn services(&self) -> BTreeMap<ServiceName, Arc<Route>> {
        let mut out: BTreeMap<ServiceName, Arc<Route>> = BTreeMap::new();
        for r in self.best.values() {
            for s in &r.services {
                let better = out.get(s).is_none_or(|o| (r.hops(), &r.machine) < (o.hops(), &o.machine));
                if better {
                    out.insert(s.clone(), r.clone());
                }
            }
        }
        out
    }

    /// The table as the `routes` file shows it: one line per service and
    /// machine serving it, `service machine terminal hops path`.
    pub fn render(&self) -> String {
        let mut rows: Vec<(&ServiceName, usize, &MachineId, &Route)> = Vec::new();
        for r in self.best.values() {
            for s in &r.services {
                rows.push((s, r.hops(), &r.machine, r));
            }
        }
        rows.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        let mut out = String::new();
        for (s, hops, m, r) in rows {
            let _ = writeln!(out, "{s} {m} {} {hops} {}", r.term, bang_path(&r.path));
        }
        out
    }

    fn candidates(&self, m: &MachineId) -> Vec<Route> {
        if *m == self.me {
            return vec![Route {
                machine: m.clone(),
                term: "local".into(),
                path: vec![m.clone()],
                services: self.local.clone(),
                source: "local",
            }];
        }
        let mut v = Vec::new();
        let mut add = |ad: &Advert, source| {
            let mut path = Vec::with_capacity(ad.path.len() + 1);
            path.push(self.me.clone());
            path.extend(ad.path.iter().cloned());
            v.push(Route { machine: m.clone(), term: format!("net-{}", ad.path[0]), path, services: ad.services.clone(), source });
        };
        for ads in self.peers.values() {
            if let Some(ad) = ads.get(m) {
                add(ad, "gossip");
            }
        }
        // A registry route is usable only through a neighbour that is up.
        if let Some(ad) = self.registry.get(m).filter(|ad| self.peers.contains_key(&ad.path[0])) {
            add(ad, "registry");
        }
        v
    }

    fn recompute(&mut self) -> Change {
        let mut machines: BTreeSet<MachineId> = BTreeSet::new();
        machines.insert(self.me.clone());
        for ads in self.peers.values() {
            machines.extend(ads.keys().cloned());
        }
        machines.extend(self.registry.keys().cloned());
        let mut best = HashMap::new();
        for m in machines {
            let mut c = self.candidates(&m);
            c.sort_by(|a, b| rank(a).cmp(&rank(b)));
            // Without gossip, a neighbour's own route says nothing of its
            // services: what the registry lists for it fills in, whichever
            // path is shorter.
            let listed = c.iter().find(|r| r.source == "registry").map(|r| r.services.clone());
            if let Some(mut r) = c.into_iter().next() {
                if r.services.is_empty() && r.source != "local" {
                    r.services = listed.unwrap_or_default();
                }
                r.services.sort();
                best.insert(m, Arc::new(r));
            }
        }
        let mut change = Change::default();
        for (m, r) in &best {
            if self.best.get(m).is_none_or(|old| old.path != r.path || old.services != r.services) {
                change.changed.insert(m.clone());
            }
        }
        for m in self.best.keys() {
            if !best.contains_key(m) {
                change.lost.insert(m.clone());
                change.changed.insert(m.clone());
            }
        }
        self.best = best;
        change
    }
}

/// Fewer hops first; then gossip over registry; then the neighbour's id.
fn rank(r: &Route) -> (usize, bool, Option<MachineId>) {
    (r.hops(), r.source == "registry", r.next_hop().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> MachineId {
        s.parse().unwrap()
    }
    fn ad(path: &[&str], svcs: &[&str]) -> Advert {
        Advert { path: path.iter().map(|s| n(s)).collect(), services: svcs.iter().map(|s| n(s)).collect() }
    }

    #[test]
    fn registry_services_fill_a_silent_neighbour() {
        // Gossip off: neighbour b is up but says nothing; the registry, a
        // hop further, says b serves echo. The direct path wins, with
        // the registry's services.
        let mut t = RouteTable::new(n("a"));
        t.peer_up(&n("b"));
        t.peer_up(&n("r"));
        t.set_registry(HashMap::from([(n("b"), ad(&["r", "b"], &["echo"]))]));
        let best = t.best(&n("b")).unwrap();
        assert_eq!((best.term.as_str(), best.hops(), best.services.clone()), ("net-b", 1, vec![n("echo")]));
        assert_eq!(t.nearest("echo").unwrap().machine, n("b"));
    }

    #[test]
    fn fewer_hops_win_and_ties_break_by_neighbour() {
        let mut t = RouteTable::new(n("a"));
        t.peer_up(&n("c"));
        t.peer_up(&n("b"));
        t.apply(&n("c"), false, [(n("d"), ad(&["c", "x", "d"], &["gpu"]))]).unwrap();
        t.apply(&n("b"), false, [(n("d"), ad(&["b", "d"], &["gpu"]))]).unwrap();
        assert_eq!(t.best(&n("d")).unwrap().path, vec![n("a"), n("b"), n("d")]);
        t.apply(&n("c"), false, [(n("d"), ad(&["c", "d"], &["gpu"]))]).unwrap();
        // Equal hops: neighbour b sorts before c.
        assert_eq!(t.best(&n("d")).unwrap().term, "net-b");
        assert_eq!(t.alternatives(&n("d")).len(), 2);
        let ch = t.peer_down(&n("b"));
        assert!(ch.changed.contains(&n("d")) && ch.lost.contains(&n("b")));
        assert_eq!(t.best(&n("d")).unwrap().term, "net-c");
    }

    #[test]
    fn loops_are_refused() {
        let mut t = RouteTable::new(n("a"));
        t.peer_up(&n("b"));
        t.apply(&n("b"), false, [(n("c"), ad(&["b", "a", "c"], &["x"]))]).unwrap();
        assert!(t.best(&n("c")).is_none());
    }

    #[test]
    fn nearest_replica_is_deterministic() {
        let mut t = RouteTable::new(n("a"));
        t.peer_up(&n("b"));
        t.apply(&n("b"), false, [(n("b"), ad(&["b"], &["up"])), (n("c"), ad(&["b", "c"], &["up"]))]).unwrap();
        assert_eq!(t.nearest("up").unwrap().machine, n("b"));
        t.set_local(vec![n("up")]);
        assert_eq!(t.nearest("up").unwrap().machine, n("a"));
        assert!(t.render().starts_with("up a local 0 a\nup b net-b 1 a!b\nup c net-b 2 a!b!c\n"), "{}", t.render());
    }

    #[test]
    fn route_cap_per_peer() {
        let mut t = RouteTable::new(n("a"));
        let many = (0..MAX_ROUTES_PER_PEER + 1).map(|i| (n(&format!("m{i}")), ad(&["b", &format!("m{i}")], &[])));
        assert!(t.apply(&n("b"), false, many).is_err());
        assert!(t.best(&n("m1")).is_none());
    }
}
