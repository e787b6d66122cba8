//! End to end (issue 18), with routers as processes: a and d dial b, b
//! dials c, every link Noise-encrypted with host-made keys. What a sends
//! c is sealed by a's router for c's: b, the relay, holds no byte of it in
//! clear (its memory is searched for a marker, as is its trace of the
//! link), and a relay that changes what it passes on (a debug build with
//! `MESH_TEST_TAMPER`, ns/src/tamper.rs) is caught at c: the message is
//! refused, `mesh send` fails with a clear error, and c's `ctl` names the
//! relay.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use mnt_tests::{until, Deploy, Mesh};

const T: Duration = Duration::from_secs(30);

/// Whether process `pid`'s writable memory (where anything it received
/// can be: heap, stacks, anonymous maps) holds `needle` anywhere.
fn memory_holds(pid: u32, needle: &[u8]) -> bool {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("mem (the tests run as root)");
    let mut chunk = vec![0u8; 1 << 20];
    let finder = memchr::memmem::Finder::new(needle);
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else { continue };
        let name = line.split_whitespace().nth(5).unwrap_or("");
        if !perms.starts_with("rw") || name.starts_with("[v") {
            continue;
        }
        let Some((from, to)) = range.split_once('-') else { continue };
        let (Ok(from), Ok(to)) = (u64::from_str_radix(from, 16), u64::from_str_radix(to, 16)) else { continue };
        let mut at = from;
        while at < to {
            let n = ((to - at) as usize).min(chunk.len());
            // Overlap chunks by the needle's length, so none is missed at
            // a boundary.
            match mem.read_at(&mut chunk[..n], at) {
                Ok(got) if got > 0 => {
                    if finder.find(&chunk[..got]).is_some() {
                        return true;
                    }
                    if got <= needle.len() {
                        break;
                    }
                    at += (got - needle.len()) as u64;
                }
                _ => break,
            }
        }
    }
    false
}

fn deploy() -> Deploy {
    Deploy::new()
        .machine("a", 1)
        .machine("b", 2)
        .machine("c", 3)
        .machine("d", 4)
        .dial("a", "b")
        .dial("d", "b")
        .dial("b", "c")
        .mount("a")
        .mount("c")
        .service("c", r#"{ name = "echo", kind = "exec", command = ["cat"] }"#)
}

#[test]
fn a_relay_holds_no_payload_in_clear_and_what_it_changes_is_refused() {
    let mut m = Mesh::new();
    let tamper = m.file("tamper", "");
    m.envs.push(("b".into(), "MESH_TEST_TAMPER".into(), tamper.display().to_string()));
    let d = deploy();
    m.start("e2e.toml", &d);
    let dir = m.dir.path().to_path_buf();
    let (a, c) = (dir.join("a"), dir.join("c"));
    until("c's echo at a and d", T, || a.join("svc/echo").exists() && m.routes("d").contains("echo"));

    // A marker no process has but the sender and the two ends.
    let marker = format!("MESHMARKER-{:016x}", rand_u64());
    let text: String = std::iter::repeat_n(format!("{marker}\n"), 256).collect();
    // b's trace of its link to c, read through a's tree while the
    // messages cross.
    let trace = dir.join("trace.txt");
    let tracer = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("timeout 6 cat {}/n/b/term/net-c/data > {}", a.display(), trace.display()))
        .spawn()
        .expect("tracer");
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..40 {
        assert_eq!(m.ok(&["send", "-m", "a", "/n/c/svc/echo"], &text), text);
    }
    let mut tracer = tracer;
    let _ = tracer.wait();
    let mut traced = String::new();
    std::fs::File::open(&trace).expect("trace").read_to_string(&mut traced).expect("trace text");
    assert!(traced.contains("out data"), "b traced the crossing:\n{traced}");
    assert!(!traced.contains(&marker), "b's trace holds the marker");
    let (pa, pb, pc) = (m.pid("a"), m.pid("b"), m.pid("c"));
    let t0 = std::time::Instant::now();
    assert!(!memory_holds(pb, marker.as_bytes()), "the relay's memory holds the marker in clear");
    // The search finds what is there: the ends held the marker in clear.
    assert!(
        memory_holds(pa, marker.as_bytes()) || memory_holds(pc, marker.as_bytes()),
        "the search finds the marker at neither end: it proves nothing"
    );
    eprintln!("memory searched in {:?}", t0.elapsed());
    let ctl = || std::fs::read_to_string(c.join("ctl")).unwrap_or_default();
    assert!(ctl().contains("end-to-end sessions"), "{}", ctl());

    // b flips a payload byte: refused at c, which names b.
    std::fs::write(&tamper, "flip").expect("tamper");
    let err = m.fails(&["send", "-m", "a", "/n/c/svc/echo"], "changed\n");
    assert!(err.contains("end-to-end check failed: at c: changed on the way"), "{err}");
    assert!(err.contains("passed on by b"), "{err}");
    until("c's ctl names the relay", T, || {
        ctl().contains("refused from a via b: data /n/c/svc/echo: changed on the way")
    });

    // b says the message is from another user of a.
    std::fs::write(&tamper, "user=root2").expect("tamper");
    let err = m.fails(&["send", "-m", "a", "/n/c/svc/echo"], "as someone else\n");
    assert!(err.contains("end-to-end check failed: at c"), "{err}");

    // b says it comes from d, another machine it routes to, with a path
    // to match: c refuses it as not d's (the error goes to d, so a's
    // sender only waits).
    std::fs::write(&tamper, "src=d").expect("tamper");
    let mut send = m
        .cmd(&["send", "-m", "a", "/n/c/svc/echo"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mesh send");
    {
        use std::io::Write;
        let mut stdin = send.stdin.take().expect("stdin");
        let _ = stdin.write_all(b"as-d\n");
    }
    until("c's ctl tells the forgery", T, || ctl().contains("refused from d via b: data /n/c/svc/echo"));
    let _ = send.kill();
    let _ = send.wait();

    // An honest relay again: the same sessions go on.
    std::fs::write(&tamper, "").expect("tamper");
    assert_eq!(m.ok(&["send", "-m", "a", "/n/c/svc/echo"], "again\n"), "again\n");
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).expect("urandom");
    u64::from_ne_bytes(b)
}
