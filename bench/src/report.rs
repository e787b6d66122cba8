//! Rows, targets and the report: the terminal table and `report.md`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::machine::Machine;

/// What a number measures; says too which way is better.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unit {
    /// Microseconds of latency: lower is better.
    Micros,
    /// Megabytes (10^6) per second: higher is better.
    MBps,
    /// Events per operation (syscalls, sleeps), or rounds: lower is better.
    Count,
    /// Milliseconds: lower is better.
    Millis,
    /// Bytes (of memory or traffic): lower is better.
    Bytes,
    /// Frames per second: higher is better.
    Fps,
    /// I/O operations per second: higher is better.
    Iops,
}

impl Unit {
    pub fn fmt(self, v: f64) -> String {
        match self {
            Unit::Micros => format!("{v:.1} us"),
            Unit::MBps => format!("{v:.0} MB/s"),
            Unit::Count => format!("{v:.2}"),
            Unit::Millis => format!("{v:.1} ms"),
            Unit::Bytes if v >= 10_000.0 => format!("{:.1} KB", v / 1e3),
            Unit::Bytes => format!("{v:.0} B"),
            Unit::Fps => format!("{v:.1} frames/s"),
            Unit::Iops => format!("{v:.0} IOPS"),
        }
    }
}

/// A goal from issue 7, on the ratio mesh / baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// The mesh takes at most this many times the baseline's latency.
    AtMost(f64),
    /// The mesh reaches at least this fraction of the baseline's rate.
    AtLeast(f64),
}

impl Target {
    pub fn met(self, ratio: f64) -> bool {
        match self {
            Target::AtMost(t) => ratio <= t,
            Target::AtLeast(t) => ratio >= t,
        }
    }

    pub fn value(self) -> f64 {
        match self {
            Target::AtMost(t) | Target::AtLeast(t) => t,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::AtMost(t) => write!(f, "<= {t}x"),
            Target::AtLeast(t) => write!(f, ">= {:.0}%", t * 100.0),
        }
    }
}

/// Whether a row met its target.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Status {
    Met,
    Missed,
    /// Measured, but issue 7 sets no target for it.
    Info,
    /// Not measured: the feature does not exist yet or could not run.
    NotAvailable,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Met => "met",
            Status::Missed => "MISSED",
            Status::Info => "-",
            Status::NotAvailable => "n/a",
        }
    }
}

/// One line of the table: the mesh beside its baseline.
#[derive(Clone, Debug)]
pub struct Row {
    /// The workload and metric, e.g. `rpc 64 B p50`.
    pub workload: String,
    /// The mesh variant, e.g. `tcp, 1 hop`.
    pub case: String,
    pub unit: Unit,
    pub mesh: Option<f64>,
    pub baseline: Option<f64>,
    /// What the baseline is, e.g. `raw TCP`.
    pub baseline_name: String,
    pub target: Option<Target>,
    /// Sample sizes, or why a number is missing.
    pub note: String,
}

impl Row {
    pub fn new(
        workload: impl Into<String>,
        case: impl Into<String>,
        unit: Unit,
        mesh: Option<f64>,
        baseline: Option<f64>,
        baseline_name: impl Into<String>,
    ) -> Row {
        Row {
            workload: workload.into(),
            case: case.into(),
            unit,
            mesh,
            baseline,
            baseline_name: baseline_name.into(),
            target: None,
            note: String::new(),
        }
    }

    pub fn target(mut self, t: Target) -> Row {
        self.target = Some(t);
        self
    }

    pub fn note(mut self, n: impl Into<String>) -> Row {
        self.note = n.into();
        self
    }

    /// Mesh over baseline, for latency and throughput alike.
    pub fn ratio(&self) -> Option<f64> {
        match (self.mesh, self.baseline) {
            (Some(m), Some(b)) if b > 0.0 => Some(m / b),
            _ => None,
        }
    }

    pub fn status(&self) -> Status {
        match (self.ratio(), self.target) {
            (None, _) if self.mesh.is_none() => Status::NotAvailable,
            (None, _) => Status::Info,
            (Some(_), None) => Status::Info,
            (Some(r), Some(t)) if t.met(r) => Status::Met,
            (Some(_), Some(_)) => Status::Missed,
        }
    }

