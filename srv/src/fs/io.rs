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
//! thread that read it. A disk that stops answering quickly must not
//! hold workers: [`SLOW_CALLS`] quick calls longer than [`SLOW`] within
//! [`SLOW_WINDOW`] make every call for the next [`CAREFUL_FOR`] go
//! through `block_in_place`, so a
//! stalled disk holds blocking threads, not the workers that carry links
//! and other conversations. Calls that may take long whatever the disk
//! (fsync, fallocate, a whole listing, large reads and writes) always go
//! the careful way ([`blocking`]).
//!
//! A runtime of one thread (tests) has no worker to hand over; there the
//! careful way is the blocking pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

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
    let who = caller::Caller::current();
    let t = Instant::now();
    let r = caller::as_caller(who.as_ref(), f);
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
    let who = caller::Caller::current();
    let work = move || caller::as_caller(who.as_ref(), f);
    if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
        return tokio::task::block_in_place(work);
    }
    tokio::task::spawn_blocking(work).await.map_err(|e| ns::error::detail(errors::EIO, e))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_calls_make_the_next_ones_careful() {
        CAREFUL_UNTIL.store(0, Ordering::Relaxed);
        let here = std::thread::current().id();
        let ran = quick(move || Ok(std::thread::current().id())).await;
        assert_eq!(ran, Ok(here), "a quick call runs on the asking worker");
        for _ in 0..SLOW_CALLS {
            quick(|| {
                std::thread::sleep(SLOW * 2);
                Ok(())
            })
            .await
            .unwrap();
        }
        assert!(careful(), "slow calls are remembered");
        CAREFUL_UNTIL.store(0, Ordering::Relaxed);
    }
}
