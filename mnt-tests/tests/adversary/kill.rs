//! Writers blocked on a congested data file, killed, interrupted and hung
//! up on (issue 14, item 2).
//!
//! a and c, linked and both mounted; c serves `stuck`, a process that
//! never reads its input, so a writer on a runs out of the
//! conversation's credit after its 4 MiB window and blocks in the
//! kernel's FUSE write. `kill -9` must end it within seconds (before the
//! fix it stayed in D state until the mount went); SIGINT must end the
//! write with EINTR; `hangup` written to the conversation's ctl on a, or
//! to the ctl of its other end on c, must end the conversation at both
//! ends, the blocked writer getting EPIPE.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mnt_tests::{sh_ok, until, Deploy, Mesh};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::measured;

const T: Duration = Duration::from_secs(20);
/// How soon a blocked writer must be gone after SIGKILL, or see its
/// error: generous, the machine may be busy; before the fix, never.
const PROMPT: Duration = Duration::from_secs(5);

/// Writes 1 MiB at a time with write(2) itself (Python's os.write would
/// retry on EINTR),
/// printing `wrote N` after each and `errno E` for each failure. EINTR
/// (a handled SIGINT) is reported and writing goes on; any other error
/// ends it.
const WRITER: &str = r#"
import ctypes, mmap, os, signal, sys
signal.signal(signal.SIGINT, lambda *a: None)
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.argv[1], os.O_WRONLY)
# Page-aligned, so that each write is one request of 1 MiB, one message.
page = mmap.mmap(-1, 1 << 20)
buf = (ctypes.c_char * (1 << 20)).from_buffer(page)
n = 0
while True:
    r = libc.write(fd, buf, 1 << 20)
    if r < 0:
        e = ctypes.get_errno()
        print('errno', e, flush=True)
        if e != 4:
            break
    else:
        n += 1
        print('wrote', n, flush=True)
"#;

/// A writer process on a data file; killed when dropped, and waited for
/// only briefly: a process stuck in D state cannot be reaped until the
/// mount goes, which the mesh's guard does after this one.
struct Writer {
    child: Child,
    out: PathBuf,
}

impl Writer {
    fn spawn(m: &Mesh, name: &str, file: &Path) -> Writer {
        let script = m.file("writer.py", WRITER);
        let out = m.dir.path().join(format!("{name}.out"));
        let log = std::fs::File::create(&out).expect("writer's output file");
        let child = Command::new("python3")
            .arg(script)
            .arg(file)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn python3");
        Writer { child, out }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn wrote(&self) -> usize {
        self.output().lines().filter(|l| l.starts_with("wrote")).count()
    }

    fn errors(&self) -> Vec<String> {
        self.output().lines().filter_map(|l| l.strip_prefix("errno ")).map(String::from).collect()
    }

    /// Waits until its writes stop going through (a second without one,
    /// past the 4 MiB window: a busy machine may be slow, never blocked
    /// before that); the MiB it wrote.
    fn blocked(&self) -> usize {
        let deadline = Instant::now() + T;
        let (mut last, mut since) = (usize::MAX, Instant::now());
        while Instant::now() < deadline {
            let n = self.wrote();
            if n != last {
                (last, since) = (n, Instant::now());
            } else if n >= 4 && since.elapsed() > Duration::from_secs(1) {
                return n;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the writer never blocked: {}", self.output());
    }

    /// The process's state letter (`S`, `D`, `Z`...), while it exists.
    fn state(&self) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next())
    }

    /// Waits for it to exit, at most `limit`: how long it took, and the
    /// states it was seen in meanwhile (`SZ`: sleeping, then dead).
    fn exited(&mut self, limit: Duration) -> (Option<Duration>, String) {
        let t0 = Instant::now();
        let mut seen = String::new();
        while t0.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return (Some(t0.elapsed()), seen);
            }
            if let Some(s) = self.state().filter(|&s| !seen.ends_with(s)) {
                seen.push(s);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (None, seen)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = kill(self.pid(), Signal::SIGKILL);
        let _ = self.exited(Duration::from_secs(2));
    }
}

/// The conversation numbers listed in `svc/stuck/` of a mounted tree.
fn convs(mnt: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(mnt.join("svc/stuck")) else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.parse::<u64>().is_ok()).collect()
}

/// The one conversation listed on `mnt`.
fn one_conv(mnt: &Path) -> String {
    until("one conversation listed", T, || convs(mnt).len() == 1);
    convs(mnt).remove(0)
}

/// Both ends gone from both trees, within `limit`.
fn ended(a: &Path, c: &Path, what: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    until(&format!("{what}: the conversation gone from a's and c's trees"), limit, || {
        convs(a).is_empty() && convs(c).is_empty()
    });
    t0.elapsed()
}

