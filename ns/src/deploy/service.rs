//! Service entries: `{ name = "upper", kind = "exec", command = [...] }`,
//! and which keys each kind takes.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::tree::{Node, Result, Table};
use super::ServiceSpec;
use crate::path::ServiceName;

/// What a service does; see mesh.toml(5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKind {
    Exec,
    Pty,
    Parser,
    Gpu,
    Encoder,
    Display,
    Registry,
    Dir,
    /// Answers every message with itself: a probe for reachability and
    /// round-trip time (`mesh send`, mesh-bench).
    Echo,
    /// Reads and discards; at end of input answers the bytes it got, in
    /// decimal: a probe for throughput.
    Sink,
}

/// Who a dir service takes callers from other machines to be (`squash`),
/// as NFS's root_squash, no_root_squash and all_squash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Squash {
    /// Root of another machine is `nobody` here; other users are
    /// themselves (`"root"`, the default).
    #[default]
    Root,
    /// Everyone is themselves, root included (`"none"`).
    None,
    /// Everyone from another machine is `nobody` (`"all"`).
    All,
}

impl Squash {
    pub const ALL: [Squash; 3] = [Squash::Root, Squash::None, Squash::All];

    pub fn as_str(self) -> &'static str {
        match self {
            Squash::Root => "root",
            Squash::None => "none",
            Squash::All => "all",
        }
    }
}

impl FromStr for Squash {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Squash::ALL
            .into_iter()
            .find(|q| q.as_str() == s)
            .ok_or_else(|| format!("unknown squash {s:?}: want \"root\", \"none\" or \"all\""))
    }
}

/// Every key a service entry may have; which apply depends on the kind.
const KEYS: &[&str] =
    &["name", "kind", "command", "output", "root", "fps", "bitrate", "size", "squash", "restart", "allow", "read"];

/// Upper bound of each side of `size`: far beyond any real terminal, low
/// enough that a typo cannot ask the parser for a gigantic screen.
const MAX_SIDE: u16 = 1000;

impl ServiceKind {
    pub const ALL: [ServiceKind; 10] = [
        ServiceKind::Exec,
        ServiceKind::Pty,
        ServiceKind::Parser,
        ServiceKind::Gpu,
        ServiceKind::Encoder,
        ServiceKind::Display,
        ServiceKind::Registry,
        ServiceKind::Dir,
        ServiceKind::Echo,
        ServiceKind::Sink,
    ];

    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Exec => "exec",
            ServiceKind::Pty => "pty",
            ServiceKind::Parser => "parser",
            ServiceKind::Gpu => "gpu",
            ServiceKind::Encoder => "encoder",
            ServiceKind::Display => "display",
            ServiceKind::Registry => "registry",
            ServiceKind::Dir => "dir",
            ServiceKind::Echo => "echo",
            ServiceKind::Sink => "sink",
        }
    }

    /// Keys this kind takes besides `name` and `kind`. Anything else is
    /// refused rather than ignored, so a misplaced setting is noticed.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            ServiceKind::Exec => &["command"],
            // The size is the pseudo-terminal's window size; the command
            // may be started again in its conversation.
            ServiceKind::Pty => &["command", "size", "restart"],
            // The screen it keeps, and how often it sends a snapshot of it.
            ServiceKind::Parser => &["size", "fps"],
            ServiceKind::Encoder => &["fps", "bitrate"],
            ServiceKind::Display => &["output"],
            // Who callers from other machines are taken to be.
            // And who may read its files but not change them.
            ServiceKind::Dir => &["root", "squash", "read"],
            ServiceKind::Gpu | ServiceKind::Registry | ServiceKind::Echo | ServiceKind::Sink => &[],
        }
    }

    /// Keys this kind cannot do without, and why.
    fn required(self) -> &'static [(&'static str, &'static str)] {
        match self {
            ServiceKind::Exec | ServiceKind::Pty => &[("command", "kind exec and pty run a command")],
            ServiceKind::Dir => &[("root", "kind dir serves the tree under root")],
            _ => &[],
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        ServiceKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let all: Vec<&str> = ServiceKind::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown kind {s:?}; kinds: {}", all.join(", "))
        })
    }
}

