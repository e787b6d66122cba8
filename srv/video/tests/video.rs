//! The encoder and display with real FFmpeg: files checked with ffprobe
//! (from the `ffmpeg` package), pictures decoded back, the services run
//! behind a real router.

// `is_multiple_of` is newer than the workspace's minimum Rust (1.85).
#![allow(clippy::manual_is_multiple_of)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mesh_frame::Frame;
use mesh_video::{DisplayService, Encoder, EncoderService, EncoderSettings};
use ns::conv::{Conv, Msg};
use ns::{Addr, Config, Router};
use tokio_util::sync::CancellationToken;

/// 80x24 cells of 8x16 pixels.
const W: u32 = 640;
const H: u32 = 384;

const PALETTE: [[u8; 3]; 8] = [
    [235, 235, 235],
    [230, 200, 30],
    [40, 200, 210],
    [40, 190, 40],
    [200, 40, 200],
    [210, 40, 40],
    [40, 40, 210],
    [16, 16, 16],
];

/// Colour bars 80 pixels wide, moving 4 pixels left each frame.
fn bar_colour(x: u32, i: u64) -> [u8; 3] {
    PALETTE[((x as u64 + 4 * i) / 80 % 8) as usize]
}

fn bars(i: u64, pts_us: u64, w: u32, h: u32) -> Frame {
    let mut rgba = Vec::with_capacity((w * h * 4) as usize);
    for _ in 0..h {
        for x in 0..w {
            let c = bar_colour(x, i);
            rgba.extend_from_slice(&[c[0], c[1], c[2], 255]);
        }
    }
    Frame { seq: i, pts_us, width: w, height: h, rgba: rgba.into() }
}

/// A terminal scrolling a screenful of text one line a frame (`cat` of a
/// big file): 8x16 cells of glyph-like bit patterns, the harder case.
fn scrolling_text(i: u64, pts_us: u64) -> Frame {
    let mut rgba = vec![0u8; (W * H * 4) as usize];
    for row in 0..24u64 {
        let line = row + i; // the text line shown in this row
        for col in 0..80u64 {
            let mut seed = line.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ col.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            seed ^= seed >> 29;
            if seed % 5 == 0 {
                continue; // a space
            }
            for gy in 2..14u64 {
                let bits = (seed >> (gy * 3 % 56)) as u8;
                for gx in 1..7u64 {
                    if bits >> gx & 1 == 1 {
                        let (x, y) = (col * 8 + gx, row * 16 + gy);
                        let o = ((y * W as u64 + x) * 4) as usize;
                        rgba[o..o + 4].copy_from_slice(&[200, 200, 200, 255]);
                    }
                }
            }
        }
    }
    Frame { seq: i, pts_us, width: W, height: H, rgba: rgba.into() }
}

/// Someone typing: a still screen of text, one more glyph each frame.
fn typing(i: u64, pts_us: u64) -> Frame {
    let screen = scrolling_text(0, pts_us);
    let mut rgba = screen.rgba.to_vec();
    for k in 0..=i {
        let (col, row) = (k % 80, 20 + k / 80 % 4);
        for gy in 3..13 {
            for gx in 1..7 {
                if (gx + gy + k) % 3 != 0 {
                    let o = (((row * 16 + gy) * W as u64 + col * 8 + gx) * 4) as usize;
                    rgba[o..o + 4].copy_from_slice(&[120, 230, 120, 255]);
                }
            }
        }
    }
    Frame { seq: i, rgba: rgba.into(), ..screen }
}

fn us(frame: u64, fps: u64) -> u64 {
    frame * 1_000_000 / fps
}

/// ffprobe's view of a file's first video stream and its container.
struct Probe {
    fields: HashMap<String, String>,
    stderr: String,
}

impl Probe {
    fn get(&self, k: &str) -> &str {
        self.fields.get(k).map(String::as_str).unwrap_or_else(|| panic!("ffprobe gave no {k}: {:?}", self.fields))
    }
    fn num(&self, k: &str) -> f64 {
        self.get(k).parse().unwrap_or_else(|_| panic!("{k} = {:?}", self.get(k)))
    }
}

