//! One simulated mesh: `n` routers on the mem transport, linked along a
//! [`Graph`], each offering one service, under tokio's paused clock.
//!
//! Why paused time: with a thousand routers on two cores, real time
//! measures how long the CPU takes to simulate them, and a router starved
//! of CPU for two periods would be taken for dead by its neighbours,
//! which is a failure of the simulation, not of the protocol. On the
//! paused clock, time moves only when every task is idle, so the clock
//! counts the periods the protocol itself waited for (timers: pings,
//! resyncs, dial backoff) and computing costs none; the wall clock beside
//! it counts what converging costs the CPU (one core: the runtime is
//! single-threaded, as a paused clock requires).
//!
//! Checks run only when the mesh is idle (a sleep on the paused clock
//! fires only then), so they neither slow convergence nor miss it by more
//! than one idle point. A watchdog thread cancels every router when the
//! wall-clock budget runs out, so a mesh that never goes idle still ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures::future::BoxFuture;
use ns::conv::{Conv, Service};
use ns::gossip::{Announce, RouteAd};
use ns::term::TermKind;
use ns::{Addr, Config, Envelope, Kind, MachineId, Name, Router};
use tokio_util::sync::CancellationToken;

use super::graph::Graph;
use crate::stats::rss_bytes;

/// What one simulated mesh is asked to do.
#[derive(Clone, Debug)]
pub struct Plan {
    pub n: usize,
    pub seed: u64,
    pub period: Duration,
    /// Periods to watch once converged, counting the traffic.
    pub idle_rounds: u32,
    /// Longest wait, on the paused clock, for convergence or withdrawal.
    pub virtual_limit: Duration,
    /// Longest the whole simulation may take on the wall clock.
    pub wall_limit: Duration,
}

/// Envelopes sent on every link over the idle rounds, by kind.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    pub routes: u64,
    pub pings: u64,
    pub pongs: u64,
    pub other: u64,
}

/// A phase that ends when every router agrees: when, by either clock.
#[derive(Clone, Debug, Default)]
pub struct Phase {
    /// Paused-clock time from the start of the phase.
    pub virt: Duration,
    pub wall: Duration,
    /// Whether it ended before the limits.
    pub done: bool,
}

/// What one simulation found.
#[derive(Clone, Debug, Default)]
pub struct Found {
    pub n: usize,
    pub links: usize,
    pub diameter: u32,
    /// Every router has a route to every machine, with its service.
    pub reached: Phase,
    /// Every route has the fewest hops the graph allows.
    pub settled: Phase,
    /// Envelopes sent on all links until settled: route announcements,
    /// since no ping is due that early (the paused clock has barely moved).
    pub converge_envelopes: u64,
    /// Routes held in all tables once settled (n per router).
    pub routes: u64,
    /// Resident memory grown from before the routers to settled.
    pub rss_delta: u64,
    /// The route tables' own bytes per route, estimated from sizes.
    pub est_bytes_per_route: f64,
    pub idle: Traffic,
    /// Bytes of one ping and of one pong as sent (CBOR, frame length).
    pub ping_bytes: u64,
    pub pong_bytes: u64,
    /// Bytes a full-table announcement from one router would take.
    pub full_table_bytes: u64,
    /// The router removed, and the phase until no one routes to it.
    pub victim: String,
    pub withdrawn: Phase,
    /// Every route re-settled on the graph without the victim.
    pub resettled: Phase,
    /// Announcements (route envelopes) sent while withdrawing.
    pub withdraw_announcements: u64,
}

/// Offers a name and nothing else: discovery is about routes.
struct Idle;

