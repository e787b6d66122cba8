//! Network namespaces for tests that cut links for real: each machine in
//! a namespace of its own, veth pairs between them, `ip link set down` to
//! cut one, as a pulled cable would.
//!
//! [`Netns`] owns the namespaces and deletes them when dropped, on
//! success or on panic, which removes their veths too; namespaces left by
//! a test process killed outright are deleted by the next one. Their
//! names hold the test process's pid, so tests running at once never
//! share one. [`Mesh::up_in`] starts a machine's router inside its
//! namespace with `nsenter --net`: only the network is another, so its
//! FUSE mount stays visible and its local socket reachable from the test
//! (the [`Mesh`] kills it like any child).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{mesh_bin, sh, Mesh};

/// What every namespace name starts with, then the pid.
const PREFIX: &str = "meshtest";

/// How long one `ip` command may take.
const IP_LIMIT: Duration = Duration::from_secs(20);

/// The namespaces of one test, one per machine.
pub struct Netns {
    /// `PREFIX<pid>-<tag>-`: with a machine's id, its namespace.
    stem: String,
    made: Vec<String>,
}

/// Runs `ip ARGS`; panics with what it said if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
}

impl Netns {
    /// Why namespaces cannot be made here (not root, no `ip` or
    /// `nsenter`, or a container that forbids them), or `None` when they
    /// can.
    pub fn unavailable() -> Option<String> {
        if !nix::unistd::geteuid().is_root() {
            return Some("network namespaces need root".into());
        }
        for tool in ["ip", "nsenter"] {
            let found = Command::new(tool).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
            if !found {
                return Some(format!("`{tool}` is missing (iproute2, util-linux)"));
            }
        }
        let probe = format!("{PREFIX}{}-probe", std::process::id());
        let out = Command::new("ip").args(["netns", "add", &probe]).stdin(Stdio::null()).output();
        let _ = Command::new("ip").args(["netns", "del", &probe]).stderr(Stdio::null()).status();
        match out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!("ip netns add: {}", String::from_utf8_lossy(&o.stderr).trim())),
            Err(e) => Some(format!("ip netns add: {e}")),
        }
    }

    /// A namespace for each of `machines`, loopback up in each.
    pub fn new(tag: &str, machines: &[&str]) -> Netns {
        Netns::remove_stale();
        let mut net = Netns { stem: format!("{PREFIX}{}-{tag}-", std::process::id()), made: Vec::new() };
        for m in machines {
            let name = net.name(m);
            ip(&["netns", "add", &name]);
            net.made.push(name.clone());
            ip(&["-n", &name, "link", "set", "lo", "up"]);
        }
        net
    }

    /// The namespace of machine `m`.
    pub fn name(&self, m: &str) -> String {
        format!("{}{m}", self.stem)
    }

    /// Links `x` and `y` with a veth pair, `to-y` in x and `to-x` in y,
    /// addressed `10.77.NET.1/24` in x and `10.77.NET.2/24` in y; returns
    /// the two addresses.
    pub fn link(&self, x: &str, y: &str, net: u8) -> (String, String) {
        let (nx, ny) = (self.name(x), self.name(y));
        let (ix, iy) = (format!("to-{y}"), format!("to-{x}"));
        ip(&["-n", &nx, "link", "add", &ix, "type", "veth", "peer", "name", &iy, "netns", &ny]);
        let (ax, ay) = (format!("10.77.{net}.1"), format!("10.77.{net}.2"));
        ip(&["-n", &nx, "addr", "add", &format!("{ax}/24"), "dev", &ix]);
        ip(&["-n", &ny, "addr", "add", &format!("{ay}/24"), "dev", &iy]);
        ip(&["-n", &nx, "link", "set", &ix, "up"]);
        ip(&["-n", &ny, "link", "set", &iy, "up"]);
        (ax, ay)
    }

    /// Shapes what `x` sends to `y` to `mbit` megabits a second (a token
    /// bucket, `tc qdisc ... tbf`, holding at most 400 ms of queue): a
    /// slow link. This kernel has `tbf`, not `netem`; delay comes from
    /// [`crate::relay::Relay::delayed`].
    pub fn shape(&self, x: &str, y: &str, mbit: u32) {
        let (ns, dev) = (self.name(x), format!("to-{y}"));
        let rate = format!("{mbit}mbit");
        let args = ["netns", "exec", &ns, "tc", "qdisc", "add", "dev", &dev, "root", "tbf", "rate", &rate];
        ip(&[&args[..], &["burst", "32kbit", "latency", "400ms"]].concat());
    }

    /// Sets `x`'s end of its link to `y` down (the link is cut) or up.
    pub fn set_link(&self, x: &str, y: &str, up: bool) {
        ip(&["-n", &self.name(x), "link", "set", &format!("to-{y}"), if up { "up" } else { "down" }]);
    }

    /// Deletes namespaces of test processes that no longer run.
    fn remove_stale() {
        let (_, list, _) = sh("ip netns list", IP_LIMIT);
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()) else { continue };
            let Ok(pid) = pid.parse::<i32>() else { continue };
            let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
            if !alive {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Routers still inside keep a namespace alive until they exit;
        // deleting its name is all that is ours to do.
        for name in &self.made {
            let _ =
                Command::new("ip").args(["netns", "del", name]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
    }
}

impl Mesh {
    /// Starts machine `id` of `deploy` as its own `mesh up` process,
    /// inside `id`'s namespace of `net`.
    pub fn up_in(&mut self, net: &Netns, deploy: &Path, id: &str) {
        self.up_in_as(net, deploy, id, id);
    }

    /// [`Mesh::up_in`], the child named `name`: a machine started again
    /// after its first process was killed.
    pub fn up_in_as(&mut self, net: &Netns, deploy: &Path, id: &str, name: &str) {
        let d = deploy.to_str().expect("utf-8 path");
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", net.name(id))).arg("--").arg(mesh_bin());
        c.args(["up", d, "-m", id, "-v"]);
        self.spawn_command(name, c);
    }
}
