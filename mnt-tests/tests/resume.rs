//! Links that resume across real cuts (issue 16): three routers a, b and
//! c as processes, each in a network namespace of its own, in a line
//! (a dials b over one veth pair, b dials c over another), their links
//! encrypted as deployed. b's link to c is cut with `ip link set down`,
//! nothing closes, and the session resumes when it comes back
//! (doc/resume.md): what crossed it goes on with no error, no gap and
//! nothing twice. Past the grace period (`resume`) everything that
//! crossed it fails with `link lost`, and a pipeline restarts; a killed
//! and restarted neighbour is never taken for the old session.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use mnt_tests::netns::Netns;
use mnt_tests::{measured, sh_ok, until, Mesh};

/// The port every router listens on, in its own namespace.
const PORT: u16 = 7600;
/// How long routes may take to settle, on a busy machine.
const SETTLE: Duration = Duration::from_secs(60);

/// The line a - b - c in namespaces, a mounted; c serves `cat`,
/// `sum` (sha256sum) and `upper`, a serves `tick` and `kept` for a
/// pipeline. `keys` go in every machine's table (`resume = ...`).
struct Line {
    m: Mesh,
    net: Netns,
    file: PathBuf,
}

impl Line {
    fn new(tag: &str, keys: &str, tail: &str) -> Line {
        let mut m = Mesh::new();
        let net = Netns::new(tag, &["a", "b", "c"]);
        let (_, b_a) = net.link("a", "b", 1);
        let (_, c_b) = net.link("b", "c", 2);
        let dir = m.dir.path().to_path_buf();
        let kept = dir.join("kept.txt");
        let deploy = format!(
            r#"[machines.a]
{keys}
dial = ["tcp!{b_a}!{PORT}"]
mount = "{mnt}"
services = [
  {{ name = "tick", kind = "exec", command = ["sh", "-c", "while :; do echo tick; sleep 0.1; done"] }},
  {{ name = "kept", kind = "exec", command = ["sh", "-c", "cat >> {kept}"] }},
]

[machines.b]
{keys}
listen = ["tcp!{b_a}!{PORT}"]
dial = ["tcp!{c_b}!{PORT}"]

[machines.c]
{keys}
listen = ["tcp!{c_b}!{PORT}"]
services = [
  {{ name = "cat", kind = "exec", command = ["cat"] }},
  {{ name = "sum", kind = "exec", command = ["sha256sum"] }},
  {{ name = "upper", kind = "exec", command = ["tr", "a-z", "A-Z"] }},
]
{tail}"#,
            mnt = dir.join("a").display(),
            kept = kept.display(),
        );
        let file = m.file("line.toml", &deploy);
        for id in ["a", "b", "c"] {
            m.up_in(&net, &file, id);
        }
        let l = Line { m, net, file };
        l.reach_cat();
        l
    }

    /// Waits until a routes to c's `cat`.
    fn reach_cat(&self) {
        until("a reaches c's cat", SETTLE, || self.m.routes("a").contains("cat c net-b 2 "));
    }

    fn dir(&self) -> &Path {
        self.m.dir.path()
    }

    /// `PATH` of machine `id`'s tree, read with `mesh cat`.
    fn cat(&self, id: &str, path: &str) -> String {
        String::from_utf8_lossy(&self.m.run(&["cat", "-m", id, path], "").stdout).into_owned()
    }

    /// A number from b's `term/net-c/status`: the word after `word` on
    /// the line starting with `line` (`out N envelopes B bytes`: after
    /// `envelopes`, the bytes).
    fn b_status(&self, line: &str, word: &str) -> u64 {
        let s = self.cat("b", "term/net-c/status");
        let l = s.lines().find(|l| l.starts_with(line)).unwrap_or("");
        l.split_whitespace().skip_while(|w| *w != word).nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// Cuts b-c for `d`, then brings it back.
    fn cut(&self, d: Duration) {
        self.net.set_link("b", "c", false);
        std::thread::sleep(d);
        self.net.set_link("b", "c", true);
    }

    /// A conversation with c's `cat` through a's mount, answering `hello`.
    fn conversation(&self) -> std::fs::File {
        let data = self.dir().join("a/svc/cat/data");
        let mut f = OpenOptions::new().read(true).write(true).open(&data).expect("open cat's data");
        assert_eq!(rpc(&mut f, "hello\n").expect("hello"), "hello\n");
        f
    }
}

/// Whether `e` is how a conversation that crossed a lost link fails:
/// `link lost` (ECONNRESET) from the router that lost it, or `no route to
/// machine` (EHOSTUNREACH) when the withdrawal of the machine's routes
/// reaches the asker first.
fn lost(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ECONNRESET | libc::EHOSTUNREACH))
}

