//! The client library against a router on the in-process transport: what
//! a local process sends arrives whole and in order, however it mixes
//! small envelopes (written by the sender itself when the link is idle)
//! and big ones (handed to the writer task), and the probe services
//! answer as `echo` and `sink` promise.

use std::sync::Arc;

use bytes::Bytes;
use ns::client::Client;
use ns::conv::Msg;
use ns::probe::{Echo, Sink};
use ns::{Addr, Config, Router};
use tokio_util::sync::CancellationToken;

async fn router(tag: &str) -> (Router, Client, CancellationToken) {
    let stop = CancellationToken::new();
    let r = Router::new(Config::new("a".parse().unwrap()), stop.child_token());
    r.add_service("echo".parse().unwrap(), Arc::new(Echo));
    r.add_service("sink".parse().unwrap(), Arc::new(Sink));
    let ds = format!("mem!client-test-{tag}-{}", std::process::id()).parse().unwrap();
    r.listen(&ds).await.unwrap();
    let c = Client::connect(&ds).await.unwrap();
    (r, c, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_big_messages_sent_back_to_back_come_back_whole_and_in_order() {
    let (_r, c, stop) = router("order").await;
    let mut conv = c.open(Addr::parse("/svc/echo").unwrap(), Vec::new());
    // Every fifth message is past the size written inline.
    let msgs: Vec<Bytes> =
        (0..300u32).map(|i| Bytes::from(vec![(i % 251) as u8; if i % 5 == 0 { 40_000 } else { 64 }])).collect();
    let sent = msgs.clone();
    let tx = conv.tx.clone();
    let writer = tokio::spawn(async move {
        for m in sent {
            tx.send(m).await.unwrap();
        }
        tx.eof().await;
    });
    for (i, want) in msgs.iter().enumerate() {
        match conv.rx.recv().await {
            Some(Msg::Data(got)) => assert!(got == *want, "message {i}: {} bytes, wanted {}", got.len(), want.len()),
            other => panic!("message {i}: {other:?}"),
        }
    }
    assert!(matches!(conv.rx.recv().await, Some(Msg::Eof)));
    writer.await.unwrap();
    stop.cancel();
}

#[tokio::test]
async fn the_sink_answers_the_bytes_it_swallowed_at_end_of_input() {
    let (_r, c, stop) = router("sink").await;
    let mut conv = c.open(Addr::parse("/svc/sink").unwrap(), Vec::new());
    for n in [1usize, 64, 100_000] {
        conv.tx.send(Bytes::from(vec![7u8; n])).await.unwrap();
    }
    conv.tx.eof().await;
    match conv.rx.recv().await {
        Some(Msg::Data(b)) => assert_eq!(&b[..], b"100065"),
        other => panic!("{other:?}"),
    }
    stop.cancel();
}