    fn cells(&self) -> [String; 7] {
        let num = |v: Option<f64>| v.map(|v| self.unit.fmt(v)).unwrap_or_else(|| "n/a".into());
        [
            self.workload.clone(),
            self.case.clone(),
            num(self.mesh),
            format!("{} ({})", num(self.baseline), self.baseline_name),
            self.ratio().map(|r| format!("{r:.2}x")).unwrap_or_else(|| "n/a".into()),
            self.target.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
            self.status().word().to_string(),
        ]
    }
}

const HEADER: [&str; 7] = ["workload", "mesh case", "mesh", "baseline", "ratio", "target", "status"];

/// Everything one run found.
pub struct Report {
    pub machine: Machine,
    pub quick: bool,
    pub rows: Vec<Row>,
    /// Workloads that failed, with why.
    pub errors: Vec<String>,
    pub elapsed: Duration,
}

impl Report {
    pub fn new(machine: Machine, quick: bool) -> Report {
        Report { machine, quick, rows: Vec::new(), errors: Vec::new(), elapsed: Duration::ZERO }
    }

    /// Rows whose target was missed.
    pub fn missed(&self) -> usize {
        self.rows.iter().filter(|r| r.status() == Status::Missed).count()
    }

    /// The table for a terminal, columns padded.
    pub fn text_table(&self) -> String {
        let cells: Vec<[String; 7]> = self.rows.iter().map(Row::cells).collect();
        let mut width = HEADER.map(str::len);
        for c in &cells {
            for (w, s) in width.iter_mut().zip(c) {
                *w = (*w).max(s.chars().count());
            }
        }
        let line = |c: &[String]| {
            let mut s = String::new();
            for (i, (cell, w)) in c.iter().zip(width).enumerate() {
                // Numbers read best right-aligned.
                if (2..5).contains(&i) {
                    let _ = write!(s, "{cell:>w$}  ");
                } else {
                    let _ = write!(s, "{cell:<w$}  ");
                }
            }
            s.trim_end().to_string() + "\n"
        };
        let mut out = line(&HEADER.map(String::from));
        out += &line(&width.map(|w| "-".repeat(w)));
        for c in &cells {
            out += &line(c);
        }
        out
    }

    /// `report.md`.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# mesh-bench report\n");
        let _ = writeln!(s, "- when: {}", crate::machine::utc_now());
        let _ = writeln!(s, "- machine: `{}`", self.machine.uname);
        let _ = writeln!(s, "- cpu: {}, {} cores available", self.machine.cpu, self.machine.cores);
        let _ = writeln!(
            s,
            "- sizes: {}; took {:.1} s",
            if self.quick { "--quick (checks it works; not for timings)" } else { "default" },
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(s, "- ratio = mesh / baseline, for latency and throughput alike; each mesh case ran beside its baseline in the same run, interleaved by rounds\n");
        let _ = writeln!(s, "| {} | note |", HEADER.join(" | "));
        let _ = writeln!(s, "|{}---|", "---|".repeat(HEADER.len()));
        for r in &self.rows {
            let _ = writeln!(s, "| {} | {} |", r.cells().join(" | "), r.note.replace('|', "/"));
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s, "\n## Errors\n");
            for e in &self.errors {
                let _ = writeln!(s, "- {}", e.replace('\n', " "));
            }
        }
        let _ = writeln!(s, "\n![ratios](chart.svg)");
        s
    }

    /// Writes `report.md` and `chart.svg` into `dir`, made if missing.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let md = dir.join("report.md");
        std::fs::write(&md, self.markdown()).with_context(|| format!("write {}", md.display()))?;
        let svg = dir.join("chart.svg");
        std::fs::write(&svg, crate::chart::svg(&self.rows)).with_context(|| format!("write {}", svg.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_target_direction() {
        let lat = Row::new("rpc", "tcp", Unit::Micros, Some(30.0), Some(20.0), "raw").target(Target::AtMost(1.5));
        assert_eq!(lat.status(), Status::Met);
        let bulk = Row::new("bulk", "tcp", Unit::MBps, Some(500.0), Some(1000.0), "raw").target(Target::AtLeast(0.6));
        assert_eq!(bulk.status(), Status::Missed);
        let na = Row::new("bulk", "encrypted", Unit::MBps, None, Some(1000.0), "raw");
        assert_eq!(na.status(), Status::NotAvailable);
    }
}
