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
//!
//! A link with a session (see [`crate::session`]) keeps every frame it
//! sends in a replay buffer until the peer acknowledges it, bounded in
//! bytes: when it is full nothing more is written, the queue fills and
//! senders wait, as on a slow link. Its connection may be taken away
//! ([`Outlet::detach`]) and another given ([`Outlet::attach`]): what the
//! peer has not read is written again first, then the queue goes on.
//! Acknowledgements of what this side read go out of band: not numbered,
//! not kept, written by whoever holds the sink next, never behind a full
//! replay buffer.
//!
//! Lock order: the sink (an async lock, held across writes) before the
//! replay buffer (held only to push, pop or copy).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::AcqRel, Ordering::Acquire, Ordering::Release};
use std::sync::Arc;

use futures::{FutureExt, SinkExt};
use tokio::sync::{mpsc, Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::conv::lock;
use crate::envelope::{Envelope, Kind};

/// Envelopes queued towards one link before senders wait.
pub const LINK_QUEUE: usize = 1024;

/// Largest envelope data written inline. Bigger ones are bulk, where the
/// writer task overlapping with the sender is worth more than one wakeup.
pub(crate) const INLINE_MAX: usize = 16 << 10;

/// What a link with a session keeps unacknowledged before it stops
/// writing: the socket buffers both ways, a long path's bandwidth-delay
/// product and the peer's acknowledgement interval (1 MiB) fit with room.
pub const REPLAY_BYTES: usize = 32 << 20;
/// The same in frames, for small ones (each costs its entry).
pub const REPLAY_FRAMES: usize = 64 << 10;

/// What owns a link's sending side, and hears what happens to it.
pub trait Owner: Send + Sync + 'static {
    /// A route announcement of `len` encoded bytes went out.
    fn routes_out(&self, len: usize);
    /// Writing to the link failed; its connection is closed next.
    fn write_failed(&self, e: io::Error);
    /// Closes the link.
    fn hangup(&self);
    /// Resolves once the link is closed.
    fn hungup(&self) -> impl Future<Output = ()> + Send + '_;
    /// Whether the link is closed.
    fn is_hungup(&self) -> bool;
    /// The current connection's token: cancelled when it ends, which
    /// interrupts a write blocked on it (a silent cut).
    fn connection(&self) -> CancellationToken;
    /// The frame acknowledging `n` frames read (links with a session).
    fn ack_frame(&self, _n: u64) -> Option<dial::Frame> {
        None
    }
}

/// The sending side of one link.
pub struct Outlet {
    sink: Mutex<Out>,
    tx: mpsc::Sender<Envelope>,
    /// Envelopes queued and not yet in the sink.
    queued: AtomicUsize,
    /// Asks the writer task to finish a flush a sender started, to write
    /// an acknowledgement, or to resend after a connection came back.
    kick: Notify,
    /// Links with a session: what was sent and not acknowledged.
    replay: Option<std::sync::Mutex<Replay>>,
    /// Room made in the replay buffer, or a connection attached.
    room: Notify,
    /// Frames read from the peer, to acknowledge, and as acknowledged.
    ack_owed: AtomicU64,
    ack_sent: AtomicU64,
    /// The last frame to write before closing, if any.
    farewell: std::sync::Mutex<Option<dial::Frame>>,
}

/// The sink, while there is a connection.
struct Out {
    sink: Option<dial::FrameSink>,
    /// The replay buffer is to be written before anything new.
    resend: bool,
}

/// Frames sent on a session and not acknowledged, oldest first.
#[derive(Default)]
pub(crate) struct Replay {
    frames: VecDeque<dial::Frame>,
    bytes: usize,
    /// Frames acknowledged: the first kept is number `acked + 1`.
    acked: u64,
}

impl Replay {
    /// Frames numbered so far.
    pub(crate) fn sent(&self) -> u64 {
        self.acked + self.frames.len() as u64
    }

    fn has_room(&self) -> bool {
        self.bytes < REPLAY_BYTES && self.frames.len() < REPLAY_FRAMES
    }

    /// The peer has read the first `n` frames: drops them. An `n` beyond
    /// what was sent, or before what was acknowledged, is a lie.
    fn ack(&mut self, n: u64) -> Result<(), String> {
        if n > self.sent() {
            return Err(format!("acknowledges {n} frames, {} sent", self.sent()));
        }
        while self.acked < n {
            let Some(f) = self.frames.pop_front() else { break };
            self.bytes -= f.len();
            self.acked += 1;
        }
        Ok(())
    }
}

/// What [`Outlet::try_inline`] did with an envelope.
// Boxing the envelope would cost an allocation per message on the path
// this exists to make cheap.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Inline {
    /// Written (or left in the sink for the writer task to flush).
    Sent,
    /// The link failed while writing; the envelope if it was not taken
    /// (with a session, one taken is in the replay buffer).
    Failed(io::Error, Option<Envelope>),
    /// Not now: queue it.
    Busy(Envelope),
}

