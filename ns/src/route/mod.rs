//! The route table: how to reach each machine, and who serves what.
//!
//! Routes are kept per machine, not per service: each neighbour advertises
//! a path to each machine it can reach, with that machine's services; the
//! registry adds routes of its own. The best route to a machine has the
//! fewest hops, ties broken by the neighbour's id; the nearest replica of a
//! service is the machine with the best route, ties broken by machine id.
//! Both rules are deterministic, so every router agrees on them. A path
//! longer than the hop limit is refused, from neighbours and registry
//! alike: what is sent over it could only fail.
//!
//! Work is proportional to what changed, not to the table: an update
//! touching k machines re-chooses the best route of those k only, and the
//! table keeps a journal of the machines whose best route changed, which
//! gossip reads to tell each neighbour only the differences (see
//! [`RouteTable::changed_since`]). With a thousand machines, recomputing
//! and re-diffing the whole table on every announcement cost milliseconds
//! each and made convergence and withdrawals quadratic (mesh-bench's
//! `discovery` workload measures it).
//!
//! Lost links: a neighbour may say which link was lost along with the
//! changes it caused (see [`crate::gossip`] for why). Every advert for
//! the machines it changed whose path crosses that link, whichever
//! neighbour sent it, is set aside at once, and so is any advert that
//! arrives crossing it for a short while after: those paths are dead,
//! even if the neighbours that sent them have not heard yet. A set-aside
//! advert comes back when its neighbour replaces it (the usual case: it
//! heard of the loss too) or when the report expires (the link came back
//! up), so the table never holds less than its neighbours said for
//! longer than that.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write;
use std::sync::Arc;

use tokio::time::Instant;

use crate::path::{bang_path, MachineId, ServiceName, TermName, HOP_LIMIT};

mod lost;

pub use lost::{Link, MAX_LOST_PER_ANNOUNCE};

/// At most this many machines are accepted from one neighbour, so a
/// misbehaving peer cannot grow the table without bound.
pub const MAX_ROUTES_PER_PEER: usize = 4096;

/// One way to reach a machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub machine: MachineId,
    /// The terminal the first hop leaves by: `local` or `net-M`.
    pub term: TermName,
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
    /// Machines whose best route changed or went, oldest first; entry `i`
    /// is change number `journal_start + i`.
    journal: VecDeque<MachineId>,
    journal_start: u64,
    /// Links reported lost, and until when adverts crossing them are set
    /// aside.
    suspect: HashMap<Link, Instant>,
    /// Adverts set aside, by neighbour then destination, with the suspect
    /// link each crosses.
    aside: HashMap<MachineId, HashMap<MachineId, (Advert, Link)>>,
    /// Links lost (reported, or this router's own), for gossip to pass on;
    /// entry `i` is number `lost_start + i`.
    lost_log: VecDeque<Link>,
    lost_start: u64,
}

