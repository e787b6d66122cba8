//! Where a served directory's system calls run.
//!
//! A stat, a create or a 4 KiB read of a cached page takes a few
//! microseconds; moving it off the async worker costs far more. tokio's
//! `block_in_place` hands the worker's queue to another thread and takes
//! it back (2.3 thread switches per request, measured), the blocking pool
//! two wake-ups. On this project's 2-core VM a switch costs 25-45 us of
//! CPU, so a `fchmod` from another machine took 277-355 us with
//! `block_in_place` and 197-238 us run where it was asked, with the
//! notices gathered too (doc/measurements.md).
//!
//! So [`quick`] calls run on the worker that asked, as a single-threaded
//! file server (sftp-server, diod's workers) runs each request on the
//! thread that read it. A disk that stops answering must not hold the
//! workers that carry links and other conversations:
//!
//! - Quick calls run on the workers one fewer at a time than there are
//!   workers ([`on_workers`]); the others go through `block_in_place`.
//!   A call that never returns (a disk that stopped, a hung NFS or FUSE
//!   mount under the served root) holds one worker, and every call after
//!   it leaves the workers while it is held. Unbounded, two such calls
//!   froze a router of two workers whole: its links, its other served
//!   directories, its tree (found by stopping the server of a FUSE mount
//!   beneath a served root).
//! - A task the caller woke before the call waits in the worker's LIFO
//!   slot, which other workers cannot steal (tokio #4941), and would wait
//!   as long as the call: a link's writer, woken by a credit, would hold
//!   the link. So an empty task is spawned first, which takes the slot
//!   and moves what was there to the queue other workers steal from.
//! - A worker parked while the caller's worker had the I/O driver sleeps
//!   on through the call, and nobody reads a socket: the [`watchdog`]
//!   wakes one when a call has run [`WATCH_EVERY`]. Waking one before
//!   every call (or yielding first) cost b two thread switches more per
//!   request (3.5 against 1.4 for a remote `fchmod`).
//! - [`SLOW_CALLS`] quick calls longer than [`SLOW`] within [`SLOW_WINDOW`]
//!   make every call for the next [`CAREFUL_FOR`] leave the workers.
//! - Calls that may take long whatever the disk (fsync, fallocate, a
//!   whole listing, large reads and writes) always leave them
//!   ([`blocking`]). At most [`OFF_WORKERS`] are off at once, below
//!   tokio's 512 blocking threads, so that handing a worker's queue over
//!   always finds a thread; the others wait for their turn without a
//!   thread, and can be interrupted.
//!
//! A runtime of one thread (tests) has no worker to hand over; there the
//! careful way is the blocking pool.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Semaphore;

use super::{caller, errors};

/// A quick call longer than this is slow.
pub const SLOW: Duration = Duration::from_millis(2);
/// This many slow calls within [`SLOW_WINDOW`] make calls careful...
pub const SLOW_CALLS: u32 = 4;
pub const SLOW_WINDOW: Duration = Duration::from_secs(1);
/// ...for this long.
pub const CAREFUL_FOR: Duration = Duration::from_secs(10);
/// Reads and writes of at most this many bytes are quick.
pub const QUICK_IO: usize = 64 * 1024;
/// Calls off the workers at once.
pub const OFF_WORKERS: usize = 256;
/// How often the watchdog looks at calls on workers (see [`watchdog`]).
pub const WATCH_EVERY: Duration = Duration::from_millis(2);
/// How long the watchdog looks after the last call on a worker.
pub const WATCH_IDLE: Duration = Duration::from_secs(1);

/// Quick calls running on workers now.
static ON_WORKERS: AtomicUsize = AtomicUsize::new(0);
static OFF: Semaphore = Semaphore::const_new(OFF_WORKERS);

/// How many quick calls may run on workers at once: all workers but one,
/// so that calls that never return leave one to the rest of the router
/// (none where there is only one). A runtime of one thread (tests) runs
/// them all where they are asked.
fn on_workers() -> usize {
    let h = Handle::current();
    match h.runtime_flavor() {
        RuntimeFlavor::MultiThread => h.metrics().num_workers().saturating_sub(1),
        _ => usize::MAX,
    }
}