fn probe(path: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
        .args(["-show_entries", "stream=codec_name,width,height,nb_read_frames:format=duration"])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(path)
        .output()
        .expect("running ffprobe (Debian package ffmpeg)");
    assert!(out.status.success(), "ffprobe {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let fields = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Probe { fields, stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

/// Presentation times of the video packets, in seconds.
fn packet_times(path: &Path) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("running ffprobe");
    assert!(out.status.success());
    let mut t: Vec<f64> = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect();
    t.sort_by(f64::total_cmp);
    t
}

fn write(dir: &Path, name: &str, chunks: &[Bytes]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, chunks.concat()).unwrap();
    p
}

fn assert_h264(p: &Probe, w: u32, h: u32, frames: u64) {
    assert_eq!(p.get("codec_name"), "h264");
    assert_eq!(p.get("width"), w.to_string());
    assert_eq!(p.get("height"), h.to_string());
    assert_eq!(p.get("nb_read_frames"), frames.to_string());
}

#[test]
fn sixty_frames_make_a_two_second_h264_mp4() {
    let dir = tempfile::tempdir().unwrap();
    let mut enc = Encoder::new(EncoderSettings::default()).unwrap();
    let mut chunks = Vec::new();
    for i in 0..60 {
        if let Some(b) = enc.encode(&bars(i, us(i, 30), W, H)).unwrap() {
            chunks.push(b);
        }
    }
    chunks.extend(enc.finish().unwrap());
    // The init segment comes alone, first: ftyp then moov.
    assert_eq!(&chunks[0][4..8], b"ftyp");
    assert!(chunks[0].windows(4).any(|w| w == b"moov"));
    assert!(!chunks[0].windows(4).any(|w| w == b"moof"));
    let path = write(dir.path(), "bars.mp4", &chunks);
    let p = probe(&path);
    assert_eq!(p.stderr, "");
    assert_h264(&p, W, H, 60);
    let d = p.num("duration");
    assert!((d - 2.0).abs() < 0.05, "duration {d}");
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    eprintln!("60 frames of moving bars: {total} bytes, {} chunks", chunks.len());
}

#[test]
fn a_pause_in_the_frames_is_a_pause_in_the_video() {
    let dir = tempfile::tempdir().unwrap();
    let mut enc = Encoder::new(EncoderSettings::default()).unwrap();
    let mut chunks = Vec::new();
    // A second of frames, nothing for two seconds, another second. The
    // first frame's time is the video's zero.
    let base = 7_000_000;
    let times: Vec<u64> = (0..30).map(|i| us(i, 30)).chain((0..30).map(|i| 3_000_000 + us(i, 30))).collect();
    for (i, t) in times.iter().enumerate() {
        chunks.extend(enc.encode(&bars(i as u64, base + t, W, H)).unwrap());
        if i == 29 {
            // The terminal rests: what was shown goes out (as the service
            // does after MAX_LATENCY).
            chunks.extend(enc.cut().unwrap());
        }
    }
    chunks.extend(enc.finish().unwrap());
    let path = write(dir.path(), "pause.mp4", &chunks);
    let p = probe(&path);
    assert_h264(&p, W, H, 60);
    let d = p.num("duration");
    assert!((d - 4.0).abs() < 0.1, "duration {d}");
    let t = packet_times(&path);
    assert_eq!(t.len(), 60);
    assert!(t[0].abs() < 0.001, "starts at {}", t[0]);
    assert!((t[29] - 29.0 / 30.0).abs() < 0.001, "{}", t[29]);
    assert!((t[30] - 3.0).abs() < 0.001, "after the pause: {}", t[30]);
}

