//! [`EncoderService`]: the `encoder` service kind.
//!
//! Each conversation is one stream: CBOR [`Frame`]s in, then the
//! session's [`mesh_frame::End`] (the last frame is held until it); MP4
//! out, the init segment first, then fragments, in order; end of input ends
//! the stream (last fragment and index) and then the reply stream. The [`Encoder`]
//! lives on a thread of the conversation's own, fed through a small
//! bounded queue: FFmpeg objects cannot move between the runtime's
//! threads, and encoding must not stall them. When the encoder falls
//! behind the queue fills, the conversation stops reading, and flow
//! control slows the sender.
//!
//! Fragments end at keyframes, and also at most [`MAX_LATENCY`] after
//! their first frame: a terminal often changes and then rests, and its
//! last screen must reach the display while it rests, not at the next
//! keyframe, which may never come.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use mesh_frame::Frame;
use ns::conv::{Conv, Msg, Service};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::encoder::{Encoder, EncoderSettings};

/// Longest a frame waits in an open fragment before the fragment is cut.
/// 200 ms: a rest reaches the display at once to the eye; at 30 frames a
/// second that is five fragments a second, whose headers (about 100 bytes
/// each) cost little.
pub const MAX_LATENCY: Duration = Duration::from_millis(200);

/// Frames queued for the encoder thread: enough to ride out a slow frame,
/// few enough that back-pressure reaches the sender quickly.
const QUEUE: usize = 4;

/// Work for a conversation's encoder thread.
enum Cmd {
    /// One message: a CBOR frame or the session's end, decoded on the
    /// encoder's thread.
    Frame(Bytes),
    /// Cut the open fragment.
    Cut,
}

/// What the encoder thread sends back.
enum Out {
    Chunk(Bytes),
    /// The stream ended: a bad message or an encoder failure.
    Failed(String),
}

/// The `encoder` service: frames in, H.264 in fragmented MP4 out.
#[derive(Clone, Default)]
pub struct EncoderService {
    settings: Arc<Mutex<EncoderSettings>>,
}

impl EncoderService {
    pub fn new(settings: EncoderSettings) -> EncoderService {
        EncoderService { settings: Arc::new(Mutex::new(settings)) }
    }

    /// The settings handle: a change applies to conversations that start
    /// after it (a stream keeps the settings it began with).
    pub fn settings(&self) -> Arc<Mutex<EncoderSettings>> {
        self.settings.clone()
    }

    /// The settings new conversations get.
    pub fn get(&self) -> EncoderSettings {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the settings for new conversations, if valid.
    pub fn set(&self, s: EncoderSettings) -> Result<(), String> {
        s.validate()?;
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = s;
        Ok(())
    }
}

impl Service for EncoderService {
    fn serve(&self, conv: Conv) -> BoxFuture<'static, ()> {
        let settings = self.get();
        Box::pin(async move {
            let path = conv.rx.path().clone();
            match run(settings, conv).await {
                Ok(()) => debug!(conv = %path, "encoder: stream ended"),
                Err(e) => warn!(conv = %path, "encoder: {e}"),
            }
        })
    }
}

