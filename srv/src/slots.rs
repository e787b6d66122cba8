//! Bounds on the processes one service runs: how many start at once, how
//! many are alive, how many conversations wait for a place, and how long.
//!
//! Starting a process (fork, exec, a pty) is a blocking system call that
//! takes a worker thread for as long as the kernel needs; a thousand at
//! once used to hold the router's runtime so long that its neighbours
//! took it for dead. So starts run on the blocking pool, a few at a time
//! ([`Slots::start`]), and a conversation first takes a place among the
//! service's live processes ([`Slots::enter`]): when none is free it
//! waits, first come first served, and past the queue's bound or the wait
//! limit it gets the `busy` error ([`ns::error::EBUSY`]). A loaded machine
//! thus slows its callers, and then refuses them clearly; it never goes
//! silent.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use ns::error::{self, EBUSY};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bounds of one service.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Processes alive at once.
    pub alive: usize,
    /// Processes being started at once.
    pub starting: usize,
    /// Conversations waiting for a place; more are refused at once.
    pub queue: usize,
    /// How long a conversation waits for a place before it is refused.
    pub wait: Duration,
}

impl Default for Limits {
    /// 256 alive: each costs the router two descriptors and the machine a
    /// pty (4,096 by default, for all users), and 250 at once were seen
    /// to run well on two cores. Starts at once: the machine's cores, at
    /// least 2 and at most 8 (more threads do not make fork faster).
    /// 1,024 waiting, each for 10 s: a caller is slowed, not refused,
    /// while places turn over.
    fn default() -> Limits {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Limits { alive: 256, starting: cores.clamp(2, 8), queue: 1024, wait: Duration::from_secs(10) }
    }
}

/// The places of one service's processes.
pub struct Slots {
    limits: Limits,
    alive: Arc<Semaphore>,
    starting: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// A place among the live processes, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// Counts a waiter for as long as it waits, even if its future is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Slots {
    pub fn new(limits: Limits) -> Slots {
        Slots {
            limits,
            alive: Arc::new(Semaphore::new(limits.alive.max(1))),
            starting: Arc::new(Semaphore::new(limits.starting.max(1))),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Waits for a place for one more process, in order of arrival; the
    /// `busy` error (`service busy: ...`, naming `what`) when the queue is
    /// full or the wait is over.
    pub async fn enter(&self, what: &str) -> Result<Slot, String> {
        if let Ok(p) = self.alive.clone().try_acquire_owned() {
            return Ok(Slot { _permit: p });
        }
        let Limits { alive, queue, wait, .. } = self.limits;
        if self.waiting.fetch_add(1, Relaxed) >= queue {
            self.waiting.fetch_sub(1, Relaxed);
            return Err(error::detail(EBUSY, format!("{what}: {alive} running and {queue} waiting")));
        }
        let _counted = Waiting(&self.waiting);
        match tokio::time::timeout(wait, self.alive.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(Slot { _permit: p }),
            // The semaphore is never closed; say busy all the same.
            Ok(Err(_)) | Err(_) => {
                Err(error::detail(EBUSY, format!("{what}: {alive} running, none ended in {wait:?}")))
            }
        }
    }

    /// Runs `start` on the blocking pool, at most [`Limits::starting`] at
    /// once, so that the router's workers keep serving links meanwhile.
    pub async fn start<T: Send + 'static>(&self, start: impl FnOnce() -> T + Send + 'static) -> std::io::Result<T> {
        // Never closed, so this waits in order and never fails.
        let permit = self.starting.clone().acquire_owned().await.map_err(std::io::Error::other)?;
        let r = tokio::task::spawn_blocking(move || {
            let r = start();
            drop(permit);
            r
        })
        .await;
        r.map_err(std::io::Error::other)
    }

    /// Conversations waiting for a place now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(alive: usize, queue: usize, wait_ms: u64) -> Limits {
        Limits { alive, starting: 1, queue, wait: Duration::from_millis(wait_ms) }
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_queue_is_busy_at_once() {
        let s = Arc::new(Slots::new(limits(1, 1, 10_000)));
        let first = s.enter("x").await.unwrap();
        let s2 = s.clone();
        let second = tokio::spawn(async move { s2.enter("x").await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert_eq!(s.waiting(), 1);
        let e = s.enter("x").await.expect_err("the queue is full");
        assert!(e.starts_with(EBUSY) && e.contains("1 waiting"), "{e}");
        drop(first);
        assert!(second.await.unwrap().is_ok(), "the waiter got the place");
        assert_eq!(s.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_busy_at_the_limit() {
        let s = Slots::new(limits(1, 8, 500));
        let _first = s.enter("x").await.unwrap();
        let t0 = tokio::time::Instant::now();
        let e = s.enter("x").await.expect_err("no place in time");
        assert!(e.starts_with(EBUSY) && e.contains("none ended in 500ms"), "{e}");
        assert_eq!(t0.elapsed(), Duration::from_millis(500));
        assert_eq!(s.waiting(), 0, "a waiter that gave up is not counted");
    }

    #[tokio::test(start_paused = true)]
    async fn places_go_first_come_first_served() {
        let s = Arc::new(Slots::new(limits(1, 8, 10_000)));
        let first = s.enter("x").await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        for i in 0..4 {
            let (s, tx) = (s.clone(), tx.clone());
            tokio::spawn(async move {
                let slot = s.enter("x").await.unwrap();
                tx.send(i).await.unwrap();
                drop(slot);
            });
            // Each has queued before the next arrives.
            tokio::task::yield_now().await;
        }
        drop(first);
        let mut order = Vec::new();
        for _ in 0..4 {
            order.push(rx.recv().await.unwrap());
        }
        assert_eq!(order, [0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn starts_run_a_few_at_a_time_off_the_workers() {
        let s = Arc::new(Slots::new(Limits { starting: 2, ..limits(64, 8, 1000) }));
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (s, now, most) = (s.clone(), now.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                s.start(move || {
                    let n = now.fetch_add(1, Relaxed) + 1;
                    most.fetch_max(n, Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                    now.fetch_sub(1, Relaxed);
                })
                .await
                .unwrap()
            }));
        }
        // The current-thread runtime keeps running while starts block.
        let ticks = tokio::spawn(async {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        for t in tasks {
            t.await.unwrap();
        }
        ticks.await.unwrap();
        assert!(most.load(Relaxed) <= 2, "{} starts at once", most.load(Relaxed));
    }
}
