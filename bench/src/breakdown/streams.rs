//! The bulk ladder: 1 MiB frames over a dial link, then encoded
//! envelopes over it, then the mesh with several conversations at once;
//! and the cost of encoding alone.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use ns::Envelope;

use super::rungs::{envelope, link_pair};
use crate::bulk::mesh_transfer;
use crate::mesh::Chain;
use crate::rpc::GRACE;
use crate::stats::Samples;

/// `chunk` as frames (or encoded envelopes) over a dial link to a reader
/// that counts payload bytes and answers the count at end of stream.
pub async fn framed(
    ip: &str,
    chunk: &Bytes,
    total: usize,
    limit: Duration,
    with_envelope: bool,
) -> anyhow::Result<(u64, Duration)> {
    let (mut link, mut far) = link_pair(ip).await?;
    let reader = tokio::spawn(async move {
        let mut got: u64 = 0;
        while let Some(f) = far.rx.next().await {
            let f = f?;
            got += if with_envelope { Envelope::decode_frame(f)?.data.len() } else { f.len() } as u64;
        }
        far.tx.send(dial::Frame::from(Bytes::copy_from_slice(&got.to_be_bytes()))).await?;
        Ok::<u64, anyhow::Error>(got)
    });
    let deadline = Instant::now() + limit;
    let t = Instant::now();
    let mut sent: u64 = 0;
    let send = async {
        while (sent as usize) < total && Instant::now() < deadline {
            let frame = if with_envelope { envelope(chunk.clone())?.encode() } else { chunk.clone() };
            link.tx.send(frame.into()).await?;
            sent += chunk.len() as u64;
        }
        // A half-close on tcp: the reader's stream ends, ours stays open.
        link.tx.close().await?;
        let count = link.rx.next().await.ok_or_else(|| anyhow!("no count"))??;
        Ok::<_, anyhow::Error>(count)
    };
    let count = tokio::time::timeout(limit + GRACE, send).await.map_err(|_| anyhow!("framed stream stuck"))??;
    let took = t.elapsed();
    let got = reader.await??;
    if got != sent || count.into_bytes().as_ref() != got.to_be_bytes() {
        bail!("framed stream: sent {sent} bytes, reader got {got}");
    }
    Ok((sent, took))
}

/// The same bytes split over `n` conversations to the sink at `to`, at
/// once: if this is much faster than one, one stream is held back by its
/// flow-control window, not by the CPU.
pub async fn parallel(
    chain: &Chain,
    to: &str,
    chunk: &Bytes,
    total: usize,
    n: usize,
    limit: Duration,
) -> anyhow::Result<(u64, Duration)> {
    let t = Instant::now();
    let each = (total / n).max(chunk.len());
    let all = futures::future::join_all((0..n).map(|_| mesh_transfer(chain.head(), to, chunk, each, limit))).await;
    let took = t.elapsed();
    let mut bytes = 0;
    for r in all {
        bytes += r?.0;
    }
    Ok((bytes, took))
}

/// Per call of `f`, `n` times or until `limit`.
fn time_each(n: usize, limit: Duration, mut f: impl FnMut()) -> Samples {
    let deadline = Instant::now() + limit;
    let mut s = Samples::with_capacity(n);
    for _ in 0..n {
        if Instant::now() >= deadline {
            break;
        }
        let t = Instant::now();
        f();
        s.push(t.elapsed());
    }
    s
}

/// Encoding an envelope with a `size`-byte payload, against copying
/// `size` bytes into a fresh buffer (what the encoding copies at least).
pub fn encode_cost(size: usize, n: usize, limit: Duration) -> anyhow::Result<(Samples, Samples)> {
    let data = Bytes::from(vec![0xa5u8; size]);
    let e = envelope(data.clone())?;
    let enc = time_each(n, limit, || {
        std::hint::black_box(e.encode());
    });
    let copy = time_each(n, limit, || {
        std::hint::black_box(Bytes::copy_from_slice(&data));
    });
    Ok((enc, copy))
}

/// Decoding a 64-byte envelope, per call.
pub fn decode_cost(n: usize, limit: Duration) -> anyhow::Result<Samples> {
    let frame = envelope(Bytes::from_static(&[0x5a; 64]))?.encode();
    let mut bad = None;
    let s = time_each(n, limit, || {
        if let Err(e) = Envelope::decode(frame.clone()) {
            bad = Some(e);
        }
    });
    match bad {
        Some(e) => Err(e.into()),
        None => Ok(s),
    }
}
