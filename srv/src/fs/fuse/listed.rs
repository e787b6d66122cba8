//! Directories of which the mount knows every name, so that a lookup of a
//! name not there is answered at once, without a round trip, and kept by
//! the kernel as a negative entry.
//!
//! Programs look a name up before they make it (the kernel does, before
//! every `open(O_CREAT)`, `mkdir` and rename target), and look for names
//! that are not there (`.gitignore` in every directory, lock files): on a
//! directory of another machine each such miss was a round trip. A
//! directory's names are known in full when its listing came back with
//! the promise that its changes are told (`Meta::watched` on every entry)
//! and no change was told, nor made by this mount, while it travelled
//! (it may not show it), or when this mount made it
//! and the serving machine said it was empty and told
//! (`Meta::empty_told`). From then on this mount's own changes are
//! applied to the names as they are made, and any change told by the
//! serving machine that is not this mount's own, a change that failed or
//! may have been half made, a lock taken beside (where machines agree,
//! see `keep`) and the kernel forgetting the directory drop what is known
//! of it. What is known is used for at most [`KEPT`], the bound on a
//! notice lost in a race, as for everything the mount keeps.
//!
//! The misses handed to the kernel to keep are remembered (up to
//! [`MISSES_MAX`]; past it a miss is answered but not kept), since the
//! kernel keeps them apart from its nodes: when the serving machine's
//! notices stop, they are invalidated with the rest ([`Listed::misses`]).
//!
//! Lock order: the table's lock is a leaf.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::KEPT;

/// The most directories known, and names in all of them together.
const DIRS_MAX: usize = 4096;
const NAMES_MAX: usize = 1 << 18;
/// The most misses the kernel is given to keep.
const MISSES_MAX: usize = 1 << 16;

struct Known {
    names: HashSet<String>,
    since: Instant,
}

#[derive(Default)]
struct Table {
    dirs: HashMap<u64, Known>,
    names: usize,
    /// Misses the kernel keeps, as (directory, name).
    misses: HashSet<(u64, String)>,
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
}

impl Listed {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where a request that may bring a listing starts.
    pub fn since(&self) -> Since {
        Since { gen: self.gen.load(SeqCst), own: self.own.load(SeqCst) }
    }

