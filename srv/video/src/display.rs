//! [`DisplayService`]: the `display` service kind.
//!
//! Each conversation is one recording: MP4 bytes in (an init segment, then
//! fragments, as [`crate::EncoderService`] sends them, in messages of any
//! split). The output file is truncated when a recording begins and every
//! message is appended and flushed as it comes, so the file is always a
//! whole init segment plus whole or partial fragments: a fragmented MP4
//! plays up to its last complete fragment while it is still being written.
//!
//! A newer recording takes the file over: an older conversation still
//! sending is ended (its sender sees a hangup), since two streams cannot
//! share one file.
//!
//! The latest picture: a demuxer on a thread of the recording's own reads
//! the same bytes (FFmpeg's MP4 demuxer, from memory, as they arrive) and
//! keeps the packets since the last keyframe; [`DisplayService::latest_png`]
//! decodes them when asked.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::future::BoxFuture;
use ns::conv::{Conv, Msg, Service};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::avio::Demuxer;
use crate::boxes::BoxScanner;
use crate::picture::{self, Gop};

/// The most bytes of packets kept for the latest picture. A stream from
/// the encoder has a keyframe every few seconds, far below this; a stream
/// without keyframes must not grow without end.
const MAX_GOP_BYTES: usize = 64 << 20;

/// Chunks queued for a recording's demuxer.
const DEMUX_QUEUE: usize = 64;

/// The `display` service: records the video to a file and keeps its latest
/// picture. Clones share one display.
#[derive(Clone)]
pub struct DisplayService {
    inner: Arc<Inner>,
}

struct Inner {
    output: PathBuf,
    /// The output file and the recording that owns it.
    file: tokio::sync::Mutex<Option<(u64, tokio::fs::File)>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Counts recordings begun; the newest owns the file.
    generation: u64,
    recording: bool,
    bytes: u64,
    fragments: u64,
    frames: u64,
    size: Option<(u32, u32)>,
    last_error: Option<String>,
    /// Packets from the last keyframe on: the latest picture.
    gop: Option<Gop>,
    /// Counts packets taken into `gop`, over all recordings: the PNG
    /// cache is good while it stands still.
    serial: u64,
    png: Option<(u64, Arc<Vec<u8>>)>,
}

impl DisplayService {
    /// A display recording to `output`. Nothing is created until the first
    /// recording begins.
    pub fn new(output: PathBuf) -> DisplayService {
        DisplayService {
            inner: Arc::new(Inner { output, file: tokio::sync::Mutex::new(None), state: Mutex::new(State::default()) }),
        }
    }

    /// The file recordings go to.
    pub fn output(&self) -> &Path {
        &self.inner.output
    }

    /// The latest picture seen, as PNG; `None` before the first picture.
    /// The picture of the previous recording stays until the new one has
    /// its first.
    ///
    /// Decodes up to one keyframe interval (a few milliseconds for a
    /// terminal) on the calling thread when the picture changed since the
    /// last call; from async code, call it in `spawn_blocking`.
    pub fn latest_png(&self) -> Option<Vec<u8>> {
        let (serial, gop) = {
            let st = self.inner.state();
            if let Some((s, png)) = &st.png {
                if *s == st.serial {
                    return Some(png.to_vec());
                }
            }
            (st.serial, st.gop.clone()?)
        };
        let png = match picture::decode_last(&gop).and_then(|rgb| picture::png(&rgb)) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                warn!(output = %self.inner.output.display(), "display: latest picture: {e}");
                return None;
            }
        };
        let mut st = self.inner.state();
        if st.serial == serial {
            st.png = Some((serial, png.clone()));
        }
        Some(png.to_vec())
    }

    /// One `key value` line each: output, state, recordings, bytes,
    /// fragments, frames, size, and the last error if any.
    pub fn status(&self) -> String {
        let st = self.inner.state();
        let mut s = String::new();
        let _ = writeln!(s, "output {}", self.inner.output.display());
        let _ = writeln!(s, "state {}", if st.recording { "recording" } else { "idle" });
        let _ = writeln!(s, "recordings {}", st.generation);
        let _ = writeln!(s, "bytes {}", st.bytes);
        let _ = writeln!(s, "fragments {}", st.fragments);
        let _ = writeln!(s, "frames {}", st.frames);
        if let Some((w, h)) = st.size {
            let _ = writeln!(s, "size {w}x{h}");
        }
        if let Some(e) = &st.last_error {
            let _ = writeln!(s, "error {e}");
        }
        s
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned lock is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Begins a recording: its generation.
    fn begin(&self) -> u64 {
        let mut st = self.state();
        st.generation += 1;
        st.recording = true;
        st.bytes = 0;
        st.fragments = 0;
        st.frames = 0;
        st.size = None;
        st.last_error = None;
        st.generation
    }

    /// Whether recording `generation` is still the newest.
    fn current(&self, generation: u64) -> bool {
        self.state().generation == generation
    }
}

