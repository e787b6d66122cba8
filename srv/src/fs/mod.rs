//! The namespace as files: what `mesh up` mounts at each machine's mount
//! point (see mesh(4)).
//!
//! Modules:
//!
//! - [`tree`]: the table of directories and files, and path resolution.
//! - [`bound`]: the tree through a namespace's binds and unions (what
//!   FUSE serves), and `bind`/`unmount` themselves.
//! - [`dir`]: the `dir` kind: a local directory served at `svc/S/root/`,
//!   confined to it; [`ops`] changes it (create, mkdir, rename...).
//! - [`caller`]: who each request is for; its file I/O runs as them.
//! - [`coherence`]: what mounts may keep of served files, and the
//!   changes, told by the machines serving them, that end it.
//! - [`errors`]: file-system errors and the errno table of the tree.
//! - [`handle`]: open files: streams over conversations, text, traces;
//!   [`open`] opens them and reads, writes and closes them.
//! - [`ctl`]: the messages `ctl` files take.
//! - [`remote`]: other machines' trees under `n/M/`, served by their
//!   routers through the mesh, and this machine's tree served to them.
//! - [`fuse`]: the FUSE server (fuse3, async, interruptible).
//! - [`mount`]: mounting, stale mounts, unmounting.
//!
//! [`Namespace`] is the tree of one router, independent of FUSE: the FUSE
//! server and the tree server for other machines both call it.

pub mod bound;
pub mod caller;
pub mod coherence;
pub mod ctl;
pub mod dir;
pub mod errors;
pub mod fuse;
pub mod handle;
mod io;
pub mod mount;
mod open;
mod ops;
pub mod remote;
pub mod tree;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use ns::policy::Access as Grant;
use ns::{Addr, MachineId, Name, Router};

use handle::{Handle, Slot, Stream};
use tree::{Entry, FileKind, Node};

/// Conversations opened through `clone`, by number.
#[derive(Default)]
pub struct Slots(Mutex<HashMap<u64, Weak<Slot>>>);

impl Slots {
    fn get(&self, n: u64) -> Option<Arc<Slot>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&n).and_then(Weak::upgrade)
    }

    fn insert(&self, slot: &Arc<Slot>) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, w| w.strong_count() > 0);
        m.insert(slot.n, Arc::downgrade(slot));
    }
}

/// One router's tree, as one namespace sees it: the router's own, or a
/// private view made for `mesh ns` (see [`bound`]).
pub struct Namespace {
    router: Router,
    slots: Arc<Slots>,
    /// What the kinds of local services add to the tree.
    kinds: Arc<Mutex<HashMap<String, KindExtras>>>,
    /// This namespace's binds; the tree served to other machines ignores
    /// them (see [`bound`]).
    binds: std::sync::RwLock<ns::bind::MountTable>,
    /// Where the router's own tree is mounted, and whether for all users.
    mounted_at: Mutex<Option<(std::path::PathBuf, bool)>>,
    /// Record locks on this machine's served files, whoever takes them;
    /// shared with views.
    locks: Arc<dir::locks::Locks>,
    /// What mounts may keep, and the changes that end it; shared with
    /// views.
    coherence: Arc<coherence::Coherence>,
    /// Conversations kept with other machines' tree servers for requests
    /// that get one answer; shared with views.
    sessions: Arc<remote::Sessions>,
}

/// Handles a kind's own ctl message for conversation `n`.
pub type CtlHook = Arc<dyn Fn(u64, &str) -> Result<(), String> + Send + Sync>;

/// Makes the contents of a kind's own file in its service directory.
pub type FileFn = Arc<dyn Fn() -> Result<Bytes, String> + Send + Sync>;

/// What a local service's kind adds to its directory. The tree knows
/// kinds only through this, which the kinds module fills in.
#[derive(Default, Clone)]
pub struct KindExtras {
    /// Its own conversation ctl messages.
    pub ctl: Option<CtlHook>,
    /// A line for its `info` file.
    pub about: Option<String>,
    /// Files of its own.
    pub files: Vec<(String, FileFn)>,
    /// The directory a dir service serves at `svc/S/root/`.
    pub root: Option<Arc<dir::Root>>,
}

struct Dynamic<'a>(&'a Namespace);

impl tree::Convs for Dynamic<'_> {
    fn numbers(&self, service: &str) -> Vec<u64> {
        self.0
            .router
            .convs()
            .list()
            .into_iter()
            .filter(|c| c.path.service.as_str() == service)
            .filter_map(|c| c.path.conv)
            .collect()
    }

    fn files(&self, service: &str) -> Vec<String> {
        self.0.extras(service).files.into_iter().map(|f| f.0).collect()
    }

    fn has_ctl(&self, service: &str) -> bool {
        self.0.extras(service).ctl.is_some()
    }

    fn has_root(&self, service: &str) -> bool {
        self.0.has_root(service)
    }
}

