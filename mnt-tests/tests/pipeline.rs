//! The seed's scenario across three router processes: a terminal on a,
//! parsed on b, rendered on c's GPU (lavapipe here), encoded on c, and
//! recorded by the display on a, the encoder's output crossing c -> b -> a.
//! The recording is checked as a user would: ffprobe says it is H.264 of
//! the right size and length, and the text typed can be read in a frame.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mesh_frame::{Cell, Snapshot};
use mnt_tests::{sh_ok, until, Deploy, Mesh};

const T: Duration = Duration::from_secs(30);
const COLS: u16 = 80;
const ROWS: u16 = 24;
const TEXT: &str = "MESH-OK-12345";

fn ffprobe(file: &Path, entry: &str) -> String {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            entry,
            "-of",
            "default=nw=1:nk=1",
        ])
        .arg(file)
        .output()
        .expect("ffprobe (Debian's ffmpeg package)");
    assert!(out.status.success(), "ffprobe: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The last frame of `file`, as 8-bit grey.
fn last_frame(file: &Path, w: usize, h: usize) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-sseof", "-0.3", "-i"])
        .arg(file)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.len(), w * h, "frame size");
    out.stdout
}

/// Reference cells for the printable ASCII characters, rendered by the
/// same renderer the gpu service uses: (char, 8x16 grey pixels).
fn glyphs() -> Vec<(char, Vec<u8>)> {
    let chars: Vec<char> = (0x21u8..0x7f).map(char::from).collect();
    let n = chars.len() as u16;
    let fg = [0xd0, 0xd0, 0xd0];
    let bg = [0x10, 0x10, 0x10];
    let snap = Snapshot {
        seq: 0,
        pts_us: 0,
        cols: n,
        rows: 1,
        cells: chars.iter().map(|&c| Cell(c, fg, bg, 0)).collect(),
        cursor: None,
    };
    let mut r = mesh_gpu::Renderer::new().expect("a Vulkan device (lavapipe: mesa-vulkan-drivers)");
    let f = r.render(&snap).expect("render");
    let (cw, ch) = (mesh_gpu::CELL_W as usize, mesh_gpu::CELL_H as usize);
    let w = f.width as usize;
    chars
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let mut px = Vec::with_capacity(cw * ch);
            for y in 0..ch {
                for x in 0..cw {
                    let o = (y * w + i * cw + x) * 4;
                    // The same weights ffmpeg uses for grey (BT.601).
                    let v = 0.299 * f.rgba[o] as f32 + 0.587 * f.rgba[o + 1] as f32 + 0.114 * f.rgba[o + 2] as f32;
                    px.push(v as u8);
                }
            }
            (c, px)
        })
        .collect()
}

/// Reads row `row` of a decoded frame: the nearest reference glyph per cell.
fn read_row(frame: &[u8], w: usize, row: usize, cols: usize, refs: &[(char, Vec<u8>)]) -> String {
    let (cw, ch) = (mesh_gpu::CELL_W as usize, mesh_gpu::CELL_H as usize);
    (0..cols)
        .map(|col| {
            let cell: Vec<f32> = (0..ch)
                .flat_map(|y| (0..cw).map(move |x| (y, x)))
                .map(|(y, x)| frame[(row * ch + y) * w + col * cw + x] as f32)
                .collect();
            let mean = cell.iter().sum::<f32>() / cell.len() as f32;
            let spread = cell.iter().map(|v| (v - mean).abs()).sum::<f32>() / cell.len() as f32;
            if spread < 6.0 {
                return ' ';
            }
            refs.iter()
                .min_by(|a, b| {
                    let d = |g: &[u8]| g.iter().zip(&cell).map(|(&p, &q)| (p as f32 - q).powi(2)).sum::<f32>();
                    d(&a.1).total_cmp(&d(&b.1))
                })
                .map(|g| g.0)
                .unwrap_or('?')
        })
        .collect()
}

