//! Who may reach what (issue 18), with routers as processes: b's
//! services say who may open them (`allow`) and who may only read a
//! served directory (`read`), b closes the rest (`policy = "deny"`); a's
//! users reach them through `mesh send` and a's mount. Denials are
//! EACCES through the mount, `permission denied` from `mesh send`, and a
//! line in b's `ctl` naming who, what and the rule; a read-only grant is
//! EROFS; b's own tree and its `ctl` files have rules of their own
//! (`tree`, `ctl`). The file edited and read again (SIGHUP, `reload` in `ctl`)
//! applies at once, no link going down; a bad edit changes nothing and
//! says where it is wrong.

use std::time::Duration;

use mnt_tests::users::LocalUser;
use mnt_tests::{sh, sh_ok, until, Deploy, Mesh};

const T: Duration = Duration::from_secs(30);

/// b's services: `secret` for b and a's root, `files` b's to change
/// and a's to read, `open` for anyone, `shut` under b's default of deny.
fn deploy(m: &Mesh) -> Deploy {
    let files = m.dir.path().join("files");
    std::fs::create_dir_all(&files).expect("files");
    std::fs::write(files.join("hello.txt"), "hello\n").expect("hello.txt");
    Deploy::new()
        .machine("a", 1)
        .machine("b", 2)
        .dial("a", "b")
        .mount("a")
        .mount("b")
        .set("a", "allow_other = true")
        .set("b", "policy = \"deny\"")
        .set("b", r#"tree = ["a/root", "b"]"#)
        .set("b", r#"ctl = ["b"]"#)
        .service("b", r#"{ name = "secret", kind = "exec", command = ["cat"], allow = ["b", "a/root"] }"#)
        .service(
            "b",
            &format!(
                r#"{{ name = "files", kind = "dir", root = "{}", squash = "none", allow = ["b"], read = ["a"] }}"#,
                files.display()
            ),
        )
        .service("b", r#"{ name = "open", kind = "exec", command = ["cat"], allow = ["*"] }"#)
        .service("b", r#"{ name = "shut", kind = "exec", command = ["cat"] }"#)
}

/// `script` run by `sh`, as `user` when given: (success, stdout, stderr).
fn run_as(user: Option<&str>, script: &str) -> (bool, String, String) {
    let script = match user {
        Some(u) => format!("runuser -u {u} -- sh -c '{script}'"),
        None => script.to_string(),
    };
    let (st, out, err) = sh(&script, T);
    (st.success(), out, err)
}

#[test]
fn services_admit_whom_their_rules_name_and_a_reload_applies_at_once() {
    let Some(user) = LocalUser::ensure(&format!("meshpol{}", std::process::id() % 100_000)) else {
        eprintln!("skipped: cannot make a second local user");
        return;
    };
    let u = user.name.clone();
    let mut m = Mesh::new();
    let d = deploy(&m);
    let started = m.start("policy.toml", &d);
    let file = started.file.clone();
    let dir = m.dir.path().to_path_buf();
    let (a, b) = (dir.join("a"), dir.join("b"));
    until("b's services at a", T, || a.join("svc/secret").exists() && a.join("svc/shut").exists());
    let talk = |svc: &str| format!("exec 3<>{}/svc/{svc}/data; echo hi >&3; head -n1 <&3", a.display());

    // a's root may use `secret` (a/root), by `mesh send` and the mount.
    assert_eq!(m.ok(&["send", "-m", "a", "/n/b/svc/secret"], "hi\n"), "hi\n");
    assert_eq!(run_as(None, &talk("secret")).1, "hi\n");
    // The second user of a may not: EACCES, and b says who, what, which rule.
    let (ok, _, err) = run_as(Some(&u), &talk("secret"));
    assert!(!ok && err.contains("Permission denied"), "{err}");
    let ctl = || std::fs::read_to_string(b.join("ctl")).unwrap_or_default();
    let line = format!("denied a/{u} svc/secret: allow = [\"b\", \"a/root\"]");
    until("b's ctl tells the denial", T, || ctl().contains(&line));
    // `open` is for anyone; `shut` has no rule under b's `policy = "deny"`.
    assert_eq!(run_as(Some(&u), &talk("open")).1, "hi\n");
    let err = m.fails(&["send", "-m", "a", "/n/b/svc/shut"], "hi\n");
    assert!(err.contains("permission denied: a/root may not open svc/shut"), "{err}");

    // `files`: a reads, b's rule keeps a from changing anything.
    let files = a.join("n/b/svc/files/root");
    assert_eq!(std::fs::read_to_string(files.join("hello.txt")).expect("a reads"), "hello\n");
    let e = std::fs::write(files.join("new.txt"), "x").expect_err("a read-only grant");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let e = std::fs::create_dir(files.join("sub")).expect_err("a read-only grant");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let e = std::fs::remove_file(files.join("hello.txt")).expect_err("a read-only grant");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    // Nor through a file it opened to read (fchmod), nor by naming b's
    // tree through b's own (`n/b/n/b/...`).
    use std::os::unix::fs::PermissionsExt;
    let f = std::fs::File::open(files.join("hello.txt")).expect("open to read");
    let e = f.set_permissions(std::fs::Permissions::from_mode(0o777)).expect_err("a read-only grant");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let twice = a.join("n/b/n/b/svc/files/root");
    assert_eq!(std::fs::read_to_string(twice.join("hello.txt")).expect("a reads"), "hello\n");
    let e = std::fs::write(twice.join("new.txt"), "x").expect_err("a read-only grant, whatever the path");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    // A service's data through b's tree (`n/b/svc/S/data`) is held to the
    // rules of the one who asks, not of b.
    let (ok, _, err) =
        run_as(Some(&u), &format!("exec 3<>{}/n/b/svc/secret/data; echo hi >&3; head -n1 <&3", a.display()));
    assert!(!ok && err.contains("Permission denied"), "{err}");
    // A conversation root opened through `clone` is root's: the second
    // user may neither read nor write it.
    let mut clone = std::fs::File::open(a.join("svc/open/clone")).expect("clone");
    let mut n = String::new();
    std::io::Read::read_to_string(&mut clone, &mut n).expect("its number");
    let conv = a.join(format!("svc/open/{}", n.trim()));
    let (ok, _, err) = run_as(Some(&u), &format!("cat {}/data", conv.display()));
    assert!(!ok && err.contains("Permission denied"), "{err}");
    let (ok, _, err) = run_as(Some(&u), &format!("echo hangup > {}/ctl", conv.display()));
    assert!(!ok && err.contains("Permission denied"), "{err}");
    drop(clone);
    // b's `ctl` is read-only to other machines under its `policy = "deny"`.
    let e = std::fs::write(a.join("n/b/ctl"), "hangup net-a\n").expect_err("b's ctl from a");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    // b's tree beyond its services is a's root's to read (`tree`), and
    // its `ctl` files b's own to write (`ctl`): the second user of a may
    // not even list it, nor read b's routes, and b says why.
    assert!(sh_ok(&format!("ls {}/n/b/ && cat {}/n/b/routes", a.display(), a.display()), T).contains("secret"));
    let (ok, _, err) = run_as(Some(&u), &format!("ls {}/n/b/", a.display()));
    assert!(!ok && err.contains("Permission denied"), "{err}");
    let (ok, _, err) = run_as(Some(&u), &format!("cat {}/n/b/routes", a.display()));
    assert!(!ok && err.contains("Permission denied"), "{err}");
    let line = format!("denied a/{u} the tree: tree = [\"a/root\", \"b\"]");
    until("b's ctl tells the tree's denial", T, || ctl().contains(&line));

    // The file edited to admit the second user and let a change `files`,
    // read again by SIGHUP: at once, and no link went down.
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = text
        .replace(r#"allow = ["b", "a/root"]"#, &format!(r#"allow = ["b", "a/root", "a/{u}"]"#))
        .replace(r#"allow = ["b"], read = ["a"]"#, r#"allow = ["b", "a"]"#);
    assert_ne!(edited, text);
    std::fs::write(&file, &edited).unwrap();
    m.signal("b", nix::sys::signal::Signal::SIGHUP);
    until("b read the file again", T, || ctl().contains("reload: ") && ctl().contains("for new conversations"));
    until("the second user admitted", T, || run_as(Some(&u), &talk("secret")).1 == "hi\n");
    std::fs::write(files.join("new.txt"), "x").expect("a may change files now");
    let all = format!("{}{}", ctl(), std::fs::read_to_string(a.join("ctl")).unwrap_or_default());
    assert!(!all.contains("link down"), "{all}");

    // A bad edit: refused with its line and key, the rules unchanged;
    // `reload` written to b's ctl says so too.
    std::fs::write(&file, edited.replace(r#""a/root", "#, r#""zz", "#)).unwrap();
    let (ok, _, err) = run_as(None, &format!("echo reload > {}/ctl", b.display()));
    assert!(!ok && err.contains("Invalid argument"), "{err}");
    assert!(ctl().contains("reload failed, rules unchanged") && ctl().contains("no machine \"zz\""), "{}", ctl());
    assert_eq!(run_as(Some(&u), &talk("secret")).1, "hi\n", "the rules read last still hold");
    assert_eq!(m.ok(&["send", "-m", "a", "/n/b/svc/secret"], "hi\n"), "hi\n");

    // A file a opened while it could change `files` is held to rules
    // read later: a taken off `files` entirely, its next change fails.
    let f = std::fs::OpenOptions::new().write(true).open(files.join("new.txt")).expect("open to write");
    std::fs::write(&file, edited.replace(r#"allow = ["b", "a"]"#, r#"allow = ["b"]"#)).unwrap();
    sh(&format!("echo reload > {}/ctl", b.display()), T);
    until("the rules read again", T, || ctl().matches("for new conversations").count() >= 2);
    let e = f.set_permissions(std::fs::Permissions::from_mode(0o600)).expect_err("revoked");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    let e = std::fs::read_to_string(files.join("hello.txt")).expect_err("revoked");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
}