impl Outlet {
    /// An outlet over `sink`, keeping a replay buffer if `session`, and
    /// the queue its writer task drains.
    pub(crate) fn new(sink: dial::FrameSink, session: bool) -> (Arc<Outlet>, mpsc::Receiver<Envelope>) {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        let o = Outlet {
            sink: Mutex::new(Out { sink: Some(sink), resend: false }),
            tx,
            queued: AtomicUsize::new(0),
            kick: Notify::new(),
            replay: session.then(Default::default),
            room: Notify::new(),
            ack_owed: AtomicU64::new(0),
            ack_sent: AtomicU64::new(0),
            farewell: Default::default(),
        };
        (Arc::new(o), rx)
    }

    /// Writes `env` now if the link is idle and it is small.
    pub(crate) fn try_inline(&self, owner: &impl Owner, env: Envelope) -> Inline {
        if env.data.len() > INLINE_MAX || self.queued.load(Acquire) != 0 {
            return Inline::Busy(env);
        }
        let Ok(mut out) = self.sink.try_lock() else { return Inline::Busy(env) };
        // Under the sink's lock: the writer task decrements only after
        // putting what it took in the sink, so zero means nothing queued
        // before this envelope is still unwritten.
        if self.queued.load(Acquire) != 0 || out.resend || !self.has_room() {
            return Inline::Busy(env);
        }
        let Some(sink) = out.sink.as_mut() else { return Inline::Busy(env) };
        match futures::future::poll_fn(|cx| sink.poll_ready_unpin(cx)).now_or_never() {
            Some(Ok(())) => {}
            Some(Err(e)) => return Inline::Failed(e, Some(env)),
            None => return Inline::Busy(env),
        }
        if let Err(e) = sink.start_send_unpin(self.numbered(encode(owner, &env))) {
            return Inline::Failed(e, None);
        }
        match futures::future::poll_fn(|cx| sink.poll_flush_unpin(cx)).now_or_never() {
            Some(Ok(())) => Inline::Sent,
            Some(Err(e)) => Inline::Failed(e, None),
            None => {
                self.kick.notify_one();
                Inline::Sent
            }
        }
    }

