//! Removals sent ahead: an unlink of a file of another machine, or an
//! rmdir of a directory known empty, answered at once, its request on its
//! way, as writes are (`remote::pipe`).
//!
//! `rm -rf` waits for one round trip per file, and nothing else it does
//! costs as much. A removal goes ahead where its answer is certain
//! enough that a failure is a fault of the serving machine's, not a
//! question of rights:
//!
//! - the kernel has checked the caller's rights on the directory
//!   (`default_permissions`, with attributes the serving machine keeps
//!   told);
//! - the caller is itself there: in this directory, a file or directory
//!   it made through this mount came back as its own (a caller the
//!   serving machine squashes made `nobody`'s, and its removals wait);
//! - the file is not open here, and the kernel knows it by one name; a
//!   directory is known to have no names left (`listed`), the removals
//!   of its last ones maybe still on their way, sent before it;
//! - fewer than [`AHEAD`] removals of this mount are on their way.
//!
//! What else might refuse it there (an immutable file, a mount point, a
//! disk gone read-only) is told as CephFS tells its asynchronous
//! unlinks: the name comes back (what is known of the directory is
//! dropped), the failure is logged with its path, and the next `fsync`
//! of the directory returns it. A removal the serving machine finds
//! already done (ENOENT) was someone else's first, and is no failure.
//!
//! Nothing overtakes a removal that it depends on: a look, a make, a
//! listing or a change of its directory waits for the removals there to
//! land; a rename, an `rmdir` that does not go ahead, a lock's release
//! and the unmount wait for all those answered before them (not for
//! those that keep coming). Removals are sent in the order they came, a
//! request for each run of one caller's, each with the identity its
//! directory had when it was answered: the serving machine removes it
//! only from that directory (`Namespace::remove_checked`), so a
//! directory renamed meanwhile does not make it another file's.
//! The directory's modification and change times move at once, to this
//! machine's clock (`Coherence::foresee`), as POSIX has an unlink do:
//! the kernel asks for them after each removal, before the next one's
//! permission check, and is answered without a round trip. Where they
//! are not kept here, the removal waits for its answer. When the
//! removals land, the kernel is told to ask again, and gets the serving
//! machine's.
//!
//! The removals waiting go together (`TreeReq::Removes`, done there in
//! order), sent by one task while any wait: `rm -rf` of a directory is
//! then a message or two, not one per file.
//!
//! Lock order: `state`, `queue` and `itself` are leaves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuse3::raw::prelude::*;
use fuse3::Result as FuseResult;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::{inodes, lock, MeshFs};
use crate::fs::caller::Caller;
use crate::fs::components;
use crate::fs::dir::watch::What;
use crate::fs::remote::Removal;
use crate::fs::tree::Entry;

/// The most removals of a mount on their way at once.
pub const AHEAD: usize = 64;
/// How long a lock's release or the unmount waits for the removals on
/// their way when it may not be interrupted.
pub const LANDING: Duration = Duration::from_secs(5);
/// The most bytes of paths in one request.
const BATCH_BYTES: usize = 256 << 10;
/// The most directories remembered as places where a caller is itself.
const ITSELF_MAX: usize = 65536;

/// A removal waiting to be sent.
struct Queued {
    caller: Caller,
    path: String,
    /// An empty directory's removal, not a file's.
    is_dir: bool,
    dir: u64,
    /// The directory's identity on the serving machine.
    dir_id: u64,
    name: String,
    ahead: Ahead,
}

#[derive(Default)]
struct Queue {
    items: Vec<Queued>,
    /// A task is sending them.
    sending: bool,
}

/// The most directories whose failure waits for their fsync.
const FAILED_MAX: usize = 4096;

#[derive(Default)]
struct State {
    /// Removals on their way, numbered in the order answered, and the
    /// directory node of each: a wait is for those answered before it,
    /// not for any that come while it waits (an `rm -rf` elsewhere).
    on_way: BTreeMap<u64, u64>,
    by_dir: HashMap<u64, BTreeSet<u64>>,
    next: u64,
    /// The first failure in each directory not yet told by its fsync.
    failed: HashMap<u64, String>,
}

