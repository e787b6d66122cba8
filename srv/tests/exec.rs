//! The exec service through an in-process router: what a conversation
//! with a process looks like.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ns::conv::{Conv, Msg};
use ns::{Addr, Config, Router};
use srv::exec::Exec;
use srv::slots::Limits;
use tokio_util::sync::CancellationToken;

fn router(cmd: &[&str]) -> Router {
    let r = Router::new(Config::new("a".parse().unwrap()), CancellationToken::new());
    r.add_service("x".parse().unwrap(), Arc::new(Exec::new(cmd.iter().map(|s| s.to_string()).collect()).unwrap()));
    r
}

async fn next(conv: &mut Conv) -> Option<Msg> {
    tokio::time::timeout(Duration::from_secs(10), conv.rx.recv()).await.expect("reply in time")
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[tokio::test]
async fn each_line_answers_at_once() {
    let r = router(&["tr", "a-z", "A-Z"]);
    let mut c = r.open(Addr::parse("/svc/x").unwrap(), vec![]);
    // No end of input yet: the pty on stdout makes tr flush each line.
    c.tx.send(Bytes::from("hello\n")).await.unwrap();
    assert_eq!(next(&mut c).await, Some(Msg::Data(Bytes::from("HELLO\n"))));
    c.tx.send(Bytes::from("again\n")).await.unwrap();
    assert_eq!(next(&mut c).await, Some(Msg::Data(Bytes::from("AGAIN\n"))));
    c.tx.eof().await;
    assert_eq!(next(&mut c).await, Some(Msg::Eof), "exit is the end");
}

#[tokio::test]
async fn bytes_pass_unchanged() {
    let r = router(&["cat"]);
    let mut c = r.open(Addr::parse("/svc/x").unwrap(), vec![]);
    let all: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
    c.tx.send(Bytes::from(all.clone())).await.unwrap();
    c.tx.eof().await;
    let mut got = Vec::new();
    while let Some(Msg::Data(b)) = next(&mut c).await {
        got.extend_from_slice(&b);
    }
    assert_eq!(got.len(), all.len());
    assert!(got == all, "raw pty changed bytes");
}

#[tokio::test]
async fn hangup_ends_the_process() {
    let r = router(&["sh", "-c", "echo $$; exec sleep 100"]);
    let mut c = r.open(Addr::parse("/svc/x").unwrap(), vec![]);
    c.tx.send(Bytes::from("go\n")).await.unwrap();
    let Some(Msg::Data(pid)) = next(&mut c).await else { panic!("no pid") };
    let pid: i32 = String::from_utf8_lossy(&pid).trim().parse().unwrap();
    assert!(alive(pid));
    drop(c);
    for _ in 0..100 {
        if !alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("process {pid} outlived its conversation");
}

#[tokio::test]
async fn cancel_is_sigint() {
    let r = router(&["sh", "-c", "trap 'echo caught; exit 0' INT; echo ready; while :; do sleep 0.05; done"]);
    let mut c = r.open(Addr::parse("/svc/x").unwrap(), vec![]);
    c.tx.send(Bytes::from("x")).await.unwrap();
    assert_eq!(next(&mut c).await, Some(Msg::Data(Bytes::from("ready\n"))));
    c.tx.cancel().await;
    assert_eq!(next(&mut c).await, Some(Msg::Data(Bytes::from("caught\n"))));
    assert_eq!(next(&mut c).await, Some(Msg::Eof));
}

#[tokio::test]
async fn a_missing_program_is_an_error() {
    let r = router(&["/nonexistent/program"]);
    let mut c = r.open(Addr::parse("/svc/x").unwrap(), vec![]);
    c.tx.send(Bytes::from("x")).await.unwrap();
    match next(&mut c).await {
        Some(Msg::Error(e)) => assert!(e.contains("/nonexistent/program"), "{e}"),
        other => panic!("{other:?}"),
    }
}

/// A router whose `x` runs `cat` with at most one process alive.
fn one_at_a_time(queue: usize, wait: Duration) -> Router {
    let r = Router::new(Config::new("a".parse().unwrap()), CancellationToken::new());
    let limits = Limits { alive: 1, starting: 1, queue, wait };
    r.add_service("x".parse().unwrap(), Arc::new(Exec::with_limits(vec!["cat".into()], limits).unwrap()));
    r
}

#[tokio::test]
async fn past_its_bounds_a_service_is_busy_and_callers_wait_their_turn() {
    let r = one_at_a_time(1, Duration::from_secs(30));
    let mut first = r.open(Addr::parse("/svc/x").unwrap(), vec![]);
    first.tx.send(Bytes::from("1\n")).await.unwrap();
    assert_eq!(next(&mut first).await, Some(Msg::Data(Bytes::from("1\n"))));
    // The second waits for the first's place; the third finds the queue full.
    let mut second = r.open(Addr::parse("/svc/x").unwrap(), vec![]);
    second.tx.send(Bytes::from("2\n")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = r.open(Addr::parse("/svc/x").unwrap(), vec![]);
    third.tx.send(Bytes::from("3\n")).await.unwrap();
    match next(&mut third).await {
        Some(Msg::Error(e)) => {
            assert!(e.starts_with(ns::error::EBUSY), "{e}");
            assert_eq!(ns::error::errno(&e), libc::EBUSY);
        }
        other => panic!("the third is refused: {other:?}"),
    }
    // The first ends: the second's process starts and answers.
    first.tx.eof().await;
    assert_eq!(next(&mut first).await, Some(Msg::Eof));
    assert_eq!(next(&mut second).await, Some(Msg::Data(Bytes::from("2\n"))));
}

#[tokio::test]
async fn a_wait_for_a_place_ends_busy() {
    let r = one_at_a_time(8, Duration::from_millis(300));
    let mut first = r.open(Addr::parse("/svc/x").unwrap(), vec![]);
    first.tx.send(Bytes::from("1\n")).await.unwrap();
    assert_eq!(next(&mut first).await, Some(Msg::Data(Bytes::from("1\n"))));
    let mut second = r.open(Addr::parse("/svc/x").unwrap(), vec![]);
    second.tx.send(Bytes::from("2\n")).await.unwrap();
    match next(&mut second).await {
        Some(Msg::Error(e)) => assert!(e.starts_with("service busy: x: 1 running, none ended in 300ms"), "{e}"),
        other => panic!("the second is refused after its wait: {other:?}"),
    }
    // Writing fails too, with the same error.
    let e = second.tx.send(Bytes::from("again\n")).await.expect_err("writing fails");
    assert!(e.starts_with(ns::error::EBUSY), "{e}");
}

/// Live processes hold no thread: on a runtime with 4 blocking threads,
/// 16 conversations held open each get their echo.
#[test]
fn live_processes_hold_no_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = router(&["cat"]);
        let mut held = Vec::new();
        for i in 0..16 {
            let mut c = r.open(Addr::parse("/svc/x").unwrap(), vec![]);
            let line = Bytes::from(format!("{i}\n"));
            c.tx.send(line.clone()).await.unwrap();
            assert_eq!(next(&mut c).await, Some(Msg::Data(line)), "conversation {i}");
            held.push(c);
        }
    });
}

/// A caller that writes and goes while its conversation waits for a place
/// still has its input read: nothing it sent is dropped unseen.
#[tokio::test]
async fn input_sent_while_waiting_is_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let r = Router::new(Config::new("a".parse().unwrap()), CancellationToken::new());
    let limits = Limits { alive: 1, starting: 1, queue: 8, wait: Duration::from_secs(30) };
    let command = vec!["sh".into(), "-c".into(), format!("cat >> {}", out.display())];
    r.add_service("x".parse().unwrap(), Arc::new(Exec::with_limits(command, limits).unwrap()));
    let first = r.open(Addr::parse("/svc/x").unwrap(), vec![]);
    first.tx.send(Bytes::from("first\n")).await.unwrap();
    let second = r.open(Addr::parse("/svc/x").unwrap(), vec![]);
    second.tx.send(Bytes::from("second\n")).await.unwrap();
    second.tx.eof().await;
    drop(second);
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(first);
    let mut text = String::new();
    for _ in 0..200 {
        text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.contains("second") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(text, "first\nsecond\n");
}
