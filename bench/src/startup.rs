//! Workload `startup`: what a command costs to start, and `mesh send` end
//! to end, as a shell script pays them.
//!
//! Each case is a process this one starts and waits for, its peak
//! resident memory measured in runs of its own through GNU time: `/bin/true` (what starting any process
//! costs here), `mesh --version`, and `mesh send` of 64 bytes to the
//! `echo` service of a router running as its own process (`mesh up`),
//! answered on standard output. The same commands through `mesh-av`,
//! which links FFmpeg's libraries as the single binary did before the
//! split, are the baseline: what the split bought, in the same run.
//! Cases alternate, one run each per round.
//!
//! Target (issue 17): `mesh send` in under 10 ms.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::{beside, loadavg, mesh_bin, Deployed};
use crate::report::{Row, Target, Unit};
use crate::stats::{median, spread};
use crate::Ctx;

/// Peak resident bytes of one run, as GNU time reports it. Not from
/// this process's `wait4`: a child's peak starts at the RSS of the
/// process it was forked from (the kernel keeps the old one's across
/// exec), which here is this benchmark's; GNU time is a small process.
fn peak(program: &Path, args: &[&str], input: &[u8]) -> anyhow::Result<u64> {
    let mut child = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input)?;
    }
    let out = child.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    let kb: u64 =
        err.lines().last().and_then(|l| l.trim().parse().ok()).ok_or_else(|| anyhow::anyhow!("time said {err:?}"))?;
    Ok(kb * 1024)
}

/// One run's wall time.
fn run_once(program: &Path, args: &[&str], input: &[u8]) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut child =
        Command::new(program).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input)?;
    }
    let mut out = Vec::new();
    if let Some(mut o) = child.stdout.take() {
        std::io::Read::read_to_end(&mut o, &mut out)?;
    }
    let status = child.wait()?;
    let took = t.elapsed();
    anyhow::ensure!(status.success(), "{} {args:?} failed: {status}", program.display());
    anyhow::ensure!(input.is_empty() || out == input, "{} {args:?} answered {out:?}", program.display());
    Ok(took)
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let load_before = loadavg();
    let (mesh, av) = (mesh_bin()?, beside("mesh-av")?);
    let dep = Deployed::line(&["a"], true).await?;
    let router = format!("unix!{}", dep.socket("a").display());
    let ping = [b'x'; 64];
    let send = ["send", "/n/a/svc/echo", "--router", router.as_str()];
    let cases: [(&str, &Path, &[&str], &[u8]); 5] = [
        ("/bin/true", Path::new("/bin/true"), &[], &[]),
        ("mesh --version", &mesh, &["--version"], &[]),
        ("mesh-av --version", &av, &["--version"], &[]),
        ("mesh send, 64 B to echo", &mesh, &send, &ping),
        ("mesh-av send, 64 B to echo", &av, &send, &ping),
    ];
    let runs = if ctx.sizes.rounds > 5 { 40 } else { 10 };
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut rss: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..runs {
        for (i, (_, program, args, input)) in cases.iter().enumerate() {
            wall[i].push(run_once(program, args, input)?.as_secs_f64() * 1e3);
        }
    }
    for _ in 0..3 {
        for (i, (_, program, args, input)) in cases.iter().enumerate() {
            rss[i].push(peak(program, args, input)? as f64);
        }
    }
    let load = format!("load {load_before} before, {} after (1, 5, 15 min)", loadavg());
    let note = |i: usize, j: usize| {
        format!("{}; baseline {}; {load}", spread(&wall[i], Unit::Millis), spread(&wall[j], Unit::Millis))
    };
    let mut rows = Vec::new();
    for (i, j) in [(1, 2), (3, 4)] {
        rows.push(
            Row::new(
                "command start-up, wall p50",
                cases[i].0,
                Unit::Millis,
                median(&wall[i]),
                median(&wall[j]),
                cases[j].0,
            )
            .note(note(i, j)),
        );
        rows.push(Row::new(
            "command start-up, peak RSS",
            cases[i].0,
            Unit::Bytes,
            median(&rss[i]),
            median(&rss[j]),
            cases[j].0,
        ));
    }
    rows.push(
        Row::new(
            "command start-up, wall p50",
            "mesh send, 64 B to echo",
            Unit::Millis,
            median(&wall[3]),
            Some(10.0),
            "10 ms",
        )
        .target(Target::AtMost(1.0))
        .note(format!("starting any process here (/bin/true): {:.2} ms p50", median(&wall[0]).unwrap_or(f64::NAN))),
    );
    Ok(rows)
}
