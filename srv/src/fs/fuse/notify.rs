//! Telling the kernel what it may no longer keep: FUSE's
//! `NOTIFY_INVAL_ENTRY` and `NOTIFY_INVAL_INODE`, written on a descriptor
//! of the mount's own.
//!
//! fuse3 writes answers and notices under one lock, and an invalidation
//! may wait in the kernel for a request that waits for its own answer
//! (a lookup holds its directory; a dirty page is written back first), so
//! invalidations never go through fuse3: [`Notifier`] writes them with
//! plain `write(2)` on a duplicate of the session's `/dev/fuse`
//! descriptor, found when it is mounted ([`fuse_fds`]), from threads that
//! may block.
//!
//! Notices of changes the mount made itself are not acted on
//! ([`Expected`]).
//!
//! DESIGN's rule, no invalidation from inside a request handler, is
//! about fuse3's write lock and the kernel locks a waiting request holds.
//! The two made while a request waits for them keep clear of both: on
//! their own descriptor, an open drops only attributes (no kernel lock),
//! and a record lock, whose request holds none, has pages dropped from a
//! blocking thread, their write-back answered by other handlers.
//!
//! Lock order: the inode table's lock, [`Expected`]'s and the twins' are
//! leaves, and none is held while writing to the kernel.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::inodes::{node_of, Inodes};
use super::listed::Listed;
use super::twins::Twins;
use crate::fs::coherence::Coherence;
use crate::fs::dir::watch::{Change, Feed, What};

const FUSE_NOTIFY_INVAL_INODE: i32 = 2;
const FUSE_NOTIFY_INVAL_ENTRY: i32 = 3;

/// Writes invalidations to one mount's kernel connection.
pub struct Notifier(OwnedFd);

impl Notifier {
    pub fn new(fd: OwnedFd) -> Notifier {
        Notifier(fd)
    }

    fn send(&self, code: i32, body: &[u8], name: &[u8]) -> std::io::Result<()> {
        let len = (16 + body.len() + name.len()) as u32;
        let mut head = [0u8; 16];
        head[0..4].copy_from_slice(&len.to_ne_bytes());
        head[4..8].copy_from_slice(&code.to_ne_bytes());
        // unique 0: a notice, not an answer.
        let bufs = [IoSlice::new(&head), IoSlice::new(body), IoSlice::new(name)];
        // SAFETY: the descriptor is ours and open; IoSlice is iovec.
        let n = unsafe { libc::writev(self.0.as_raw_fd(), bufs.as_ptr().cast(), bufs.len() as i32) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Forgets `name` in directory `parent` (a negative entry too), and
    /// the directory's attributes. May wait for a request in the
    /// directory to be answered.
    pub fn entry(&self, parent: u64, name: &str) -> std::io::Result<()> {
        let mut body = [0u8; 16];
        body[0..8].copy_from_slice(&parent.to_ne_bytes());
        body[8..12].copy_from_slice(&(name.len() as u32).to_ne_bytes());
        let mut n = Vec::with_capacity(name.len() + 1);
        n.extend_from_slice(name.as_bytes());
        n.push(0);
        self.send(FUSE_NOTIFY_INVAL_ENTRY, &body, &n)
    }

    /// Forgets the attributes of node `ino`, and with `data` its cached
    /// pages (dirty ones are written back first, so this may wait for
    /// writes to be answered).
    pub fn inode(&self, ino: u64, data: bool) -> std::io::Result<()> {
        let mut body = [0u8; 24];
        body[0..8].copy_from_slice(&ino.to_ne_bytes());
        body[8..16].copy_from_slice(&(if data { 0i64 } else { -1i64 }).to_ne_bytes());
        self.send(FUSE_NOTIFY_INVAL_INODE, &body, &[])
    }
}

/// This process's descriptors open on `/dev/fuse`.
pub fn fuse_fds() -> HashSet<i32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return HashSet::new() };
    dir.filter_map(|e| e.ok())
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == std::path::Path::new("/dev/fuse")))
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect()
}