/// The journal keeps at least this many changes (and four per route), so
/// a reader that falls further behind rereads the whole table instead.
const JOURNAL_MIN: usize = 4096;

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
            journal: VecDeque::new(),
            journal_start: 0,
            suspect: HashMap::new(),
            aside: HashMap::new(),
            lost_log: VecDeque::new(),
            lost_start: 0,
        };
        let me = t.me.clone();
        t.recompute([me]);
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
        let me = self.me.clone();
        self.recompute([me])
    }

    /// A neighbour is up: it is reachable in one hop even before it says more.
    pub fn peer_up(&mut self, peer: &MachineId) -> Change {
        let ads = self.peers.entry(peer.clone()).or_default();
        ads.entry(peer.clone()).or_insert_with(|| Advert { path: vec![peer.clone()], services: Vec::new() });
        // Registry routes through it become usable.
        let mut touched: BTreeSet<MachineId> = self.via_registry(peer);
        touched.insert(peer.clone());
        self.recompute(touched)
    }

    /// Machines the registry routes to through neighbour `peer`.
    fn via_registry(&self, peer: &MachineId) -> BTreeSet<MachineId> {
        self.registry.iter().filter(|(_, ad)| ad.path.first() == Some(peer)).map(|(m, _)| m.clone()).collect()
    }

    /// A neighbour is gone: every route through it is withdrawn at once,
    /// and the link is logged as lost, for gossip to pass on.
    pub fn peer_down(&mut self, peer: &MachineId) -> Change {
        let mut touched = self.via_registry(peer);
        if let Some(ads) = self.peers.remove(peer) {
            touched.extend(ads.into_keys());
        }
        self.aside.remove(peer);
        // A machine the registry told of through the lost neighbour (the
        // list came before this router's own way to it) keeps its
        // registry route when it is reached another way: its services
        // are its own, and go when the registry's list expires, not with
        // a link to the registry.
        let repath: Vec<(MachineId, Advert)> = self
            .registry
            .iter()
            .filter(|(_, ad)| ad.path.first() == Some(peer))
            .filter_map(|(m, ad)| {
                let own = self.candidates(m).into_iter().filter(|rt| rt.source != "registry").min_by_key(rank)?;
                Some((m.clone(), Advert { path: own.path[1..].to_vec(), services: ad.services.clone() }))
            })
            .collect();
        self.registry.retain(|_, ad| ad.path.first() != Some(peer));
        self.registry.extend(repath.into_iter().filter(|(_, ad)| within_reach(ad)));
        self.log_lost(Link::new(self.me.clone(), peer.clone()));
        self.recompute(touched)
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
        self.apply_lost(peer, full, &[], Instant::now(), ads)
    }

    /// [`RouteTable::apply`], after the links the neighbour reports lost:
    /// every advert for the machines in `ads` crossing one of them, from
    /// any neighbour, is set aside until that neighbour replaces it or
    /// `until`. A report counts only from an end of the link or from a
    /// neighbour whose adverts for those machines cross it: a neighbour
    /// speaks only for the paths it gave.
    pub fn apply_lost(
        &mut self,
        peer: &MachineId,
        full: bool,
        lost: &[Link],
        until: Instant,
        ads: impl IntoIterator<Item = (MachineId, Advert)>,
    ) -> Result<Change, usize> {
        let me = self.me.clone();
        // Each machine's last advert in the batch decides; invalid ones
        // withdraw.
        let mut last: HashMap<MachineId, Option<Advert>> = HashMap::new();
        for (m, ad) in ads {
            let valid = ad.path.first() == Some(peer)
                && ad.path.last() == Some(&m)
                && !ad.path.contains(&me)
                && within_reach(&ad);
            last.insert(m, valid.then_some(ad));
        }
        // Checked before anything changes, so a refusal leaves the
        // neighbour's adverts as they were. Set-aside adverts count.
        let cur = self.peers.get(peer).filter(|_| !full);
        let held = self.aside.get(peer).filter(|_| !full);
        let has = |m: &MachineId| cur.is_some_and(|c| c.contains_key(m)) || held.is_some_and(|h| h.contains_key(m));
        let len = cur.map_or(0, HashMap::len)
            + held.map_or(0, HashMap::len)
            + last.iter().filter(|(m, ad)| ad.is_some() && !has(m)).count()
            - last.iter().filter(|(m, ad)| ad.is_none() && has(m)).count();
        if len > MAX_ROUTES_PER_PEER {
            return Err(len);
        }
        let mut touched: BTreeSet<MachineId> = last.keys().cloned().collect();
        if !lost.is_empty() {
            let machines: Vec<MachineId> = last.keys().cloned().collect();
            for link in lost.iter().take(MAX_LOST_PER_ANNOUNCE) {
                self.link_lost(peer, Link::new(link.0.clone(), link.1.clone()), until, &machines, &mut touched);
            }
        }
        let mut next = self.peers.remove(peer).unwrap_or_default();
        let mut aside = self.aside.remove(peer).unwrap_or_default();
        if full {
            touched.extend(next.drain().map(|(m, _)| m));
            aside.clear();
        }
        for (m, ad) in last {
            // Whatever the neighbour says now replaces what was set aside.
            aside.remove(&m);
            next.remove(&m);
            let Some(ad) = ad else { continue };
            match self.suspect_crossed(&ad.path) {
                Some(link) => {
                    aside.insert(m, (ad, link));
                }
                None => {
                    next.insert(m, ad);
                }
            }
        }
        if !aside.is_empty() {
            self.aside.insert(peer.clone(), aside);
        }
        next.entry(peer.clone()).or_insert_with(|| Advert { path: vec![peer.clone()], services: Vec::new() });
        touched.insert(peer.clone());
        // A neighbour not seen before makes registry routes through it usable.
        touched.extend(self.via_registry(peer));
        self.peers.insert(peer.clone(), next);
        Ok(self.recompute(touched))
    }

    /// Replaces the routes learned from the registry.
    pub fn set_registry(&mut self, ads: HashMap<MachineId, Advert>) -> Change {
        let me = self.me.clone();
        let new: HashMap<MachineId, Advert> =
            ads.into_iter().filter(|(m, ad)| *m != me && !ad.path.contains(&me) && within_reach(ad)).collect();
        let mut touched: BTreeSet<MachineId> = new.keys().cloned().collect();
        touched.extend(std::mem::replace(&mut self.registry, new).into_keys());
        self.recompute(touched)
    }

    /// Adds one route learned from the registry.
    pub fn add_registry(&mut self, m: MachineId, ad: Advert) -> Change {
        if m != self.me && !ad.path.contains(&self.me) && within_reach(&ad) {
            self.registry.insert(m.clone(), ad);
        }
        self.recompute([m])
    }

    /// The number the next change will have: where a reader of
    /// [`RouteTable::changed_since`] is once it has read everything.
    pub fn journal_end(&self) -> u64 {
        self.journal_start + self.journal.len() as u64
    }

    /// The machines whose best route changed or went since change number
    /// `seen` (a [`RouteTable::journal_end`] read earlier), oldest first,
    /// possibly more than once; `None` when the journal no longer reaches
    /// that far back, and the reader must compare the whole table.
    pub fn changed_since(&self, seen: u64) -> Option<impl Iterator<Item = &MachineId>> {
        let skip = seen.checked_sub(self.journal_start)?;
        Some(self.journal.iter().skip(skip as usize))
    }

    /// Every machine with a route, in no order.
    pub fn machines(&self) -> impl Iterator<Item = &MachineId> {
        self.best.keys()
    }

    /// Whether neighbour `peer` advertises a route to `m` (or is `m`):
    /// what it may speak for.
    pub fn peer_reaches(&self, peer: &MachineId, m: &MachineId) -> bool {
        peer == m
            || self.peers.get(peer).is_some_and(|ads| ads.contains_key(m))
            || self.aside.get(peer).is_some_and(|ads| ads.contains_key(m))
    }

    /// The best route to `m`.
    pub fn best(&self, m: &MachineId) -> Option<&Arc<Route>> {
        self.best.get(m)
    }

    /// Every route to `m`, best first (the alternatives for failover).
    pub fn alternatives(&self, m: &MachineId) -> Vec<Route> {
        let mut v = self.candidates(m);
        v.sort_by_key(rank);
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
                term: TermName::Local,
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
            v.push(Route {
                machine: m.clone(),
                term: TermName::Net(ad.path[0].clone()),
                path,
                services: ad.services.clone(),
                source,
            });
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

    /// The best route to `m` from what is known now, or `None`.
    ///
    /// The same choice as sorting [`RouteTable::candidates`] by [`rank`]
    /// and taking the first, without making a route of every candidate:
    /// ranks are compared on the adverts, in the same order (neighbours
    /// by id, then the registry), the first of equals winning.
    fn choose(&self, m: &MachineId) -> Option<Route> {
        if *m == self.me {
            return Some(Route {
                machine: m.clone(),
                term: TermName::Local,
                path: vec![m.clone()],
                services: self.local.clone(),
                source: "local",
            });
        }
        let key = |ad: &Advert, registry: bool| (ad.path.len(), registry, ad.path[0].clone());
        let mut win: Option<(&Advert, bool)> = None;
        for ads in self.peers.values() {
            if let Some(ad) = ads.get(m) {
                if win.is_none_or(|(w, wr)| key(ad, false) < key(w, wr)) {
                    win = Some((ad, false));
                }
            }
        }
        // A registry route is usable only through a neighbour that is up.
        let listed = self.registry.get(m).filter(|ad| self.peers.contains_key(&ad.path[0]));
        if let Some(ad) = listed {
            if win.is_none_or(|(w, wr)| key(ad, true) < key(w, wr)) {
                win = Some((ad, true));
            }
        }
        let (ad, registry) = win?;
        // Without gossip, a neighbour's own route says nothing of its
        // services: what the registry lists for it fills in, whichever
        // path is shorter.
        let mut services = match listed {
            Some(l) if ad.services.is_empty() => l.services.clone(),
            _ => ad.services.clone(),
        };
        services.sort();
        let mut path = Vec::with_capacity(ad.path.len() + 1);
        path.push(self.me.clone());
        path.extend(ad.path.iter().cloned());
        let term = TermName::Net(ad.path[0].clone());
        Some(Route { machine: m.clone(), term, path, services, source: if registry { "registry" } else { "gossip" } })
    }

    /// Chooses the best route again for the `touched` machines only, and
    /// journals those whose route or services changed.
    fn recompute(&mut self, touched: impl IntoIterator<Item = MachineId>) -> Change {
        let mut change = Change::default();
        for m in touched {
            match (self.choose(&m), self.best.get(&m)) {
                (Some(new), Some(old)) if old.path == new.path && old.services == new.services => {
                    // Same route: keep it (and its Arc, shared with gossip's
                    // record of what was told) unless only its source moved.
                    if old.source != new.source {
                        self.best.insert(m, Arc::new(new));
                    }
                }
                (Some(new), _) => {
                    self.best.insert(m.clone(), Arc::new(new));
                    change.changed.insert(m);
                }
                (None, Some(_)) => {
                    self.best.remove(&m);
                    change.lost.insert(m.clone());
                    change.changed.insert(m);
                }
                (None, None) => {}
            }
        }
        for m in &change.changed {
            self.journal.push_back(m.clone());
        }
        let cap = JOURNAL_MIN.max(4 * self.best.len());
        while self.journal.len() > cap {
            self.journal.pop_front();
            self.journal_start += 1;
        }
        change
    }
}

/// Whether a route over an advert's path (from the first hop on) is
/// within the hop limit with this machine in front: a request over it
/// crosses at most [`HOP_LIMIT`] machines, and so does the reply or error
/// back. Longer paths are refused like invalid ones: an envelope sent
/// over them could only fail.
fn within_reach(ad: &Advert) -> bool {
    !ad.path.is_empty() && ad.path.len() < HOP_LIMIT
}

/// Fewer hops first; then gossip over registry; then the neighbour's id.
fn rank(r: &Route) -> (usize, bool, Option<MachineId>) {
    (r.hops(), r.source == "registry", r.next_hop().cloned())
}

#[cfg(test)]
mod tests;
