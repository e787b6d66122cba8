//! The deployment file: one TOML file that places every machine, service
//! and pipeline of the mesh (mesh.toml(5)).
//!
//! [`parse`] turns the text into a [`Deployment`] and checks it whole:
//! unknown keys, bad names, bad dial strings, keys that make no sense for a
//! service's kind, and references to machines that are not there are all
//! errors. Each [`DeployError`] names the full key path
//! (`machines.a.services[1].kind`; array indices count from 0) and the
//! 1-based line, because the person reading it has to fix the file.
//!
//! [`BUILTIN`] is the seed's three-machine mesh on loopback, what `mesh up`
//! runs with no file; `examples/abc.toml` is the same text.
//!
//! Submodules: `tree` reads toml's spanned tree with key paths; `machine`,
//! `service` and `pipeline` read those parts; `write` prints a deployment
//! back as TOML.

mod machine;
mod pipeline;
mod service;
mod tree;
mod write;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dial::DialString;

use crate::path::{Addr, MachineId, ServiceName};

pub use service::{ServiceKind, Squash};

/// The built-in deployment: machines a, b and c on 127.0.0.1-3.
pub const BUILTIN: &str = include_str!("abc.toml");

/// The name [`builtin`] gives its text in errors.
const BUILTIN_FILE: &str = "<builtin>";

/// A whole mesh, as the deployment file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub machines: BTreeMap<MachineId, Machine>,
    pub pipelines: Vec<Pipeline>,
}

/// One machine (one router) of the mesh: `[machines.ID]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub id: MachineId,
    /// Where it accepts network terminals from peers (`listen`).
    pub listen: Vec<DialString>,
    /// Peers it dials (`dial`); never a `*` host.
    pub dial: Vec<DialString>,
    /// Where its tree is mounted (`mount`); absolute.
    pub mount: Option<PathBuf>,
    /// The machine whose registry service it uses (`registry`).
    pub registry: Option<MachineId>,
    /// Path-vector gossip on this machine's links (`gossip`, default true).
    pub gossip: bool,
    /// Its key-pair file (`key`); reserved for link security.
    pub key: Option<PathBuf>,
    /// Pinned public keys of peers (`[machines.ID.peers]`); reserved.
    pub peers: BTreeMap<MachineId, String>,
    /// Links without security (`insecure`, default false); reserved.
    pub insecure: bool,
    /// Mount with FUSE `allow_other` (`allow_other`, default false).
    pub allow_other: bool,
    /// How long a lost link may come back and resume its session
    /// (`resume`, default 30 s; zero: never).
    pub resume: std::time::Duration,
    /// `policy = "deny"`: services without `allow` are closed.
    pub deny_by_default: bool,
    /// `tree`: who may reach the machine's tree outside its services.
    pub tree: Option<Vec<crate::policy::Who>>,
    /// `ctl`: who may write its `ctl` files from elsewhere.
    pub ctl: Option<Vec<crate::policy::Who>>,
    pub services: Vec<ServiceSpec>,
}

/// The grace period of a lost link when `resume` is not given.
pub const DEFAULT_RESUME: std::time::Duration = std::time::Duration::from_secs(30);

impl Machine {
    /// The rules its services' `allow` and `read` keys and its `policy`
    /// make.
    pub fn policy(&self) -> crate::policy::Policy {
        let rules = self.services.iter().filter(|s| s.allow.is_some() || !s.read.is_empty());
        // `read` alone lets no one change the files (not everyone, as the
        // machine's default of allow would).
        let rule = |s: &ServiceSpec| crate::policy::Rule {
            allow: s.allow.clone().or_else(|| (!s.read.is_empty()).then(Vec::new)),
            read: s.read.clone(),
        };
        let rules = rules.map(|s| (s.name.clone(), rule(s)));
        crate::policy::Policy {
            deny_by_default: self.deny_by_default,
            rules: rules.collect(),
            tree: self.tree.clone(),
            ctl: self.ctl.clone(),
        }
    }
}

