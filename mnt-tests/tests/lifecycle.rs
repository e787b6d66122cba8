//! How `mesh up` and `mesh serve` start, stop and log, as a user meets
//! them: Ctrl-C with the tree in use, a service whose background child
//! holds its output, logs written to a file, a deployment file that is not
//! there, a second `mesh up` of a running machine.
//!
//! The machines here listen on their Unix sockets only: no ports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mnt_tests::{mesh_bin, mounts_under, until, Kids, Mesh};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(20);

/// A process whose pid a service command writes to a file, killed (if
/// still there) however the test ends.
struct Orphan(PathBuf);

impl Orphan {
    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.0).ok()?.trim().parse().ok()
    }
}

impl Drop for Orphan {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Whether `pid` runs (a zombie waiting for its parent does not).
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // pid (comm) STATE ...: comm may hold spaces, the state follows its ')'.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|s| s != "Z")
}

/// Machine a, mounted at DIR/a, serving `slow` (a reader of its data
/// waits); its router started.
fn mounted(m: &mut Mesh) -> PathBuf {
    let dir = m.dir.path().to_path_buf();
    let text = format!(
        "[machines.a]\nmount = \"{}/a\"\nservices = [ {{ name = \"slow\", kind = \"exec\", command = [\"sleep\", \"60\"] }} ]\n",
        dir.display()
    );
    let deploy = m.file("a.toml", &text);
    m.up(&deploy, "a");
    let a = dir.join("a");
    until("a's tree", T, || std::fs::read_to_string(a.join("machine")).is_ok_and(|s| s == "a\n"));
    a
}

/// `sleep` with its working directory in `tree` and a file of it open.
fn hold(tree: &Path) -> Child {
    let open = std::fs::File::open(tree.join("machine")).expect("open machine");
    Command::new("sleep").arg("60").current_dir(tree).stdin(open).stdout(Stdio::null()).spawn().expect("spawn sleep")
}

#[test]
fn ctrl_c_ends_up_while_its_tree_is_in_use() {
    let mut m = Mesh::new();
    let a = mounted(&mut m);
    let _kids = Kids(vec![hold(&a)]);
    m.signal("a", Signal::SIGINT);
    let st = m.wait_exit("a", Duration::from_secs(3));
    assert!(st.is_some_and(|s| s.success()), "mesh up after Ctrl-C: {st:?}\n{}", m.log("a"));
    assert_eq!(mounts_under(m.dir.path()), Vec::<PathBuf>::new(), "a mount is left");
}

#[test]
fn a_second_ctrl_c_ends_up_at_once() {
    let mut m = Mesh::new();
    let a = mounted(&mut m);
    let _kids = Kids(vec![hold(&a)]);
    m.signal("a", Signal::SIGINT);
    // Apart, or the kernel merges them into one.
    std::thread::sleep(Duration::from_millis(20));
    m.signal("a", Signal::SIGINT);
    let st = m.wait_exit("a", Duration::from_secs(3));
    assert!(st.is_some(), "mesh up ran on after two Ctrl-C\n{}", m.log("a"));
    assert_eq!(mounts_under(m.dir.path()), Vec::<PathBuf>::new(), "a mount is left");
}

/// Machine b with no mount; `mesh serve` offers `bg`, whose command leaves
/// a background `sleep` holding its output; a conversation with it open.
fn serving_with_orphan(m: &mut Mesh) -> Orphan {
    let deploy = m.file("b.toml", "[machines.b]\n");
    m.up(&deploy, "b");
    let sock = m.dir.path().join("mesh/b.sock");
    until("b's socket", T, || sock.exists());
    let orphan = Orphan(m.dir.path().join("bg.pid"));
    let script = format!("sleep 300 & echo $! > {}.new && mv {0}.new {0}; cat", orphan.0.display());
    m.spawn("serve", &["serve", "-m", "b", "bg", "--", "sh", "-c", &script]);
    until("b routes to bg", T, || m.routes("b").contains("bg b local"));
    // Its input ends at once: `cat` and `sh` exit, the sleep stays.
    m.spawn("send", &["send", "-m", "b", "/svc/bg"]);
    until("the background sleep", T, || orphan.pid().is_some_and(alive));
    orphan
}

#[test]
fn serve_exits_when_its_router_goes_and_kills_its_group() {
    let mut m = Mesh::new();
    let orphan = serving_with_orphan(&mut m);
    m.signal("b", Signal::SIGKILL);
    let st = m.wait_exit("serve", Duration::from_secs(5));
    assert!(st.is_some(), "mesh serve ran on without its router\n{}", m.log("serve"));
    let pid = orphan.pid().expect("pid");
    until("the background sleep to go", Duration::from_secs(3), || !alive(pid));
}

#[test]
fn serve_exits_on_sigterm_and_kills_its_group() {
    let mut m = Mesh::new();
    let orphan = serving_with_orphan(&mut m);
    m.signal("serve", Signal::SIGTERM);
    let st = m.wait_exit("serve", Duration::from_secs(5));
    assert!(st.is_some(), "mesh serve ignored SIGTERM\n{}", m.log("serve"));
    let pid = orphan.pid().expect("pid");
    until("the background sleep to go", Duration::from_secs(3), || !alive(pid));
}