    /// Queues `env`, waiting while the queue is full. Dropped while it
    /// waits (a reader whose connection ended), it queues nothing and
    /// leaves the count as it was.
    pub(crate) async fn queue(&self, env: Envelope) -> Result<(), Envelope> {
        self.queued.fetch_add(1, AcqRel);
        let mut counted = Counted { n: &self.queued, queued: false };
        let res = self.tx.send(env).await.map_err(|e| e.0);
        // Once in the queue, the writer task takes it off the count.
        counted.queued = res.is_ok();
        res
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

    /// Keeps a frame about to be sent, if the link has a session.
    fn numbered(&self, f: dial::Frame) -> dial::Frame {
        if let Some(r) = &self.replay {
            let mut r = lock(r);
            r.bytes += f.len();
            r.frames.push_back(f.clone());
        }
        f
    }

    fn has_room(&self) -> bool {
        self.replay.as_ref().is_none_or(|r| lock(r).has_room())
    }

    /// The peer has read `n` frames of the session.
    pub(crate) fn acked(&self, n: u64) -> Result<(), String> {
        let Some(r) = &self.replay else { return Err("acknowledgement on a link without a session".into()) };
        lock(r).ack(n)?;
        self.room.notify_one();
        Ok(())
    }

    /// Frames numbered so far, and the replay buffer's frames and bytes.
    pub(crate) fn replay_state(&self) -> Option<(u64, usize, usize)> {
        let r = lock(self.replay.as_ref()?);
        Some((r.sent(), r.frames.len(), r.bytes))
    }

    /// Acknowledges `n` frames read: now if the sink is free, else by the
    /// writer task, soon.
    pub(crate) fn ack(&self, owner: &impl Owner, n: u64) {
        self.ack_owed.fetch_max(n, AcqRel);
        if let Ok(mut out) = self.sink.try_lock() {
            if let (Some(sink), Some(f)) = (out.sink.as_mut(), self.owed_ack(owner)) {
                let written =
                    futures::future::poll_fn(|cx| sink.poll_ready_unpin(cx)).now_or_never().is_some_and(|r| r.is_ok())
                        && sink.start_send_unpin(f).is_ok();
                if written && futures::future::poll_fn(|cx| sink.poll_flush_unpin(cx)).now_or_never().is_some() {
                    return;
                }
                if !written {
                    // Not taken: owed again.
                    self.ack_sent.store(0, Release);
                }
            }
        }
        self.kick.notify_one();
    }

    /// The acknowledgement owed, if any, counted as sent.
    fn owed_ack(&self, owner: &impl Owner) -> Option<dial::Frame> {
        let owed = self.ack_owed.load(Acquire);
        (owed > self.ack_sent.swap(owed, AcqRel)).then(|| owner.ack_frame(owed)).flatten()
    }

    /// Takes the connection away (it was lost); the writer task waits
    /// for another.
    pub(crate) async fn detach(&self) {
        self.sink.lock().await.sink = None;
    }

    /// Gives the link a new connection, over which the peer has read
    /// `peer_received` frames and this side `received`: what the peer has
    /// not read is written again first.
    pub(crate) async fn attach(&self, sink: dial::FrameSink, peer_received: u64, received: u64) -> Result<(), String> {
        let mut out = self.sink.lock().await;
        if let Some(r) = &self.replay {
            let mut r = lock(r);
            if peer_received < r.acked {
                return Err(format!("read {peer_received} frames, {} acknowledged before", r.acked));
            }
            r.ack(peer_received)?;
        }
        self.ack_owed.store(received, Release);
        self.ack_sent.store(received, Release);
        *out = Out { sink: Some(sink), resend: true };
        drop(out);
        self.room.notify_one();
        self.kick.notify_one();
        Ok(())
    }

    /// Sets the last frame the writer task writes before it closes the
    /// link (the session's end, said to a peer that would otherwise wait
    /// for it); set before the link is hung up.
    pub(crate) fn farewell(&self, f: dial::Frame) {
        *lock(&self.farewell) = Some(f);
    }
}

/// One envelope counted as queued: uncounted when dropped unless it
/// went into the queue.
struct Counted<'a> {
    n: &'a AtomicUsize,
    queued: bool,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if !self.queued {
            self.n.fetch_sub(1, AcqRel);
        }
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
/// before one flush. Also finishes flushes that senders started, writes
/// acknowledgements, and after a connection came back writes again what
/// the peer has not read. Ends, hanging the owner up, when the owner
/// hangs up, or when the link fails and has no session to wait in.
pub(crate) async fn write_link<O: Owner>(owner: Arc<O>, out: Arc<Outlet>, mut rx: mpsc::Receiver<Envelope>) {
    // Taken from the queue, not yet written: the replay buffer was full.
    let mut pending: Option<Envelope> = None;
    loop {
        if pending.is_none() {
            pending = tokio::select! {
                _ = owner.hungup() => break,
                _ = out.kick.notified() => None,
                e = rx.recv() => match e { Some(e) => Some(e), None => break },
            };
        }
        let mut guard = out.sink.lock().await;
        // Under the sink's lock: a connection attached meanwhile has its
        // token set before its sink.
        let conn = owner.connection();
        let Out { sink, resend } = &mut *guard;
        let Some(s) = sink.as_mut() else {
            // No connection: wait for one.
            drop(guard);
            tokio::select! {
                _ = owner.hungup() => break,
                _ = out.room.notified() => {}
            }
            continue;
        };
        let mut taken = 0;
        let res = tokio::select! {
            r = write_batch(&*owner, &out, s, resend, &mut pending, &mut rx, &mut taken) => r,
            _ = conn.cancelled() => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "connection ended")),
        };
        out.queued.fetch_sub(taken, AcqRel);
        if let Err(e) = res {
            if owner.is_hungup() {
                // Keep the sink for the last words and the close.
                drop(guard);
                break;
            }
            if conn.is_cancelled() {
                *sink = None;
            } else {
                owner.write_failed(e);
            }
            if out.replay.is_none() {
                break;
            }
            // Dropped: a session waits for its next connection, and sends
            // the frames written into this one again.
            *sink = None;
            continue;
        }
        drop(guard);
        if pending.is_some() {
            // The replay buffer is full: wait for acknowledgements.
            tokio::select! {
                _ = owner.hungup() => break,
                _ = out.room.notified() => {}
                _ = out.kick.notified() => {}
            }
        }
    }
    // The farewell and the close are bounded: the socket may be dead.
    let last = lock(&out.farewell).take();
    let close = async {
        if let Some(s) = out.sink.lock().await.sink.as_mut() {
            if let Some(f) = last {
                let _ = s.feed(f).await;
            }
            let _ = s.close().await;
        }
    };
    let _ = tokio::time::timeout(CLOSE_LIMIT, close).await;
    owner.hangup();
}

/// How long a link's last words and close may take.
const CLOSE_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// One batch of the writer task: a resend if due, an acknowledgement if
/// owed, then `pending` and whatever else is queued while the replay
/// buffer has room, then one flush. `taken` counts the envelopes that
/// left the queue's count (in the sink, or in the replay buffer).
async fn write_batch<O: Owner>(
    owner: &O,
    out: &Outlet,
    sink: &mut dial::FrameSink,
    resend: &mut bool,
    pending: &mut Option<Envelope>,
    rx: &mut mpsc::Receiver<Envelope>,
    taken: &mut usize,
) -> io::Result<()> {
    if *resend {
        let again: Vec<dial::Frame> = match &out.replay {
            Some(r) => lock(r).frames.iter().cloned().collect(),
            None => Vec::new(),
        };
        for f in again {
            sink.feed(f).await?;
        }
        *resend = false;
    }
    if let Some(f) = out.owed_ack(owner) {
        sink.feed(f).await?;
    }
    while let Some(env) = pending.take() {
        if !out.has_room() {
            *pending = Some(env);
            break;
        }
        *taken += 1;
        sink.feed(out.numbered(encode(owner, &env))).await?;
        *pending = rx.try_recv().ok();
    }
    sink.flush().await
}
