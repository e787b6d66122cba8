//! Real link cuts between network namespaces (issue 14, item 1).
//!
//! Three routers a, b and c, each in a namespace of its own, linked by
//! veth pairs a-b, b-c and a-c; a `cat` service on a (`cata`) and on c
//! (`catc`), each reached through the other's mount. The a-c
//! link is cut with `ip link set down` on a's end: nothing closes, each
//! router notices the silence on its own clock (two periods), and in
//! between the two route differently, one already round by b, the other
//! still over the cut. Conversations are opened both ways at a steady
//! rate through the cut and after, and each must get its answer or an
//! error within [`LIMIT`]: none may wait for ever, none may end with
//! its answer silently missing. The link comes back and the cut is
//! repeated, since which end notices first is chance.
//!
//! The links do not resume (`resume = "0s"`): this is the promise for a
//! link lost for good, as one is past its grace period. A resuming link
//! keeps its routes and holds what crosses it instead
//! (`mnt-tests/tests/resume.rs`).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mnt_tests::netns::Netns;
use mnt_tests::{until, Mesh};

/// The port every router listens on, in its own namespace.
const PORT: u16 = 7500;
/// Cuts made, the link brought back after each.
const ROUNDS: usize = 3;
/// Conversations are opened from the cut until this long after it...
const OPENING: Duration = Duration::from_secs(3);
/// ...one each way every this long.
const EVERY: Duration = Duration::from_millis(50);
/// The promise: an answer or an error within this long of opening.
const LIMIT: Duration = Duration::from_secs(2);
/// How long a conversation is waited for before it counts as hung.
const HUNG: Duration = Duration::from_secs(10);
/// How long routes may take to settle, on a busy machine.
const SETTLE: Duration = Duration::from_secs(60);

/// How a conversation ended.
#[derive(Debug, PartialEq)]
enum End {
    Answered,
    Errored(String),
    /// Ended with no error, but without its answer.
    Lost(String),
    Hung,
}

/// One conversation through the cut, opened through a machine's mount.
struct Conv {
    round: usize,
    from: &'static str,
    opened: Duration,
    end: Option<(End, Duration)>,
}

/// Opens `data`, writes `msg`, reads the answer; reports how it ended and
/// when, from `cut`. Runs in a thread of its own: a hung one is left
/// blocked until its router goes, at the end of the test.
fn converse(data: PathBuf, msg: String, cut: Instant, i: usize, done: mpsc::Sender<(usize, End, Duration)>) {
    std::thread::spawn(move || {
        let end = (|| {
            let mut f = OpenOptions::new().read(true).write(true).open(&data).map_err(|e| format!("open: {e}"))?;
            f.write_all(msg.as_bytes()).map_err(|e| format!("write: {e}"))?;
            let mut buf = vec![0u8; 4096];
            let n = f.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            Ok::<_, String>(String::from_utf8_lossy(&buf[..n]).into_owned())
        })();
        let end = match end {
            Ok(got) if got == msg => End::Answered,
            Ok(got) => End::Lost(format!("read {got:?}")),
            Err(e) => End::Errored(e),
        };
        let _ = done.send((i, end, cut.elapsed()));
    });
}

/// Cuts a-c, opens conversations both ways through the cut and waits for
/// each to end (or to hang); the link is left cut.
fn round(dir: &Path, net: &Netns, n: usize) -> Vec<Conv> {
    let (tx, rx) = mpsc::channel();
    net.set_link("a", "c", false);
    let cut = Instant::now();
    let mut convs: Vec<Conv> = Vec::new();
    let mut next = Duration::ZERO;
    while next <= OPENING {
        std::thread::sleep(next.saturating_sub(cut.elapsed()));
        let opened = cut.elapsed();
        for (from, to) in [("a", "c"), ("c", "a")] {
            let data = dir.join(from).join(format!("svc/cat{to}/data"));
            let msg = format!("round {n} conversation {} from {from}\n", convs.len());
            converse(data, msg, cut, convs.len(), tx.clone());
            convs.push(Conv { round: n, from, opened, end: None });
        }
        next += EVERY;
    }
    drop(tx);
    let last = cut.elapsed();
    while convs.iter().any(|c| c.end.is_none()) {
        match rx.recv_timeout((last + HUNG).saturating_sub(cut.elapsed())) {
            Ok((i, end, at)) => convs[i].end = Some((end, at - convs[i].opened)),
            Err(_) => break,
        }
    }
    for c in &mut convs {
        if c.end.is_none() {
            c.end = Some((End::Hung, cut.elapsed() - c.opened));
        }
    }
    convs
}

