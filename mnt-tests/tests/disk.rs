//! A served directory whose disk stops answering: machine b serves a
//! directory that lies beneath machine c's FUSE mount, and c's router is
//! stopped (SIGSTOP), so every system call that reaches c's files waits
//! for as long as it stays stopped, as on a disk that hung or an NFS
//! server that went away.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mnt_tests::{until, Deploy, Kids, Mesh, Stopped};

const T: Duration = Duration::from_secs(30);

/// With eight reads from a stuck in system calls on the stopped mount, b
/// still serves its links, its other served directory and its tree, in
/// a fraction of a second; once c goes on, the reads finish with the
/// right bytes. Each quick call that never returned used to hold one of
/// b's two workers, the watcher's lock held the reader of changes, and a
/// worker parked beside the stuck one left the sockets unread.
#[test]
fn a_disk_that_stops_answering_holds_only_its_own_requests() {
    // c: a router whose mount is the stalling disk.
    let mut mc = Mesh::new();
    let cdir = mc.dir.path().to_path_buf();
    std::fs::create_dir(cdir.join("files")).unwrap();
    let blobs: Vec<Vec<u8>> = (0..8u8).map(|i| (0..200_000u32).map(|j| (j as u8) ^ i).collect()).collect();
    for (i, b) in blobs.iter().enumerate() {
        std::fs::write(cdir.join(format!("files/big{i}")), b).unwrap();
    }
    let cd = cdir.display();
    let deploy_c = Deploy::new()
        .machine("c", 3)
        .mount("c")
        .service("c", &format!(r#"{{ name = "cfiles", kind = "dir", root = "{cd}/files" }}"#));
    mc.start("c.toml", &deploy_c);
    let under_c = cdir.join("c/svc/cfiles/root");
    until("c's mount serves its files", T, || std::fs::read(under_c.join("big0")).is_ok());

    // a -tcp- b; b serves `fast` from its own disk and `slow` from c's mount.
    let mut m = Mesh::new();
    let dir = m.dir.path().to_path_buf();
    std::fs::create_dir(dir.join("fast")).unwrap();
    std::fs::write(dir.join("fast/x"), "fast\n").unwrap();
    let (d, u) = (dir.display(), under_c.display());
    let deploy = Deploy::new().machine("a", 1).machine("b", 2).dial("a", "b").mount("a").service(
        "b",
        &format!(
            r#"{{ name = "fast", kind = "dir", root = "{d}/fast" }}, {{ name = "slow", kind = "dir", root = "{u}" }}"#
        ),
    );
    m.start("ab.toml", &deploy);
    let (fast, slow) = (dir.join("a/n/b/svc/fast/root"), dir.join("a/n/b/svc/slow/root"));
    until("a reaches b's directories", T, || std::fs::read(slow.join("big0")).is_ok());

    let stopped = Stopped::new(mc.pid("c"));
    let cat = |i: usize| Command::new("cat").arg(slow.join(format!("big{i}"))).stdout(Stdio::piped()).spawn().unwrap();
    let mut readers = Kids((0..8).map(cat).collect());
    std::thread::sleep(Duration::from_secs(1));
    assert!(readers.0.iter_mut().all(|c| c.try_wait().unwrap().is_none()), "the reads wait for c");
    // b answers the rest at once: its other directory, its tree, its own
    // socket. Each in a thread, so that a frozen b fails the test rather
    // than hanging it.
    let timed = |what: &'static str, f: Box<dyn FnOnce() -> bool + Send>| {
        let t = Instant::now();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        let ok = rx.recv_timeout(Duration::from_secs(5));
        if ok != Ok(true) {
            let b = m.pid("b");
            let (_, threads, _) =
                mnt_tests::sh(&format!("for t in /proc/{b}/task/*; do echo $(cat $t/comm) $(cat $t/wchan); done"), T);
            eprintln!("b's threads:\n{threads}");
        }
        assert_eq!(ok, Ok(true), "{what} while b's other disk is stuck");
        t.elapsed()
    };
    for _ in 0..3 {
        let x = fast.join("x");
        let took = timed("a read of b's other directory", Box::new(move || std::fs::read(&x).is_ok()));
        assert!(took < Duration::from_secs(2), "a read of b's other directory took {took:?}");
        let routes = dir.join("a/n/b/routes");
        timed("b's routes through a", Box::new(move || std::fs::read_to_string(&routes).is_ok()));
        let mut c = m.cmd(&["routes", "-m", "b"]);
        timed("b's socket", Box::new(move || c.output().is_ok_and(|o| o.status.success())));
    }
    drop(stopped);
    for (i, c) in std::mem::take(&mut readers.0).into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "read {i} ended with {:?}", out.status);
        assert!(out.stdout == blobs[i], "read {i} got {} bytes, not c's", out.stdout.len());
    }
}
