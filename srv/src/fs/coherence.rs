//! What a mount may keep of served directories, and what tells it to let
//! go.
//!
//! A mount's kernel keeps a served file's name and attributes only when
//! the machine serving it has promised to tell of every change after the
//! look (`tree::Meta::watched`, see `dir::watch`). Changes reach each
//! mounted tree of this router (and its views) as one [`Feed`], which the
//! FUSE server turns into invalidations:
//!
//! - from this machine's own served directories, straight from its
//!   watcher;
//! - from each other machine whose files a mount looked at, over one
//!   conversation with its tree server (`TreeReq::Watch`), opened on the
//!   first look and kept while it lasts. What that machine answers is
//!   kept only if this conversation was up when the request left and
//!   still is when the answer came ([`Coherence::before`],
//!   [`Coherence::still`]); when it ends, the mounts forget all they kept
//!   ([`Change::All`]) and it is opened again at the next look.
//!
//! A change of names made here on another machine's directory comes back
//! with that directory's attributes after it (`TreeResp::After`); they
//! are kept here ([`Coherence::fill`]) and answer the kernel, which drops
//! a directory's attributes after every change in it and asks again
//! before the next permission check, without a round trip. A change told
//! that is not a mount's own drops them ([`Coherence::forget`]).
//!
//! Lock order: `mounts`, `local`, `machines` and `kept` are leaves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ns::conv::Msg;
use ns::{MachineId, Router};

use super::dir::watch::{Change, Feed, Watcher};
use super::remote::{self, TreeReq, TreeResp};
use super::tree::Entry;

/// How long what a served file says may be kept, by the kernel or here:
/// a change told ends it long before; this bounds only a race between an
/// answer and a change whose notice was lost.
pub const KEPT: Duration = Duration::from_secs(10);
/// The most directories kept here.
const KEPT_MAX: usize = 65536;

/// How soon a machine whose conversation ended is asked again.
const RETRY: Duration = Duration::from_secs(1);

enum Sub {
    Starting,
    /// Up, since the epoch numbered so.
    Live(u64),
    Down(Instant),
}