/// Whether `from` reaches the `cat` of `to` over the direct link.
fn direct(m: &Mesh, from: &str, to: &str) -> bool {
    m.routes(from).contains(&format!("cat{to} {to} net-{to} 1 "))
}

#[test]
fn every_conversation_through_a_real_cut_is_answered_or_fails_in_time() {
    if let Some(why) = Netns::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let mut m = Mesh::new();
    let net = Netns::new("cut", &["a", "b", "c"]);
    // Each end's address on each link.
    let (a_b, b_a) = net.link("a", "b", 1);
    let (_, c_b) = net.link("b", "c", 2);
    let (_, c_a) = net.link("a", "c", 3);
    let dir = m.dir.path().to_path_buf();
    let cat = |on: &str| format!("services = [{{ name = \"cat{on}\", kind = \"exec\", command = [\"cat\"] }}]");
    let mount = |on: &str| format!("mount = \"{}\"", dir.join(on).display());
    // Each listens where it is dialed: c on both its links.
    let deploy = format!(
        "[machines.a]\nresume = \"0s\"\nlisten = [\"tcp!{a_b}!{PORT}\"]\ndial = [\"tcp!{b_a}!{PORT}\", \"tcp!{c_a}!{PORT}\"]\n{}\n{}\n\n\
         [machines.b]\nresume = \"0s\"\nlisten = [\"tcp!{b_a}!{PORT}\"]\ndial = [\"tcp!{c_b}!{PORT}\"]\n\n\
         [machines.c]\nresume = \"0s\"\nlisten = [\"tcp!{c_b}!{PORT}\", \"tcp!{c_a}!{PORT}\"]\n{}\n{}\n",
        mount("a"),
        cat("a"),
        mount("c"),
        cat("c"),
    );
    let file = m.file("tri.toml", &deploy);
    for id in ["a", "b", "c"] {
        m.up_in(&net, &file, id);
    }
    let linked = |m: &Mesh| direct(m, "a", "c") && direct(m, "c", "a");
    until("a and c linked directly", SETTLE, || linked(&m));
    let hello = mnt_tests::sh_ok(
        &format!("exec 3<>{}/svc/catc/data; echo hello >&3; head -n1 <&3", dir.join("a").display()),
        SETTLE,
    );
    assert_eq!(hello, "hello\n");

    let mut all = Vec::new();
    let mut relinked = Vec::new();
    for n in 0..ROUNDS {
        all.extend(round(&dir, &net, n));
        let back = Instant::now();
        net.set_link("a", "c", true);
        until("a and c linked directly again", SETTLE, || linked(&m));
        relinked.push(back.elapsed());
    }

    let count = |f: &dyn Fn(&End) -> bool| all.iter().filter(|c| c.end.as_ref().is_some_and(|(e, _)| f(e))).count();
    let answered = count(&|e| *e == End::Answered);
    let errored = count(&|e| matches!(e, End::Errored(_)));
    let worst = all.iter().filter_map(|c| c.end.as_ref().map(|e| e.1)).max().unwrap_or_default();
    let worst_error = all
        .iter()
        .filter_map(|c| match &c.end {
            Some((End::Errored(_), t)) => Some(*t),
            _ => None,
        })
        .max()
        .unwrap_or_default();
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for c in &all {
        if let Some((End::Errored(e), _)) = &c.end {
            match kinds.iter_mut().find(|k| k.0 == *e) {
                Some(k) => k.1 += 1,
                None => kinds.push((e.clone(), 1)),
            }
        }
    }
    crate::measured("cut", format_args!("errors seen: {kinds:?}"));
    crate::measured(
        "cut",
        format_args!(
            "{} conversations opened over {ROUNDS} cuts of a-c, both ways, every {EVERY:?} for {OPENING:?}: \
             {answered} answered, {errored} errored, {} lost, {} hung; worst time to answer or error {worst:?}, \
             worst time to error {worst_error:?}; relinked after {relinked:?}",
            all.len(),
            count(&|e| matches!(e, End::Lost(_))),
            count(&|e| *e == End::Hung),
        ),
    );
    let mut bad: Vec<String> = Vec::new();
    for c in &all {
        let Some((end, took)) = &c.end else { continue };
        let late = *took > LIMIT;
        if late || matches!(end, End::Lost(_) | End::Hung) {
            bad.push(format!(
                "cut {}, from {}, opened {:?} after the cut: {end:?} after {took:?}",
                c.round, c.from, c.opened
            ));
        }
    }
    assert!(bad.is_empty(), "{} of {} conversations broke the promise:\n{}", bad.len(), all.len(), bad.join("\n"));
}
