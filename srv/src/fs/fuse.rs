//! The FUSE server: the [`Namespace`] through fuse3.
//!
//! fuse3 is async on tokio and hands interrupts to the file system, so a
//! read blocked on a data file ends with EINTR on Ctrl-C instead of holding
//! its process in D state (fuser 0.18 answers FUSE_INTERRUPT with ENOSYS).
//! Every request runs in its own task: a blocked read blocks nobody else.
//!
//! Inodes are handed out per path and kept while the kernel holds a
//! lookup on them. Stream files open with direct I/O, non-seekable and as
//! streams; text files with direct I/O, since their size is not known.
//! Errors become errno in one place, [`ns::error::errno`].

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fuse3::raw::prelude::*;
use fuse3::{Errno, Result as FuseResult, Timestamp};
use futures::stream::{self, Stream as FutStream};
use tokio_util::sync::CancellationToken;

use super::handle::{Handle, Waker};
use super::tree::{Entry, FileKind};
use super::{components, Namespace};

const TTL: Duration = Duration::from_secs(1);
const ROOT: u64 = 1;
const FOPEN_DIRECT_IO: u32 = 1 << 0;
const FOPEN_NONSEEKABLE: u32 = 1 << 2;
const FOPEN_STREAM: u32 = 1 << 4;
/// Interrupts remembered for requests not yet registered.
const EARLY_INTERRUPTS: usize = 256;

/// Paths by inode and back; an inode lives while the kernel looks it up.
#[derive(Default)]
struct Inodes {
    by_ino: HashMap<u64, (String, u64)>,
    by_path: HashMap<String, u64>,
    next: u64,
}

impl Inodes {
    fn path(&self, ino: u64) -> Option<String> {
        if ino == ROOT {
            return Some("/".into());
        }
        self.by_ino.get(&ino).map(|(p, _)| p.clone())
    }

    fn get_or_add(&mut self, path: &str) -> u64 {
        if path == "/" {
            return ROOT;
        }
        if let Some(&ino) = self.by_path.get(path) {
            if let Some(e) = self.by_ino.get_mut(&ino) {
                e.1 += 1;
            }
            return ino;
        }
        self.next = self.next.max(ROOT) + 1;
        let ino = self.next;
        self.by_ino.insert(ino, (path.to_string(), 1));
        self.by_path.insert(path.to_string(), ino);
        ino
    }

    fn forget(&mut self, ino: u64, n: u64) {
        if let Some(e) = self.by_ino.get_mut(&ino) {
            e.1 = e.1.saturating_sub(n);
            if e.1 == 0 {
                let (p, _) = self.by_ino.remove(&ino).unwrap_or_default();
                self.by_path.remove(&p);
            }
        }
    }
}

/// The file system fuse3 serves.
pub struct MeshFs {
    ns: Arc<Namespace>,
    inodes: Mutex<Inodes>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Blocked reads by request, so an interrupt can end them.
    pending: Mutex<HashMap<u64, CancellationToken>>,
    early: Mutex<VecDeque<u64>>,
    uid: u32,
    gid: u32,
    shutdown: CancellationToken,
}

