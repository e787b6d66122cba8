//! Workload `breakdown`, run only when named (`--only breakdown`): where
//! the mesh's time goes, without a profiler.
//!
//! Ladders that add one layer of the mesh at a time on top of the
//! baseline, each rung measured beside raw TCP in the same run:
//!
//! - RPC: frames over a `dial` tcp link sent inline; plus the envelope
//!   codec; plus a reader task and a queue at each end, writes still
//!   inline; plus writer tasks too (the shape of the router's links); the mesh itself; the mesh and raw TCP
//!   again on a single-threaded runtime, which tells how much is the cost
//!   of waking tasks on the other core.
//! - Bulk (1 MiB messages): frames over a dial link; plus the envelope
//!   codec; the mesh over 1 and 2 hops; 2 hops over 4 conversations at
//!   once (does the per-stream window hold it back?).
//! - The codec alone: encoding against a plain copy of the payload.

mod rungs;
mod streams;

use std::time::{Duration, Instant};

use anyhow::anyhow;
use bytes::Bytes;

use crate::mesh::{addr, Chain};
use crate::raw::PingPong;
use crate::report::{Row, Unit};
use crate::rpc::{interleave, Measured, GRACE};
use crate::stats::{Transfer, Usage};
use crate::{Ctx, Sizes};
use rungs::Rung;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let mut rows = rpc_ladder(ctx).await?;
    rows.extend(bulk_ladder(ctx).await?);
    rows.extend(codec(&ctx.sizes)?);
    Ok(rows)
}

async fn rpc_ladder(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let sz = &ctx.sizes;
    let chain = Chain::new(&[("a", "tcp!127.0.0.1!0".into()), ("b", "tcp!127.0.0.2!0".into())]).await?;
    let mut cases = [
        ("raw TCP", Rung::Raw(PingPong::new("127.0.0.1", 64).await?)),
        ("dial tcp link, frames inline", Rung::framed("127.0.0.1", false).await?),
        ("+ envelope codec", Rung::framed("127.0.0.1", true).await?),
        ("+ reader tasks, queues; inline writes", Rung::inline("127.0.0.1").await?),
        ("+ reader/writer tasks, queues", Rung::tasked("127.0.0.1").await?),
        ("mesh tcp, 1 hop", Rung::Mesh(chain.head().open(addr("/n/b/svc/echo")?, Vec::new()))),
    ];
    let samples = interleave(&mut cases, sz).await?;
    let mut labels: Vec<&str> = cases.iter().skip(1).map(|(l, _)| *l).collect();
    labels.push("mesh tcp, 1 hop, 1-thread runtime");
    // The links and the chain go before the next runtime starts its own.
    drop(cases);
    drop(chain);
    let one = one_thread(sz.clone()).await?;
    let mut all: Vec<(&Measured, &Measured, &str)> = samples[1..].iter().map(|m| (m, &samples[0], "raw TCP")).collect();
    all.push((&one[1], &one[0], "raw TCP, 1 thread"));
    let mut rows = Vec::new();
    for (label, (m, base, base_name)) in labels.iter().zip(&all) {
        rows.push(
            Row::new("breakdown rpc 64 B p50", *label, Unit::Micros, m.samples.p50(), base.samples.p50(), *base_name)
                .note(format!("{} round trips", m.samples.len())),
        );
    }
    // Per round trip: what the process spent, beside the baseline.
    for (label, (m, base, base_name)) in labels.iter().zip(&all) {
        let per =
            |x: &Measured, f: fn(&Usage) -> f64| (!x.samples.is_empty()).then(|| f(&x.usage) / x.samples.len() as f64);
        let cpu = |u: &Usage| u.cpu.as_secs_f64() * 1e6;
        rows.push(Row::new(
            "breakdown rpc CPU per round trip",
            *label,
            Unit::Micros,
            per(m, cpu),
            per(base, cpu),
            *base_name,
        ));
        rows.push(Row::new(
            "breakdown rpc sleeps per round trip",
            *label,
            Unit::Count,
            per(m, |u| u.switches as f64),
            per(base, |u| u.switches as f64),
            *base_name,
        ));
    }
    Ok(rows)
}

/// The mesh and raw TCP on a runtime of their own with one thread.
async fn one_thread(sz: Sizes) -> anyhow::Result<Vec<Measured>> {
    let budget = sz.phase_limit * (2 + 2 * sz.rounds as u32) + GRACE;
    let job = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let chain = Chain::new(&[("a", "tcp!127.0.0.4!0".into()), ("b", "tcp!127.0.0.5!0".into())]).await?;
            let mut cases = [
                ("raw TCP, 1 thread", Rung::Raw(PingPong::new("127.0.0.4", 64).await?)),
                ("mesh tcp, 1 hop, 1 thread", Rung::Mesh(chain.head().open(addr("/n/b/svc/echo")?, Vec::new()))),
            ];
            interleave(&mut cases, &sz).await
        })
    });
    tokio::time::timeout(budget, job).await.map_err(|_| anyhow!("1-thread runtime over its budget"))??
}

