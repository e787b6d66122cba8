//! The exec service through an in-process router: what a conversation
//! with a process looks like.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ns::conv::{Conv, Msg};
use ns::{Addr, Config, Router};
use srv::exec::Exec;
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
