//! Attributes: what a tree entry says, as FUSE's `FileAttr`; what
//! `getattr` and `setattr` ask of the namespace (a served file's open
//! descriptor answering for it where the kernel asks by inode); extended
//! attributes.

use std::ffi::OsStr;
use std::time::SystemTime;

use bytes::Bytes;
use fuse3::raw::prelude::*;
use fuse3::{Errno, Result as FuseResult, Timestamp};

use super::{errno, lock, MeshFs};
use crate::fs::components;
use crate::fs::dir::{Attrs, Id};
use crate::fs::handle::Handle;
use crate::fs::remote::RemoteFile;
use crate::fs::tree::{Entry, FileKind};

/// The block size files of served directories report: `cat` and `cp` read
/// and write in blocks of it, and the kernel's largest request is 1 MiB.
pub(super) const STORED_BLKSIZE: u32 = 1 << 20;

/// What FUSE calls a tree file's kind.
pub(super) fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::Dir => FileType::Directory,
        FileKind::Link => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::File | FileKind::Stream | FileKind::Stored => FileType::RegularFile,
    }
}

/// A device number as FUSE carries it (the kernel's `new_encode_dev`),
/// from the `dev_t` of the serving machine's C library.
pub(super) fn encode_dev(dev: u64) -> u32 {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// A device number from FUSE, as a `dev_t`.
pub(super) fn decode_dev(dev: u32) -> u64 {
    libc::makedev((dev & 0xfff00) >> 8, (dev & 0xff) | ((dev >> 12) & 0xfff00))
}

/// An attribute's value, or its size when the caller asks with none.
pub(super) fn xattr_reply(v: Vec<u8>, size: u32) -> FuseResult<ReplyXAttr> {
    match size {
        0 => Ok(ReplyXAttr::Size(v.len() as u32)),
        n if (n as usize) < v.len() => Err(Errno::from(libc::ERANGE)),
        _ => Ok(ReplyXAttr::Data(Bytes::from(v))),
    }
}

impl MeshFs {
    /// A user or group as the serving machine is told it: this mount's own
    /// is the serving router's.
    pub(super) fn id(&self, n: u32, own: u32) -> Id {
        if n == own {
            Id::Router
        } else {
            Id::Num(n)
        }
    }

    pub(super) fn attr(&self, ino: u64, e: &Entry) -> FileAttr {
        let now = Timestamp::from(SystemTime::now());
        let kind = file_type(e.kind);
        let ts = |(s, n): (i64, u32)| Timestamp::new(s, n);
        let (size, atime, mtime, ctime, nlink) = match &e.meta {
            Some(m) => (m.size, ts(m.atime), ts(m.mtime), ts(m.ctime), m.nlink),
            None => (0, now, now, now, if kind == FileType::Directory { 2 } else { 1 }),
        };
        let m = e.meta.as_ref();
        FileAttr {
            // fuse3 takes this as the node id too: one per path.
            ino,
            size,
            blocks: size.div_ceil(512),
            atime,
            mtime,
            ctime,
            kind,
            perm: e.mode,
            nlink,
            uid: m.and_then(|m| m.uid).unwrap_or(self.uid),
            gid: m.and_then(|m| m.gid).unwrap_or(self.gid),
            rdev: m.map_or(0, |m| encode_dev(m.rdev)),
            blksize: if e.kind == FileKind::Stored { STORED_BLKSIZE } else { 4096 },
        }
    }

    pub(super) async fn get_attr(&self, req: Request, inode: u64, fh: Option<u64>) -> FuseResult<ReplyAttr> {
        self.tune();
        let path = self.path(inode)?;
        // A directory as a change made here left it (see `coherence`).
        if fh.is_none() {
            let kept = lock(&self.inodes).id(inode).and_then(|id| self.ns.coherence().kept(id));
            // fstat(2) asks without its descriptor.
            if let Some(e) = kept.or_else(|| self.fresh(None, inode)) {
                return Ok(ReplyAttr { ttl: self.ttl(&e), attr: self.attr(inode, &e) });
            }
            // Asked there, it would not show the removals on their way.
            self.removals_landed(&req, Some(inode)).await?;
        }
        // A local open file answers for itself, even once removed.
        let open = fh.and_then(|fh| self.handle(fh).ok());
        let e = match open {
            Some(h) if matches!(*h, Handle::Stored(..)) => {
                self.ns.handle_attr(&h, Attrs::default()).await.map_err(|e| errno(&e))?
            }
            // An open file of another machine answers over its own
            // conversation, removed or not; right after its open, as the
            // open found it, if nothing changed it since that this mount
            // knows of (a notice acted on, a write here).
            Some(h) if matches!(*h, Handle::RemoteFile(crate::fs::remote::RemoteFile::Stored(_))) => {
                if let Some(e) = self.fresh(fh, inode) {
                    return Ok(ReplyAttr { ttl: self.ttl(&e), attr: self.attr(inode, &e) });
                }
                let attr = async {
                    self.settled(inode).await?;
                    self.ns.handle_attr(&h, Attrs::default()).await.map_err(|e| errno(&e))
                };
                self.stoppable(&req, attr).await?
            }
            _ => match self.stoppable(&req, self.stat_settled(inode, &path)).await {
                // Removed while open (fstat asks without its descriptor).
                Err(e) if e == Errno::from(libc::ENOENT) => match self.open_stored(inode) {
                    Some(h) => {
                        let attr = async { self.ns.handle_attr(&h, Attrs::default()).await.map_err(|e| errno(&e)) };
                        self.stoppable(&req, attr).await?
                    }
                    None => return Err(e),
                },
                other => other?,
            },
        };
        Ok(ReplyAttr { ttl: self.ttl(&e), attr: self.attr(inode, &e) })
    }

    /// What open file `fh` (or, without it, one of node `ino` just
    /// opened) was found as at its open, once, if nothing since may have
    /// changed it: no notice about it acted on, nothing written to it
    /// here lately, nothing sent on it.
    fn fresh(&self, fh: Option<u64>, ino: u64) -> Option<Entry> {
        let (h, (e, mark), others) = {
            let mut handles = lock(&self.handles);
            let others: Vec<_> = handles.values().filter(|o| o.ino == ino).map(|o| o.h.clone()).collect();
            let o = match fh {
                Some(fh) => handles.get_mut(&fh)?,
                None => handles.values_mut().find(|o| o.ino == ino && o.fresh.is_some())?,
            };
            (o.h.clone(), o.fresh.take()?, others)
        };
        let touched = |h: &Handle| match h {
            Handle::RemoteFile(RemoteFile::Stored(p)) => p.touched(),
            _ => true,
        };
        let quiet = |h: &Handle| match h {
            Handle::RemoteFile(RemoteFile::Stored(p)) => p.quiet(),
            _ => true,
        };
        let sent = touched(&h);
        // Writes of the file's other descriptors here, still on their
        // way, may not be in what the open found.
        let others_quiet = others.iter().all(|o| quiet(o));
        let unchanged =
            !sent && others_quiet && !self.expected.told_since(ino, mark) && !self.expected.wrote_lately(ino);
        unchanged.then_some(e)
    }

    /// Size, mode and times change files of served directories; ownership
    /// is not kept (machines do not share users). On the tree's own files
    /// it is accepted and means nothing: `echo x > ctl` truncates first.
    pub(super) async fn set_attr(
        &self,
        req: Request,
        inode: u64,
        fh: Option<u64>,
        set: SetAttr,
    ) -> FuseResult<ReplyAttr> {
        let path = self.path(inode)?;
        // A directory's removals on their way land first: its mode or times
        // changed before them would refuse them, or be moved by them.
        self.removals_landed(&req, Some(inode)).await?;
        let ts = |t: Option<Timestamp>| t.map(|t| (t.sec, t.nsec));
        let attrs = Attrs {
            size: set.size,
            mode: set.mode.map(|m| m & 0o7777),
            atime: ts(set.atime),
            mtime: ts(set.mtime),
            uid: set.uid.map(|u| self.id(u, self.uid)),
            gid: set.gid.map(|g| self.id(g, self.gid)),
        };
        // fchmod and futimens come without the descriptor: any open file
        // of the inode will do, and works once the file is removed.
        let h = fh.and_then(|fh| self.handle(fh).ok()).or_else(|| self.open_stored(inode));
        if let Some(id) = lock(&self.inodes).id(inode) {
            self.ns.coherence().forget(&[id]);
        }
        // Its answer is what the kernel keeps; the notice is this mount's.
        self.expected.wrote(inode);
        if set.size.is_some() {
            self.twins.drop_pages(inode);
        }
        if let Some(e) = self.set_attr_ahead(&req, inode, attrs).await? {
            return Ok(ReplyAttr { ttl: super::TTL, attr: self.attr(inode, &e) });
        }
        let set =
            async { self.ns.bound().set_attr(&components(&path), h.as_deref(), attrs).await.map_err(|e| errno(&e)) };
        let e = self.stoppable(&req, set).await?;
        Ok(ReplyAttr { ttl: self.ttl(&e), attr: self.attr(inode, &e) })
    }

    /// A change of mode, owner or times of a file this mount made, open
    /// here once only (another open's writes would leave the size it
    /// foresees behind), by the process that made it (a failure is told
    /// to that process, at its next write, fsync or close), goes ahead of
    /// its answer where the answer is certain (see `remote::known`). The
    /// kernel keeps what it is told for a short while only, and is told to
    /// ask again once the answer comes: it then has the serving machine's
    /// change time, or, if the change failed there, the file as it is.
    async fn set_attr_ahead(&self, req: &Request, inode: u64, attrs: Attrs) -> FuseResult<Option<Entry>> {
        let Some(n) = self.notifier.get().cloned() else { return Ok(None) };
        let Some((h, maker)) = self.only_open(inode) else { return Ok(None) };
        let Handle::RemoteFile(RemoteFile::Stored(p)) = &*h else { return Ok(None) };
        if maker != Some(req.pid) {
            return Ok(None);
        }
        let owns = |e: &Entry| e.meta.and_then(|m| m.uid).unwrap_or(self.uid) == req.uid;
        let group = self.id(req.gid, self.gid);
        let ahead = p.attr_ahead(attrs, owns, group).await.map_err(|e| errno(&e))?;
        let Some((e, told)) = ahead else { return Ok(None) };
        tokio::spawn(async move {
            let _ = told.await;
            let _ = n.inode(inode, false);
        });
        Ok(Some(e))
    }

    /// `user.*` attributes of served files; the kernel's own (`security.`,
    /// `system.`) are answered here at once (see dir::xattr).
    pub(super) async fn get_xattr(&self, req: Request, inode: u64, name: &OsStr, size: u32) -> FuseResult<ReplyXAttr> {
        let path = self.path(inode)?;
        let name = name.to_str().ok_or_else(|| Errno::from(libc::ENODATA))?;
        let get = async { self.ns.bound().getxattr(&components(&path), name).await.map_err(|e| errno(&e)) };
        let v = self.stoppable(&req, get).await?;
        xattr_reply(v, size)
    }

    pub(super) async fn set_xattr(
        &self,
        req: Request,
        inode: u64,
        name: &OsStr,
        value: &[u8],
        flags: u32,
    ) -> FuseResult<()> {
        let path = self.path(inode)?;
        let name = name.to_str().ok_or_else(|| Errno::from(libc::EOPNOTSUPP))?;
        self.removals_landed(&req, Some(inode)).await?;
        let set =
            async { self.ns.bound().setxattr(&components(&path), name, value, flags).await.map_err(|e| errno(&e)) };
        self.stoppable(&req, set).await
    }

    pub(super) async fn list_xattr(&self, req: Request, inode: u64, size: u32) -> FuseResult<ReplyXAttr> {
        let path = self.path(inode)?;
        let list = async { self.ns.bound().listxattr(&components(&path)).await.map_err(|e| errno(&e)) };
        let names = self.stoppable(&req, list).await?;
        let mut v = Vec::new();
        for n in names {
            v.extend_from_slice(n.as_bytes());
            v.push(0);
        }
        xattr_reply(v, size)
    }

    pub(super) async fn remove_xattr(&self, req: Request, inode: u64, name: &OsStr) -> FuseResult<()> {
        let path = self.path(inode)?;
        let name = name.to_str().ok_or_else(|| Errno::from(libc::ENODATA))?;
        self.removals_landed(&req, Some(inode)).await?;
        let remove = async { self.ns.bound().removexattr(&components(&path), name).await.map_err(|e| errno(&e)) };
        self.stoppable(&req, remove).await
    }
}