/// `mesh up -v` of a machine whose mount point cannot be made: it logs,
/// then fails. Run by `script` on a terminal; what the terminal showed.
fn up_on_a_terminal(m: &Mesh, no_color: Option<&str>) -> String {
    m.file("file", "");
    let text = format!("[machines.z]\nmount = \"{}/file/z\"\n", m.dir.path().display());
    let deploy = m.file("z.toml", &text);
    let line = format!("{} up {} -v", mesh_bin().display(), deploy.display());
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"])
        .env("XDG_RUNTIME_DIR", m.dir.path())
        .env("XDG_STATE_HOME", m.dir.path().join("state"))
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let out = cmd.output().expect("run script");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn logs_are_coloured_only_on_a_terminal() {
    let mut m = Mesh::new();
    mounted(&mut m);
    let log = m.log("a");
    assert!(log.contains("INFO") && !log.contains('\x1b'), "colour in a log file:\n{log:?}");
    let tty = up_on_a_terminal(&m, None);
    assert!(tty.contains("INFO") && tty.contains('\x1b'), "no colour on a terminal:\n{tty:?}");
    let tty = up_on_a_terminal(&m, Some("1"));
    assert!(tty.contains("INFO") && !tty.contains('\x1b'), "colour despite NO_COLOR:\n{tty:?}");
}

#[test]
fn an_interrupted_reader_is_no_warning() {
    let mut m = Mesh::new();
    let a = mounted(&mut m);
    // fuse3's warning comes from a race (about one interrupt in three on
    // the code before the fix): ten make its absence mean something.
    for _ in 0..10 {
        let mut kids = Kids(vec![Command::new("cat")
            .arg(a.join("svc/slow/data"))
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn cat")]);
        // Let its read reach the router and wait there.
        std::thread::sleep(Duration::from_millis(200));
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(kids.0[0].id() as i32), Signal::SIGINT);
        let pid = kids.0[0].id() as i32;
        until("cat to end on Ctrl-C", Duration::from_secs(5), || {
            matches!(kids.0[0].try_wait(), Ok(Some(_))) || !alive(pid)
        });
    }
    // Whatever the router logs about the interrupts has been written.
    std::thread::sleep(Duration::from_millis(300));
    let log = m.log("a");
    assert!(!log.contains("WARN"), "a warning for an interrupted read:\n{log}");
}

#[test]
fn a_missing_deployment_file_is_named_without_a_line() {
    let m = Mesh::new();
    let missing = m.dir.path().join("missing.toml");
    let err = m.fails(&["up", missing.to_str().expect("utf-8")], "");
    assert!(err.contains(&format!("{}: file does not exist", missing.display())), "{err}");
    assert!(!err.contains(":0:"), "{err}");
}

#[test]
fn a_refused_second_up_is_no_refusal_at_the_first() {
    let mut m = Mesh::new();
    let deploy = m.file("b.toml", "[machines.b]\n");
    m.up(&deploy, "b");
    let sock = m.dir.path().join("mesh/b.sock");
    until("b's socket", T, || sock.exists());
    let err = m.fails(&["up", deploy.to_str().expect("utf-8"), "-m", "b"], "");
    assert!(err.contains("another process is listening"), "{err}");
    // The probe's connection has been seen and closed by now.
    std::thread::sleep(Duration::from_millis(300));
    let ctl = m.ok(&["cat", "-m", "b", "/ctl"], "");
    assert!(!ctl.contains("refused"), "b's ctl after a second mesh up:\n{ctl}");
}

/// `mesh` links no FFmpeg, so a command starts in milliseconds; `mesh up`
/// of a machine that runs a `display` becomes `mesh-av` (same process,
/// same arguments) and serves it; without `mesh-av` beside `mesh` or on
/// PATH, it says what is missing and how to build it.
#[test]
fn video_kinds_run_in_mesh_av_and_mesh_alone_links_no_ffmpeg() {
    let linked = |bin: &Path| {
        let out = Command::new("ldd").arg(bin).output().expect("ldd");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mesh = mesh_bin();
    let av = mesh.with_file_name("mesh-av");
    assert!(!linked(&mesh).contains("libavcodec"), "{}", linked(&mesh));
    assert!(linked(&av).contains("libavcodec"));

    let mut m = Mesh::new();
    let d = m.dir.path().display().to_string();
    let file = m.file(
        "av.toml",
        &format!(
            "[machines.a]\nlisten = [\"unix!{d}/a.link\"]\n\
             services = [{{ name = \"display\", kind = \"display\", output = \"{d}/out.mp4\" }}, {{ name = \"echo\", kind = \"echo\" }}]\n"
        ),
    );
    m.up(&file, "a");
    until("a's display is served", T, || m.run(&["ls", "/svc", "-m", "a"], "").stdout.starts_with(b"display"));
    let exe = std::fs::read_link(format!("/proc/{}/exe", m.pid("a"))).unwrap();
    assert_eq!(exe.file_name().unwrap(), "mesh-av", "{}", m.log("a"));
    assert_eq!(m.ok(&["send", "/svc/echo", "-m", "a"], "ping"), "ping");

    // mesh alone, with no mesh-av beside it or on PATH.
    let lone = m.dir.path().join("lone");
    std::fs::create_dir(&lone).unwrap();
    std::fs::copy(&mesh, lone.join("mesh")).unwrap();
    let mut c = Command::new(lone.join("mesh"));
    c.args(["up", file.to_str().unwrap(), "-m", "a"]).env("PATH", &lone).env("XDG_RUNTIME_DIR", m.dir.path());
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("machine a runs display display, which the mesh-av binary runs")
            && err.contains("cargo build -p mesh"),
        "{err}"
    );
}
