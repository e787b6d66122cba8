//! mesh-bench: the mesh measured beside its baselines, in one run.
//!
//! Each workload runs the mesh and the thing it is compared with (raw
//! TCP, a null FUSE file system, a tmpfs file, sshfs, the stages called
//! directly) in the same run, interleaved round by round so that drift in the machine (CPU
//! frequency, other load) touches both alike. Every row of the [`Report`]
//! holds the mesh number, the baseline number, their ratio and, where
//! issue 7 sets one, the target and whether it was met.
//!
//! Workloads (see [`WORKLOADS`]; add one by writing a function of the
//! same shape and listing it there):
//!
//! - `rpc`: 64-byte request/reply latency, p50 and p99, over 1 and 2 tcp
//!   hops and 1 hop on unix and mem, against a raw TCP ping-pong.
//! - `startup`: `mesh --version` and `mesh send` as processes, beside
//!   `mesh-av` (which links FFmpeg) and `/bin/true`.
//! - `hops`: the same round trip with routers as separate processes, as
//!   deployed, through the router's client library, to a service 0, 1
//!   and 2 hops away, against a raw TCP ping-pong between two processes;
//!   what a further hop adds.
//! - `bulk`: 64 KiB and 1 MiB messages a -> b -> c into a sink, MB/s,
//!   against one raw TCP stream carrying the same bytes.
//! - `streams`: 1 MiB messages into a sink 1 and 2 hops away with routers
//!   as processes, against a raw TCP stream between two processes, through
//!   one and two relay processes, and one iperf3 stream.
//! - `fuse`: a 64-byte write-then-read on a mounted `svc/echo/data`
//!   against a null FUSE file system; 1 MiB writes into `svc/sink`
//!   against a file in /dev/shm (and, for reference, the null FUSE file).
//! - `tree`: a 256 MiB file of machine b's `dir` service read through a's
//!   mount (`n/b/svc/files/root/big`), links encrypted and plaintext,
//!   against the same file through sshfs from an sshd the bench starts on
//!   loopback (rows say "baseline not available" without sshfs or sshd).
//! - `remote-fs`: fio, `git add` + `commit`, `tar x` and `rm -rf` on a
//!   directory of machine b through a's mount, against sshfs and a local
//!   directory in the same run.
//! - `discovery`: 1,000 routers on mem in a random graph of degree 4, on
//!   a paused clock: rounds and wall time to converge against diameter +
//!   2, idle traffic per router (against 250 routers: it must not grow),
//!   memory per route, and the withdrawal of one router.
//! - `pipeline`: the seed's pipeline (pty -> parser -> gpu -> encoder ->
//!   display) on three routers, frames per second and per-stage latency,
//!   against its stages' code called directly in one thread.
//!
//! - `breakdown` (only when named with `--only`): ladders that add one
//!   layer of the mesh at a time to the baseline, to show where the time
//!   goes without a profiler.
//!
//! Modules: [`stats`] (percentiles, resident memory), [`mesh`] (routers
//! and the echo and sink services), [`procs`] (routers and the raw
//! baselines' far end as processes), [`raw`] (the TCP baselines), [`rpc`], [`hops`],
//! [`bulk`], [`nullfs`] and [`files`], [`tree`], [`remotefs`], [`discovery`],
//! [`pipeline`], [`breakdown`] (the workloads), [`report`] (tables,
//! Markdown) and [`chart`] (SVG), [`machine`] (what ran it).
//!
//! Every loop is bounded by a count and by a deadline, so a stuck mesh
//! shows up as an error or a short sample, never as a hang.

pub mod breakdown;
pub mod bulk;
pub mod chart;
pub mod discovery;
pub mod files;
pub mod hops;
pub mod machine;
pub mod mesh;
pub mod nullfs;
pub mod pipeline;
pub mod procs;
pub mod raw;
pub mod remotefs;
pub mod report;
pub mod rpc;
pub mod startup;
pub mod stats;
pub mod streams;
pub mod tree;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

pub use report::{Report, Row, Status, Target, Unit};

/// What to run and how big.
#[derive(Clone, Debug)]
pub struct Opts {
    /// Small sizes: checks that everything works, in well under a minute.
    pub quick: bool,
    /// Workloads to run by name; empty means every default one.
    pub only: Vec<String>,
    /// Where `report.md` and `chart.svg` go.
    pub out_dir: PathBuf,
    /// Routers in the discovery mesh, instead of the size's default.
    pub routers: Option<usize>,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts { quick: false, only: Vec::new(), out_dir: PathBuf::from("target/bench-report"), routers: None }
    }
}

