//! A flood of unauthenticated connections must not keep a pinned peer
//! out: 1,000 idle connections on a tcp and on a ws listener from
//! `listen_secure`, then a pinned peer secures a link and has a frame
//! echoed within a generous bound (it takes milliseconds).

mod common;

use std::time::Duration;

use common::attack::{idle_flood, pinned_pair, pinned_peer, raise_nofile, serve, socket_addr};
use common::parse;
use dial::LinkOptions;

/// Connections in the flood.
const FLOOD: usize = 1000;

/// The pinned peer's bound; it needs well under 1 s.
const BOUND: Duration = Duration::from_secs(3);

async fn flood_then_pinned_peer(net: &str) {
    let nofile = raise_nofile(8192);
    // Each flood connection is two descriptors in this process (ours and
    // the listener's), plus room for the test's own.
    let flood = FLOOD.min((nofile as usize).saturating_sub(200) / 2);
    let opts = LinkOptions::default();
    let ((a, ta), (b, tb)) = pinned_pair();
    let listener = dial::listen_secure(&parse(&format!("{net}!127.0.0.1!0")), &opts).await.unwrap();
    let ds = listener.local_addr();
    let to = socket_addr(&ds);
    let server = tokio::spawn(serve(listener, opts.clone(), a, ta));

    let (idle, failed) = idle_flood(to, flood).await;
    let measured = tokio::time::timeout(BOUND, pinned_peer(&ds, &opts, &b, &tb)).await;
    server.abort();
    drop(idle);
    let (took, peer) = match measured {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{net}: pinned peer failed during a flood of {flood}: {e}"),
        Err(_) => panic!("{net}: pinned peer not in within {BOUND:?} during a flood of {flood}"),
    };
    println!("{net}: flood of {flood} idle connections ({failed} failed to connect): pinned peer secured in {took:?}");
    assert_eq!(peer.machine, "a");
    assert!(took < BOUND, "{net}: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_flood_does_not_keep_a_pinned_peer_out() {
    flood_then_pinned_peer("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_flood_does_not_keep_a_pinned_peer_out() {
    flood_then_pinned_peer("ws").await;
}
