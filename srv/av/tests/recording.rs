//! A recording lasts as long as its session: the whole pipeline (pty,
//! parser, gpu on lavapipe, encoder, display) on one router, real shell
//! commands that print and then wait, the file read back with ffprobe.
//!
//! What is checked is what a player shows: the video's duration, and when
//! each screen starts. Bounds are generous (the session's own length is
//! the behaviour; a busy machine only delays its end a little).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mesh_gpu::GpuService;
use mesh_video::{DisplayService, EncoderService};
use ns::conv::Msg;
use ns::{Addr, Config, Router};
use srv::parser::ParserService;
use srv::pty::PtyService;
use tokio_util::sync::CancellationToken;

const SIZE: (u16, u16) = (40, 8);

fn a(s: &str) -> Addr {
    Addr::parse(s).unwrap()
}

/// Records `command`'s session on a pty into `out` and returns when the
/// display has closed the file.
async fn record(command: &str, out: &Path) {
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let router = Router::new(Config::new("a".parse().unwrap()), stop);
    let sh = vec!["sh".to_string(), "-c".to_string(), command.to_string()];
    let gpu = GpuService::new().expect("a Vulkan device (lavapipe: mesa-vulkan-drivers)");
    let display = DisplayService::new(out.to_path_buf());
    router.add_service("pty".parse().unwrap(), Arc::new(PtyService::new(sh, SIZE).unwrap()));
    router.add_service("parser".parse().unwrap(), Arc::new(ParserService::new(SIZE, 30).unwrap()));
    router.add_service("gpu".parse().unwrap(), Arc::new(gpu));
    router.add_service("encoder".parse().unwrap(), Arc::new(EncoderService::default()));
    router.add_service("display".parse().unwrap(), Arc::new(display.clone()));
    let stages = ["/svc/parser", "/svc/gpu", "/svc/encoder", "/svc/display"].map(a).to_vec();
    let mut conv = router.open(a("/svc/pty"), stages);
    // The first message starts the pty's conversation, as a pipeline does.
    conv.tx.send(Bytes::new()).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match conv.rx.recv().await {
                Some(Msg::Data(_)) => {}
                Some(Msg::Eof) | None => return,
                Some(Msg::Error(e)) => panic!("the pipeline failed: {e}"),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the recording did not end within 60 s: {}", display.status());
    // The display's end of output comes as it closes the file; its status
    // says idle just after.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !display.status().contains("state idle") {
        assert!(tokio::time::Instant::now() < deadline, "the display still records: {}", display.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ffprobe(file: &Path, args: &[&str]) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(args)
        .arg(file)
        .output()
        .expect("ffprobe (Debian's ffmpeg package)");
    assert!(out.status.success(), "ffprobe: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn duration(file: &Path) -> f64 {
    let d = ffprobe(file, &["-show_entries", "format=duration", "-of", "default=nw=1:nk=1"]);
    d.parse().unwrap_or_else(|_| panic!("duration {d:?}"))
}

/// When each frame starts, in seconds, in order.
fn frame_times(file: &Path) -> Vec<f64> {
    let t = ffprobe(file, &["-show_entries", "packet=pts_time", "-of", "csv=p=0"]);
    let mut t: Vec<f64> = t.lines().filter_map(|l| l.trim().parse().ok()).collect();
    t.sort_by(f64::total_cmp);
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_prints_once_and_waits_lasts_as_long_as_it_ran() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("once.mp4");
    record("printf hello; sleep 4", &out).await;
    let d = duration(&out);
    eprintln!("duration {d} s, frames at {:?}", frame_times(&out));
    // The session: ~4 s from its output to its end; its end reaches the
    // parser a little later on a busy machine.
    assert!((3.6..6.0).contains(&d), "a 4 s session recorded as {d} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_screen_starts_when_it_was_printed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("twice.mp4");
    record("printf one; sleep 3; printf ' two'; sleep 1", &out).await;
    let d = duration(&out);
    let t = frame_times(&out);
    eprintln!("duration {d} s, frames at {t:?}");
    assert!(t.first().is_some_and(|&t0| t0.abs() < 0.01), "the video starts with the first screen: {t:?}");
    // The first screen rests for ~3 s: the next frame is the second one.
    let second = t.iter().copied().find(|&x| x > 0.1).unwrap_or_else(|| panic!("one screen only: {t:?}"));
    assert!((2.7..4.0).contains(&second), "the second screen starts at {second} s, not ~3 s: {t:?}");
    assert!((3.6..6.0).contains(&d), "a 4 s session recorded as {d} s");
}