/// Writes `msg` as one message and reads one answer.
fn rpc(f: &mut std::fs::File, msg: &str) -> std::io::Result<String> {
    f.write_all(msg.as_bytes())?;
    let mut buf = vec![0u8; 4096];
    let n = f.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn skip() -> bool {
    match Netns::unavailable() {
        Some(why) => {
            eprintln!("skipped: {why}");
            true
        }
        None => false,
    }
}

/// 1 GiB, as the issue asks.
const GIB: u64 = 1 << 30;

#[test]
fn a_gibibyte_from_a_to_c_crosses_a_two_second_cut_whole_and_nobody_sees_an_error() {
    if skip() {
        return;
    }
    let l = Line::new("gib", "", "");
    let data = l.dir().join("gib.bin");
    sh_ok(&format!("head -c {GIB} /dev/urandom > {}", data.display()), Duration::from_secs(120));
    let want = sh_ok(&format!("sha256sum < {}", data.display()), Duration::from_secs(120));
    let want = want.split_whitespace().next().expect("a digest").to_string();

    let mut send = l.m.cmd(&["send", "-m", "a", "/n/c/svc/sum"]);
    send.stdin(std::fs::File::open(&data).expect("data")).stdout(Stdio::piped()).stderr(Stdio::piped());
    let t0 = Instant::now();
    let child = send.spawn().expect("mesh send");
    // A quarter on its way, then b-c is cut for 2 s.
    until("a quarter through b", Duration::from_secs(300), || l.b_status("out ", "envelopes") > GIB / 4);
    let cut_at = t0.elapsed();
    l.cut(Duration::from_secs(2));
    let out = child.wait_with_output().expect("mesh send");
    let took = t0.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mesh send: {}: {stderr}", out.status);
    assert!(stderr.trim().is_empty(), "no error: {stderr}");
    let got = String::from_utf8_lossy(&out.stdout);
    assert_eq!(got.split_whitespace().next(), Some(want.as_str()), "SHA-256 of what arrived");
    let resumes = l.b_status("session ", "resumes");
    assert!(resumes >= 1, "b's net-c resumed: {}", l.cat("b", "term/net-c/status"));
    assert!(l.cat("b", "ctl").contains("net-c resumed"), "{}", l.cat("b", "ctl"));
    measured(&format!(
        "resume: 1 GiB a->b->c by mesh send, b-c cut 2 s at {cut_at:?}: whole (SHA-256 equal) in {took:?}, \
         {resumes} resume(s) on b"
    ));

    // The same through a's mount: a conversation cloned, read by one
    // process, written to by another, whose close is the end of input.
    let (a, out) = (l.dir().join("a"), l.dir().join("sum.out"));
    let script = format!(
        "exec 3<{a}/svc/sum/clone; read n <&3; cat {a}/svc/sum/$n/data > {out} & r=$!; \
         cat {data} > {a}/svc/sum/$n/data && wait $r",
        a = a.display(),
        out = out.display(),
        data = data.display()
    );
    let before = l.b_status("out ", "envelopes");
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let copy = s.spawn(|| mnt_tests::sh(&script, Duration::from_secs(300)));
        until("a quarter through b", Duration::from_secs(300), || l.b_status("out ", "envelopes") > before + GIB / 4);
        let cut_at = t0.elapsed();
        l.cut(Duration::from_secs(2));
        let (st, _, err) = copy.join().expect("copy");
        let took = t0.elapsed();
        assert!(st.success(), "through the mount: {st}: {err}");
        assert!(err.trim().is_empty(), "no error: {err}");
        let got = std::fs::read_to_string(&out).expect("sum.out");
        assert_eq!(got.split_whitespace().next(), Some(want.as_str()), "SHA-256 of what arrived by the mount");
        let again = l.b_status("session ", "resumes");
        assert!(again > resumes, "resumed again: {}", l.cat("b", "term/net-c/status"));
        measured(&format!(
            "resume: 1 GiB a->b->c through a's mount, b-c cut 2 s at {cut_at:?}: whole (SHA-256 equal) in {took:?}"
        ));
    });
}

