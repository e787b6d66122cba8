//! Workload `discovery`: gossip at scale (issue 7, workload 5).
//!
//! `n` routers (1,000; 100 with `--quick`) in this process on the mem
//! transport, linked as a random connected graph of degree 4 from a fixed
//! seed, each offering one service. Measured: the periods (rounds) and
//! wall time until every router routes to every machine over the fewest
//! hops, against the graph's diameter + 2 (issue 7's target); the traffic
//! on every link over a few idle periods once converged, per router per
//! period; resident memory per route; then one router is removed and the
//! time until no one routes to it is measured, and until every route has
//! settled again.
//!
//! The same run is made at `n / 4` routers first: the baseline for what
//! must not grow with the table (idle traffic per router) and for how
//! wall time scales. See [`sim`] for why the clock is paused and what the
//! two clocks mean, and [`graph`] for the topology.

pub mod graph;
pub mod sim;

use std::time::Duration;

use anyhow::{anyhow, bail};

use crate::report::{Row, Target, Unit};
use crate::Ctx;
use sim::{Found, Plan};

/// The gossip period of every router: rounds are counted in it.
pub const PERIOD: Duration = Duration::from_millis(100);
/// The graph's seed: the same graph every run.
pub const SEED: u64 = 7;
/// Periods watched once converged.
const IDLE_ROUNDS: u32 = 5;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let n = ctx.sizes.discovery_routers;
    let plan = |n: usize| Plan {
        n,
        seed: SEED,
        period: PERIOD,
        idle_rounds: IDLE_ROUNDS,
        virtual_limit: PERIOD * 200,
        wall_limit: ctx.sizes.discovery_limit,
    };
    let small = simulate(plan(n / 4)).await?;
    let full = simulate(plan(n)).await?;
    Ok(rows(&small, &full))
}

/// One simulation on a thread of its own (its runtime is separate);
/// fails when the mesh did not converge, with how far it got.
async fn simulate(plan: Plan) -> anyhow::Result<Found> {
    let n = plan.n;
    let f = tokio::task::spawn_blocking(move || sim::run(plan))
        .await
        .map_err(|e| anyhow!("simulation of {n} routers: {e}"))??;
    if !f.settled.done {
        bail!(
            "{n} routers did not converge: after {:.1} periods ({:.1} s of wall time) every router reached every machine: {}; all on shortest paths: no",
            rounds(f.settled.virt),
            f.settled.wall.as_secs_f64(),
            if f.reached.done { "yes" } else { "no" }
        );
    }
    if !f.withdrawn.done {
        bail!(
            "{n} routers: {} still routed to after {:.1} periods ({:.1} s wall)",
            f.victim,
            rounds(f.withdrawn.virt),
            f.withdrawn.wall.as_secs_f64()
        );
    }
    Ok(f)
}

/// Envelopes per link and direction.
fn per_link(f: &Found, envelopes: u64) -> f64 {
    envelopes as f64 / (2 * f.links).max(1) as f64
}

fn rounds(d: Duration) -> f64 {
    d.as_secs_f64() / PERIOD.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Idle traffic per router per period, in bytes.
fn idle_bytes(f: &Found) -> f64 {
    let t = &f.idle;
    let bytes = t.pings * f.ping_bytes + t.pongs * f.pong_bytes;
    // Route announcements have no fixed size; when idle there should be
    // none, and any counts as a full table (the worst it can be).
    let bytes = bytes as f64 + t.routes as f64 * f.full_table_bytes as f64;
    bytes / f.n as f64 / IDLE_ROUNDS as f64
}

fn rows(small: &Found, full: &Found) -> Vec<Row> {
    let case = |f: &Found| format!("{} routers, degree 4, mem", f.n);
    let mut rows = Vec::new();
    let bound = (full.diameter + 2) as f64;
    rows.push(
        Row::new("discovery rounds to converge", case(full), Unit::Count, Some(rounds(full.settled.virt)), Some(bound), format!("diameter {} + 2", full.diameter))
            .target(Target::AtMost(1.0))
            .note(format!(
                "rounds of {} ms on the paused clock (updates go out at once, so only timers cost rounds); every machine reached after {:.2}; {} links; {} routers: {:.2} rounds, diameter {}",
                PERIOD.as_millis(),
                rounds(full.reached.virt),
                full.links,
                small.n,
                rounds(small.settled.virt),
                small.diameter
            )),
    );
    rows.push(
        Row::new("discovery wall time to converge", case(full), Unit::Millis, Some(ms(full.settled.wall)), Some(ms(small.settled.wall)), format!("{} routers", small.n))
            .note(format!(
                "CPU time of the whole simulated mesh on one core ({:.1} ms per router); every machine reached after {:.0} ms; {} route announcements ({:.0} per link and direction; {} routers: {:.0}); {}x the routes cost {:.1}x the time",
                ms(full.settled.wall) / full.n as f64,
                ms(full.reached.wall),
                full.converge_envelopes,
                per_link(full, full.converge_envelopes),
                small.n,
                per_link(small, small.converge_envelopes),
                (full.n * full.n) / (small.n * small.n).max(1),
                ms(full.settled.wall) / ms(small.settled.wall).max(1e-3)
            )),
    );
    let t = &full.idle;
    rows.push(
        Row::new("discovery idle bytes per router per round", case(full), Unit::Bytes, Some(idle_bytes(full)), Some(idle_bytes(small)), format!("{} routers", small.n))
            .target(Target::AtMost(1.1))
            .note(format!(
                "over {IDLE_ROUNDS} idle periods, all links: {} route announcements, {} pings ({} B), {} pongs ({} B), {} other; {} routers: {} announcements; a full table would be {:.1} KB at {} routers",
                t.routes,
                t.pings,
                full.ping_bytes,
                t.pongs,
                full.pong_bytes,
                t.other,
                small.n,
                small.idle.routes,
                full.full_table_bytes as f64 / 1e3,
                full.n
            )),
    );
    let per_route = |f: &Found| f.rss_delta as f64 / f.routes.max(1) as f64;
    rows.push(
        Row::new("discovery memory per route", case(full), Unit::Bytes, Some(per_route(full)), Some(full.est_bytes_per_route), "tables' own size")
            .note(format!(
                "resident memory grown from before the routers to converged, over {} routes (n x n; tasks, links and buffers included); {} routers: {:.0} B; baseline: sizes of the route, its adverts and gossip's record, per route",
                full.routes,
                small.n,
                per_route(small)
            )),
    );
    rows.push(
        Row::new("discovery rounds to withdraw", case(full), Unit::Count, Some(rounds(full.withdrawn.virt)), Some(bound), format!("diameter {} + 2", full.diameter))
            .note(format!(
                "{} removed: no route to it anywhere after {:.0} ms wall, every route settled again after {:.2} rounds, {:.0} ms wall; {} route announcements meanwhile",
                full.victim,
                ms(full.withdrawn.wall),
                rounds(full.resettled.virt),
                ms(full.resettled.wall),
                full.withdraw_announcements
            )),
    );
    rows.push(
        Row::new("discovery wall time to withdraw", case(full), Unit::Millis, Some(ms(full.withdrawn.wall)), Some(ms(small.withdrawn.wall)), format!("{} routers", small.n))
            .note(format!(
                "{} route announcements to withdraw one machine ({:.0} per link and direction); {} routers: {} ({:.0} per link and direction)",
                full.withdraw_announcements,
                per_link(full, full.withdraw_announcements),
                small.n,
                small.withdraw_announcements,
                per_link(small, small.withdraw_announcements)
            )),
    );
    rows
}
