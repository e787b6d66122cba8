//! `mesh ls` and `mesh cat` without FUSE reach the whole tree: other
//! machines' trees two hops away, conversations, served directories; a
//! stream file is refused with a pointer to `mesh send`.

use std::time::Duration;

use mnt_tests::deploy::Deploy;
use mnt_tests::{until, Mesh};

const T: Duration = Duration::from_secs(20);

#[test]
fn ls_and_cat_reach_other_machines_over_two_hops() {
    let mut m = Mesh::new();
    let dir = m.dir.path().to_path_buf();
    let d = dir.display();
    std::fs::create_dir_all(dir.join("files/sub")).unwrap();
    std::fs::write(dir.join("files/sub/hello.txt"), "hello from c\n").unwrap();
    // A line: a - b - c; a has no link to c.
    let deploy = Deploy::new()
        .machine("a", 1)
        .machine("b", 2)
        .machine("c", 3)
        .dial("a", "b")
        .dial("c", "b")
        .mount("a")
        .service("c", r#"{ name = "upper", kind = "exec", command = ["tr", "a-z", "A-Z"] }"#)
        .service("c", &format!(r#"{{ name = "files", kind = "dir", root = "{d}/files" }}"#));
    m.start("line.toml", &deploy);
    until("upper two hops from a", T, || m.routes("a").contains("upper c net-b 2"));

    // The same names as through a's mount.
    let mount = dir.join("a");
    let mut through_mount: Vec<String> = std::fs::read_dir(mount.join("n/c/svc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    through_mount.sort();
    let listed = m.ok(&["ls", "-m", "a", "/n/c/svc"], "");
    assert_eq!(listed.lines().collect::<Vec<_>>(), through_mount, "{listed}");
    assert!(listed.lines().any(|l| l == "upper"), "{listed}");

    assert_eq!(m.ok(&["cat", "-m", "a", "/n/c/machine"], ""), "c\n");
    // Through b's tree: a path of several machines.
    assert_eq!(m.ok(&["cat", "-m", "a", "/n/b/n/c/machine"], ""), "c\n");
    let routes = m.ok(&["cat", "-m", "a", "/n/c/routes"], "");
    assert!(routes.contains("upper c local 0"), "{routes}");
    assert!(m.ok(&["ls", "-m", "a", "/n/c/term"], "").lines().any(|l| l == "net-b"));
    assert!(m.ok(&["cat", "-m", "a", "/n/c/term/net-b/ctl"], "").contains("tcp"));
    let info = m.ok(&["cat", "-m", "a", "/svc/upper/info"], "");
    assert!(info.starts_with("c net-b 2 a!b!c"), "{info}");

    // A served directory on c, its files read without a mount.
    assert_eq!(m.ok(&["ls", "-m", "a", "/n/c/svc/files/root/sub"], ""), "hello.txt\n");
    assert_eq!(m.ok(&["cat", "-m", "a", "/n/c/svc/files/root/sub/hello.txt"], ""), "hello from c\n");
    // ls of a file names it, as ls(1) does.
    assert_eq!(m.ok(&["ls", "-m", "a", "/n/c/machine"], ""), "machine\n");

    // A stream file: refused, pointing to mesh send.
    let err = m.fails(&["cat", "-m", "a", "/n/c/svc/upper/data"], "");
    assert!(err.contains("is a stream") && err.contains("mesh send /n/c/svc/upper"), "{err}");
    let err = m.fails(&["cat", "-m", "a", "/svc/upper/data"], "");
    assert!(err.contains("mesh send /svc/upper"), "{err}");
    // What does not exist says so, with its path.
    let err = m.fails(&["cat", "-m", "a", "/n/c/nothing"], "");
    assert!(err.contains("/n/c/nothing") && err.contains("does not exist"), "{err}");
    let err = m.fails(&["ls", "-m", "a", "/n/c/svc/files/root/missing"], "");
    assert!(err.contains("missing"), "{err}");
}