/// A quick call's place on a worker, given back when it returns.
struct OnWorker;

impl OnWorker {
    fn take() -> Option<OnWorker> {
        if ON_WORKERS.fetch_add(1, Ordering::AcqRel) < on_workers() {
            Some(OnWorker)
        } else {
            ON_WORKERS.fetch_sub(1, Ordering::AcqRel);
            None
        }
    }
}

impl Drop for OnWorker {
    fn drop(&mut self) {
        ON_WORKERS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Milliseconds since [`epoch`] until which calls are careful.
static CAREFUL_UNTIL: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// Whether a slow call was seen lately.
pub fn careful() -> bool {
    now_ms() < CAREFUL_UNTIL.load(Ordering::Relaxed)
}

/// Notes a slow quick call; [`SLOW_CALLS`] of them within [`SLOW_WINDOW`]
/// make calls careful. One alone is more often this thread descheduled
/// (a VM's vCPU taken away for milliseconds) than the disk.
fn slow_seen() {
    static SEEN: Mutex<(u64, u32)> = Mutex::new((0, 0));
    let now = now_ms();
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if now.saturating_sub(seen.0) > SLOW_WINDOW.as_millis() as u64 {
        *seen = (now, 0);
    }
    seen.1 += 1;
    if seen.1 >= SLOW_CALLS {
        *seen = (now, 0);
        CAREFUL_UNTIL.store(now + CAREFUL_FOR.as_millis() as u64, Ordering::Relaxed);
        tracing::debug!("served directories answer slowly: their calls leave the workers for {CAREFUL_FOR:?}");
    }
}

/// Runs `f`, a call that takes microseconds on a healthy disk, as the
/// request's caller on this worker (see the module's doc).
pub async fn quick<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    if careful() {
        return blocking(f).await;
    }
    let Some(place) = OnWorker::take() else {
        return blocking(f).await;
    };
    // An empty task takes the worker's LIFO slot, which other workers
    // cannot steal, moving whatever this task woke before to the queue
    // they steal from.
    drop(tokio::spawn(async {}));
    watchdog::watch();
    let who = caller::Caller::current();
    let t = Instant::now();
    let r = caller::as_caller(who.as_ref(), f);
    drop(place);
    watchdog::returned();
    if t.elapsed() > SLOW {
        slow_seen();
    }
    r
}

/// [`quick`] for reads and writes of `len` bytes: large ones are careful.
pub async fn sized<T: Send + 'static>(
    len: usize,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    if len <= QUICK_IO {
        quick(f).await
    } else {
        blocking(f).await
    }
}

/// Runs `f` as the request's caller off the async worker: on this
/// thread once tokio has moved its other tasks elsewhere
/// (`block_in_place`), or in the blocking pool on a runtime of one thread.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    let _turn = OFF.acquire().await.map_err(|e| ns::error::detail(errors::EIO, e))?;
    let who = caller::Caller::current();
    let work = move || caller::as_caller(who.as_ref(), f);
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        return tokio::task::block_in_place(work);
    }
    tokio::task::spawn_blocking(work).await.map_err(|e| ns::error::detail(errors::EIO, e))?
}

