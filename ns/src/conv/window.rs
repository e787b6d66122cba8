//! How far one writer may run ahead of its reader: a window that starts at
//! [`WINDOW`] and grows with the bandwidth-delay product of the path, as
//! TCP's receive autotuning does, so that one conversation over a 50 ms
//! path is not held to 4 MiB per 50 ms.
//!
//! The reader decides, from what it sees: each time it has taken a whole
//! window from a writer, it looks at that round, if it waited for input
//! in it (the path, not the reader, was the bottleneck), and may double
//! the window, granting the writer the difference as extra credit. The
//! first round is a burst (the writer sent its whole first window at
//! once), so it says nothing of the path and is passed over. The first
//! growth is given to learn whether a larger window pays; from then on
//! the window doubles when a round went faster than the round before the
//! last growth by a tenth or more. The round after a growth is not judged
//! (it is still half in the old window); two judged rounds in a row that
//! did not pay (the link itself is the limit, where a larger window would
//! only queue on it, delaying every other conversation on the link) end
//! the growing for this writer: such a path keeps twice its first window. A window never passes [`MAX_WINDOW`], and what
//! all the grown windows of a router add above [`WINDOW`] never passes
//! [`BUDGET`]: a reader that then stops reading holds at most that much
//! in its input queue. The growth goes back to the budget when the reader
//! is gone. Nothing shrinks a window while its conversation lives.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::WINDOW;

/// The most one window grows to.
pub const MAX_WINDOW: u32 = 64 << 20;
/// What all of a router's windows may add above [`WINDOW`] together.
pub const BUDGET: u64 = 256 << 20;
/// How much faster a round must go after a growth for growing to go on.
const PAYS: f64 = 1.1;
/// Judged rounds in a row that did not pay, to stop growing.
const STRIKES: u32 = 2;
/// Growths given without judging.
const UNASKED: u32 = 1;

/// The bytes of growth a router has left to give.
#[derive(Debug)]
pub struct Budget(AtomicU64);

impl Default for Budget {
    fn default() -> Self {
        Budget(AtomicU64::new(BUDGET))
    }
}

impl Budget {
    /// Takes `n` bytes of growth, if that many are left.
    fn take(&self, n: u64) -> bool {
        self.0.fetch_update(Relaxed, Relaxed, |left| left.checked_sub(n)).is_ok()
    }

