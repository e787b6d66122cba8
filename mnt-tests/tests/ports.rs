//! Ports for routers: a router whose port another process took first is
//! started again with fresh ports, instead of failing the test with
//! "Address already in use".

use std::net::TcpListener;
use std::time::Duration;

use mnt_tests::{port, until, Deploy, Mesh};

#[test]
fn a_taken_port_is_replaced_by_a_fresh_one() {
    let mut m = Mesh::new();
    // The next port this process hands out (blocks of 100 from a multiple
    // of 100), taken by someone else.
    let p = port();
    let taken = if p % 100 == 99 { p - 99 } else { p + 1 };
    let _squatter = TcpListener::bind(("127.0.0.1", taken)).expect("bind the port to take");
    let deploy = Deploy::new()
        .machine("a", 1)
        .machine("b", 2)
        .dial("a", "b")
        .service("b", r#"{ name = "echo", kind = "exec", command = ["cat"] }"#);
    let started = m.start("ab.toml", &deploy);
    let (pa, pb) = (started.port("a"), started.port("b"));
    assert_ne!(pa, taken, "a was given the taken port");
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let ephemeral: u16 = range.split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(32768);
    assert!(pa < ephemeral && pb < ephemeral, "ports {pa} {pb} in the kernel's ephemeral range ({range})");
    until("a routes to b's echo", Duration::from_secs(20), || m.routes("a").contains("echo b net-b 1"));
    let file = std::fs::read_to_string(&started.file).expect("deployment file");
    assert!(file.contains(&format!("tcp!127.0.0.1!{pa}")) && !file.contains(&format!("!{taken}\"")), "{file}");
}
