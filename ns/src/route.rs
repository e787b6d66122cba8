//! The route table: how to reach each machine, and who serves what.
//!
//! Routes are kept per machine, not per service: each neighbour advertises
//! a path to each machine it can reach, with that machine's services; the
//! registry adds routes of its own. The best route to a machine has the
//! fewest hops, ties broken by the neighbour's id; the nearest replica of a
//! service is the machine with the best route, ties broken by machine id.
//! Both rules are deterministic, so every router agrees on them.
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

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

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

/// A link between two machines, either way round: what a report of a lost
/// link names. Its ends are kept in order (see [`Link::new`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Link(pub MachineId, pub MachineId);

impl Link {
    /// The link between `a` and `b`, the same whichever comes first.
    pub fn new(a: MachineId, b: MachineId) -> Link {
        if a <= b {
            Link(a, b)
        } else {
            Link(b, a)
        }
    }

    /// Whether `m` is one of its ends.
    pub fn has_end(&self, m: &MachineId) -> bool {
        self.0 == *m || self.1 == *m
    }

    /// Whether `path` goes over it, in either direction.
    pub fn crossed_by(&self, path: &[MachineId]) -> bool {
        path.windows(2).any(|w| (w[0] == self.0 && w[1] == self.1) || (w[0] == self.1 && w[1] == self.0))
    }
}

/// At most this many links are taken from one announcement, and at most
/// `MAX_SUSPECT` are held at once: each is checked against every advert
/// that arrives while it is held, and reports only speed up what
/// withdrawals would do anyway.
pub const MAX_LOST_PER_ANNOUNCE: usize = 64;
const MAX_SUSPECT: usize = 256;

