//! Changes to served directories, told to whoever caches what they hold.
//!
//! The kernel's inotify watches each directory of a served root that a
//! machine has looked into ([`Watcher::watch`], called before the look,
//! so that nothing changed after it goes untold). Every change inotify
//! reports becomes a [`Change`] named by the directory's file identity
//! (`tree::file_id`) and pushed to each [`Feed`] that may know of it:
//! this machine's mounts, and each machine that asked to be told
//! (`TreeReq::Watch`) of the directories it has looked into, so that no
//! machine learns names in a directory none of its users could read. A mount
//! may keep names and attributes only while its feed is up; a feed that
//! overflows says [`Change::All`] instead, and its reader forgets all.
//!
//! Bounds: [`MAX_WATCHES`] directories (more are answered, uncached), and
//! [`FEED_CAP`] changes waiting per feed.
//!
//! Lock order: `Watcher::state`, then a feed's `queue`. No system call
//! on a served directory is made under `state` (see [`Watcher::watch`]).

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::{Arc, Condvar, Mutex, Weak};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Directories watched at most, per router.
pub const MAX_WATCHES: usize = 16384;
/// Changes waiting per feed before it overflows.
pub const FEED_CAP: usize = 4096;

/// What changed in a served directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// The entry `name` of directory `dir` (a file identity): what of it.
    Name { dir: u64, name: String, what: What },
    /// The directory itself: its attributes, or it is gone.
    Dir(u64),
    /// Anything may have changed: forget everything told so far.
    All,
}

/// What changed of a directory's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum What {
    /// The name was made, or something renamed to it.
    Made,
    /// The name was removed, or renamed to another.
    Gone,
    /// Its file's attributes.
    Attr,
    /// Its file's contents (and so its size and times).
    Data,
}

impl What {
    /// Whether the name itself changed.
    pub fn names(self) -> bool {
        matches!(self, What::Made | What::Gone)
    }
}

impl What {
    fn of(mask: AddWatchFlags) -> What {
        if mask.intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO) {
            What::Made
        } else if mask.intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM) {
            What::Gone
        } else if mask.contains(AddWatchFlags::IN_MODIFY) {
            What::Data
        } else {
            What::Attr
        }
    }
}

/// Changes waiting for one reader, bounded: on overflow they are
/// replaced by one [`Change::All`].
#[derive(Default)]
pub struct Feed {
    queue: Mutex<(VecDeque<Change>, bool)>,
    ready: tokio::sync::Notify,
    ready_sync: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Feed {
    pub fn new() -> Arc<Feed> {
        Arc::new(Feed::default())
    }

    pub fn push(&self, changes: impl IntoIterator<Item = Change>) {
        {
            let mut q = lock(&self.queue);
            let mut changes = changes.into_iter().peekable();
            // Nothing for this reader: it is not woken.
            if changes.peek().is_none() {
                return;
            }
            for c in changes {
                if q.0.back() == Some(&c) || q.0.front() == Some(&Change::All) {
                    continue;
                }
                if c == Change::All || q.0.len() >= FEED_CAP {
                    q.0.clear();
                    q.0.push_back(Change::All);
                } else {
                    q.0.push_back(c);
                }
            }
        }
        self.ready.notify_one();
        self.ready_sync.notify_all();
    }

    /// No more will come: readers end.
    pub fn close(&self) {
        lock(&self.queue).1 = true;
        self.ready.notify_one();
        self.ready_sync.notify_all();
    }

    /// What has come, once something has; empty once closed.
    pub async fn next(&self) -> Vec<Change> {
        loop {
            let ready = self.ready.notified();
            {
                let mut q = lock(&self.queue);
                if !q.0.is_empty() || q.1 {
                    return q.0.drain(..).collect();
                }
            }
            ready.await;
        }
    }

    /// What has come so far, without waiting.
    pub fn next_now(&self) -> Vec<Change> {
        lock(&self.queue).0.drain(..).collect()
    }

    /// [`Feed::next`] for a thread of its own.
    pub fn next_blocking(&self) -> Vec<Change> {
        let mut q = lock(&self.queue);
        while q.0.is_empty() && !q.1 {
            q = self.ready_sync.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        q.0.drain(..).collect()
    }
}

tokio::task_local! {
    static ASKER: Asker;
}

/// Whom a look at a served directory is for: this machine's mounts
/// (`None`), or another machine.
pub type Asker = Option<ns::MachineId>;

/// Runs `work` for requests of machine `m`.
pub async fn asked_by<F: std::future::Future>(m: Asker, work: F) -> F::Output {
    ASKER.scope(m, work).await
}

/// Whom the request being handled is for.
pub fn asker() -> Asker {
    ASKER.try_with(Clone::clone).ok().flatten()
}

struct Dir {
    /// Its identity.
    id: u64,
    /// Who has looked into it (shared with the changes on their way).
    askers: Arc<Vec<Asker>>,
}

struct State {
    inotify: Option<Arc<Inotify>>,
    dirs: HashMap<WatchDescriptor, Dir>,
    feeds: Vec<(Asker, Weak<Feed>)>,
    /// Watches being added now, outside the lock.
    adding: usize,
}

/// The watches of one router's served directories (shared by its views).
pub struct Watcher {
    state: Mutex<State>,
    stop: CancellationToken,
}

impl Default for Watcher {
    fn default() -> Watcher {
        Watcher {
            state: Mutex::new(State { inotify: None, dirs: HashMap::new(), feeds: Vec::new(), adding: 0 }),
            stop: CancellationToken::new(),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.cancel();
        for f in lock(&self.state).feeds.iter().filter_map(|f| f.1.upgrade()) {
            f.close();
        }
    }
}

const MASK: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_ATTRIB)
    .union(AddWatchFlags::IN_MODIFY)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR);

impl Watcher {
    /// A feed of every change from now on; the watching starts with the
    /// first. Needs a tokio runtime.
    pub fn subscribe(self: &Arc<Self>, who: Asker) -> Result<Arc<Feed>, String> {
        let feed = Feed::new();
        let mut st = lock(&self.state);
        if st.inotify.is_none() {
            let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
                .map_err(|e| format!("inotify: {}", e.desc()))?;
            let ino = Arc::new(ino);
            let fd = ino.as_fd().try_clone_to_owned().map_err(|e| format!("inotify: {e}"))?;
            // SAFETY: the descriptor is owned by the AsyncFd from here on.
            let afd = unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| format!("inotify: {e}"))?;
            tokio::spawn(read_events(Arc::downgrade(self), ino.clone(), afd, self.stop.clone()));
            st.inotify = Some(ino);
        }
        // One feed per machine: a machine's mounts share one conversation
        // of changes, and a new one replaces the old (a redial's), so a
        // peer that opens many holds one feed, not a copy of every change
        // per conversation. This machine's own mounts each have theirs.
        st.feeds.retain(|f| match f.1.upgrade() {
            Some(old) if who.is_some() && f.0 == who => {
                old.close();
                false
            }
            Some(_) => true,
            None => false,
        });
        st.feeds.push((who, Arc::downgrade(&feed)));
        Ok(feed)
    }

