//! Workload `hops`: the cost of a hop, with routers as they are deployed.
//!
//! Three machines a - b - c in a line over tcp, each its own `mesh up`
//! process, links with Noise as deployed (and again plaintext); this
//! process is a client of a's router on its Unix socket (the router's
//! client library) and asks the `echo` service of a (no hop), b (one hop)
//! and c (two hops): 64-byte requests, one at a time. The baseline is a
//! raw TCP ping-pong between this process (a plain blocking client, as a
//! C one would be) and an echo process of its own (`mesh-bench --serve
//! echo`), with the same socket options as the links (TCP_NODELAY), no
//! pinning on either side.
//!
//! `MESH_BENCH_CASE=TEXT` runs only the first case whose label holds
//! TEXT, for the phase limit, to profile it (`perf record -p` a router).
//!
//! Targets (issue 17): one hop <= 1.5x the raw round trip at p50, p99 <=
//! 3x its p50, and what a further hop adds (two hops less one) <= 1.1x a
//! raw round trip: a hop is two more wake-ups and socket passes, which
//! is what a raw round trip costs.

use std::time::Duration;

use ns::client::Client;

use crate::mesh::addr;
use crate::procs::{loadavg, Deployed, RawServer};
use crate::report::{Row, Target, Unit};
use crate::rpc::{interleave, measure, Measured, Peer};
use crate::Ctx;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let load_before = loadavg();
    let raw = RawServer::start("echo", "127.0.0.2")?;
    // The same ping-pong through one and two plain relay processes: what
    // a hop costs a program that does nothing but pass bytes on.
    let relay1 = RawServer::start(&format!("relay={}", raw.addr), "127.0.0.3")?;
    let relay2 = RawServer::start(&format!("relay={}", relay1.addr), "127.0.0.4")?;
    let sec = Deployed::line(&["a", "b", "c"], false).await?;
    let plain = Deployed::line(&["pa", "pb", "pc"], true).await?;
    let (cs, cp) = (sec.client(0).await?, plain.client(0).await?);
    let open = |c: &Client, path: &str| addr(path).map(|a| Peer::Mesh(c.open(a, Vec::new())));
    let mut cases = [
        ("raw TCP, two processes", Peer::RawProc(raw.connect()?)),
        ("raw TCP, 1 relay process", Peer::RawProc(relay1.connect()?)),
        ("raw TCP, 2 relay processes", Peer::RawProc(relay2.connect()?)),
        ("own router, no hop", open(&cs, "/n/a/svc/echo")?),
        ("1 hop tcp", open(&cs, "/n/b/svc/echo")?),
        ("2 hops tcp", open(&cs, "/n/c/svc/echo")?),
        ("1 hop tcp, plaintext", open(&cp, "/n/pb/svc/echo")?),
        ("2 hops tcp, plaintext", open(&cp, "/n/pc/svc/echo")?),
    ];
    let per_op = |d: Duration, n: usize| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    if let Ok(only) = std::env::var("MESH_BENCH_CASE") {
        // Profiling one case: it alone, for as long as the run lasts.
        let i = cases.iter().position(|c| c.0.contains(&only)).ok_or_else(|| anyhow::anyhow!("no case {only:?}"))?;
        let s = measure(&mut cases[i].1, 10_000_000, ctx.sizes.phase_limit).await?;
        eprintln!("{}: {} round trips, p50 {:?} us, p99 {:?} us", cases[i].0, s.len(), s.p50(), s.p99());
        return Ok(Vec::new());
    }
    let cpu_before = (sec.cpu() + plain.cpu(), raw.usage().0);
    let m = interleave(&mut cases, &ctx.sizes).await?;
    let cpu = (sec.cpu() + plain.cpu() - cpu_before.0, raw.usage().0 - cpu_before.1);
    // What the middle router spends relaying one round trip (both ways),
    // against what the raw echo process spends echoing one.
    let n = ctx.sizes.rpc_iters;
    let mut cost = async |case: usize, usage: &(dyn Fn() -> (Duration, u64) + Sync)| {
        let (c0, s0) = usage();
        let done = measure(&mut cases[case].1, n, ctx.sizes.phase_limit).await?.len();
        let (c1, s1) = usage();
        Ok::<_, anyhow::Error>(format!(
            "CPU {:.1} us, {:.2} context switches",
            per_op(c1 - c0, done),
            (s1 - s0) as f64 / done.max(1) as f64
        ))
    };
    let middle = cost(7, &|| plain.usage(1)).await?;
    let echo = cost(0, &|| raw.usage()).await?;
    let relay = format!("per round trip, the middle router (plaintext): {middle}; the raw echo process: {echo}");
    for (_, p) in &cases {
        if let Peer::Mesh(conv) = p {
            conv.tx.eof().await;
        }
    }
    let load = format!("load {load_before} before, {} after (1, 5, 15 min)", loadavg());
    let base = &m[0];
    let raw_p50 = base.samples.p50();
    let mesh_ops: usize = m[3..].iter().map(|x| x.samples.len()).sum();
    let mut rows = Vec::new();
    for ((label, _), x) in cases.iter().zip(&m).skip(1) {
        let mut row = Row::new(
            "rpc 64 B p50, routers as processes",
            *label,
            Unit::Micros,
            x.samples.p50(),
            raw_p50,
            "raw TCP, 2 processes",
        )
        .note(format!("{}; raw: {}; {load}", x.spread(), base.spread()));
        if label.starts_with("1 hop") {
            row = row.target(Target::AtMost(1.5));
        }
        rows.push(row);
    }
    for ((label, _), x) in cases.iter().zip(&m).skip(1) {
        let (p50, p99) = (x.samples.p50(), x.samples.p99());
        let row = Row::new(
            "rpc 64 B p99, routers as processes",
            *label,
            Unit::Micros,
            p99,
            base.samples.p99(),
            "raw TCP p99",
        )
        .note(format!("p99 / p50 = {:.2}", p99.zip(p50).map(|(a, b)| a / b).unwrap_or(f64::NAN)));
        rows.push(row);
    }
    // What a further hop adds, against one raw round trip.
    let further = |one: &Measured, two: &Measured| two.samples.p50().zip(one.samples.p50()).map(|(t, o)| t - o);
    let note = format!(
        "routers' CPU {:.1} us per mesh round trip (all cases), raw echo process {:.1} us per round trip; {relay}",
        per_op(cpu.0, mesh_ops),
        per_op(cpu.1, base.samples.len())
    );
    let hops = [("encrypted", &m[4], &m[5]), ("plaintext", &m[6], &m[7]), ("raw relay processes", &m[1], &m[2])];
    for (label, one, two) in hops {
        let row = Row::new(
            "a further hop, p50 (2 hops less 1)",
            label,
            Unit::Micros,
            further(one, two),
            raw_p50,
            "raw TCP round trip",
        )
        .note(note.clone());
        // The target is the mesh's; the relay's row is there to compare.
        rows.push(if label.starts_with("raw") { row } else { row.target(Target::AtMost(1.1)) });
    }
    // The same against what a hop costs a plain relay process in this run:
    // on a machine whose idle CPUs sleep, most of a hop is waking one.
    // A short run on a busy machine can measure two relays no slower
    // than one: then there is no hop to compare with.
    let relay_hop = further(&m[1], &m[2]).filter(|h| *h > 0.0);
    for (label, one, two) in &hops[..2] {
        let row = Row::new(
            "a further hop, p50, against a plain relay's",
            *label,
            Unit::Micros,
            further(one, two),
            relay_hop,
            "raw relay process hop",
        );
        rows.push(match relay_hop {
            Some(_) => row,
            None => row.note("baseline not available: two relay processes measured no slower than one in this run"),
        });
    }
    Ok(rows)
}