/// The watchdog of calls on workers.
///
/// tokio reads sockets on one worker at a time, the one parked on its
/// I/O driver; the others park on a condition variable and are woken
/// only when there is work to share. A worker that left the driver to run
/// a task which then does not return (a quick call on a disk that
/// stopped) leaves the driver to nobody: the other workers sleep on and
/// the router reads nothing (seen in a core dump of a frozen router: one
/// worker in `fstatat`, the other in `park_condvar`). Waking a worker
/// before every call would cost each request two thread switches; this
/// thread, instead, looks every [`WATCH_EVERY`] while calls run on
/// workers, and when none returned in a whole period it spawns an empty
/// task from outside the runtime, which wakes a parked worker that then
/// takes the driver. It sleeps after [`WATCH_IDLE`] without such calls.
mod watchdog {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock};
    use std::thread::Thread;

    use tokio::runtime::Handle;

    use super::{ON_WORKERS, WATCH_EVERY, WATCH_IDLE};

    /// Calls on workers that have returned.
    static RETURNED: AtomicU64 = AtomicU64::new(0);

    struct Watchdog {
        thread: Thread,
        asleep: AtomicBool,
        /// The runtime of the latest call, the one to wake.
        runtime: Mutex<Option<Handle>>,
    }

    static DOG: OnceLock<Option<Watchdog>> = OnceLock::new();

    fn dog() -> Option<&'static Watchdog> {
        DOG.get_or_init(|| {
            let t = std::thread::Builder::new().name("mesh-io-watch".into()).spawn(run).ok()?;
            Some(Watchdog { thread: t.thread().clone(), asleep: AtomicBool::new(true), runtime: Mutex::new(None) })
        })
        .as_ref()
    }

    /// A call on a worker begins.
    pub(super) fn watch() {
        let Some(d) = dog() else { return };
        if let Ok(mut r) = d.runtime.try_lock() {
            *r = Some(Handle::current());
        }
        if d.asleep.load(Ordering::Acquire) && d.asleep.swap(false, Ordering::AcqRel) {
            d.thread.unpark();
        }
    }

    /// A call on a worker returned.
    pub(super) fn returned() {
        RETURNED.fetch_add(1, Ordering::Release);
    }

    fn run() {
        let d = loop {
            match DOG.get() {
                Some(Some(d)) => break d,
                Some(None) => return,
                None => std::thread::sleep(WATCH_EVERY),
            }
        };
        let mut last = RETURNED.load(Ordering::Acquire);
        let mut quiet = std::time::Duration::ZERO;
        loop {
            std::thread::sleep(WATCH_EVERY);
            let now = RETURNED.load(Ordering::Acquire);
            let running = ON_WORKERS.load(Ordering::Acquire) > 0;
            if running && now == last {
                let runtime = d.runtime.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(h) = runtime {
                    drop(h.spawn(async {}));
                }
            }
            quiet = if running || now != last { std::time::Duration::ZERO } else { quiet + WATCH_EVERY };
            last = now;
            if quiet >= WATCH_IDLE {
                quiet = std::time::Duration::ZERO;
                d.asleep.store(true, Ordering::Release);
                // A call that began before `asleep` was set did not wake
                // this thread: look again first.
                if ON_WORKERS.load(Ordering::Acquire) == 0 && RETURNED.load(Ordering::Acquire) == last {
                    std::thread::park();
                } else {
                    d.asleep.store(false, Ordering::Release);
                }
                last = RETURNED.load(Ordering::Acquire);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_calls_make_the_next_ones_careful() {
        // The counting itself: a quick call of another test running at
        // the same time may hold the place on a worker, and then these
        // go off the workers, where slowness is not counted.
        CAREFUL_UNTIL.store(0, Ordering::Relaxed);
        for _ in 0..SLOW_CALLS {
            quick(|| Ok(())).await.unwrap();
            slow_seen();
        }
        assert!(careful(), "slow calls are remembered");
        CAREFUL_UNTIL.store(0, Ordering::Relaxed);
    }

    /// Calls that never return (a disk that stopped) hold one worker of
    /// two: the other runs timers, other tasks and further calls.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_that_never_return_leave_a_worker() {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = std::sync::Arc::new(std::sync::Mutex::new(held));
        let mut stuck = Vec::new();
        for _ in 0..4 {
            let held = held.clone();
            stuck.push(tokio::spawn(quick(move || {
                let _ = held.lock().map(|h| h.recv());
                Ok(())
            })));
        }
        let rest = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tokio::spawn(async { 7 }).await.unwrap() + quick(|| Ok(1)).await.unwrap()
        };
        let answered = tokio::time::timeout(Duration::from_secs(10), rest).await;
        for _ in 0..4 {
            release.send(()).unwrap();
        }
        for s in stuck {
            s.await.unwrap().unwrap();
        }
        assert_eq!(answered, Ok(8), "the runtime went on beside the stuck calls");
    }
}
