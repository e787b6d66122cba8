//! Faults with real processes: a router killed hard, and restarted.

use std::path::Path;
use std::time::{Duration, Instant};

use mnt_tests::{port, sh, until, Mesh};

const T: Duration = Duration::from_secs(20);

#[test]
fn a_dead_peer_is_noticed_and_comes_back() {
    let mut m = Mesh::new();
    let dir = m.dir.path().to_path_buf();
    let d = dir.display();
    let (pa, pb, pc) = (port(), port(), port());
    let deploy = m.file(
        "abc.toml",
        &format!(
            r#"
[machines.a]
listen = ["tcp!127.0.0.1!{pa}"]
dial = ["tcp!127.0.0.2!{pb}"]
mount = "{d}/a"

[machines.b]
listen = ["tcp!127.0.0.2!{pb}"]
dial = ["ws!127.0.0.3!{pc}"]
mount = "{d}/b"

[machines.c]
listen = ["ws!127.0.0.3!{pc}"]
services = [ {{ name = "echo", kind = "exec", command = ["cat"] }} ]
"#
        ),
    );
    for id in ["a", "b", "c"] {
        m.up(&deploy, id);
    }
    let a = dir.join("a");
    until("echo at a", T, || a.join("svc/echo").exists());
    // A conversation with c's service, two hops away, its reader blocked.
    let script = format!("exec 3<>{}/svc/echo/data; echo x >&3; cat <&3", a.display());
    let mut reader = std::process::Command::new("bash").args(["-c", &script]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    m.signal("c", nix::sys::signal::Signal::SIGKILL);
    let t0 = Instant::now();
    until("b notices c is gone", Duration::from_secs(5), || !dir.join("b/term/net-c").exists());
    let noticed = t0.elapsed();
    until("a withdraws c's routes", Duration::from_secs(5), || !a.join("svc/echo").exists());
    let withdrawn = t0.elapsed();
    eprintln!("c killed: b noticed after {noticed:?}, a withdrew after {withdrawn:?}");
    assert!(noticed < Duration::from_millis(2500), "{noticed:?}");
    // The blocked reader gets an error instead of hanging.
    let t1 = Instant::now();
    let st = loop {
        if let Some(st) = reader.try_wait().unwrap() {
            break st;
        }
        assert!(t1.elapsed() < Duration::from_secs(5), "reader still blocked");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!st.success(), "the reader saw an error");
    // c's tree is gone from a: reads fail at once.
    let t2 = Instant::now();
    let (st, _, err) = sh(&format!("cat {}/n/c/machine", a.display()), T);
    assert!(!st.success() && t2.elapsed() < Duration::from_secs(1), "{err}");
    // The survivors' trees still work.
    assert_eq!(std::fs::read_to_string(a.join("n/b/machine")).unwrap(), "b\n");

    // c comes back: b redials it, and its service reappears everywhere.
    m.up(&deploy, "c");
    until("echo back at a", T, || a.join("svc/echo").exists());
    assert!(Path::new(&a.join("n/c")).exists());
    let (st, out, _) = sh(&format!("exec 3<>{}/svc/echo/data; echo back >&3; head -n1 <&3 2>/dev/null", a.display()), T);
    assert!(st.success() && out == "back\n", "{out}");
}

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()).unwrap_or(0) / 1024
}

#[test]
fn a_slow_reader_slows_its_writer_with_bounded_memory() {
    let mut m = Mesh::new();
    let (pa, pb, pc) = (port(), port(), port());
    // c's sink reads at 100 MB/s, however fast it is written.
    let pace = "import sys, time\nt = time.time(); n = 0\nwhile True:\n    b = sys.stdin.buffer.read(1 << 20)\n    if not b: break\n    n += len(b)\n    ahead = n / 100e6 - (time.time() - t)\n    if ahead > 0: time.sleep(ahead)\nprint(n)\n";
    let deploy = m.file(
        "abc.toml",
        &format!(
            r#"
[machines.a]
listen = ["tcp!127.0.0.1!{pa}"]
dial = ["tcp!127.0.0.2!{pb}"]

[machines.b]
listen = ["tcp!127.0.0.2!{pb}"]
dial = ["ws!127.0.0.3!{pc}"]

[machines.c]
listen = ["ws!127.0.0.3!{pc}"]
services = [ {{ name = "sink", kind = "exec", command = ["python3", "-c", {pace:?}] }} ]
"#
        ),
    );
    for id in ["a", "b", "c"] {
        m.up(&deploy, id);
    }
    until("sink routable from a", T, || m.routes("a").contains("sink c net-b 2"));
    const TOTAL: u64 = 2 << 30;
    let t0 = Instant::now();
    let script = format!("head -c {TOTAL} /dev/zero | {} send -m a /svc/sink", mnt_tests::mesh_bin().display());
    let mut cmd = std::process::Command::new("bash");
    cmd.args(["-c", &script]).env("XDG_RUNTIME_DIR", m.dir.path()).env("XDG_STATE_HOME", m.dir.path().join("state"));
    let out = cmd.output().expect("send");
    let took = t0.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), TOTAL.to_string(), "every byte arrived");
    let rate = TOTAL as f64 / took.as_secs_f64() / 1e6;
    let rss: Vec<(String, u64)> = ["a", "b", "c"].iter().map(|id| (id.to_string(), peak_rss_mib(m.pid(id)))).collect();
    eprintln!("2 GiB through two hops to a 100 MB/s reader: {took:?} ({rate:.0} MB/s); peak RSS MiB: {rss:?}");
    assert!(rate < 110.0, "the writer was not slowed to the reader's pace: {rate:.0} MB/s");
    for (id, mib) in rss {
        assert!(mib > 0 && mib < 200, "router {id} peaked at {mib} MiB");
    }
}

#[test]
fn replicas_fail_over_when_one_dies() {
    let mut m = Mesh::new();
    let (pa, pb, pc) = (port(), port(), port());
    // a links to both b and c; `who` runs on both and says where.
    let deploy = m.file(
        "abc.toml",
        &format!(
            r#"
[machines.a]
listen = ["tcp!127.0.0.1!{pa}"]
dial = ["tcp!127.0.0.2!{pb}", "tcp!127.0.0.3!{pc}"]

[machines.b]
listen = ["tcp!127.0.0.2!{pb}"]
services = [ {{ name = "who", kind = "exec", command = ["echo", "b"] }} ]

[machines.c]
listen = ["tcp!127.0.0.3!{pc}"]
services = [ {{ name = "who", kind = "exec", command = ["echo", "c"] }} ]
"#
        ),
    );
    for id in ["a", "b", "c"] {
        m.up(&deploy, id);
    }
    let routes = || m.routes("a");
    until("both replicas routable", T, || routes().lines().filter(|l| l.starts_with("who ")).count() == 2);
    // Equal hops: the tie goes to the smaller machine id.
    assert_eq!(m.ok(&["send", "-m", "a", "/svc/who"], ""), "b\n");
    m.signal("b", nix::sys::signal::Signal::SIGKILL);
    let t0 = Instant::now();
    until("b's replica withdrawn", Duration::from_secs(5), || !routes().contains("who b "));
    let took = t0.elapsed();
    eprintln!("replica on b killed: withdrawn at a after {took:?}");
    assert_eq!(m.ok(&["send", "-m", "a", "/svc/who"], ""), "c\n", "new conversations go to c");
}