/// Splits a path into its components.
pub fn components(path: &str) -> Vec<String> {
    path.split('/').filter(|p| !p.is_empty()).map(String::from).collect()
}

impl Namespace {
    pub fn new(router: Router) -> Arc<Namespace> {
        Arc::new(Namespace {
            sessions: Arc::new(remote::Sessions::new(router.clone())),
            router,
            slots: Default::default(),
            kinds: Default::default(),
            binds: Default::default(),
            mounted_at: Default::default(),
            locks: Default::default(),
            coherence: Default::default(),
        })
    }

    /// A new namespace over the same router, starting with a copy of
    /// this one's binds; what it binds later is its own.
    pub fn view(&self) -> Arc<Namespace> {
        Arc::new(Namespace {
            router: self.router.clone(),
            slots: self.slots.clone(),
            kinds: self.kinds.clone(),
            binds: std::sync::RwLock::new(self.binds().clone()),
            mounted_at: Default::default(),
            locks: self.locks.clone(),
            coherence: self.coherence.clone(),
            sessions: self.sessions.clone(),
        })
    }

    /// The sessions with other machines' tree servers.
    pub fn sessions(&self) -> &remote::Sessions {
        &self.sessions
    }

    pub fn coherence(&self) -> &Arc<coherence::Coherence> {
        &self.coherence
    }

    /// Before asking machine `m` about its served files for this
    /// machine's mounts: see [`coherence::Coherence::before`]. Never for
    /// another machine's request passing through, which this machine's
    /// watch does not cover.
    fn told_before(&self, m: &MachineId) -> Option<u64> {
        match dir::watch::asker() {
            None => self.coherence.before(&self.router, m),
            Some(_) => None,
        }
    }

    /// Records where this tree is mounted (views are mounted next to it).
    pub fn set_mounted_at(&self, path: &std::path::Path, allow_other: bool) {
        *self.mounted_at.lock().unwrap_or_else(|e| e.into_inner()) = Some((path.to_path_buf(), allow_other));
    }

    /// Where this tree is mounted, and whether for all users.
    pub fn mounted_at(&self) -> Option<(std::path::PathBuf, bool)> {
        self.mounted_at.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// This namespace's mount table.
    pub fn binds(&self) -> std::sync::RwLockReadGuard<'_, ns::bind::MountTable> {
        self.binds.read().unwrap_or_else(|e| e.into_inner())
    }

    fn binds_mut(&self) -> std::sync::RwLockWriteGuard<'_, ns::bind::MountTable> {
        self.binds.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers what a local service's kind adds to the tree.
    pub fn set_kind(&self, service: &str, extras: KindExtras) {
        self.kinds.lock().unwrap_or_else(|e| e.into_inner()).insert(service.to_string(), extras);
    }

    fn extras(&self, service: &str) -> KindExtras {
        self.kinds.lock().unwrap_or_else(|e| e.into_inner()).get(service).cloned().unwrap_or_default()
    }

    /// Opens a conversation with `first` whose return path is `rest`,
    /// listed like one opened through `clone` (a pipeline).
    pub fn open_pipeline(&self, first: Addr, rest: Vec<Addr>) -> Arc<Slot> {
        let conv = self.router.open(first, rest);
        let n = conv.rx.path().conv.unwrap_or_default();
        let slot = Slot::new(n, Stream::new(conv));
        self.slots.insert(&slot);
        slot
    }

    /// Whether `service` is a dir service of this machine.
    pub fn has_root(&self, service: &str) -> bool {
        self.kinds.lock().unwrap_or_else(|e| e.into_inner()).get(service).is_some_and(|k| k.root.is_some())
    }

    /// The served directory of local dir service `service`.
    fn root(&self, service: &str) -> Result<Arc<dir::Root>, String> {
        self.extras(service).root.ok_or_else(|| format!("'/svc/{service}/root' file does not exist"))
    }

