//! A terminal's sending side over a real pipe: order across inline and
//! queued writes, and the bound on what a stalled link takes.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::*;
use crate::outlet::{INLINE_MAX, LINK_QUEUE};
use crate::path::Addr;

fn env(id: u64, len: usize) -> Envelope {
    let a = Addr::parse("/n/a/svc/x/1").expect("valid");
    let b = Addr::parse("/n/b/svc/y").expect("valid");
    Envelope::new(id, a, b, Kind::Data, Bytes::from(vec![id as u8; len]))
}

/// A terminal whose link is a duplex pipe of `room` bytes; the frame
/// stream of the other end.
fn linked(room: usize) -> (Arc<Term>, dial::FrameStream) {
    let (ours, theirs) = tokio::io::duplex(room);
    let opts = dial::LinkOptions::default();
    let (tx, _) = dial::framed(ours, &opts);
    let (_, rx) = dial::framed(theirs, &opts);
    let (term, writer) = Term::linked(TermKind::Net("b".parse().expect("valid")), "mem!t".into(), true, tx, None);
    tokio::spawn(writer);
    (term, rx)
}

/// Small envelopes (written inline while the link is idle), big ones
/// (always queued) and pings (queued by `try_send`), mixed, arrive in
/// the order they were sent, with the writer task on another thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_and_queued_envelopes_keep_their_order() {
    let (term, mut rx) = linked(64 << 10);
    let reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        while let Some(Ok(f)) = rx.next().await {
            ids.push(Envelope::decode_frame(f).expect("a frame we sent").id);
            if ids.len() == 600 {
                break;
            }
        }
        ids
    });
    for id in 0..600u64 {
        let len = match id % 7 {
            0 => INLINE_MAX + 1,
            3 => 100_000,
            _ => 64,
        };
        if id % 11 == 5 {
            while !term.try_send(env(id, len)) {
                tokio::task::yield_now().await;
            }
        } else {
            term.send(env(id, len)).await.expect("link up");
        }
    }
    let ids = tokio::time::timeout(Duration::from_secs(20), reader).await.expect("all arrive").expect("reader");
    assert_eq!(ids, (0..600).collect::<Vec<_>>());
}

/// A peer that reads nothing: senders end up waiting on the bounded
/// queue instead of buffering without limit, inline or not.
#[tokio::test]
async fn a_stalled_link_makes_senders_wait() {
    let (term, _rx) = linked(4096);
    let mut sent = 0;
    let stalled = async {
        loop {
            term.send(env(sent, 1000)).await.expect("link up");
            sent += 1;
        }
    };
    let r = tokio::time::timeout(Duration::from_secs(2), stalled).await;
    assert!(r.is_err(), "the sender must block");
    // The queue, the sink's buffer and the pipe: nothing more.
    let bound = (LINK_QUEUE + dial::WRITE_BUFFER / 1000 + 10) as u64;
    assert!(sent <= bound, "{sent} envelopes taken, bound {bound}");
}