async fn bulk_ladder(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let sz = &ctx.sizes;
    let chain = Chain::new(&[
        ("a", "tcp!127.0.0.1!0".into()),
        ("b", "tcp!127.0.0.2!0".into()),
        ("c", "tcp!127.0.0.3!0".into()),
    ])
    .await?;
    let chunk = Bytes::from(vec![0xa5u8; 1 << 20]);
    const LABELS: [&str; 6] = [
        "raw TCP",
        "dial tcp link, 1 MiB frames",
        "+ envelope codec",
        "mesh tcp, 1 hop",
        "mesh tcp, 2 hops",
        "mesh tcp, 2 hops, 4 conversations",
    ];
    let one = |i: usize, total: usize| {
        let (chain, chunk, limit) = (&chain, &chunk, sz.phase_limit);
        async move {
            match i {
                0 => crate::raw::stream("127.0.0.1", chunk, total, Instant::now() + limit).await,
                1 => streams::framed("127.0.0.1", chunk, total, limit, false).await,
                2 => streams::framed("127.0.0.1", chunk, total, limit, true).await,
                3 => crate::bulk::mesh_transfer(chain.head(), "/n/b/svc/sink", chunk, total, limit).await,
                4 => crate::bulk::mesh_transfer(chain.head(), "/n/c/svc/sink", chunk, total, limit).await,
                _ => streams::parallel(chain, "/n/c/svc/sink", chunk, total, 4, limit).await,
            }
        }
    };
    for (i, label) in LABELS.iter().enumerate() {
        one(i, (sz.bulk_bytes / 8).max(1 << 20)).await.map_err(|e| anyhow!("{label} warm-up: {e:#}"))?;
    }
    let mut got = [Transfer::default(); LABELS.len()];
    for round in 0..sz.rounds {
        for k in 0..LABELS.len() {
            let i = (k + round) % LABELS.len();
            let before = Usage::now();
            let (bytes, took) = one(i, sz.bulk_bytes).await.map_err(|e| anyhow!("{}: {e:#}", LABELS[i]))?;
            got[i].add(bytes, took);
            got[i].usage.add(Usage::since(before));
        }
    }
    let mut rows = Vec::new();
    for (l, t) in LABELS.iter().zip(&got).skip(1) {
        rows.push(
            Row::new("breakdown bulk 1 MiB msgs", *l, Unit::MBps, t.mb_per_s(), got[0].mb_per_s(), "raw TCP")
                .note(format!("{} MiB", t.bytes >> 20)),
        );
    }
    // CPU per MiB: with every router on the same two cores, a path that
    // costs twice the CPU can move at most half as much.
    for (l, t) in LABELS.iter().zip(&got).skip(1) {
        rows.push(
            Row::new(
                "breakdown bulk CPU per MiB",
                *l,
                Unit::Micros,
                t.cpu_us_per_mib(),
                got[0].cpu_us_per_mib(),
                "raw TCP",
            )
            .note(t.usage.per_op(t.bytes >> 20).replace("per op", "per MiB")),
        );
    }
    // Page faults per MiB: a fresh buffer per large frame is touched page
    // by page; a reused one is not.
    let per_mib = |t: &Transfer, v: u64| (t.bytes >= 1 << 20).then(|| v as f64 / (t.bytes >> 20) as f64);
    for (l, t) in LABELS.iter().zip(&got).skip(1) {
        rows.push(Row::new(
            "breakdown bulk page faults per MiB",
            *l,
            Unit::Count,
            per_mib(t, t.usage.faults),
            per_mib(&got[0], got[0].usage.faults),
            "raw TCP",
        ));
        rows.push(Row::new(
            "breakdown bulk sleeps per MiB",
            *l,
            Unit::Count,
            per_mib(t, t.usage.switches),
            per_mib(&got[0], got[0].usage.switches),
            "raw TCP",
        ));
    }
    Ok(rows)
}

fn codec(sz: &Sizes) -> anyhow::Result<Vec<Row>> {
    let n = sz.rpc_iters;
    let limit = sz.phase_limit.min(Duration::from_secs(2));
    let (enc_big, copy_big) = streams::encode_cost(1 << 20, n / 10 + 1, limit)?;
    let (enc_small, copy_small) = streams::encode_cost(64, n, limit)?;
    let dec = streams::decode_cost(n, limit)?;
    Ok(vec![
        Row::new(
            "breakdown codec p50",
            "encode, 1 MiB payload",
            Unit::Micros,
            enc_big.p50(),
            copy_big.p50(),
            "copy 1 MiB",
        ),
        Row::new(
            "breakdown codec p50",
            "encode, 64 B payload",
            Unit::Micros,
            enc_small.p50(),
            copy_small.p50(),
            "copy 64 B",
        ),
        Row::new("breakdown codec p50", "decode, 64 B payload", Unit::Micros, dec.p50(), copy_small.p50(), "copy 64 B"),
    ])
}
