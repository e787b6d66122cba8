//! Arbitrary bytes on a byte-stream link -> `dial::framed`'s frame stream.
//!
//! The first input byte picks the frame limit, the second the capacity of
//! the in-memory pipe (so length prefixes and bodies arrive split at every
//! place); the rest is what the peer wrote before closing. The stream must
//! yield exactly the frames a plain reading of the wire format finds (4-byte
//! big-endian length, then the body), then end cleanly if the bytes end on a
//! frame boundary and fail otherwise, or fail on the first length over the
//! limit. It must never panic, and never wait once the peer has closed: the
//! clock is paused, so a stream that waits for nothing trips the timeout at
//! once. The frames, sent back through `framed`, give the same bytes.
#![no_main]

use std::time::Duration;

use bytes::Bytes;
use dial::{framed, LinkOptions, DEFAULT_MAX_FRAME};
use futures::{SinkExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the wire holds by the format's definition: the frames, and whether
/// the bytes after them are a clean end (nothing) or an error.
fn model(mut wire: &[u8], limit: usize) -> (Vec<&[u8]>, bool) {
    let mut frames = Vec::new();
    loop {
        if wire.is_empty() {
            return (frames, true);
        }
        let Some(head) = wire.get(..4) else {
            return (frames, false);
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > limit || wire.len() - 4 < len {
            return (frames, false);
        }
        frames.push(&wire[4..4 + len]);
        wire = &wire[4 + len..];
    }
}

fuzz_target!(|data: &[u8]| {
    let (Some(&pick), Some(&cap)) = (data.first(), data.get(1)) else {
        return;
    };
    let wire = &data[2..];
    let limit = match pick & 3 {
        0 => (pick >> 2) as usize,
        1 => 256,
        2 => 4096,
        _ => DEFAULT_MAX_FRAME,
    };
    let opts = LinkOptions { max_frame: limit };
    let (want, want_clean) = model(wire, limit);

    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime");
    rt.block_on(async {
        let (ours, mut peer) = tokio::io::duplex(1 + cap as usize);
        let (tx, mut rx) = framed(ours, &opts);
        let writer = async move {
            // The reader may stop early (an error): then the pipe breaks.
            let _ = peer.write_all(wire).await;
            let _ = peer.shutdown().await;
            drop(peer);
        };
        // Owns the link, so that it is dropped (and the writer's pipe breaks)
        // when reading stops.
        let reader = async move {
            let _tx = tx;
            let mut got: Vec<Bytes> = Vec::new();
            let clean = loop {
                match rx.next().await {
                    Some(Ok(f)) => got.push(f.into_bytes()),
                    Some(Err(_)) => break false,
                    None => break true,
                }
            };
            (got, clean)
        };
        let ((got, clean), ()) =
            tokio::time::timeout(Duration::from_secs(3600), async { futures::join!(reader, writer) })
                .await
                .expect("the frame stream hangs after the peer closed");
        assert_eq!(got.len(), want.len(), "frame count");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(&g[..], *w);
        }
        assert_eq!(clean, want_clean, "how the stream ended");

        // The frames sent back give the bytes they were read from.
        let used: usize = want.iter().map(|f| 4 + f.len()).sum();
        let (ours, mut peer) = tokio::io::duplex(used + 8);
        let (mut tx, _rx) = framed(ours, &opts);
        // Each goes in two parts, cut in the middle: the writer joins
        // head and body into one frame, copied or not.
        for f in got {
            let cut = f.len() / 2;
            let frame = dial::Frame::new(f.slice(..cut), f.slice(cut..));
            tx.feed(frame).await.expect("a received frame can be sent");
        }
        tx.close().await.expect("close");
        let mut echoed = Vec::new();
        peer.read_to_end(&mut echoed).await.expect("read back");
        assert_eq!(&echoed[..], &wire[..used]);
    });
});
