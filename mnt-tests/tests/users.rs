//! A second local user. Given access to a router's Unix socket it may be
//! a client, but it never joins the mesh as a machine: a router on the
//! local socket has no key, so only the router's own user may run one.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::Duration;

use mnt_tests::{until, Mesh};

const T: Duration = Duration::from_secs(20);
/// nobody, on every Debian machine.
const NOBODY: u32 = 65534;

/// Kills the other user's process when the test ends, passed or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn open_to_all(p: &std::path::Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn another_users_router_on_the_local_socket_is_refused() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: running a process as another user needs root");
        return;
    }
    let mut m = Mesh::new();
    let dir = m.dir.path().to_path_buf();
    let deploy = m.file(
        "users.toml",
        &format!(
            r#"
[machines.a]
services = [ {{ name = "echo", kind = "exec", command = ["cat"] }} ]

[machines.zz]
dial = ["unix!{}/mesh/a.sock"]
services = [ {{ name = "cat", kind = "exec", command = ["cat"] }} ]
"#,
            dir.display()
        ),
    );
    m.up(&deploy, "a");
    until("a's socket", T, || dir.join("mesh/a.sock").exists());
    // The owner gives every user access to its socket.
    for (p, mode) in [(dir.as_path(), 0o755), (&dir.join("mesh"), 0o755), (&dir.join("mesh/a.sock"), 0o666)] {
        open_to_all(p, mode);
    }
    open_to_all(&deploy, 0o644);
    let (run, state) = (dir.join("zz-run"), dir.join("zz-state"));
    for d in [&run, &state] {
        std::fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let log = std::fs::File::create(dir.join("zz.log")).unwrap();
    open_to_all(&dir.join("zz.log"), 0o666);
    // A copy of the binary the other user can run wherever the checkout
    // lies (a home directory of mode 0700, say).
    let bin = dir.join("mesh-for-nobody");
    std::fs::copy(mnt_tests::mesh_bin(), &bin).unwrap();
    open_to_all(&bin, 0o755);
    let _zz = Killed(
        std::process::Command::new(&bin)
            .args(["up", deploy.to_str().unwrap(), "-m", "zz", "-v"])
            .env_remove("RUST_LOG")
            .env("XDG_RUNTIME_DIR", &run)
            .env("XDG_STATE_HOME", &state)
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn mesh up as nobody"),
    );
    let ctl = || m.ok(&["cat", "-m", "a", "/ctl"], "");
    until("a refuses zz", T, || ctl().contains("machine zz from uid 65534"));
    let zz_log = std::fs::read_to_string(dir.join("zz.log")).unwrap_or_default();
    eprintln!("a's ctl:\n{}\nzz's log:\n{zz_log}", ctl());
    // zz tried again and again; it never became a machine of a's mesh.
    std::thread::sleep(Duration::from_millis(500));
    let machines = m.ok(&["ls", "-m", "a", "/n"], "");
    assert!(!machines.lines().any(|l| l == "zz"), "zz joined: {machines}");
    assert!(!m.ok(&["ls", "-m", "a", "/svc"], "").lines().any(|l| l == "cat"));
    // The router's own clients are served as before.
    assert_eq!(m.ok(&["send", "-m", "a", "/svc/echo"], "still here\n"), "still here\n");
}