impl State {
    /// Whether removals numbered up to `upto` in `dir` (in any: `None`)
    /// are on their way.
    fn before(&self, dir: Option<u64>, upto: u64) -> bool {
        match dir {
            Some(d) => self.by_dir.get(&d).is_some_and(|s| s.range(..=upto).next().is_some()),
            None => self.on_way.range(..=upto).next().is_some(),
        }
    }
}

/// A mount's removals on their way.
pub struct Removals {
    state: Mutex<State>,
    queue: Mutex<Queue>,
    /// Directories (nodes) where a user (uid) made something that came
    /// back theirs: there, that user is not squashed.
    itself: Mutex<HashMap<u64, u32>>,
    landed: Notify,
    slots: Arc<Semaphore>,
}

impl Default for Removals {
    fn default() -> Removals {
        Removals {
            state: Default::default(),
            queue: Default::default(),
            itself: Default::default(),
            landed: Notify::new(),
            slots: Arc::new(Semaphore::new(AHEAD)),
        }
    }
}

/// One removal on its way: counted until dropped.
pub struct Ahead {
    removals: Arc<Removals>,
    dir: u64,
    seq: u64,
    _slot: OwnedSemaphorePermit,
}

impl Ahead {
    /// The removal failed there: kept for the directory's fsync.
    pub fn failed(&self, why: String) {
        let mut st = lock(&self.removals.state);
        if st.failed.len() < FAILED_MAX || st.failed.contains_key(&self.dir) {
            st.failed.entry(self.dir).or_insert(why);
        }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        let mut st = lock(&self.removals.state);
        st.on_way.remove(&self.seq);
        if let Some(s) = st.by_dir.get_mut(&self.dir) {
            s.remove(&self.seq);
            if s.is_empty() {
                st.by_dir.remove(&self.dir);
            }
        }
        drop(st);
        self.removals.landed.notify_waiters();
    }
}

impl Removals {
    /// User `uid` made something in directory `dir`, owned by `owner`
    /// there.
    pub fn made(&self, dir: u64, uid: u32, owner: u32) {
        let mut it = lock(&self.itself);
        if owner != uid {
            it.remove(&dir);
            return;
        }
        if it.len() >= ITSELF_MAX {
            it.clear();
        }
        it.insert(dir, uid);
    }

    /// Whether user `uid` is known to be itself in directory `dir`.
    pub fn is_itself(&self, dir: u64, uid: u32) -> bool {
        lock(&self.itself).get(&dir) == Some(&uid)
    }

    /// The directory is gone, or another's: forgets it.
    pub fn let_go(&self, dir: u64) {
        lock(&self.itself).remove(&dir);
    }

    /// A slot for a removal in directory `dir`, if one is free.
    pub fn start(self: &Arc<Self>, dir: u64) -> Option<Ahead> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        let mut st = lock(&self.state);
        let seq = st.next;
        st.next += 1;
        st.on_way.insert(seq, dir);
        st.by_dir.entry(dir).or_default().insert(seq);
        Some(Ahead { removals: self.clone(), dir, seq, _slot: slot })
    }

    /// Whether removals in `dir` (in any directory: `None`) are on their
    /// way.
    pub fn pending(&self, dir: Option<u64>) -> bool {
        lock(&self.state).before(dir, u64::MAX)
    }

    /// How many removals in directory `dir` are on their way.
    fn on_their_way(&self, dir: u64) -> usize {
        lock(&self.state).by_dir.get(&dir).map_or(0, BTreeSet::len)
    }

    /// Waits until the removals in `dir` (in any: `None`) answered so far
    /// have landed.
    pub async fn landed(&self, dir: Option<u64>) {
        let upto = lock(&self.state).next.wrapping_sub(1);
        loop {
            let landed = self.landed.notified();
            tokio::pin!(landed);
            // Registered before the look, so a landing between the two
            // is not missed.
            landed.as_mut().enable();
            if !lock(&self.state).before(dir, upto) {
                return;
            }
            landed.await;
        }
    }

    /// [`Removals::landed`] for all, for `limit` at most; false if some
    /// are still on their way then (logged).
    pub async fn landed_within(&self, limit: Duration) -> bool {
        let landed = tokio::time::timeout(limit, self.landed(None)).await.is_ok();
        if !landed {
            tracing::warn!("removals sent ahead still on their way after {limit:?}");
        }
        landed
    }

    /// The first removal in `dir` that failed since the last time told.
    pub fn take_failure(&self, dir: u64) -> Option<String> {
        lock(&self.state).failed.remove(&dir)
    }
}

