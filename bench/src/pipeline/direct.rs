//! The pipeline's baseline: its stages called directly, in one thread,
//! with no mesh between them.
//!
//! Per frame: one write of terminal output ([`super::input::chunk`]) into
//! a vt100 parser of 80x24 and a snapshot of its screen, rendered by the
//! gpu crate's [`mesh_gpu::Renderer`] (Vulkan; lavapipe here), encoded by
//! the video crate's [`mesh_video::Encoder`] and appended to a file, as
//! the display does. The parser service keeps its screen conversion
//! private, so [`snapshot`] repeats it with the parser's public colour
//! functions. Fragments are cut 200 ms after their first frame, as the
//! encoder service does, so a frame's latency to the file means the same
//! as the mesh's latency to the display. Messages are passed as values:
//! the CBOR between stages is part of what the mesh costs.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use mesh_frame::{attr, Cell, Snapshot};
use srv::parser::{resolve, DEFAULT_BG, DEFAULT_FG};

use super::input::chunk;
use super::tap::Fragments;
use crate::stats::Samples;

/// What the direct loop measured.
#[derive(Default)]
pub struct Direct {
    pub frames: u64,
    pub took: Duration,
    /// Per frame: parsing one write and taking the snapshot.
    pub parse: Samples,
    pub render: Samples,
    /// The encoder call alone.
    pub encode: Samples,
    /// From the frame going into the encoder to its fragment in the file.
    pub to_file: Samples,
    /// From the write being parsed to its frame in the file.
    pub total: Samples,
    pub device: String,
}

/// Runs `frames` frames, or until `limit`, writing the MP4 to `out`.
pub fn run(frames: u64, limit: Duration, out: &Path) -> anyhow::Result<Direct> {
    let mut vt = vt100::Parser::new(24, 80, 0);
    let mut gpu = mesh_gpu::Renderer::new().context("a Vulkan device (lavapipe: mesa-vulkan-drivers)")?;
    let mut enc = mesh_video::Encoder::new(mesh_video::EncoderSettings::default())?;
    let mut file = File::create(out).with_context(|| format!("create {}", out.display()))?;
    let mut d = Direct { device: gpu.device_name().to_string(), ..Direct::default() };
    let mut frags = Fragments::default();
    // Frames in the open fragment: (parsing began, into the encoder).
    let mut open: std::collections::VecDeque<(Instant, Instant)> = Default::default();
    let mut emit = |b: &[u8],
                    file: &mut File,
                    open: &mut std::collections::VecDeque<(Instant, Instant)>,
                    d: &mut Direct|
     -> anyhow::Result<()> {
        file.write_all(b)?;
        file.flush()?;
        let now = Instant::now();
        for _ in 0..frags.push(b) {
            if let Some((t0, t2)) = open.pop_front() {
                d.to_file.push(now - t2);
                d.total.push(now - t0);
            }
        }
        Ok(())
    };
    let start = Instant::now();
    for i in 0..frames {
        if start.elapsed() > limit {
            break;
        }
        let t0 = Instant::now();
        vt.process(&chunk(i));
        let snap = snapshot(vt.screen(), i, (t0 - start).as_micros() as u64);
        let t1 = Instant::now();
        let frame = gpu.render(&snap)?;
        let t2 = Instant::now();
        if open.front().is_some_and(|(_, first)| t2 - *first >= mesh_video::service::MAX_LATENCY) {
            if let Some(b) = enc.cut()? {
                emit(&b, &mut file, &mut open, &mut d)?;
            }
        }
        let out = enc.encode(&frame)?;
        let t3 = Instant::now();
        open.push_back((t0, t2));
        if let Some(b) = out {
            emit(&b, &mut file, &mut open, &mut d)?;
        }
        d.parse.push(t1 - t0);
        d.render.push(t2 - t1);
        d.encode.push(t3 - t2);
        d.frames += 1;
    }
    if let Some(b) = enc.finish()? {
        emit(&b, &mut file, &mut open, &mut d)?;
    }
    d.took = start.elapsed();
    Ok(d)
}

/// The screen as the parser service sends it: every cell with colours
/// resolved, dim text mixed towards the background, attribute bits, and
/// the cursor where it shows.
pub fn snapshot(s: &vt100::Screen, seq: u64, pts_us: u64) -> Snapshot {
    let (rows, cols) = s.size();
    let mut cells = Vec::with_capacity(rows as usize * cols as usize);
    for r in 0..rows {
        for c in 0..cols {
            cells.push(match s.cell(r, c) {
                None => Cell(' ', DEFAULT_FG, DEFAULT_BG, 0),
                Some(c) => {
                    let ch = c.contents().chars().next().unwrap_or(' ');
                    let bg = resolve(c.bgcolor(), DEFAULT_BG);
                    let mut fg = resolve(c.fgcolor(), DEFAULT_FG);
                    if c.dim() {
                        fg = [0, 1, 2].map(|i| ((fg[i] as u16 + bg[i] as u16) / 2) as u8);
                    }
                    let bits = [
                        (c.bold(), attr::BOLD),
                        (c.italic(), attr::ITALIC),
                        (c.underline(), attr::UNDERLINE),
                        (c.inverse(), attr::INVERSE),
                    ];
                    Cell(ch, fg, bg, bits.iter().filter(|(on, _)| *on).fold(0, |a, (_, b)| a | b))
                }
            });
        }
    }
    let cursor = (!s.hide_cursor()).then(|| {
        let (r, c) = s.cursor_position();
        (c.min(cols.saturating_sub(1)), r.min(rows.saturating_sub(1)))
    });
    Snapshot { seq, pts_us, cols, rows, cells, cursor }
}
