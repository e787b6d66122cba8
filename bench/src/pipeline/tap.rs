//! Taps: pipeline stages that pass every message on unchanged and note
//! when it went by, so the time each stage takes can be read off.
//!
//! A tap sits right after a stage, on that stage's machine, so the links
//! the seed's pipeline crosses stay the same; it adds one delivery inside
//! a router (microseconds) per message. Frames are not kept (a megabyte
//! each): only when they passed. Snapshots and MP4 chunks are kept to be
//! read after the run (their `pts_us`; the MP4's fragments). A session's
//! closing `End` (see mesh_frame) passes without a note.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use ns::conv::{Conv, Msg, Service};

/// Where a tap sits: after which stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Pty,
    Parser,
    Gpu,
    /// After the encoder, on the display's machine: what the display gets.
    Encoder,
}

/// At most this many messages are noted per run, so memory stays bounded
/// whatever the run's length.
const MAX_NOTES: usize = 200_000;

/// What the taps saw: (stage, when, the message if kept).
#[derive(Default)]
pub struct Notes(Mutex<Vec<(Stage, Instant, Bytes)>>);

impl Notes {
    fn note(&self, stage: Stage, data: &Bytes) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < MAX_NOTES {
            let keep = if stage == Stage::Gpu { Bytes::new() } else { data.clone() };
            v.push((stage, Instant::now(), keep));
        }
    }

    /// Everything noted so far, cleared for the next run.
    pub fn take(&self) -> Vec<(Stage, Instant, Bytes)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The tap service for one stage.
pub struct Tap {
    pub stage: Stage,
    pub notes: Arc<Notes>,
}

impl Service for Tap {
    fn serve(&self, mut conv: Conv) -> BoxFuture<'static, ()> {
        let (stage, notes) = (self.stage, self.notes.clone());
        Box::pin(async move {
            while let Some(m) = conv.rx.recv().await {
                match m {
                    Msg::Data(b) => {
                        // A session's End is no snapshot or frame: the
                        // analysis pairs those by their order.
                        let end = matches!(stage, Stage::Parser | Stage::Gpu) && mesh_frame::end(&b).is_some();
                        if !end {
                            notes.note(stage, &b);
                        }
                        if conv.tx.send(b).await.is_err() {
                            break;
                        }
                    }
                    Msg::Eof => {
                        conv.tx.eof().await;
                        break;
                    }
                    Msg::Error(e) => {
                        conv.tx.send_error(&e).await;
                        break;
                    }
                }
            }
        })
    }
}

/// Counts the frames (samples) in a fragmented MP4 stream as its bytes
/// come, split anyhow: each complete `moof` box adds the sample counts of
/// its `traf/trun` boxes.
#[derive(Default)]
pub struct Fragments {
    buf: Vec<u8>,
}

fn be32(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as u64)
}

/// The boxes directly inside `b`: (type, body).
fn children(b: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let size = be32(b, at)? as usize;
        if size < 8 || at + size > b.len() {
            return None;
        }
        let item = (&b[at + 4..at + 8], &b[at + 8..at + size]);
        at += size;
        Some(item)
    })
}

impl Fragments {
    /// Adds `data`; returns the samples of the fragments it completed.
    pub fn push(&mut self, data: &[u8]) -> u64 {
        self.buf.extend_from_slice(data);
        let mut samples = 0;
        while let (Some(size), Some(kind)) = (be32(&self.buf, 0), self.buf.get(4..8)) {
            // 64-bit sizes and to-the-end boxes do not occur in fragments;
            // treat them as the rest of the stream.
            let size = if size < 8 { self.buf.len() } else { size as usize };
            if self.buf.len() < size {
                break;
            }
            if kind == b"moof" {
                for (k, traf) in children(&self.buf[8..size]) {
                    if k == b"traf" {
                        samples += children(traf)
                            .filter(|(k, _)| *k == b"trun")
                            .filter_map(|(_, trun)| be32(trun, 4))
                            .sum::<u64>();
                    }
                }
            }
            self.buf.drain(..size);
        }
        samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn counts_samples_of_whole_fragments_split_anyhow() {
        let trun = |n: u32| boxed(b"trun", &[[0u8; 4].as_slice(), &n.to_be_bytes(), &[0u8; 8]].concat());
        let moof = boxed(
            b"moof",
            &[boxed(b"mfhd", &[0; 8]), boxed(b"traf", &[boxed(b"tfhd", &[0; 8]), trun(5)].concat())].concat(),
        );
        let stream =
            [boxed(b"ftyp", b"isom"), boxed(b"moov", &[0; 16]), moof.clone(), boxed(b"mdat", &[7; 100]), moof].concat();
        let mut f = Fragments::default();
        let mut total = 0;
        for part in stream.chunks(7) {
            total += f.push(part);
        }
        assert_eq!(total, 10);
    }
}
