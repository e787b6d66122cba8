//! The namespace of one machine as a table: each directory is a list of
//! (name, kind, mode) rows, plus the names that come and go (services,
//! conversations, terminals, machines). [`resolve`] turns a path into a
//! [`Node`]; lookup, readdir and getattr all derive from it and [`list`].
//! Below a dir service's `svc/S/root/` the files are real ones
//! ([`Node::Stored`]), listed and looked up by [`super::dir`].

use ns::error::{self, ENOSERVICE};
use ns::{MachineId, Router};

/// What kind of file an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FileKind {
    Dir,
    /// Text produced when opened; seekable; `cat` reads it to the end.
    File,
    /// A stream of messages: size 0, not seekable, one message a read.
    Stream,
    /// A regular file of a served directory (`svc/S/root/...`): real
    /// contents and size, read and written at offsets.
    Stored,
    /// A symbolic link of a served directory: its target is read with
    /// readlink and followed by the opener's kernel, as on NFS.
    Link,
    /// A fifo or a socket of a served directory: made there, but what it
    /// carries stays on the opener's machine (the kernel serves it).
    Fifo,
    Socket,
    /// A device node of a served directory: listed and made there (by
    /// whom that machine's kernel lets), never opened through the mesh;
    /// mounts are `nodev`, so no machine's kernel opens it either.
    CharDevice,
    BlockDevice,
}

/// One row of a directory.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub name: String,
    pub kind: FileKind,
    pub mode: u16,
    /// Size and times, for the files of a served directory.
    #[serde(default)]
    pub meta: Option<Meta>,
}

impl Entry {
    /// An entry of the tree itself: no size, times are now.
    pub fn new(name: impl Into<String>, kind: FileKind, mode: u16) -> Entry {
        Entry { name: name.into(), kind, mode, meta: None }
    }

    /// Which file it is, if its machine tells of its changes (see
    /// [`Meta::watched`]).
    pub fn watched_id(&self) -> Option<u64> {
        self.meta.and_then(|m| m.id.filter(|_| m.watched))
    }
}

/// What a file of a served directory says about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub size: u64,
    /// Seconds and nanoseconds since the epoch.
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    /// Names the file has (hard links).
    #[serde(default = "one")]
    pub nlink: u32,
    /// Its owner and group on the serving machine; `None` for the serving
    /// router's own user and group, which each machine shows as its own
    /// mount's (as sshfs's `idmap=user`).
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
    /// Which file it is, the same for each of its names and through a
    /// rename: its device and inode number on the serving machine, mixed
    /// with that machine's identity ([`file_id`]).
    #[serde(default)]
    pub id: Option<u64>,
    /// The serving machine tells the asker when it changes (`dir::watch`),
    /// so the asker's kernel may keep it for a while.
    #[serde(default)]
    pub watched: bool,
    /// A directory just made for the asker: it was empty when it began
    /// to be watched for the asker, so the asker knows all its names
    /// (none) and is told of each made from then on.
    #[serde(default)]
    pub empty_told: bool,
    /// The device a device node stands for.
    #[serde(default)]
    pub rdev: u64,
}

/// A file's identity from its device and inode number on this machine:
/// the same numbers on another machine are another file, so the host's
/// `/etc/machine-id` is mixed in (machines of one host share its disks,
/// and there the same numbers are the same file).
pub fn file_id(dev: u64, ino: u64) -> u64 {
    static HOST: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        let id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
        // FNV-1a: a spelled-out mix, the same in every build.
        id.trim().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
    });
    [dev, ino].iter().fold(*HOST, |h, &x| splitmix(h ^ x))
}

/// SplitMix64's finaliser: every bit of the input moves every bit out.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn one() -> u32 {
    1
}