    /// Watches directory `dir` (any descriptor of it) for `who`, so that
    /// what is told of it from now on reaches their feed; false when they
    /// will not be told (no feed, no watch left, or the caller, whose
    /// thread this is, may not read it).
    pub fn watch(&self, dir: BorrowedFd<'_>, who: &Asker) -> bool {
        let ino = {
            let mut st = lock(&self.state);
            if !st.feeds.iter().any(|f| f.0 == *who && f.1.strong_count() > 0) {
                return false;
            }
            let Some(ino) = st.inotify.clone() else { return false };
            st.adding += 1;
            ino
        };
        // Not under the lock: on a root under a mount that stopped
        // answering, adding a watch and fstat wait as long as the mount,
        // and events of every other directory must not wait with them.
        let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
        let added = ino.add_watch(path.as_str(), MASK).ok().map(|wd| {
            let id = nix::sys::stat::fstat(dir).ok().map(|s| crate::fs::tree::file_id(s.st_dev, s.st_ino));
            (wd, id)
        });
        let mut st = lock(&self.state);
        st.adding -= 1;
        let Some((wd, id)) = added else { return false };
        if let Some(d) = st.dirs.get_mut(&wd) {
            if !d.askers.contains(who) {
                Arc::make_mut(&mut d.askers).push(who.clone());
            }
            return true;
        }
        match id {
            Some(id) if st.dirs.len() < MAX_WATCHES => {
                st.dirs.insert(wd, Dir { id, askers: Arc::new(vec![who.clone()]) });
                true
            }
            _ => {
                let _ = ino.rm_watch(wd);
                false
            }
        }
    }

    /// Directories watched now.
    pub fn watched(&self) -> usize {
        lock(&self.state).dirs.len()
    }