#[test]
fn the_last_frame_is_held_until_the_session_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut enc = Encoder::new(EncoderSettings::default()).unwrap();
    // Before any frame there is nothing to hold.
    assert!(enc.hold_until(1_000_000).unwrap().is_none());
    let base = 7_000_000;
    let mut chunks = Vec::new();
    chunks.extend(enc.encode(&typing(0, base)).unwrap());
    chunks.extend(enc.encode(&typing(1, base + 500_000)).unwrap());
    // The terminal rests: its screen goes out (as after MAX_LATENCY)...
    chunks.extend(enc.cut().unwrap());
    // ...and the session ends 4 s after it began.
    chunks.extend(enc.hold_until(base + 4_000_000).unwrap());
    chunks.extend(enc.finish().unwrap());
    let path = write(dir.path(), "held.mp4", &chunks);
    let p = probe(&path);
    assert_eq!(p.stderr, "");
    let d = p.num("duration");
    assert!((d - 4.0).abs() < 0.01, "duration {d}");
    let t = packet_times(&path);
    assert_eq!(t.len(), 3, "{t:?}");
    assert!((t[1] - 0.5).abs() < 0.001 && (t[2] - (4.0 - 1.0 / 30.0)).abs() < 0.001, "{t:?}");
    // The held picture is the last one.
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success());
    let n = (W * H) as usize;
    assert_eq!(out.stdout.len(), 3 * n);
    // In the cell where the second frame typed its glyph, the held
    // picture looks like the second frame's source, not the first's.
    let held = &out.stdout[2 * n..];
    let grey = |f: &Frame, x: usize, y: usize| {
        let o = (y * W as usize + x) * 4;
        0.299 * f.rgba[o] as f32 + 0.587 * f.rgba[o + 1] as f32 + 0.114 * f.rgba[o + 2] as f32
    };
    let cell = |f: &Frame| -> f32 {
        let (x0, y0) = (8, 20 * 16);
        (y0..y0 + 16)
            .flat_map(|y| (x0..x0 + 8).map(move |x| (x, y)))
            .map(|(x, y)| (grey(f, x, y) - held[y * W as usize + x] as f32).abs())
            .sum()
    };
    let (to_second, to_first) = (cell(&typing(1, 0)), cell(&typing(0, 0)));
    assert!(to_second * 2.0 < to_first, "held picture: {to_second} from the last frame, {to_first} from the first");

    // An end within the last frame's own nominal time adds nothing.
    let mut enc = Encoder::new(EncoderSettings::default()).unwrap();
    let mut chunks = Vec::new();
    chunks.extend(enc.encode(&typing(0, 0)).unwrap());
    chunks.extend(enc.hold_until(20_000).unwrap());
    chunks.extend(enc.finish().unwrap());
    assert_eq!(packet_times(&write(dir.path(), "short.mp4", &chunks)).len(), 1);
}

#[test]
fn a_prefix_of_the_output_plays_while_recording() {
    let dir = tempfile::tempdir().unwrap();
    let mut enc = Encoder::new(EncoderSettings::default()).unwrap();
    let mut chunks = Vec::new();
    // Cut a fragment every 10 frames, as the service's latency bound does
    // (more begin at keyframes).
    let mut after_20 = 0;
    for i in 0..40 {
        chunks.extend(enc.encode(&bars(i, us(i, 30), W, H)).unwrap());
        if i % 10 == 9 {
            chunks.extend(enc.cut().unwrap());
        }
        if i == 19 {
            after_20 = chunks.len();
        }
    }
    // The init segment and the fragments of 20 frames, no trailer: a
    // recording in progress.
    let path = write(dir.path(), "prefix.mp4", &chunks[..after_20]);
    let p = probe(&path);
    assert_eq!(p.stderr, "");
    assert_h264(&p, W, H, 20);
    // Even a torn last fragment leaves what came before playable.
    let mut torn = chunks[..after_20 + 1].concat();
    torn.truncate(torn.len() - 100);
    let path = dir.path().join("torn.mp4");
    std::fs::write(&path, torn).unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "quiet",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let n: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    assert!(n >= 20, "torn file decodes {n} frames");
}