/// The log of lost links gossip passes on keeps this many.
const LOST_LOG: usize = 1024;

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
        ads.entry(peer.clone())
            .or_insert_with(|| Advert { path: vec![peer.clone()], services: Vec::new() });
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
        self.registry.retain(|_, ad| ad.path.first() != Some(peer));
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
            let valid = !ad.path.is_empty() && ad.path.first() == Some(peer) && ad.path.last() == Some(&m) && !ad.path.contains(&me);
            last.insert(m, valid.then_some(ad));
        }
        // Checked before anything changes, so a refusal leaves the
        // neighbour's adverts as they were. Set-aside adverts count.
        let cur = self.peers.get(peer).filter(|_| !full);
        let held = self.aside.get(peer).filter(|_| !full);
        let has = |m: &MachineId| cur.is_some_and(|c| c.contains_key(m)) || held.is_some_and(|h| h.contains_key(m));
        let len = cur.map_or(0, HashMap::len) + held.map_or(0, HashMap::len) + last.iter().filter(|(m, ad)| ad.is_some() && !has(m)).count()
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

    /// Takes a report from `peer` that `link` is lost, with its update for
    /// `machines`: sets aside every advert for those crossing the link,
    /// whichever neighbour sent it, noting them in `touched`, and logs the
    /// link for gossip when it set anything aside (else no one learned a
    /// path over it from here, and no one needs the report from here).
    /// Only the machines the update names are looked at, so the work is
    /// that of the update, not of the table; adverts for others crossing
    /// the link are replaced by their own neighbours' reports.
    fn link_lost(&mut self, peer: &MachineId, link: Link, until: Instant, machines: &[MachineId], touched: &mut BTreeSet<MachineId>) {
        if link.0 == link.1 || self.suspect.contains_key(&link) || self.suspect.len() >= MAX_SUSPECT {
            return;
        }
        let gave = |ads: &HashMap<MachineId, Advert>| machines.iter().any(|m| ads.get(m).is_some_and(|ad| link.crossed_by(&ad.path)));
        if !link.has_end(peer) && !self.peers.get(peer).is_some_and(gave) {
            return;
        }
        self.suspect.insert(link.clone(), until);
        let mut any = false;
        for (p, ads) in &mut self.peers {
            for m in machines {
                if !ads.get(m).is_some_and(|ad| link.crossed_by(&ad.path)) {
                    continue;
                }
                if let Some(ad) = ads.remove(m) {
                    self.aside.entry(p.clone()).or_default().insert(m.clone(), (ad, link.clone()));
                    touched.insert(m.clone());
                    any = true;
                }
            }
        }
        if any {
            self.log_lost(link);
        }
    }

    /// The suspect link `path` crosses, if any.
    fn suspect_crossed(&self, path: &[MachineId]) -> Option<Link> {
        if self.suspect.is_empty() {
            return None;
        }
        self.suspect.keys().find(|l| l.crossed_by(path)).cloned()
    }

    fn log_lost(&mut self, link: Link) {
        self.lost_log.push_back(link);
        while self.lost_log.len() > LOST_LOG {
            self.lost_log.pop_front();
            self.lost_start += 1;
        }
    }

    /// When the first report of a lost link expires, if any.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.suspect.values().min().copied()
    }

    /// Forgets the reports that expired by `now`, and takes back the
    /// adverts set aside for them that their neighbours never replaced:
    /// those paths were not dead after all (the link came back), or their
    /// neighbour would have said so by now.
    pub fn expire(&mut self, now: Instant) -> Change {
        let before = self.suspect.len();
        self.suspect.retain(|_, until| *until > now);
        if self.suspect.len() == before {
            return Change::default();
        }
        let mut touched = BTreeSet::new();
        let mut aside = std::mem::take(&mut self.aside);
        for (p, ads) in &mut aside {
            let back: Vec<MachineId> = ads.iter().filter(|(_, (_, l))| !self.suspect.contains_key(l)).map(|(m, _)| m.clone()).collect();
            for m in back {
                let Some((ad, _)) = ads.remove(&m) else { continue };
                match self.suspect_crossed(&ad.path) {
                    Some(l) => {
                        ads.insert(m, (ad, l));
                    }
                    None => {
                        if let Some(cur) = self.peers.get_mut(p) {
                            cur.insert(m.clone(), ad);
                            touched.insert(m);
                        }
                    }
                }
            }
        }
        aside.retain(|_, ads| !ads.is_empty());
        self.aside = aside;
        self.recompute(touched)
    }

    /// The links lost since number `seen` (a [`RouteTable::lost_end`]
    /// read earlier), oldest first; `None` when the log no longer reaches
    /// that far back.
    pub fn lost_since(&self, seen: u64) -> Option<impl Iterator<Item = &Link>> {
        let skip = seen.checked_sub(self.lost_start)?;
        Some(self.lost_log.iter().skip(skip as usize))
    }

    /// The number the next lost link will have.
    pub fn lost_end(&self) -> u64 {
        self.lost_start + self.lost_log.len() as u64
    }

    /// Replaces the routes learned from the registry.
    pub fn set_registry(&mut self, ads: HashMap<MachineId, Advert>) -> Change {
        let me = self.me.clone();
        let new: HashMap<MachineId, Advert> = ads
            .into_iter()
            .filter(|(m, ad)| *m != me && !ad.path.is_empty() && !ad.path.contains(&me))
            .collect();
        let mut touched: BTreeSet<MachineId> = new.keys().cloned().collect();
        touched.extend(std::mem::replace(&mut self.registry, new).into_keys());
        self.recompute(touched)
    }

    /// Adds one route learned from the registry.
    pub fn add_registry(&mut self, m: MachineId, ad: Advert) -> Change {
        if m != self.me && !ad.path.is_empty() && !ad.path.contains(&self.me) {
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

    /// The best route to `m` from what is known now, or `None`.
    ///
    /// The same choice as sorting [`RouteTable::candidates`] by [`rank`]
    /// and taking the first, without making a route of every candidate:
    /// ranks are compared on the adverts, in the same order (neighbours
    /// by id, then the registry), the first of equals winning.
    fn choose(&self, m: &MachineId) -> Option<Route> {
        if *m == self.me {
            return Some(Route { machine: m.clone(), term: "local".into(), path: vec![m.clone()], services: self.local.clone(), source: "local" });
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
        let term = format!("net-{}", ad.path[0]);
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

    /// The table as recomputing everything from scratch would make it:
    /// every candidate sorted by rank, as the table did before it became
    /// incremental.
    fn from_scratch(t: &RouteTable) -> BTreeMap<MachineId, Route> {
        let mut machines: BTreeSet<MachineId> = BTreeSet::from([t.me.clone()]);
        for ads in t.peers.values() {
            machines.extend(ads.keys().cloned());
        }
        machines.extend(t.registry.keys().cloned());
        let mut out = BTreeMap::new();
        for m in machines {
            let mut c = t.candidates(&m);
            c.sort_by_key(rank);
            let listed = c.iter().find(|r| r.source == "registry").map(|r| r.services.clone());
            if let Some(mut r) = c.into_iter().next() {
                if r.services.is_empty() && r.source != "local" {
                    r.services = listed.unwrap_or_default();
                }
                r.services.sort();
                out.insert(m, r);
            }
        }
        out
    }

    /// A tiny deterministic generator for the randomized test.
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 33) % n as u64) as usize
        }
    }

    #[test]
    fn incremental_choice_matches_recomputing_everything() {
        let names: Vec<MachineId> = ["a", "b", "c", "d", "e", "f", "g"].iter().map(|s| n(s)).collect();
        let svcs: Vec<ServiceName> = ["x", "y", "z"].iter().map(|s| n(s)).collect();
        for seed in 0..20 {
            let mut rng = Lcg(seed);
            let mut t = RouteTable::new(n("a"));
            let mut told: HashMap<MachineId, Arc<Route>> = HashMap::new();
            let mut seen = t.journal_end();
            for step in 0..400 {
                let peer = names[1 + rng.below(3)].clone();
                let before: BTreeMap<MachineId, Arc<Route>> = t.best.iter().map(|(m, r)| (m.clone(), r.clone())).collect();
                let change = match rng.below(8) {
                    0 => t.peer_up(&peer),
                    1 => t.peer_down(&peer),
                    2 => t.set_local(vec![svcs[rng.below(3)].clone()]),
                    3 => {
                        let m = names[rng.below(names.len())].clone();
                        let hop = names[1 + rng.below(3)].clone();
                        t.add_registry(m.clone(), Advert { path: vec![hop, m], services: vec![svcs[rng.below(3)].clone()] })
                    }
                    4 => t.set_registry(HashMap::new()),
                    _ => {
                        let full = rng.below(4) == 0;
                        let ads: Vec<(MachineId, Advert)> = (0..1 + rng.below(4))
                            .map(|_| {
                                let m = names[rng.below(names.len())].clone();
                                let mut path = vec![peer.clone()];
                                for _ in 0..rng.below(3) {
                                    path.push(names[rng.below(names.len())].clone());
                                }
                                if *path.last().unwrap() != m {
                                    path.push(m.clone());
                                }
                                // Some withdraw, some are loops through a.
                                if rng.below(6) == 0 {
                                    path.clear();
                                }
                                let services = (0..rng.below(3)).map(|_| svcs[rng.below(3)].clone()).collect();
                                (m, Advert { path, services })
                            })
                            .collect();
                        t.apply(&peer, full, ads).unwrap()
                    }
                };
                let want = from_scratch(&t);
                let got: BTreeMap<MachineId, Route> = t.best.iter().map(|(m, r)| (m.clone(), (**r).clone())).collect();
                assert_eq!(got, want, "seed {seed} step {step}");
                // The change names exactly the machines whose route or
                // services differ, and the lost ones.
                let differ: BTreeSet<MachineId> = before
                    .keys()
                    .chain(want.keys())
                    .filter(|m| match (before.get(*m), want.get(*m)) {
                        (Some(a), Some(b)) => a.path != b.path || a.services != b.services,
                        (None, None) => false,
                        _ => true,
                    })
                    .cloned()
                    .collect();
                assert_eq!(change.changed, differ, "seed {seed} step {step}");
                assert_eq!(change.lost, before.keys().filter(|m| !want.contains_key(*m)).cloned().collect(), "seed {seed} step {step}");
                // The journal names every machine that changed.
                let journaled: BTreeSet<MachineId> = t.changed_since(seen).unwrap().cloned().collect();
                assert!(differ.is_subset(&journaled), "seed {seed} step {step}");
                seen = t.journal_end();
                for m in &differ {
                    match t.best(m) {
                        Some(r) => told.insert(m.clone(), r.clone()),
                        None => told.remove(m),
                    };
                }
            }
            assert_eq!(told.len(), t.best.len());
        }
    }

    #[test]
    fn the_journal_forgets_the_oldest_changes() {
        let mut t = RouteTable::new(n("a"));
        let start = t.journal_end();
        t.peer_up(&n("b"));
        assert_eq!(t.changed_since(start).unwrap().cloned().collect::<Vec<_>>(), vec![n("b")]);
        for i in 0..JOURNAL_MIN {
            t.set_local(vec![n(&format!("s{i}"))]);
        }
        assert!(t.changed_since(start).is_none(), "too far back");
        assert!(t.changed_since(t.journal_end()).unwrap().next().is_none());
    }

    #[test]
    fn route_cap_per_peer() {
        let mut t = RouteTable::new(n("a"));
        let many = (0..MAX_ROUTES_PER_PEER + 1).map(|i| (n(&format!("m{i}")), ad(&["b", &format!("m{i}")], &[])));
        assert!(t.apply(&n("b"), false, many.clone()).is_err());
        assert!(t.best(&n("m1")).is_none());
        // A refused full table changes nothing either.
        t.apply(&n("b"), false, [(n("m1"), ad(&["b", "m1"], &[]))]).unwrap();
        assert!(t.apply(&n("b"), true, many).is_err());
        assert!(t.best(&n("m1")).is_some());
    }

    /// a's neighbours b and c; b reaches v directly, c through b.
    fn before_v_dies() -> RouteTable {
        let mut t = RouteTable::new(n("a"));
        t.peer_up(&n("b"));
        t.peer_up(&n("c"));
        t.apply(&n("b"), false, [(n("v"), ad(&["b", "v"], &["s"]))]).unwrap();
        t.apply(&n("c"), false, [(n("v"), ad(&["c", "b", "v"], &["s"]))]).unwrap();
        assert_eq!(t.best(&n("v")).unwrap().term, "net-b");
        t
    }

    fn withdraw(m: &str) -> (MachineId, Advert) {
        (n(m), Advert { path: vec![], services: vec![] })
    }

    fn later(secs: u64) -> Instant {
        Instant::now() + std::time::Duration::from_secs(secs)
    }

    #[test]
    fn a_lost_link_sets_aside_every_path_over_it() {
        // Without the report, a would move to c's path, dead too.
        let mut t = before_v_dies();
        t.apply(&n("b"), false, [withdraw("v")]).unwrap();
        assert_eq!(t.best(&n("v")).unwrap().path, [n("a"), n("c"), n("b"), n("v")]);
        // With it, a knows at once that v is gone, and logs the link.
        let mut t = before_v_dies();
        let start = t.lost_end();
        let link = Link::new(n("v"), n("b"));
        let ch = t.apply_lost(&n("b"), false, std::slice::from_ref(&link), later(60), [withdraw("v")]).unwrap();
        assert!(ch.lost.contains(&n("v")), "{ch:?}");
        assert_eq!(t.lost_since(start).unwrap().cloned().collect::<Vec<_>>(), vec![link]);
        // c still speaks for what it said, and its late news of the same
        // path is set aside too.
        assert!(t.peer_reaches(&n("c"), &n("v")));
        t.apply(&n("c"), false, [(n("v"), ad(&["c", "b", "v"], &["s"]))]).unwrap();
        assert!(t.best(&n("v")).is_none());
        // c replaces it: the set-aside path is gone for good.
        t.apply(&n("c"), false, [withdraw("v")]).unwrap();
        assert!(!t.peer_reaches(&n("c"), &n("v")));
        assert!(t.expire(later(120)).is_empty());
        assert!(t.best(&n("v")).is_none() && t.next_expiry().is_none());
    }

    #[test]
    fn a_path_never_replaced_comes_back_when_the_report_expires() {
        // The link came back before c heard: c's path is good after all.
        let mut t = before_v_dies();
        let until = later(60);
        t.apply_lost(&n("b"), false, &[Link::new(n("b"), n("v"))], until, [withdraw("v")]).unwrap();
        assert_eq!(t.next_expiry(), Some(until));
        assert!(t.expire(later(30)).is_empty(), "not yet");
        let ch = t.expire(until);
        assert!(ch.changed.contains(&n("v")));
        assert_eq!(t.best(&n("v")).unwrap().term, "net-c");
        assert!(t.next_expiry().is_none());
    }

    #[test]
    fn a_report_counts_only_from_who_gave_a_path_over_the_link() {
        let mut t = before_v_dies();
        t.peer_up(&n("d"));
        t.apply(&n("d"), false, [(n("v"), ad(&["d", "e", "v"], &["s"]))]).unwrap();
        // d neither ends b-v nor gave a path over it: ignored.
        t.apply_lost(&n("d"), false, &[Link::new(n("b"), n("v"))], later(60), [(n("v"), ad(&["d", "e", "v"], &["s"]))]).unwrap();
        assert_eq!(t.best(&n("v")).unwrap().term, "net-b");
        assert!(t.next_expiry().is_none());
        // c gave one: it counts, and only d's path is left.
        t.apply_lost(&n("c"), false, &[Link::new(n("b"), n("v"))], later(60), [withdraw("v")]).unwrap();
        assert_eq!(t.best(&n("v")).unwrap().path, [n("a"), n("d"), n("e"), n("v")]);
    }

    #[test]
    fn a_lost_neighbour_is_logged_and_set_aside_paths_count_against_the_cap() {
        let mut t = before_v_dies();
        let start = t.lost_end();
        t.peer_down(&n("b"));
        assert_eq!(t.lost_since(start).unwrap().cloned().collect::<Vec<_>>(), vec![Link::new(n("a"), n("b"))]);
        // c's path over b is set aside once c's own report comes.
        let many = (0..MAX_ROUTES_PER_PEER - 2).map(|i| (n(&format!("m{i}")), ad(&["c", "b", &format!("m{i}")], &[])));
        t.apply(&n("c"), false, many).unwrap();
        t.apply_lost(&n("c"), false, &[Link::new(n("b"), n("c"))], later(60), [(n("m0"), ad(&["c", "b", "m0"], &[]))]).unwrap();
        assert!(t.best(&n("m0")).is_none() && t.best(&n("m1")).is_some());
        // m0 is set aside, still counted: one more is one too many.
        assert!(t.apply(&n("c"), false, [(n("x"), ad(&["c", "x"], &[]))]).is_err());
    }
}
