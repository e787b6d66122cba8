//! Changes of names through the mount that do more than ask: a
//! directory made (known whole from then on), renames (the node table
//! follows, what the kernel keeps of both directories goes), removals
//! (sent ahead where they may be, see [`super::removals`]), and links,
//! symbolic links and nodes made.

use std::ffi::OsStr;
use std::future::Future;

use fuse3::raw::prelude::*;
use fuse3::{Errno, Result as FuseResult};

use super::{errno, lock, MeshFs};
use crate::fs::components;
use crate::fs::dir::watch::What;
use crate::fs::tree::Entry;

impl MeshFs {
    /// A directory made empty and told of is known whole from then on.
    pub(super) async fn make_dir(&self, req: Request, parent: u64, name: &OsStr, mode: u32) -> FuseResult<ReplyEntry> {
        let path = self.child(parent, name)?;
        self.removals_landed(&req, Some(parent)).await?;
        let mkdir = async { self.ns.bound().mkdir(&components(&path), mode).await.map_err(|e| errno(&e)) };
        let expecting = self.expecting(&[(parent, name, What::Made)]);
        let since = self.listed.since();
        let e = self.stoppable(&req, mkdir).await?;
        expecting.made();
        let entry = self.made(&path, &e);
        // The caller is itself in the directory it made, too.
        self.made_by(parent, &req, &e);
        self.made_by(entry.attr.ino, &req, &e);
        // Made empty and told: every name in it is known (none).
        if e.meta.as_ref().is_some_and(|m| m.watched && m.empty_told) && self.notifier.get().is_some() {
            if let Some(landing) = self.ns.landing(&components(&path)) {
                self.listed.made_empty(entry.attr.ino, landing, since);
            }
        }
        Ok(entry)
    }

    /// RENAME_NOREPLACE and RENAME_EXCHANGE are the serving machine's; an
    /// exchange is told as two renames each way, so its notices are acted
    /// on.
    pub(super) async fn rename_name(
        &self,
        req: Request,
        (parent, name): (u64, &OsStr),
        (new_parent, new_name): (u64, &OsStr),
        flags: u32,
    ) -> FuseResult<()> {
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 {
            return Err(Errno::from(libc::EINVAL));
        }
        let from = self.child(parent, name)?;
        let to = self.child(new_parent, new_name)?;
        self.removals_landed(&req, None).await?;
        self.spoil_at(&from);
        self.spoil_at(&to);
        let rename =
            async { self.ns.bound().rename(&components(&from), &components(&to), flags).await.map_err(|e| errno(&e)) };
        let moved: &[(u64, &OsStr, What)] = if flags & libc::RENAME_EXCHANGE == 0 {
            &[(parent, name, What::Gone), (new_parent, new_name, What::Made)]
        } else {
            &[]
        };
        self.touching(&[parent, new_parent]);
        let expecting = self.expecting(moved);
        self.stoppable(&req, rename).await?;
        expecting.made();
        if flags & libc::RENAME_EXCHANGE != 0 {
            lock(&self.inodes).exchange(&from, &to);
        } else {
            self.removed(&[&to]);
            lock(&self.inodes).rename(&from, &to);
        }
        Ok(())
    }

    /// Removes a file, or an empty directory (`dir`), ahead of its answer
    /// where it may go; else as asked, an rmdir after the removals sent
    /// ahead (those in it among them).
    pub(super) async fn remove_name(&self, req: Request, parent: u64, name: &OsStr, dir: bool) -> FuseResult<()> {
        let path = self.child(parent, name)?;
        if self.remove_ahead(&req, parent, name, &path, dir) {
            return Ok(());
        }
        if dir {
            self.removals_landed(&req, None).await?;
        } else {
            self.spoil_at(&path);
        }
        let remove = async { self.ns.bound().remove(&components(&path), dir).await.map_err(|e| errno(&e)) };
        let expecting = self.expecting(&[(parent, name, What::Gone)]);
        self.stoppable(&req, remove).await?;
        expecting.made();
        self.removed(&[&path]);
        Ok(())
    }

    /// Makes `name` in directory `parent` (at `path`) by `make`, once the
    /// removals on their way there have landed.
    pub(super) async fn make_name(
        &self,
        req: &Request,
        (parent, name): (u64, &OsStr),
        path: &str,
        make: impl Future<Output = Result<Entry, String>>,
    ) -> FuseResult<ReplyEntry> {
        self.removals_landed(req, Some(parent)).await?;
        let expecting = self.expecting(&[(parent, name, What::Made)]);
        let e = self.stoppable(req, async { make.await.map_err(|e| errno(&e)) }).await?;
        expecting.made();
        Ok(self.made(path, &e))
    }
}
