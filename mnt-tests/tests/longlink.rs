//! A long link: a and b, router processes, linked through a relay that
//! holds every chunk 25 ms each way (a 50 ms round trip, as between
//! cities). One conversation is not held to its first window per round
//! trip (4 MiB / 50 ms, 84 MB/s): its window grows with the path's
//! bandwidth-delay product (`ns::conv::window`).

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mnt_tests::{until, Deploy, Mesh, Started};

const T: Duration = Duration::from_secs(30);

const SINK: &str = "/n/b/svc/sink";

/// Sends `bytes` to b's sink through a's router with `mesh send`, 1 MiB
/// at a time, `pause` after each; the time it took and how `mesh send`
/// ended (its answer is on its standard output).
fn send_paced(m: &Mesh, bytes: usize, pause: Duration) -> (Duration, std::process::Output) {
    let mut c = m.cmd(&["send", "-m", "a", SINK]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = c.spawn().expect("mesh send");
    let mut stdin = child.stdin.take().expect("stdin");
    let chunk = vec![7u8; 1 << 20];
    let writer = std::thread::spawn(move || {
        for _ in 0..bytes >> 20 {
            if stdin.write_all(&chunk).is_err() {
                break; // the conversation failed: its output says so
            }
            std::thread::sleep(pause);
        }
    });
    let out = child.wait_with_output().expect("mesh send output");
    writer.join().expect("writer");
    (t.elapsed(), out)
}

/// [`send_paced`] without pauses, which must succeed: the time and what
/// the sink answered.
fn send(m: &Mesh, bytes: usize) -> (Duration, String) {
    let (took, out) = send_paced(m, bytes, Duration::ZERO);
    assert!(out.status.success(), "mesh send: {}", String::from_utf8_lossy(&out.stderr));
    (took, String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// [`send`], reading the largest window of b's sink every `every`
/// meanwhile: the time, the answer and that window.
fn send_watching(m: &Mesh, bytes: usize, every: Duration) -> (Duration, String, u64) {
    std::thread::scope(|s| {
        let sent = s.spawn(|| send(m, bytes));
        let mut most = 0;
        while !sent.is_finished() {
            most = most.max(sink_window(m));
            std::thread::sleep(every);
        }
        let (took, answer) = sent.join().expect("send");
        (took, answer, most)
    })
}

/// Waits until a's messages reach b's sink.
fn sink_reached(m: &Mesh) {
    until("a reaches b's sink", T, || {
        String::from_utf8_lossy(&m.run(&["send", "-m", "a", SINK], "x").stdout).trim() == "1"
    });
}

/// a and b, plaintext (the tests' debug build would spend the time on
/// Noise), a dialing b through a relay that holds each chunk 25 ms each
/// way, b serving a sink; once a reaches it. The relay lives as long as
/// what is returned.
fn long_ab(m: &mut Mesh) -> Started {
    let deploy = Deploy::new()
        .machine("a", 1)
        .machine("b", 2)
        .dial_delayed("a", "b", Duration::from_millis(25))
        .set("a", "insecure = true")
        .set("b", "insecure = true")
        .service("b", r#"{ name = "sink", kind = "sink" }"#);
    let started = m.start("ab.toml", &deploy);
    sink_reached(m);
    started
}

#[test]
fn one_conversation_over_a_50_ms_link_is_not_held_to_its_first_window() {
    let mut m = Mesh::new();
    let _started = long_ab(&mut m);
    // The round trip, as a message and its answer see it.
    let (rtt, _) = send(&m, 0);
    let bytes = 256 << 20;
    let (took, answer, most) = send_watching(&m, bytes, Duration::from_millis(100));
    assert_eq!(answer, bytes.to_string(), "the sink got every byte");
    assert!(most > 4 << 20, "the window did not grow ({most} bytes seen)");
    let mbps = bytes as f64 / took.as_secs_f64() / 1e6;
    // A conversation's first window, ns::conv::WINDOW, per round trip.
    let cap = f64::from(4u32 << 20) / 0.050 / 1e6;
    mnt_tests::measured(&format!(
        "long link: 256 MiB over a 50 ms round trip in {took:.2?}, {mbps:.0} MB/s, the window grown to {} MiB; a first window per round trip is {cap:.0} MB/s; an empty send took {rtt:.0?}",
        most >> 20
    ));
    // One window per round trip cannot pass `cap` (the whole first window
    // comes free: 256 MiB at most 85 MB/s); 66 MB/s when windows did not
    // grow. Well past it, the window grew.
    assert!(mbps > 1.2 * cap, "{mbps:.0} MB/s: held near one window per round trip ({cap:.0} MB/s)");
}

/// TCP on a lossy long path stalls while it retransmits, each retry
/// waiting twice as long: a segment lost three times in a row holds a
/// 50 ms path silent for about 1.75 s. Five stalls of 1.2 s during one
/// conversation do not make either router take the link for dead (the
/// old second of silence did, at 1.16-1.20 s), and the conversation ends
/// whole.
#[test]
fn stalls_of_a_lossy_long_link_do_not_take_it_for_dead() {
    let mut m = Mesh::new();
    let started = long_ab(&mut m);
    // One conversation, 1 MiB every 200 ms for 8 s, stalled meanwhile.
    let out = std::thread::scope(|s| {
        let sent = s.spawn(|| send_paced(&m, 40 << 20, Duration::from_millis(200)).1);
        let relay = started.relay("a", "b");
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(600));
            relay.freeze();
            std::thread::sleep(Duration::from_millis(1200));
            relay.thaw();
        }
        sent.join().expect("send")
    });
    let silent: Vec<String> = ["a", "b"]
        .iter()
        .flat_map(|id| m.log(id).lines().filter(|l| l.contains("silent")).map(String::from).collect::<Vec<_>>())
        .collect();
    assert!(silent.is_empty(), "a link taken for dead:\n{}", silent.join("\n"));
    assert!(out.status.success(), "mesh send: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), (40u64 << 20).to_string());
    let status = m.ok(&["cat", "-m", "a", "/term/net-b/status"], "");
    let rtt = status.lines().find(|l| l.starts_with("rtt ")).unwrap_or("no rtt line");
    mnt_tests::measured(&format!(
        "long link: five stalls of 1.2 s during one conversation over a 50 ms path: no link taken for dead ({rtt})"
    ));
}

/// The largest window b's sink grants, as its conversations' `status`
/// files say (0 when none is open).
fn sink_window(m: &Mesh) -> u64 {
    let ls = m.run(&["ls", "-m", "b", "/svc/sink"], "");
    let mut most = 0;
    for n in String::from_utf8_lossy(&ls.stdout).lines().filter(|l| l.parse::<u64>().is_ok()) {
        let st = m.run(&["cat", "-m", "b", &format!("/svc/sink/{n}/status")], "");
        let text = String::from_utf8_lossy(&st.stdout).into_owned();
        let w = text.lines().find_map(|l| l.strip_prefix("window ")?.strip_suffix(" bytes")?.parse().ok());
        most = most.max(w.unwrap_or(0));
    }
    most
}

/// A slow link (40 Mbit/s, shaped with `tbf` between two network
/// namespaces): the window of a conversation that fills it grows once to
/// learn, finds that it did not pay, and stays at twice its first size,
/// so that what it queues on the link (and the wait of every other
/// conversation behind it) stays small. (Over a long fast path it grows:
/// the test above.)
#[test]
fn a_slow_link_keeps_its_window_small() {
    if let Some(why) = mnt_tests::netns::Netns::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let mut m = Mesh::new();
    let net = mnt_tests::netns::Netns::new("slow", &["a", "b"]);
    let (aa, ab) = net.link("a", "b", 1);
    net.shape("a", "b", 40);
    let file = m.file(
        "ab.toml",
        &format!(
            "[machines.a]\nlisten = [\"tcp!{aa}!7600\"]\ndial = [\"tcp!{ab}!7600\"]\ninsecure = true\n\n\
             [machines.b]\nlisten = [\"tcp!{ab}!7600\"]\ninsecure = true\nservices = [{{ name = \"sink\", kind = \"sink\" }}]\n"
        ),
    );
    for id in ["a", "b"] {
        m.up_in(&net, &file, id);
    }
    sink_reached(&m);
    let bytes = 24 << 20;
    let (took, answer, most) = send_watching(&m, bytes, Duration::from_millis(200));
    assert_eq!(answer, bytes.to_string());
    let mbit = bytes as f64 * 8.0 / took.as_secs_f64() / 1e6;
    mnt_tests::measured(&format!(
        "slow link: 24 MiB over 40 Mbit/s in {took:.2?} ({mbit:.0} Mbit/s); the sink's window at most {} MiB",
        most >> 20
    ));
    assert!(mbit < 44.0, "{mbit:.0} Mbit/s: the link was not shaped");
    assert!(most > 0, "no status read while the conversation was open");
    assert!(most <= 8 << 20, "the window grew to {most} bytes on a link-bound path");
}
