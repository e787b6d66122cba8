//! The FUSE server: the [`Namespace`] through fuse3.
//!
//! fuse3 is async on tokio and hands interrupts to the file system, so a
//! read blocked on a data file ends with EINTR on Ctrl-C instead of holding
//! its process in D state (fuser 0.18 answers FUSE_INTERRUPT with ENOSYS).
//! Every request runs in its own task: a blocked read blocks nobody else.
//!
//! Every request that can wait on the mesh answers an interrupt with EINTR
//! and the unmount with ESHUTDOWN (a read: end of file), since the kernel
//! waits for that answer uninterruptibly once it has sent the request,
//! even for `kill -9`. A write interrupted while it waits for the
//! conversation's credit sent nothing; one that had its credit is sent
//! whole (see `ns::conv`). A change to a served directory on another
//! machine, interrupted, may still be made there, as with NFS's `intr`.
//! One here is a system call on the handler's own thread (see
//! `super::io`), answered when it returns.
//!
//! Inodes are one per file of a served directory, whatever its names,
//! and one per path elsewhere, kept while the kernel holds a lookup on
//! them ([`inodes`]). Stream files open with direct I/O,
//! non-seekable and as streams; text files with direct I/O, since their
//! size is not known; files of served directories through the page
//! cache, with their real sizes (see [`STORED_OPEN`]). Record locks are
//! held where the file is served (`dir::locks`), the kernel's checks of
//! modes and owners are its own (`default_permissions`). Errors become
//! errno in one place, [`super::errors::errno`].
//!
//! Served names and attributes are kept by the kernel while their
//! machine tells of changes (`super::coherence`); the invalidations are
//! written by [`notify`], never from fuse3.
//!
//! Modules: [`attr`] (attributes and extended attributes), [`data`]
//! (reads, writes, flush, record locks and release of open files),
//! [`dirs`] (open directories and their listings), [`exec`] (whether a
//! file is a running program here), [`inodes`] (the node table), [`keep`]
//! (what the kernel may keep, and locks as points of agreement),
//! [`listed`] (directories whose every name is known, so a miss costs no
//! round trip), [`names`] (mkdir and rename), [`notify`]
//! (invalidations), [`open`] (open and create, and the table of open
//! files), [`stop`] (interrupts and the unmount), [`twins`] (pages of
//! locked files, sent back as the bytes changed), [`removals`] (unlinks
//! answered before their answers).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::num::NonZeroU32;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fuse3::raw::prelude::*;
use fuse3::{Errno, Result as FuseResult};
use futures::stream::{self, Stream as FutStream};
use tokio_util::sync::CancellationToken;

use super::dir::locks::Lock;
use super::dir::StatFs;
use super::handle::{Handle, Waker};
use super::tree::{Entry, FileKind};
use super::{components, Namespace};
use attr::{decode_dev, file_type};
use inodes::Inodes;
pub use keep::Telling;
pub use removals::{Removals, LANDING};

/// How long the kernel may keep what an entry of the tree's own says:
/// those change only by this router.
const TTL: Duration = Duration::from_secs(1);

/// How long the kernel may keep a served file's name and attributes when
/// the machine serving it tells of changes.
use super::coherence::KEPT;

const FOPEN_DIRECT_IO: u32 = 1 << 0;
const FOPEN_NONSEEKABLE: u32 = 1 << 2;
const FOPEN_STREAM: u32 = 1 << 4;
/// A write of pages from the kernel's cache (write-back), not write(2).
const FUSE_WRITE_CACHE: u32 = 1 << 0;
/// How files of served directories open: through the page cache, so that
/// they can be mapped shared (sqlite's WAL index, editors, linkers).
/// Coherence is NFS's close-to-open and more: the cache is dropped at
/// each open and at each lock taken (see [`MeshFs::lock_point`]), and
/// when the serving machine tells of a change (see `super::coherence`). Direct I/O read 128 MiB from another machine
/// in 0.26 s against 0.55 s with the kernel's 128 KiB readahead; with the
/// mount's readahead raised to 4 MiB (see `mount`) the page cache takes
/// 0.36 s.
const STORED_OPEN: u32 = 0;
/// Interrupts remembered for requests not yet registered.
const EARLY_INTERRUPTS: usize = 256;

/// The identity of a file of a served directory (see [`inodes`]).
fn file_id(e: &Entry) -> Option<u64> {
    e.meta.as_ref().and_then(|m| m.id)
}

