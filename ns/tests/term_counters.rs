//! A link terminal's status counts what gossip costs: route announcements
//! each way with their encoded size, and every envelope with its data.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ns::conv::Msg;
use ns::probe::Echo;
use ns::{Addr, Config, Name, Router};
use tokio_util::sync::CancellationToken;

fn n(s: &str) -> Name {
    s.parse().unwrap()
}

/// The numbers of a `LABEL N WORD B bytes` line of a status text.
fn counts(status: &str, label: &str) -> (u64, u64) {
    let line =
        status.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no {label:?} line in:\n{status}"));
    let nums: Vec<u64> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
    (nums[0], nums[1])
}

fn status(r: &Router, term: &str) -> String {
    r.term(&term.parse().unwrap()).unwrap().status_text()
}

#[tokio::test(start_paused = true)]
async fn a_link_counts_announcements_and_their_bytes_each_way() {
    let stop = CancellationToken::new();
    let a = Router::new(Config::new(n("a")), stop.child_token());
    let b = Router::new(Config::new(n("b")), stop.child_token());
    b.listen(&"mem!counters-b".parse().unwrap()).await.unwrap();
    a.dial_now("mem!counters-b".parse().unwrap()).await.unwrap();
    while a.table().best(&n("b")).is_none() || b.table().best(&n("a")).is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (sent, sent_bytes) = counts(&status(&a, "net-b"), "routes out");
    let (got, got_bytes) = counts(&status(&b, "net-a"), "routes in");
    assert!(sent >= 1 && sent_bytes > 0, "a announced itself:\n{}", status(&a, "net-b"));
    assert_eq!((sent, sent_bytes), (got, got_bytes), "what a sent is what b got");

    // A new service is one more announcement, and nothing else is
    // announced while the mesh is idle, pings and all.
    a.add_service(n("echo"), Arc::new(Echo));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (after, after_bytes) = counts(&status(&a, "net-b"), "routes out");
    assert_eq!(after, sent + 1, "one announcement for one change:\n{}", status(&a, "net-b"));
    assert!(after_bytes > sent_bytes);
    assert_eq!(counts(&status(&b, "net-a"), "routes in"), (after, after_bytes));

    // Envelopes count every kind (pings included), bytes count data.
    let before = counts(&status(&b, "net-a"), "out");
    let mut conv = b.open(Addr::parse("/n/a/svc/echo").unwrap(), Vec::new());
    conv.tx.send(Bytes::from_static(b"hello")).await.unwrap();
    assert!(matches!(conv.rx.recv().await, Some(Msg::Data(d)) if d == "hello"));
    let now = counts(&status(&b, "net-a"), "out");
    assert!(now.0 > before.0);
    assert_eq!(now.1, before.1 + 5, "five data bytes out");
    let (ins, _) = counts(&status(&a, "net-b"), "in");
    assert!(ins > after, "pings and announcements are envelopes too");
    stop.cancel();
}