    /// `names` are all the names of directory `dir`, as answered to a
    /// listing begun at `since`: known, unless something was dropped
    /// since (which may be a change the answer does not show) or this
    /// mount changed names meanwhile (which the answer may not show).
    pub fn all<'a>(&self, dir: u64, names: impl ExactSizeIterator<Item = &'a str>, since: Since) {
        self.take(dir, names, since, true);
    }

    /// Directory `dir` was just made empty for this mount by a request
    /// begun at `since`: known, unless something was dropped since. (This
    /// mount's own changes elsewhere meanwhile cannot be in it.)
    pub fn made_empty(&self, dir: u64, since: Since) {
        self.take(dir, std::iter::empty(), since, false);
    }

    fn take<'a>(&self, dir: u64, names: impl ExactSizeIterator<Item = &'a str>, since: Since, own: bool) {
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
        t.dirs.insert(dir, Known { names, since: now });
    }

    /// Whether this mount knows `name` is absent from `dir`.
    pub fn absent(&self, dir: u64, name: &str) -> bool {
        self.left(&self.lock(), dir, name).is_some()
    }

    fn left(&self, t: &Table, dir: u64, name: &str) -> Option<Duration> {
        let k = t.dirs.get(&dir)?;
        let left = KEPT.checked_sub(k.since.elapsed()).filter(|d| !d.is_zero())?;
        (!k.names.contains(name)).then_some(left)
    }

    /// A miss to answer, if this mount knows `name` is absent from `dir`:
    /// how long the kernel may keep it (zero past [`MISSES_MAX`]).
    pub fn miss(&self, dir: u64, name: &str) -> Option<Duration> {
        let mut t = self.lock();
        let left = self.left(&t, dir, name)?;
        if t.misses.len() >= MISSES_MAX && !t.misses.contains(&(dir, name.to_string())) {
            return Some(Duration::ZERO);
        }
        t.misses.insert((dir, name.to_string()));
        Some(left)
    }

    /// `name` of `dir` changed: a miss the kernel kept of it is gone.
    pub fn told(&self, dir: u64, name: &str) {
        self.lock().misses.remove(&(dir, name.to_string()));
    }

    /// The misses the kernel keeps, now forgotten here: to invalidate.
    pub fn misses(&self) -> Vec<(u64, String)> {
        self.lock().misses.drain().collect()
    }

    /// This mount made `name` in `dir`.
    pub fn made(&self, dir: u64, name: &str) {
        let mut t = self.lock();
        self.own.fetch_add(1, SeqCst);
        t.misses.remove(&(dir, name.to_string()));
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

    /// Nothing is known of any directory (the misses the kernel keeps
    /// stay: see [`Listed::misses`]).
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

    #[test]
    fn a_name_not_listed_is_absent_until_made_and_after_it_is_gone() {
        let l = Listed::default();
        let g = l.since();
        l.all(7, ["a", "b"].into_iter(), g);
        assert!(!l.absent(7, "a"));
        assert!(l.miss(7, "c").is_some_and(|d| d <= KEPT && !d.is_zero()));
        assert_eq!(l.misses(), [(7, "c".to_string())]);
        assert!(l.misses().is_empty());
        l.miss(7, "c");
        l.made(7, "c");
        assert!(!l.absent(7, "c"));
        assert!(l.misses().is_empty(), "made here: the kernel knows");
        l.gone(7, "a");
        assert!(l.absent(7, "a"));
        // Another directory is not known.
        assert!(!l.absent(8, "a"));
        assert!(l.miss(8, "a").is_none());
    }

    #[test]
    fn misses_kept_past_the_cap_are_answered_but_not_kept() {
        let l = Listed::default();
        l.all(1, std::iter::empty(), l.since());
        for i in 0..MISSES_MAX {
            assert!(l.miss(1, &i.to_string()).is_some_and(|d| !d.is_zero()));
        }
        assert_eq!(l.miss(1, "one more"), Some(Duration::ZERO));
        // One already kept is given again.
        assert!(l.miss(1, "7").is_some_and(|d| !d.is_zero()));
        l.told(1, "7");
        l.forget_all();
        assert_eq!(l.misses().len(), MISSES_MAX - 1, "kept by the kernel until invalidated");
    }

    #[test]
    fn a_listing_asked_for_before_a_change_was_told_is_not_taken() {
        let l = Listed::default();
        let g = l.since();
        // A change told while the listing travelled, of any directory.
        l.forget(&[9]);
        l.all(7, ["a"].into_iter(), g);
        assert!(!l.absent(7, "z"));
        let g = l.since();
        l.all(7, ["a"].into_iter(), g);
        assert!(l.absent(7, "z"));
        l.forget(&[7]);
        assert!(!l.absent(7, "z"));
        l.all(7, ["a"].into_iter(), l.since());
        l.forget_all();
        assert!(!l.absent(7, "z"));
        // A name made here while the listing travelled: it may not show.
        let g = l.since();
        l.made(3, "x");
        l.all(7, ["a"].into_iter(), g);
        assert!(!l.absent(7, "z"));
        // A directory made here is taken all the same.
        let g = l.since();
        l.made(3, "y");
        l.made_empty(7, g);
        assert!(l.absent(7, "z"));
        // Let go (forgotten by the kernel): not a change.
        let g = l.since();
        l.let_go(7);
        l.all(7, ["a"].into_iter(), g);
        assert!(l.absent(7, "z"));
    }

    #[test]
    fn names_past_the_cap_are_not_known() {
        let l = Listed::default();
        let many: Vec<String> = (0..NAMES_MAX + 1).map(|i| i.to_string()).collect();
        l.all(1, many.iter().map(String::as_str), l.since());
        assert!(!l.absent(1, "x"));
        let some: Vec<String> = (0..NAMES_MAX).map(|i| i.to_string()).collect();
        l.all(1, some.iter().map(String::as_str), l.since());
        assert!(l.absent(1, "x"));
        // Full: another directory is not taken while the first is fresh.
        l.all(2, ["a"].into_iter(), l.since());
        assert!(!l.absent(2, "x"));
    }
}