/// How much each workload does, from [`Opts::quick`].
#[derive(Clone, Debug)]
pub struct Sizes {
    /// Rounds each pair (mesh, baseline) alternates over.
    pub rounds: usize,
    /// Round trips per variant per round.
    pub rpc_iters: usize,
    /// Round trips thrown away before measuring each variant.
    pub warmup: usize,
    /// Bytes per bulk transfer (one transfer per variant per round).
    pub bulk_bytes: usize,
    /// 64-byte round trips through FUSE per variant per round.
    pub fuse_iters: usize,
    /// Bytes written through FUSE per variant per round.
    pub fuse_bytes: usize,
    /// The longest one measured loop may run; it stops early after that.
    pub phase_limit: Duration,
    /// Bytes of the file the tree workload reads.
    pub tree_bytes: usize,
    /// Timed reads of it per path.
    pub tree_rounds: usize,
    /// Seconds of terminal output per run of the pipeline through the mesh.
    pub pipeline_secs: f64,
    /// Frames of the pipeline's direct baseline.
    pub pipeline_frames: u64,
    /// Routers in the discovery mesh (a quarter as many for its baseline).
    pub discovery_routers: usize,
    /// Wall-clock budget of one discovery simulation.
    pub discovery_limit: Duration,
}

impl Sizes {
    pub fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                rounds: 2,
                rpc_iters: 500,
                warmup: 200,
                bulk_bytes: 16 << 20,
                fuse_iters: 300,
                fuse_bytes: 16 << 20,
                phase_limit: Duration::from_secs(2),
                tree_bytes: 32 << 20,
                tree_rounds: 1,
                pipeline_secs: 2.0,
                pipeline_frames: 40,
                discovery_routers: 100,
                discovery_limit: Duration::from_secs(20),
            }
        } else {
            // About a minute in all on two cores: 40 000 round trips per
            // RPC case, 2.5 GiB per bulk case, so p99 and MB/s settle.
            Sizes {
                rounds: 10,
                rpc_iters: 4000,
                warmup: 2000,
                bulk_bytes: 256 << 20,
                fuse_iters: 3000,
                fuse_bytes: 256 << 20,
                phase_limit: Duration::from_secs(10),
                tree_bytes: 256 << 20,
                tree_rounds: 3,
                pipeline_secs: 8.0,
                pipeline_frames: 300,
                discovery_routers: 1000,
                discovery_limit: Duration::from_secs(240),
            }
        }
    }
}

/// What every workload gets.
pub struct Ctx {
    pub sizes: Sizes,
    /// A private directory for sockets and mount points, removed at the end.
    pub tmp: tempfile::TempDir,
}

/// A workload: measures the mesh and its baselines, returns table rows.
pub type Workload = for<'a> fn(&'a Ctx) -> BoxFuture<'a, anyhow::Result<Vec<Row>>>;

/// Every workload, in the order they run: name, whether it runs when
/// none is named, and the function.
pub const WORKLOADS: &[(&str, bool, Workload)] = &[
    ("rpc", true, |c| Box::pin(rpc::run(c))),
    ("hops", true, |c| Box::pin(hops::run(c))),
    ("bulk", true, |c| Box::pin(bulk::run(c))),
    ("streams", true, |c| Box::pin(streams::run(c))),
    ("fuse", true, |c| Box::pin(files::run(c))),
    ("tree", true, |c| Box::pin(tree::run(c))),
    ("remote-fs", true, |c| Box::pin(remotefs::run(c))),
    ("discovery", true, |c| Box::pin(discovery::run(c))),
    ("pipeline", true, |c| Box::pin(pipeline::run(c))),
    ("startup", true, |c| Box::pin(startup::run(c))),
    ("breakdown", false, |c| Box::pin(breakdown::run(c))),
];

/// Runs the selected workloads and writes the report files.
///
/// A workload that fails is recorded in [`Report::errors`] and the others
/// still run; the caller decides what a failure means (the binary exits
/// non-zero).
pub async fn run(opts: Opts) -> anyhow::Result<Report> {
    for name in &opts.only {
        if !WORKLOADS.iter().any(|(n, _, _)| n == name) {
            let known: Vec<&str> = WORKLOADS.iter().map(|(n, _, _)| *n).collect();
            anyhow::bail!("no workload {name:?}; there are: {}", known.join(", "));
        }
    }
    let started = Instant::now();
    let mut sizes = Sizes::new(opts.quick);
    if let Some(n) = opts.routers {
        sizes.discovery_routers = n;
    }
    let ctx = Ctx { sizes, tmp: tempfile::Builder::new().prefix("mesh-bench-").tempdir()? };
    let mut report = Report::new(machine::Machine::detect(), opts.quick);
    for (name, default, w) in WORKLOADS {
        let chosen = if opts.only.is_empty() { *default } else { opts.only.iter().any(|o| o == name) };
        if !chosen {
            continue;
        }
        eprintln!("mesh-bench: {name}...");
        let t = Instant::now();
        match w(&ctx).await {
            Ok(rows) => report.rows.extend(rows),
            Err(e) => {
                eprintln!("mesh-bench: {name} failed: {e:#}");
                report.errors.push(format!("{name}: {e:#}"));
            }
        }
        eprintln!("mesh-bench: {name} took {:.1} s", t.elapsed().as_secs_f64());
    }
    report.elapsed = started.elapsed();
    report.write(&opts.out_dir)?;
    Ok(report)
}