type Row = (&'static str, FileKind, u16);
use FileKind::{Dir, File, Stream};

const ROOT: &[Row] = &[
    ("ctl", File, 0o644),
    ("machine", File, 0o444),
    ("n", Dir, 0o555),
    ("routes", File, 0o444),
    ("svc", Dir, 0o555),
    ("term", Dir, 0o555),
];
const SERVICE: &[Row] = &[("clone", Stream, 0o444), ("data", Stream, 0o666), ("info", File, 0o444)];
const CONV: &[Row] = &[("ctl", File, 0o644), ("data", Stream, 0o666), ("status", File, 0o444)];
const TERM: &[Row] = &[("ctl", File, 0o644), ("data", Stream, 0o444), ("status", File, 0o444)];
const DIR_MODE: u16 = 0o555;

/// What a path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Root,
    Machine,
    Ctl,
    Routes,
    SvcDir,
    Svc(String),
    SvcData(String),
    SvcClone(String),
    SvcInfo(String),
    /// A file the service's kind adds (the display's `frame.png`).
    SvcFile(String, String),
    /// The service's own ctl, for kinds that take messages (the encoder).
    SvcCtl(String),
    /// A path in a local dir service's served directory (`svc/S/root/...`),
    /// as its components below the root.
    Stored(String, Vec<String>),
    Conv(String, u64),
    ConvData(String, u64),
    ConvCtl(String, u64),
    ConvStatus(String, u64),
    TermDir,
    Term(String),
    TermCtl(String),
    TermData(String),
    TermStatus(String),
    NDir,
    /// Another machine's tree, and the path within it.
    Remote(MachineId, Vec<String>),
}

impl Node {
    pub fn kind(&self) -> FileKind {
        use Node::*;
        match self {
            Root | SvcDir | Svc(_) | Conv(..) | TermDir | Term(_) | NDir => Dir,
            SvcData(_) | SvcClone(_) | ConvData(..) | TermData(_) => Stream,
            Remote(..) | Stored(..) => Dir,
            _ => File,
        }
    }
}

fn row(rows: &[Row], name: &str) -> Option<Entry> {
    rows.iter().find(|r| r.0 == name).map(|&(n, k, m)| Entry::new(n, k, m))
}

fn rows(rows: &[Row]) -> Vec<Entry> {
    rows.iter().map(|&(n, k, m)| Entry::new(n, k, m)).collect()
}

fn dir(name: String) -> Entry {
    Entry::new(name, Dir, DIR_MODE)
}

/// What a tree shows under `svc/S/` besides its rows: the numbers of
/// conversations in use, and the files the service's kind adds.
pub trait Convs {
    fn numbers(&self, service: &str) -> Vec<u64>;
    fn files(&self, service: &str) -> Vec<String>;
    /// Whether the service's kind takes ctl messages of its own.
    fn has_ctl(&self, service: &str) -> bool;
    /// Whether the service is a dir service of this machine.
    fn has_root(&self, service: &str) -> bool;
}

fn not_found(path: &[String]) -> String {
    format!("'/{}' file does not exist", path.join("/"))
}

