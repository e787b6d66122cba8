//! Workload `bulk`: a stream of 64 KiB or 1 MiB messages from a to the
//! sink on c, through b, on tcp; MB/s from the first send to the sink's
//! byte count. Baseline: one raw TCP connection carrying the same bytes in
//! the same chunks to a reader that answers its count at end of stream.
//! 1-hop cases (a -> b), plaintext and encrypted, split the cost of the
//! middle router.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bytes::Bytes;
use ns::conv::Msg;
use ns::Router;

use crate::mesh::{addr, Chain};
use crate::report::{Row, Target, Unit};
use crate::rpc::GRACE;
use crate::stats::{Transfer, Usage};
use crate::Ctx;

/// Sends `total` bytes (or until `limit`) to the sink at `to`, then end of
/// input, and waits for the sink's count. Returns bytes and time taken.
pub(crate) async fn mesh_transfer(
    from: &Router,
    to: &str,
    chunk: &Bytes,
    total: usize,
    limit: Duration,
) -> anyhow::Result<(u64, Duration)> {
    sink_transfer(from.open(addr(to)?, Vec::new()), chunk, total, limit).await
}

/// [`mesh_transfer`] on a conversation with a sink already open (a
/// router's or a client's).
pub(crate) async fn sink_transfer(
    mut conv: ns::conv::Conv,
    chunk: &Bytes,
    total: usize,
    limit: Duration,
) -> anyhow::Result<(u64, Duration)> {
    let deadline = Instant::now() + limit;
    let t = Instant::now();
    let mut sent: u64 = 0;
    let send = async {
        while (sent as usize) < total && Instant::now() < deadline {
            conv.tx.send(chunk.clone()).await.map_err(|e| anyhow!("send: {e}"))?;
            sent += chunk.len() as u64;
        }
        conv.tx.eof().await;
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(limit + GRACE, send).await.map_err(|_| anyhow!("sending stuck for {:?}", limit + GRACE))??;
    let answer = tokio::time::timeout(GRACE, conv.rx.recv())
        .await
        .map_err(|_| anyhow!("no count from the sink within {GRACE:?}"))?;
    let took = t.elapsed();
    let got: u64 = match answer {
        Some(Msg::Data(b)) => std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("sink answered {} bytes that are no count", b.len()))?,
        Some(Msg::Error(e)) => bail!("sink: {e}"),
        Some(Msg::Eof) | None => bail!("sink ended without a count"),
    };
    if got != sent {
        bail!("sent {sent} bytes, the sink got {got}");
    }
    Ok((sent, took))
}

/// One mesh case or the baseline.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    Raw,
    Mesh(&'static str),
    /// Through the chain whose links are encrypted.
    Secure(&'static str),
}

async fn transfer(
    p: Via,
    chains: &(Chain, Chain),
    chunk: &Bytes,
    total: usize,
    limit: Duration,
) -> anyhow::Result<(u64, Duration)> {
    match p {
        Via::Raw => crate::raw::stream("127.0.0.1", chunk, total, Instant::now() + limit).await,
        Via::Mesh(to) => mesh_transfer(chains.0.head(), to, chunk, total, limit).await,
        Via::Secure(to) => mesh_transfer(chains.1.head(), to, chunk, total, limit).await,
    }
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let sz = &ctx.sizes;
    let nodes =
        [("a", "tcp!127.0.0.1!0".to_string()), ("b", "tcp!127.0.0.2!0".into()), ("c", "tcp!127.0.0.3!0".into())];
    let tcp = (Chain::new(&nodes).await?, Chain::new_secure(&nodes).await?);
    let cases: [(&str, Via); 5] = [
        ("raw TCP", Via::Raw),
        ("tcp, 2 hops", Via::Mesh("/n/c/svc/sink")),
        ("tcp, 1 hop", Via::Mesh("/n/b/svc/sink")),
        ("tcp, 2 hops, encrypted", Via::Secure("/n/c/svc/sink")),
        // What one encrypted hop costs, to read the two-hop case by.
        ("tcp, 1 hop, encrypted", Via::Secure("/n/b/svc/sink")),
    ];
    let mut rows = Vec::new();
    for (size_name, size) in [("64 KiB", 64usize << 10), ("1 MiB", 1 << 20)] {
        let chunk = Bytes::from(vec![0xa5u8; size]);
        // Warm up both paths: connections, buffers, the allocator.
        for (label, p) in cases {
            let warm = (sz.bulk_bytes / 8).max(size);
            transfer(p, &tcp, &chunk, warm, sz.phase_limit)
                .await
                .map_err(|e| anyhow!("{size_name} {label} warm-up: {e:#}"))?;
        }
        let mut got = [Transfer::default(); 5];
        for round in 0..sz.rounds {
            for k in 0..cases.len() {
                let i = (k + round) % cases.len();
                let (label, p) = cases[i];
                let before = Usage::now();
                let (bytes, took) = transfer(p, &tcp, &chunk, sz.bulk_bytes, sz.phase_limit)
                    .await
                    .map_err(|e| anyhow!("{size_name} {label}: {e:#}"))?;
                got[i].add(bytes, took);
                got[i].usage.add(Usage::since(before));
            }
        }
        let base = got[0].mb_per_s();
        let workload = format!("bulk {size_name} msgs");
        let cpu = |t: &Transfer| t.cpu_us_per_mib().map(|c| format!("{c:.0}")).unwrap_or_else(|| "?".into());
        let note = |t: &Transfer| {
            format!(
                "{} MiB vs {} MiB in {} rounds; CPU {} vs {} us per MiB",
                t.bytes >> 20,
                got[0].bytes >> 20,
                sz.rounds,
                cpu(t),
                cpu(&got[0])
            )
        };
        let mut two = Row::new(&workload, "tcp, 2 hops, plaintext", Unit::MBps, got[1].mb_per_s(), base, "raw TCP")
            .note(note(&got[1]));
        if size == 1 << 20 {
            two = two.target(Target::AtLeast(0.6));
        }
        rows.push(two);
        let mut enc = Row::new(&workload, "tcp, 2 hops, encrypted", Unit::MBps, got[3].mb_per_s(), base, "raw TCP")
            .note(note(&got[3]));
        if size == 1 << 20 {
            enc = enc.target(Target::AtLeast(0.4));
        }
        rows.push(enc);
        rows.push(
            Row::new(&workload, "tcp, 1 hop, plaintext", Unit::MBps, got[2].mb_per_s(), base, "raw TCP")
                .note(note(&got[2])),
        );
        rows.push(
            Row::new(&workload, "tcp, 1 hop, encrypted", Unit::MBps, got[4].mb_per_s(), base, "raw TCP")
                .note(note(&got[4])),
        );
    }
    Ok(rows)
}
