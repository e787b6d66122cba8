//! Faults with real processes: a router killed hard, and restarted.
//!
//! Times are measured and printed; the bounds asserted are generous (a
//! fault must be noticed rather than hang), not speeds, so a busy machine
//! does not fail them.

use std::path::Path;
use std::time::{Duration, Instant};

use mnt_tests::{sh, until, Deploy, Mesh};

const T: Duration = Duration::from_secs(20);

#[test]
fn a_dead_peer_is_noticed_and_comes_back() {
    let mut m = Mesh::new();
    let dir = m.dir.path().to_path_buf();
    let deploy =
        Deploy::abc().mount("a").mount("b").service("c", r#"{ name = "echo", kind = "exec", command = ["cat"] }"#);
    let deploy = m.start("abc.toml", &deploy).file;
    let a = dir.join("a");
    until("echo at a", T, || a.join("svc/echo").exists());
    // A conversation with c's service, two hops away, its reader blocked.
    let script = format!("exec 3<>{}/svc/echo/data; echo x >&3; cat <&3", a.display());
    let mut reader = std::process::Command::new("bash")
        .args(["-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    m.signal("c", nix::sys::signal::Signal::SIGKILL);
    let t0 = Instant::now();
    // b dials c, so its net-c stays, no longer up: down, then dialing.
    let up = || String::from_utf8_lossy(&m.run(&["cat", "-m", "b", "/term/net-c/ctl"], "").stdout).ends_with(" up\n");
    until("b notices c is gone", T, || !up());
    let noticed = t0.elapsed();
    until("a withdraws c's routes", T, || !a.join("svc/echo").exists());
    let withdrawn = t0.elapsed();
    eprintln!("c killed: b noticed after {noticed:?}, a withdrew after {withdrawn:?}");
    // The blocked reader gets an error instead of hanging.
    let t1 = Instant::now();
    let st = loop {
        if let Some(st) = reader.try_wait().unwrap() {
            break st;
        }
        assert!(t1.elapsed() < T, "reader still blocked");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!st.success(), "the reader saw an error");
    // c's tree is gone from a: reads fail at once (no route), they do not
    // wait for anything.
    let t2 = Instant::now();
    let (st, _, err) = sh(&format!("cat {}/n/c/machine", a.display()), T);
    assert!(!st.success() && t2.elapsed() < Duration::from_secs(8), "{err} after {:?}", t2.elapsed());
    // The survivors' trees still work.
    assert_eq!(std::fs::read_to_string(a.join("n/b/machine")).unwrap(), "b\n");

    // c comes back: b redials it, and its service reappears everywhere.
    m.up(&deploy, "c");
    until("echo back at a", T, || a.join("svc/echo").exists());
    // The kernel may keep the miss of `n/c` from the read above for the
    // tree's short time to live.
    until("c's tree back at a", T, || Path::new(&a.join("n/c")).exists());
    let (st, out, _) =
        sh(&format!("exec 3<>{}/svc/echo/data; echo back >&3; head -n1 <&3 2>/dev/null", a.display()), T);
    assert!(st.success() && out == "back\n", "{out}");
}

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

#[test]
fn a_slow_reader_slows_its_writer_with_bounded_memory() {
    let mut m = Mesh::new();
    // c's sink reads at 100 MB/s, however fast it is written.
    let pace = "import sys, time\nt = time.time(); n = 0\nwhile True:\n    b = sys.stdin.buffer.read(1 << 20)\n    if not b: break\n    n += len(b)\n    ahead = n / 100e6 - (time.time() - t)\n    if ahead > 0: time.sleep(ahead)\nprint(n)\n";
    m.start(
        "abc.toml",
        &Deploy::abc()
            .service("c", &format!(r#"{{ name = "sink", kind = "exec", command = ["python3", "-c", {pace:?}] }}"#)),
    );
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
    // a links to both b and c; `who` runs on both and says where.
    let deploy = Deploy::new()
        .machine("a", 1)
        .machine("b", 2)
        .machine("c", 3)
        .dial("a", "b")
        .dial("a", "c")
        .service("b", r#"{ name = "who", kind = "exec", command = ["echo", "b"] }"#)
        .service("c", r#"{ name = "who", kind = "exec", command = ["echo", "c"] }"#);
    m.start("abc.toml", &deploy);
    let routes = || m.routes("a");
    until("both replicas routable", T, || routes().lines().filter(|l| l.starts_with("who ")).count() == 2);
    // Equal hops: the tie goes to the smaller machine id.
    assert_eq!(m.ok(&["send", "-m", "a", "/svc/who"], ""), "b\n");
    m.signal("b", nix::sys::signal::Signal::SIGKILL);
    let t0 = Instant::now();
    until("b's replica withdrawn", T, || !routes().contains("who b "));
    let took = t0.elapsed();
    eprintln!("replica on b killed: withdrawn at a after {took:?}");
    assert_eq!(m.ok(&["send", "-m", "a", "/svc/who"], ""), "c\n", "new conversations go to c");
}

#[test]
fn a_silent_link_cut_fails_what_crossed_it_and_reroutes() {
    let mut m = Mesh::new();
    let dir = m.dir.path().to_path_buf();
    // A triangle; a reaches c directly through a relay that can go silent.
    let deploy = Deploy::new()
        .machine("a", 1)
        .machine("b", 2)
        .machine("c", 3)
        .dial("a", "b")
        .dial_relayed("a", "c")
        .dial("b", "c")
        .mount("a")
        .mount("c")
        .service("c", r#"{ name = "echo", kind = "exec", command = ["cat"] }"#);
    // Links that do not resume: a cut for good (resume.rs has the cuts a
    // session outlives).
    let deploy = ["a", "b", "c"].iter().fold(deploy, |d, id| d.set(id, "resume = \"0s\""));
    let started = m.start("tri.toml", &deploy);
    let relay = started.relay("a", "c");
    let (a, c) = (dir.join("a"), dir.join("c"));
    until("echo one hop from a", T, || m.routes("a").contains("echo c net-c 1"));
    // A conversation on the direct link: one round trip, then it waits
    // for the cut and reads again.
    let (ready, cut) = (dir.join("ready"), dir.join("cut"));
    let script = format!(
        "exec 3<>{a}/svc/echo/data; echo x >&3; read l <&3; touch {ready}; while [ ! -e {cut} ]; do sleep 0.02; done; echo y >&3; cat <&3",
        a = a.display(),
        ready = ready.display(),
        cut = cut.display()
    );
    let mut conv = std::process::Command::new("bash")
        .args(["-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    until("first round trip", T, || ready.exists());
    let conv_dirs = || {
        std::fs::read_dir(c.join("svc/echo"))
            .map(|d| {
                d.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().parse::<u64>().is_ok()).count()
            })
            .unwrap_or(0)
    };
    assert_eq!(conv_dirs(), 1, "c serves the conversation");

    relay.freeze();
    let t0 = Instant::now();
    std::fs::write(&cut, "").unwrap();
    // The conversation that crossed the link fails instead of hanging.
    let st = loop {
        if let Some(st) = conv.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < T, "the conversation still hangs");
        std::thread::sleep(Duration::from_millis(20));
    };
    let failed = t0.elapsed();
    let mut err = String::new();
    std::io::Read::read_to_string(conv.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!st.success(), "the reader saw an error");
    // Routes move to b, and new conversations go through it.
    until("echo through b", T, || m.routes("a").contains("echo c net-b 2"));
    let rerouted = t0.elapsed();
    // Until c notices the cut too, its answers still take the dead link,
    // and a conversation opened meanwhile fails with `link lost` when c
    // does (adversary::cut checks that window); after, they go round.
    let c_up = || std::fs::read_to_string(c.join("term/net-a/ctl")).is_ok_and(|t| t.contains(" up"));
    until("c notices the cut", T, || !c_up());
    let out = mnt_tests::sh_ok(&format!("exec 3<>{}/svc/echo/data; echo z >&3; head -n1 <&3", a.display()), T);
    assert_eq!(out, "z\n");
    // c's end of the old conversation is gone too.
    until("c ends both conversations", T, || conv_dirs() == 0);
    eprintln!("silent cut: conversation failed after {failed:?} ({}), rerouted after {rerouted:?}", err.trim());

    // The link comes back: a redials through the relay, the route returns.
    relay.thaw();
    until("direct route back", T, || m.routes("a").contains("echo c net-c 1"));
}

#[test]
fn a_dead_registry_leaves_gossip_working_and_its_routes_expire() {
    let mut m = Mesh::new();
    // a knows routes only from the registry on r; b and c gossip.
    let deploy = Deploy::new()
        .machine("r", 4)
        .machine("a", 1)
        .machine("b", 2)
        .machine("c", 3)
        .dial("a", "b")
        .dial("a", "r")
        .set("a", "gossip = false")
        .set("a", r#"registry = "r""#)
        .dial("b", "r")
        .set("b", r#"registry = "r""#)
        .service("b", r#"{ name = "echo", kind = "exec", command = ["cat"] }"#)
        .dial("c", "b")
        .service("r", r#"{ name = "registry", kind = "registry" }"#);
    m.start("reg.toml", &deploy);
    until("a learns echo from the registry", T, || m.routes("a").contains("echo b net-b 1"));
    until("c learns echo by gossip", T, || m.routes("c").contains("echo b net-b 1"));
    assert!(m.ok(&["cat", "-m", "a", "/ctl"], "").contains("registry r reachable"));

    m.signal("r", nix::sys::signal::Signal::SIGKILL);
    let t0 = Instant::now();
    until("a's ctl says the registry is unreachable", T, || {
        m.ok(&["cat", "-m", "a", "/ctl"], "").contains("registry r unreachable")
    });
    let unreachable = t0.elapsed();
    // Asked with `ok`: a failed command must not pass for an empty table.
    until("a's registry routes expire", T, || !m.ok(&["routes", "-m", "a"], "").contains("echo "));
    let expired = t0.elapsed();
    eprintln!("registry killed: unreachable at a after {unreachable:?}, its routes expired after {expired:?}");
    // Routes are kept until they expire (three periods after the last
    // list, 1-1.5 s), not dropped the moment the registry goes.
    assert!(expired > Duration::from_millis(800), "{expired:?}; a's ctl:\n{}", m.ok(&["cat", "-m", "a", "/ctl"], ""));
    // Gossip never depended on the registry.
    assert!(m.routes("c").contains("echo b net-b 1"));
    assert_eq!(m.ok(&["send", "-m", "c", "/svc/echo"], "still\n"), "still\n");
}
