//! Unit tests of the route table.

use super::*;

fn n(s: &str) -> MachineId {
    s.parse().unwrap()
}
fn net(s: &str) -> TermName {
    TermName::Net(n(s))
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
    assert_eq!((best.term.clone(), best.hops(), best.services.clone()), (net("b"), 1, vec![n("echo")]));
    assert_eq!(t.nearest("echo").unwrap().machine, n("b"));
}

#[test]
fn a_neighbours_registry_services_outlive_the_registrys_link() {
    // The registry's list came before a's own link to b: it says b is
    // reached through r. r's link goes: b is still a's neighbour, and
    // its services stay until the list expires; d, reached only through
    // r, goes.
    let mut t = RouteTable::new(n("a"));
    t.peer_up(&n("r"));
    t.set_registry(HashMap::from([(n("b"), ad(&["r", "b"], &["echo"])), (n("d"), ad(&["r", "d"], &["gpu"]))]));
    t.peer_up(&n("b"));
    t.peer_down(&n("r"));
    let best = t.best(&n("b")).unwrap();
    assert_eq!((best.term.clone(), best.hops(), best.services.clone()), (net("b"), 1, vec![n("echo")]));
    assert!(t.best(&n("d")).is_none());
    // The list's expiry still takes them.
    t.set_registry(HashMap::new());
    assert!(t.best(&n("b")).unwrap().services.is_empty());
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
    assert_eq!(t.best(&n("d")).unwrap().term, net("b"));
    assert_eq!(t.alternatives(&n("d")).len(), 2);
    let ch = t.peer_down(&n("b"));
    assert!(ch.changed.contains(&n("d")) && ch.lost.contains(&n("b")));
    assert_eq!(t.best(&n("d")).unwrap().term, net("c"));
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
            assert_eq!(
                change.lost,
                before.keys().filter(|m| !want.contains_key(*m)).cloned().collect(),
                "seed {seed} step {step}"
            );
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
    assert_eq!(t.best(&n("v")).unwrap().term, net("b"));
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
    assert_eq!(t.best(&n("v")).unwrap().term, net("c"));
    assert!(t.next_expiry().is_none());
}

#[test]
fn a_report_counts_only_from_who_gave_a_path_over_the_link() {
    let mut t = before_v_dies();
    t.peer_up(&n("d"));
    t.apply(&n("d"), false, [(n("v"), ad(&["d", "e", "v"], &["s"]))]).unwrap();
    // d neither ends b-v nor gave a path over it: ignored.
    t.apply_lost(&n("d"), false, &[Link::new(n("b"), n("v"))], later(60), [(n("v"), ad(&["d", "e", "v"], &["s"]))])
        .unwrap();
    assert_eq!(t.best(&n("v")).unwrap().term, net("b"));
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
    t.apply_lost(&n("c"), false, &[Link::new(n("b"), n("c"))], later(60), [(n("m0"), ad(&["c", "b", "m0"], &[]))])
        .unwrap();
    assert!(t.best(&n("m0")).is_none() && t.best(&n("m1")).is_some());
    // m0 is set aside, still counted: one more is one too many.
    assert!(t.apply(&n("c"), false, [(n("x"), ad(&["c", "x"], &[]))]).is_err());
}
