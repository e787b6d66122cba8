//! Changes of names through the mount that do more than ask: a
//! directory made (known whole from then on), and renames (the node
//! table follows, what the kernel keeps of both directories goes).

use std::ffi::OsStr;

use fuse3::raw::prelude::*;
use fuse3::{Errno, Result as FuseResult};

use super::{errno, lock, MeshFs};
use crate::fs::components;
use crate::fs::dir::watch::What;

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
}