#[test]
fn blocked_writers_die_on_kill_and_interrupt_and_hangup_ends_both_ends() {
    let mut m = Mesh::new();
    let deploy = Deploy::new()
        .machine("a", 1)
        .machine("c", 3)
        .dial("a", "c")
        .mount("a")
        .mount("c")
        .service("c", r#"{ name = "stuck", kind = "exec", command = ["sleep", "600"] }"#);
    m.start("kill.toml", &deploy);
    let (a, c) = (m.dir.path().join("a"), m.dir.path().join("c"));
    let data = a.join("svc/stuck/data");
    until("a's tree shows stuck", T, || data.exists());

    // kill -9 of a writer blocked for credit.
    let mut w = Writer::spawn(&m, "killed", &data);
    let mib = w.blocked();
    kill(w.pid(), Signal::SIGKILL).expect("kill -9");
    let (took, states) = w.exited(PROMPT);
    measured(
        "kill -9 of a blocked writer",
        format_args!("blocked after {mib} MiB; reaped {took:?} after kill -9, states seen {states:?}"),
    );
    assert!(took.is_some(), "a writer blocked on svc/stuck/data outlived kill -9 by {PROMPT:?} (states {states:?})");
    let gone = ended(&a, &c, "killed writer", T);
    measured("kill -9 of a blocked writer", format_args!("both ends gone {gone:?} after"));

    // SIGINT to a writer that handles it: the blocked write fails with
    // EINTR, and the writer goes on (and blocks again).
    let mut w = Writer::spawn(&m, "interrupted", &data);
    let mib = w.blocked();
    let t0 = Instant::now();
    kill(w.pid(), Signal::SIGINT).expect("SIGINT");
    until("EINTR seen by the writer", PROMPT, || !w.errors().is_empty());
    let took = t0.elapsed();
    assert_eq!(w.errors(), ["4"], "{}", w.output());
    measured("SIGINT to a blocked writer", format_args!("blocked after {mib} MiB; EINTR after {took:?}"));

    // hangup on a, the opener's machine: the writer, blocked again, gets
    // EPIPE; the service's end on c goes too.
    let n = one_conv(&a);
    let t0 = Instant::now();
    sh_ok(&format!("echo hangup > {}/svc/stuck/{n}/ctl", a.display()), T);
    until("EPIPE seen by the writer after hangup on a", PROMPT, || w.errors().len() == 2);
    let took = t0.elapsed();
    assert_eq!(w.errors(), ["4", "32"], "{}", w.output());
    assert!(w.exited(PROMPT).0.is_some(), "the writer did not end after EPIPE");
    let gone = ended(&a, &c, "hangup on a", T);
    measured("hangup on a", format_args!("EPIPE after {took:?}; both ends gone {gone:?} after"));

    // hangup on c, the service's end of a conversation opened from a.
    let mut w = Writer::spawn(&m, "hung-up-on-c", &data);
    w.blocked();
    let n = one_conv(&c);
    let t0 = Instant::now();
    sh_ok(&format!("echo hangup > {}/svc/stuck/{n}/ctl", c.display()), T);
    until("EPIPE seen by the writer after hangup on c", PROMPT, || !w.errors().is_empty());
    let took = t0.elapsed();
    assert_eq!(w.errors(), ["32"], "{}", w.output());
    assert!(w.exited(PROMPT).0.is_some(), "the writer did not end after EPIPE");
    let gone = ended(&a, &c, "hangup on c", T);
    measured("hangup on c", format_args!("EPIPE on a after {took:?}; both ends gone {gone:?} after"));

    // kill -9 of a writer through c's own tree: its write on a ends at
    // once; c's relay of the file gives the service that stopped reading
    // 10 s (srv's remote::server ORPHANED), then lets go, and the
    // service's process goes 2 s later. Before, both stayed for ever.
    let far = a.join("n/c/svc/stuck/data");
    let mut w = Writer::spawn(&m, "killed-far", &far);
    let mib = w.blocked();
    kill(w.pid(), Signal::SIGKILL).expect("kill -9");
    let (took, states) = w.exited(PROMPT);
    assert!(took.is_some(), "a writer blocked on n/c/svc/stuck/data outlived kill -9 by {PROMPT:?} ({states:?})");
    let gone = ended(&a, &c, "kill -9 through n/c", 3 * T);
    measured(
        "kill -9 of a writer through n/c",
        format_args!("blocked after {mib} MiB; reaped {took:?} after, states {states:?}; c's ends gone {gone:?} after"),
    );
}
