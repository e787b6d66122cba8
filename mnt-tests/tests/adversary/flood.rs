//! Floods of unauthenticated connections against running routers, on
//! tcp and on ws: 5,000 idle connections from 40 source addresses, kept
//! open and renewed while a pinned peer's link is dropped and dialed
//! again; and attackers announcing 8 MB frames before authenticating.
//! What is measured: the pinned peer's time to relink (the `redial` of
//! its terminal to `up` again, five times), and the flooded router's RSS
//! before, at its peak during, and after.
//!
//! The attack clients are dial's (`dial/tests/common/attack.rs`), used
//! here against whole `mesh up` processes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mnt_tests::{until, Deploy, Mesh, Started};

#[allow(dead_code)] // the in-process halves are dial's tests' own
#[path = "../../../dial/tests/common/attack.rs"]
mod attack;

const T: Duration = Duration::from_secs(30);
/// Connections in the flood.
const FLOOD: usize = 5000;
/// The targets: a pinned peer relinks within this, and the flooded
/// router stays under this RSS.
const RELINK: Duration = Duration::from_secs(1);
const RSS_CAP: u64 = 150 << 20;
const ECHO: &str = r#"{ name = "echo", kind = "exec", command = ["cat"] }"#;

/// a's conversations with c's echo, through the flooded routers, work.
fn echo_answers(m: &Mesh) {
    until("a routes to c's echo", T, || m.routes("a").contains("echo c net-b 2"));
    assert_eq!(m.ok(&["send", "-m", "a", "/svc/echo"], "still here\n"), "still here\n");
}

/// A process's resident set, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Samples `pid`'s RSS every 20 ms until dropped; keeps the peak.
struct Sampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let (peak, stop) = (Arc::new(AtomicU64::new(rss(pid))), Arc::new(AtomicBool::new(false)));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Relaxed) {
                p.fetch_max(rss(pid), Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Sampler { peak, stop, thread: Some(thread) }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Relaxed)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// a -tcp- b -ws- c, a and b mounted, an echo service on c: b's tcp
/// listener is a's pinned peer's way in, c's ws listener b's.
fn start() -> (Mesh, Started) {
    let mut m = Mesh::new();
    let s = m.start("flood.toml", &Deploy::abc().mount("a").mount("b").service("c", ECHO));
    let d = m.dir.path().to_path_buf();
    for (who, term) in [("a", "net-b"), ("b", "net-c")] {
        until("links up", T, || link_state(&d, who, term) == Some("up".into()));
    }
    (m, s)
}

/// The state word of terminal `term` on `who`, from its ctl file.
fn link_state(dir: &Path, who: &str, term: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(who).join("term").join(term).join("ctl")).ok()?;
    text.split_whitespace().nth(2).map(str::to_string)
}

