//! A second local user on a machine whose tree is mounted with
//! `allow_other`: the kernel checks each access against the modes the
//! tree shows (`default_permissions`), everything owned by the router's
//! user. So another user reads what the modes let anyone read, talks to
//! services (their data files are 0666), and is refused ctl writes and
//! served files that are not theirs to read. Without `allow_other` the
//! tree is the owner's alone.
//!
//! The user is made with useradd for the test and removed after, passed
//! or not.
//!
//! And a second user's router on the local socket: given access to a
//! router's Unix socket another user may be a client, but never joins
//! the mesh as a machine: a router on the local socket has no key, so
//! only the router's own user may run one (nobody runs it here).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use mnt_tests::users::LocalUser;
use mnt_tests::{sh, until, Deploy, Mesh};

const T: Duration = Duration::from_secs(20);
/// nobody, on every Debian machine.
const NOBODY: u32 = 65534;

/// Runs `script` with bash as `user`; returns (success, stdout, stderr).
fn run_as(user: &LocalUser, dir: &Path, script: &str) -> (bool, String, String) {
    let file = dir.join(format!("as-{}.sh", user.name));
    std::fs::write(&file, script).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (st, out, err) =
        sh(&format!("setpriv --reuid={0} --regid={0} --clear-groups bash {1}", user.uid, file.display()), T);
    (st.success(), out, err)
}