#[test]
fn odd_and_changing_sizes_keep_one_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut enc = Encoder::new(EncoderSettings::default()).unwrap();
    let mut chunks = Vec::new();
    for i in 0..10 {
        chunks.extend(enc.encode(&bars(i, us(i, 30), 161, 101)).unwrap());
    }
    assert_eq!(enc.size(), Some((160, 100)));
    for i in 10..20 {
        chunks.extend(enc.encode(&bars(i, us(i, 30), 320, 64)).unwrap());
    }
    chunks.extend(enc.finish().unwrap());
    let inits = chunks.iter().filter(|c| c.windows(4).any(|w| w == b"moov")).count();
    assert_eq!(inits, 1);
    let p = probe(&write(dir.path(), "sizes.mp4", &chunks));
    assert_h264(&p, 160, 100, 20);
}

#[test]
fn bad_frames_are_errors() {
    let mut enc = Encoder::new(EncoderSettings::default()).unwrap();
    let short = Frame { seq: 0, pts_us: 0, width: 4, height: 4, rgba: Bytes::from_static(&[0; 10]) };
    assert!(enc.encode(&short).is_err());
    let tiny = Frame { seq: 0, pts_us: 0, width: 1, height: 1, rgba: Bytes::from_static(&[0; 4]) };
    assert!(enc.encode(&tiny).is_err());
    assert!(enc.finish().unwrap().is_none(), "no frame, no stream");
    assert!(Encoder::new(EncoderSettings { fps: 0, bitrate: 1 }).is_err());
}

#[test]
fn settings_parse_like_ctl_lines() {
    let mut s = EncoderSettings::default();
    assert_eq!(s, EncoderSettings { fps: 30, bitrate: 1_000_000 });
    s.apply("fps 60").unwrap();
    s.apply("  bitrate   250000 ").unwrap();
    assert_eq!(s, EncoderSettings { fps: 60, bitrate: 250_000 });
    for bad in ["fps", "fps 0", "fps x", "bitrate 5", "speed 3", "fps 30 40"] {
        assert!(s.apply(bad).is_err(), "{bad}");
    }
    assert_eq!(s, EncoderSettings { fps: 60, bitrate: 250_000 });
    assert_eq!(s.to_string(), "fps 60\nbitrate 250000\n");
}

/// Mean encode time per frame, in ms, of `n` frames from `make`.
fn time_encode(n: u64, make: impl Fn(u64) -> Frame) -> (f64, usize) {
    let frames: Vec<Frame> = (0..n).map(&make).collect();
    let mut enc = Encoder::new(EncoderSettings::default()).unwrap();
    let mut bytes = 0;
    let t0 = Instant::now();
    for f in &frames {
        bytes += enc.encode(f).unwrap().map_or(0, |b| b.len());
    }
    bytes += enc.finish().unwrap().map_or(0, |b| b.len());
    (t0.elapsed().as_secs_f64() * 1e3 / n as f64, bytes)
}

#[test]
fn encoding_keeps_up_with_thirty_frames_a_second() {
    let (bars_ms, bars_bytes) = time_encode(150, |i| bars(i, us(i, 30), W, H));
    let (text_ms, text_bytes) = time_encode(150, |i| scrolling_text(i, us(i, 30)));
    let (typing_ms, typing_bytes) = time_encode(150, |i| typing(i, us(i, 30)));
    eprintln!(
        "encode 640x384, ms/frame (bytes for 5 s): moving bars {bars_ms:.2} ({bars_bytes}); \
         scrolling text {text_ms:.2} ({text_bytes}); typing {typing_ms:.2} ({typing_bytes})"
    );
    // 33 ms a frame is real time; half of it leaves the core to the rest
    // of the pipeline. Loose, for loaded CI machines.
    for ms in [bars_ms, text_ms, typing_ms] {
        assert!(ms < 16.0, "too slow: {ms:.2} ms per frame");
    }
}

// --- The services behind a router ---

fn a(s: &str) -> Addr {
    Addr::parse(s).unwrap()
}

