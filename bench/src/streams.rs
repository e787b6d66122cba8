//! Workload `streams`: bulk with routers as they are deployed (issue 17).
//!
//! The line a - b - c of `hops` (each its own `mesh up` process, with
//! Noise and again plaintext); this process is a client of a's router
//! and streams 1 MiB messages into the `sink` service of b (one hop) and
//! c (two hops) for a fixed while, then waits for the sink's count. The
//! baselines stream the same 1 MiB writes over one TCP connection into a
//! sink process of their own (`mesh-bench --serve sink`), directly and
//! through one and two plain relay processes; and, where installed, one
//! `iperf3` stream between two processes, the tool users run today.
//! Every case runs in each of the rounds, interleaved.
//!
//! `MESH_BENCH_CASE=TEXT` runs only the first case whose label holds
//! TEXT, for the phase limit, to profile it (`perf record -p` a router).
//!
//! Targets (issue 17), against the raw stream between two processes:
//! one hop plaintext at least 0.9x, two hops plaintext at least 0.6x.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use ns::client::Client;

use crate::bulk::sink_transfer;
use crate::mesh::addr;
use crate::procs::{loadavg, Deployed, RawServer};
use crate::report::{Row, Target, Unit};
use crate::stats::{median, spread};
use crate::Ctx;

const CHUNK: usize = 1 << 20;

/// One way to stream.
enum Way<'a> {
    Raw(&'a RawServer),
    Mesh(&'a Client, &'static str),
    Iperf(&'a str),
}

/// MB/s of one run of `secs`.
async fn run_once(way: &Way<'_>, chunk: &Bytes, secs: f64) -> anyhow::Result<f64> {
    let limit = Duration::from_secs_f64(secs);
    match way {
        Way::Raw(server) => {
            let mut s = server.connect()?;
            let chunk = chunk.clone();
            let (sent, took) = tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                let mut sent = 0u64;
                while t.elapsed() < limit {
                    s.write_all(&chunk)?;
                    sent += chunk.len() as u64;
                }
                s.shutdown(std::net::Shutdown::Write)?;
                // The sink reads to the end; its close says it has all.
                let _ = std::io::Read::read(&mut s, &mut [0u8; 1]);
                Ok::<_, std::io::Error>((sent, t.elapsed()))
            })
            .await??;
            Ok(sent as f64 / took.as_secs_f64() / 1e6)
        }
        Way::Mesh(client, to) => {
            let conv = client.open(addr(to)?, Vec::new());
            let (sent, took) = sink_transfer(conv, chunk, usize::MAX, limit).await?;
            Ok(sent as f64 / took.as_secs_f64() / 1e6)
        }
        Way::Iperf(server) => {
            let secs = format!("{}", secs.ceil().max(1.0));
            let out = Command::new("iperf3")
                .args(["-c", server, "-p", "5299", "-t", &secs, "-l", "1M", "-J"])
                .stdin(Stdio::null())
                .output()
                .context("iperf3 -c")?;
            let text = String::from_utf8_lossy(&out.stdout);
            // end.sum_received.bits_per_second, without a JSON parser: the
            // last "bits_per_second" of the report is the receiver's sum.
            let bps = text
                .rsplit("\"bits_per_second\":")
                .next()
                .and_then(|r| r.split([',', '}', '\n']).next())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .ok_or_else(|| anyhow!("iperf3 said {}", text.chars().take(300).collect::<String>()))?;
            Ok(bps / 8.0 / 1e6)
        }
    }
}

/// An `iperf3 -s` on 127.0.0.5 for as long as it lives, if installed.
struct Iperf(std::process::Child);

impl Drop for Iperf {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn iperf_server() -> Option<Iperf> {
    let child = Command::new("iperf3")
        .args(["-s", "-B", "127.0.0.5", "-p", "5299"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(300));
    Some(Iperf(child))
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let load_before = loadavg();
    let quick = ctx.sizes.phase_limit < Duration::from_secs(5);
    let (rounds, secs) = if quick { (1, 0.3) } else { (5, 1.5) };
    let raw = RawServer::start("sink", "127.0.0.2")?;
    let relay1 = RawServer::start(&format!("relay={}", raw.addr), "127.0.0.3")?;
    let relay2 = RawServer::start(&format!("relay={}", relay1.addr), "127.0.0.4")?;
    let iperf = iperf_server();
    let sec = Deployed::line(&["a", "b", "c"], false).await?;
    let plain = Deployed::line(&["pa", "pb", "pc"], true).await?;
    let (cs, cp) = (sec.client(0).await?, plain.client(0).await?);
    let mut cases: Vec<(&str, Way)> = vec![
        ("raw TCP stream, two processes", Way::Raw(&raw)),
        ("raw TCP stream, 1 relay process", Way::Raw(&relay1)),
        ("raw TCP stream, 2 relay processes", Way::Raw(&relay2)),
        ("1 hop tcp, plaintext", Way::Mesh(&cp, "/n/pb/svc/sink")),
        ("2 hops tcp, plaintext", Way::Mesh(&cp, "/n/pc/svc/sink")),
        ("1 hop tcp, Noise", Way::Mesh(&cs, "/n/b/svc/sink")),
        ("2 hops tcp, Noise", Way::Mesh(&cs, "/n/c/svc/sink")),
    ];
    if iperf.is_some() {
        cases.push(("iperf3, one stream", Way::Iperf("127.0.0.5")));
    }
    let chunk = Bytes::from(vec![0x5au8; CHUNK]);
    if let Ok(only) = std::env::var("MESH_BENCH_CASE") {
        // Profiling one case: it alone, for the phase limit.
        let c = cases.iter().find(|c| c.0.contains(&only)).ok_or_else(|| anyhow!("no case {only:?}"))?;
        let mbps = run_once(&c.1, &chunk, ctx.sizes.phase_limit.as_secs_f64()).await?;
        eprintln!("{}: {mbps:.0} MB/s", c.0);
        return Ok(Vec::new());
    }
    let mut got: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        for k in 0..cases.len() {
            let i = (k + round) % cases.len();
            let mbps = run_once(&cases[i].1, &chunk, secs).await.with_context(|| cases[i].0.to_string())?;
            got[i].push(mbps);
        }
    }
    let load = format!("load {load_before} before, {} after", loadavg());
    let spread = |v: &[f64]| format!("{}, {secs} s each", spread(v, Unit::MBps));
    let base = median(&got[0]);
    let mut rows = Vec::new();
    for (i, (label, way)) in cases.iter().enumerate() {
        if i == 0 {
            continue;
        }
        let target = match *label {
            "1 hop tcp, plaintext" => Some(Target::AtLeast(0.9)),
            "2 hops tcp, plaintext" => Some(Target::AtLeast(0.6)),
            _ => None,
        };
        let what = match way {
            Way::Raw(_) => "baselines",
            Way::Iperf(_) => "baselines",
            Way::Mesh(..) => "routers as processes, client library",
        };
        let mut row = Row::new(
            "streams 1 MiB messages",
            format!("{label} ({what})"),
            Unit::MBps,
            median(&got[i]),
            base,
            "raw TCP stream between two processes",
        )
        .note(format!("{}; baseline {}; {load}", spread(&got[i]), spread(&got[0])));
        if let Some(t) = target {
            row = row.target(t);
        }
        rows.push(row);
    }
    if iperf.is_none() {
        rows.push(
            Row::new("streams iperf3", "one stream", Unit::MBps, None, None, "iperf3")
                .note("not run: iperf3 not installed (apt-get install iperf3)"),
        );
    }
    drop((sec, plain));
    Ok(rows)
}
