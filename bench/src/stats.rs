//! Latency samples and throughput, kept as plain vectors.
//!
//! A run takes at most some hundred thousand samples, so sorting a vector
//! is exact and cheap; no histogram approximation is needed.

use std::time::Duration;

use crate::report::Unit;

/// Latencies in nanoseconds.
#[derive(Default, Clone, Debug)]
pub struct Samples(Vec<u64>);

impl Samples {
    pub fn with_capacity(n: usize) -> Samples {
        Samples(Vec::with_capacity(n))
    }

    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_nanos().min(u64::MAX as u128) as u64);
    }

    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `p`th percentile (0..=100) in microseconds, nearest rank;
    /// `None` without samples.
    pub fn percentile_us(&self, p: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        let i = rank.clamp(1, v.len()) - 1;
        Some(v[i] as f64 / 1000.0)
    }

    pub fn p50(&self) -> Option<f64> {
        self.percentile_us(50.0)
    }

    pub fn p99(&self) -> Option<f64> {
        self.percentile_us(99.0)
    }
}

/// Megabytes (10^6 bytes) per second.
pub fn mb_per_s(bytes: u64, took: Duration) -> Option<f64> {
    let s = took.as_secs_f64();
    (s > 0.0 && bytes > 0).then(|| bytes as f64 / 1e6 / s)
}

/// What the whole process spent: CPU time, and voluntary context
/// switches (a thread going to sleep: mostly a worker parking until some
/// task wakes it, or waiting in epoll). Differences of two snapshots
/// around a measured loop say where its time went without a profiler;
/// every thread of the process counts, so take them as an upper bound.
///
/// (Syscall counts from /proc/self/io are left out on purpose: they count
/// read(2) and write(2) but not recv(2) and send(2), so tokio's sockets
/// and the mesh's framed links would not compare.)
#[derive(Default, Clone, Copy, Debug)]
pub struct Usage {
    pub cpu: Duration,
    pub switches: u64,
    /// Minor page faults: fresh memory being touched, e.g. a new buffer
    /// for every large frame instead of one reused.
    pub faults: u64,
}

impl Usage {
    /// Now; zero if it cannot be read.
    pub fn now() -> Usage {
        // SAFETY: getrusage only writes into the zeroed struct we own.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
            return Usage::default();
        }
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        Usage {
            cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
            switches: ru.ru_nvcsw.max(0) as u64,
            faults: ru.ru_minflt.max(0) as u64,
        }
    }

    /// What was spent since `before`.
    pub fn since(before: Usage) -> Usage {
        let now = Usage::now();
        Usage {
            cpu: now.cpu.saturating_sub(before.cpu),
            switches: now.switches.saturating_sub(before.switches),
            faults: now.faults.saturating_sub(before.faults),
        }
    }

    pub fn add(&mut self, o: Usage) {
        self.cpu += o.cpu;
        self.switches += o.switches;
        self.faults += o.faults;
    }

    /// Per operation, for a note: `CPU 12.3 us, 1.50 sleeps, 0.0 faults per op`.
    pub fn per_op(&self, ops: u64) -> String {
        if ops == 0 {
            return String::new();
        }
        let n = ops as f64;
        format!(
            "CPU {:.1} us, {:.2} sleeps, {:.1} faults per op",
            self.cpu.as_secs_f64() * 1e6 / n,
            self.switches as f64 / n,
            self.faults as f64 / n
        )
    }
}

/// This process's resident memory in bytes (from /proc/self/statm); 0
/// where it cannot be read.
pub fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()));
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages.map(|p| p * page.max(1) as u64).unwrap_or(0)
}

/// A byte count and the time it took, summed over rounds.
#[derive(Default, Clone, Copy, Debug)]
pub struct Transfer {
    pub bytes: u64,
    pub took: Duration,
    /// What the process spent meanwhile.
    pub usage: Usage,
}

impl Transfer {
    pub fn add(&mut self, bytes: u64, took: Duration) {
        self.bytes += bytes;
        self.took += took;
    }

    /// CPU microseconds the process spent per MiB moved.
    pub fn cpu_us_per_mib(&self) -> Option<f64> {
        (self.bytes > 0).then(|| self.usage.cpu.as_secs_f64() * 1e6 / (self.bytes as f64 / (1 << 20) as f64))
    }

    pub fn mb_per_s(&self) -> Option<f64> {
        mb_per_s(self.bytes, self.took)
    }
}

/// The middle of `v` (the upper one of an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// How many runs `v` holds and their range, in `unit`.
pub fn spread(v: &[f64], unit: Unit) -> String {
    let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    if v.is_empty() {
        return "no runs".into();
    }
    format!("{} runs, {}..{}", v.len(), unit.fmt(lo), unit.fmt(hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut s = Samples::default();
        for i in 1..=100 {
            s.push(Duration::from_micros(i));
        }
        assert_eq!(s.p50(), Some(50.0));
        assert_eq!(s.p99(), Some(99.0));
        assert_eq!(s.percentile_us(100.0), Some(100.0));
        assert_eq!(Samples::default().p50(), None);
    }

    #[test]
    fn throughput() {
        assert_eq!(mb_per_s(2_000_000, Duration::from_secs(1)), Some(2.0));
        assert_eq!(mb_per_s(0, Duration::from_secs(1)), None);
    }
}
