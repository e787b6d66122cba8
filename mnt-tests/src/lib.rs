//! Helpers for tests that run real `mesh` processes: several machines on
//! loopback addresses, each test in its own runtime directory and ports.
//!
//! Everything a test starts is owned by a guard: dropping it, on success
//! or on panic, kills every child and removes every file, and a failing
//! test prints the routers' logs. [`Deploy`] writes the deployment files
//! and [`Mesh::start`] starts them, with ports that work (see [`deploy`]).
//! [`netns`] puts machines in network namespaces of their own, for links
//! cut for real.

pub mod deploy;
pub mod netns;
pub mod relay;
pub mod users;

pub use deploy::{Deploy, Started};

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// The `mesh` binary, built once if the test run has not built it.
pub fn mesh_bin() -> PathBuf {
    static BUILD: Once = Once::new();
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/TEST -> target/<profile>/mesh
    let bin = exe.parent().and_then(Path::parent).expect("target dir").join("mesh");
    BUILD.call_once(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
        // Without what cargo sets for this test's own package: ring's
        // build script reruns when CARGO_MANIFEST_DIR changes, which would
        // rebuild half the tree here and again at the next outer build.
        let own = |k: &str| {
            k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_MANIFEST_")
                || ["CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR"].contains(&k)
        };
        let mut build = Command::new(env!("CARGO"));
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(own) {
                build.env_remove(k);
            }
        }
        let ok = build.args(["build", "-q", "-p", "mesh"]).current_dir(root).status().is_ok_and(|s| s.success());
        assert!(ok, "cargo build -p mesh failed");
    });
    bin
}

/// The first port below the kernel's ephemeral range, and the first port
/// we use: from 10000 up to the range, so outgoing connections (which take
/// their ports from the range) never take a port a test picked.
const PORTS_FROM: u16 = 10000;

/// A port for a router to listen on, that no other test of this process
/// uses: each test process takes a block of 100 derived from its pid, each
/// call the next port in it, all below the kernel's ephemeral range.
/// Another process may still bind it first: start routers with
/// [`Mesh::start`] or [`Mesh::with_ports`], which try again with fresh ones.
pub fn port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let blocks = (ephemeral.saturating_sub(PORTS_FROM) / 100).max(1);
    let base = PORTS_FROM + (std::process::id() % blocks as u32) as u16 * 100;
    base + NEXT.fetch_add(1, Ordering::Relaxed) % 100
}

/// A group of mesh processes sharing a runtime directory.
pub struct Mesh {
    pub dir: tempfile::TempDir,
    children: Vec<(String, Child)>,
    /// Environment of the routers `up` starts: (machine, name, value).
    pub envs: Vec<(String, String, String)>,
}

impl Mesh {
    pub fn new() -> Mesh {
        Mesh { dir: tempfile::tempdir().expect("tempdir"), children: Vec::new(), envs: Vec::new() }
    }

