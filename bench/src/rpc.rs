//! Workload `rpc`: 64-byte request, 64-byte reply, one at a time on one
//! conversation, p50 and p99 of the round trip, with routers and the
//! baseline inside this process: a view of the machinery alone. Routers
//! as they are deployed, against baselines of their own processes, are
//! `hops`.
//!
//! Mesh cases: tcp over 1 hop (a -> b) and 2 hops (a -> b -> c), unix
//! and mem over 1 hop, and, to split the cost, 0 hops (a's own echo: the
//! conversation machinery without any link). Baseline: a raw TCP
//! ping-pong of the same size. Every case and the baseline take turns
//! round by round, in a rotating order.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bytes::Bytes;
use ns::conv::{Conv, Msg};

use crate::mesh::{addr, Chain};
use crate::raw::PingPong;
use crate::report::{Row, Target, Unit};
use crate::stats::{Samples, Usage};
use crate::{Ctx, Sizes};

const SIZE: usize = 64;
/// The request every case sends; a static, so the mesh sends it without
/// allocating.
static PAYLOAD: [u8; SIZE] = [0x5a; SIZE];
/// How long past its own deadline a loop may take before it counts as
/// stuck: one round trip should never take this long.
pub const GRACE: Duration = Duration::from_secs(5);

/// Something that answers a 64-byte request with a 64-byte reply.
pub(crate) trait Ping {
    async fn round_trip(&mut self) -> anyhow::Result<()>;
}

/// One request/reply on a mesh conversation with an echo service.
pub(crate) async fn mesh_round_trip(conv: &mut Conv) -> anyhow::Result<()> {
    conv.tx.send(Bytes::from_static(&PAYLOAD)).await.map_err(|e| anyhow!("send: {e}"))?;
    match conv.rx.recv().await {
        Some(Msg::Data(b)) if b.len() == SIZE => Ok(()),
        Some(Msg::Data(b)) => bail!("echo answered {} bytes, not {SIZE}", b.len()),
        Some(Msg::Error(e)) => bail!("echo: {e}"),
        Some(Msg::Eof) | None => bail!("echo ended the conversation"),
    }
}

/// One raw TCP ping-pong.
pub(crate) async fn raw_round_trip(p: &mut PingPong) -> anyhow::Result<()> {
    let mut buf = PAYLOAD;
    p.round_trip(&mut buf).await
}

/// Something to ping.
pub(crate) enum Peer {
    Raw(PingPong),
    /// A plain blocking client of the raw echo process.
    RawProc(std::net::TcpStream),
    Mesh(Conv),
}

impl Ping for Peer {
    async fn round_trip(&mut self) -> anyhow::Result<()> {
        match self {
            Peer::Raw(p) => raw_round_trip(p).await,
            Peer::RawProc(s) => {
                // Blocking, as a C client would: nothing else runs in this
                // process while a case is measured.
                use std::io::{Read, Write};
                let mut buf = PAYLOAD;
                s.write_all(&buf)?;
                s.read_exact(&mut buf)?;
                Ok(())
            }
            Peer::Mesh(conv) => mesh_round_trip(conv).await,
        }
    }
}

