//! Directories of which the mount knows every name, so that a lookup of a
//! name not there is answered at once, without a round trip.
//!
//! Programs look a name up before they make it (the kernel does, before
//! every `open(O_CREAT)`, `mkdir` and rename target), and look for names
//! that are not there (`.gitignore` in every directory, lock files): on a
//! directory of another machine each such miss was a round trip. A
//! directory's names are known in full when its listing came back with
//! the promise that its changes are told (`Meta::watched` on every entry)
//! and no change was told, nor made by this mount, while it travelled
//! (it may not show it), or when this mount made it and the serving
//! machine said it was empty once watched (`Meta::empty_told`). From then
//! on this mount's own changes are applied to the names as they are made,
//! and any change told by the serving machine that is not this mount's
//! own, a change that failed or may have been half made, a lock taken
//! beside (where machines agree, see `keep`) and the kernel forgetting
//! the directory drop what is known of it. What is known is used for at
//! most [`KEPT`] after its listing was asked for, the bound on a notice
//! lost in a race, as for everything the mount keeps, and only while the
//! directory's path still lands where it did (its [`Landing`]: no bind
//! made or undone over it, no other replica chosen since).
//!
//! A miss answered here is not kept by the kernel (no negative entry):
//! each lookup comes back here and is checked again, which costs a FUSE
//! request and no round trip, so that a bind, a lock or a notice is
//! heeded at the next lookup.
//!
//! Lock order: the table's lock is a leaf.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::Instant;

use super::KEPT;

/// The most directories known, and names in all of them together.
const DIRS_MAX: usize = 4096;
const NAMES_MAX: usize = 1 << 18;
/// The longest name Linux file systems take.
const NAME_MAX: usize = libc::NAME_MAX as usize;

/// Where a directory's names come from, as the namespace resolves its
/// path (see `Namespace::landing`): known names are used only while it
/// is the same.
pub type Landing = String;

struct Known {
    names: HashSet<String>,
    since: Instant,
    landing: Landing,
}

#[derive(Default)]
struct Table {
    dirs: HashMap<u64, Known>,
    names: usize,
}

impl Table {
    fn drop_dir(&mut self, dir: u64) -> bool {
        match self.dirs.remove(&dir) {
            Some(k) => {
                self.names -= k.names.len();
                true
            }
            None => false,
        }
    }
}

/// What the mount knows of directories' names, by directory node.
#[derive(Default)]
pub struct Listed {
    table: Mutex<Table>,
    /// Counts what was dropped: a listing asked for before a drop may
    /// predate the change that caused it, and is not taken.
    gen: AtomicU64,
    /// Counts this mount's own changes of names: a listing on its way
    /// while one was made may or may not show it, and is not taken.
    own: AtomicU64,
}

/// Where a request that may bring a listing started (see [`Listed::all`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Since {
    gen: u64,
    own: u64,
    at: Instant,
}

impl Listed {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where a request that may bring a listing starts.
    pub fn since(&self) -> Since {
        Since { gen: self.gen.load(SeqCst), own: self.own.load(SeqCst), at: Instant::now() }
    }