/// One service of a machine: an entry of its `services` array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: ServiceName,
    pub kind: ServiceKind,
    /// Program and arguments (exec, pty).
    pub command: Vec<String>,
    /// Output file (display).
    pub output: Option<PathBuf>,
    /// Root of the served tree (dir).
    pub root: Option<PathBuf>,
    /// Frames or snapshots a second, 1 to 240 (parser, encoder).
    pub fps: Option<u32>,
    /// Bits a second, more than 0 (encoder).
    pub bitrate: Option<u32>,
    /// Terminal size as (columns, rows), from `"80x24"` (pty, parser).
    pub size: Option<(u16, u16)>,
    /// Who callers from other machines are taken to be (dir).
    pub squash: Squash,
    /// When a conversation's command is started again after it ends
    /// (pty); `Never` unless said.
    pub restart: Restart,
    /// Who may open it (`allow`); `None`: the machine's `policy` decides.
    pub allow: Option<Vec<crate::policy::Who>>,
    /// Who may read its files, not change them (`read`, dir).
    pub read: Vec<crate::policy::Who>,
    /// 1-based line of the file where the service is declared.
    pub line: usize,
}

/// A pipeline started with the mesh: `[[pipelines]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    pub name: String,
    /// Where the data goes, in order; at least two.
    pub stages: Vec<Addr>,
    /// When it is started again after it ends (`restart`).
    pub restart: Restart,
    /// 1-based line of the file where the pipeline is declared.
    pub line: usize,
}

/// When a pipeline is started again after it ended (`restart`), as
/// systemd's `Restart=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Restart {
    /// Whenever it ends, failed or not (`"always"`).
    Always,
    /// When it failed: a stage or a link lost, a stage not reachable
    /// (`"on-failure"`, the default).
    #[default]
    OnFailure,
    /// Never (`"never"`).
    Never,
}

impl Restart {
    pub const ALL: [Restart; 3] = [Restart::Always, Restart::OnFailure, Restart::Never];

    pub fn as_str(self) -> &'static str {
        match self {
            Restart::Always => "always",
            Restart::OnFailure => "on-failure",
            Restart::Never => "never",
        }
    }
}

impl std::str::FromStr for Restart {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Restart::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown restart {s:?}: want \"always\", \"on-failure\" or \"never\""))
    }
}

/// Why a deployment file was refused. `line` is 0 when the file could not
/// be read at all: the message then names the file alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {}", at_line(*line), about(key, msg))]
pub struct DeployError {
    pub file: String,
    pub line: usize,
    /// The full key path, or `syntax` / `read` for errors below keys.
    pub key: String,
    pub msg: String,
}

fn at_line(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}")
    }
}

fn about(key: &str, msg: &str) -> String {
    if key == "read" {
        msg.to_string()
    } else {
        format!("{key}: {msg}")
    }
}

/// Parses and checks a deployment file; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Deployment, DeployError> {
    let src = tree::Src::new(text, file);
    let doc = toml::de::DeTable::parse(text).map_err(|e| syntax_error(&src, text, &e))?;
    machine::document(&src, src.root(&doc))
}

/// Reads and parses the deployment file at `path`.
pub fn load(path: &Path) -> Result<Deployment, DeployError> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &file),
        Err(e) => {
            let msg = match e.kind() {
                std::io::ErrorKind::NotFound => "file does not exist".to_string(),
                _ => format!("cannot read: {e}"),
            };
            Err(DeployError { file, line: 0, key: "read".into(), msg })
        }
    }
}

/// The built-in three-machine mesh ([`BUILTIN`]).
pub fn builtin() -> Deployment {
    // BUILTIN is a constant the tests parse, not input.
    parse(BUILTIN, BUILTIN_FILE).expect("the built-in deployment is valid")
}

impl Deployment {
    /// The machine named `id`, if the file has it.
    pub fn machine(&self, id: &str) -> Option<&Machine> {
        self.machines.get(id)
    }

    /// The deployment as a TOML deployment file that parses back to it
    /// (all but the line numbers), without comments.
    pub fn to_toml(&self) -> String {
        write::deployment(self)
    }
}

/// toml's grammar errors keep their line; the offending text, when toml
/// points at some, is quoted because its messages ("duplicate key") do
/// not name it.
fn syntax_error(src: &tree::Src<'_>, text: &str, e: &toml::de::Error) -> DeployError {
    let at = e.span().unwrap_or(0..0);
    let bad = match text.get(at.clone()) {
        Some(s) if !s.is_empty() && !s.contains('\n') => format!(" `{s}`"),
        _ => String::new(),
    };
    let msg = format!("{}{bad} (column {})", e.message(), src.column(at.start));
    src.err("syntax", at.start, msg)
}