    /// Writes `text` to a file in the test directory; returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write test file");
        p
    }

    /// A `mesh` command in this group's environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(mesh_bin());
        c.args(args);
        self.env(&mut c);
        c
    }

    /// Sockets and host-made keys stay inside the test's directory.
    fn env(&self, c: &mut Command) {
        c.env("XDG_RUNTIME_DIR", self.dir.path())
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env_remove("RUST_LOG");
    }

    /// Starts `mesh ARGS` in the background; its output goes to a log file.
    pub fn spawn(&mut self, name: &str, args: &[&str]) {
        self.spawn_command(name, self.cmd(args));
    }

    /// Starts `c` (which runs `mesh`) in the background in this group's
    /// environment, as child `name`; its output goes to a log file.
    pub fn spawn_command(&mut self, name: &str, mut c: Command) {
        let log = std::fs::File::create(self.log_path(name)).expect("log file");
        self.env(&mut c);
        let child =
            c.stdin(Stdio::null()).stdout(log.try_clone().expect("log file")).stderr(log).spawn().expect("spawn mesh");
        self.children.push((name.to_string(), child));
    }

    /// Starts machine `id` of `deploy` as its own `mesh up` process.
    pub fn up(&mut self, deploy: &Path, id: &str) {
        let d = deploy.to_str().expect("utf-8 path");
        let mut c = self.cmd(&["up", d, "-m", id, "-v"]);
        for (_, k, v) in self.envs.iter().filter(|(m, _, _)| m == id) {
            c.env(k, v);
        }
        self.spawn_command(id, c);
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// Sends a signal to child `name`.
    pub fn signal(&self, name: &str, sig: nix::sys::signal::Signal) {
        if let Some((_, c)) = self.children.iter().find(|(n, _)| n == name) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// The pid of child `name`.
    pub fn pid(&self, name: &str) -> u32 {
        self.children.iter().find(|(n, _)| n == name).map(|(_, c)| c.id()).expect("no such child")
    }

    /// Waits for child `name` to exit, at most `limit`.
    pub fn wait_exit(&mut self, name: &str, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        let (_, c) = self.children.iter_mut().find(|(n, _)| n == name)?;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Runs `mesh ARGS` with `input` on its standard input, at most 20 s.
    pub fn run(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mesh");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("write stdin");
        drop(stdin);
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("mesh {args:?} (pid {pid}) ran over 20 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait_with_output().expect("output")
    }

    /// Machine `id`'s route table; empty while its router is not up yet.
    pub fn routes(&self, id: &str) -> String {
        String::from_utf8_lossy(&self.run(&["routes", "-m", id], "").stdout).into_owned()
    }

    /// Standard output of a command that must succeed.
    pub fn ok(&self, args: &[&str], input: &str) -> String {
        let out = self.run(args, input);
        assert!(out.status.success(), "mesh {args:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Standard error of a command that must fail.
    pub fn fails(&self, args: &[&str], input: &str) -> String {
        let out = self.run(args, input);
        assert!(!out.status.success(), "mesh {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Default for Mesh {
    fn default() -> Self {
        Mesh::new()
    }
}

/// Ends a child: SIGTERM, so a router unmounts, then SIGKILL at `deadline`.
fn stop(c: &mut Child, deadline: Instant) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
    while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for (_, c) in &mut self.children {
            stop(c, deadline);
        }
        if std::thread::panicking() {
            for (name, _) in &self.children {
                eprintln!("----- log of {name} -----\n{}", self.log(name));
            }
        }
        // A router killed hard leaves its mount behind: detach every mount
        // under this test's directory.
        for m in mounts_under(self.dir.path()) {
            let _ = nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Processes a test starts beside the mesh, killed however it ends.
pub struct Kids(pub Vec<Child>);

impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A process stopped (SIGSTOP) while this lives, continued however the
/// test ends: a stopped router or FUSE server would hold every mount and
/// reader that waits on it.
pub struct Stopped(u32);

impl Stopped {
    pub fn new(pid: u32) -> Stopped {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGSTOP)
            .expect("SIGSTOP");
        Stopped(pid)
    }

    /// Stopped, and continued after `limit` at the latest, so that a test
    /// whose work waits on it after all fails on what it measured rather
    /// than by hanging.
    pub fn at_most(pid: u32, limit: Duration) -> Stopped {
        let s = Stopped::new(pid);
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            continue_(pid);
        });
        s
    }
}

fn continue_(pid: u32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGCONT);
}

impl Drop for Stopped {
    fn drop(&mut self) {
        continue_(self.0);
    }
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> =
        info.lines().filter_map(|l| l.split(' ').nth(4)).map(PathBuf::from).filter(|p| p.starts_with(dir)).collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v
}

/// Prints a measurement, and appends it to `target/tmp/adversary-measured.txt`,
/// which CI prints after the tests.
pub fn measured(line: &str) {
    eprintln!("measured: {line}");
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/TEST -> target/tmp
    let Some(target) = exe.ancestors().nth(3) else { return };
    let _ = std::fs::create_dir_all(target.join("tmp"));
    if let Ok(mut f) =
        std::fs::OpenOptions::new().create(true).append(true).open(target.join("tmp/adversary-measured.txt"))
    {
        let _ = writeln!(f, "measured: {line}");
    }
}

/// Runs `bash -c SCRIPT` with a time limit; returns (status, stdout, stderr).
pub fn sh(script: &str, limit: Duration) -> (std::process::ExitStatus, String, String) {
    let mut child = Command::new("bash")
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn bash");
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            // The whole group: bash and what it started.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let out = child.wait_with_output().expect("output");
            panic!(
                "script ran over {limit:?}:\n{script}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `sh` that must succeed; returns stdout.
pub fn sh_ok(script: &str, limit: Duration) -> String {
    let (st, out, err) = sh(script, limit);
    assert!(st.success(), "script failed ({st}):\n{script}\nstdout: {out}\nstderr: {err}");
    out
}

/// Polls `cond` every 50 ms until it holds; panics after `limit`.
pub fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}