/// Drops `who`'s link `term` and times it back to `up`.
fn relink(dir: &Path, who: &str, term: &str) -> Duration {
    let ctl = dir.join(who).join("term").join(term).join("ctl");
    let start = Instant::now();
    std::fs::write(&ctl, "redial\n").unwrap_or_else(|e| panic!("redial {}: {e}", ctl.display()));
    // The hangup is immediate; then the dialer's backoff and a handshake.
    let seen_down = Instant::now() + Duration::from_millis(200);
    while Instant::now() < seen_down && link_state(dir, who, term).as_deref() == Some("up") {
        std::thread::sleep(Duration::from_millis(2));
    }
    let limit = Instant::now() + Duration::from_secs(10);
    while Instant::now() < limit {
        if link_state(dir, who, term).as_deref() == Some("up") {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{who}'s {term} not up again within 10 s");
}

/// Floods `target` (machine `victim`'s listener) with idle connections,
/// renewed all along, while `who`'s pinned link `term` to it is dropped
/// and dialed again five times.
fn idle_flood_keeps_no_peer_out(net: &str, victim: &str, who: &str, term: &str) {
    let (m, s) = start();
    let dir = m.dir.path().to_path_buf();
    let pid = m.pid(victim);
    let to = format!("127.0.0.{}:{}", if victim == "b" { 2 } else { 3 }, s.port(victim)).parse().unwrap();
    let nofile = attack::raise_nofile(4 * FLOOD as u64);
    let flood = FLOOD.min((nofile as usize).saturating_sub(500));
    let before = rss(pid);
    let quiet: Vec<Duration> = (0..3).map(|_| relink(&dir, who, term)).collect();
    let sampler = Sampler::start(pid);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (flooding, opened) = {
        let stop = stop.clone();
        let opened = Arc::new(AtomicU64::new(0));
        let n = opened.clone();
        let task = rt.spawn(async move {
            let (mut open, _) = attack::idle_flood(to, flood).await;
            n.fetch_add(open.len() as u64, Relaxed);
            // Then renew: a new connection in, the oldest out, all along.
            let sources = attack::sources(flood);
            let mut i = 0;
            while !stop.load(Relaxed) {
                if let Ok(Ok(c)) =
                    tokio::time::timeout(Duration::from_secs(1), attack::connect_from(sources[i % flood], to)).await
                {
                    open.push(c);
                    n.fetch_add(1, Relaxed);
                }
                if open.len() > flood {
                    open.remove(0);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            open.len()
        });
        (task, opened)
    };
    until("the flood open", T, || opened.load(Relaxed) >= flood as u64 / 2);
    let during: Vec<Duration> = (0..5).map(|_| relink(&dir, who, term)).collect();
    stop.store(true, Relaxed);
    let held = rt.block_on(flooding).unwrap_or(0);
    let peak = sampler.peak();
    drop(sampler);
    drop(rt);
    std::thread::sleep(Duration::from_secs(1));
    let after = rss(pid);
    let ms =
        |v: &[Duration]| v.iter().map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0)).collect::<Vec<_>>().join(" ");
    crate::measured(
        "flood",
        format_args!(
            "{net}: {} connections opened ({held} held at the end) against {victim}; {who}'s {term} relinked in \
             {} ms during the flood ({} ms before it); {victim}'s RSS {:.1} MiB before, {:.1} MiB peak, {:.1} MiB after",
            opened.load(Relaxed),
            ms(&during),
            ms(&quiet),
            mib(before),
            mib(peak),
            mib(after)
        ),
    );
    let worst = during.iter().max().copied().unwrap_or_default();
    assert!(worst < RELINK, "{net}: relinking took {worst:?} during the flood");
    assert!(peak < RSS_CAP, "{net}: {victim}'s RSS reached {:.1} MiB", mib(peak));
    echo_answers(&m);
}

#[test]
fn tcp_flood_keeps_no_pinned_peer_out() {
    idle_flood_keeps_no_peer_out("tcp", "b", "a", "net-b");
}

#[test]
fn ws_flood_keeps_no_pinned_peer_out() {
    idle_flood_keeps_no_peer_out("ws", "c", "b", "net-c");
}

/// 150 attackers each announce an 8,400,000-byte frame before
/// authenticating and try to send 8 MiB of it, on tcp and on ws: the
/// router closes each at its prefix and its memory does not grow.
#[test]
fn oversized_prefixes_cost_a_router_no_memory() {
    let (m, s) = start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (net, victim, host) in [("tcp", "b", 2), ("ws", "c", 3)] {
        let pid = m.pid(victim);
        let to = format!("127.0.0.{host}:{}", s.port(victim)).parse().unwrap();
        let before = rss(pid);
        let sampler = Sampler::start(pid);
        let results =
            rt.block_on(attack::oversized_many(to, net == "ws", 150, 8_400_000, 8 << 20, Duration::from_secs(10)));
        let peak = sampler.peak();
        drop(sampler);
        let closed = results.iter().filter(|r| r.as_ref().is_ok_and(|o| o.closed)).count();
        let sent: usize = results.iter().filter_map(|r| r.as_ref().ok()).map(|o| o.sent).sum();
        crate::measured(
            "flood",
            format_args!(
                "{net}: 150 attackers announcing 8,400,000 bytes: {closed} closed by {victim}, {:.1} MiB taken by \
                 the kernel in all; {victim}'s RSS {:.1} MiB before, {:.1} MiB peak",
                mib(sent as u64),
                mib(before),
                mib(peak)
            ),
        );
        assert_eq!(closed, 150, "{net}: {results:?}");
        assert!(peak < RSS_CAP && peak < before + (32 << 20), "{net}: RSS {:.1} -> {:.1} MiB", mib(before), mib(peak));
    }
    echo_answers(&m);
}