fn errno(e: &str) -> Errno {
    let n = if e.ends_with("file does not exist") { libc::ENOENT } else { ns::error::errno(e) };
    Errno::from(n)
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
            handles: Default::default(),
            next_fh: AtomicU64::new(1),
            pending: Default::default(),
            early: Default::default(),
            uid,
            gid,
            shutdown,
        }
    }

    fn path(&self, ino: u64) -> FuseResult<String> {
        lock(&self.inodes).path(ino).ok_or_else(|| Errno::from(libc::ENOENT))
    }

    fn attr(&self, ino: u64, e: &Entry) -> FileAttr {
        let now = Timestamp::from(SystemTime::now());
        let kind = if e.kind == FileKind::Dir { FileType::Directory } else { FileType::RegularFile };
        FileAttr {
            ino,
            size: 0,
            blocks: 0,
            atime: now,
            mtime: now,
            ctime: now,
            kind,
            perm: e.mode,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
        }
    }

    async fn stat(&self, path: &str) -> FuseResult<Entry> {
        if path == "/" {
            return Ok(Entry { name: String::new(), kind: FileKind::Dir, mode: 0o555 });
        }
        self.ns.stat(&components(path)).await.map_err(|e| errno(&e))
    }

    fn handle(&self, fh: u64) -> FuseResult<Arc<Handle>> {
        lock(&self.handles).get(&fh).cloned().ok_or_else(|| Errno::from(libc::EBADF))
    }

    /// Runs a blocking read so that an interrupt or shutdown ends it.
    async fn interruptible(&self, unique: u64, h: &Handle, offset: u64, size: usize) -> FuseResult<Bytes> {
        let token = CancellationToken::new();
        {
            let mut early = lock(&self.early);
            if let Some(i) = early.iter().position(|&u| u == unique) {
                early.remove(i);
                token.cancel();
            }
        }
        lock(&self.pending).insert(unique, token.clone());
        let res = tokio::select! {
            r = self.ns.read(h, offset, size) => r.map_err(|e| errno(&e)),
            _ = token.cancelled() => {
                self.ns.cancel(h).await;
                Err(Errno::from(libc::EINTR))
            }
            // Unmounting: readers see end of file.
            _ = self.shutdown.cancelled() => Ok(Bytes::new()),
        };
        lock(&self.pending).remove(&unique);
        res
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

    async fn lookup(&self, _req: Request, parent: u64, name: &OsStr) -> FuseResult<ReplyEntry> {
        let name = name.to_str().ok_or_else(|| Errno::from(libc::ENOENT))?;
        let parent = self.path(parent)?;
        let path = if parent == "/" { format!("/{name}") } else { format!("{parent}/{name}") };
        let e = self.stat(&path).await?;
        let ino = lock(&self.inodes).get_or_add(&path);
        Ok(ReplyEntry { ttl: TTL, attr: self.attr(ino, &e), generation: 0 })
    }

    async fn forget(&self, _req: Request, inode: u64, nlookup: u64) {
        lock(&self.inodes).forget(inode, nlookup);
    }

    async fn batch_forget(&self, _req: Request, inodes: &[(u64, u64)]) {
        let mut t = lock(&self.inodes);
        for &(i, n) in inodes {
            t.forget(i, n);
        }
    }

    async fn getattr(&self, _req: Request, inode: u64, _fh: Option<u64>, _flags: u32) -> FuseResult<ReplyAttr> {
        let path = self.path(inode)?;
        let e = self.stat(&path).await?;
        Ok(ReplyAttr { ttl: TTL, attr: self.attr(inode, &e) })
    }

    /// Truncation (`echo x > ctl` opens with O_TRUNC) is accepted and
    /// means nothing: these files have no stored contents.
    async fn setattr(&self, req: Request, inode: u64, fh: Option<u64>, _set: SetAttr) -> FuseResult<ReplyAttr> {
        self.getattr(req, inode, fh, 0).await
    }

    async fn open(&self, _req: Request, inode: u64, flags: u32) -> FuseResult<ReplyOpen> {
        let path = self.path(inode)?;
        let acc = flags as i32 & libc::O_ACCMODE;
        let (read, write) = (acc != libc::O_WRONLY, acc != libc::O_RDONLY);
        let h = self.ns.open(&components(&path), read, write).await.map_err(|e| errno(&e))?;
        let open_flags = match super::handle_kind(&h) {
            FileKind::Stream => FOPEN_DIRECT_IO | FOPEN_NONSEEKABLE | FOPEN_STREAM,
            _ => FOPEN_DIRECT_IO,
        };
        let fh = self.next_fh.fetch_add(1, Relaxed);
        lock(&self.handles).insert(fh, Arc::new(h));
        Ok(ReplyOpen { fh, flags: open_flags })
    }

    async fn read(&self, req: Request, _inode: u64, fh: u64, offset: u64, size: u32) -> FuseResult<ReplyData> {
        let h = self.handle(fh)?;
        let data = self.interruptible(req.unique, &h, offset, size as usize).await?;
        Ok(ReplyData { data })
    }

    async fn write(&self, _req: Request, _inode: u64, fh: u64, _offset: u64, data: &[u8], _wf: u32, _flags: u32) -> FuseResult<ReplyWrite> {
        let h = self.handle(fh)?;
        let n = self.ns.write(&h, data).await.map_err(|e| errno(&e))?;
        Ok(ReplyWrite { written: n as u32 })
    }

    async fn flush(&self, _req: Request, _inode: u64, _fh: u64, _lock_owner: u64) -> FuseResult<()> {
        Ok(())
    }

    async fn release(&self, _req: Request, _inode: u64, fh: u64, _flags: u32, _lock_owner: u64, _flush: bool) -> FuseResult<()> {
        let h = lock(&self.handles).remove(&fh);
        if let Some(h) = h.and_then(|h| Arc::try_unwrap(h).ok()) {
            self.ns.release(h).await;
        }
        Ok(())
    }

    async fn opendir(&self, _req: Request, _inode: u64, _flags: u32) -> FuseResult<ReplyOpen> {
        Ok(ReplyOpen { fh: 0, flags: 0 })
    }

    async fn releasedir(&self, _req: Request, _inode: u64, _fh: u64, _flags: u32) -> FuseResult<()> {
        Ok(())
    }

    async fn readdir<'a>(
        &'a self,
        _req: Request,
        parent: u64,
        _fh: u64,
        offset: i64,
    ) -> FuseResult<ReplyDirectory<impl FutStream<Item = FuseResult<DirectoryEntry>> + Send + 'a>> {
        let path = self.path(parent)?;
        let entries = self.ns.list(&components(&path)).await.map_err(|e| errno(&e))?;
        let mut all = vec![(parent, FileType::Directory, OsString::from(".")), (parent, FileType::Directory, OsString::from(".."))];
        {
            let inodes = lock(&self.inodes);
            for e in entries {
                let p = if path == "/" { format!("/{}", e.name) } else { format!("{path}/{}", e.name) };
                // readdir does not count as a lookup: do not pin the inode.
                let ino = inodes.by_path.get(&p).copied().unwrap_or(u64::MAX);
                let kind = if e.kind == FileKind::Dir { FileType::Directory } else { FileType::RegularFile };
                all.push((ino, kind, OsString::from(e.name)));
            }
        }
        let out: Vec<FuseResult<DirectoryEntry>> = all
            .into_iter()
            .enumerate()
            .skip(offset.max(0) as usize)
            .map(|(i, (inode, kind, name))| Ok(DirectoryEntry { inode, kind, name, offset: i as i64 + 1 }))
            .collect();
        Ok(ReplyDirectory { entries: stream::iter(out) })
    }

    /// Like readdir with attributes; each entry counts as a lookup.
    async fn readdirplus<'a>(
        &'a self,
        _req: Request,
        parent: u64,
        _fh: u64,
        offset: u64,
        _lock_owner: u64,
    ) -> FuseResult<ReplyDirectoryPlus<impl FutStream<Item = FuseResult<DirectoryEntryPlus>> + Send + 'a>> {
        let path = self.path(parent)?;
        let entries = self.ns.list(&components(&path)).await.map_err(|e| errno(&e))?;
        let dot = Entry { name: String::new(), kind: FileKind::Dir, mode: 0o555 };
        let mut out = Vec::new();
        let mut inodes = lock(&self.inodes);
        let all = [(".".to_string(), dot.clone()), ("..".to_string(), dot)]
            .into_iter()
            .chain(entries.into_iter().map(|e| (e.name.clone(), e)));
        for (i, (name, e)) in all.enumerate().skip(offset as usize) {
            let ino = if name == "." || name == ".." {
                parent
            } else {
                let p = if path == "/" { format!("/{name}") } else { format!("{path}/{name}") };
                inodes.get_or_add(&p)
            };
            let attr = self.attr(ino, &e);
            out.push(Ok(DirectoryEntryPlus {
                inode: ino,
                generation: 0,
                kind: attr.kind,
                name: OsString::from(name),
                offset: i as i64 + 1,
                attr,
                entry_ttl: TTL,
                attr_ttl: TTL,
            }));
        }
        Ok(ReplyDirectoryPlus { entries: stream::iter(out) })
    }

    async fn interrupt(&self, _req: Request, unique: u64) -> FuseResult<()> {
        match lock(&self.pending).get(&unique) {
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

    async fn poll(&self, _req: Request, _inode: u64, fh: u64, kh: Option<u64>, _flags: u32, events: u32, notify: &Notify) -> FuseResult<ReplyPoll> {
        let h = self.handle(fh)?;
        let readable = self.ns.poll(&h, kh, self.waker(notify));
        let mut revents = events & (libc::POLLOUT | libc::POLLWRNORM) as u32;
        if readable {
            revents |= events & (libc::POLLIN | libc::POLLRDNORM) as u32;
        }
        Ok(ReplyPoll { revents })
    }

    async fn statfs(&self, _req: Request, _inode: u64) -> FuseResult<ReplyStatFs> {
        Ok(ReplyStatFs { blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, bsize: 4096, namelen: 255, frsize: 4096 })
    }
}
