//! The manual and the shell integration, checked with the real tools:
//! every page in man/ renders with `man --warnings -l` without a warning,
//! the completion scripts `mesh completions` prints (and the loaders
//! cmd/install.sh installs) are accepted by the shells, and `mesh graph`
//! draws the built-in mesh and a live one.
//!
//! Pages are found by globbing man/*.[0-9], so a page added later is
//! checked without touching this file. zsh, fish and dot are optional
//! here: a check that needs one is skipped, saying so, where it is absent.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use mnt_tests::{mesh_bin, until, Deploy, Mesh};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// man/*.[0-9], sorted.
fn pages() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("man"))
        .expect("read man/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|x| x.to_str()).is_some_and(|x| x.len() == 1 && x.as_bytes()[0].is_ascii_digit())
        })
        .collect();
    v.sort();
    v
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a shell's syntax check on `script`.
fn syntax_ok(shell: &str, flag: &str, what: &str, script: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("script");
    std::fs::write(&file, script).expect("write script");
    let out = run(Command::new(shell).arg(flag).arg(&file));
    assert!(out.status.success(), "{shell} {flag} refuses {what}: {}", String::from_utf8_lossy(&out.stderr));
}

fn mesh(args: &[&str]) -> String {
    let out = run(Command::new(mesh_bin()).args(args));
    assert!(out.status.success(), "mesh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn every_page_renders_without_warnings() {
    assert!(have("man"), "man is not installed; ./setup.sh installs man-db");
    let pages = pages();
    for want in ["mesh.1", "mesh.4", "mesh.toml.5", "dial.7"] {
        assert!(pages.iter().any(|p| p.ends_with(want)), "man/{want} is missing");
    }
    for page in &pages {
        // man's warnings leave out characters troff cannot show: a form
        // feed where `\fR` was meant rendered as nothing.
        let text = std::fs::read(page).expect("read page");
        let line = text.split(|&b| b == b'\n').position(|l| l.iter().any(|&b| b < 0x20 && b != b'\t'));
        assert_eq!(line, None, "{}: a control character on that line (0-based)", page.display());
        let out = run(Command::new("man")
            .args(["--warnings", "-l"])
            .arg(page)
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "man --warnings -l {}: {}\n{stderr}",
            page.display(),
            out.status
        );
        assert!(!out.stdout.is_empty(), "{} renders empty", page.display());
        // whatis and apropos read the NAME line.
        let out = run(Command::new("lexgrog").arg(page));
        assert!(out.status.success(), "lexgrog cannot read the NAME section of {}", page.display());
    }
}

#[test]
fn completion_scripts_are_accepted_by_the_shells() {
    let bash = mesh(&["completions", "bash"]);
    assert!(bash.contains("complete -F _mesh"), "{bash}");
    syntax_ok("bash", "-n", "mesh completions bash", bash.as_bytes());
    // Not only valid: completing `mesh gr` offers graph.
    let script = r#"source <("$MESH" completions bash); COMP_WORDS=(mesh gr); COMP_CWORD=1; _mesh mesh gr mesh; echo "${COMPREPLY[*]}""#;
    let out = run(Command::new("bash").args(["-c", script]).env("MESH", mesh_bin()));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "graph", "{}", String::from_utf8_lossy(&out.stderr));
    for (shell, flag) in [("zsh", "-n"), ("fish", "--no-execute")] {
        let text = mesh(&["completions", shell]);
        assert!(text.contains("mesh"), "{text}");
        if have(shell) {
            syntax_ok(shell, flag, &format!("mesh completions {shell}"), text.as_bytes());
        } else {
            eprintln!("{shell} is not installed: its completions are not checked");
        }
    }
}

