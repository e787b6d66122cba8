//! Workload `pipeline`: the seed's pipeline on three routers in this
//! process (issue 7, workload 6), against its stages called directly.
//!
//! Machines as in the seed (examples/abc.toml): a -tcp- b -ws- c, links
//! encrypted. The pipeline `pty (a) -> parser (b) -> gpu (c) -> encoder
//! (c) -> display (a)` runs a program on the pty that writes a new
//! screenful every 5 ms ([`input`]) for a fixed time, then exits, which
//! ends the recording. Taps after each stage ([`tap`]) note when each
//! message passed, which gives frames per second and each stage's latency
//! per frame (frames are matched by order: one frame per snapshot, and
//! the MP4's fragments say how many frames each carries). Two runs: the
//! parser paced at 30 snapshots a second, the seed's setting (latency),
//! and at 240, the most it allows, so the rest of the pipeline sets the
//! pace (throughput). Baseline: the same stages' code in a loop in one
//! thread ([`direct`]).

pub mod direct;
pub mod input;
pub mod tap;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use ns::conv::Msg;
use ns::{MachineId, Router};

use crate::mesh::{addr, name, Chain};
use crate::report::{Row, Unit};
use crate::rpc::GRACE;
use crate::stats::Samples;
use crate::Ctx;
use direct::Direct;
use tap::{Fragments, Notes, Stage, Tap};

const SIZE: (u16, u16) = (80, 24);
/// The seed's pace, and the parser's fastest.
const SEED_FPS: u32 = 30;
const MAX_FPS: u32 = srv::parser::MAX_FPS;

/// What one run through the mesh measured.
#[derive(Default)]
struct Run {
    fps: Option<f64>,
    frames: u64,
    /// Frames the display got (from the MP4's fragments).
    shown: u64,
    parser: Samples,
    gpu: Samples,
    encoder: Samples,
    total: Samples,
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let sz = &ctx.sizes;
    let tmp = ctx.tmp.path().to_path_buf();
    // The baseline first, on a quiet machine, then the mesh.
    let (frames, limit, out) = (sz.pipeline_frames, sz.phase_limit * 2, tmp.join("direct.mp4"));
    let direct = tokio::task::spawn_blocking(move || direct::run(frames, limit, &out))
        .await
        .context("direct pipeline thread")??;
    let secs = sz.pipeline_secs;
    let mesh = Mesh::start(&tmp, secs).await?;
    let paced = mesh.run(SEED_FPS, secs).await.context("pipeline at 30 fps")?;
    let unpaced = mesh.run(MAX_FPS, secs).await.context("pipeline at 240 fps")?;
    drop(mesh);
    Ok(rows(&direct, &paced, &unpaced))
}

fn rows(d: &Direct, paced: &Run, unpaced: &Run) -> Vec<Row> {
    let direct_fps = (d.took > Duration::ZERO).then(|| d.frames as f64 / d.took.as_secs_f64());
    let case = "a -> b -> c -> a, 80x24, tcp and ws, encrypted";
    let shown = |r: &Run| format!("{} frames rendered, {} reached the display", r.frames, r.shown);
    let mut rows = vec![
        Row::new(format!("pipeline fps, parser at {SEED_FPS}/s"), case, Unit::Fps, paced.fps, direct_fps.map(|f| f.min(SEED_FPS as f64)), format!("stages called directly, at most {SEED_FPS}/s"))
            .note(format!("{}; the seed's pace: the mesh should keep it", shown(paced))),
        Row::new(format!("pipeline fps, parser at {MAX_FPS}/s"), case, Unit::Fps, unpaced.fps, direct_fps, "stages called directly, one thread").note(format!(
            "{}; as fast as the stages go: the mesh runs them on three routers' threads at once, the baseline one after another; baseline {} frames on {}",
            shown(unpaced),
            d.frames,
            d.device
        )),
    ];
    let ms = |s: &Samples| s.p50().map(|us| us / 1e3);
    let lat = |stage: &str, m: &Samples, b: &Samples, what: &str, note: String| {
        Row::new("pipeline latency p50", stage, Unit::Millis, ms(m), ms(b), what)
            .note(format!("{} frames at {SEED_FPS}/s; {note}", m.len()))
    };
    rows.push(lat(
        "pty -> parser (a -> b)",
        &paced.parser,
        &d.parse,
        "parse + snapshot, direct",
        format!("from the output leaving the pty to its snapshot leaving the parser, which merges output for up to 1/{SEED_FPS} s"),
    ));
    rows.push(lat(
        "parser -> gpu (b -> c)",
        &paced.gpu,
        &d.render,
        "render, direct",
        "from snapshot to frame, lavapipe".into(),
    ));
    rows.push(lat(
        "gpu -> encoder -> display (c -> b -> a)",
        &paced.encoder,
        &d.to_file,
        "encode until the fragment is out, direct",
        format!(
            "from frame to its MP4 fragment at the display: fragments are cut at keyframes or 200 ms after their first frame; the encoder call alone: {:.1} ms direct",
            ms(&d.encode).unwrap_or(0.0)
        ),
    ));
    rows.push(lat("pty output -> display", &paced.total, &d.total, "all stages, direct", "end to end".into()));
    rows
}