/// `n` round trips or `limit`, whichever ends first; stuck means error.
pub(crate) async fn measure(peer: &mut impl Ping, n: usize, limit: Duration) -> anyhow::Result<Samples> {
    let deadline = Instant::now() + limit;
    let mut s = Samples::with_capacity(n);
    let run = async {
        for _ in 0..n {
            if Instant::now() >= deadline {
                break;
            }
            let t = Instant::now();
            peer.round_trip().await?;
            s.push(t.elapsed());
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(limit + GRACE, run).await.map_err(|_| anyhow!("no reply within {:?}", limit + GRACE))??;
    Ok(s)
}

/// The round trips of one case and what the process spent on them.
#[derive(Default, Clone)]
pub(crate) struct Measured {
    pub samples: Samples,
    pub usage: Usage,
    /// Each round's median, in microseconds.
    pub rounds: Vec<f64>,
}

impl Measured {
    /// `N runs: min / median / max of their medians`, for a note.
    pub fn spread(&self) -> String {
        let mut r = self.rounds.clone();
        r.sort_by(f64::total_cmp);
        match (r.first(), r.get(r.len() / 2), r.last()) {
            (Some(lo), Some(mid), Some(hi)) => {
                format!("{} runs, medians {lo:.1} / {mid:.1} / {hi:.1} us (min / median / max)", r.len())
            }
            _ => "no runs".into(),
        }
    }

    /// `CPU .. us, .. sleeps per op` per round trip, for a note.
    pub fn per_op(&self) -> String {
        self.usage.per_op(self.samples.len() as u64)
    }
}

/// Warms every case up, then measures them round by round in a rotating
/// order, so that no case always runs first on a cold cache; returns each
/// case's samples and usage, in order.
pub(crate) async fn interleave<P: Ping>(cases: &mut [(&str, P)], sz: &Sizes) -> anyhow::Result<Vec<Measured>> {
    for (label, p) in cases.iter_mut() {
        measure(p, sz.warmup, sz.phase_limit).await.map_err(|e| anyhow!("{label} warm-up: {e:#}"))?;
    }
    let mut out = vec![Measured::default(); cases.len()];
    for round in 0..sz.rounds {
        for k in 0..cases.len() {
            let i = (k + round) % cases.len();
            let (label, p) = &mut cases[i];
            let before = Usage::now();
            let s = measure(p, sz.rpc_iters, sz.phase_limit).await.map_err(|e| anyhow!("{label}: {e:#}"))?;
            out[i].usage.add(Usage::since(before));
            out[i].rounds.extend(s.p50());
            out[i].samples.extend(s);
        }
    }
    Ok(out)
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let sz = &ctx.sizes;
    let tcp = Chain::new(&[
        ("a", "tcp!127.0.0.1!0".into()),
        ("b", "tcp!127.0.0.2!0".into()),
        ("c", "tcp!127.0.0.3!0".into()),
    ])
    .await?;
    let sock = |n: &str| format!("unix!{}", ctx.tmp.path().join(n).display());
    let unix = Chain::new(&[("ua", sock("ua.sock")), ("ub", sock("ub.sock"))]).await?;
    // mem names are process-wide: make them unique per run too, for a
    // caller that runs the workload twice.
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let tag = format!("mesh-bench-{}-{}", std::process::id(), RUNS.fetch_add(1, Relaxed));
    let mem = Chain::new(&[("ma", format!("mem!{tag}-ma")), ("mb", format!("mem!{tag}-mb"))]).await?;
    let open = |c: &Chain, path: &str| addr(path).map(|a| Peer::Mesh(c.head().open(a, Vec::new())));
    let mut cases = [
        ("raw TCP", Peer::Raw(PingPong::new("127.0.0.1", SIZE).await?)),
        ("tcp, 1 hop", open(&tcp, "/n/b/svc/echo")?),
        ("tcp, 2 hops", open(&tcp, "/n/c/svc/echo")?),
        ("unix, 1 hop", open(&unix, "/n/ub/svc/echo")?),
        ("mem, 1 hop", open(&mem, "/n/mb/svc/echo")?),
        ("local, 0 hops", open(&tcp, "/n/a/svc/echo")?),
    ];
    // No targets here: routers and baseline share this process, which
    // flatters both; `hops` holds the targets, with processes.
    let target = |_: &str| None::<Target>;
    let samples = interleave(&mut cases, sz).await?;
    for (_, p) in &cases {
        if let Peer::Mesh(conv) = p {
            conv.tx.eof().await;
        }
    }
    let base = &samples[0];
    let mut rows = Vec::new();
    for (metric, pct) in [("p50", 50.0), ("p99", 99.0)] {
        for ((label, _), m) in cases.iter().zip(&samples).skip(1) {
            let (s, b) = (&m.samples, &base.samples);
            // The usage goes with the median row, once per case.
            let note = if metric == "p50" {
                format!("{} vs {} round trips; mesh {}; raw TCP {}", s.len(), b.len(), m.per_op(), base.per_op())
            } else {
                format!("{} vs {} round trips", s.len(), b.len())
            };
            let mut row = Row::new(
                format!("rpc 64 B {metric}"),
                *label,
                Unit::Micros,
                s.percentile_us(pct),
                b.percentile_us(pct),
                "raw TCP, in this process",
            )
            .note(note);
            if let (Some(t), "p50") = (target(label), metric) {
                row = row.target(t);
            }
            rows.push(row);
        }
    }
    Ok(rows)
}