    /// `names` are all the names of directory `dir`, as answered to a
    /// listing begun at `since`: known, unless something was dropped
    /// since (which may be a change the answer does not show) or this
    /// mount changed names meanwhile (which the answer may not show).
    pub fn all<'a>(&self, dir: u64, landing: Landing, names: impl ExactSizeIterator<Item = &'a str>, since: Since) {
        self.take(dir, landing, names, since, true);
    }

    /// Directory `dir` was just made empty for this mount by a request
    /// begun at `since`: known, unless something was dropped since. (This
    /// mount's own changes elsewhere meanwhile cannot be in it.)
    pub fn made_empty(&self, dir: u64, landing: Landing, since: Since) {
        self.take(dir, landing, std::iter::empty(), since, false);
    }

    fn take<'a>(
        &self,
        dir: u64,
        landing: Landing,
        names: impl ExactSizeIterator<Item = &'a str>,
        since: Since,
        own: bool,
    ) {
        let now = Instant::now();
        let mut t = self.lock();
        let now_at = self.since();
        if now_at.gen != since.gen || (own && now_at.own != since.own) {
            return;
        }
        t.drop_dir(dir);
        if t.dirs.len() >= DIRS_MAX || t.names + names.len() > NAMES_MAX {
            let expired: Vec<u64> =
                t.dirs.iter().filter(|(_, k)| now.duration_since(k.since) > KEPT).map(|(d, _)| *d).collect();
            for d in expired {
                t.drop_dir(d);
            }
            if t.dirs.len() >= DIRS_MAX || t.names + names.len() > NAMES_MAX {
                return;
            }
        }
        let names: HashSet<String> = names.map(str::to_string).collect();
        t.names += names.len();
        t.dirs.insert(dir, Known { names, since: since.at, landing });
    }

    /// Whether this mount knows `name` is absent from `dir`, whose path
    /// lands where `landing` says now (asked only when it matters).
    /// A name longer than a name may be is never absent here: the serving
    /// machine's file system says what it is (ENAMETOOLONG).
    pub fn absent(&self, dir: u64, name: &str, landing: impl FnOnce() -> Option<Landing>) -> bool {
        if name.len() > NAME_MAX {
            return false;
        }
        let known = {
            let t = self.lock();
            match t.dirs.get(&dir) {
                Some(k) if k.since.elapsed() < KEPT && !k.names.contains(name) => Some(k.landing.clone()),
                _ => None,
            }
        };
        known.is_some_and(|k| landing().as_ref() == Some(&k))
    }

    /// Whether this mount knows directory `dir`, whose path lands where
    /// `landing` says now, has no names at all.
    pub fn empty(&self, dir: u64, landing: impl FnOnce() -> Option<Landing>) -> bool {
        let known = {
            let t = self.lock();
            match t.dirs.get(&dir) {
                Some(k) if k.since.elapsed() < KEPT && k.names.is_empty() => Some(k.landing.clone()),
                _ => None,
            }
        };
        known.is_some_and(|k| landing().as_ref() == Some(&k))
    }

    /// This mount made `name` in `dir`.
    pub fn made(&self, dir: u64, name: &str) {
        let mut t = self.lock();
        self.own.fetch_add(1, SeqCst);
        if let Some(k) = t.dirs.get_mut(&dir) {
            if k.names.insert(name.to_string()) {
                t.names += 1;
            }
        }
    }

    /// This mount removed `name` from `dir`.
    pub fn gone(&self, dir: u64, name: &str) {
        let mut t = self.lock();
        self.own.fetch_add(1, SeqCst);
        if let Some(k) = t.dirs.get_mut(&dir) {
            if k.names.remove(name) {
                t.names -= 1;
            }
        }
    }

    /// Nothing is known of `dirs` any longer.
    pub fn forget(&self, dirs: &[u64]) {
        let mut t = self.lock();
        for &d in dirs {
            t.drop_dir(d);
        }
        // Counted even when nothing was known: a listing on its way may
        // be older than the change.
        self.gen.fetch_add(1, SeqCst);
    }

    /// The kernel forgot `dir`, or this mount removed it: its node may
    /// soon be another directory's. (Not a change: a listing on its way
    /// is still taken.)
    pub fn let_go(&self, dir: u64) {
        self.lock().drop_dir(dir);
    }

    /// Nothing is known of any directory.
    pub fn forget_all(&self) {
        let mut t = self.lock();
        t.dirs.clear();
        t.names = 0;
        self.gen.fetch_add(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here() -> Option<Landing> {
        Some("b".to_string())
    }

    fn all(l: &Listed, dir: u64, names: &[&str], since: Since) {
        l.all(dir, "b".into(), names.iter().copied(), since);
    }

    #[test]
    fn a_name_not_listed_is_absent_until_made_and_after_it_is_gone() {
        let l = Listed::default();
        all(&l, 7, &["a", "b"], l.since());
        assert!(!l.absent(7, "a", here));
        assert!(l.absent(7, "c", here));
        l.made(7, "c");
        assert!(!l.absent(7, "c", here));
        l.gone(7, "a");
        assert!(l.absent(7, "a", here));
        // Another directory is not known.
        assert!(!l.absent(8, "a", here));
        // Too long to be a name: asked, so that the answer is ENAMETOOLONG.
        assert!(!l.absent(7, &"x".repeat(256), here));
        assert!(l.absent(7, &"x".repeat(255), here));
    }

    #[test]
    fn a_path_that_lands_elsewhere_now_is_not_answered() {
        let l = Listed::default();
        all(&l, 7, &["a"], l.since());
        assert!(!l.absent(7, "z", || Some("c".into())), "another replica, or a bind since");
        assert!(!l.absent(7, "z", || None), "a union now");
        assert!(l.absent(7, "z", here));
    }

    #[test]
    fn a_listing_asked_for_before_a_change_was_told_is_not_taken() {
        let l = Listed::default();
        let g = l.since();
        // A change told while the listing travelled, of any directory.
        l.forget(&[9]);
        all(&l, 7, &["a"], g);
        assert!(!l.absent(7, "z", here));
        all(&l, 7, &["a"], l.since());
        assert!(l.absent(7, "z", here));
        l.forget(&[7]);
        assert!(!l.absent(7, "z", here));
        all(&l, 7, &["a"], l.since());
        l.forget_all();
        assert!(!l.absent(7, "z", here));
        // A name made here while the listing travelled: it may not show.
        let g = l.since();
        l.made(3, "x");
        all(&l, 7, &["a"], g);
        assert!(!l.absent(7, "z", here));
        // A directory made here is taken all the same.
        let g = l.since();
        l.made(3, "y");
        l.made_empty(7, "b".into(), g);
        assert!(l.absent(7, "z", here));
        // Let go (forgotten by the kernel): not a change.
        let g = l.since();
        l.let_go(7);
        all(&l, 7, &["a"], g);
        assert!(l.absent(7, "z", here));
    }

    #[test]
    fn names_past_the_cap_are_not_known() {
        let l = Listed::default();
        let many: Vec<String> = (0..NAMES_MAX + 1).map(|i| i.to_string()).collect();
        l.all(1, "b".into(), many.iter().map(String::as_str), l.since());
        assert!(!l.absent(1, "x", here));
        let some: Vec<String> = (0..NAMES_MAX).map(|i| i.to_string()).collect();
        l.all(1, "b".into(), some.iter().map(String::as_str), l.since());
        assert!(l.absent(1, "x", here));
        // Full: another directory is not taken while the first is fresh.
        all(&l, 2, &["a"], l.since());
        assert!(!l.absent(2, "x", here));
    }
}