/// A duplicate of descriptor `fd`, to keep, if it is still `/dev/fuse`.
pub fn duplicate(fd: i32) -> Option<OwnedFd> {
    // SAFETY: `fd` was open a moment ago; if it closed since, dup fails,
    // and a descriptor reused since is not /dev/fuse.
    let dup = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned().ok()?;
    let target = std::fs::read_link(format!("/proc/self/fd/{}", dup.as_raw_fd())).ok()?;
    (target == std::path::Path::new("/dev/fuse")).then_some(dup)
}

/// How long the notice of a change this mount made is waited for.
const EXPECT_FOR: Duration = Duration::from_secs(2);
/// The most notices waited for.
const EXPECT_MAX: usize = 4096;

/// The notices of names this mount made or removed itself, which it need
/// not act on: its kernel already knows (a create's answer made the name,
/// an unlink took it away), and forgetting the name would cost a lookup
/// and the directory's attributes. Each is (directory node, name, what),
/// waited for at most [`EXPECT_FOR`]; another machine's change, of
/// another kind or later, is acted on.
///
/// So are the notices of data and attributes this mount changed: a file
/// it wrote or set attributes of in the last [`EXPECT_FOR`] keeps its
/// pages and attributes when its serving machine says it changed. Its
/// kernel knows what it wrote; dropping them would cost a writer its
/// cache, and the kernel, finding its attributes
/// refreshed, asks again whether the file has privileges to drop before
/// each write (a `security.capability` request per write). Another
/// machine writing the same file in that while is seen at the next open
/// or record lock, as close-to-open consistency promises and NFS gives.
#[derive(Default)]
pub struct Expected {
    names: Mutex<VecDeque<(u64, String, What, Instant)>>,
    /// Files written through this mount lately (node, when).
    wrote: Mutex<HashMap<u64, Instant>>,
    /// Notices acted on, counted, and the last of each file's; before
    /// `cleared`, any file's.
    told: AtomicU64,
    told_at: Mutex<HashMap<u64, u64>>,
    cleared: AtomicU64,
}

impl Expected {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, String, What, Instant)>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn writes(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        self.wrote.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the count of notices acted on stands.
    pub fn told_mark(&self) -> u64 {
        self.told.load(SeqCst)
    }

    /// Whether a notice about file `node` was acted on since `mark`.
    pub fn told_since(&self, node: u64, mark: u64) -> bool {
        let at = self.told_at.lock().unwrap_or_else(|e| e.into_inner());
        self.cleared.load(SeqCst) > mark || at.get(&node).is_some_and(|&n| n > mark)
    }

    /// A notice about file `node` (or, `None`, every file) is acted on.
    fn told(&self, node: Option<u64>) {
        let n = self.told.fetch_add(1, SeqCst) + 1;
        let mut at = self.told_at.lock().unwrap_or_else(|e| e.into_inner());
        match node {
            Some(node) if at.len() < EXPECT_MAX || at.contains_key(&node) => {
                at.insert(node, n);
            }
            // Too many remembered, or all told: all count as told.
            _ => {
                at.clear();
                self.cleared.store(n, SeqCst);
            }
        }
    }

    /// This mount writes to file `node`, or sets its attributes, now.
    pub fn wrote(&self, node: u64) {
        let now = Instant::now();
        let mut w = self.writes();
        if w.len() >= EXPECT_MAX && !w.contains_key(&node) {
            w.retain(|_, t| now.duration_since(*t) <= EXPECT_FOR);
            if w.len() >= EXPECT_MAX {
                // More files written at once than are remembered: the
                // oldest notices are acted on, which costs only speed.
                w.clear();
            }
        }
        w.insert(node, now);
    }

    /// Node `node` no longer names the file written: removed, or
    /// forgotten by the kernel. Its number may soon be another file's
    /// (file systems give a removed file's inode number to the next one
    /// made), whose changes are not this mount's.
    pub fn gone(&self, node: u64) {
        self.writes().remove(&node);
    }

    /// Whether this mount wrote file `node` lately.
    pub(super) fn wrote_lately(&self, node: u64) -> bool {
        self.writes().get(&node).is_some_and(|t| t.elapsed() <= EXPECT_FOR)
    }

    pub fn add(&self, dir: u64, name: &str, what: What) {
        let mut q = self.lock();
        if q.len() >= EXPECT_MAX {
            q.pop_front();
        }
        q.push_back((dir, name.to_string(), what, Instant::now()));
    }

    /// The change was not made.
    pub fn remove(&self, dir: u64, name: &str, what: What) {
        let mut q = self.lock();
        if let Some(i) = q.iter().position(|e| e.0 == dir && e.1 == name && e.2 == what) {
            q.remove(i);
        }
    }

    /// Whether this notice was waited for (and is no longer).
    fn take(&self, dir: u64, name: &str, what: What) -> bool {
        let mut q = self.lock();
        while q.front().is_some_and(|e| e.3.elapsed() > EXPECT_FOR) {
            q.pop_front();
        }
        match q.iter().position(|e| e.0 == dir && e.1 == name && e.2 == what) {
            Some(i) => {
                q.remove(i);
                true
            }
            None => false,
        }
    }
}

