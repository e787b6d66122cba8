//! The namespace through real FUSE mounts: three router processes on
//! 127.0.0.1, .2 and .3, each mounted, driven with bash, cat, echo, head,
//! tee, timeout and Python, as a user would.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mnt_tests::{sh, sh_ok, until, Deploy, Mesh, Started};

const T: Duration = Duration::from_secs(20);

struct Abc {
    m: Mesh,
    dir: PathBuf,
    started: Started,
}

impl Abc {
    fn mnt(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }
    fn a(&self) -> String {
        self.mnt("a").display().to_string()
    }
}

/// a -tcp- b -ws- c, each mounted under the test directory. b serves
/// upper; c serves slow, count, sink and echo. d, on 127.0.0.4, runs
/// linked to nobody until a test dials it through a's ctl.
fn start() -> Abc {
    let mut m = Mesh::new();
    let dir = m.dir.path().to_path_buf();
    let d = dir.display();
    let slow =
        format!("trap '' HUP; trap 'echo interrupted > {d}/slow.mark; exit 0' INT; while :; do sleep 0.05; done");
    let deploy = Deploy::abc()
        .mount("a")
        .mount("b")
        .mount("c")
        .service("b", r#"{ name = "upper", kind = "exec", command = ["tr", "a-z", "A-Z"] }"#)
        .service("c", r#"{ name = "echo", kind = "exec", command = ["cat"] }"#)
        .service("c", r#"{ name = "count", kind = "exec", command = ["printf", "one\ntwo\n"] }"#)
        .service("c", &format!(r#"{{ name = "sink", kind = "exec", command = ["sh", "-c", "cat > {d}/sink.out"] }}"#))
        .service("c", &format!(r#"{{ name = "slow", kind = "exec", command = ["sh", "-c", "{slow}"] }}"#))
        .machine("d", 4)
        .service("d", r#"{ name = "dsvc", kind = "exec", command = ["cat"] }"#);
    let started = m.start("abc.toml", &deploy);
    let abc = Abc { m, dir, started };
    let a = abc.mnt("a");
    until("a's tree shows every service", T, || {
        std::fs::read_dir(a.join("svc")).map(|d| d.count() == 5).unwrap_or(false)
    });
    abc
}

#[test]
fn the_tree_as_a_user_sees_it() {
    let abc = start();
    let a = abc.a();
    assert_eq!(sh_ok(&format!("cat {a}/machine"), T), "a\n");
    let routes = sh_ok(&format!("cat {a}/routes"), T);
    assert!(routes.contains("upper b net-b 1 a!b\n") && routes.contains("slow c net-b 2 a!b!c\n"), "{routes}");
    assert_eq!(sh_ok(&format!("ls {a}"), T), "ctl\nmachine\nn\nroutes\nsvc\nterm\n");
    assert_eq!(sh_ok(&format!("ls {a}/svc"), T), "count\necho\nsink\nslow\nupper\n");
    assert_eq!(sh_ok(&format!("ls {a}/term"), T), "local\nloopback\nnet-b\n");
    assert_eq!(sh_ok(&format!("ls {a}/n"), T), "a\nb\nc\n");
    assert_eq!(sh_ok(&format!("cat {a}/svc/upper/info"), T), "b net-b 1 a!b\n");
    // A conversation on one descriptor: write, then read the reply.
    let out = sh_ok(&format!("exec 3<>{a}/svc/upper/data; echo hello >&3; head -n1 <&3 2>/dev/null"), T);
    assert_eq!(out, "HELLO\n");
    // clone: the number, a conversation alive while fd 4 is open.
    let script = format!(
        "exec 4<{a}/svc/upper/clone; read n <&4; echo n=$n; ls {a}/svc/upper | grep -qx $n && echo listed
         cat {a}/svc/upper/$n/data > {d}/out & sleep 0.2; echo hi > {a}/svc/upper/$n/data; wait; cat {d}/out
         echo 'replyto /n/a/svc/upper' > {a}/svc/upper/$n/ctl && grep replyto {a}/svc/upper/$n/status",
        d = abc.dir.display()
    );
    let out = sh_ok(&script, T);
    assert!(out.contains("listed\nHI\nreplyto /n/a/svc/upper\n"), "{out}");
    // A bad ctl message fails the write and says why in ctl.
    let (st, _, err) = sh(&format!("echo 'frob now' > {a}/ctl"), T);
    assert!(!st.success() && err.contains("Invalid argument"), "{err}");
    assert!(sh_ok(&format!("cat {a}/ctl"), T).contains("bad ctl message: unknown message \"frob\""));
    // The live trace of the link to b shows a message crossing it.
    let out = sh_ok(&format!("(timeout 2 cat {a}/term/net-b/data > {d}/trace &); sleep 0.3; echo x > {a}/svc/upper/data; sleep 2; cat {d}/trace", d = abc.dir.display()), T);
    assert!(
        out.lines().any(|l| l.starts_with("out data /n/a/svc/upper/") && l.ends_with(" /n/b/svc/upper 2")),
        "{out}"
    );
    // The tree is private to the user who mounted it: another user who can
    // reach the mount point is still refused by the mount itself.
    sh_ok(&format!("chmod 755 {}; runuser -u nobody -- ls {} > /dev/null", abc.dir.display(), abc.dir.display()), T);
    let (st, _, err) = sh(&format!("runuser -u nobody -- ls {a}/svc"), T);
    assert!(!st.success() && err.contains("Permission denied"), "another user read the tree: {err}");
    // Terminal state.
    let ctl = sh_ok(&format!("cat {a}/term/net-b/ctl"), T);
    assert_eq!(ctl, format!("net tcp!127.0.0.2!{} up\n", abc.started.port("b")));
    assert!(sh_ok(&format!("cat {a}/term/net-b/status"), T).contains("errors 0"));
}

#[test]
fn other_machines_trees_over_hops() {
    let abc = start();
    let a = abc.a();
    assert_eq!(sh_ok(&format!("cat {a}/n/c/machine"), T), "c\n");
    assert!(sh_ok(&format!("cat {a}/n/c/routes"), T).contains("upper b net-b 1 c!b\n"));
    assert_eq!(sh_ok(&format!("ls {a}/n/c/svc"), T), "count\necho\nsink\nslow\nupper\n");
    assert_eq!(sh_ok(&format!("ls {a}/n/b/term"), T), "local\nloopback\nnet-a\nnet-c\n");
    assert!(sh_ok(&format!("stat -c %F {a}/n/c/svc/echo/data"), T).contains("regular"));
    // A blocking data file two hops away.
    let out = sh_ok(&format!("exec 3<>{a}/n/c/svc/echo/data; echo far >&3; head -n1 <&3 2>/dev/null"), T);
    assert_eq!(out, "far\n");
    // clone over there: the conversation lives on c.
    let out = sh_ok(&format!("exec 4<{a}/n/c/svc/upper/clone; read n <&4; ls {a}/n/c/svc/upper | grep -x $n; cat {a}/n/c/svc/upper/$n/status | head -1"), T);
    assert!(out.ends_with("state open\n"), "{out}");
    // The machine itself, through n/a.
    assert_eq!(sh_ok(&format!("cat {a}/n/a/n/c/machine"), T), "c\n");
}

#[test]
fn pipelines_of_ordinary_tools() {
    let abc = start();
    let (a, d) = (abc.a(), abc.dir.display().to_string());
    // count on c needs no input: reading its data file starts it. Its end
    // of output ends cat, tr and tee; tee's close ends sink's input.
    sh_ok(&format!("cat {a}/svc/count/data | tr a-z A-Z | tee {a}/svc/sink/data > {d}/tee.out"), T);
    assert_eq!(std::fs::read_to_string(format!("{d}/tee.out")).unwrap(), "ONE\nTWO\n");
    until("sink wrote its file", T, || {
        std::fs::read_to_string(format!("{d}/sink.out")).is_ok_and(|s| s == "ONE\nTWO\n")
    });
    // Through a service in the middle.
    let out = sh_ok(
        &format!(
            "printf 'x\\ny\\n' > {a}/svc/upper/data; (printf 'a\\nb\\n'; sleep 0.3) | cat > {a}/svc/echo/data; echo ok"
        ),
        T,
    );
    assert_eq!(out, "ok\n");
}

#[test]
fn interrupts_end_blocked_reads() {
    let abc = start();
    let (a, d) = (abc.a(), abc.dir.display().to_string());
    // A program that does not handle SIGINT.
    let t0 = Instant::now();
    let (st, _, _) = sh(&format!("timeout -s INT 1 cat {a}/svc/slow/data"), T);
    let took = t0.elapsed();
    assert!(!st.success());
    // Ended by the interrupt at 1 s, not by the 20 s limit of sh.
    assert!(took < Duration::from_secs(10), "cat took {took:?} to die");
    // The service was told: slow traps SIGINT.
    until("slow saw the interrupt", T, || Path::new(&format!("{d}/slow.mark")).exists());
    std::fs::remove_file(format!("{d}/slow.mark")).unwrap();
    // The same through c's own tree, read from a: the remote read is
    // released and the cancel reaches the service.
    let t0 = Instant::now();
    let (st, _, _) = sh(&format!("timeout -s INT 1 cat {a}/n/c/svc/slow/data"), T);
    assert!(!st.success() && t0.elapsed() < Duration::from_secs(10), "remote cat took {:?}", t0.elapsed());
    until("slow saw the remote interrupt", T, || Path::new(&format!("{d}/slow.mark")).exists());
    // A program that handles it: Python gets KeyboardInterrupt and goes on.
    let py = format!(
        "import os, signal, threading, time\n\
         fd = os.open('{a}/svc/slow/data', os.O_RDONLY)\n\
         threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()\n\
         t = time.time()\n\
         try:\n    os.read(fd, 100)\n    print('read returned')\n\
         except KeyboardInterrupt:\n    print('interrupted after %.1f' % (time.time() - t))\n\
         os.close(fd)\n"
    );
    let out = sh_ok(&format!("python3 -c \"{py}\""), T);
    assert!(out.starts_with("interrupted after 0."), "{out}");
}

#[test]
fn poll_and_select_on_data_files() {
    let abc = start();
    let a = abc.a();
    let py = format!(
        "import os, selectors\n\
         s = selectors.DefaultSelector()\n\
         f1 = os.open('{a}/svc/upper/data', os.O_RDWR)\n\
         f2 = os.open('{a}/svc/upper/data', os.O_RDWR)\n\
         s.register(f1, selectors.EVENT_READ, 'one'); s.register(f2, selectors.EVENT_READ, 'two')\n\
         print('idle', [k.data for k, _ in s.select(0.3)])\n\
         os.write(f2, b'second\\n')\n\
         ready = [k.data for k, _ in s.select(5)]\n\
         print('ready', ready, os.read(f2, 100))\n\
         os.write(f1, b'first\\n')\n\
         ready = [k.data for k, _ in s.select(5)]\n\
         print('ready', ready, os.read(f1, 100))\n"
    );
    let out = sh_ok(&format!("python3 -c \"{py}\""), T);
    assert_eq!(out, "idle []\nready ['two'] b'SECOND\\n'\nready ['one'] b'FIRST\\n'\n");
}

#[test]
fn hundred_blocked_readers_block_nobody() {
    let abc = start();
    let a = abc.a();
    let out = sh_ok(
        &format!(
            "for i in $(seq 100); do cat {a}/svc/slow/data > /dev/null & done
             sleep 1
             s=$(date +%s%N); ls {a}/svc > /dev/null; cat {a}/routes > /dev/null; cat {a}/n/c/machine > /dev/null; e=$(date +%s%N)
             echo $(( (e - s) / 1000000 ))
             ls /proc/$$/task > /dev/null
             kill $(jobs -p); wait"
        ),
        Duration::from_secs(40),
    );
    let ms: u64 = out.trim().parse().unwrap();
    eprintln!("ls + cat routes + remote cat with 100 blocked readers: {ms} ms");
    // Blocked readers that held up the others would make these wait
    // forever; a bound of seconds, not a speed (about 10 ms when idle).
    assert!(ms < 10_000, "took {ms} ms");
}

#[test]
fn the_tree_changes_live() {
    let mut abc = start();
    let a = abc.a();
    abc.m.spawn("late", &["serve", "-m", "c", "late", "--", "cat"]);
    let t0 = Instant::now();
    until("late in a/svc", T, || Path::new(&format!("{a}/svc/late")).exists());
    eprintln!("late visible at a after {:?}", t0.elapsed());
    abc.m.signal("late", nix::sys::signal::Signal::SIGTERM);
    until("late gone from a/svc", T, || !Path::new(&format!("{a}/svc/late")).exists());
    // A new peer, dialed through ctl: its services appear.
    let pd = abc.started.port("d");
    sh_ok(&format!("echo 'dial tcp!127.0.0.4!{pd}' > {a}/ctl"), T);
    until("dsvc in a/svc", T, || Path::new(&format!("{a}/svc/dsvc")).exists());
    assert_eq!(sh_ok(&format!("ls {a}/term"), T), "local\nloopback\nnet-b\nnet-d\n");
    assert!(sh_ok(&format!("cat {a}/term/net-d/status"), T).contains("security noise "));
    let (st, _, err) = sh(&format!("echo 'dial tcp!127.0.0.4!1' > {a}/ctl"), T);
    assert!(!st.success(), "{err}");
    // A router of another deployment has a key nobody pinned: refused,
    // and the refusal names the key.
    let pe = abc.m.start("e.toml", &Deploy::new().machine("e", 5)).port("e");
    let (st, _, _) = sh(&format!("echo 'dial tcp!127.0.0.5!{pe}' > {a}/ctl"), T);
    assert!(!st.success(), "a stranger was accepted");
    let ctl = sh_ok(&format!("cat {a}/ctl"), T);
    assert!(ctl.contains("unknown key") || ctl.contains("refused our key"), "{ctl}");
    assert!(!Path::new(&format!("{a}/term/net-e")).exists());
}

#[test]
fn unmount_on_signals_and_stale_mounts() {
    let mut abc = start();
    let b = abc.mnt("b");
    // A reader blocked in b's tree does not stop b from unmounting.
    let reader = std::process::Command::new("cat")
        .arg(b.join("svc/upper/data"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    abc.m.signal("b", nix::sys::signal::Signal::SIGTERM);
    assert!(abc.m.wait_exit("b", T).is_some_and(|s| s.success()), "{}", abc.m.log("b"));
    assert!(mnt_tests::mounts_under(&b).is_empty(), "b still mounted");
    let mut reader = reader;
    let _ = reader.kill();
    let _ = reader.wait();
    // c killed hard leaves a dead mount; the next start replaces it.
    let c = abc.mnt("c");
    abc.m.signal("c", nix::sys::signal::Signal::SIGKILL);
    abc.m.wait_exit("c", T);
    // Dead: errors as soon as the kernel's attributes of the root (a
    // second) run out.
    until("c's dead mount fails", T, || std::fs::metadata(&c).is_err());
    let deploy = abc.started.file.clone();
    abc.m.up(&deploy, "c");
    until("c mounted again", T, || std::fs::read_to_string(c.join("machine")).is_ok_and(|s| s == "c\n"));
    assert_eq!(mnt_tests::mounts_under(&c).len(), 1);
    // SIGINT unmounts too.
    abc.m.signal("a", nix::sys::signal::Signal::SIGINT);
    assert!(abc.m.wait_exit("a", T).is_some_and(|s| s.success()));
    assert!(mnt_tests::mounts_under(&abc.mnt("a")).is_empty());
}

#[test]
fn hostile_ctl_writes_fail_cleanly() {
    let abc = start();
    let a = abc.a();
    let py = format!(
        "import os, errno\n\
         def w(path, data):\n    fd = os.open(path, os.O_WRONLY)\n    try:\n        os.write(fd, data); return 'ok'\n    except OSError as e:\n        return errno.errorcode[e.errno]\n    finally:\n        os.close(fd)\n\
         print(w('{a}/ctl', b'dial \\xff\\xfe\\n'))\n\
         print(w('{a}/ctl', b'x' * 100000))\n\
         print(w('{a}/ctl', b'dial tcp!nohost\\n'))\n\
         print(w('{a}/ctl', b'hangup net-zz\\n'))\n\
         print(w('{a}/ctl', b'mount tcp!127.0.0.1!1 /n/../x\\n'))\n\
         print(w('{a}/term/net-b/ctl', b'frob\\n'))\n\
         fd = os.open('{a}/svc/upper/clone', os.O_RDONLY); n = os.read(fd, 20).decode().strip()\n\
         print(w('{a}/svc/upper/' + n + '/ctl', b'replyto /svc/../etc\\n'))\n\
         print(w('{a}/svc/upper/' + n + '/ctl', b'replyto ' + b'/svc/x ' * 40 + b'\\n'))\n"
    );
    let out = sh_ok(&format!("python3 -c \"{py}\""), T);
    assert_eq!(out, "EINVAL\n".repeat(8), "{out}");
    let log = sh_ok(&format!("cat {a}/ctl"), T);
    assert!(log.contains("bad ctl message: not UTF-8") && log.contains("100000 bytes, limit 65536"), "{log}");
    // Still serving.
    assert_eq!(sh_ok(&format!("exec 3<>{a}/svc/upper/data; echo ok >&3; head -n1 <&3 2>/dev/null"), T), "OK\n");
}
