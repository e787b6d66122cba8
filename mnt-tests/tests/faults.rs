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