/// Resolves a path, given as its components, checking that every
/// dynamic name in it exists now.
pub fn resolve(r: &Router, convs: &dyn Convs, path: &[String]) -> Result<Node, String> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    let svc_exists = |s: &str| r.table().nearest(s).is_some() || !convs.numbers(s).is_empty();
    let conv_exists = |s: &str, n: &str| n.parse::<u64>().ok().filter(|n| convs.numbers(s).contains(n));
    let node = match p.as_slice() {
        [] => Node::Root,
        ["machine"] => Node::Machine,
        ["ctl"] => Node::Ctl,
        ["routes"] => Node::Routes,
        ["svc"] => Node::SvcDir,
        ["svc", s] if svc_exists(s) => Node::Svc(s.to_string()),
        ["svc", s, "root", rest @ ..] if convs.has_root(s) => {
            Node::Stored(s.to_string(), rest.iter().map(|c| c.to_string()).collect())
        }
        // A dir service elsewhere: its root is that of the replica this
        // machine would talk to. That machine serves it only if it is its
        // own (see remote::local_only), so this forwards once, never in
        // a loop.
        ["svc", s, "root", ..] if svc_exists(s) => match r.table().nearest(s).map(|rt| rt.machine.clone()) {
            Some(m) if m != *r.id() => Node::Remote(m, path.to_vec()),
            _ => return Err(not_found(path)),
        },
        ["svc", s, f] if svc_exists(s) => match *f {
            "data" => Node::SvcData(s.to_string()),
            "clone" => Node::SvcClone(s.to_string()),
            "info" => Node::SvcInfo(s.to_string()),
            "ctl" if convs.has_ctl(s) => Node::SvcCtl(s.to_string()),
            n => match conv_exists(s, n) {
                Some(n) => Node::Conv(s.to_string(), n),
                None if convs.files(s).iter().any(|f| f == n) => Node::SvcFile(s.to_string(), n.to_string()),
                None => return Err(not_found(path)),
            },
        },
        ["svc", s, n, f] => match (conv_exists(s, n), *f) {
            (Some(n), "data") => Node::ConvData(s.to_string(), n),
            (Some(n), "ctl") => Node::ConvCtl(s.to_string(), n),
            (Some(n), "status") => Node::ConvStatus(s.to_string(), n),
            _ => return Err(not_found(path)),
        },
        ["term"] => Node::TermDir,
        ["term", t] if r.shown_term(t).is_some() => Node::Term(t.to_string()),
        ["term", t, f] if r.shown_term(t).is_some() => match *f {
            "ctl" => Node::TermCtl(t.to_string()),
            "data" => Node::TermData(t.to_string()),
            "status" => Node::TermStatus(t.to_string()),
            _ => return Err(not_found(path)),
        },
        ["n"] => Node::NDir,
        ["n", m, rest @ ..] => {
            let m: MachineId = m.parse().map_err(|_| not_found(path))?;
            if r.table().best(&m).is_none() {
                return Err(not_found(path));
            }
            Node::Remote(m, rest.iter().map(|s| s.to_string()).collect())
        }
        ["svc", s, ..] if !svc_exists(s) => return Err(error::detail(ENOSERVICE, s)),
        _ => return Err(not_found(path)),
    };
    Ok(node)
}

/// The entry a node shows in its parent.
pub fn entry(node: &Node, name: &str) -> Entry {
    use Node::*;
    let table = match node {
        Machine | Ctl | Routes | SvcDir | TermDir | NDir => ROOT,
        SvcData(_) | SvcClone(_) | SvcInfo(_) => SERVICE,
        ConvData(..) | ConvCtl(..) | ConvStatus(..) => CONV,
        TermCtl(_) | TermData(_) | TermStatus(_) => TERM,
        SvcFile(..) => return Entry::new(name, File, 0o444),
        SvcCtl(_) => return Entry::new(name, File, 0o644),
        _ => &[],
    };
    row(table, name).unwrap_or_else(|| dir(name.to_string()))
}

/// The entries of a directory node.
pub fn list(r: &Router, convs: &dyn Convs, node: &Node) -> Result<Vec<Entry>, String> {
    Ok(match node {
        Node::Root => rows(ROOT),
        Node::SvcDir => {
            let mut names: Vec<String> = r.table().services().keys().map(|s| s.to_string()).collect();
            names.sort();
            names.into_iter().map(dir).collect()
        }
        Node::Svc(s) => {
            let mut v = rows(SERVICE);
            v.extend(convs.files(s).into_iter().map(|name| Entry::new(name, File, 0o444)));
            if convs.has_ctl(s) {
                v.push(Entry::new("ctl", File, 0o644));
            }
            if convs.has_root(s) {
                v.push(dir("root".into()));
            }
            v.extend(convs.numbers(s).into_iter().map(|n| dir(n.to_string())));
            v
        }
        Node::Conv(..) => rows(CONV),
        Node::TermDir => r.shown_terms().iter().map(|t| dir(t.name.clone())).collect(),
        Node::Term(_) => rows(TERM),
        Node::NDir => r.table().routes().iter().map(|rt| dir(rt.machine.to_string())).collect(),
        _ => return Err("not a directory".into()),
    })
}
