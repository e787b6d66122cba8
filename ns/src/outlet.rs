//! A link's sending side: its frame sink, a bounded queue, and the writer
//! task that drains the queue.
//!
//! A small envelope sent while the link is idle (nothing queued, nobody
//! writing, the sink below its buffer limit) is written by the sender
//! itself, at once: a round trip over one hop then costs no hand-off to
//! the writer task on either side, which is most of what a 64-byte RPC
//! pays beyond the kernel's own work. Everything else goes through the
//! queue, so a slow link still slows its senders (the queue is bounded),
//! and big frames are written by the writer task while the sender, often
//! the reader of another link, goes on reading.
//!
//! Order is kept: an envelope counts as queued from before it enters the
//! queue until it is in the sink, and a sender writes inline only when,
//! holding the sink, it sees nothing queued. A sender never waits on the
//! socket while it holds the sink: it polls the flush once, and when the
//! socket is full it leaves the rest to the writer task, which it wakes.
//!
//! The outlet knows nothing of terminals: what it reports (announcements
//! counted, a failed write, the link closed) goes to its [`Owner`], which
//! the terminal is.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::AcqRel, Ordering::Acquire};
use std::sync::Arc;

use futures::{FutureExt, SinkExt};
use tokio::sync::{mpsc, Mutex, Notify};

use crate::envelope::{Envelope, Kind};

/// Envelopes queued towards one link before senders wait.
pub const LINK_QUEUE: usize = 1024;

/// Largest envelope data written inline. Bigger ones are bulk, where the
/// writer task overlapping with the sender is worth more than one wakeup.
pub(crate) const INLINE_MAX: usize = 16 << 10;

/// What owns a link's sending side, and hears what happens to it.
pub trait Owner: Send + Sync + 'static {
    /// A route announcement of `len` encoded bytes went out.
    fn routes_out(&self, len: usize);
    /// Writing to the link failed; the link is closed next.
    fn write_failed(&self, e: std::io::Error);
    /// Closes the link.
    fn hangup(&self);
    /// Resolves once the link is closed.
    fn hungup(&self) -> impl Future<Output = ()> + Send + '_;
}

/// The sending side of one link.
pub struct Outlet {
    sink: Mutex<dial::FrameSink>,
    tx: mpsc::Sender<Envelope>,
    /// Envelopes queued and not yet in the sink.
    queued: AtomicUsize,
    /// Asks the writer task to finish a flush a sender started.
    kick: Notify,
}

/// What [`Outlet::try_inline`] did with an envelope.
// Boxing the envelope would cost an allocation per message on the path
// this exists to make cheap.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Inline {
    /// Written (or left in the sink for the writer task to flush).
    Sent,
    /// The link failed while writing.
    Failed(std::io::Error),
    /// Not now: queue it.
    Busy(Envelope),
}

impl Outlet {
    /// An outlet over `sink`, and the queue its writer task drains.
    pub(crate) fn new(sink: dial::FrameSink) -> (Arc<Outlet>, mpsc::Receiver<Envelope>) {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        let o = Outlet { sink: Mutex::new(sink), tx, queued: AtomicUsize::new(0), kick: Notify::new() };
        (Arc::new(o), rx)
    }

    /// Writes `env` now if the link is idle and it is small.
    pub(crate) fn try_inline(&self, owner: &impl Owner, env: Envelope) -> Inline {
        if env.data.len() > INLINE_MAX || self.queued.load(Acquire) != 0 {
            return Inline::Busy(env);
        }
        let Ok(mut sink) = self.sink.try_lock() else { return Inline::Busy(env) };
        // Under the sink's lock: the writer task decrements only after
        // putting what it took in the sink, so zero means nothing queued
        // before this envelope is still unwritten.
        if self.queued.load(Acquire) != 0 {
            return Inline::Busy(env);
        }
        match futures::future::poll_fn(|cx| sink.poll_ready_unpin(cx)).now_or_never() {
            Some(Ok(())) => {}
            Some(Err(e)) => return Inline::Failed(e),
            None => return Inline::Busy(env),
        }
        if let Err(e) = sink.start_send_unpin(encode(owner, &env)) {
            return Inline::Failed(e);
        }
        match futures::future::poll_fn(|cx| sink.poll_flush_unpin(cx)).now_or_never() {
            Some(Ok(())) => Inline::Sent,
            Some(Err(e)) => Inline::Failed(e),
            None => {
                self.kick.notify_one();
                Inline::Sent
            }
        }
    }

    /// Queues `env`, waiting while the queue is full.
    pub(crate) async fn queue(&self, env: Envelope) -> Result<(), Envelope> {
        self.queued.fetch_add(1, AcqRel);
        self.tx.send(env).await.map_err(|e| {
            self.queued.fetch_sub(1, AcqRel);
            e.0
        })
    }

    /// Queues `env` if there is room now, else gives it back.
    #[allow(clippy::result_large_err)] // as tokio's own `try_send`
    pub(crate) fn try_queue(&self, env: Envelope) -> Result<(), Envelope> {
        self.queued.fetch_add(1, AcqRel);
        self.tx.try_send(env).map_err(|e| {
            self.queued.fetch_sub(1, AcqRel);
            e.into_inner()
        })
    }
}

/// An envelope as its link frame; announcements are counted as they go.
fn encode(owner: &impl Owner, env: &Envelope) -> dial::Frame {
    let frame = env.encode_frame();
    if matches!(env.kind, Kind::Routes(_)) {
        owner.routes_out(frame.len());
    }
    frame
}

/// Drains the queue into the link, batching: everything queued is written
/// before one flush. Also finishes flushes that senders started. Ends,
/// hanging the owner up, when the link fails or the owner hangs up.
pub(crate) async fn write_link<O: Owner>(owner: Arc<O>, out: Arc<Outlet>, mut rx: mpsc::Receiver<Envelope>) {
    loop {
        let first = tokio::select! {
            _ = owner.hungup() => break,
            _ = out.kick.notified() => None,
            e = rx.recv() => match e { Some(e) => Some(e), None => break },
        };
        let mut sink = out.sink.lock().await;
        let mut taken = 0;
        let mut res = Ok(());
        if let Some(env) = first {
            taken += 1;
            res = sink.feed(encode(&*owner, &env)).await;
            while res.is_ok() {
                match rx.try_recv() {
                    Ok(env) => {
                        taken += 1;
                        res = sink.feed(encode(&*owner, &env)).await;
                    }
                    Err(_) => break,
                }
            }
        }
        let res = res.and(sink.flush().await);
        out.queued.fetch_sub(taken, AcqRel);
        drop(sink);
        if let Err(e) = res {
            owner.write_failed(e);
            break;
        }
    }
    let _ = out.sink.lock().await.close().await;
    owner.hangup();
}