/// `parent/name`.
fn child(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// A name the kernel passes in, as the tree's text (names that are not
/// UTF-8 cannot be made here).
fn utf8(name: &OsStr) -> FuseResult<&str> {
    name.to_str().ok_or_else(|| Errno::from(libc::EINVAL))
}

/// An open file.
struct Open {
    h: Arc<Handle>,
    /// The process that made the file with it (create), which alone may
    /// change it ahead of the answers (see `remote::known`).
    maker: Option<u32>,
    /// Which file it is (a served one's identity), by whichever name.
    id: Option<u64>,
    /// The inode it was opened by (fstat asks by inode; see `open_stored`).
    ino: u64,
    /// It took record locks: its owners' go when a descriptor is closed
    /// (flush).
    locked: bool,
    /// The file as its open found it on another machine, and the count
    /// of notices acted on before the open was asked: the kernel's look
    /// right after the open is answered from it (see `attr::get_attr`).
    fresh: Option<(Entry, u64)>,
}

/// The file system fuse3 serves.
pub struct MeshFs {
    ns: Arc<Namespace>,
    inodes: Arc<Mutex<Inodes>>,
    notifier: Arc<std::sync::OnceLock<Arc<notify::Notifier>>>,
    expected: Arc<notify::Expected>,
    listed: Arc<listed::Listed>,
    twins: Arc<twins::Twins>,
    removals: Arc<removals::Removals>,
    /// One lock's release at a time: the pages it gathers are its own.
    releasing: tokio::sync::Mutex<()>,
    handles: Mutex<HashMap<u64, Open>>,
    next_fh: AtomicU64,
    dirs: dirs::OpenDirs,
    /// Requests that may block, so an interrupt can end them.
    pending: Mutex<HashMap<u64, CancellationToken>>,
    /// Interrupts of requests not registered yet. Lock order: `pending`,
    /// then `early`; the other locks here are never held together.
    early: Mutex<VecDeque<u64>>,
    uid: u32,
    gid: u32,
    shutdown: CancellationToken,
    mounted_at: Option<std::path::PathBuf>,
    tuned: std::sync::Once,
}

fn errno(e: &str) -> Errno {
    Errno::from(super::errors::errno(e))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MeshFs {
    pub fn new(ns: Arc<Namespace>, shutdown: CancellationToken) -> MeshFs {
        // SAFETY: getuid and getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        MeshFs {
            ns,
            inodes: Default::default(),
            notifier: Default::default(),
            expected: Default::default(),
            listed: Default::default(),
            twins: Default::default(),
            removals: Default::default(),
            releasing: Default::default(),
            handles: Default::default(),
            next_fh: AtomicU64::new(1),
            dirs: Default::default(),
            pending: Default::default(),
            early: Default::default(),
            uid,
            gid,
            shutdown,
            mounted_at: None,
            tuned: std::sync::Once::new(),
        }
    }

    /// Where this file system is mounted: tuned there once the kernel has
    /// taken its INIT answer (see `mount::raise_readahead`).
    pub fn mounted_at(mut self, path: &std::path::Path) -> MeshFs {
        self.mounted_at = Some(path.to_path_buf());
        self
    }

    /// Its removals sent ahead, which the unmount waits for.
    pub fn removals(&self) -> Arc<Removals> {
        self.removals.clone()
    }

    /// Called by requests that come after INIT.
    fn tune(&self) {
        if let Some(p) = &self.mounted_at {
            self.tuned.call_once(|| super::mount::raise_readahead(p));
        }
    }

    fn path(&self, ino: u64) -> FuseResult<String> {
        lock(&self.inodes).path(ino).ok_or_else(|| Errno::from(libc::ENOENT))
    }

    /// The path of `name` in directory `parent`.
    fn child(&self, parent: u64, name: &OsStr) -> FuseResult<String> {
        Ok(child(&self.path(parent)?, utf8(name)?))
    }

    /// Answers for a file just made at `path`: it counts as a lookup.
    fn made(&self, path: &str, e: &Entry) -> ReplyEntry {
        let ino = lock(&self.inodes).get_or_add(path, file_id(e));
        ReplyEntry { ttl: self.ttl(e), attr: self.attr(ino, e), generation: 0 }
    }

    async fn stat(&self, path: &str) -> FuseResult<Entry> {
        if path == "/" {
            return Ok(Entry::new("", FileKind::Dir, 0o555));
        }
        self.ns.bound().stat(&components(path)).await.map_err(|e| errno(&e))
    }

    /// [`MeshFs::stat`], once the writes sent ahead on an open file of the
    /// inode have their answers: its size includes them.
    async fn stat_settled(&self, ino: u64, path: &str) -> FuseResult<Entry> {
        self.settled(ino).await?;
        self.stat(path).await
    }

    /// Wakes the kernel's poll handle from outside any request handler
    /// (notifying from inside one deadlocks the session).
    fn waker(&self, notify: &Notify) -> Arc<Waker> {
        let notify = notify.clone();
        Arc::new(Box::new(move |kh| {
            let n = notify.clone();
            tokio::spawn(async move { n.wakeup(kh).await });
        }))
    }
}

impl Filesystem for MeshFs {
    async fn init(&self, _req: Request) -> FuseResult<ReplyInit> {
        Ok(ReplyInit::new(NonZeroU32::new(1 << 20).expect("non-zero")))
    }

    async fn destroy(&self, _req: Request) {}

    async fn lookup(&self, req: Request, parent: u64, name: &OsStr) -> FuseResult<ReplyEntry> {
        self.tune();
        let name = name.to_str().ok_or_else(|| Errno::from(libc::ENOENT))?;
        let dir = self.path(parent)?;
        // Not in a directory whose every name is known: no round trip.
        if self.listed.absent(parent, name, || self.ns.landing(&components(&dir))) {
            return Err(Errno::from(libc::ENOENT));
        }
        let path = child(&dir, name);
        self.removals_landed(&req, Some(parent)).await?;
        // A file open here by that name answers with its writes sent
        // ahead: the kernel drops a name (a notice) and looks it up again
        // right after a write, whose size it must then see.
        let known = lock(&self.inodes).node_at(&path);
        let e = match known {
            Some(n) => self.stoppable(&req, self.stat_settled(n, &path)).await?,
            None => self.stoppable(&req, self.stat(&path)).await?,
        };
        let ino = lock(&self.inodes).get_or_add(&path, file_id(&e));
        Ok(ReplyEntry { ttl: self.ttl(&e), attr: self.attr(ino, &e), generation: 0 })
    }

    async fn forget(&self, _req: Request, inode: u64, nlookup: u64) {
        self.forgotten(&[(inode, nlookup)]);
    }

    async fn batch_forget(&self, _req: Request, inodes: &[(u64, u64)]) {
        self.forgotten(inodes);
    }

    async fn getattr(&self, req: Request, inode: u64, fh: Option<u64>, _flags: u32) -> FuseResult<ReplyAttr> {
        self.get_attr(req, inode, fh).await
    }

    async fn setattr(&self, req: Request, inode: u64, fh: Option<u64>, set: SetAttr) -> FuseResult<ReplyAttr> {
        self.set_attr(req, inode, fh, set).await
    }

    async fn open(&self, req: Request, inode: u64, flags: u32) -> FuseResult<ReplyOpen> {
        self.open_file(req, inode, flags).await
    }

    async fn create(&self, req: Request, parent: u64, name: &OsStr, mode: u32, flags: u32) -> FuseResult<ReplyCreated> {
        self.create_file(req, parent, name, mode, flags).await
    }

    async fn mkdir(&self, req: Request, parent: u64, name: &OsStr, mode: u32, _umask: u32) -> FuseResult<ReplyEntry> {
        self.make_dir(req, parent, name, mode).await
    }

    async fn unlink(&self, req: Request, parent: u64, name: &OsStr) -> FuseResult<()> {
        self.remove_name(req, parent, name, false).await
    }

    async fn rmdir(&self, req: Request, parent: u64, name: &OsStr) -> FuseResult<()> {
        self.remove_name(req, parent, name, true).await
    }

    async fn rename(
        &self,
        req: Request,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
    ) -> FuseResult<()> {
        self.rename2(req, parent, name, new_parent, new_name, 0).await
    }

    /// RENAME_NOREPLACE and RENAME_EXCHANGE are kept; whiteouts are not.
    async fn rename2(
        &self,
        req: Request,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> FuseResult<()> {
        self.rename_name(req, (parent, name), (new_parent, new_name), flags).await
    }

    async fn fallocate(
        &self,
        req: Request,
        _inode: u64,
        fh: u64,
        offset: u64,
        length: u64,
        mode: u32,
    ) -> FuseResult<()> {
        let h = self.handle(fh)?;
        let allocate = async { self.ns.allocate(&h, offset, length, mode).await.map_err(|e| errno(&e)) };
        self.stoppable(&req, allocate).await
    }

    async fn getxattr(&self, req: Request, inode: u64, name: &OsStr, size: u32) -> FuseResult<ReplyXAttr> {
        self.get_xattr(req, inode, name, size).await
    }

    async fn setxattr(
        &self,
        req: Request,
        inode: u64,
        name: &OsStr,
        value: &[u8],
        flags: u32,
        _position: u32,
    ) -> FuseResult<()> {
        self.set_xattr(req, inode, name, value, flags).await
    }

    async fn listxattr(&self, req: Request, inode: u64, size: u32) -> FuseResult<ReplyXAttr> {
        self.list_xattr(req, inode, size).await
    }

    async fn removexattr(&self, req: Request, inode: u64, name: &OsStr) -> FuseResult<()> {
        self.remove_xattr(req, inode, name).await
    }

    async fn readlink(&self, req: Request, inode: u64) -> FuseResult<ReplyData> {
        let path = self.path(inode)?;
        let read = async { self.ns.bound().readlink(&components(&path)).await.map_err(|e| errno(&e)) };
        let target = self.stoppable(&req, read).await?;
        Ok(ReplyData { data: Bytes::from(target) })
    }

    async fn symlink(&self, req: Request, parent: u64, name: &OsStr, link: &OsStr) -> FuseResult<ReplyEntry> {
        let path = self.child(parent, name)?;
        let target = link.to_str().ok_or_else(|| Errno::from(libc::EINVAL))?;
        let make = async { self.ns.bound().symlink(&components(&path), target).await };
        self.make_name(&req, (parent, name), &path, make).await
    }

    async fn link(&self, req: Request, inode: u64, new_parent: u64, new_name: &OsStr) -> FuseResult<ReplyEntry> {
        let from = self.path(inode)?;
        self.spoil(inode);
        let to = self.child(new_parent, new_name)?;
        let make = async { self.ns.bound().link(&components(&from), &components(&to)).await };
        self.make_name(&req, (new_parent, new_name), &to, make).await
    }

    /// Fifos, sockets and device nodes are made on the serving machine
    /// (a device by whom its kernel lets), and opened by the opener's
    /// kernel: fifos and sockets carry what they carry there, devices
    /// are refused (the mount is `nodev`).
    async fn mknod(&self, req: Request, parent: u64, name: &OsStr, mode: u32, rdev: u32) -> FuseResult<ReplyEntry> {
        let path = self.child(parent, name)?;
        let make = async { self.ns.bound().mknod(&components(&path), mode, decode_dev(rdev)).await };
        self.make_name(&req, (parent, name), &path, make).await
    }

    async fn fsync(&self, req: Request, _inode: u64, fh: u64, _datasync: bool) -> FuseResult<()> {
        self.sync_file(req, fh).await
    }

    /// A directory's fsync tells a removal sent ahead that failed there.
    async fn fsyncdir(&self, req: Request, inode: u64, _fh: u64, _datasync: bool) -> FuseResult<()> {
        self.removals_landed(&req, Some(inode)).await?;
        self.removals.take_failure(inode).map_or(Ok(()), |e| Err(errno(&e)))
    }

    async fn read(&self, req: Request, inode: u64, fh: u64, offset: u64, size: u32) -> FuseResult<ReplyData> {
        self.read_data(req, inode, fh, offset, size).await
    }

    async fn write(
        &self,
        req: Request,
        inode: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        wf: u32,
        _flags: u32,
    ) -> FuseResult<ReplyWrite> {
        self.write_data(req, inode, fh, offset, data, wf).await
    }

    async fn flush(&self, req: Request, inode: u64, fh: u64, lock_owner: u64) -> FuseResult<()> {
        self.flush_file(req, inode, fh, lock_owner).await
    }

    async fn getlk(
        &self,
        req: Request,
        _inode: u64,
        fh: u64,
        lock_owner: u64,
        start: u64,
        end: u64,
        r#type: u32,
        _pid: u32,
    ) -> FuseResult<ReplyLock> {
        self.get_lock(req, fh, lock_owner, Lock { start, end, typ: r#type as i32, pid: 0 }).await
    }

    async fn setlk(
        &self,
        req: Request,
        inode: u64,
        fh: u64,
        lock_owner: u64,
        start: u64,
        end: u64,
        r#type: u32,
        _pid: u32,
        block: bool,
    ) -> FuseResult<()> {
        self.set_lock(req, inode, fh, lock_owner, Lock { start, end, typ: r#type as i32, pid: 0 }, block).await
    }

    async fn release(
        &self,
        _req: Request,
        inode: u64,
        fh: u64,
        _flags: u32,
        _lock_owner: u64,
        _flush: bool,
    ) -> FuseResult<()> {
        self.release_file(inode, fh).await
    }

    async fn opendir(&self, _req: Request, _inode: u64, _flags: u32) -> FuseResult<ReplyOpen> {
        Ok(ReplyOpen { fh: self.dirs.open(), flags: 0 })
    }

    async fn releasedir(&self, _req: Request, _inode: u64, fh: u64, _flags: u32) -> FuseResult<()> {
        self.dirs.close(fh);
        Ok(())
    }

    async fn readdir<'a>(
        &'a self,
        req: Request,
        parent: u64,
        fh: u64,
        offset: i64,
    ) -> FuseResult<ReplyDirectory<impl FutStream<Item = FuseResult<DirectoryEntry>> + Send + 'a>> {
        let out: Vec<FuseResult<DirectoryEntry>> = self
            .stoppable(&req, self.listing(parent, fh, offset.max(0) as u64, false))
            .await?
            .into_iter()
            .map(|(offset, inode, name, e)| Ok(DirectoryEntry { inode, kind: file_type(e.kind), name, offset }))
            .collect();
        Ok(ReplyDirectory { entries: stream::iter(out) })
    }

    /// Like readdir with attributes; each entry counts as a lookup.
    async fn readdirplus<'a>(
        &'a self,
        req: Request,
        parent: u64,
        fh: u64,
        offset: u64,
        _lock_owner: u64,
    ) -> FuseResult<ReplyDirectoryPlus<impl FutStream<Item = FuseResult<DirectoryEntryPlus>> + Send + 'a>> {
        let out: Vec<FuseResult<DirectoryEntryPlus>> = self
            .stoppable(&req, self.listing(parent, fh, offset, true))
            .await?
            .into_iter()
            .map(|(offset, inode, name, e)| {
                let (attr, ttl) = (self.attr(inode, &e), self.ttl(&e));
                Ok(DirectoryEntryPlus {
                    inode,
                    generation: 0,
                    kind: attr.kind,
                    name,
                    offset,
                    attr,
                    entry_ttl: ttl,
                    attr_ttl: ttl,
                })
            })
            .collect();
        Ok(ReplyDirectoryPlus { entries: stream::iter(out) })
    }

    async fn interrupt(&self, _req: Request, unique: u64) -> FuseResult<()> {
        let pending = lock(&self.pending);
        match pending.get(&unique) {
            Some(t) => t.cancel(),
            None => {
                let mut early = lock(&self.early);
                if early.len() >= EARLY_INTERRUPTS {
                    early.pop_front();
                }
                early.push_back(unique);
            }
        }
        Ok(())
    }

    async fn poll(
        &self,
        _req: Request,
        _inode: u64,
        fh: u64,
        kh: Option<u64>,
        _flags: u32,
        events: u32,
        notify: &Notify,
    ) -> FuseResult<ReplyPoll> {
        let h = self.handle(fh)?;
        let readable = self.ns.poll(&h, kh, self.waker(notify));
        let mut revents = events & (libc::POLLOUT | libc::POLLWRNORM) as u32;
        if readable {
            revents |= events & (libc::POLLIN | libc::POLLRDNORM) as u32;
        }
        Ok(ReplyPoll { revents })
    }

    /// A served directory's is its file system's (`df` works there); the
    /// tree's own has no blocks.
    async fn statfs(&self, req: Request, inode: u64) -> FuseResult<ReplyStatFs> {
        let path = self.path(inode)?;
        let ask = async { Ok(self.ns.bound().statfs(&components(&path)).await.ok()) };
        let served = self.stoppable(&req, ask).await?;
        let s = served.unwrap_or(StatFs { bsize: 4096, namelen: 255, frsize: 4096, ..StatFs::default() });
        Ok(ReplyStatFs {
            blocks: s.blocks,
            bfree: s.bfree,
            bavail: s.bavail,
            files: s.files,
            ffree: s.ffree,
            bsize: s.bsize,
            namelen: s.namelen,
            frsize: s.frsize,
        })
    }
}

mod attr;
mod data;
mod dirs;
mod exec;
mod inodes;
mod keep;
mod listed;
mod names;
pub mod notify;
mod open;
mod removals;
mod stop;
#[cfg(test)]
mod tests;
mod twins;