/// Three routers with the pipeline's services and taps.
struct Mesh {
    chain: Chain,
    notes: Arc<Notes>,
    display_out: std::path::PathBuf,
}

impl Mesh {
    async fn start(tmp: &std::path::Path, secs: f64) -> anyhow::Result<Mesh> {
        let nodes = [
            ("a", "tcp!127.0.0.1!0".to_string()),
            ("b", "tcp!127.0.0.2!0".to_string()),
            ("c", "ws!127.0.0.3!0".to_string()),
        ];
        let chain = Chain::new_secure(&nodes).await?;
        let notes = Arc::new(Notes::default());
        let tap = |stage| Arc::new(Tap { stage, notes: notes.clone() });
        let (a, b, c) = (chain.router(0)?, chain.router(1)?, chain.router(2)?);
        let display_out = tmp.join("mesh.mp4");
        a.add_service(name("pty")?, Arc::new(srv::pty::PtyService::new(input::command(secs), SIZE)?));
        a.add_service(name("display")?, Arc::new(mesh_video::DisplayService::new(display_out.clone())));
        a.add_service(name("tap-pty")?, tap(Stage::Pty));
        a.add_service(name("tap-display")?, tap(Stage::Encoder));
        for fps in [SEED_FPS, MAX_FPS] {
            b.add_service(name(&format!("parser-{fps}"))?, Arc::new(srv::parser::ParserService::new(SIZE, fps)?));
        }
        b.add_service(name("tap-parser")?, tap(Stage::Parser));
        let gpu = tokio::task::spawn_blocking(mesh_gpu::GpuService::new).await.context("gpu thread")??;
        c.add_service(name("gpu")?, Arc::new(gpu));
        c.add_service(name("tap-gpu")?, tap(Stage::Gpu));
        c.add_service(
            name("mp4-encoder")?,
            Arc::new(mesh_video::EncoderService::new(mesh_video::EncoderSettings::default())),
        );
        Ok(Mesh { chain, notes, display_out })
    }