struct Node {
    router: Router,
    stop: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn node(id: &str) -> Node {
    let stop = CancellationToken::new();
    let router = Router::new(Config::new(id.parse().unwrap()), stop.child_token());
    Node { router, stop }
}

/// Everything that comes back on `conv` until end of file.
async fn replies(conv: &mut Conv, limit: Duration) -> Result<Vec<Bytes>, String> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(limit, conv.rx.recv()).await {
            Err(_) => return Err(format!("timeout after {} replies", out.len())),
            Ok(None) | Ok(Some(Msg::Eof)) => return Ok(out),
            Ok(Some(Msg::Data(b))) => out.push(b),
            Ok(Some(Msg::Error(e))) => return Err(e),
        }
    }
}

async fn until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn status_field(status: &str, key: &str) -> Option<String> {
    status.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ').map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoder_service_replies_with_init_then_fragments() {
    let dir = tempfile::tempdir().unwrap();
    let n = node("enc1");
    n.router.add_service("encoder".parse().unwrap(), Arc::new(EncoderService::default()));
    let mut conv = n.router.open(a("/svc/encoder"), vec![]);
    for i in 0..45 {
        conv.tx.send(mesh_frame::encode(&bars(i, us(i, 30), W, H))).await.unwrap();
    }
    conv.tx.eof().await;
    let chunks = replies(&mut conv, Duration::from_secs(30)).await.unwrap();
    assert_eq!(&chunks[0][4..8], b"ftyp");
    let kinds: Vec<String> = chunks.iter().map(|c| String::from_utf8_lossy(&c[4..8]).into_owned()).collect();
    let (last, middle) = kinds[1..].split_last().expect("fragments after the init segment");
    assert!(middle.iter().all(|k| k == "moof"), "fragments after the init segment: {kinds:?}");
    // At the end the last fragment and the index (mfra), or the index
    // alone where the last fragment was cut (MAX_LATENCY) before the end:
    // a loaded machine encodes every frame before the end comes.
    assert!(last == "moof" || last == "mfra", "the end: {kinds:?}");
    let p = probe(&write(dir.path(), "svc.mp4", &chunks));
    assert_eq!(p.stderr, "");
    assert_h264(&p, W, H, 45);
    assert!((p.num("duration") - 1.5).abs() < 0.05);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resting_stream_reaches_the_reader_without_a_keyframe() {
    let n = node("enc2");
    n.router.add_service("encoder".parse().unwrap(), Arc::new(EncoderService::default()));
    let mut conv = n.router.open(a("/svc/encoder"), vec![]);
    conv.tx.send(mesh_frame::encode(&bars(0, 0, W, H))).await.unwrap();
    conv.tx.send(mesh_frame::encode(&bars(1, 33_333, W, H))).await.unwrap();
    // No end of input: the frames must still come out, in a fragment cut
    // after the latency bound.
    let t0 = Instant::now();
    let mut got = Vec::new();
    while !got.iter().any(|c: &Bytes| &c[4..8] == b"moof") {
        match tokio::time::timeout(Duration::from_secs(5), conv.rx.recv()).await {
            Ok(Some(Msg::Data(b))) => got.push(b),
            other => panic!("expected a fragment, got {other:?}"),
        }
    }
    let waited = t0.elapsed();
    eprintln!("resting frames came out after {waited:?}");
    assert!(waited < mesh_video::service::MAX_LATENCY + Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_message_ends_the_stream_but_keeps_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let n = node("enc3");
    n.router.add_service("encoder".parse().unwrap(), Arc::new(EncoderService::default()));
    let mut conv = n.router.open(a("/svc/encoder"), vec![]);
    for i in 0..3 {
        conv.tx.send(mesh_frame::encode(&bars(i, us(i, 30), W, H))).await.unwrap();
    }
    conv.tx.send(Bytes::from_static(b"not a frame")).await.unwrap();
    let chunks = replies(&mut conv, Duration::from_secs(30)).await.unwrap();
    let p = probe(&write(dir.path(), "bad.mp4", &chunks));
    assert_h264(&p, W, H, 3);
    // The service stopped listening: writing on fails.
    let mut failed = false;
    for i in 3..200 {
        if conv.tx.send(mesh_frame::encode(&bars(i, us(i, 30), W, H))).await.is_err() {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(failed, "the sender was not told the conversation ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_apply_to_new_conversations() {
    let n = node("enc4");
    let svc = EncoderService::default();
    let handle = svc.settings();
    n.router.add_service("encoder".parse().unwrap(), Arc::new(svc.clone()));
    handle.lock().unwrap().fps = 5;
    assert_eq!(svc.get().fps, 5);
    assert!(svc.set(EncoderSettings { fps: 0, bitrate: 1 }).is_err());
    let dir = tempfile::tempdir().unwrap();
    let mut conv = n.router.open(a("/svc/encoder"), vec![]);
    conv.tx.send(mesh_frame::encode(&bars(0, 0, W, H))).await.unwrap();
    conv.tx.eof().await;
    let chunks = replies(&mut conv, Duration::from_secs(30)).await.unwrap();
    // One frame lasts the nominal frame time: 1/5 s.
    let p = probe(&write(dir.path(), "fps.mp4", &chunks));
    assert!((p.num("duration") - 0.2).abs() < 0.01, "duration {}", p.get("duration"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoder_into_display_records_a_file_and_a_picture() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rec/out/demo.mp4");
    let n = node("disp1");
    let display = DisplayService::new(out.clone());
    n.router.add_service("mp4-encoder".parse().unwrap(), Arc::new(EncoderService::default()));
    n.router.add_service("display".parse().unwrap(), Arc::new(display.clone()));
    assert!(display.latest_png().is_none());

    let frames = 75;
    let t0 = Instant::now();
    let conv = n.router.open(a("/svc/mp4-encoder"), vec![a("/svc/display")]);
    for i in 0..frames {
        conv.tx.send(mesh_frame::encode(&bars(i, us(i, 30), W, H))).await.unwrap();
        if i == 40 {
            // Mid-recording: the file is there and plays as far as it got.
            until("a fragment on disk", Duration::from_secs(10), || {
                status_field(&display.status(), "fragments").is_some_and(|f| f != "0")
            })
            .await;
            let p = probe(&out);
            assert_eq!(p.get("codec_name"), "h264");
            assert!(p.num("nb_read_frames") >= 1.0);
            assert_eq!(status_field(&display.status(), "state").as_deref(), Some("recording"));
        }
    }
    conv.tx.eof().await;
    until("the recording to end", Duration::from_secs(30), || {
        let s = display.status();
        status_field(&s, "state").as_deref() == Some("idle") && status_field(&s, "recordings").as_deref() == Some("1")
    })
    .await;
    let elapsed = t0.elapsed();
    eprintln!("{frames} frames through encoder and display in {elapsed:?}\n{}", display.status());
    let s = display.status();
    assert_eq!(status_field(&s, "frames").as_deref(), Some("75"));
    assert_eq!(status_field(&s, "size").as_deref(), Some("640x384"));
    assert_eq!(status_field(&s, "error"), None);
    assert_eq!(status_field(&s, "bytes"), Some(std::fs::metadata(&out).unwrap().len().to_string()));
    let p = probe(&out);
    assert_eq!(p.stderr, "");
    assert_h264(&p, W, H, frames);
    assert!((p.num("duration") - 2.5).abs() < 0.05);

    // The latest picture: the last frame, within what the codec changes.
    let t0 = Instant::now();
    let png = display.latest_png().expect("a picture");
    eprintln!("latest_png: {} bytes in {:?}", png.len(), t0.elapsed());
    let mut dec = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
    let mut buf = vec![0; dec.output_buffer_size().unwrap()];
    let info = dec.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (W, H));
    let ch = info.color_type.samples();
    let last = frames - 1;
    for (x, y) in [(40, 10), (200, 200), (600, 380), (330, 100)] {
        // Away from bar edges, where chroma is shared with the neighbour.
        if (x + 4 * last as u32) % 80 < 8 || (x + 4 * last as u32) % 80 > 72 {
            continue;
        }
        let o = (y as usize * W as usize + x as usize) * ch;
        let got = &buf[o..o + 3];
        let want = bar_colour(x, last);
        for c in 0..3 {
            assert!(got[c].abs_diff(want[c]) <= 12, "pixel ({x},{y}): got {got:?}, want {want:?}");
        }
    }
    // Asked again without news: the same PNG, from the cache.
    assert!(display.latest_png().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn display_refuses_what_is_not_mp4_and_a_new_recording_truncates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d.mp4");
    let n = node("disp2");
    let display = DisplayService::new(out.clone());
    n.router.add_service("display".parse().unwrap(), Arc::new(display.clone()));

    // A whole recording, straight from an Encoder.
    let mut enc = Encoder::new(EncoderSettings::default()).unwrap();
    let mut chunks = Vec::new();
    for i in 0..10 {
        chunks.extend(enc.encode(&bars(i, us(i, 30), 320, 192)).unwrap());
    }
    chunks.extend(enc.finish().unwrap());
    let whole = chunks.concat();
    let conv = n.router.open(a("/svc/display"), vec![]);
    // In odd pieces: message boundaries mean nothing to the display.
    for piece in whole.chunks(777) {
        conv.tx.send(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    conv.tx.eof().await;
    until("the first recording", Duration::from_secs(20), || {
        status_field(&display.status(), "frames").as_deref() == Some("10")
    })
    .await;
    until("idle", Duration::from_secs(20), || status_field(&display.status(), "state").as_deref() == Some("idle"))
        .await;
    assert_eq!(std::fs::read(&out).unwrap(), whole);
    let first_png = display.latest_png().expect("picture");

    // Text is refused: the recording ends with an error, the file is new
    // (truncated) and empty, the old picture stays.
    let conv = n.router.open(a("/svc/display"), vec![]);
    conv.tx.send(Bytes::from_static(b"hello, this is not a video\n")).await.unwrap();
    until("the refusal", Duration::from_secs(20), || status_field(&display.status(), "error").is_some()).await;
    let s = display.status();
    assert_eq!(status_field(&s, "recordings").as_deref(), Some("2"));
    assert!(status_field(&s, "error").unwrap().contains("not MP4"), "{s}");
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 0);
    assert_eq!(display.latest_png(), Some(first_png));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_recording_takes_the_file_over() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d.mp4");
    let n = node("disp3");
    let display = DisplayService::new(out.clone());
    n.router.add_service("display".parse().unwrap(), Arc::new(display.clone()));
    let stream = |w: u32| {
        let mut enc = Encoder::new(EncoderSettings::default()).unwrap();
        let mut chunks = Vec::new();
        for i in 0..20 {
            chunks.extend(enc.encode(&bars(i, us(i, 30), w, 96)).unwrap());
            chunks.extend(enc.cut().unwrap());
        }
        chunks.extend(enc.finish().unwrap());
        chunks
    };
    let (old, new) = (stream(128), stream(256));
    let first = n.router.open(a("/svc/display"), vec![]);
    first.tx.send(old[0].clone()).await.unwrap();
    first.tx.send(old[1].clone()).await.unwrap();
    until("the first recording", Duration::from_secs(10), || status_field(&display.status(), "size").is_some()).await;
    let second = n.router.open(a("/svc/display"), vec![]);
    for c in &new {
        second.tx.send(c.clone()).await.unwrap();
    }
    second.tx.eof().await;
    until("the second recording", Duration::from_secs(20), || {
        let s = display.status();
        status_field(&s, "recordings").as_deref() == Some("2") && status_field(&s, "state").as_deref() == Some("idle")
    })
    .await;
    // The first sender goes on: it is told to stop, and the file is not
    // touched.
    let mut refused = false;
    for c in &old[2..] {
        if first.tx.send(c.clone()).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the superseded sender was not stopped");
    assert_eq!(std::fs::read(&out).unwrap(), new.concat());
    let p = probe(&out);
    assert_h264(&p, 256, 96, 20);
    assert_eq!(status_field(&display.status(), "size").as_deref(), Some("256x96"));
}
