//! When something that ended is started again (`restart`, DESIGN §7): a
//! pipeline, a pty's command. The same rule for each, as systemd's
//! `Restart=` with its rate limit:
//!
//! - `on-failure`: after a failure; `always`: after any end; `never`.
//! - The first restart waits [`BACKOFF_MIN`], each further one in a row
//!   twice as long, up to [`BACKOFF_MAX`].
//! - A run that lasted [`HEALTHY`] was not a failure in a row: the waits
//!   and the count start over.
//! - Past [`GIVE_UP`] runs in a row that ended so, it is left ended.

use std::time::Duration;

use ns::deploy::Restart;

/// The first wait before a restart, and the longest.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run this long was healthy: the waits and the count start over.
pub const HEALTHY: Duration = Duration::from_secs(60);
/// Runs in a row that ended, after which it is left ended.
pub const GIVE_UP: u32 = 10;

/// Whether `policy` starts again what ended, failed or not.
pub fn wanted(policy: Restart, failed: bool) -> bool {
    match policy {
        Restart::Always => true,
        Restart::OnFailure => failed,
        Restart::Never => false,
    }
}

/// The waits of one thing started again and again.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    in_row: u32,
    /// Restarts so far, for its status.
    pub restarts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN, in_row: 0, restarts: 0 }
    }
}

impl Backoff {
    /// A run that lasted `lasted` ended and is to be started again: how
    /// long to wait first, or `None` when it ended [`GIVE_UP`] times in a
    /// row and is to be left ended.
    pub fn ended(&mut self, lasted: Duration) -> Option<Duration> {
        if lasted >= HEALTHY {
            (self.next, self.in_row) = (BACKOFF_MIN, 0);
        }
        self.in_row += 1;
        if self.in_row > GIVE_UP {
            return None;
        }
        Some(self.wait())
    }

    /// A start that could not be made yet (a pipeline's stages not
    /// reachable): wait and try again, never giving up.
    pub fn not_yet(&mut self) -> Duration {
        self.wait()
    }

    fn wait(&mut self) -> Duration {
        let w = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        self.restarts += 1;
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_to_the_cap_and_give_up_after_ten_in_a_row() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(10);
        let waits: Vec<u64> = (0..GIVE_UP).map(|_| b.ended(quick).expect("restarted").as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30, 30, 30]);
        assert_eq!(b.ended(quick), None, "the eleventh in a row");
        assert_eq!(b.restarts, GIVE_UP);
    }

    #[test]
    fn a_healthy_run_starts_the_count_over() {
        let mut b = Backoff::default();
        for _ in 0..GIVE_UP {
            b.ended(Duration::ZERO);
        }
        assert_eq!(b.ended(HEALTHY), Some(BACKOFF_MIN));
        // Waiting for what cannot be reached never gives up.
        for _ in 0..100 {
            assert!(b.not_yet() <= BACKOFF_MAX);
        }
    }

    #[test]
    fn the_policy_says_what_is_started_again() {
        assert!(wanted(Restart::Always, false) && wanted(Restart::OnFailure, true));
        assert!(!wanted(Restart::OnFailure, false) && !wanted(Restart::Never, true));
    }
}
