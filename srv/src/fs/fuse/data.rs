//! The data path of open files: reads, writes (a served file's pages
//! going back as the bytes changed, see `twins`), flush and fsync, record
//! locks held on the serving machine, and release.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fuse3::raw::prelude::*;
use fuse3::{Errno, Result as FuseResult};

use super::stop::Stopped;
use super::{errno, lock, MeshFs, FUSE_WRITE_CACHE};
use crate::fs::dir::locks::Lock;
use crate::fs::handle::Handle;
use crate::fs::tree::FileKind;

/// How often a waiting lock asks again: soon at first, then every
/// quarter second at most.
const LOCK_RETRY_MIN: Duration = Duration::from_millis(5);

const LOCK_RETRY_MAX: Duration = Duration::from_millis(250);

impl MeshFs {
    pub(super) async fn sync_file(&self, req: Request, fh: u64) -> FuseResult<()> {
        let h = self.handle(fh)?;
        let sync = async { self.ns.sync(&h).await.map_err(|e| errno(&e)) };
        match *h {
            Handle::Stored(..) => sync.await,
            _ => self.stoppable(&req, sync).await,
        }
    }

    pub(super) async fn read_data(
        &self,
        req: Request,
        inode: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> FuseResult<ReplyData> {
        let h = self.handle(fh)?;
        let read = async { self.ns.read(&h, offset, size as usize).await.map_err(|e| errno(&e)) };
        let data = match self.interruptible(&req, read).await {
            Ok(r) => r?,
            // The service is told, so that it can stop the work.
            Err(Stopped::Interrupted) => {
                self.ns.cancel(&h).await;
                return Err(Errno::from(libc::EINTR));
            }
            // Unmounting: readers see end of file.
            Err(Stopped::Unmounting) => Bytes::new(),
        };
        if crate::fs::handle_kind(&h) == FileKind::Stored {
            self.twins.read(inode, offset, &data);
        }
        Ok(ReplyData { data })
    }

    /// A write to a stream is one message: interrupted while it waits for
    /// the conversation's credit, it sent nothing.
    pub(super) async fn write_data(
        &self,
        req: Request,
        inode: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        wf: u32,
    ) -> FuseResult<ReplyWrite> {
        let h = self.handle(fh)?;
        if crate::fs::handle_kind(&h) == FileKind::Stored {
            self.expected.wrote(inode);
            // Pages written back from the cache go as the bytes changed
            // since they were read (see `twins`).
            let cached = wf & FUSE_WRITE_CACHE != 0;
            let runs = self.twins.write(inode, offset, data, cached);
            let whole = 0..data.len();
            // A lock's release: sent once all are in, last first.
            let gathering = runs.as_deref().unwrap_or(std::slice::from_ref(&whole));
            if cached && self.twins.gathered(inode, offset, data, gathering) {
                return Ok(ReplyWrite { written: data.len() as u32 });
            }
            if let Some(runs) = runs {
                for r in runs {
                    self.ns.write_at(&h, offset + r.start as u64, &data[r]).await.map_err(|e| errno(&e))?;
                }
                return Ok(ReplyWrite { written: data.len() as u32 });
            }
        }
        let write = async { self.ns.write_at(&h, offset, data).await.map_err(|e| errno(&e)) };
        let n = match *h {
            Handle::Stored(..) => write.await?,
            _ => self.stoppable(&req, write).await?,
        };
        Ok(ReplyWrite { written: n as u32 })
    }

    /// A descriptor closed: its process's record locks on the file end.
    pub(super) async fn flush_file(&self, req: Request, inode: u64, fh: u64, lock_owner: u64) -> FuseResult<()> {
        let locked = lock(&self.handles).get(&fh).filter(|o| o.locked).map(|o| o.h.clone());
        // The lock point's error is the writer's too: sending what the
        // kernel wrote back takes a write sent ahead that failed, which
        // then no longer waits for the settling below.
        let mut released = Ok(());
        if let Some(h) = locked {
            released = self
                .stoppable(&req, async { self.lock_point(inode, false, req.pid).await.map_err(|e| errno(&e)) })
                .await;
            // Interrupted or not, the locks go; the lock point lets the
            // removals sent ahead land first (sqlite's journal), and an
            // interrupted one still waits for them, for a bounded while.
            if released.is_err() {
                self.removals.landed_within(super::removals::LANDING).await;
            }
            self.ns.unlock_owner(&h, lock_owner).await;
        }
        // A write sent ahead that failed is told here, at close.
        let h = self.handle(fh)?;
        let settled =
            self.stoppable(&req, async { self.ns.settle_writes(&h, true).await.map_err(|e| errno(&e)) }).await;
        released.and(settled)
    }

    pub(super) async fn get_lock(&self, req: Request, fh: u64, lock_owner: u64, l: Lock) -> FuseResult<ReplyLock> {
        let h = self.handle(fh)?;
        let get = async { self.ns.lock(&h, lock_owner, l, true).await.map_err(|e| errno(&e)) };
        let got = self.stoppable(&req, get).await?;
        Ok(ReplyLock { start: got.start, end: got.end, r#type: got.typ as u32, pid: got.pid })
    }

    /// Locks are held on the serving machine (see dir::locks). A waiting
    /// lock asks again, more slowly each time up to [`LOCK_RETRY_MAX`],
    /// until it is taken, interrupted or the tree unmounted.
    pub(super) async fn set_lock(
        &self,
        req: Request,
        inode: u64,
        fh: u64,
        lock_owner: u64,
        l: Lock,
        block: bool,
    ) -> FuseResult<()> {
        let h = self.handle(fh)?;
        if l.typ != libc::F_UNLCK {
            if let Some(o) = lock(&self.handles).get_mut(&fh) {
                o.locked = true;
            }
            self.twins.watch(inode);
        }
        let taken = l.typ != libc::F_UNLCK;
        let take = async {
            if !taken {
                self.lock_point(inode, false, req.pid).await.map_err(|e| errno(&e))?;
            }
            let mut wait = LOCK_RETRY_MIN;
            loop {
                match self.ns.lock(&h, lock_owner, l, false).await {
                    Err(e) if block && errno(&e) == Errno::from(libc::EAGAIN) => {}
                    Ok(_) if taken => return self.lock_point(inode, true, req.pid).await.map_err(|e| errno(&e)),
                    other => return other.map(drop).map_err(|e| errno(&e)),
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(LOCK_RETRY_MAX);
            }
        };
        self.stoppable(&req, take).await
    }

    pub(super) async fn release_file(&self, inode: u64, fh: u64) -> FuseResult<()> {
        let open = {
            let mut handles = lock(&self.handles);
            let open = handles.remove(&fh);
            if !handles.values().any(|o| o.ino == inode) {
                self.twins.forget(inode);
            }
            open
        };
        if let Some(h) = open.and_then(|o| Arc::try_unwrap(o.h).ok()) {
            self.ns.release(h).await;
        }
        Ok(())
    }
}
