//! `mesh demo`: the seed's scenario end to end on one host.
//!
//! It starts the built-in three machines (examples/abc.toml) in this
//! process, starts the `record` pipeline on a (pty on a, parser on b, gpu
//! and mp4-encoder on c, display back on a), waits for the shell's prompt,
//! types a short scripted session into the pty, and waits for the
//! recording to end: the shell's exit ends the pty's output, which ends
//! each stage in turn, down to the display closing the MP4.
//!
//! The prompt is seen through [`tap`], a pass-through stage after the pty;
//! keystrokes sent before it would be echoed ahead of the prompt.
//! [`record`] runs the same with any deployment that has a `record`
//! pipeline, and any script (the tests use their own addresses).

mod tap;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use ns::deploy::{Deployment, ServiceKind};
use ns::Addr;
use tokio_util::sync::CancellationToken;

use crate::up::{self, Options};

pub use tap::SETTLE;

/// What the demo types, one line at a time, and how long it then waits.
const SCRIPT: &[(&str, u64)] = &[
    ("PS1='\\[\\e[1;32m\\]you@a\\[\\e[0m\\]:\\[\\e[1;34m\\]\\w\\[\\e[0m\\]\\$ '; clear", 300),
    ("echo 'a terminal on machine a, parsed on b, rendered on c, shown on a'", 500),
    ("printf '\\e[31mred \\e[32mgreen \\e[33myellow \\e[34mblue \\e[35mmagenta \\e[36mcyan\\e[0m\\n'", 600),
    ("for i in 1 2 3 4 5 6; do printf '\\e[4%sm %-*s\\e[0m %s\\n' $i $((i*6)) '' $i; done", 700),
    ("printf '\\e[1mbold\\e[0m \\e[4munderline\\e[0m \\e[7minverse\\e[0m \\e[3mitalic\\e[0m\\n'", 600),
    ("seq 1 8 | paste -sd' '; echo $((6*7))", 600),
    ("ls -l --color=always / | head -8", 900),
    ("exit", 200),
];

/// Delay between typed characters, so the video shows typing.
const KEY_DELAY: Duration = Duration::from_millis(12);
/// How long the shell may take to show its prompt.
pub const PROMPT_WAIT: Duration = Duration::from_secs(15);
/// The pass-through stage the demo puts after the pty, on its machine.
const TAP: &str = "demo-tap";
/// How long the recording may take to end after the shell exits.
const END_WAIT: Duration = Duration::from_secs(60);

/// What the demo made.
pub struct Report {
    pub output: PathBuf,
    pub bytes: u64,
    pub elapsed: Duration,
    /// The first screen with text on it, from the same bytes the parser
    /// got: the shell's prompt, before anything was typed.
    pub first_screen: String,
    /// The recording's frames, duration and size, read back from the file
    /// (by the probe the `mesh-av` binary registers; none elsewhere).
    pub video: Option<Video>,
}

/// A recording's video, as its demuxer reads it back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Video {
    pub frames: u64,
    /// From the first frame's start to the last frame's end, in seconds.
    pub seconds: f64,
    pub width: u32,
    pub height: u32,
}

/// Reads a recording back.
pub type Probe = fn(&Path) -> anyhow::Result<Video>;

static PROBE: std::sync::OnceLock<Probe> = std::sync::OnceLock::new();

/// Makes this process read recordings back with `probe` (FFmpeg's
/// demuxer, which only the `mesh-av` binary links).
pub fn register_probe(probe: Probe) {
    let _ = PROBE.set(probe);
}

/// Whether this process can run the demo: its pipeline's encoder and
/// display kinds are built here.
pub fn runs_here() -> bool {
    PROBE.get().is_some()
}

/// Runs the demo on the built-in mesh, writing the MP4 to `output`.
pub async fn run(output: &Path) -> anyhow::Result<Report> {
    record(ns::deploy::builtin(), SCRIPT, output).await
}