#[test]
fn install_puts_pages_and_completions_in_place() {
    let dest = tempfile::tempdir().expect("tempdir");
    let out = run(Command::new(root().join("cmd/install.sh")).arg("--system").env("DESTDIR", dest.path()));
    assert!(out.status.success(), "install.sh: {}", String::from_utf8_lossy(&out.stderr));
    let d = dest.path();
    for page in pages() {
        let name = page.file_name().and_then(|n| n.to_str()).expect("page name");
        let section = &name[name.len() - 1..];
        let installed = d.join(format!("usr/local/share/man/man{section}/{name}"));
        assert_eq!(
            std::fs::read(&installed).ok(),
            std::fs::read(&page).ok(),
            "{} not installed as {}",
            page.display(),
            installed.display()
        );
    }
    let loaders = [
        ("bash", "-n", "usr/local/share/bash-completion/completions/mesh"),
        ("zsh", "-n", "usr/local/share/zsh/site-functions/_mesh"),
        ("fish", "--no-execute", "etc/fish/completions/mesh.fish"),
    ];
    for (shell, flag, path) in loaders {
        let text = std::fs::read(d.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(String::from_utf8_lossy(&text).contains(&format!("mesh completions {shell}")), "{path}");
        if have(shell) {
            syntax_ok(shell, flag, path, &text);
        }
    }
}

#[test]
fn graph_of_the_builtin_mesh() {
    let dot = mesh(&["graph"]);
    assert!(dot.contains("digraph mesh {"), "{dot}");
    for m in ["a", "b", "c"] {
        assert!(dot.contains(&format!("\n    \"{m}\" [shape=box")), "no machine {m}:\n{dot}");
    }
    let link = |from: &str, to: &str| {
        dot.lines().find(|l| l.trim_start().starts_with(&format!("\"{from}\" -> \"{to}\" ["))).map(str::to_string)
    };
    let ab = link("a", "b").unwrap_or_else(|| panic!("no a-b link:\n{dot}"));
    assert!(ab.contains("label=\"tcp noise\"") && ab.contains("taillabel=\"net-b\""), "{ab}");
    let bc = link("b", "c").unwrap_or_else(|| panic!("no b-c link:\n{dot}"));
    assert!(bc.contains("label=\"ws noise\""), "{bc}");
    assert!(link("a", "c").is_none(), "a and c are not linked:\n{dot}");
    assert!(dot.contains("\"b/svc/upper\""), "{dot}");
    if have("dot") {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("mesh.dot");
        std::fs::write(&file, &dot).expect("write dot");
        let out = run(Command::new("dot").arg("-Tsvg").arg(&file));
        assert!(out.status.success() && out.stderr.is_empty(), "dot: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
    } else {
        eprintln!("graphviz is not installed: the picture is not rendered");
    }
}

#[test]
fn graph_of_a_running_mesh() {
    let mut m = Mesh::new();
    let deploy = Deploy::abc().service("c", r#"{ name = "upper", kind = "exec", command = ["tr", "a-z", "A-Z"] }"#);
    let deploy = m.start("line.toml", &deploy).file;
    until("a routes to upper over two hops", Duration::from_secs(15), || {
        m.routes("a").contains("upper c net-b 2 a!b!c\n")
    });
    let dot = m.ok(&["graph", "-m", "a"], "");
    let line = |start: &str| {
        dot.lines()
            .map(str::trim)
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no {start:?} in\n{dot}"))
            .to_string()
    };
    assert!(line("\"a\" [shape=box").contains("this router"));
    assert!(line("\"c\" [shape=box").contains("2 hops via net-b\\na!b!c"));
    let ab = line("\"a\" -> \"b\" [");
    assert!(ab.contains("label=\"tcp noise up\""), "{ab}");
    // a sees b-c only as a hop of its route to c.
    assert!(line("\"b\" -> \"c\" [").contains("style=dashed"));
    assert!(dot.contains("\"c/svc/upper\""));
    // From b, both links are its own terminals.
    let dot = m.ok(&["graph", "-m", "b"], "");
    assert!(dot.contains("\"b\" -> \"c\" [label=\"ws noise up\""), "{dot}");
    // A file and a router at once is a usage error.
    let out = m.run(&["graph", deploy.to_str().expect("utf-8 path"), "-m", "a"], "");
    assert_eq!(out.status.code(), Some(2));
}
