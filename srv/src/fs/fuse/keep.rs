//! What the mount keeps of served files, and when it lets go (see
//! `super::super::coherence`): how long the kernel may keep an answer,
//! the notices of the mount's own changes it need not act on, the
//! directories a change here touches, close-to-open at open, and locks as
//! the points where machines agree.

use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::inodes::Inodes;
use super::{inodes, listed, lock, notify, MeshFs, KEPT, TTL};
use crate::fs::dir::watch::What;
use crate::fs::handle::Handle;
use crate::fs::tree::Entry;
use std::path::Path;

/// A name in a directory, as (the directory's node, the name).
type Name = (u64, String);

/// The notice of a change this mount is about to make to a served name,
/// not to be acted on when it comes (see [`notify::Expected`]); no longer
/// waited for unless the change is [`Expecting::made`].
///
/// The names known in full (see [`listed`]) follow: a change made gives
/// or takes a name, one that failed (or was interrupted, and may have
/// been made there) leaves the directories unknown.
pub(super) struct Expecting<'a> {
    expected: &'a notify::Expected,
    listed: &'a listed::Listed,
    names: Vec<(u64, String, What)>,
}

impl Expecting<'_> {
    pub(super) fn made(mut self) {
        for (d, n, w) in std::mem::take(&mut self.names) {
            match w {
                What::Made => self.listed.made(d, &n),
                _ => self.listed.gone(d, &n),
            }
        }
    }
}

impl Drop for Expecting<'_> {
    fn drop(&mut self) {
        for (d, n, w) in &self.names {
            self.expected.remove(*d, n, *w);
        }
        if !self.names.is_empty() {
            self.listed.forget(&self.names.iter().map(|c| c.0).collect::<Vec<_>>());
        }
    }
}

/// What the mount keeps of served files, and what writes the
/// invalidations once the tree is mounted (see [`notify`]).
#[derive(Clone, Default)]
pub struct Telling {
    inodes: Arc<Mutex<Inodes>>,
    notifier: Arc<std::sync::OnceLock<Arc<notify::Notifier>>>,
    expected: Arc<notify::Expected>,
    twins: Arc<super::twins::Twins>,
    listed: Arc<listed::Listed>,
}

impl Telling {
    /// Starts invalidating what `feed` tells, through `fd`, the mount's
    /// `/dev/fuse` descriptor (see [`notify::fuse_fds`]); from then on
    /// the kernel may keep served names and attributes.
    pub fn start(
        &self,
        feed: Arc<crate::fs::dir::watch::Feed>,
        fd: std::os::fd::OwnedFd,
        co: Arc<crate::fs::coherence::Coherence>,
    ) {
        let n = Arc::new(notify::Notifier::new(fd));
        if self.notifier.set(n.clone()).is_ok() {
            let kept = notify::Kept {
                inodes: self.inodes.clone(),
                expected: self.expected.clone(),
                twins: self.twins.clone(),
                listed: self.listed.clone(),
                co,
            };
            notify::start(feed, n, kept);
        }
    }
}

impl MeshFs {
    /// What [`super::mount`] starts once mounted.
    pub fn telling(&self) -> Telling {
        Telling {
            inodes: self.inodes.clone(),
            notifier: self.notifier.clone(),
            expected: self.expected.clone(),
            twins: self.twins.clone(),
            listed: self.listed.clone(),
        }
    }
    /// How long the kernel may keep what `e` says. A served file's is kept
    /// only when its machine tells of changes and this mount can pass them
    /// on; otherwise not at all, so that every machine sees a name made,
    /// removed or grown elsewhere at its next use.
    pub(super) fn ttl(&self, e: &Entry) -> Duration {
        match &e.meta {
            None => TTL,
            Some(m) if m.watched && self.notifier.get().is_some() => KEPT,
            Some(_) => Duration::ZERO,
        }
    }

