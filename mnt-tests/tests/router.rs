//! Three real `mesh up` processes on 127.0.0.1, .2 and .3: a -tcp- b -ws- c.
//! What a user does with `mesh send`, `mesh serve` and `mesh routes`, and
//! what bad input does to a running mesh.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mnt_tests::{until, Deploy, Mesh, Started};

const T: Duration = Duration::from_secs(20);

/// The three machines: a dials b over tcp, b dials c over ws; upper is an
/// exec service on c, two hops from a; b keeps the registry.
fn abc() -> Deploy {
    Deploy::abc()
        .set("a", r#"registry = "b""#)
        .service("a", r#"{ name = "rev", kind = "exec", command = ["rev"] }"#)
        .service("b", r#"{ name = "registry", kind = "registry" }"#)
        .set("c", r#"registry = "b""#)
        .service("c", r#"{ name = "upper", kind = "exec", command = ["tr", "a-z", "A-Z"] }"#)
        .service("c", r#"{ name = "echo", kind = "echo" }"#)
        .service("c", r#"{ name = "sink", kind = "sink" }"#)
}

fn start(m: &mut Mesh) -> Started {
    let started = m.start("abc.toml", &abc());
    until("a routes to upper over two hops", T, || m.routes("a").contains("upper c net-b 2 a!b!c\n"));
    started
}

#[test]
fn three_processes_over_tcp_and_ws() {
    let mut m = Mesh::new();
    let started = start(&mut m);
    let (pb, pc) = (started.port("b"), started.port("c"));
    let routes = m.ok(&["routes", "-m", "a"], "");
    assert!(routes.contains("registry b net-b 1 a!b\n"), "{routes}");
    assert!(routes.contains("rev a local 0 a\n"), "{routes}");
    // Two hops each way, through a tcp and a ws link.
    assert_eq!(m.ok(&["send", "-m", "a", "/svc/upper"], "hello\n"), "HELLO\n");
    assert_eq!(m.ok(&["send", "-m", "a", "/n/c/svc/upper"], "one\ntwo\n"), "ONE\nTWO\n");
    // From c, the far end: a's rev is two hops back.
    assert_eq!(m.ok(&["send", "-m", "c", "/svc/rev"], "abc\n"), "cba\n");
    // The hairpin: c's upper replies to a's rev, whose output comes home.
    assert_eq!(m.ok(&["send", "-m", "a", "/svc/upper", "--reply-to", "/n/a/svc/rev"], "hello\n"), "OLLEH\n");
    // The probes, two hops away: what goes out comes back, or is counted.
    assert_eq!(m.ok(&["send", "-m", "a", "/n/c/svc/echo"], "ping\n"), "ping\n");
    assert_eq!(m.ok(&["send", "-m", "a", "/n/c/svc/sink"], &"x".repeat(100_000)), "100000");
    // The links are what the file says.
    assert_eq!(m.ok(&["cat", "-m", "a", "/term/net-b/ctl"], ""), format!("net tcp!127.0.0.2!{pb} up\n"));
    assert_eq!(m.ok(&["cat", "-m", "b", "/term/net-c/ctl"], ""), format!("net ws!127.0.0.3!{pc} up\n"));
    assert_eq!(m.ok(&["ls", "-m", "a", "/svc"], ""), "echo\nregistry\nrev\nsink\nupper\n");
    assert_eq!(m.ok(&["ls", "-m", "b", "/term"], ""), "local\nloopback\nnet-a\nnet-c\n");
    assert_eq!(m.ok(&["cat", "-m", "c", "/svc/upper/info"], ""), "c local 0 c\n");
    let status = m.ok(&["cat", "-m", "b", "/term/net-c/status"], "");
    assert!(status.contains("errors 0"), "{status}");
}

#[test]
fn serve_attaches_a_service_from_another_process() {
    let mut m = Mesh::new();
    start(&mut m);
    let t0 = Instant::now();
    m.spawn("shout", &["serve", "-m", "b", "shout", "--", "tr", "a-z", "A-Z"]);
    until("a routes to shout", T, || m.ok(&["routes", "-m", "a"], "").contains("shout b net-b 1 a!b\n"));
    eprintln!("shout routable from a after {:?}", t0.elapsed());
    assert_eq!(m.ok(&["send", "-m", "a", "/svc/shout"], "from a\n"), "FROM A\n");
    assert_eq!(m.ok(&["send", "-m", "c", "/svc/shout"], "from c\n"), "FROM C\n");
    // The serving process goes: so does the route, everywhere.
    m.signal("shout", nix::sys::signal::Signal::SIGTERM);
    assert!(m.wait_exit("shout", T).is_some_and(|s| s.success()));
    until("shout withdrawn at a", T, || !m.ok(&["routes", "-m", "a"], "").contains("shout"));
    let err = m.fails(&["send", "-m", "a", "/svc/shout"], "x\n");
    assert!(err.contains("no such service: shout"), "{err}");
}

#[test]
fn bad_input_gets_clear_errors() {
    let mut m = Mesh::new();
    let pb = start(&mut m).port("b");
    let err = m.fails(&["send", "-m", "a", "/svc/nope"], "x\n");
    assert!(err.contains("/svc/nope: no such service: nope"), "{err}");
    let err = m.fails(&["send", "-m", "a", "/n/zz/svc/upper"], "x\n");
    assert!(err.contains("no route to machine: zz"), "{err}");
    let err = m.fails(&["send", "-m", "a", "svc/upper"], "x\n");
    assert!(err.contains("bad path \"svc/upper\""), "{err}");
    let err = m.fails(&["send", "--router", "tcp!127.0.0.1", "/svc/upper"], "x\n");
    assert!(err.contains("bad dial string \"tcp!127.0.0.1\""), "{err}");
    let err = m.fails(&["routes", "-m", "nosuch"], "");
    assert!(err.contains("cannot reach the router"), "{err}");
    let err = m.fails(&["routes"], "");
    assert!(err.contains("several routers run here (a b c)"), "{err}");

    // A peer speaking garbage loses its own link; b serves everyone else.
    let garbage = |bytes: &[u8]| {
        let mut s = TcpStream::connect(("127.0.0.2", pb)).expect("connect to b");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(bytes).unwrap();
        let mut buf = [0u8; 64];
        // b closes the connection: read returns 0 or an error, never hangs.
        let n = s.read(&mut buf);
        assert!(matches!(n, Ok(0) | Err(_)), "b kept a garbage link open: {n:?}");
    };
    garbage(b"\x00\x00\x00\x05hello");
    garbage(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3]);
    garbage(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(m.ok(&["send", "-m", "a", "/svc/upper"], "still here\n"), "STILL HERE\n");
    let log = m.log("b");
    assert!(log.contains("refused"), "b logged the refusals:\n{log}");
}

#[test]
fn bad_deployment_files_name_key_and_line() {
    let m = Mesh::new();
    let f = m.file("bad.toml", "[machines.a]\nlisen = [\"tcp!127.0.0.1!1\"]\n");
    let err = m.fails(&["up", f.to_str().unwrap()], "");
    assert!(err.contains("bad.toml:2: machines.a.lisen: unknown key"), "{err}");
    let f = m.file("bad2.toml", "[machines.a]\nlisten = [\"tcp!127.0.0.1\"]\n");
    let err = m.fails(&["up", f.to_str().unwrap()], "");
    assert!(err.contains("bad2.toml:2: machines.a.listen[0]"), "{err}");
    assert!(err.contains("bad dial string"), "{err}");
    let f = m.file("bad3.toml", "[machines.a]\nservices = [ { name = \"x\", kind = \"teleport\" } ]\n");
    let err = m.fails(&["up", f.to_str().unwrap()], "");
    assert!(err.contains("bad3.toml:2: machines.a.services[0].kind"), "{err}");
}

#[test]
fn up_stops_cleanly_on_signals() {
    for sig in [nix::sys::signal::Signal::SIGINT, nix::sys::signal::Signal::SIGTERM] {
        let mut m = Mesh::new();
        m.start("b.toml", &Deploy::new().machine("b", 2).service("b", r#"{ name = "registry", kind = "registry" }"#));
        let sock = m.dir.path().join("mesh/b.sock");
        until("b's socket", T, || sock.exists());
        m.signal("b", sig);
        let st = m.wait_exit("b", T);
        assert!(st.is_some_and(|s| s.success()), "{sig}: {st:?}\n{}", m.log("b"));
        assert!(!sock.exists(), "{sig}: socket left behind");
    }
}

#[test]
fn a_refused_link_shows_in_its_terminal() {
    let mut m = Mesh::new();
    // The same mesh from two files: each file's machines get their own
    // host-made keys, so a and b do not know each other's.
    let deploy = Deploy::new().machine("a", 1).machine("b", 2).dial("a", "b");
    let pb = m.with_ports(2, |m, ports| {
        let text = deploy.render(m.dir.path(), ports);
        let (one, two) = (m.file("one.toml", &text), m.file("two.toml", &text));
        m.up(&one, "b");
        m.up(&two, "a");
        ports[1]
    });
    until("a shows net-b refused", T, || {
        m.run(&["cat", "-m", "a", "/term/net-b/ctl"], "").stdout.ends_with(b"refused\n")
    });
    let ctl = m.ok(&["cat", "-m", "a", "/term/net-b/ctl"], "");
    assert_eq!(ctl, format!("net tcp!127.0.0.2!{pb} refused\n"));
    let status = m.ok(&["cat", "-m", "a", "/term/net-b/status"], "");
    // The refusal names the address and the key's fingerprint.
    let line = status.lines().find(|l| l.starts_with("refused ")).unwrap_or_else(|| panic!("{status}"));
    assert!(line.contains(&format!("tcp!127.0.0.2!{pb}")) && line.contains("unknown key "), "{line}");
    let ctl = m.ok(&["cat", "-m", "a", "/ctl"], "");
    assert!(ctl.contains("event refused unknown key ") && ctl.contains(&format!("from tcp!127.0.0.2!{pb}")), "{ctl}");
    // Nothing crossed: no route to b.
    assert!(!m.routes("a").contains(" b "));
}