    /// Runs the pipeline once with the parser at `fps`, the pty's program
    /// writing for `secs` seconds.
    async fn run(&self, fps: u32, secs: f64) -> anyhow::Result<Run> {
        let a = self.chain.head();
        let parser = format!("parser-{fps}");
        let need = [
            ("a", vec!["pty", "tap-pty", "display", "tap-display"]),
            ("b", vec!["tap-parser", &parser]),
            ("c", vec!["gpu", "tap-gpu", "mp4-encoder"]),
        ];
        wait_services(a, &need).await?;
        let stages = [
            "/n/a/svc/tap-pty".to_string(),
            format!("/n/b/svc/parser-{fps}"),
            "/n/b/svc/tap-parser".into(),
            "/n/c/svc/gpu".into(),
            "/n/c/svc/tap-gpu".into(),
            "/n/c/svc/mp4-encoder".into(),
            "/n/a/svc/tap-display".into(),
            "/n/a/svc/display".into(),
        ];
        let rest = stages.iter().map(|s| addr(s)).collect::<anyhow::Result<Vec<_>>>()?;
        self.notes.take();
        let mut conv = a.open(addr("/n/a/svc/pty")?, rest);
        // The first message starts the pty's program.
        conv.tx.send(Bytes::new()).await.map_err(|e| anyhow!("starting the pty: {e}"))?;
        // The program's exit ends the pty's output; the end travels down
        // the stages, and the display's end comes back here.
        let limit = Duration::from_secs_f64(secs) + GRACE * 4;
        let ended = tokio::time::timeout(limit, async {
            loop {
                match conv.rx.recv().await {
                    Some(Msg::Data(_)) => {}
                    Some(Msg::Eof) | None => return Ok(()),
                    Some(Msg::Error(e)) => return Err(anyhow!("the pipeline failed: {e}")),
                }
            }
        })
        .await;
        drop(conv);
        match ended {
            Err(_) => bail!("the pipeline did not end within {limit:?}"),
            Ok(r) => r?,
        }
        if !self.display_out.exists() {
            bail!("the display wrote no {}", self.display_out.display());
        }
        Ok(analyse(self.notes.take()))
    }
}

/// Waits until `a` routes to every service the run needs.
async fn wait_services(a: &Router, need: &[(&str, Vec<&str>)]) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = need.iter().all(|(m, svcs)| {
            let Ok(m) = m.parse::<MachineId>() else { return false };
            a.table().best(&m).is_some_and(|r| svcs.iter().all(|s| r.services.iter().any(|x| x.as_str() == *s)))
        });
        if ok {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("the pipeline's services are not all routable from a:\n{}", a.routes());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Frames per second and per-stage latencies from what the taps noted.
fn analyse(notes: Vec<(Stage, Instant, Bytes)>) -> Run {
    let at = |s: Stage| notes.iter().filter(move |(st, _, _)| *st == s);
    let first_output = at(Stage::Pty).map(|(_, t, _)| *t).next();
    // Each snapshot: when it left the parser, and when the newest output
    // it shows left the pty (its pts counts from the parser's first input,
    // which is the pty's first output plus one hop).
    let snaps: Vec<(Instant, Option<Instant>)> = at(Stage::Parser)
        .map(|(_, t, b)| {
            let pts = mesh_frame::decode::<mesh_frame::Snapshot>(b).ok().map(|s| s.pts_us);
            (*t, first_output.zip(pts).map(|(f, p)| f + Duration::from_micros(p)))
        })
        .collect();
    let frames: Vec<Instant> = at(Stage::Gpu).map(|(_, t, _)| *t).collect();
    // When each frame reached the display: the fragment that carried it.
    let mut shown: Vec<Instant> = Vec::new();
    let mut frags = Fragments::default();
    for (_, t, b) in at(Stage::Encoder) {
        for _ in 0..frags.push(b) {
            shown.push(*t);
        }
    }
    let mut r = Run { frames: frames.len() as u64, shown: shown.len() as u64, ..Run::default() };
    if let (Some(first), Some(last)) = (frames.first(), frames.last()) {
        let span = last.duration_since(*first).as_secs_f64();
        r.fps = (frames.len() > 1 && span > 0.0).then(|| (frames.len() - 1) as f64 / span);
    }
    for (k, (parsed, output)) in snaps.iter().enumerate() {
        if let Some(o) = output {
            r.parser.push(parsed.saturating_duration_since(*o));
        }
        let Some(rendered) = frames.get(k) else { continue };
        r.gpu.push(rendered.saturating_duration_since(*parsed));
        let Some(displayed) = shown.get(k) else { continue };
        r.encoder.push(displayed.saturating_duration_since(*rendered));
        if let Some(o) = output {
            r.total.push(displayed.saturating_duration_since(*o));
        }
    }
    r
}