/// Runs `dep`'s machines in this process and its `record` pipeline, types
/// `script` (lines, each with the pause after it) once the shell shows its
/// prompt, and writes the recording to `output`, whatever the file says.
pub async fn record(mut dep: Deployment, script: &[(&str, u64)], output: &Path) -> anyhow::Result<Report> {
    let output = std::path::absolute(output).context("output path")?;
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for m in dep.machines.values_mut() {
        for s in m.services.iter_mut().filter(|s| s.kind == ServiceKind::Display) {
            s.output = Some(output.clone());
        }
    }
    let mut record =
        dep.pipelines.iter().find(|p| p.name == "record").cloned().ok_or_else(|| anyhow!("no record pipeline"))?;
    let runtime = tempfile::tempdir().context("runtime directory")?;
    let stop = CancellationToken::new();
    let opts = Options {
        socket_dir: Some(runtime.path().to_path_buf()),
        no_mount: true,
        no_pipelines: true,
        ..Default::default()
    };
    let started = Instant::now();
    let machines = up::start(&dep, &opts, &stop)
        .await
        .context("starting the mesh (is `mesh up` of the same file running? it uses the same addresses)")?;
    let home =
        crate::pipeline::home(&dep, &record).ok_or_else(|| anyhow!("record: no machine serves its first stage"))?;
    let tree = machines.get(&home).ok_or_else(|| anyhow!("machine {home} not started"))?.tree.clone();
    // The tap after the pty, on its machine, sized as its terminal.
    let size = dep
        .machine(home.as_str())
        .and_then(|m| m.services.iter().find(|s| record.stages.first().is_some_and(|f| f.service == s.name)))
        .and_then(|s| s.size)
        .unwrap_or(crate::kinds::DEFAULT_SIZE);
    let (tap, mut seen) = tap::Tap::new(size);
    tree.router().add_service(TAP.parse().map_err(|e| anyhow!("{TAP}: {e}"))?, Arc::new(tap));
    record.stages.insert(1, Addr::parse(&format!("/svc/{TAP}")).map_err(|e| anyhow!("{TAP}: {e}"))?);

    let bar = ProgressBar::new(script.len() as u64 + 3);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let typed = type_script(&tree, &record, script, &mut seen, &bar).await;
    bar.finish_and_clear();
    stop.cancel();
    for r in machines.into_values() {
        r.router.shutdown();
    }
    let first_screen = typed?;
    let bytes =
        std::fs::metadata(&output).map(|m| m.len()).with_context(|| format!("no recording at {}", output.display()))?;
    let video =
        PROBE.get().map(|p| p(&output)).transpose().with_context(|| format!("reading back {}", output.display()))?;
    Ok(Report { output, bytes, elapsed: started.elapsed(), first_screen, video })
}

/// Starts the pipeline, types the script at the prompt and waits for the
/// recording to end; returns the first screen shown.
async fn type_script(
    tree: &Arc<crate::fs::Namespace>,
    record: &ns::deploy::Pipeline,
    script: &[(&str, u64)],
    seen: &mut tokio::sync::watch::Receiver<tap::Seen>,
    bar: &ProgressBar,
) -> anyhow::Result<String> {
    bar.set_message("waiting for routes");
    let slot = crate::pipeline::start(tree, record).await.map_err(|e| anyhow!(e))?;
    bar.inc(1);
    bar.set_message("waiting for the shell's prompt");
    tap::prompt(seen, PROMPT_WAIT).await.map_err(|e| anyhow!(e))?;
    bar.inc(1);
    let writer = slot.stream.writer();
    for (line, pause) in script {
        bar.set_message(format!("typing: {}", line.chars().take(40).collect::<String>()));
        for ch in line.chars().chain(std::iter::once('\r')) {
            let mut buf = [0u8; 4];
            writer
                .send(Bytes::copy_from_slice(ch.encode_utf8(&mut buf).as_bytes()))
                .await
                .map_err(|e| anyhow!("typing into the pty: {e}"))?;
            tokio::time::sleep(KEY_DELAY).await;
        }
        tokio::time::sleep(Duration::from_millis(*pause)).await;
        bar.inc(1);
    }
    bar.set_message("finishing the recording");
    // The end of the pty's output travels down the pipeline; the display
    // closing the file ends the conversation here.
    let ended = tokio::time::timeout(END_WAIT, async {
        loop {
            match slot.stream.read(usize::MAX).await {
                Ok(b) if b.is_empty() => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    bar.inc(1);
    match ended {
        Err(_) => bail!("the recording did not end within {END_WAIT:?}"),
        Ok(Err(e)) => bail!("the pipeline failed: {e}"),
        Ok(Ok(())) => {}
    }
    Ok(seen.borrow().first.clone().unwrap_or_default())
}

impl Report {
    /// What `mesh demo` prints when done.
    pub fn summary(&self) -> String {
        let what = match &self.video {
            Some(v) => {
                format!("{:.1} s, {} frames, {}x{}, {} bytes", v.seconds, v.frames, v.width, v.height, self.bytes)
            }
            None => format!("{} bytes", self.bytes),
        };
        format!("recorded {}: {what} (took {:.1} s)", self.output.display(), self.elapsed.as_secs_f64())
    }
}
