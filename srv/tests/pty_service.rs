//! The `pty` service through a real router, with real commands on real
//! pseudo-terminals.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use ns::conv::{Conv, Msg};
use ns::{Addr, Config, Router};
use srv::pty::{parse_ctl, PtyCtl, PtyService, HANGUP_GRACE};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

struct Setup {
    router: Router,
    svc: Arc<PtyService>,
    stop: CancellationToken,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn setup(command: &[&str], size: (u16, u16)) -> Setup {
    setup_with(command, size, ns::deploy::Restart::Never)
}

fn setup_with(command: &[&str], size: (u16, u16), restart: ns::deploy::Restart) -> Setup {
    let stop = CancellationToken::new();
    let router = Router::new(Config::new("a".parse().unwrap()), stop.clone());
    let command = command.iter().map(|s| s.to_string()).collect();
    let svc = Arc::new(PtyService::new(command, size).unwrap().restarting(restart));
    router.add_service("pty".parse().unwrap(), svc.clone());
    Setup { router, svc, stop }
}

impl Setup {
    fn open(&self) -> Conv {
        self.router.open(Addr::parse("/svc/pty").unwrap(), vec![])
    }
}

async fn type_keys(conv: &Conv, keys: &str) {
    conv.tx.send(Bytes::from(keys.to_string())).await.unwrap();
}

/// Reads output into `out` until it contains `want`. Panics on end or
/// timeout, showing what came.
async fn read_until(conv: &mut Conv, out: &mut String, want: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !out.contains(want) {
        match tokio::time::timeout_at(deadline, conv.rx.recv()).await {
            Ok(Some(Msg::Data(b))) => out.push_str(&String::from_utf8_lossy(&b)),
            other => panic!("waiting for {want:?}: {other:?}; got {out:?}"),
        }
    }
}

/// Reads all output until the conversation ends; true if it ended with
/// end of file.
async fn read_to_end(conv: &mut Conv, out: &mut String) -> bool {
    let mut eof = false;
    loop {
        match tokio::time::timeout(WAIT, conv.rx.recv()).await {
            Ok(Some(Msg::Data(b))) => out.push_str(&String::from_utf8_lossy(&b)),
            Ok(Some(Msg::Eof)) => eof = true,
            Ok(Some(Msg::Error(e))) => panic!("error {e}; got {out:?}"),
            Ok(None) => return eof,
            Err(_) => panic!("timed out; got {out:?}"),
        }
    }
}

/// The number after `pid=` in `out`.
fn pid_in(out: &str) -> Pid {
    let rest = &out[out.find("pid=").expect("pid") + 4..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Pid::from_raw(digits.parse().unwrap())
}

async fn gone_within(pid: Pid, d: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < deadline {
        if kill(pid, None).is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Waits until the service has no running conversation.
async fn drained(svc: &PtyService) {
    for _ in 0..250 {
        if svc.conversations().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("conversations still running: {:?}", svc.conversations());
}

#[tokio::test]
async fn shell_runs_typed_commands_and_its_exit_ends_the_conversation() {
    let s = setup(&["bash", "--norc", "--noprofile", "-i"], (80, 24));
    let mut conv = s.open();
    // All keystrokes at once, as a recording would be fed.
    type_keys(&conv, "echo hi-$((6*7))\nexit\n").await;
    let mut out = String::new();
    assert!(read_to_end(&mut conv, &mut out).await, "no end of file: {out:?}");
    assert!(out.contains("hi-42"), "{out:?}");
    // The shell got a controlling terminal: job control works.
    assert!(!out.contains("no job control"), "{out:?}");
    drained(&s.svc).await;
}

#[tokio::test]
async fn window_size_is_given_and_resize_reaches_the_command() {
    let s = setup(&["sh"], (100, 30));
    let mut conv = s.open();
    let mut out = String::new();
    type_keys(&conv, "echo term=$TERM; stty size\n").await;
    read_until(&mut conv, &mut out, "30 100").await;
    assert!(out.contains("term=xterm-256color"), "{out:?}");
    let n = s.svc.conversations();
    assert_eq!(n.len(), 1);
    s.svc.resize(n[0], 132, 43).unwrap();
    type_keys(&conv, "stty size\n").await;
    read_until(&mut conv, &mut out, "43 132").await;
    type_keys(&conv, "exit\n").await;
    assert!(read_to_end(&mut conv, &mut out).await);
}

#[tokio::test]
async fn ctl_size_sends_sigwinch() {
    let s =
        setup(&["sh", "-c", "trap 'echo winch; stty size' WINCH; echo ready; while :; do sleep 0.05; done"], (80, 24));
    let mut conv = s.open();
    type_keys(&conv, "x").await; // the first message starts the conversation
    let mut out = String::new();
    read_until(&mut conv, &mut out, "ready").await;
    let n = s.svc.conversations()[0];
    s.svc.ctl(n, "size 90 20\n").unwrap();
    read_until(&mut conv, &mut out, "winch").await;
    read_until(&mut conv, &mut out, "20 90").await;
}

#[tokio::test]
async fn hangup_kills_the_command() {
    let s = setup(&["sh", "-c", "echo pid=$$; exec sleep 1000"], (80, 24));
    let mut conv = s.open();
    type_keys(&conv, "x").await;
    let mut out = String::new();
    read_until(&mut conv, &mut out, "\n").await;
    let pid = pid_in(&out);
    assert!(kill(pid, None).is_ok());
    drop(conv);
    assert!(gone_within(pid, Duration::from_secs(5)).await, "{pid} still runs");
    drained(&s.svc).await;
}

#[tokio::test]
async fn a_command_ignoring_sighup_is_killed_after_the_grace() {
    let s = setup(&["sh", "-c", "trap '' HUP; echo pid=$$; while :; do sleep 0.05; done"], (80, 24));
    let mut conv = s.open();
    type_keys(&conv, "x").await;
    let mut out = String::new();
    read_until(&mut conv, &mut out, "\n").await;
    let pid = pid_in(&out);
    drop(conv);
    assert!(gone_within(pid, HANGUP_GRACE + Duration::from_secs(5)).await, "{pid} still runs");
}

#[tokio::test]
async fn end_of_input_leaves_the_command_running() {
    let s = setup(&["cat"], (80, 24));
    let mut conv = s.open();
    type_keys(&conv, "hello\n").await;
    conv.tx.eof().await;
    let mut out = String::new();
    // The terminal echoes the line, then cat writes it.
    read_until(&mut conv, &mut out, "hello\r\nhello\r\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.svc.conversations().len(), 1, "cat ended at end of input");
    drop(conv);
    drained(&s.svc).await;
}

#[tokio::test]
async fn a_command_that_cannot_start_says_so_and_ends() {
    let s = setup(&["/nonexistent/prog"], (80, 24));
    let mut conv = s.open();
    type_keys(&conv, "x").await;
    let mut out = String::new();
    assert!(read_to_end(&mut conv, &mut out).await);
    assert!(out.starts_with("pty: /nonexistent/prog: "), "{out:?}");
}

#[test]
fn ctl_messages() {
    assert_eq!(parse_ctl("size 80 24"), Ok(PtyCtl::Size(80, 24)));
    assert_eq!(parse_ctl("  size\t1000 1\n"), Ok(PtyCtl::Size(1000, 1)));
    let bad_size = Err("bad ctl message: size wants two numbers 1..1000".to_string());
    for line in ["size", "size 80", "size 80 24 1", "size 0 24", "size 80 1001", "size -1 24", "size x y"] {
        assert_eq!(parse_ctl(line), bad_size, "{line:?}");
    }
    assert_eq!(parse_ctl(""), Err("bad ctl message: empty".to_string()));
    assert_eq!(
        parse_ctl("resize 1 2"),
        Err("bad ctl message: unknown command \"resize\"; pty takes: size COLS ROWS".to_string())
    );
}

#[test]
fn bad_configuration() {
    assert!(PtyService::new(vec![], (80, 24)).is_err());
    assert!(PtyService::new(vec!["sh".into()], (0, 24)).is_err());
    assert!(PtyService::new(vec!["sh".into()], (80, 1001)).is_err());
    let svc = PtyService::new(vec!["sh".into()], (80, 24)).unwrap();
    assert_eq!(svc.resize(99, 80, 24), Err("no such conversation: 99".to_string()));
    assert_eq!(svc.ctl(99, "size 0 1"), Err("bad ctl message: size wants two numbers 1..1000".to_string()));
}

#[tokio::test]
async fn what_the_command_leaves_behind_is_ended_too() {
    // The background job ignores SIGHUP and holds the terminal open.
    let s = setup(&["sh", "-c", "trap '' HUP; sleep 100 & echo pid=$!"], (80, 24));
    let mut conv = s.open();
    type_keys(&conv, "x").await;
    let mut out = String::new();
    assert!(read_to_end(&mut conv, &mut out).await, "{out:?}");
    let pid = pid_in(&out);
    assert!(gone_within(pid, HANGUP_GRACE + Duration::from_secs(5)).await, "{pid} still runs");
    drained(&s.svc).await;
}

#[tokio::test]
async fn output_is_not_lost_behind_a_slow_reader() {
    // More than a conversation's window: the pty waits for credit while
    // the command has already exited.
    const N: usize = 4_300_000;
    let s = setup(&["sh", "-c", &format!("head -c {N} /dev/zero | tr '\\0' a; echo; echo END")], (80, 24));
    let mut conv = s.open();
    type_keys(&conv, "x").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut out = String::new();
    assert!(read_to_end(&mut conv, &mut out).await);
    assert_eq!(out.bytes().filter(|b| *b == b'a').count(), N);
    assert!(out.ends_with("END\r\n"), "{:?}", &out[out.len().saturating_sub(20)..]);
}

/// With `restart = "on-failure"`, a command that fails is started again
/// on a new terminal in the same conversation, which is told, and its
/// status counts it; one that exits cleanly ends the conversation.
#[tokio::test]
async fn a_failed_command_is_started_again_in_its_conversation() {
    use ns::deploy::Restart;
    let s = setup_with(&["sh", "-c", "echo up pid=$$; read x; exit $x"], (80, 24), Restart::OnFailure);
    let mut conv = s.open();
    // The first message starts the conversation.
    type_keys(&conv, "").await;
    let mut out = String::new();
    read_until(&mut conv, &mut out, "up pid=").await;
    let first = pid_in(&out);
    assert_eq!(s.svc.status(), format!("{} restarts 0\n", s.svc.conversations()[0]));
    type_keys(&conv, "3\r").await;
    read_until(&mut conv, &mut out, "restart 1 in 1s").await;
    assert!(out.contains("pty: sh exit status: 3; restart 1 in 1s"), "{out:?}");
    out.clear();
    read_until(&mut conv, &mut out, "up pid=").await;
    assert_ne!(pid_in(&out), first, "a new process");
    assert!(s.svc.status().ends_with(" restarts 1\n"), "{}", s.svc.status());
    // A clean exit ends it, as without restart.
    type_keys(&conv, "0\r").await;
    assert!(read_to_end(&mut conv, &mut out).await, "ended with end of file: {out:?}");
    assert!(!out.contains("restart 2"), "{out:?}");
    drained(&s.svc).await;
}

/// `always` starts it again after a clean exit too (how many in a row
/// before it gives up is `srv::restart`'s, tested there); hanging up
/// during the wait starts nothing.
#[tokio::test]
async fn always_starts_a_clean_exit_again_until_hung_up() {
    use ns::deploy::Restart;
    let s = setup_with(&["sh", "-c", "echo up; read x; exit 0"], (80, 24), Restart::Always);
    let mut conv = s.open();
    type_keys(&conv, "").await;
    let mut out = String::new();
    read_until(&mut conv, &mut out, "up").await;
    type_keys(&conv, "\r").await;
    read_until(&mut conv, &mut out, "pty: sh exit status: 0; restart 1 in 1s").await;
    out.clear();
    read_until(&mut conv, &mut out, "up").await;
    type_keys(&conv, "\r").await;
    read_until(&mut conv, &mut out, "restart 2 in 2s").await;
    drop(conv);
    // Past the wait: nothing was started for a reader that is gone.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(s.svc.conversations().is_empty(), "{:?}", s.svc.conversations());
}
