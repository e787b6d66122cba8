//! Namespaces: bind and union directories in a machine's ctl, and
//! `mesh ns` giving a command a private view of the tree, with real
//! mounts and real processes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mnt_tests::{sh, sh_ok, until, Deploy, Mesh};

const T: Duration = Duration::from_secs(20);

struct Ab {
    m: Mesh,
    dir: PathBuf,
}

impl Ab {
    fn a(&self) -> PathBuf {
        self.dir.join("a")
    }

    /// `mesh ns -m a ARGS...` with a namespace file holding `text`.
    fn ns(&self, name: &str, text: &str, script: &str) -> (std::process::ExitStatus, String, String) {
        let f = self.m.file(name, text);
        let out = self.m.run(&["ns", "-m", "a", "-f", &f.display().to_string(), "--", "sh", "-c", script], "");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn start() -> Ab {
    let mut m = Mesh::new();
    let dir = m.dir.path().to_path_buf();
    let deploy = Deploy::new()
        .machine("a", 1)
        .machine("b", 2)
        .dial("a", "b")
        .mount("a")
        .service("a", r#"{ name = "echo", kind = "exec", command = ["cat"] }"#)
        .service("b", r#"{ name = "upper", kind = "exec", command = ["tr", "a-z", "A-Z"] }"#);
    m.start("ab.toml", &deploy);
    let ab = Ab { m, dir };
    let a = ab.a();
    until("a sees b", T, || a.join("svc/upper").exists() && a.join("n/b/term/net-a").exists());
    ab
}

fn ls(p: &Path) -> String {
    sh_ok(&format!("ls -f {} | grep -v '^\\.'", p.display()), T)
}

fn view_mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("/views/"))
        .count()
}

#[test]
fn union_lookups_and_readdir_order() {
    let ab = start();
    let a = ab.a();
    let ctl = a.join("ctl");
    let term = a.join("term");
    assert_eq!(ls(&term), "local\nloopback\nnet-b\n");
    // After: a's entries, then b's new ones; a name both have is a's.
    sh_ok(&format!("echo 'bind -a /n/b/term /term' > {}", ctl.display()), T);
    until("union listed", T, || ls(&term) == "local\nloopback\nnet-b\nnet-a\n");
    assert!(
        sh_ok(&format!("cat {}/net-a/ctl", term.display()), T).starts_with("net "),
        "b's net-a, found through the union"
    );
    assert_eq!(
        sh_ok(&format!("cat {}/local/ctl", term.display()), T),
        sh_ok(&format!("cat {}/n/a/term/local/ctl", a.display()), T)
    );
    assert!(sh_ok(&format!("cat {}", ctl.display()), T).contains("bind -a /n/b/term /term\n"), "ctl lists the binds");
    // Before: b's first.
    sh_ok(&format!("echo 'unmount /term' > {0}; echo 'bind -b /n/b/term /term' > {0}", ctl.display()), T);
    until("b first", T, || ls(&term) == "local\nloopback\nnet-a\nnet-b\n");
    sh_ok(&format!("echo 'unmount /n/b/term /term' > {}", ctl.display()), T);
    until("union undone", T, || ls(&term) == "local\nloopback\nnet-b\n");
    // A replacing bind of a service: /svc/echo is now b's upper.
    sh_ok(&format!("echo 'bind /n/b/svc/upper /svc/echo' > {}", ctl.display()), T);
    let out = sh_ok(&format!("exec 3<>{}/svc/echo/data; echo bound >&3; head -n1 <&3 2>/dev/null", a.display()), T);
    assert_eq!(out, "BOUND\n");
    // Bad binds fail the write, the reason readable in ctl.
    for (msg, why) in [
        ("bind /n/b/svc/nope /svc/echo", "/n/b/svc/nope"),
        ("bind -a /svc/echo/data /term", "union needs two directories"),
        ("bind -ab /n/b/term /term", "bad flags"),
        ("unmount /svc", "not a mount point"),
        ("bind /n/../x /svc", ".."),
    ] {
        let (st, _, _) = sh(&format!("echo '{msg}' > {}", ctl.display()), T);
        assert!(!st.success(), "{msg} accepted");
        let text = sh_ok(&format!("cat {}", ctl.display()), T);
        assert!(text.lines().any(|l| l.starts_with("event bad ctl message") && l.contains(why)), "{msg}: {text}");
    }
}

#[test]
fn mesh_ns_views_are_private_to_their_process() {
    let ab = start();
    let a = ab.a();
    let (r1, r2) = (ab.dir.join("ready1"), ab.dir.join("ready2"));
    // Two commands at once, each in its own namespace; each waits for
    // the other so that both views exist together.
    let script = |me: &Path, other: &Path| {
        format!(
            "touch {me}; i=0; while [ ! -e {other} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; ls -f {a}/term | grep -v '^\\.' | tr '\\n' ' '; echo; exec 3<>{a}/svc/echo/data; echo x >&3; head -n1 <&3 2>/dev/null",
            me = me.display(),
            other = other.display(),
            a = a.display()
        )
    };
    let f1 = ab.m.file(
        "one.ns",
        "# b's terminals after a's, b's upper as echo\nbind -a /n/b/term /term\nbind /n/b/svc/upper /svc/echo\n",
    );
    let f2 = ab.m.file("two.ns", "bind /n/b/term /term\n");
    let spawn = |f: &Path, s: String| {
        ab.m.cmd(&["ns", "-m", "a", "-f", &f.display().to_string(), "--", "sh", "-c", &s])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let p1 = spawn(&f1, script(&r1, &r2));
    let p2 = spawn(&f2, script(&r2, &r1));
    until("both views up", T, || r1.exists() && r2.exists());
    // Meanwhile everyone else sees the tree as it was.
    assert_eq!(ls(&a.join("term")), "local\nloopback\nnet-b\n");
    let (o1, o2) = (p1.wait_with_output().unwrap(), p2.wait_with_output().unwrap());
    let (s1, s2) = (String::from_utf8_lossy(&o1.stdout), String::from_utf8_lossy(&o2.stdout));
    assert!(
        o1.status.success() && o2.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o1.stderr),
        String::from_utf8_lossy(&o2.stderr)
    );
    assert_eq!(s1, "local loopback net-b net-a \nX\n");
    assert_eq!(s2, "local loopback net-a \nx\n");
    // Gone with them: no bind in a's ctl, no view mounted anywhere.
    assert!(!sh_ok(&format!("cat {}/ctl", a.display()), T).contains("bind "));
    until("views unmounted", T, || view_mounts() == 0);
    assert_eq!(ls(&a.join("term")), "local\nloopback\nnet-b\n");
}

#[test]
fn mesh_ns_binds_onto_host_paths_and_reports_bad_lines() {
    let ab = start();
    let host = ab.dir.join("hostdir");
    std::fs::create_dir(&host).unwrap();
    // b's services appear on an ordinary directory, for this command only.
    let (st, out, err) = ab.ns(
        "host.ns",
        &format!("bind /n/b/svc {}\ncd /n/b\n", host.display()),
        &format!("ls {}; pwd", host.display()),
    );
    assert!(st.success(), "{err}");
    assert_eq!(out, format!("echo\nupper\n{}\n", ab.a().join("n/b").display()));
    assert_eq!(std::fs::read_dir(&host).unwrap().count(), 0, "the host sees its own directory");
    // The exit status is the command's.
    let (st, _, _) = ab.ns("empty.ns", "", "exit 7");
    assert_eq!(st.code(), Some(7));
    // Bad lines: the parser's, with file and line, before anything runs.
    let (st, _, err) = ab.ns("bad.ns", "# fine\nbind /n/b/svc /svc\nfrob /x\n", "touch ran");
    assert!(!st.success() && err.contains("bad.ns:3: unknown command \"frob\""), "{err}");
    // And the router's, found when the line is applied.
    let (st, _, err) = ab.ns("nope.ns", "\nbind /n/b/svc/nope /svc/echo\n", "true");
    assert!(!st.success() && err.contains("nope.ns:2: ") && err.contains("/n/b/svc/nope"), "{err}");
    let (st, _, err) = ab.ns("missing.ns", "bind /n/b/svc /no/such/dir\n", "true");
    assert!(!st.success() && err.contains("missing.ns:1: /no/such/dir"), "{err}");
    assert!(!ab.dir.join("ran").exists() && !Path::new("ran").exists());
    until("views unmounted", T, || view_mounts() == 0);
}
