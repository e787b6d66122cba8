//! Oversized length prefixes before authentication are refused at once
//! and cost the listener no memory: 150 connections each announce an
//! 8,400,000-byte frame and send a few MiB of it, on tcp and on ws; the
//! listener closes each, and the process's RSS (sampled during the
//! attack) grows by well under 150 MiB. One test, so that no other test's memory is counted.

mod common;

use std::time::Duration;

use common::attack::{oversized_many, peak_rss, pinned_pair, raise_nofile, rss, serve, socket_addr};
use common::parse;
use dial::LinkOptions;

const ATTACKERS: usize = 150;
const ANNOUNCE: u64 = 8_400_000;
const SEND: usize = 4 << 20;
/// How long an attacker waits for the listener to close its connection.
const BOUND: Duration = Duration::from_secs(10);
const MIB: u64 = 1 << 20;

async fn attack(net: &str) {
    let opts = LinkOptions::default();
    let ((a, ta), _) = pinned_pair();
    let listener = dial::listen_secure(&parse(&format!("{net}!127.0.0.1!0")), &opts).await.unwrap();
    let ds = listener.local_addr();
    let to = socket_addr(&ds);
    let server = tokio::spawn(serve(listener, opts, a, ta));

    let before = rss();
    // The attackers keep their connections until closed or the bound:
    // RSS is read while the old code still held every buffer.
    let (results, peak) = peak_rss(oversized_many(to, net == "ws", ATTACKERS, ANNOUNCE, SEND, BOUND)).await;
    // Give the listener a moment to drop what the closed connections
    // left, then see that the memory went back.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss();
    server.abort();
    let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let closed = ok.iter().filter(|o| o.closed).count();
    let most_sent = ok.iter().map(|o| o.sent).max().unwrap_or(0);
    println!(
        "{net}: {ATTACKERS} connections announcing {ANNOUNCE} bytes, {SEND} sent each: {closed} closed by the \
         listener, at most {most_sent} bytes sent on one; RSS {} MiB before, peak {} MiB, {} MiB after",
        before / MIB,
        peak / MIB,
        after / MIB
    );
    let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(errors.is_empty(), "{net}: attackers could not connect: {errors:?}");
    assert_eq!(closed, ATTACKERS, "{net}: connections left open after an oversized prefix");
    let grew = peak.saturating_sub(before);
    assert!(grew < 100 * MIB, "{net}: RSS grew by {} MiB during the attack", grew / MIB);
    let kept = after.saturating_sub(before);
    assert!(kept < 50 * MIB, "{net}: RSS still {} MiB over the start after the attack", kept / MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_prefixes_before_authentication_cost_no_memory() {
    raise_nofile(4096);
    attack("tcp").await;
    attack("ws").await;
}