impl Service for Idle {
    fn serve(&self, _conv: Conv) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

fn name(s: &str) -> anyhow::Result<Name> {
    Name::new(s).map_err(|e| anyhow!("{s}: {e}"))
}

fn machine(i: usize) -> String {
    format!("r{i:04}")
}

/// Runs `plan` on a fresh single-threaded runtime with a paused clock,
/// on a thread of its own, and waits for it.
pub fn run(plan: Plan) -> anyhow::Result<Found> {
    let stop = CancellationToken::new();
    let watchdog = {
        let (stop, limit) = (stop.clone(), plan.wall_limit);
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new().name("discovery-watchdog".into()).spawn(move || {
            if done_rx.recv_timeout(limit).is_err() {
                stop.cancel();
            }
        })?;
        (t, done_tx)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .context("paused runtime")?;
    let res = rt.block_on(simulate(&plan, stop.clone()));
    stop.cancel();
    // Routers' tasks end with the runtime.
    drop(rt);
    let _ = watchdog.1.send(());
    let _ = watchdog.0.join();
    res
}

/// Hops from each router to each machine, by machine name.
struct Want {
    index: HashMap<MachineId, usize>,
    dist: Vec<Vec<u32>>,
}

impl Want {
    fn new(g: &Graph, ids: &[MachineId], skip: Option<usize>) -> Want {
        let index = ids.iter().enumerate().map(|(i, m)| (m.clone(), i)).collect();
        Want { index, dist: (0..g.len()).map(|i| g.distances(i, skip)).collect() }
    }

    /// Whether router `i` routes to every machine it should, and, with
    /// `shortest`, over the fewest hops; only machines at a finite
    /// distance count, so a removed router must be gone from the table.
    fn holds(&self, i: usize, r: &Router, shortest: bool) -> bool {
        let routes = r.table().routes();
        let want = self.dist[i].iter().filter(|&&d| d != u32::MAX).count();
        if routes.len() != want {
            return false;
        }
        routes.iter().all(|rt| {
            let Some(&j) = self.index.get(&rt.machine) else { return false };
            let d = self.dist[i][j];
            d != u32::MAX && !rt.services.is_empty() && (!shortest || rt.hops() == d as usize)
        })
    }
}

/// When a phase began, by both clocks.
#[derive(Clone, Copy)]
struct Start(tokio::time::Instant, Instant);

impl Start {
    fn now() -> Start {
        Start(tokio::time::Instant::now(), Instant::now())
    }
}

/// Waits, at the mesh's idle points, until every live router passes
/// `test`; routers that passed are not checked again. Times count from
/// `start`.
async fn until_all(
    routers: &[Router],
    skip: Option<usize>,
    plan: &Plan,
    stop: &CancellationToken,
    Start(v0, w0): Start,
    test: impl Fn(usize, &Router) -> bool,
) -> Phase {
    let mut pending: Vec<usize> = (0..routers.len()).filter(|&i| Some(i) != skip).collect();
    loop {
        pending.retain(|&i| !test(i, &routers[i]));
        if pending.is_empty() {
            return Phase { virt: v0.elapsed(), wall: w0.elapsed(), done: true };
        }
        if stop.is_cancelled() || v0.elapsed() > plan.virtual_limit {
            return Phase { virt: v0.elapsed(), wall: w0.elapsed(), done: false };
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn simulate(plan: &Plan, stop: CancellationToken) -> anyhow::Result<Found> {
    if plan.n < 5 {
        bail!("a degree-4 graph needs at least 5 routers, not {}", plan.n);
    }
    let g = Graph::random_4_regular(plan.n, plan.seed);
    let mut found = Found { n: plan.n, links: g.edges().len(), diameter: g.diameter(), ..Found::default() };
    // mem names are process-wide: unique per simulation.
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let tag = format!("disc-{}-{}", std::process::id(), RUNS.fetch_add(1, Relaxed));
    let rss0 = rss_bytes();
    let mut routers = Vec::with_capacity(plan.n);
    let mut ids = Vec::with_capacity(plan.n);
    for i in 0..plan.n {
        let id = name(&machine(i))?;
        let mut cfg = Config::new(id.clone());
        cfg.period = plan.period;
        let r = Router::new(cfg, stop.child_token());
        let ds: dial::DialString = format!("mem!{tag}-{i}").parse().map_err(|e| anyhow!("mem name: {e}"))?;
        r.listen(&ds).await.with_context(|| format!("{id} listens"))?;
        r.add_service(name(&format!("s{i:04}"))?, Arc::new(Idle));
        routers.push(r);
        ids.push(id);
    }
    let want = Want::new(&g, &ids, None);
    // Every link at once, as machines coming up together would.
    let start = Start::now();
    for (a, b) in g.edges() {
        let ds: dial::DialString = format!("mem!{tag}-{b}").parse().map_err(|e| anyhow!("mem name: {e}"))?;
        routers[a].dial(ds);
    }
    found.reached = until_all(&routers, None, plan, &stop, start, |i, r| want.holds(i, r, false)).await;
    found.settled = until_all(&routers, None, plan, &stop, start, |i, r| want.holds(i, r, true)).await;
    if !found.settled.done {
        return Ok(found);
    }
    found.converge_envelopes = routers
        .iter()
        .flat_map(|r| r.terms())
        .filter(|t| matches!(t.kind, TermKind::Net(_)))
        .map(|t| t.stats.envs_out.load(Relaxed))
        .sum();
    found.rss_delta = rss_bytes().saturating_sub(rss0);
    found.routes = (plan.n * plan.n) as u64;
    found.est_bytes_per_route = estimate_per_route(&routers);
    found.full_table_bytes = full_table_bytes(&routers[0]);
    (found.ping_bytes, found.pong_bytes) = keepalive_bytes(&routers[0], &ids[1]);

    // Idle: count what every link carries for a few periods.
    let counting = Counting::start(&routers);
    tokio::time::sleep(plan.period * plan.idle_rounds).await;
    found.idle = counting.take();

    // Remove one router and wait for its routes to go everywhere.
    let victim = plan.n / 2;
    found.victim = ids[victim].to_string();
    let gone = Want::new(&g, &ids, Some(victim));
    let start = Start::now();
    routers[victim].shutdown();
    found.withdrawn =
        until_all(&routers, Some(victim), plan, &stop, start, |_, r| r.table().best(&ids[victim]).is_none()).await;
    found.resettled = until_all(&routers, Some(victim), plan, &stop, start, |i, r| gone.holds(i, r, true)).await;
    found.withdraw_announcements = counting.take().routes;
    drop(counting);
    stop.cancel();
    for r in &routers {
        r.shutdown();
    }
    Ok(found)
}

/// Counts envelopes sent on every link, by kind, from the links' live
/// traces (one line per envelope; the line names the kind).
struct Counting {
    counts: Arc<[AtomicU64; 4]>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Counting {
    fn start(routers: &[Router]) -> Counting {
        let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
        let mut tasks = Vec::new();
        for r in routers {
            for t in r.terms().into_iter().filter(|t| matches!(t.kind, TermKind::Net(_))) {
                let mut rx = t.subscribe();
                let c = counts.clone();
                tasks.push(tokio::spawn(async move {
                    loop {
                        match rx.recv().await {
                            Ok(line) => {
                                // `out KIND src dst len`: each envelope once, where it leaves.
                                let mut w = line.split_whitespace();
                                if w.next() != Some("out") {
                                    continue;
                                }
                                let slot = match w.next() {
                                    Some("routes") => 0,
                                    Some("ping") => 1,
                                    Some("pong") => 2,
                                    _ => 3,
                                };
                                c[slot].fetch_add(1, Relaxed);
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                                c[3].fetch_add(n, Relaxed);
                            }
                            Err(_) => return,
                        }
                    }
                }));
            }
        }
        Counting { counts, tasks }
    }

    /// The counts so far, zeroed.
    fn take(&self) -> Traffic {
        let t = |i: usize| self.counts[i].swap(0, Relaxed);
        Traffic { routes: t(0), pings: t(1), pongs: t(2), other: t(3) }
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The size of one framed envelope: CBOR plus the 4-byte length prefix.
fn framed(env: &Envelope) -> u64 {
    env.encode().len() as u64 + 4
}

/// A ping and a pong as `from` would send them to `to` now.
fn keepalive_bytes(from: &Router, to: &MachineId) -> (u64, u64) {
    let router = ns::conv::reserved();
    let (src, dst) = (Addr::on(from.id().clone(), router.clone()), Addr::on(to.clone(), router));
    let stamp = ns::link::now_us();
    let ping = Envelope::new(1 << 20, src.clone(), dst.clone(), Kind::Ping { stamp, seq: 64 }, Bytes::new());
    let pong = Envelope::new(1 << 20, src, dst, Kind::Pong { stamp }, Bytes::new());
    (framed(&ping), framed(&pong))
}

/// What `r`'s whole table would take as one announcement.
fn full_table_bytes(r: &Router) -> u64 {
    let entries: Vec<RouteAd> = r
        .table()
        .routes()
        .iter()
        .map(|rt| RouteAd { machine: rt.machine.clone(), path: rt.path.clone(), services: rt.services.clone() })
        .collect();
    let router = ns::conv::reserved();
    let a = Addr::on(r.id().clone(), router);
    let env = Envelope::new(
        1 << 20,
        a.clone(),
        a,
        Kind::Routes(Announce { seq: 1, full: true, entries, lost: vec![] }),
        Bytes::new(),
    );
    framed(&env)
}

/// The route tables' bytes per route, from the sizes of what they hold:
/// the chosen route (struct, its path and services, behind an `Arc`; the
/// terminal name is a shared name inside the struct) plus, per neighbour, the advert it sent (path and services)
/// and the advert it was sent (gossip's record of what it was told), both
/// in hash maps. Names are shared (interned), so they count as pointers.
/// An estimate: allocator overhead and hash-map slack are left out.
fn estimate_per_route(routers: &[Router]) -> f64 {
    use std::mem::size_of;
    let name = size_of::<Name>();
    let (mut bytes, mut count) = (0usize, 0usize);
    for r in routers.iter().step_by((routers.len() / 16).max(1)) {
        let neighbours = r.terms().iter().filter(|t| matches!(t.kind, TermKind::Net(_))).count();
        for rt in r.table().routes() {
            let chosen = 2 * size_of::<usize>()
                + size_of::<ns::route::Route>()
                + rt.path.capacity() * name
                + rt.services.capacity() * name;
            // An advert: path to the machine (one shorter than ours) and
            // services, keyed by machine, once received and once sent per
            // neighbour.
            let advert = size_of::<ns::route::Advert>()
                + rt.path.len().saturating_sub(1) * name
                + rt.services.len() * name
                + name;
            bytes += chosen + 2 * neighbours * advert + name + size_of::<usize>();
            count += 1;
        }
    }
    if count == 0 {
        return 0.0;
    }
    bytes as f64 / count as f64
}
