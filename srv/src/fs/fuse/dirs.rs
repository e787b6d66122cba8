//! Open directories and the listing each read: a directory is listed once
//! per pass, as libfuse's high-level API and the kernel's own file
//! systems do.
//!
//! The kernel reads a directory in several requests, each from the
//! offset where the last stopped, and always once more past the end (to
//! see it is the end): listed afresh each time, a directory of another
//! machine cost two round trips or more per `readdir(3)` pass (`rm -rf`
//! made three of 600 us each per directory). The listing is taken at
//! offset 0 (an open, a `rewinddir`) and the rest of the pass reads from
//! it, so a pass shows the directory as it was when it began, as POSIX
//! allows for names made or removed meanwhile.
//!
//! Bounds: a listing lives while its directory is open; the kernel
//! closes what its processes close.
//!
//! Lock order: the table's lock is a leaf.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use std::ffi::OsString;

use fuse3::Result as FuseResult;

use super::{child, errno, file_id, lock, MeshFs};
use crate::fs::components;
use crate::fs::tree::{Entry, FileKind};

/// A pass's listing: names and entries, `.` and `..` first.
pub type Listing = Arc<Vec<(String, Entry)>>;

/// The directories open through one mount.
pub struct OpenDirs {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Option<Listing>>>,
}

impl Default for OpenDirs {
    fn default() -> OpenDirs {
        OpenDirs { next: AtomicU64::new(1), open: Mutex::default() }
    }
}

impl OpenDirs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Option<Listing>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A directory opened: its handle.
    pub fn open(&self) -> u64 {
        let fh = self.next.fetch_add(1, Relaxed);
        self.lock().insert(fh, None);
        fh
    }

    /// The listing of the pass reading from `offset` on handle `fh`, if
    /// one was taken (a pass starting at 0 takes a new one).
    pub fn kept(&self, fh: u64, offset: u64) -> Option<Listing> {
        if offset == 0 {
            return None;
        }
        self.lock().get(&fh).cloned().flatten()
    }

    /// The listing taken for the pass on `fh` (not kept for a handle not
    /// open: the kernel reads some directories without opening them).
    pub fn keep(&self, fh: u64, listing: Listing) {
        if let Some(l) = self.lock().get_mut(&fh) {
            *l = Some(listing);
        }
    }

    pub fn close(&self, fh: u64) {
        self.lock().remove(&fh);
    }
}

impl MeshFs {
    /// The entries of directory `parent` from position `offset` on, `.`
    /// and `..` first, as (the next entry's position, inode, name,
    /// entry). readdir does not count as a lookup, so it does not `pin`
    /// inodes (an entry not yet looked up gets none); readdirplus does.
    pub(super) async fn listing(
        &self,
        parent: u64,
        fh: u64,
        offset: u64,
        pin: bool,
    ) -> FuseResult<Vec<(i64, u64, OsString, Entry)>> {
        let path = self.path(parent)?;
        let all = match self.dirs.kept(fh, offset) {
            Some(all) => all,
            None => {
                // A listing shows the removals sent ahead in it.
                self.removals.landed(Some(parent)).await;
                let since = self.listed.since();
                let entries = self.ns.bound().list(&components(&path)).await.map_err(|e| errno(&e))?;
                // All its names, every one of whose changes will be told.
                let told = |e: &Entry| e.meta.as_ref().is_some_and(|m| m.watched);
                if !entries.is_empty() && entries.iter().all(told) && self.notifier.get().is_some() {
                    if let Some(landing) = self.ns.landing(&components(&path)) {
                        self.listed.all(parent, landing, entries.iter().map(|e| e.name.as_str()), since);
                    }
                }
                let dot = Entry::new("", FileKind::Dir, 0o555);
                let all: Listing = Arc::new(
                    [(".".to_string(), dot.clone()), ("..".to_string(), dot)]
                        .into_iter()
                        .chain(entries.into_iter().map(|e| (e.name.clone(), e)))
                        .collect(),
                );
                self.dirs.keep(fh, all.clone());
                all
            }
        };
        let mut inodes = lock(&self.inodes);
        let mut out = Vec::new();
        for (i, (name, e)) in all.iter().enumerate().skip(offset as usize) {
            let ino = if name == "." || name == ".." {
                parent
            } else if pin {
                inodes.get_or_add(&child(&path, name), file_id(e))
            } else {
                inodes.node(&child(&path, name), file_id(e))
            };
            out.push((i as i64 + 1, ino, OsString::from(name), e.clone()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::tree::FileKind;

    #[test]
    fn a_pass_reads_one_listing_and_a_rewind_takes_another() {
        let d = OpenDirs::default();
        let fh = d.open();
        assert!(d.kept(fh, 0).is_none() && d.kept(fh, 2).is_none());
        let one: Listing = Arc::new(vec![("f".into(), Entry::new("f", FileKind::Stored, 0o644))]);
        d.keep(fh, one.clone());
        assert!(d.kept(fh, 1).is_some_and(|l| Arc::ptr_eq(&l, &one)));
        assert!(d.kept(fh, 0).is_none(), "offset 0 starts a new pass");
        d.close(fh);
        assert!(d.kept(fh, 1).is_none());
        d.keep(fh, one);
        assert!(d.kept(fh, 1).is_none(), "nothing kept for a handle not open");
    }
}