/// The coherence of one router's mounts (shared by its views).
#[derive(Default)]
pub struct Coherence {
    /// This machine's served directories.
    pub watcher: Arc<Watcher>,
    /// Each mounted tree's changes.
    mounts: Mutex<Vec<Weak<Feed>>>,
    /// This machine's watcher, for its mounts.
    local: Mutex<Option<Arc<Feed>>>,
    machines: Mutex<HashMap<MachineId, Sub>>,
    epochs: AtomicU64,
    /// Directories' attributes after a change made here, by identity.
    /// Directories' attributes, when kept, and whether foreseen here
    /// (see [`Coherence::foresee`]).
    kept: Mutex<HashMap<u64, (Entry, Instant, bool)>>,
    /// Counts the changes told that dropped something kept.
    gen: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Coherence {
    /// A feed for a newly mounted tree: every change from now on.
    pub fn mount(self: &Arc<Self>) -> Result<Arc<Feed>, String> {
        let feed = Feed::new();
        {
            let mut local = lock(&self.local);
            if local.is_none() {
                let from = self.watcher.subscribe(None)?;
                tokio::spawn(forward(Arc::downgrade(self), from.clone()));
                *local = Some(from);
            }
        }
        let mut mounts = lock(&self.mounts);
        mounts.retain(|m| m.strong_count() > 0);
        mounts.push(Arc::downgrade(&feed));
        Ok(feed)
    }

    fn mounted(&self) -> bool {
        lock(&self.mounts).iter().any(|m| m.strong_count() > 0)
    }

    /// Passes changes on to every mounted tree.
    fn tell(&self, changes: &[Change]) {
        for m in lock(&self.mounts).iter().filter_map(Weak::upgrade) {
            m.push(changes.iter().cloned());
        }
    }

    /// Before asking machine `m`: the epoch of its conversation of
    /// changes if it is up (an answer may then be kept), else `None`,
    /// and it is opened for the next time.
    pub fn before(self: &Arc<Self>, r: &Router, m: &MachineId) -> Option<u64> {
        if !self.mounted() {
            return None;
        }
        let mut machines = lock(&self.machines);
        match machines.get(m) {
            Some(Sub::Live(e)) => return Some(*e),
            Some(Sub::Starting) => return None,
            Some(Sub::Down(at)) if at.elapsed() < RETRY => return None,
            _ => {}
        }
        machines.insert(m.clone(), Sub::Starting);
        tokio::spawn(subscribe(Arc::downgrade(self), r.clone(), m.clone()));
        None
    }

    /// Whether machine `m`'s conversation of changes has stayed up since
    /// [`Coherence::before`] gave `epoch`.
    pub fn still(&self, m: &MachineId, epoch: Option<u64>) -> bool {
        matches!((lock(&self.machines).get(m), epoch), (Some(Sub::Live(e)), Some(x)) if *e == x)
    }

    fn set(&self, m: &MachineId, s: Sub) {
        lock(&self.machines).insert(m.clone(), s);
    }

    /// Taken before asking for a change, for [`Coherence::fill`].
    pub fn gen(&self) -> u64 {
        self.gen.load(SeqCst)
    }

    /// Keeps the attributes of directories `dirs` that machine `m` answered
    /// a change with, if it tells of their changes ([`Coherence::still`]
    /// for `epoch`) and nothing was dropped since `gen`: an answer older
    /// than a change told is not kept.
    pub fn fill(&self, m: &MachineId, epoch: Option<u64>, dirs: Vec<Entry>, gen: u64) {
        if dirs.is_empty() || !self.still(m, epoch) {
            return;
        }
        let mut kept = lock(&self.kept);
        if self.gen.load(SeqCst) != gen {
            return;
        }
        if kept.len() >= KEPT_MAX {
            kept.clear();
        }
        for e in dirs {
            if let Some(id) = e.watched_id() {
                kept.insert(id, (e, Instant::now(), false));
            }
        }
    }

    /// What directory `id` was left as by a change made here, if still
    /// kept.
    pub fn kept(&self, id: u64) -> Option<Entry> {
        let kept = lock(&self.kept);
        kept.get(&id).filter(|(_, at, _)| at.elapsed() < KEPT).map(|(e, ..)| e.clone())
    }

    /// Directory `id` is changed by a removal answered here before the
    /// serving machine did (`fuse::removals`): its modification and change
    /// times become this machine's clock, later than they were, and it has
    /// a link less if a directory in it went (`subdir`), until the
    /// answer's attributes come. False if it is not kept.
    pub fn foresee(&self, id: u64, subdir: bool) -> bool {
        let mut kept = lock(&self.kept);
        let Some((e, _, foreseen)) = kept.get_mut(&id).filter(|(_, at, _)| at.elapsed() < KEPT) else { return false };
        let Some(m) = e.meta.as_mut() else { return false };
        *foreseen = true;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let now = (now.as_secs() as i64, now.subsec_nanos());
        let later = |t: (i64, u32)| match t.1 {
            999_999_999 => (t.0 + 1, 0),
            n => (t.0, n + 1),
        };
        let t = now.max(later(m.mtime)).max(later(m.ctime));
        (m.mtime, m.ctime) = (t, t);
        // Counted as Linux file systems count (btrfs keeps 1).
        if subdir && m.nlink > 2 {
            m.nlink -= 1;
        }
        true
    }

    /// The removals foreseen in directory `id` have landed: what was
    /// foreseen goes unless their answer brought the directory since.
    pub fn landed(&self, id: u64) {
        let mut kept = lock(&self.kept);
        if kept.get(&id).is_some_and(|k| k.2) {
            kept.remove(&id);
        }
    }

    /// Drops what is kept of files `ids` (a change told, or about to be
    /// made here).
    pub fn forget(&self, ids: &[u64]) {
        self.gen.fetch_add(1, SeqCst);
        let mut kept = lock(&self.kept);
        for id in ids {
            kept.remove(id);
        }
    }

    /// Drops everything kept.
    pub fn forget_all(&self) {
        self.gen.fetch_add(1, SeqCst);
        lock(&self.kept).clear();
    }
}

/// This machine's changes, to its mounts, until the watcher is gone.
async fn forward(c: Weak<Coherence>, from: Arc<Feed>) {
    loop {
        let changes = from.next().await;
        match c.upgrade() {
            Some(c) if !changes.is_empty() => c.tell(&changes),
            _ => return,
        }
    }
}

/// Machine `m`'s changes, to the mounts, while its tree server tells
/// them.
async fn subscribe(c: Weak<Coherence>, r: Router, m: MachineId) {
    let mut conv = r.open(remote::server(&m), Vec::new());
    let up = matches!(remote::begin(&mut conv, &TreeReq::Watch).await, Ok(TreeResp::Done));
    if up {
        let Some(co) = c.upgrade() else { return };
        co.set(&m, Sub::Live(co.epochs.fetch_add(1, Relaxed) + 1));
        drop(co);
        while let Some(Msg::Data(b)) = conv.rx.recv().await {
            let Ok(TreeResp::Changed(changes)) = remote::decode::<TreeResp>(&b) else { break };
            match c.upgrade() {
                Some(co) => co.tell(&changes),
                None => return,
            }
        }
        tracing::debug!(machine = %m, "changes no longer told");
    }
    if let Some(co) = c.upgrade() {
        co.set(&m, Sub::Down(Instant::now()));
        if up {
            co.tell(&[Change::All]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::tree::{FileKind, Meta};

    fn dir(id: u64, t: (i64, u32)) -> Entry {
        let mut e = Entry::new("d", FileKind::Dir, 0o755);
        e.meta = Some(Meta { id: Some(id), watched: true, mtime: t, ctime: t, ..Default::default() });
        e
    }

    fn times(c: &Coherence, id: u64) -> Option<(i64, u32)> {
        c.kept(id).and_then(|e| e.meta).map(|m| m.mtime)
    }

    #[test]
    fn a_removal_foreseen_moves_the_times_on_until_its_answer_comes() {
        let c = Coherence::default();
        let m: MachineId = "b".parse().unwrap();
        c.set(&m, Sub::Live(1));
        // The serving machine's clock ahead of this one: still later.
        c.fill(&m, Some(1), vec![dir(7, (4_000_000_000, 999_999_999))], c.gen());
        assert!(c.foresee(7, false));
        assert_eq!(times(&c, 7), Some((4_000_000_001, 0)));
        assert!(!c.foresee(8, false), "not kept: the removal waits for its answer");
        // Landed without an answer that brought the directory: asked again.
        c.landed(7);
        assert_eq!(times(&c, 7), None);
        // Landed with one: what it brought stays.
        c.fill(&m, Some(1), vec![dir(7, (5, 0))], c.gen());
        assert!(c.foresee(7, false));
        assert!(times(&c, 7).is_some_and(|t| t.0 > 1_700_000_000), "this machine's clock");
        c.fill(&m, Some(1), vec![dir(7, (6, 0))], c.gen());
        c.landed(7);
        assert_eq!(times(&c, 7), Some((6, 0)));
    }
}