    fn tell(&self, events: Vec<nix::sys::inotify::InotifyEvent>) {
        let mut st = lock(&self.state);
        // Each change with the askers of its directory (`None`: everyone).
        let mut changes: Vec<(Change, Option<Arc<Vec<Asker>>>)> = Vec::new();
        for ev in events {
            if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                changes.push((Change::All, None));
                continue;
            }
            let Some(d) = st.dirs.get(&ev.wd) else {
                // A watch being added (its directory not known yet): what
                // changed cannot be named, so everything is told.
                if st.adding > 0 {
                    changes.push((Change::All, None));
                }
                continue;
            };
            let (dir, askers) = (d.id, Some(d.askers.clone()));
            if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                st.dirs.remove(&ev.wd);
                changes.push((Change::Dir(dir), askers));
                continue;
            }
            let c = match ev.name.as_ref().map(|n| n.to_str()) {
                Some(Some(name)) => Change::Name { dir, name: name.to_string(), what: What::of(ev.mask) },
                // Names that are not UTF-8 are not served.
                Some(None) => continue,
                None => Change::Dir(dir),
            };
            if changes.last().map(|l| &l.0) != Some(&c) {
                changes.push((c, askers));
            }
        }
        st.feeds.retain(|f| f.1.strong_count() > 0);
        for (who, f) in &st.feeds {
            let Some(f) = f.upgrade() else { continue };
            let mine = |a: &Option<Arc<Vec<Asker>>>| a.as_ref().is_none_or(|a| a.contains(who));
            f.push(changes.iter().filter(|c| mine(&c.1)).map(|c| c.0.clone()));
        }
    }
}

/// Reads inotify's events until the watcher is gone.
async fn read_events(
    w: Weak<Watcher>,
    ino: Arc<Inotify>,
    afd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    stop: CancellationToken,
) {
    loop {
        let mut guard = tokio::select! {
            g = afd.readable() => match g {
                Ok(g) => g,
                Err(_) => return,
            },
            () = stop.cancelled() => return,
        };
        match ino.read_events() {
            Ok(evs) => match w.upgrade() {
                Some(w) => w.tell(evs),
                None => return,
            },
            Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
            Err(e) => {
                tracing::warn!("inotify: {}", e.desc());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_feed_says_all_once() {
        let f = Feed::new();
        f.push((0..FEED_CAP as u64 + 5).map(Change::Dir));
        let got = f.next_blocking();
        assert_eq!(got, vec![Change::All]);
        f.push([Change::Dir(1), Change::Dir(1), Change::Dir(2)]);
        assert_eq!(f.next_blocking(), vec![Change::Dir(1), Change::Dir(2)]);
        f.close();
        assert!(f.next_blocking().is_empty());
    }

    /// A change for other readers does not wake this one: a watching
    /// machine's task sleeps through changes it is not told.
    #[tokio::test(start_paused = true)]
    async fn nothing_pushed_wakes_nobody() {
        let f = Feed::new();
        f.push(std::iter::empty());
        let woke = tokio::time::timeout(std::time::Duration::from_secs(1), f.next()).await;
        assert!(woke.is_err(), "woken with {woke:?}");
        f.push([Change::Dir(3)]);
        assert_eq!(f.next_now(), vec![Change::Dir(3)]);
        assert!(f.next_now().is_empty());
    }

    /// Past [`MAX_WATCHES`] a directory is answered untold (a look at it is
    /// not kept); a watched directory removed gives its room back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_cap_directories_go_untold_and_a_removed_one_makes_room() {
        let w = Arc::new(Watcher::default());
        let feed = w.subscribe(None).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let mut dirs = Vec::new();
        for i in 0..=MAX_WATCHES {
            let p = tmp.path().join(i.to_string());
            std::fs::create_dir(&p).unwrap();
            let f = std::fs::File::open(&p).unwrap();
            dirs.push((p, Some(f)));
        }
        let told: Vec<bool> = dirs.iter().map(|(_, f)| w.watch(f.as_ref().unwrap().as_fd(), &None)).collect();
        assert!(told[..MAX_WATCHES].iter().all(|&t| t), "below the cap, every directory is watched");
        assert!(!told[MAX_WATCHES], "past the cap: answered, untold");
        assert_eq!(w.watched(), MAX_WATCHES);
        // Watching one again costs no room.
        assert!(w.watch(dirs[1].1.as_ref().unwrap().as_fd(), &None));
        assert_eq!(w.watched(), MAX_WATCHES);
        // Removed (and closed, so the kernel lets the inode go): its watch
        // ends, the feed hears of it, and the next directory fits.
        dirs[0].1.take();
        std::fs::remove_dir(&dirs[0].0).unwrap();
        let t = std::time::Instant::now();
        while w.watched() == MAX_WATCHES {
            assert!(t.elapsed() < std::time::Duration::from_secs(10), "the removed directory's watch stayed");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Told as its directory's end, or within everything (a change while
        // a watch was being added is told as `All`, which takes the place
        // of whatever was queued with it).
        let told = tokio::time::timeout(std::time::Duration::from_secs(10), feed.next()).await;
        let told = told.expect("the removed directory's end was told");
        assert!(told.iter().any(|c| matches!(c, Change::Dir(_) | Change::All)), "{told:?}");
        assert!(w.watch(dirs[MAX_WATCHES].1.as_ref().unwrap().as_fd(), &None));
    }
}
