//! pjdfstest, the POSIX file system suite (its Rust port from crates.io,
//! installed with `cargo install`), against a `dir` service of machine b
//! seen from machine a's tree, one tcp hop away, mounted with
//! `allow_other` so the suite's other users reach it.
//!
//! Every case Linux can run must pass (16 are for features Linux lacks
//! and skip themselves): the count is local ext4's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mnt_tests::users::LocalUser;
use mnt_tests::{until, Deploy, Mesh};

const T: Duration = Duration::from_secs(30);
/// The suite's version, pinned so that its count means the same each run.
const VERSION: &str = "0.2.2";

/// The suite's binary, installed once under target/ if missing.
fn pjdfstest() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pjdfstest");
    let bin = root.join("bin/pjdfstest");
    if bin.exists() {
        return Some(bin);
    }
    let ok = Command::new(env!("CARGO"))
        .args(["install", "--quiet", "--locked", "pjdfstest", "--version", VERSION, "--root"])
        .arg(&root)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(bin)
}

#[test]
fn pjdfstest_on_a_directory_of_another_machine() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: pjdfstest runs as root");
        return;
    }
    let Some(bin) = pjdfstest() else {
        eprintln!("skipped: cargo install pjdfstest {VERSION} failed");
        return;
    };
    // The suite's second user.
    let Some(_user) = LocalUser::ensure("tests") else {
        eprintln!("skipped: cannot make the user `tests`");
        return;
    };
    let mut m = Mesh::new();
    let dir = m.dir.path().to_path_buf();
    let d = dir.display();
    std::fs::create_dir(dir.join("files")).unwrap();
    // The suite's other users must reach its directory.
    for p in [dir.as_path(), &dir.join("files")] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    }
    let deploy = Deploy::new()
        .machine("a", 1)
        .machine("b", 2)
        .dial("a", "b")
        .mount("a")
        .set("a", "allow_other = true")
        // Root on a is root on b: these check what root may do; squashing is
        // the adversarial suite's (users.rs).
        .service("b", &format!(r#"{{ name = "files", kind = "dir", root = "{d}/files", squash = "none" }}"#));
    m.start("pjdfstest.toml", &deploy);
    let remote = dir.join("a/n/b/svc/files/root");
    until("a reaches b's files", T, || std::fs::read_dir(&remote).is_ok());
    // The opt-in features Linux and the tree have.
    let config = m.file(
        "pjdfstest.toml",
        "[features]\nposix_fallocate = {}\nutimensat = {}\nutime_now = {}\nrename_ctime = {}\n\n\
         [settings]\nnaptime = 0.001\n",
    );
    let out = Command::new("timeout")
        .arg("900")
        .arg(&bin)
        .arg("-c")
        .arg(&config)
        .arg("-p")
        .arg(&remote)
        .current_dir(&remote)
        .output()
        .expect("run pjdfstest");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let summary = text.lines().find(|l| l.starts_with("Summary:")).unwrap_or_else(|| panic!("no summary:\n{text}"));
    let failed: Vec<&str> =
        text.lines().filter(|l| l.trim_end().ends_with("FAILED")).filter_map(|l| l.split_whitespace().next()).collect();
    mnt_tests::measured(&format!("pjdfstest {VERSION} on b's dir through a's tree: {summary}"));
    assert!(failed.is_empty(), "failed: {failed:?}\n{text}");
    // What skips is for features Linux lacks (chflags, NFSv4 ACLs, ...).
    let skipped = summary.split(", ").find_map(|p| p.strip_suffix(" skipped")).and_then(|n| n.parse::<u32>().ok());
    assert!(skipped.is_some_and(|n| n <= 16), "{summary}");
}
