//! `mesh-bench`: runs the workloads beside their baselines, prints the
//! table, writes `report.md` and `chart.svg`.
//!
//! Exit status: 0 when every workload ran (missed targets included: CI
//! runs `--quick` to see that it works, not to judge timings on a shared
//! machine), 1 when one failed, or with `--strict` when a target was
//! missed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// The allocator the `mesh` binary uses, so the routers measured here
/// behave as deployed ones do; the baselines share it.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mesh-bench",
    about = "Benchmark the mesh against raw TCP, null FUSE, tmpfs, sshfs and direct-call baselines"
)]
struct Args {
    /// Small sizes, well under a minute: checks that it works, not for timings.
    #[arg(long)]
    quick: bool,
    /// Run only these workloads (comma-separated): rpc, hops, bulk, streams, fuse, tree, remote-fs, discovery, pipeline, startup; breakdown runs only when named.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where report.md and chart.svg go.
    #[arg(long, default_value = "target/bench-report")]
    out: PathBuf,
    /// Routers in the discovery workload (default 1000, 100 with --quick;
    /// its baseline runs a quarter as many).
    #[arg(long)]
    routers: Option<usize>,
    /// Exit non-zero when a target is missed.
    #[arg(long)]
    strict: bool,
    /// Be the far end of a raw TCP baseline instead (echo or sink), as a
    /// process of its own; the workloads start it.
    #[arg(long, hide = true)]
    serve: Option<String>,
    /// The address --serve listens on.
    #[arg(long, hide = true, default_value = "127.0.0.1")]
    listen: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(mode) = &args.serve {
        return match mesh_bench::procs::serve(mode, &args.listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mesh-bench --serve: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // Router warnings (links going down at shutdown) are noise here;
    // RUST_LOG brings them back when something needs looking into.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mesh-bench: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts =
        mesh_bench::Opts { quick: args.quick, only: args.only, out_dir: args.out.clone(), routers: args.routers };
    // On a worker thread, as a program's tasks run: `block_on` would
    // measure every wake-up of the calling task as a cross-thread one.
    let res = rt.block_on(async {
        tokio::spawn(mesh_bench::run(opts)).await.unwrap_or_else(|e| Err(anyhow::anyhow!("bench task: {e}")))
    });
    // A blocking thread stuck in a FUSE call must not hold the exit.
    rt.shutdown_timeout(Duration::from_secs(5));
    let report = match res {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mesh-bench: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.text_table());
    println!();
    println!("{} on {}, {} cores", report.machine.cpu, report.machine.uname, report.machine.cores);
    println!("wrote {0}/report.md and {0}/chart.svg in {1:.1} s", args.out.display(), report.elapsed.as_secs_f64());
    for e in &report.errors {
        println!("error: {e}");
    }
    let missed = report.missed();
    if missed > 0 {
        println!("{missed} target(s) missed");
    }
    if !report.errors.is_empty() || (args.strict && missed > 0) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
