//! Interrupts: every request that can wait on the mesh ends with EINTR
//! when the kernel interrupts it, and with ESHUTDOWN when the tree is
//! unmounted (see the module above).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use fuse3::raw::prelude::*;
use fuse3::{Errno, Result as FuseResult};
use tokio_util::sync::CancellationToken;

use super::{lock, MeshFs};
use crate::fs::caller::Caller;

/// Why a request's work was stopped before it ended.
pub(super) enum Stopped {
    Interrupted,
    Unmounting,
}

/// Forgets a request's interrupt token when its work ends, however it ends.
struct Pending<'a>(&'a Mutex<HashMap<u64, CancellationToken>>, u64);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        lock(self.0).remove(&self.1);
    }
}

impl MeshFs {
    /// Runs `work` for request `req`, as its caller, until it ends, or an
    /// interrupt of that request or the unmount stops it (dropping it).
    pub(super) async fn interruptible<T>(
        &self,
        req: &Request,
        work: impl Future<Output = FuseResult<T>>,
    ) -> Result<FuseResult<T>, Stopped> {
        let unique = req.unique;
        let work = Caller::local(req.uid, req.gid, req.pid).scope(work);
        let token = CancellationToken::new();
        lock(&self.pending).insert(unique, token.clone());
        let _pending = Pending(&self.pending, unique);
        // Looked for after registering: `interrupt` holds `pending` while
        // it adds to `early`, so an interrupt is found in one or the other.
        {
            let mut early = lock(&self.early);
            if let Some(i) = early.iter().position(|&u| u == unique) {
                early.remove(i);
                token.cancel();
            }
        }
        tokio::select! {
            r = work => Ok(r),
            _ = token.cancelled() => Err(Stopped::Interrupted),
            _ = self.shutdown.cancelled() => Err(Stopped::Unmounting),
        }
    }

    /// [`MeshFs::interruptible`] for a request with nothing to tell
    /// anyone when stopped.
    pub(super) async fn stoppable<T>(&self, req: &Request, work: impl Future<Output = FuseResult<T>>) -> FuseResult<T> {
        match self.interruptible(req, work).await {
            Ok(r) => r,
            Err(Stopped::Interrupted) => Err(Errno::from(libc::EINTR)),
            Err(Stopped::Unmounting) => Err(Errno::from(libc::ESHUTDOWN)),
        }
    }
}