    /// Expects the notices of changes to `names` (directory node, name,
    /// what) that this mount makes now: those in served directories,
    /// once invalidations are written.
    pub(super) fn expecting(&self, names: &[(u64, &OsStr, What)]) -> Expecting<'_> {
        self.touching(&names.iter().map(|n| n.0).collect::<Vec<_>>());
        let mut e = Expecting { expected: &self.expected, listed: &self.listed, names: Vec::new() };
        if self.notifier.get().is_some() {
            for &(d, n, w) in names {
                if let (true, Some(n)) = (inodes::served(d), n.to_str()) {
                    self.expected.add(d, n, w);
                    e.names.push((d, n.to_string(), w));
                }
            }
        }
        e
    }

    /// Directories `dirs` (nodes) are about to change here: what is kept of
    /// them is no longer so, and the answer may bring it again (see
    /// `super::coherence`).
    pub(super) fn touching(&self, dirs: &[u64]) {
        let ids: Vec<u64> = {
            let t = lock(&self.inodes);
            dirs.iter().filter_map(|&d| t.id(d)).collect()
        };
        if !ids.is_empty() {
            self.ns.coherence().forget(&ids);
        }
    }

    /// Names `paths` were removed here (or replaced by a rename): they
    /// are no longer the kernel's, and the files they named are no longer
    /// the ones this mount wrote (see [`notify::Expected::gone`]).
    pub(super) fn removed(&self, paths: &[&str]) {
        let mut t = lock(&self.inodes);
        for p in paths {
            if let Some(n) = t.node_at(p) {
                self.expected.gone(n);
                self.listed.let_go(n);
                self.removals.let_go(n);
            }
            t.detach(p);
        }
    }

    /// The kernel forgets lookups of nodes, as (node, count); a node it no
    /// longer knows at all may soon be another file's.
    pub(super) fn forgotten(&self, nodes: &[(u64, u64)]) {
        let mut t = lock(&self.inodes);
        for &(i, n) in nodes {
            if t.forget(i, n) {
                self.expected.gone(i);
                self.listed.let_go(i);
                self.removals.let_go(i);
            }
        }
    }

    /// Close-to-open: a served file's attributes kept by the kernel are
    /// dropped when it is opened, so its size and times are asked again.
    /// (Dropping attributes waits for nothing in the kernel, so this may
    /// be done inside a handler.)
    pub(super) fn reopened(&self, ino: u64) {
        if let Some(n) = self.notifier.get() {
            let _ = n.inode(ino, false);
        }
    }

    /// The files open here in the directory of node `ino` (its own
    /// included), and the names the kernel keeps there.
    pub(super) fn beside(&self, ino: u64) -> (Vec<(u64, Arc<Handle>)>, Vec<Name>) {
        let siblings = lock(&self.inodes).siblings(ino);
        let handles = lock(&self.handles);
        let open = handles
            .values()
            .filter(|o| o.ino == ino || siblings.iter().any(|s| s.2 == o.ino))
            .map(|o| (o.ino, o.h.clone()))
            .collect();
        (open, siblings.into_iter().map(|(d, n, _)| (d, n)).collect())
    }

    /// The kernel knows the sizes of the files open beside a lock just
    /// taken, before the locker goes on. It asks for a size only when a
    /// read reaches past the one it has, and drops an answer that crossed
    /// an invalidation (another process's lock here, a write), reading
    /// then only up to its old size: sqlite's reader, finding the WAL
    /// frames another machine wrote past it, took that for an I/O error.
    /// So each file the locker (process `pid`) has open beside the lock is
    /// asked here, through its descriptor (no lookups), until the size
    /// the kernel keeps is the one it was told.
    async fn sizes_known(&self, pid: u32, locked: u64, open: &[(u64, Arc<Handle>)]) {
        let wanted: Vec<u64> = open.iter().map(|o| o.0).collect();
        // The locker's descriptors of this mount's files (known by the
        // device of the one it locked, and their node numbers, which are
        // their inode numbers), however it named them: through a bind, a
        // chroot or `mesh ns`.
        let fds = tokio::task::spawn_blocking(move || {
            let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
            let fds: Vec<_> = dir.flatten().filter_map(|e| Some((e.path(), file_id(&e.path())?))).collect();
            let Some(dev) = fds.iter().find(|f| f.1 .1 == locked).map(|f| f.1 .0) else { return Vec::new() };
            fds.into_iter().filter(|f| f.1 .0 == dev && wanted.contains(&f.1 .1)).map(|f| f.0).collect()
        })
        .await
        .unwrap_or_default();
        let looks: Vec<_> = fds.into_iter().map(|fd| tokio::task::spawn_blocking(move || size_known(&fd))).collect();
        for l in looks {
            let _ = l.await;
        }
    }

    /// A lock is where machines agree on what a directory holds, as with
    /// NFS: before one is let go, what this machine wrote to the files
    /// open beside it (through mappings too) is done on the serving
    /// machine; once one is taken, what the kernel keeps of them and of
    /// the names beside it is dropped, so the next look asks again.
    pub(super) async fn lock_point(&self, ino: u64, taken: bool, pid: u32) -> Result<(), String> {
        let Some(n) = self.notifier.get().cloned() else { return Ok(()) };
        // Removals sent ahead land before a lock is let go: sqlite commits
        // by removing its journal, and the next holder must not find it.
        if !taken {
            self.removals.landed(None).await;
        }
        let (open, names) = self.beside(ino);
        if taken {
            self.listed.forget(&names.iter().map(|n| n.0).collect::<Vec<_>>());
        }
        let mut inos: Vec<u64> = open.iter().map(|o| o.0).collect();
        inos.sort_unstable();
        inos.dedup();
        // A release gathers what the kernel writes back, one at a time.
        let _one = if taken { None } else { Some(self.releasing.lock().await) };
        let gathered = if taken {
            Vec::new()
        } else {
            self.twins.gather(&inos);
            inos.clone()
        };
        // Writes sent ahead land first, and what was read ahead goes:
        // pages dropped and read again before them would miss what
        // another process here wrote, which it may already have told of
        // through a mapping.
        if taken {
            for (_, h) in &open {
                self.ns.settle_writes(h, false).await?;
                self.ns.forget_ahead(h).await;
            }
        }
        // Writes back dirty pages (as writes sent ahead), then drops them.
        let drop_pages = move || {
            if taken {
                for (d, name) in &names {
                    let _ = n.entry(*d, name);
                }
            }
            for i in inos {
                let _ = n.inode(i, true);
            }
        };
        let dropped = tokio::task::spawn_blocking(drop_pages).await.map_err(|e| e.to_string());
        // What the kernel wrote back, sent last first (see `twins`); a
        // file that fails does not keep the others' pages from going.
        let writes: Vec<_> = gathered.into_iter().map(|i| (i, self.twins.gathered_writes(i))).collect();
        let mut failed = None;
        for (i, writes) in writes {
            let Some((_, h)) = open.iter().find(|o| o.0 == i) else { continue };
            for (offset, data) in writes {
                if let Err(e) = self.ns.write_at(h, offset, &data).await {
                    failed.get_or_insert(e);
                    break;
                }
            }
        }
        dropped?;
        if let Some(e) = failed {
            return Err(e);
        }
        for (_, h) in &open {
            self.ns.settle_writes(h, false).await?;
        }
        if taken {
            self.sizes_known(pid, ino, &open).await;
        }
        Ok(())
    }
}

fn statx(path: &Path, flags: i32) -> Option<libc::statx> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: a valid C string and an out buffer statx fills. The path
    // is followed: a descriptor's link leads to its file.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), flags, libc::STATX_SIZE | libc::STATX_INO, &mut st) };
    (r == 0).then_some(st)
}

/// The device and inode number of the file `path` leads to, as the
/// kernel keeps them (asking nobody).
fn file_id(path: &Path) -> Option<((u32, u32), u64)> {
    let st = statx(path, libc::AT_STATX_DONT_SYNC)?;
    Some(((st.stx_dev_major, st.stx_dev_minor), st.stx_ino))
}

/// How often the kernel is asked a file's size before it is left to ask
/// for itself.
const SIZE_TRIES: usize = 16;

/// Asks the kernel for `path`'s size until what it keeps is what it was
/// told (see [`MeshFs::sizes_known`]).
fn size_known(path: &Path) {
    let size = |sync| statx(path, sync).map(|st| st.stx_size);
    for _ in 0..SIZE_TRIES {
        let (Some(told), Some(kept)) = (size(libc::AT_STATX_FORCE_SYNC), size(libc::AT_STATX_DONT_SYNC)) else {
            return;
        };
        if kept >= told {
            return;
        }
    }
}
