//! Storms of concurrent conversations to one service (issue 14, item 5).
//!
//! A machine under legitimate load must slow its callers, and past its
//! bounds refuse them with the `busy` error (EBUSY), never drop its links:
//! a router starved by a thousand process starts used to go silent, its
//! neighbours hung up on it, and the conversations failed with
//! EHOSTUNREACH.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use mnt_tests::{until, Deploy, Mesh};

/// Conversations opened at once.
const N: usize = 1000;
/// How long the whole storm may take before a conversation counts as
/// hung: generous, a slow machine must slow the callers, not fail them.
const STORM: Duration = Duration::from_secs(240);
const T: Duration = Duration::from_secs(30);

/// How one conversation ended.
#[derive(Debug)]
enum Outcome {
    Answered,
    Busy,
    /// Anything else: the errno or what went wrong.
    Other(String),
}

/// Raises the soft limit of open files to the hard one: the test holds a
/// file per conversation, and the routers it starts inherit the limit.
fn raise_nofile() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn outcome(e: &std::io::Error, what: &str) -> Outcome {
    match e.raw_os_error() {
        Some(libc::EBUSY) => Outcome::Busy,
        _ => Outcome::Other(format!("{what}: {e}")),
    }
}

/// One conversation: a line written, its echo read back. It stays open
/// (its process alive) until `hold` is dropped.
fn converse(data: &std::path::Path, i: usize, start: &Barrier, hold: &mut Option<std::fs::File>) -> Outcome {
    let f = OpenOptions::new().read(true).write(true).open(data);
    // Every thread waits here, opened or not, so that the writes go at once.
    start.wait();
    let mut f = match f {
        Ok(f) => f,
        Err(e) => return outcome(&e, "open"),
    };
    let line = format!("line {i}\n");
    if let Err(e) = f.write_all(line.as_bytes()) {
        return outcome(&e, "write");
    }
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while got.len() < line.len() {
        match f.read(&mut buf) {
            Ok(0) => return Outcome::Other(format!("end of file after {:?}", String::from_utf8_lossy(&got))),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return outcome(&e, "read"),
        }
    }
    *hold = Some(f);
    if got == line.as_bytes() {
        Outcome::Answered
    } else {
        Outcome::Other(format!("echo {:?}", String::from_utf8_lossy(&got)))
    }
}

/// Lines of the routers' logs where a link went down, or a neighbour was
/// declared dead.
fn link_drops(m: &Mesh) -> Vec<String> {
    ["a", "b", "c"]
        .iter()
        .flat_map(|id| {
            m.log(id)
                .lines()
                .filter(|l| l.contains("link down") || l.contains("silent"))
                .map(|l| format!("{id}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What one storm came to.
struct Tally {
    answered: usize,
    busy: usize,
    /// The other errors, one line each.
    other: Vec<String>,
    hung: usize,
    wall: Duration,
}

/// `n` conversations at once on `data`, each a line and its echo. With
/// `hold`, each stays open (its process alive) until all have answered or
/// been refused; without, each ends once answered.
fn storm(data: &std::path::Path, n: usize, hold: bool) -> Tally {
    let start = Arc::new(Barrier::new(n + 1));
    let end = Arc::new(Barrier::new(n + 1));
    let (done, results) = mpsc::channel();
    for i in 0..n {
        let (data, start, done, end) = (data.to_path_buf(), start.clone(), done.clone(), end.clone());
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                let mut open = None;
                let _ = done.send(converse(&data, i, &start, &mut open));
                if hold {
                    end.wait();
                }
            })
            .expect("spawn a conversation's thread");
    }
    drop(done);
    start.wait();
    let t0 = Instant::now();
    let mut t = Tally { answered: 0, busy: 0, other: Vec::new(), hung: 0, wall: Duration::ZERO };
    while t.answered + t.busy + t.other.len() < n {
        let Some(left) = STORM.checked_sub(t0.elapsed()) else { break };
        match results.recv_timeout(left) {
            Ok(Outcome::Answered) => t.answered += 1,
            Ok(Outcome::Busy) => t.busy += 1,
            Ok(Outcome::Other(e)) => t.other.push(e),
            Err(_) => break,
        }
    }
    t.wall = t0.elapsed();
    t.hung = n - t.answered - t.busy - t.other.len();
    // Threads still hung are left to the test's end, which fails.
    if hold && t.hung == 0 {
        end.wait();
    }
    t
}

/// Prints what a storm came to and checks that every conversation was
/// answered or refused as busy.
fn check(case: &str, m: &Mesh, t: &Tally) {
    let drops = link_drops(m);
    crate::measured(
        case,
        format_args!(
            "{N} concurrent conversations to c's cat from a: {} answered, {} busy, {} other errors, {} hung, \
             wall {:.2?}, {} link drops",
            t.answered,
            t.busy,
            t.other.len(),
            t.hung,
            t.wall,
            drops.len()
        ),
    );
    let mut kinds: Vec<&String> = t.other.iter().collect();
    kinds.sort();
    kinds.dedup();
    assert!(
        t.other.is_empty(),
        "{case}: {} conversations failed otherwise than busy, such as {:?}",
        t.other.len(),
        &kinds[..kinds.len().min(5)]
    );
    assert_eq!(t.hung, 0, "{case}: {} conversations neither answered nor refused in {STORM:?}", t.hung);
    assert!(drops.is_empty(), "{case}: links dropped under load:\n{}", drops.join("\n"));
}

#[test]
fn a_storm_of_conversations_slows_callers_and_keeps_links() {
    raise_nofile();
    let mut m = Mesh::new();
    let dir = m.dir.path().to_path_buf();
    let deploy = Deploy::abc().mount("a").service("c", r#"{ name = "cat", kind = "exec", command = ["cat"] }"#);
    m.start("load.toml", &deploy);
    let data = dir.join("a/svc/cat/data");
    until("c's cat at a", T, || data.exists());

    // Each ends once answered: places turn over, callers wait their turn.
    check("load, each ending once answered", &m, &storm(&data, N, false));
    // All stay open: past the bound on live processes, callers wait, then
    // are refused as busy. c used to fork them all and go silent.
    let held = storm(&data, N, true);
    check("load, all held open", &m, &held);
    assert!(held.answered > 0, "some were answered");

    // The links stayed: c's service is still there, and still answers.
    assert!(data.exists(), "c's cat vanished from a");
    let after = storm(&data, 1, false);
    assert_eq!(after.answered, 1, "a conversation after the storms: {:?}", after.other);
}