    /// Gives back growth no longer used.
    pub fn give(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// What is left.
    pub fn left(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One writer's window, as its reader sees it.
#[derive(Debug)]
pub struct Window {
    size: u32,
    /// Taken in this round, and when the round began.
    taken: u32,
    began: Instant,
    /// The reader waited for input in this round.
    waited: bool,
    /// Rounds so far.
    rounds: u32,
    /// Growths so far.
    growths: u32,
    /// The rate of the round before the last growth, bytes a second.
    before: f64,
    /// The next round is the one after a growth: not judged.
    skip: bool,
    /// Judged rounds in a row that did not pay.
    strikes: u32,
    /// A growth did not pay: no more.
    settled: bool,
}

impl Window {
    pub fn new(now: Instant) -> Window {
        Window {
            size: WINDOW,
            taken: 0,
            began: now,
            waited: false,
            rounds: 0,
            growths: 0,
            before: 0.0,
            skip: false,
            strikes: 0,
            settled: false,
        }
    }

    /// Its size now.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// What it has grown above [`WINDOW`], taken from the budget.
    pub fn grown(&self) -> u64 {
        u64::from(self.size - WINDOW)
    }

    /// The reader took `cost` bytes of credit's worth at `now`, having
    /// waited for input before it if `waited`: the extra credit to grant
    /// the writer (the window grown by as much), or 0.
    pub fn took(&mut self, cost: u32, waited: bool, now: Instant, budget: &Budget) -> u32 {
        self.waited |= waited;
        self.taken = self.taken.saturating_add(cost);
        if self.taken < self.size {
            return 0;
        }
        let secs = now.saturating_duration_since(self.began).max(Duration::from_micros(1)).as_secs_f64();
        let rate = f64::from(self.taken) / secs;
        let waited = self.waited;
        (self.taken, self.began, self.waited) = (0, now, false);
        self.rounds += 1;
        if self.settled || !waited || self.size >= MAX_WINDOW || self.rounds == 1 {
            return 0;
        }
        if std::mem::take(&mut self.skip) {
            return 0;
        }
        if self.growths >= UNASKED && rate < self.before * PAYS {
            self.strikes += 1;
            self.settled = self.strikes >= STRIKES;
            return 0;
        }
        let add = self.size.min(MAX_WINDOW - self.size);
        if !budget.take(u64::from(add)) {
            return 0;
        }
        (self.before, self.skip, self.strikes) = (rate, true, 0);
        self.growths += 1;
        self.size += add;
        add
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u32 = 1 << 20;

    /// Rounds of a whole window each, every `round(size)` long, the
    /// reader waiting in each: the sizes the window goes through.
    fn run(w: &mut Window, budget: &Budget, rounds: usize, round: impl Fn(u32) -> Duration) -> Vec<u32> {
        let mut now = Instant::now();
        let mut sizes = vec![w.size()];
        for _ in 0..rounds {
            let size = w.size();
            let step = round(size) / (size / MB);
            let mut granted = 0;
            for _ in 0..size / MB {
                now += step;
                granted += w.took(MB, true, now, budget);
            }
            assert_eq!(w.size(), size + granted);
            sizes.push(w.size());
        }
        sizes
    }

    #[test]
    fn a_window_bound_path_doubles_it_to_the_cap() {
        // 50 ms a round whatever the window: the delay is the limit.
        let b = Budget::default();
        let mut w = Window::new(Instant::now());
        let sizes = run(&mut w, &b, 10, |_| Duration::from_millis(50));
        assert_eq!(sizes, [4, 4, 8, 8, 16, 16, 32, 32, 64, 64, 64].map(|m| m * MB));
        assert_eq!(b.left(), BUDGET - u64::from(60 * MB));
    }

    #[test]
    fn a_link_bound_path_keeps_twice_its_first_window() {
        // 100 MB/s whatever the window: the link is the limit.
        let b = Budget::default();
        let mut w = Window::new(Instant::now());
        let sizes = run(&mut w, &b, 8, |size| Duration::from_secs_f64(f64::from(size) / 100e6));
        assert_eq!(sizes, [4, 4, 8, 8, 8, 8, 8, 8, 8].map(|m| m * MB));
    }

    #[test]
    fn a_burst_and_the_round_after_a_growth_are_not_judged() {
        let b = Budget::default();
        let mut now = Instant::now();
        let mut w = Window::new(now);
        // A whole window taken in `ms`: what was granted.
        let mut round = |w: &mut Window, ms: u64| {
            let size = w.size();
            now += Duration::from_millis(ms);
            w.took(size, true, now, &b)
        };
        // The first window came in a burst: passed over.
        assert_eq!(round(&mut w, 5), 0);
        // 4 MiB in 50 ms: the first growth, to learn.
        assert_eq!(round(&mut w, 50), 4 * MB);
        assert_eq!(round(&mut w, 95), 0, "the round after a growth is not judged");
        // 8 MiB in 50 ms, twice as fast: grown.
        assert_eq!(round(&mut w, 50), 8 * MB);
        assert_eq!(round(&mut w, 200), 0, "not judged");
        // Two rounds in a row no faster: settled.
        assert_eq!(round(&mut w, 200), 0);
        assert_eq!(round(&mut w, 200), 0);
        assert_eq!(round(&mut w, 10), 0, "settled for good");
        assert_eq!(w.size(), 16 * MB);
    }

    #[test]
    fn a_reader_that_never_waits_does_not_grow_it() {
        let b = Budget::default();
        let mut w = Window::new(Instant::now());
        let mut now = Instant::now();
        for _ in 0..100 {
            now += Duration::from_millis(10);
            assert_eq!(w.took(MB, false, now, &b), 0);
        }
        assert_eq!(w.size(), WINDOW);
    }

    #[test]
    fn the_budget_bounds_all_windows_together() {
        let b = Budget::default();
        let mut grown = 0;
        for _ in 0..20 {
            let mut w = Window::new(Instant::now());
            run(&mut w, &b, 10, |_| Duration::from_millis(50));
            grown += w.grown();
        }
        assert_eq!(grown, BUDGET - b.left());
        assert!(b.left() < u64::from(4 * MB), "{} left", b.left());
    }
}
