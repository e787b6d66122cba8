//! Namespace files: the lines `mesh ns -f FILE` builds a namespace from,
//! in the syntax of Plan 9's namespace(6) (see mesh-namespace(5)).
//!
//! ```text
//! # comments run to the end of a line
//! bind -a /n/b/svc /svc           # mesh paths: in the tree
//! mount tcp!10.0.0.9!7001 /n/far  # dial a machine, graft its tree
//! unmount /svc/old
//! bind /n/b/svc/data/root /srv/data   # onto a path of the host
//! cd /svc
//! . /etc/mesh/common.ns           # include another file
//! ```
//!
//! A path is a mesh path when its first name is one of the tree's root
//! (`svc`, `n`, `term`, `routes`, `machine`, `ctl`); any other absolute
//! path is the host's. Every error names the file and line.

use std::path::{Path, PathBuf};

use crate::bind::{parse_bind, parse_path, parse_unmount, show, Order};

/// Names at the root of the mesh tree: paths starting with one are the
/// mesh's, the others the host's.
pub const MESH_ROOT: &[&str] = &["svc", "n", "term", "routes", "machine", "ctl"];
/// Includes nest at most this deep.
const MAX_DEPTH: usize = 8;

/// A path in a namespace file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// In the mesh tree, as components.
    Mesh(Vec<String>),
    /// On the host.
    Host(PathBuf),
}

impl Place {
    fn parse(p: &str) -> Result<Place, String> {
        let parts = parse_path(p)?;
        match parts.first() {
            Some(first) if MESH_ROOT.contains(&first.as_str()) => Ok(Place::Mesh(parts)),
            _ => Ok(Place::Host(PathBuf::from(p))),
        }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Mesh(p) => write!(f, "{}", show(p)),
            Place::Host(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One operation of a namespace file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A bind within the mesh tree (the router's view does it).
    Bind {
        order: Order,
        create: bool,
        old: Vec<String>,
        new: Vec<String>,
    },
    /// A mesh path (or a host path) bound onto a host path: a bind mount
    /// in the private mount namespace; replace only.
    HostBind {
        old: Place,
        new: PathBuf,
    },
    /// `mount DIALSTRING /n/NAME`.
    Mount {
        dial: String,
        name: Vec<String>,
    },
    Unmount {
        old: Option<Vec<String>>,
        new: Vec<String>,
    },
    /// The command's working directory.
    Cd(Place),
}

/// An operation and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub file: String,
    pub line: usize,
    pub op: Op,
    /// The line as written, for errors found when it is applied.
    pub text: String,
}

impl Line {
    /// An error about this line: `FILE:LINE: what`.
    pub fn error(&self, what: impl std::fmt::Display) -> String {
        format!("{}:{}: {what}", self.file, self.line)
    }
}

/// Reads and parses a namespace file and the files it includes.
pub fn load(path: &Path) -> Result<Vec<Line>, String> {
    let mut out = Vec::new();
    load_into(path, &mut out, &mut Vec::new())?;
    Ok(out)
}

fn load_into(path: &Path, out: &mut Vec<Line>, stack: &mut Vec<PathBuf>) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path.display().to_string();
    let full = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    stack.push(full);
    for item in parse_lines(&name, &text)? {
        match item {
            Item::Line(l) => out.push(l),
            Item::Include(line, file) => {
                // Relative includes are relative to the including file.
                let inc = path.parent().map(|d| d.join(&file)).unwrap_or_else(|| PathBuf::from(&file));
                let canon = std::fs::canonicalize(&inc).unwrap_or_else(|_| inc.clone());
                if stack.contains(&canon) {
                    return Err(format!("{name}:{line}: . {file}: includes itself"));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("{name}:{line}: . {file}: includes nest deeper than {MAX_DEPTH}"));
                }
                load_into(&inc, out, stack)
                    .map_err(|e| if e.contains(':') { e } else { format!("{name}:{line}: {e}") })?;
            }
        }
    }
    stack.pop();
    Ok(())
}

/// A parsed line, or an include still to read.
#[derive(Debug)]
pub enum Item {
    Line(Line),
    Include(usize, String),
}

/// Parses the text of one file; includes are left to the caller.
pub fn parse_lines(file: &str, text: &str) -> Result<Vec<Item>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |e: String| format!("{file}:{n}: {e}");
        let words: Vec<&str> = line.split_whitespace().collect();
        let op = match words.as_slice() {
            [".", f] => {
                out.push(Item::Include(n, f.to_string()));
                continue;
            }
            ["bind", args @ ..] => bind(args).map_err(|e| err(format!("bind: {e}")))?,
            ["mount", dial, name] => {
                dial.parse::<dial::DialString>().map_err(|e| err(format!("mount: {e}")))?;
                let name = parse_path(name).map_err(|e| err(format!("mount: {e}")))?;
                if name.len() != 2 || name[0] != "n" {
                    return Err(err(format!("mount: {}: want /n/NAME", show(&name))));
                }
                Op::Mount { dial: dial.to_string(), name }
            }
            ["mount", ..] => return Err(err("mount: want mount DIALSTRING /n/NAME".into())),
            ["unmount", args @ ..] => {
                let (old, new) = parse_unmount(args).map_err(|e| err(format!("unmount: {e}")))?;
                Op::Unmount { old, new }
            }
            ["cd", dir] => Op::Cd(Place::parse(dir).map_err(|e| err(format!("cd: {e}")))?),
            ["cd", ..] => return Err(err("cd: want cd DIR".into())),
            [verb, ..] => return Err(err(format!("unknown command {verb:?} (want bind, mount, unmount, cd or .)"))),
            [] => continue,
        };
        out.push(Item::Line(Line { file: file.to_string(), line: n, op, text: line.to_string() }));
    }
    Ok(out)
}

