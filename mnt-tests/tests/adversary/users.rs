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

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mnt_tests::{sh, until, Deploy, Mesh};

const T: Duration = Duration::from_secs(20);

/// A user made for the test; dropping it removes the user.
struct TestUser {
    name: String,
    uid: u32,
}

impl TestUser {
    fn add() -> Option<TestUser> {
        let name = format!("meshadv{}", std::process::id() % 100_000);
        let made = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", &name])
            .status()
            .is_ok_and(|s| s.success());
        if !made {
            return None;
        }
        let user = nix::unistd::User::from_name(&name).ok().flatten()?;
        Some(TestUser { name, uid: user.uid.as_raw() })
    }

    /// Runs `script` with bash as this user; returns (success, stdout, stderr).
    fn run(&self, dir: &Path, script: &str) -> (bool, String, String) {
        let file = dir.join(format!("as-{}.sh", self.name));
        std::fs::write(&file, script).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (st, out, err) =
            sh(&format!("setpriv --reuid={0} --regid={0} --clear-groups bash {1}", self.uid, file.display()), T);
        (st.success(), out, err)
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

#[test]
fn another_user_gets_what_the_modes_allow() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: making a user needs root");
        return;
    }
    let Some(user) = TestUser::add() else {
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
"#
    );
    let (_, out, err) = user.run(&dir, &script);
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
    // Nothing the other user tried changed anything.
    assert!(!dir.join("files/mine.txt").exists());
    let mode = std::fs::metadata(dir.join("files/public.txt")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    // The owner still has it all.
    assert_eq!(std::fs::read_to_string(format!("{remote}/secret.txt")).unwrap(), "secret.txt\n");
    drop(m);
}