#[test]
fn a_terminal_on_a_recorded_through_b_and_c() {
    let mut m = Mesh::new();
    let dir = m.dir.path().to_path_buf();
    let d = dir.display();
    let deploy = Deploy::abc()
        .mount("a")
        .service(
            "a",
            &format!(
                r#"{{ name = "pty", kind = "pty", command = ["bash", "--norc", "--noprofile", "-i"], size = "{COLS}x{ROWS}" }}"#
            ),
        )
        .service("a", &format!(r#"{{ name = "display", kind = "display", output = "{d}/out.mp4" }}"#))
        .service("b", &format!(r#"{{ name = "parser", kind = "parser", size = "{COLS}x{ROWS}", fps = 30 }}"#))
        .service("c", r#"{ name = "gpu", kind = "gpu" }"#)
        .service("c", r#"{ name = "mp4-encoder", kind = "encoder", fps = 30 }"#)
        .tail(
            r#"[[pipelines]]
name = "record"
stages = ["/svc/pty", "/svc/parser", "/svc/gpu", "/svc/mp4-encoder", "/n/a/svc/display"]
"#,
        );
    m.start("abc.toml", &deploy);
    let a = dir.join("a");
    // The pipeline's conversation shows in a's tree once it has started.
    let mut n = String::new();
    until("the record pipeline starts on a", T, || {
        n = std::fs::read_dir(a.join("svc/pty"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .find(|f| f.parse::<u64>().is_ok())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        !n.is_empty()
    });
    let data = a.join(format!("svc/pty/{n}/data"));
    // Type: clear the screen, print the text at the top left, wait, exit.
    sh_ok(&format!("printf 'clear; printf {TEXT}; sleep 1.5; exit\\r' > {}", data.display()), T);
    until("the recording ends", Duration::from_secs(60), || !a.join(format!("svc/pty/{n}")).exists());
    let mp4 = dir.join("out.mp4");
    until("the display wrote the file", T, || std::fs::metadata(&mp4).is_ok_and(|m| m.len() > 1000));

    assert_eq!(ffprobe(&mp4, "stream=codec_name"), "h264");
    let (w, h) = (COLS as usize * mesh_gpu::CELL_W as usize, ROWS as usize * mesh_gpu::CELL_H as usize);
    assert_eq!(ffprobe(&mp4, "stream=width"), w.to_string());
    assert_eq!(ffprobe(&mp4, "stream=height"), h.to_string());
    let frames: u64 = ffprobe(&mp4, "stream=nb_read_frames").parse().unwrap();
    let duration: f64 = ffprobe(&mp4, "format=duration").parse().unwrap_or(0.0);
    eprintln!("recording: {frames} frames, {duration:.2} s, {} bytes", std::fs::metadata(&mp4).unwrap().len());
    // At least a frame for the prompt, the typing and the output; at
    // most 30 a second over the session (snapshots only come on change).
    assert!(frames >= 3, "{frames} frames");
    assert!((frames as f64) <= 30.0 * (duration + 1.0), "{frames} frames in {duration} s");
    assert!(duration >= 1.0, "the 1.5 s pause is in the video: {duration} s");
    // The text typed is there in the picture.
    let frame = last_frame(&mp4, w, h);
    let row = read_row(&frame, w, 0, TEXT.len(), &glyphs());
    assert_eq!(row, TEXT, "row 0 of the last frame reads {row:?}");
    // The display keeps the latest frame as a PNG file in its tree.
    let png = std::fs::read(a.join("svc/display/frame.png")).expect("frame.png");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let ihdr = &png[16..24];
    let (pw, ph) =
        (u32::from_be_bytes(ihdr[..4].try_into().unwrap()), u32::from_be_bytes(ihdr[4..].try_into().unwrap()));
    assert_eq!((pw as usize, ph as usize), (w, h));
    let status = std::fs::read_to_string(a.join("svc/display/status")).expect("display status");
    assert!(status.contains("frames "), "{status}");
    // c's services, read through c's tree from a: the gpu names its
    // device; the encoder's settings are set through its ctl.
    let info = std::fs::read_to_string(a.join("n/c/svc/gpu/info")).expect("gpu info");
    assert!(info.starts_with("c local 0 c\ndevice "), "{info}");
    let enc = a.join("n/c/svc/mp4-encoder/ctl");
    std::fs::write(&enc, "fps 25\nbitrate 500000\n").expect("encoder ctl");
    assert_eq!(std::fs::read_to_string(&enc).unwrap(), "fps 25\nbitrate 500000\n");
    let err = std::fs::write(&enc, "fps 0\n").expect_err("fps 0 refused");
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
}
