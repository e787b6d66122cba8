//! Helpers shared by the transport tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use dial::{DialString, Link, LinkOptions, Listener};
use futures::{SinkExt, StreamExt};

/// Upper bound for any single step; a hang fails the test instead of
/// stalling the suite.
pub const STEP: Duration = Duration::from_secs(20);

/// Link options for the tests: 1 MiB frames fit, 2 MiB + 1 does not.
pub fn opts() -> LinkOptions {
    LinkOptions { max_frame: 2 << 20 }
}

/// Awaits `f`, failing the test if it takes longer than [`STEP`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no result in {STEP:?}"),
    }
}

pub fn parse(s: &str) -> DialString {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// Listens on `ds`, dials the bound address and accepts: (listener,
/// client end, server end).
pub async fn connected(ds: &DialString) -> (Listener, Link, Link) {
    let mut listener = within("listen", dial::listen(ds, &opts())).await.unwrap_or_else(|e| panic!("listen {ds}: {e}"));
    let addr = listener.local_addr();
    let (client, server) = dial_and_accept(&mut listener, &addr).await;
    (listener, client, server)
}

/// Dials `ds` and accepts on `listener` at once: (client end, server end).
pub async fn dial_and_accept(listener: &mut Listener, ds: &DialString) -> (Link, Link) {
    let opts = opts();
    let (client, server) =
        within("dial and accept", async { tokio::join!(dial::dial(ds, &opts), listener.accept()) }).await;
    let client = client.unwrap_or_else(|e| panic!("dial {ds}: {e}"));
    let server = server.unwrap_or_else(|e| panic!("accept for {ds}: {e}"));
    (client, server)
}

/// A 1 MiB frame with a pattern that catches reordered or dropped chunks.
pub fn big_frame() -> Bytes {
    (0..1usize << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into()
}

/// Sends `frames` on `from` while receiving them on `to`, concurrently so
/// frames larger than the transport's buffers get through.
pub async fn pass(from: &mut Link, to: &mut Link, frames: &[Bytes]) {
    let send = async {
        for f in frames {
            from.tx.send(f.clone().into()).await?;
        }
        io::Result::Ok(())
    };
    let recv = async {
        let mut got = Vec::new();
        for _ in frames {
            match to.rx.next().await {
                Some(Ok(f)) => got.push(f),
                Some(Err(e)) => return Err(e),
                None => return Err(io::Error::other("stream ended early")),
            }
        }
        Ok(got)
    };
    let (sent, got) = within("exchange", async { tokio::join!(send, recv) }).await;
    sent.unwrap_or_else(|e| panic!("send: {e}"));
    let got = got.unwrap_or_else(|e| panic!("receive: {e}"));
    assert_eq!(got.len(), frames.len());
    for (i, (g, f)) in got.iter().zip(frames).enumerate() {
        assert!(g == f, "frame {i} differs: got {} bytes, sent {}", g.len(), f.len());
    }
}

/// Several frames each way, including an empty one and a 1 MiB one.
pub async fn exchange(a: &mut Link, b: &mut Link) {
    let frames = [
        Bytes::from_static(b"hello"),
        Bytes::new(),
        big_frame(),
        Bytes::from_static(b"after the big one"),
        Bytes::new(),
    ];
    pass(a, b, &frames).await;
    pass(b, a, &frames).await;
}

/// Feeds 1000 small frames without flushing, checks none arrived yet
/// (the sink buffers), then flushes once and checks all arrive in order.
pub async fn batching(a: &mut Link, b: &mut Link) {
    let frames: Vec<Bytes> = (0..1000).map(|i| Bytes::from(format!("frame {i}"))).collect();
    within("feed", async {
        for f in &frames {
            a.tx.feed(f.clone().into()).await.unwrap_or_else(|e| panic!("feed: {e}"));
        }
    })
    .await;
    let early = tokio::time::timeout(Duration::from_millis(50), b.rx.next()).await;
    assert!(early.is_err(), "a frame arrived before flush: {early:?}");
    within("flush", a.tx.flush()).await.unwrap_or_else(|e| panic!("flush: {e}"));
    for (i, want) in frames.iter().enumerate() {
        let got = within("receive batch", b.rx.next()).await;
        match got {
            Some(Ok(f)) => assert_eq!(&f, want, "frame {i}"),
            other => panic!("frame {i}: {other:?}"),
        }
    }
}

/// A frame over the limit is refused on send, and the link still works.
pub async fn oversized_send(a: &mut Link, b: &mut Link) {
    let limit = opts().max_frame;
    let err = within("send oversized", a.tx.send(vec![0u8; limit + 1].into()))
        .await
        .expect_err("oversized frame was accepted");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(err.to_string(), format!("frame too large: {} bytes, limit {limit}", limit + 1));
    pass(a, b, &[Bytes::from_static(b"still fine")]).await;
}

/// Closing one side ends the other side's stream cleanly.
pub async fn close_ends_stream(a: &mut Link, b: &mut Link) {
    within("close", a.tx.close()).await.unwrap_or_else(|e| panic!("close: {e}"));
    match within("end of stream", b.rx.next()).await {
        None => {}
        other => panic!("expected end of stream, got {other:?}"),
    }
}

/// The whole conversation suite on one freshly connected pair.
pub async fn suite(ds: &DialString) {
    let (_listener, mut client, mut server) = connected(ds).await;
    exchange(&mut client, &mut server).await;
    batching(&mut client, &mut server).await;
    batching(&mut server, &mut client).await;
    oversized_send(&mut client, &mut server).await;
    oversized_send(&mut server, &mut client).await;
    close_ends_stream(&mut client, &mut server).await;
}

pub mod attack;
