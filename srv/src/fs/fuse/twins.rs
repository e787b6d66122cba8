//! What a locked file's pages held when they were read, so that a page
//! written back from a shared mapping sends only the bytes this machine
//! changed.
//!
//! The kernel writes back whole pages. Two machines that map the same
//! file and change different bytes of one page under different locks
//! (sqlite's WAL index: one writes the header under the write lock while
//! another sets its read mark under a read-mark lock, a few bytes away)
//! would otherwise each write their stale copy of the other's bytes over
//! the other's change. So for files locked through this mount, each page
//! read is kept as read (its twin, as in TreadMarks), and a page written
//! back from the cache goes as the runs of bytes that differ from it;
//! bytes written with write(2) are patched into the twin. A page with no
//! twin, or a file past the bounds, goes whole, as before.
//!
//! The twins share the read's buffer: keeping one copies nothing.
//!
//! The pages a lock's release writes back are gathered here while the
//! kernel hands them over, then sent last page first (and, in a page,
//! last run first), so that a reader elsewhere that sees the start of the
//! file changed sees the rest: sqlite's WAL index keeps its header at
//! the start and the hash tables it describes after it, and a header
//! newer than its tables would send a reader to stale pages. What the
//! reader can still see is tables newer than the header, which sqlite
//! allows for (it ignores frames past its header's last).
//!
//! Lock order: `files` and `gathering` are leaves.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

const PAGE: u64 = 4096;
/// The most kept for one file; past it, its pages go whole.
const FILE_MAX: usize = 16 << 20;
/// The most kept for one mount.
const TOTAL_MAX: usize = 64 << 20;

#[derive(Default)]
struct File {
    pages: HashMap<u64, Bytes>,
    bytes: usize,
}

/// The most gathered for one file at a lock's release; past it, pages go
/// as they come.
const GATHER_MAX: usize = 16 << 20;

/// Writes gathered at a lock's release: (offset, bytes), and their sum.
type Gathered = (Vec<(u64, Bytes)>, usize);

