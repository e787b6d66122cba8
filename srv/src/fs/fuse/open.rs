//! Files opened through the mount: `open` and `create`, the table of
//! open files (each descriptor's handle, by the number the kernel
//! keeps), and the open file that answers for a node the kernel asks
//! about without its descriptor (fstat, fchmod, futimens).

use std::ffi::OsStr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use fuse3::raw::prelude::*;
use fuse3::{Errno, Result as FuseResult};

use super::{
    errno, exec, inodes, lock, utf8, MeshFs, Open, FOPEN_DIRECT_IO, FOPEN_NONSEEKABLE, FOPEN_STREAM, STORED_OPEN,
};
use crate::fs::components;
use crate::fs::dir::watch::What;
use crate::fs::dir::Access;
use crate::fs::handle::Handle;
use crate::fs::remote::RemoteFile;
use crate::fs::tree::FileKind;

impl MeshFs {
    /// Opens a file: one of a served directory that a process of this
    /// machine runs may not be opened to truncate (see `exec`).
    pub(super) async fn open_file(&self, req: Request, inode: u64, flags: u32) -> FuseResult<ReplyOpen> {
        let path = self.path(inode)?;
        let f = flags as i32;
        if f & libc::O_TRUNC != 0 && f & libc::O_ACCMODE == libc::O_RDONLY && inodes::served(inode) {
            // The kernel asks about a running program only after this
            // OPEN, which carries the truncation (see `exec`).
            if let Some(mount) = self.mounted_at.clone() {
                let running = crate::fs::io::blocking(move || Ok(exec::running_here(&mount, inode))).await;
                if running.unwrap_or(false) {
                    return Err(Errno::from(libc::ETXTBSY));
                }
            }
        }
        let open = async {
            self.ns.bound().open_with(&components(&path), Access::from_flags(flags)).await.map_err(|e| errno(&e))
        };
        // Before the open is asked: a notice that comes after tells of a
        // change the open may not have seen.
        let mark = self.expected.told_mark();
        let h = self.stoppable(&req, open).await?;
        let fresh = match &h {
            Handle::RemoteFile(RemoteFile::Stored(p)) => p.take_opened().map(|e| (e, mark)),
            _ => None,
        };
        let (fh, flags) = self.add_handle(h, inode, None);
        if flags == STORED_OPEN {
            // Close-to-open: the kernel drops what it kept of the file,
            // and its next look is answered as the open found it.
            lock(&self.handles).entry(fh).and_modify(|o| o.fresh = fresh);
            self.reopened(inode);
        }
        Ok(ReplyOpen { fh, flags })
    }

    /// Makes (or, without O_EXCL, opens) a file and opens it.
    pub(super) async fn create_file(
        &self,
        req: Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: u32,
    ) -> FuseResult<ReplyCreated> {
        let path = self.child(parent, name)?;
        self.removals_landed(&req, Some(parent)).await?;
        let excl = flags as i32 & libc::O_EXCL != 0;
        let create = async {
            self.ns
                .bound()
                .create(&components(&path), mode, Access::from_flags(flags), excl)
                .await
                .map_err(|e| errno(&e))
        };
        // Made only if it was not there: then the notice is expected.
        let dir = self.path(parent)?;
        let absent = excl || self.listed.absent(parent, utf8(name)?, || self.ns.landing(&components(&dir)));
        let made: &[(u64, &OsStr, What)] = if absent { &[(parent, name, What::Made)] } else { &[] };
        self.touching(&[parent]);
        let expecting = self.expecting(made);
        let (e, h) = self.stoppable(&req, create).await?;
        expecting.made();
        // There now, made or not: a listing on its way may not show it.
        self.listed.made(parent, utf8(name)?);
        let entry = self.made(&path, &e);
        // Only a file certainly made now says who the caller is there: one
        // opened that was there already may be anyone's.
        if absent {
            self.made_by(parent, &req, &e);
        }
        let (fh, flags) = self.add_handle(h, entry.attr.ino, Some(req.pid));
        Ok(ReplyCreated { ttl: entry.ttl, attr: entry.attr, generation: 0, fh, flags })
    }

    /// A file opened (or made, by process `maker`): the other open files
    /// of the same file no longer foresee what a change makes of it.
    pub(super) fn add_handle(&self, h: Handle, ino: u64, maker: Option<u32>) -> (u64, u32) {
        self.spoil(ino);
        let flags = match crate::fs::handle_kind(&h) {
            FileKind::Stream => FOPEN_DIRECT_IO | FOPEN_NONSEEKABLE | FOPEN_STREAM,
            FileKind::Stored => STORED_OPEN,
            _ => FOPEN_DIRECT_IO,
        };
        let fh = self.next_fh.fetch_add(1, Relaxed);
        let id = lock(&self.inodes).id(ino);
        lock(&self.handles).insert(fh, Open { h: Arc::new(h), ino, maker, id, locked: false, fresh: None });
        (fh, flags)
    }

    /// An open file of a served directory that inode `ino` names: the
    /// kernel asks fstat by inode, without the descriptor, and a removed
    /// file has no path left to ask by.
    pub(super) fn open_stored(&self, ino: u64) -> Option<Arc<Handle>> {
        let stored = |h: &Handle| crate::fs::handle_kind(h) == FileKind::Stored;
        lock(&self.handles).values().find(|o| o.ino == ino && stored(&o.h)).map(|o| o.h.clone())
    }

    /// The one open file of node `ino`'s file, by any of its names, and
    /// the process that made the file with it; none if it is open more
    /// than once.
    pub(super) fn only_open(&self, ino: u64) -> Option<(Arc<Handle>, Option<u32>)> {
        let mut same = self.open_files(ino).into_iter();
        let one = same.next()?;
        same.next().is_none().then_some(one)
    }

    /// The open files of node `ino`'s file, by any of its names.
    pub(super) fn open_files(&self, ino: u64) -> Vec<(Arc<Handle>, Option<u32>)> {
        let id = lock(&self.inodes).id(ino);
        let handles = lock(&self.handles);
        let same = |o: &&Open| o.ino == ino || id.is_some() && o.id == id;
        handles.values().filter(same).map(|o| (o.h.clone(), o.maker)).collect()
    }

    /// Nothing more is foreseen of node `ino`'s file by its open files
    /// here: it is opened again, or a name of it removed, linked or
    /// renamed.
    pub(super) fn spoil(&self, ino: u64) {
        for (h, _) in self.open_files(ino) {
            if let Handle::RemoteFile(RemoteFile::Stored(p)) = &*h {
                p.spoil();
            }
        }
    }

    /// [`MeshFs::spoil`] of the file at `path`, if the kernel knows it.
    pub(super) fn spoil_at(&self, path: &str) {
        let node = lock(&self.inodes).node_at(path);
        if let Some(n) = node {
            self.spoil(n);
        }
    }

    /// Waits for the answers to the writes sent ahead on every open file
    /// of node `ino`: a size asked before them would shrink the file the
    /// kernel knows, which its writers here have already grown.
    pub(super) async fn settled(&self, ino: u64) -> FuseResult<()> {
        let open: Vec<Arc<Handle>> =
            lock(&self.handles).values().filter(|o| o.ino == ino).map(|o| o.h.clone()).collect();
        for h in open {
            self.ns.settle_writes(&h, false).await.map_err(|e| errno(&e))?;
        }
        Ok(())
    }

    pub(super) fn handle(&self, fh: u64) -> FuseResult<Arc<Handle>> {
        lock(&self.handles).get(&fh).map(|o| o.h.clone()).ok_or_else(|| Errno::from(libc::EBADF))
    }
}