    /// A local service's own ctl handler, if its kind has one.
    pub fn kind_ctl(&self, service: &str) -> Option<CtlHook> {
        self.extras(service).ctl
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Where the names of directory `path` come from, as a key that a
    /// bind made or undone over it, or another replica chosen for it,
    /// would change; `None` where binds apply to it or it is no served
    /// directory (see `fuse::listed`).
    pub fn landing(&self, path: &[String]) -> Option<String> {
        let c = self.binds().resolve(path);
        if c.len() != 1 || c[0] != path {
            return None;
        }
        self.place_of(path)
    }

    fn place_of(&self, path: &[String]) -> Option<String> {
        match self.resolve(path).ok()? {
            Node::Stored(s, _) => Some(format!("{} {s}", self.router.id())),
            Node::Remote(m, rest) if m == *self.router.id() => self.place_of(&rest),
            Node::Remote(m, _) => Some(m.to_string()),
            _ => None,
        }
    }

    fn resolve(&self, path: &[String]) -> Result<Node, String> {
        tree::resolve(&self.router, &Dynamic(self), path)
    }

    /// Who `caller`, of another machine when `remote`, is taken to be for
    /// `path`: a served directory of this machine squashes as its service
    /// says; anywhere else the caller goes on as it is.
    pub fn caller_for(&self, path: &[String], caller: caller::Caller, remote: bool) -> caller::Caller {
        // A name still to be made is in its directory's service.
        let node = self.resolve(path).or_else(|e| path.split_last().map_or(Err(e), |(_, dir)| self.resolve(dir)));
        match node {
            Ok(Node::Stored(s, _)) if remote => match self.root(&s) {
                Ok(root) => caller.squashed(root.squash()),
                Err(_) => caller::Caller::nobody(),
            },
            Ok(Node::Remote(m, rest)) if m == *self.router.id() => self.caller_for(&rest, caller, remote),
            _ => caller,
        }
    }

    /// What `user` on `machine` may do with what `path` names here, by
    /// the rules of the service it belongs to (`allow`, `read`): a dir
    /// service's files, a service's data, clone and conversations. For a
    /// request from another machine (`remote`), a path into a third
    /// machine's tree (`n/c/...`) is passed on only to read, and not at
    /// all under `policy = "deny"`: the third machine sees this one ask.
    /// The rest of the tree follows the machine's `tree` rule, and its
    /// `ctl` files its `ctl` rule (read-only to others under `policy =
    /// "deny"` without one).
    pub fn grant(
        &self,
        path: &[String],
        machine: &MachineId,
        user: Option<&str>,
        remote: bool,
    ) -> Result<Grant, String> {
        // A name still to be made is in its directory's service.
        let node = self.resolve(path).or_else(|e| path.split_last().map_or(Err(e), |(_, dir)| self.resolve(dir)));
        let r = &self.router;
        let service = match &node {
            Ok(Node::Remote(m, rest)) if m == r.id() => return self.grant(rest, machine, user, remote),
            Ok(Node::Remote(m, _)) if remote && r.policy().deny_by_default => {
                return Err(ns::error::detail(ns::error::EPERM, format!("requests for {m} are not passed on")))
            }
            Ok(Node::Remote(_, _)) if remote => {
                return Ok(match r.tree_access(false, machine, user) {
                    Grant::Denied => Grant::Denied,
                    _ => Grant::Read,
                })
            }
            Ok(
                Node::Stored(s, _)
                | Node::SvcData(s)
                | Node::SvcClone(s)
                | Node::SvcCtl(s)
                | Node::Conv(s, _)
                | Node::ConvData(s, _)
                | Node::ConvCtl(s, _),
            ) => s,
            Ok(Node::Ctl | Node::TermCtl(_)) if remote => return Ok(r.tree_access(true, machine, user)),
            // What tells of a service, as its listing in `svc/` does, is
            // open to all; its files and conversations follow its rules.
            Ok(Node::Svc(_) | Node::SvcInfo(_) | Node::SvcFile(..) | Node::ConvStatus(..)) => return Ok(Grant::Full),
            _ if remote => return Ok(r.tree_access(false, machine, user)),
            _ => return Ok(Grant::Full),
        };
        Ok(r.access(service, machine, user))
    }

    /// Whether the caller may open the files of a conversation opened
    /// here through `clone`: its opener, root and the router's user may;
    /// another local user, or another machine, may not, or they could
    /// read and write it as its opener.
    fn may_use(&self, slot: &Slot) -> Result<(), String> {
        let Some(owner) = slot.owner else { return Ok(()) };
        let Some(c) = caller::Caller::current() else { return Ok(()) };
        let own = caller::own().0;
        let mine = !c.on_behalf && (c.uid == owner || c.uid == dir::Id::Router || c.uid.here(own) == 0);
        if mine {
            return Ok(());
        }
        Err(ns::error::detail(ns::error::EPERM, format!("conversation {} is another user's", slot.n)))
    }

    /// The entry a path names.
    pub async fn stat(&self, path: &[String]) -> Result<Entry, String> {
        let node = self.resolve(path)?;
        match &node {
            Node::Remote(m, rest) if m != self.router.id() => {
                let epoch = self.told_before(m);
                let mut e = remote::stat(&self.sessions, m, rest).await?;
                dir::told_if(&mut e, self.coherence.still(m, epoch));
                Ok(e)
            }
            Node::Remote(_, rest) => Box::pin(self.stat(rest)).await.map(|mut e| {
                e.name = path.last().cloned().unwrap_or_default();
                e
            }),
            Node::Stored(s, rel) => {
                let root = self.root(s)?;
                let (rel, co, who) = (rel.clone(), self.coherence.clone(), dir::watch::asker());
                let mut e = io::quick(move || root.stat_told(&rel, Some((&co.watcher, &who)))).await?;
                e.name = path.last().cloned().unwrap_or_default();
                Ok(e)
            }
            _ => Ok(tree::entry(&node, path.last().map(String::as_str).unwrap_or(""))),
        }
    }

    /// A directory of a served directory of this machine as it is now,
    /// watched itself for whoever asks (see `dir::Root::dir_now`).
    pub async fn dir_now(&self, path: &[String]) -> Result<Entry, String> {
        match self.resolve(path)? {
            Node::Remote(m, rest) if m == *self.router.id() => Box::pin(self.dir_now(&rest)).await,
            Node::Stored(s, rel) => {
                let root = self.root(&s)?;
                let (co, who) = (self.coherence.clone(), dir::watch::asker());
                io::quick(move || root.dir_now(&rel, &co.watcher, &who)).await
            }
            _ => Err(errors::not_served()),
        }
    }

    /// The entries of a directory.
    pub async fn list(&self, path: &[String]) -> Result<Vec<Entry>, String> {
        match self.resolve(path)? {
            Node::Remote(m, rest) if m != *self.router.id() => {
                let epoch = self.told_before(&m);
                let mut v = remote::list(&self.sessions, &m, &rest).await?;
                let still = self.coherence.still(&m, epoch);
                v.iter_mut().for_each(|e| dir::told_if(e, still));
                Ok(v)
            }
            Node::Remote(_, rest) => Box::pin(self.list(&rest)).await,
            Node::Stored(s, rel) => {
                let root = self.root(&s)?;
                let (co, who) = (self.coherence.clone(), dir::watch::asker());
                io::blocking(move || root.list_told(&rel, Some((&co.watcher, &who)))).await
            }
            Node::Svc(s) => {
                let mut v = tree::list(&self.router, &Dynamic(self), &Node::Svc(s.clone()))?;
                if !self.has_root(&s) && self.root_elsewhere(&s).await {
                    v.push(Entry::new("root", FileKind::Dir, 0o555));
                }
                Ok(v)
            }
            node => tree::list(&self.router, &Dynamic(self), &node),
        }
    }

    /// Whether the replica of `service` this machine would use is a dir
    /// service, so that `svc/S/` lists its `root` here too. One question
    /// to that machine, which must answer promptly.
    async fn root_elsewhere(&self, service: &str) -> bool {
        let Some(m) = self.router.table().nearest(service).map(|rt| rt.machine.clone()) else { return false };
        if m == *self.router.id() {
            return false;
        }
        let path = ["svc".to_string(), service.to_string(), "root".to_string()];
        let ask = remote::stat(&self.sessions, &m, &path);
        matches!(tokio::time::timeout(std::time::Duration::from_secs(1), ask).await, Ok(Ok(e)) if e.kind == FileKind::Dir)
    }

    /// Ends every open stream: readers see end of file (shutdown).
    pub fn shutdown(&self) {
        self.router.convs().fail_all(ns::error::ESHUTDOWN);
    }
}

fn name(s: &str) -> Result<Name, String> {
    Name::new(s).map_err(|e| e.to_string())
}

/// A conversation's `status` file.
fn conv_status(r: &Router, n: u64) -> Result<String, String> {
    let st = r.convs().status(n).ok_or_else(|| ns::error::detail(ns::error::ENOCONV, n))?;
    let mut out = String::new();
    let _ = writeln!(out, "state {}", st.state);
    let _ = writeln!(out, "in {} messages {} bytes", st.msgs_in, st.bytes_in);
    let _ = writeln!(out, "out {} messages {} bytes", st.msgs_out, st.bytes_out);
    let _ = writeln!(out, "window {} bytes", st.window);
    let _ = writeln!(out, "target {}", st.target);
    if let Some(p) = &st.peer {
        let _ = writeln!(out, "peer {p}");
    }
    let reply: Vec<String> = st.reply.iter().map(|a| a.to_string()).collect();
    let _ = writeln!(out, "replyto {}", reply.join(" "));
    Ok(out)
}

/// The kind a handle reads as.
pub fn handle_kind(h: &Handle) -> FileKind {
    match h {
        Handle::Text(_) | Handle::Ctl(..) => FileKind::File,
        Handle::RemoteFile(f) => f.kind(),
        Handle::Stored(..) => FileKind::Stored,
        _ => FileKind::Stream,
    }
}