/// Twins of pages of files locked through one mount.
#[derive(Default)]
pub struct Twins {
    files: Mutex<(HashMap<u64, File>, usize)>,
    /// Writes gathered at a lock's release, per node, and their bytes.
    gathering: Mutex<HashMap<u64, Gathered>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Twins {
    /// Node `ino` was locked through this mount: its pages are kept from
    /// the next read on.
    pub fn watch(&self, ino: u64) {
        lock(&self.files).0.entry(ino).or_default();
    }

    /// Node `ino` is no longer open here: what was kept of it goes.
    pub fn forget(&self, ino: u64) {
        let mut g = lock(&self.files);
        if let Some(f) = g.0.remove(&ino) {
            g.1 -= f.bytes;
        }
    }

    /// Node `ino` was cut short or had its pages dropped: its pages are
    /// kept again as they are read.
    pub fn drop_pages(&self, ino: u64) {
        let mut g = lock(&self.files);
        let (files, total) = &mut *g;
        if let Some(f) = files.get_mut(&ino) {
            *total -= f.bytes;
            *f = File::default();
        }
    }

    /// `data` was read at `offset` into the kernel's cache.
    pub fn read(&self, ino: u64, offset: u64, data: &Bytes) {
        if !offset.is_multiple_of(PAGE) {
            return;
        }
        let mut g = lock(&self.files);
        let (files, total) = &mut *g;
        let Some(f) = files.get_mut(&ino) else { return };
        for (i, start) in (0..data.len()).step_by(PAGE as usize).enumerate() {
            let page = data.slice(start..data.len().min(start + PAGE as usize));
            let old = f.pages.get(&(offset / PAGE + i as u64)).map_or(0, |p| p.len());
            if f.bytes - old + page.len() > FILE_MAX || *total - old + page.len() > TOTAL_MAX {
                // Past the bounds: pages without a twin go whole.
                if let Some(p) = f.pages.remove(&(offset / PAGE + i as u64)) {
                    f.bytes -= p.len();
                    *total -= p.len();
                }
                continue;
            }
            f.bytes = f.bytes - old + page.len();
            *total = *total - old + page.len();
            f.pages.insert(offset / PAGE + i as u64, page);
        }
    }

    /// Whether node `ino` was locked through this mount and is open here.
    pub fn watching(&self, ino: u64) -> bool {
        lock(&self.files).0.contains_key(&ino)
    }

    /// `data` is being written at `offset`: with `cached` it is pages
    /// written back from the cache, and the answer is the runs of it
    /// (offsets into `data`) to send; `None` when it goes whole (a
    /// write(2), patched into the twins it touches, or a file not
    /// watched). The twins then hold `data`.
    pub fn write(&self, ino: u64, offset: u64, data: &[u8], cached: bool) -> Option<Vec<Range<usize>>> {
        let mut g = lock(&self.files);
        let (files, total) = &mut *g;
        let f = files.get_mut(&ino)?;
        let mut runs = Vec::new();
        let end = offset + data.len() as u64;
        let mut at = offset;
        while at < end {
            let page = at / PAGE;
            let page_end = ((page + 1) * PAGE).min(end);
            let here = (at - offset) as usize..(page_end - offset) as usize;
            let in_page = (at - page * PAGE) as usize;
            match f.pages.get(&page) {
                Some(twin) => {
                    if cached {
                        diff(&twin[in_page.min(twin.len())..], &data[here.clone()], here.start, &mut runs);
                    }
                    let mut new = BytesMut::from(&twin[..]);
                    let upto = in_page + here.len();
                    if new.len() < upto {
                        new.resize(upto, 0);
                    }
                    new[in_page..upto].copy_from_slice(&data[here.clone()]);
                    f.bytes = f.bytes - twin.len() + new.len();
                    *total = *total - twin.len() + new.len();
                    f.pages.insert(page, new.freeze());
                }
                None => push(&mut runs, here),
            }
            at = page_end;
        }
        cached.then_some(runs)
    }

    /// A lock's release writes back the pages of nodes `inos`: gather them.
    pub fn gather(&self, inos: &[u64]) {
        let mut g = lock(&self.gathering);
        for &i in inos {
            g.entry(i).or_default();
        }
    }

    /// Pages written back from the cache as `runs` of `data` at `offset`:
    /// whether they were gathered (else they go now).
    pub fn gathered(&self, ino: u64, offset: u64, data: &[u8], runs: &[Range<usize>]) -> bool {
        let mut g = lock(&self.gathering);
        let Some((writes, bytes)) = g.get_mut(&ino) else { return false };
        let len: usize = runs.iter().map(|r| r.len()).sum();
        if *bytes + len > GATHER_MAX {
            return false;
        }
        *bytes += len;
        writes.extend(runs.iter().map(|r| (offset + r.start as u64, Bytes::copy_from_slice(&data[r.clone()]))));
        true
    }

    /// What was gathered for node `ino`, last first, to send in that
    /// order; it is no longer gathered.
    pub fn gathered_writes(&self, ino: u64) -> Vec<(u64, Bytes)> {
        let mut writes = lock(&self.gathering).remove(&ino).map(|g| g.0).unwrap_or_default();
        // Stable: the kernel hands a page over once per write-back.
        writes.sort_by_key(|w| std::cmp::Reverse(w.0));
        writes
    }
}

/// Appends to `runs` the runs where `new` differs from `old` (bytes past
/// `old`'s end differ), offset by `base`; adjacent runs are one.
fn diff(old: &[u8], new: &[u8], base: usize, runs: &mut Vec<Range<usize>>) {
    let mut i = 0;
    while i < new.len() {
        if i < old.len() && old[i] == new[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < new.len() && !(i < old.len() && old[i] == new[i]) {
            i += 1;
        }
        push(runs, base + start..base + i);
    }
}

fn push(runs: &mut Vec<Range<usize>>, r: Range<usize>) {
    match runs.last_mut() {
        Some(last) if last.end == r.start => last.end = r.end,
        _ => runs.push(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bytes_changed_go() {
        let t = Twins::default();
        t.watch(7);
        let mut page = vec![0u8; 8192];
        t.read(7, 0, &Bytes::from(page.clone()));
        // Another machine's bytes at 10..20 are not ours to write back.
        page[100] = 1;
        page[101] = 2;
        page[4096 + 5] = 9;
        assert_eq!(t.write(7, 0, &page, true), Some(vec![100..102, 4101..4102]));
        // The twin now holds what was written: nothing left to send.
        assert_eq!(t.write(7, 0, &page, true), Some(Vec::new()));
        // A write(2) goes whole and is patched in.
        assert_eq!(t.write(7, 200, b"ab", false), None);
        page[200..202].copy_from_slice(b"ab");
        assert_eq!(t.write(7, 0, &page, true), Some(Vec::new()));
        // Past the end of what was read, and pages never read, go whole.
        let longer = vec![3u8; 12288];
        let all: Vec<Range<usize>> = std::iter::once(0..12288).collect();
        assert_eq!(t.write(7, 0, &longer, true), Some(all.clone()));
        assert_eq!(t.write(9, 0, &longer, true), None, "not watched: whole");
        t.drop_pages(7);
        assert_eq!(lock(&t.files).1, 0);
        assert_eq!(t.write(7, 0, &longer, true), Some(all.clone()));
        t.forget(7);
        assert_eq!(lock(&t.files).1, 0);
    }

    #[test]
    fn a_release_sends_the_last_bytes_first() {
        let t = Twins::default();
        t.gather(&[7]);
        let page = [1u8; 8192];
        assert!(t.gathered(7, 0, &page, &[10..20, 4200..4300]));
        let first = std::iter::once(0..8).collect::<Vec<_>>();
        assert!(t.gathered(7, 8192, &page[..4096], &first));
        assert!(!t.gathered(9, 0, &page, &first), "not gathering 9");
        let order: Vec<(u64, usize)> = t.gathered_writes(7).iter().map(|(o, b)| (*o, b.len())).collect();
        assert_eq!(order, vec![(8192, 8), (4200, 100), (10, 10)]);
        assert!(!t.gathered(7, 0, &page, &first), "no longer gathering");
    }
}