fn bind(args: &[&str]) -> Result<Op, String> {
    let n = args.len();
    if n < 2 {
        return Err("want bind [-a|-b|-c] OLD NEW".into());
    }
    let (old, new) = (Place::parse(args[n - 2])?, Place::parse(args[n - 1])?);
    match (old, new) {
        (Place::Mesh(_), Place::Mesh(_)) => {
            let (order, create, old, new) = parse_bind(args)?;
            Ok(Op::Bind { order, create, old, new })
        }
        (old, Place::Host(new)) => {
            if n != 2 {
                return Err(format!("{}: onto a host path, bind replaces only (no flags)", new.display()));
            }
            Ok(Op::HostBind { old, new })
        }
        (Place::Host(old), Place::Mesh(new)) => {
            Err(format!("{}: a host path cannot be bound into the mesh tree ({})", old.display(), show(&new)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(text: &str) -> Vec<Op> {
        parse_lines("t.ns", text)
            .unwrap()
            .into_iter()
            .map(|i| match i {
                Item::Line(l) => l.op,
                Item::Include(..) => panic!("include"),
            })
            .collect()
    }

    fn p(s: &str) -> Vec<String> {
        parse_path(s).unwrap()
    }

    #[test]
    fn every_command() {
        let got = ops("# a comment\n\nbind -a /n/b/svc /svc  # trailing\nmount tcp!127.0.0.9!7001 /n/far\nunmount /svc\nunmount /n/b/svc /svc\nbind /n/b/svc/data/root /srv/data\ncd /svc\n");
        assert_eq!(
            got,
            vec![
                Op::Bind { order: Order::After, create: false, old: p("/n/b/svc"), new: p("/svc") },
                Op::Mount { dial: "tcp!127.0.0.9!7001".into(), name: p("/n/far") },
                Op::Unmount { old: None, new: p("/svc") },
                Op::Unmount { old: Some(p("/n/b/svc")), new: p("/svc") },
                Op::HostBind { old: Place::Mesh(p("/n/b/svc/data/root")), new: "/srv/data".into() },
                Op::Cd(Place::Mesh(p("/svc"))),
            ]
        );
    }

    #[test]
    fn errors_carry_file_and_line() {
        let cases = [
            ("bind /svc\n", "t.ns:1: bind: want bind"),
            ("\n\nfrob /svc\n", "t.ns:3: unknown command \"frob\""),
            ("bind -x /n/b/svc /svc\n", "t.ns:1: bind: bad flags -x"),
            ("# ok\nmount tcp!host /n/x\n", "t.ns:2: mount: bad dial string"),
            ("mount tcp!h!1 /svc/x\n", "t.ns:1: mount: /svc/x: want /n/NAME"),
            ("bind /tmp /svc/x\n", "t.ns:1: bind: /tmp: a host path cannot be bound into the mesh tree"),
            ("bind -a /n/b/svc /srv\n", "t.ns:1: bind: /srv: onto a host path, bind replaces only"),
            ("bind /n/../etc /svc\n", "t.ns:1: bind: /n/../etc: . and .. are not allowed"),
            ("cd\n", "t.ns:1: cd: want cd DIR"),
            ("unmount\n", "t.ns:1: unmount: want unmount"),
            ("cd relative\n", "t.ns:1: cd: relative: not an absolute path"),
        ];
        for (text, want) in cases {
            let e = parse_lines("t.ns", text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn includes_nest_and_loops_are_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("main.ns"), "bind /n/b/svc /svc\n. inc.ns\ncd /svc\n").unwrap();
        std::fs::write(d.path().join("inc.ns"), "# included\nunmount /svc\n").unwrap();
        let lines = load(&d.path().join("main.ns")).unwrap();
        let where_: Vec<(String, usize)> = lines
            .iter()
            .map(|l| (Path::new(&l.file).file_name().unwrap().to_string_lossy().into_owned(), l.line))
            .collect();
        assert_eq!(where_, [("main.ns".into(), 1), ("inc.ns".into(), 2), ("main.ns".into(), 3)]);
        std::fs::write(d.path().join("inc.ns"), ". main.ns\n").unwrap();
        assert!(load(&d.path().join("main.ns")).unwrap_err().contains("includes itself"));
        std::fs::write(d.path().join("inc.ns"), "bind /svc\n").unwrap();
        let e = load(&d.path().join("main.ns")).unwrap_err();
        assert!(e.contains("inc.ns:1: bind: want bind"), "{e}");
        let e = load(&d.path().join("none.ns")).unwrap_err();
        assert!(e.contains("none.ns"), "{e}");
    }
}