/// The encoder's thread: commands in, chunks out, until the command
/// channel closes (end of input: finish the stream) or a failure.
fn encode_thread(settings: EncoderSettings, mut cmds: mpsc::Receiver<Cmd>, out: mpsc::Sender<Out>) {
    let mut enc = match Encoder::new(settings) {
        Ok(e) => e,
        Err(e) => {
            let _ = out.blocking_send(Out::Failed(e.to_string()));
            return;
        }
    };
    let send = |r: Result<Option<Bytes>, crate::Error>| -> Result<(), String> {
        match r {
            Ok(Some(b)) => {
                let _ = out.blocking_send(Out::Chunk(b));
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    };
    let mut failed = None;
    while let Some(cmd) = cmds.blocking_recv() {
        let r = match cmd {
            Cmd::Frame(b) => match mesh_frame::end(&b) {
                Some(end) => send(enc.hold_until(end.end_us)),
                None => match mesh_frame::decode::<Frame>(&b) {
                    Ok(f) => send(enc.encode(&f)),
                    Err(e) => Err(e.to_string()),
                },
            },
            Cmd::Cut => send(enc.cut()),
        };
        if let Err(e) = r {
            failed = Some(e);
            break;
        }
    }
    // End the stream properly even after a bad message, so what was
    // recorded up to it stays a complete file.
    if let Err(e) = send(enc.finish()) {
        failed.get_or_insert(e);
    }
    if enc.frames() > 0 {
        debug!(
            frames = enc.frames(),
            ms_per_frame = enc.busy().as_secs_f64() * 1e3 / enc.frames() as f64,
            "encoder: done"
        );
    }
    if let Some(e) = failed {
        let _ = out.blocking_send(Out::Failed(e));
    }
}

/// Sends `b`, split into messages no larger than the mesh allows.
async fn send_chunk(tx: &ns::conv::ConvWriter, mut b: Bytes) -> Result<(), String> {
    while !b.is_empty() {
        let part = b.split_to(b.len().min(ns::envelope::MAX_MSG));
        tx.send(part).await?;
    }
    Ok(())
}

async fn run(settings: EncoderSettings, conv: Conv) -> Result<(), String> {
    let Conv { mut rx, tx } = conv;
    let (cmd_tx, cmd_rx) = mpsc::channel(QUEUE);
    // The thread makes at most one chunk per command, at most QUEUE
    // commands wait for it, and the loop below drains output before it
    // sends another command: so this bound is never reached while we wait
    // on the thread, and neither side can block the other for good.
    let (out_tx, mut out_rx) = mpsc::channel(QUEUE + 4);
    std::thread::Builder::new()
        .name("mesh-encoder".into())
        .spawn(move || {
            // A panic must not pass for a clean end of the stream.
            let report = out_tx.clone();
            let run = std::panic::AssertUnwindSafe(|| encode_thread(settings, cmd_rx, out_tx));
            if std::panic::catch_unwind(run).is_err() {
                let _ = report.blocking_send(Out::Failed("encoder thread panicked".into()));
            }
        })
        .map_err(|e| format!("starting the encoder thread: {e}"))?;

    let mut cmd_tx = Some(cmd_tx);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut failure = None;
    loop {
        let cut_at = deadline.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            // Output first: it frees the encoder and keeps order simple.
            biased;
            o = out_rx.recv() => match o {
                Some(Out::Chunk(b)) => {
                    if let Err(e) = send_chunk(&tx, b).await {
                        // Downstream is gone: stop; the thread ends when
                        // its queue closes.
                        return Err(format!("sending: {e}"));
                    }
                }
                Some(Out::Failed(e)) => {
                    failure = Some(e);
                    cmd_tx = None;
                }
                None => break, // the thread is done: all output is out
            },
            _ = tokio::time::sleep_until(cut_at), if deadline.is_some() && cmd_tx.is_some() => {
                deadline = None;
                if let Some(c) = &cmd_tx {
                    let _ = c.send(Cmd::Cut).await;
                }
            }
            m = rx.recv(), if cmd_tx.is_some() => match m {
                Some(Msg::Data(b)) => {
                    if let Some(c) = &cmd_tx {
                        if c.send(Cmd::Frame(b)).await.is_err() {
                            cmd_tx = None; // the thread failed; its report follows
                        }
                    }
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + MAX_LATENCY);
                }
                // End of input: closing the queue finishes the stream.
                Some(Msg::Eof) | None => cmd_tx = None,
                Some(Msg::Error(e)) => {
                    // The conversation failed: nobody will read a trailer.
                    return Err(format!("conversation failed: {e}"));
                }
            },
        }
    }
    tx.eof().await;
    match failure {
        // Ending here drops our reader: the sender's next write fails with
        // a hangup, as for any service that stops listening.
        Some(e) => Err(format!("ending the conversation: {e}")),
        None => Ok(()),
    }
}