#[test]
fn numbered_messages_through_the_mount_cross_three_five_second_cuts_each_answered_once() {
    if skip() {
        return;
    }
    let l = Line::new("rpc", "", "");
    let mut f = l.conversation();
    std::thread::scope(|s| {
        let cuts = s.spawn(|| {
            let mut at = Vec::new();
            for wait in [1, 3, 2] {
                std::thread::sleep(Duration::from_secs(wait));
                at.push(Instant::now());
                l.cut(Duration::from_secs(5));
            }
            at
        });
        let mut i = 0u64;
        let mut worst = Duration::ZERO;
        while !cuts.is_finished() || i < 300 {
            let t = Instant::now();
            let got = rpc(&mut f, &format!("{i}\n")).unwrap_or_else(|e| panic!("message {i}: {e}"));
            assert_eq!(got, format!("{i}\n"), "message {i} answered once, in order");
            worst = worst.max(t.elapsed());
            i += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        let at = cuts.join().expect("cuts");
        assert_eq!(at.len(), 3);
        let resumes = l.b_status("session ", "resumes");
        assert!(resumes >= 3, "{}", l.cat("b", "term/net-c/status"));
        measured(&format!(
            "resume: {i} numbered messages through a's mount to c's cat, three 5 s cuts of b-c: each answered once \
             in order; longest wait {worst:?}; {resumes} resumes on b"
        ));
    });
}

#[test]
fn past_the_grace_period_what_crossed_fails_with_link_lost_and_the_pipeline_comes_back() {
    if skip() {
        return;
    }
    let tail = "\n[[pipelines]]\nname = \"record\"\nstages = [\"/svc/tick\", \"/n/c/svc/upper\", \"/n/a/svc/kept\"]\n";
    let l = Line::new("grace", "resume = \"3s\"", tail);
    let kept = l.dir().join("kept.txt");
    let lines = || std::fs::read_to_string(&kept).map(|s| s.lines().count()).unwrap_or(0);
    until("the pipeline records", SETTLE, || lines() > 5);
    let mut f = l.conversation();
    l.net.set_link("b", "c", false);
    let t0 = Instant::now();
    let err = rpc(&mut f, "into the cut\n").expect_err("an error, not an answer");
    let took = t0.elapsed();
    assert!(lost(&err), "link lost: {err}");
    // Noticed within about two periods, then 3 s of grace.
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(10), "{took:?}");
    assert!(l.cat("b", "ctl").contains("net-c not resumed within 3s"), "{}", l.cat("b", "ctl"));
    std::thread::sleep(Duration::from_secs(2));
    l.net.set_link("b", "c", true);
    let before = lines();
    until("the pipeline restarted and records again", SETTLE, || {
        l.cat("a", "ctl").lines().any(|x| x.starts_with("pipeline record running restarts ")) && lines() > before + 5
    });
    measured(&format!("resume: past a 3 s grace period a conversation failed with link lost after {took:?}"));
}

#[test]
fn a_peer_killed_and_started_again_is_a_new_session_and_what_crossed_fails_at_once() {
    if skip() {
        return;
    }
    let mut l = Line::new("kill", "", "");
    let mut f = l.conversation();
    let t0 = Instant::now();
    l.m.signal("c", nix::sys::signal::Signal::SIGKILL);
    assert!(l.m.wait_exit("c", Duration::from_secs(10)).is_some(), "c killed");
    let Line { m, net, file } = &mut l;
    m.up_in_as(net, file, "c", "c-again");
    let err = rpc(&mut f, "to the old c\n").expect_err("an error, not an answer");
    let took = t0.elapsed();
    assert!(lost(&err), "link lost: {err}");
    assert!(took < Duration::from_secs(15), "well within the 30 s grace period: {took:?}");
    // b's try to resume was refused (nobody listened, or the new c had no
    // such session), and b linked the new c afresh: a new session.
    until("b linked to the new c", SETTLE, || {
        l.cat("b", "ctl").contains("refused") && l.cat("b", "term/net-c/ctl").contains(" up")
    });
    assert_eq!(l.b_status("session ", "resumes"), 0, "{}", l.cat("b", "term/net-c/status"));
    l.reach_cat();
    let mut again = l.conversation();
    assert_eq!(rpc(&mut again, "new\n").expect("the new c"), "new\n");
    measured(&format!("resume: a peer killed and started again: its old conversation failed {took:?} after the kill"));
}