impl Service for DisplayService {
    fn serve(&self, conv: Conv) -> BoxFuture<'static, ()> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let path = conv.rx.path().clone();
            let generation = inner.begin();
            let r = record(&inner, generation, conv).await;
            let mut st = inner.state();
            if st.generation == generation {
                st.recording = false;
                if let Err(e) = &r {
                    st.last_error = Some(e.clone());
                }
            }
            drop(st);
            match r {
                Ok(()) => debug!(conv = %path, output = %inner.output.display(), "display: recording ended"),
                Err(e) => warn!(conv = %path, output = %inner.output.display(), "display: {e}"),
            }
        })
    }
}

/// Opens (truncates) the output for recording `generation`, unless a
/// newer one began meanwhile.
async fn open(inner: &Inner, generation: u64) -> Result<(), String> {
    let mut slot = inner.file.lock().await;
    if !inner.current(generation) {
        return Err("superseded by a newer recording".into());
    }
    let out = &inner.output;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await.map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let f = tokio::fs::File::create(out).await.map_err(|e| format!("{}: {e}", out.display()))?;
    *slot = Some((generation, f));
    Ok(())
}

/// Appends `b` to the output and flushes it, if recording `generation`
/// still owns the file.
async fn append(inner: &Inner, generation: u64, b: &[u8]) -> Result<(), String> {
    let mut slot = inner.file.lock().await;
    let Some((_, f)) = slot.as_mut().filter(|(g, _)| *g == generation) else {
        return Err("superseded by a newer recording".into());
    };
    let out = &inner.output;
    f.write_all(b).await.map_err(|e| format!("{}: {e}", out.display()))?;
    // Hands the bytes to the kernel now: readers of the file see them.
    f.flush().await.map_err(|e| format!("{}: {e}", out.display()))
}

/// Closes the output if recording `generation` owns it.
async fn close(inner: &Inner, generation: u64) {
    let mut slot = inner.file.lock().await;
    if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
        if let Some((_, f)) = slot.take() {
            if let Err(e) = f.sync_all().await {
                warn!(output = %inner.output.display(), "display: sync: {e}");
            }
        }
    }
}