impl MeshFs {
    /// Sends the removal of `name` in directory `parent` (at `path`), a
    /// file or an empty directory (`dir`), ahead, and says so, where it
    /// may go (see the module's doc).
    pub(super) fn remove_ahead(&self, req: &Request, parent: u64, name: &OsStr, path: &str, dir: bool) -> bool {
        let Some(name) = name.to_str() else { return false };
        if self.notifier.get().is_none() || !inodes::served(parent) || !self.removals.is_itself(parent, req.uid) {
            return false;
        }
        let (node, dir_id) = {
            let t = lock(&self.inodes);
            (t.node_at(path).filter(|&n| inodes::served(n) && t.names(n) == 1), t.id(parent))
        };
        let (Some(node), Some(dir_id)) = (node, dir_id) else { return false };
        let certain = match dir {
            // Known empty: its removals on their way go first.
            true => self.listed.empty(node, || self.ns.landing(&components(path))),
            false => self.open_files(node).is_empty(),
        };
        if !certain {
            return false;
        }
        let Some(ahead) = self.removals.start(parent) else { return false };
        // The directory's times move now, as they will there (a stat
        // after an unlink sees them later, as POSIX has it); a directory
        // whose attributes are not kept waits for its answer.
        if !self.ns.coherence().foresee(dir_id, dir) {
            return false;
        }
        let caller = Caller::local(req.uid, req.gid, req.pid);
        // As the change made: its notice is this mount's own.
        self.expected.add(parent, name, What::Gone);
        self.listed.gone(parent, name);
        self.removed(&[path]);
        let q =
            Queued { caller, path: path.to_string(), is_dir: dir, dir: parent, dir_id, name: name.to_string(), ahead };
        let send = {
            let mut queue = lock(&self.removals.queue);
            queue.items.push(q);
            !std::mem::replace(&mut queue.sending, true)
        };
        if let (true, Some(n)) = (send, self.notifier.get().cloned()) {
            let told = Told { expected: self.expected.clone(), listed: self.listed.clone(), notifier: n };
            tokio::spawn(send_all(self.removals.clone(), self.ns.clone(), told));
        }
        true
    }

    /// Waits, interruptibly, for the removals on their way in directory
    /// `dir` (in any: `None`).
    pub(super) async fn removals_landed(&self, req: &Request, dir: Option<u64>) -> FuseResult<()> {
        if !self.removals.pending(dir) {
            return Ok(());
        }
        self.stoppable(req, async {
            self.removals.landed(dir).await;
            Ok(())
        })
        .await
    }

    /// The caller of `req` made entry `e` in directory `parent`: whether
    /// it came back as theirs says whether they are themselves there.
    pub(super) fn made_by(&self, parent: u64, req: &Request, e: &Entry) {
        if inodes::served(parent) {
            let owner = e.meta.as_ref().and_then(|m| m.uid).unwrap_or(self.uid);
            self.removals.made(parent, req.uid, owner);
        }
    }
}

/// What a landing tells: the notices expected, the names known, the
/// kernel.
struct Told {
    expected: Arc<super::notify::Expected>,
    listed: Arc<super::listed::Listed>,
    notifier: Arc<super::notify::Notifier>,
}

/// The sender's end: one that ends otherwise than with none waiting (a
/// panic, the runtime going) fails those still waiting, so that nothing
/// waits for them.
struct Sending {
    removals: Arc<Removals>,
    done: bool,
}

impl Drop for Sending {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let left: Vec<Queued> = {
            let mut q = lock(&self.removals.queue);
            q.sending = false;
            q.items.drain(..).collect()
        };
        for q in left {
            tracing::warn!("removal of {} sent ahead was never sent", q.path);
            q.ahead.failed(ns::error::detail(ns::error::ESHUTDOWN, "removal never sent"));
        }
    }
}