/// Reads one entry of a machine's `services` array.
pub(super) fn service(node: &Node<'_, '_>) -> Result<ServiceSpec> {
    let t = node.table()?;
    t.deny_unknown(KEYS)?;
    let name: ServiceName = required(&t, "name", "every service has a name")?.parse()?;
    let kind: ServiceKind = required(&t, "kind", "every service has a kind")?.parse()?;
    let mut spec = ServiceSpec {
        name,
        kind,
        command: Vec::new(),
        output: None,
        root: None,
        fps: None,
        bitrate: None,
        size: None,
        squash: Squash::default(),
        restart: super::Restart::Never,
        allow: None,
        read: Vec::new(),
        line: node.line(),
    };
    for e in t.entries() {
        if matches!(e.key, "name" | "kind") {
            continue;
        }
        // Who may open it: any kind.
        if e.key == "allow" {
            spec.allow = Some(rules(&e.node)?);
            continue;
        }
        if !kind.keys().contains(&e.key) {
            return Err(t.key_err(&e, format!("not a key of kind {kind}")));
        }
        let v = &e.node;
        match e.key {
            "command" => spec.command = command(v)?,
            "output" => spec.output = Some(path(v)?),
            "root" => spec.root = Some(path(v)?),
            "fps" => spec.fps = Some(ranged(v, 1, 240, "1 to 240 a second")?),
            "bitrate" => spec.bitrate = Some(ranged(v, 1, u32::MAX, "bits a second, 1 to 4294967295")?),
            "size" => spec.size = Some(size(v)?),
            "squash" => spec.squash = v.str()?.parse().map_err(|e: String| v.err(e))?,
            "restart" => spec.restart = v.str()?.parse().map_err(|e: String| v.err(e))?,
            "read" => spec.read = rules(v)?,
            // deny_unknown and kind.keys() leave no other key.
            _ => return Err(t.key_err(&e, "unknown key")),
        }
    }
    for (key, why) in kind.required() {
        if t.get(key).is_none() {
            return Err(t.missing(key, why));
        }
    }
    Ok(spec)
}

/// `allow` or `read`: an array of rules (`"*"`, `"M"`, `"M/U"`,
/// `"*/U"`), each an error naming its line when malformed.
pub(super) fn rules(v: &Node<'_, '_>) -> Result<Vec<crate::policy::Who>> {
    let mut out = Vec::new();
    for item in v.array()? {
        let who: crate::policy::Who = item.str()?.parse().map_err(|e: String| item.err(e))?;
        if !out.contains(&who) {
            out.push(who);
        }
    }
    Ok(out)
}

fn required<'a, 'i>(t: &Table<'a, 'i>, key: &str, why: &str) -> Result<Node<'a, 'i>> {
    t.get(key).ok_or_else(|| t.missing(key, why))
}

/// A program and its arguments: at least the program, which is not empty.
fn command(v: &Node<'_, '_>) -> Result<Vec<String>> {
    let argv = v.array()?.iter().map(|a| a.str().map(str::to_string)).collect::<Result<Vec<_>>>()?;
    match argv.first() {
        None => Err(v.err("empty command: want [\"program\", \"arg\", ...]")),
        Some(p) if p.is_empty() => Err(v.err("empty program name")),
        Some(_) => Ok(argv),
    }
}

/// A file path; may be relative (to where `mesh up` runs).
pub(super) fn path(v: &Node<'_, '_>) -> Result<PathBuf> {
    match v.str()? {
        "" => Err(v.err("empty path")),
        s => Ok(PathBuf::from(s)),
    }
}

/// An integer in `lo..=hi`; `want` says what is wanted, for the error.
fn ranged(v: &Node<'_, '_>, lo: u32, hi: u32, want: &str) -> Result<u32> {
    let n = v.int()?;
    u32::try_from(n)
        .ok()
        .filter(|n| (lo..=hi).contains(n))
        .ok_or_else(|| v.err(format!("{n} is out of range: want {want}")))
}

/// `"COLSxROWS"`, like `"80x24"`.
fn size(v: &Node<'_, '_>) -> Result<(u16, u16)> {
    let s = v.str()?;
    let side =
        |d: &str| d.parse::<u16>().ok().filter(|n| (1..=MAX_SIDE).contains(n) && d.bytes().all(|b| b.is_ascii_digit()));
    match s.split_once('x').map(|(c, r)| (side(c), side(r))) {
        Some((Some(cols), Some(rows))) => Ok((cols, rows)),
        _ => Err(v.err(format!("bad size {s:?}: want COLSxROWS, each 1 to {MAX_SIDE}, like \"80x24\""))),
    }
}