/// What a mount keeps that changes told act on.
pub struct Kept {
    pub inodes: Arc<Mutex<Inodes>>,
    pub expected: Arc<Expected>,
    /// Files locked through this mount and open here: their machines
    /// agree at locks (see `MeshFs::lock_point`), and a notice would only
    /// race the kernel's own look at them (an attribute answer that
    /// crosses an invalidation is dropped, and a read stops at the size
    /// the kernel had), so their data's notices are not acted on.
    pub twins: Arc<Twins>,
    pub listed: Arc<Listed>,
    pub co: Arc<Coherence>,
}

/// Turns the changes of `feed` into invalidations, on a thread of its
/// own, until the feed is closed (the tree unmounted).
pub fn start(feed: Arc<Feed>, n: Arc<Notifier>, kept: Kept) {
    let run = move || loop {
        let changes = feed.next_blocking();
        if changes.is_empty() {
            return;
        }
        for c in changes {
            apply(&n, &kept, c);
        }
    };
    if let Err(e) = std::thread::Builder::new().name("mesh-inval".into()).spawn(run) {
        tracing::warn!("no invalidation thread: {e}");
    }
}

/// One change. The kernel answers ENOENT for what it does not hold: that
/// is nothing to forget. The table's lock is not held while writing: an
/// invalidation may wait for a request that needs it.
fn apply(n: &Notifier, kept: &Kept, c: Change) {
    let Kept { inodes, expected, twins, listed, co } = kept;
    let lock = || inodes.lock().unwrap_or_else(|e| e.into_inner());
    match c {
        Change::Name { dir, name, what } => {
            let parent = node_of(dir);
            let (child, child_id) = {
                let t = lock();
                let c = t.child(parent, &name);
                (c, c.and_then(|c| t.id(c)))
            };
            if what == What::Gone {
                if let Some(c) = child {
                    expected.gone(c);
                    listed.let_go(c);
                }
            }
            // This mount's own change: its kernel knows, and what is kept
            // of the directory is as the change left it.
            if what.names() && expected.take(parent, &name, what) {
                return;
            }
            if !what.names() && child.is_some_and(|c| expected.wrote_lately(c) || twins.watching(c)) {
                return;
            }
            // A file's data or attributes are not its directory's.
            let child_id = child_id.unwrap_or(dir);
            if what.names() {
                listed.forget(&[parent]);
                co.forget(&[dir, child_id]);
            } else {
                co.forget(&[child_id]);
            }
            // The name itself only when it changed, and then the
            // directory's attributes too (the kernel drops them with the
            // name only if it held the name).
            if what.names() {
                let _ = n.entry(parent, &name);
                let _ = n.inode(parent, false);
            }
            if let Some(c) = child {
                expected.told(Some(c));
                let _ = n.inode(c, what == What::Data);
            }
        }
        Change::Dir(dir) => {
            listed.forget(&[node_of(dir)]);
            co.forget(&[dir]);
            let _ = n.inode(node_of(dir), false);
        }
        Change::All => {
            expected.told(None);
            listed.forget_all();
            co.forget_all();
            expected.writes().clear();
            let (nodes, names) = lock().served();
            for (dir, name) in names {
                let _ = n.entry(dir, &name);
            }
            for ino in nodes {
                let _ = n.inode(ino, true);
            }
        }
    }
}