/// Sends the removals waiting, in as few requests as may be, until none
/// wait.
async fn send_all(removals: Arc<Removals>, ns: Arc<crate::fs::Namespace>, told: Told) {
    let mut sending = Sending { removals: removals.clone(), done: false };
    loop {
        let batch: Vec<Queued> = {
            let mut q = lock(&removals.queue);
            if q.items.is_empty() {
                q.sending = false;
                sending.done = true;
                return;
            }
            let mut bytes = 0;
            let n = q.items.iter().take_while(|i| {
                bytes += i.path.len();
                bytes <= BATCH_BYTES
            });
            let n = n.count().max(1);
            q.items.drain(..n).collect()
        };
        // A request for each run of one caller's, in the order they came:
        // a directory's removal comes after those of its names.
        let mut runs: Vec<(Caller, Vec<Queued>)> = Vec::new();
        for q in batch {
            match runs.last_mut() {
                Some(r) if r.0 == q.caller => r.1.push(q),
                _ => runs.push((q.caller.clone(), vec![q])),
            }
        }
        for (caller, items) in runs {
            let paths: Vec<Removal> = items
                .iter()
                .map(|q| Removal { path: components(&q.path), dir: q.is_dir, parent: Some(q.dir_id) })
                .collect();
            let done = caller.scope(ns.bound().remove_all(&paths)).await;
            // The kernel kept the directories as they were before (it
            // asks for them before each removal's permission check); it
            // asks again now, before the removals count as landed.
            let mut dirs: Vec<(u64, u64)> = items.iter().map(|q| (q.dir, q.dir_id)).collect();
            dirs.sort_unstable();
            dirs.dedup();
            for (d, id) in dirs {
                // Those still on their way (queued, or in a later run of
                // this batch) are not in the attributes this answer
                // brought.
                let here = items.iter().filter(|q| q.dir == d).count();
                if removals.on_their_way(d) > here {
                    ns.coherence().foresee(id, false);
                } else {
                    ns.coherence().landed(id);
                }
                let _ = told.notifier.inode(d, false);
            }
            for (q, r) in items.iter().zip(done) {
                let Err(e) = r else { continue };
                told.expected.remove(q.dir, &q.name, What::Gone);
                // Already gone there: someone else's removal came first.
                if crate::fs::errors::errno(&e) == libc::ENOENT {
                    continue;
                }
                // The name is there after all: what is known of the
                // directory goes, and the next look asks.
                told.listed.forget(&[q.dir]);
                tracing::warn!("removal of {} sent ahead failed there: {e}", q.path);
                q.ahead.failed(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_wait_ends_when_the_last_removal_of_its_directory_lands() {
        let r = Arc::new(Removals::default());
        let (one, two, other) = (r.start(1).unwrap(), r.start(1).unwrap(), r.start(2).unwrap());
        assert!(r.pending(Some(1)) && r.pending(None));
        let waiting = tokio::spawn({
            let r = r.clone();
            async move { r.landed(Some(1)).await }
        });
        drop(one);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "one of two landed");
        two.failed("/d/x: operation not permitted".into());
        drop(two);
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert!(r.pending(None) && !r.pending(Some(1)));
        assert_eq!(r.take_failure(1).as_deref(), Some("/d/x: operation not permitted"));
        assert_eq!(r.take_failure(1), None, "told once");
        drop(other);
        tokio::time::timeout(Duration::from_secs(5), r.landed(None)).await.unwrap();
    }

    #[tokio::test]
    async fn a_wait_is_for_the_removals_answered_before_it() {
        let r = Arc::new(Removals::default());
        let first = r.start(1).unwrap();
        let waiting = tokio::spawn({
            let r = r.clone();
            async move { r.landed(None).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Removals that keep coming (an rm -rf elsewhere) do not hold it.
        let later = r.start(2).unwrap();
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert!(r.pending(None));
        drop(later);
    }

    #[test]
    fn slots_are_bounded_and_come_back() {
        let r = Arc::new(Removals::default());
        let held: Vec<_> = (0..AHEAD).map(|_| r.start(7).unwrap()).collect();
        assert!(r.start(7).is_none(), "full");
        drop(held);
        assert!(r.start(7).is_some());
    }

    #[test]
    fn a_caller_is_itself_only_where_what_it_made_came_back_its_own() {
        let r = Removals::default();
        r.made(5, 1000, 1000);
        assert!(r.is_itself(5, 1000) && !r.is_itself(5, 0) && !r.is_itself(6, 1000));
        // Root squashed: what it made there is nobody's.
        r.made(5, 0, 65534);
        assert!(!r.is_itself(5, 0) && !r.is_itself(5, 1000));
    }
}