async fn record(inner: &Arc<Inner>, generation: u64, conv: Conv) -> Result<(), String> {
    let Conv { mut rx, tx } = conv;
    open(inner, generation).await?;
    // The demuxer starts with the first valid chunk: a refused stream
    // costs no thread.
    let mut chunks: Option<mpsc::Sender<Bytes>> = None;
    let mut demuxer: Option<oneshot::Receiver<()>> = None;
    let mut scanner = BoxScanner::new();
    let mut result = Ok(());
    while let Some(m) = rx.recv().await {
        match m {
            Msg::Data(b) => {
                let moofs = match scanner.push(&b) {
                    Ok(n) => n,
                    Err(e) => {
                        result = Err(format!("bad message: {e}"));
                        break;
                    }
                };
                if let Err(e) = append(inner, generation, &b).await {
                    result = Err(e);
                    break;
                }
                {
                    let mut st = inner.state();
                    if st.generation == generation {
                        st.bytes += b.len() as u64;
                        st.fragments += moofs;
                    }
                }
                if demuxer.is_none() {
                    let (tx, done) = start_demuxer(inner, generation);
                    chunks = tx;
                    demuxer = Some(done);
                }
                if let Some(c) = &chunks {
                    if c.send(b).await.is_err() {
                        chunks = None; // the demuxer gave up; it said why
                    }
                }
            }
            Msg::Eof => break,
            Msg::Error(e) => {
                result = Err(format!("conversation failed: {e}"));
                break;
            }
        }
    }
    // End of the demuxer's input: it takes the rest and stops. Waiting for
    // it makes the status and picture final when the recording ends.
    drop(chunks);
    if let Some(done) = demuxer {
        let _ = done.await;
    }
    close(inner, generation).await;
    if result.is_ok() {
        tx.eof().await;
    }
    result
}

/// Starts the demuxer thread of recording `generation`: its input, and a
/// signal when it is done. Without a thread the file still records; only
/// the picture is missing.
fn start_demuxer(inner: &Arc<Inner>, generation: u64) -> (Option<mpsc::Sender<Bytes>>, oneshot::Receiver<()>) {
    let (chunks, chunk_rx) = mpsc::channel(DEMUX_QUEUE);
    let (done_tx, done) = oneshot::channel();
    let inner = inner.clone();
    let started = std::thread::Builder::new().name("mesh-display".into()).spawn(move || {
        demux(&inner, generation, chunk_rx);
        let _ = done_tx.send(());
    });
    match started {
        Ok(_) => (Some(chunks), done),
        Err(e) => {
            warn!("display: starting the demuxer thread: {e}");
            (None, done)
        }
    }
}

/// The demuxer thread of recording `generation`: keeps the packets from
/// the last keyframe on, for the latest picture.
fn demux(inner: &Inner, generation: u64, rx: mpsc::Receiver<Bytes>) {
    let fail = |e: String| {
        warn!(output = %inner.output.display(), "display: reading the recording: {e}");
        let mut st = inner.state();
        if st.generation == generation {
            st.last_error = Some(e);
        }
    };
    let mut d = match Demuxer::open(rx) {
        Ok(d) => d,
        Err(e) => return fail(e.to_string()),
    };
    let Some(v) = d.video() else { return fail("no video stream".into()) };
    let extradata = Bytes::from(v.extradata);
    {
        let mut st = inner.state();
        if st.generation == generation {
            st.size = Some((v.width, v.height));
        }
    }
    let mut pkt = ffmpeg_next::Packet::empty();
    loop {
        match d.read(&mut pkt) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return fail(e.to_string()),
        }
        if pkt.stream() != v.index {
            continue;
        }
        let data = Bytes::copy_from_slice(pkt.data().unwrap_or_default());
        let mut st = inner.state();
        if st.generation != generation {
            return; // a newer recording owns the picture now
        }
        st.frames += 1;
        let same = st.gop.as_ref().is_some_and(|g| g.generation == generation);
        if pkt.is_key() {
            st.gop = Some(Gop {
                generation,
                codec: v.codec,
                width: v.width,
                height: v.height,
                extradata: extradata.clone(),
                packets: Vec::new(),
                bytes: 0,
            });
        } else if !same {
            // Not decodable from here: wait for a keyframe, keeping the
            // previous recording's picture meanwhile.
            continue;
        }
        let Some(gop) = st.gop.as_mut() else { continue };
        if gop.bytes + data.len() > MAX_GOP_BYTES {
            st.gop = None;
            continue;
        }
        gop.bytes += data.len();
        gop.packets.push(data);
        st.serial += 1;
    }
}