#[test]
fn another_user_gets_what_the_modes_allow() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: making a user needs root");
        return;
    }
    let Some(user) = LocalUser::ensure(&format!("meshadv{}", std::process::id() % 100_000)) else {
        eprintln!("skipped: useradd failed");
        return;
    };
    let mut m = Mesh::new();
    let dir = m.dir.path().to_path_buf();
    let d = dir.display();
    std::fs::create_dir_all(dir.join("files")).unwrap();
    for (name, mode) in [("secret.txt", 0o600), ("public.txt", 0o644)] {
        let p = dir.join("files").join(name);
        std::fs::write(&p, format!("{name}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // A file of the user's own, and a directory anyone may write to.
    let theirs = dir.join("files/theirs.txt");
    std::fs::write(&theirs, "theirs\n").unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(user.uid), Some(user.uid)).unwrap();
    std::fs::create_dir(dir.join("files/shared")).unwrap();
    std::fs::set_permissions(dir.join("files/shared"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    // The other user must reach the mount points.
    for p in [dir.as_path(), &dir.join("files")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let deploy = Deploy::new()
        .machine("a", 1)
        .machine("b", 2)
        .dial("a", "b")
        .mount("a")
        .mount("b")
        .set("a", "allow_other = true")
        .service("b", &format!(r#"{{ name = "files", kind = "dir", root = "{d}/files" }}"#))
        .service("b", r#"{ name = "cat", kind = "exec", command = ["cat"] }"#);
    m.start("users.toml", &deploy);
    let remote = format!("{d}/a/n/b/svc/files/root");
    until("a reaches b's files", T, || std::fs::read_to_string(format!("{remote}/public.txt")).is_ok());
    until("a routes to b's cat", T, || Path::new(&format!("{d}/a/svc/cat/data")).exists());

    // Each line: what the other user tried, and what came of it.
    let script = format!(
        r#"
try() {{ if out=$(eval "$2" 2>&1); then echo "$1 ok $out"; else echo "$1 refused $out"; fi; }}
try secret 'cat {remote}/secret.txt'
try public 'cat {remote}/public.txt'
try create 'echo x > {remote}/mine.txt'
try chmod 'chmod 666 {remote}/public.txt'
try ctl 'echo "dial tcp!127.0.0.9!1" > {d}/a/ctl'
try routes 'head -c 0 {d}/a/routes'
try service 'python3 -c "
import os
fd = os.open(\"{d}/a/svc/cat/data\", os.O_RDWR)
os.write(fd, b\"hello\n\")
print(os.read(fd, 100).decode().strip())
"'
try private 'ls {d}/b'
try theirs 'cat {remote}/theirs.txt'
try made 'echo made > {remote}/shared/made.txt && stat -c %u {remote}/shared/made.txt'
"#
    );
    let (_, out, err) = run_as(&user, &dir, &script);
    eprintln!("as {} (uid {}):\n{out}{err}", user.name, user.uid);
    let verdict = |what: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{what} ")))
            .unwrap_or_else(|| panic!("no line for {what}:\n{out}\n{err}"))
            .to_string()
    };
    for what in ["secret", "create", "chmod", "ctl", "private"] {
        let v = verdict(what);
        let denied = v.contains("Permission denied") || v.contains("Operation not permitted");
        assert!(v.starts_with("refused") && denied, "{what}: {v}");
        crate::measured("users", format_args!("{what}: {v}"));
    }
    assert_eq!(verdict("public"), "ok public.txt");
    assert!(verdict("routes").starts_with("ok"), "{}", verdict("routes"));
    assert_eq!(verdict("service"), "ok hello");
    // Served files keep their owners: the user's own file is the user's,
    // and what the user makes is the user's on b's disk too.
    assert_eq!(verdict("theirs"), "ok theirs");
    assert_eq!(verdict("made"), format!("ok {}", user.uid));
    let made = std::fs::metadata(dir.join("files/shared/made.txt")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&made), user.uid);
    // Nothing the other user tried changed anything.
    assert!(!dir.join("files/mine.txt").exists());
    let mode = std::fs::metadata(dir.join("files/public.txt")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    // The owner still has it all on b; root of a is nobody there.
    let secret = "svc/files/root/secret.txt";
    assert_eq!(std::fs::read_to_string(format!("{d}/b/{secret}")).unwrap(), "secret.txt\n");
    let squashed = std::fs::read_to_string(format!("{d}/a/n/b/{secret}")).map_err(|e| e.kind());
    assert_eq!(squashed, Err(std::io::ErrorKind::PermissionDenied));
    drop(m);
}

/// Root of a reaching b's served directories: the kernel of a lets root
/// do anything, so what stops it is b, which takes root of another
/// machine for `nobody` unless the service says `squash = "none"`, and
/// everyone for `nobody` with `squash = "all"`.
#[test]
fn root_of_another_machine_is_squashed_where_the_files_are() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: owners need root");
        return;
    }
    let Some(user) = LocalUser::ensure(&format!("meshsq{}", std::process::id() % 100_000)) else {
        eprintln!("skipped: useradd failed");
        return;
    };
    let mut m = Mesh::new();
    let dir = m.dir.path().to_path_buf();
    let d = dir.display();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for s in ["squashed", "trusted", "all"] {
        let root = dir.join(s);
        std::fs::create_dir_all(root.join("shared")).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(root.join("shared"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::write(root.join("secret.txt"), "secret\n").unwrap();
        std::fs::set_permissions(root.join("secret.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let deploy = Deploy::new()
        .machine("a", 1)
        .machine("b", 2)
        .dial("a", "b")
        .mount("a")
        .set("a", "allow_other = true")
        .service("b", &format!(r#"{{ name = "squashed", kind = "dir", root = "{d}/squashed" }}"#))
        .service("b", &format!(r#"{{ name = "trusted", kind = "dir", root = "{d}/trusted", squash = "none" }}"#))
        .service("b", &format!(r#"{{ name = "all", kind = "dir", root = "{d}/all", squash = "all" }}"#));
    m.start("squash.toml", &deploy);
    let there = |s: &str, f: &str| format!("{d}/a/n/b/svc/{s}/root/{f}");
    until("a reaches b's files", T, || std::fs::metadata(there("all", "shared")).is_ok());
    let owner =
        |s: &str, f: &str| std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.join(s).join(f)).unwrap());
    let denied = |r: std::io::Result<()>| r.map_err(|e| e.kind()) == Err(std::io::ErrorKind::PermissionDenied);

    // Default: root of a is nobody on b.
    assert!(denied(std::fs::read(there("squashed", "secret.txt")).map(drop)));
    assert!(denied(std::fs::write(there("squashed", "new.txt"), "x")));
    assert!(denied(std::fs::set_permissions(there("squashed", "secret.txt"), std::fs::Permissions::from_mode(0o644))));
    std::fs::write(there("squashed", "shared/root.txt"), "x").unwrap();
    assert_eq!(owner("squashed", "shared/root.txt"), NOBODY);
    crate::measured(
        "users",
        format_args!("squash root: root of a reads b's 0600 file: EACCES; makes files as {NOBODY}"),
    );
    // squash = "none": root is root.
    assert_eq!(std::fs::read_to_string(there("trusted", "secret.txt")).unwrap(), "secret\n");
    std::fs::write(there("trusted", "new.txt"), "x").unwrap();
    assert_eq!(owner("trusted", "new.txt"), 0);
    // squash = "all": everyone is nobody, the other user too.
    let (ok, out, err) =
        run_as(&user, &dir, &format!("echo x > {0} && stat -c %u {0}", there("all", "shared/theirs.txt")));
    assert!(ok, "{out}{err}");
    assert_eq!(owner("all", "shared/theirs.txt"), NOBODY);
    // And the other user is themselves where only root is squashed.
    let (ok, out, err) = run_as(&user, &dir, &format!("echo x > {}", there("squashed", "shared/theirs.txt")));
    assert!(ok, "{out}{err}");
    assert_eq!(owner("squashed", "shared/theirs.txt"), user.uid);
    drop(m);
}

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
    // A child forked by another test thread while the copy was open for
    // writing holds that descriptor until it execs: ETXTBSY for a moment.
    let spawn = || {
        std::process::Command::new(&bin)
            .args(["up", deploy.to_str().unwrap(), "-m", "zz", "-v"])
            .env_remove("RUST_LOG")
            .env("XDG_RUNTIME_DIR", &run)
            .env("XDG_STATE_HOME", &state)
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log.try_clone().unwrap())
            .spawn()
    };
    let mut tries = 0;
    let child = loop {
        match spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            r => break r.expect("spawn mesh up as nobody"),
        }
    };
    let _zz = Killed(child);
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
