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

use std::sync::atomic::{AtomicUsize, Ordering::AcqRel, Ordering::Acquire};
use std::sync::Arc;

use futures::{FutureExt, SinkExt};
use tokio::sync::{mpsc, Mutex, Notify};

use crate::envelope::{Envelope, Kind};
use crate::term::Term;

/// Envelopes queued towards one link before senders wait.
pub const LINK_QUEUE: usize = 1024;

/// Largest envelope data written inline. Bigger ones are bulk, where the
/// writer task overlapping with the sender is worth more than one wakeup.
const INLINE_MAX: usize = 16 << 10;

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
    pub(crate) fn try_inline(&self, term: &Term, env: Envelope) -> Inline {
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
        if let Err(e) = sink.start_send_unpin(encode(term, &env)) {
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
pub(crate) fn encode(term: &Term, env: &Envelope) -> dial::Frame {
    let frame = env.encode_frame();
    if matches!(env.kind, Kind::Routes(_)) {
        term.count_routes(false, frame.len());
    }
    frame
}

/// Drains the queue into the link, batching: everything queued is written
/// before one flush. Also finishes flushes that senders started. Ends,
/// hanging the terminal up, when the link fails or the terminal hangs up.
pub(crate) async fn write_link(term: Arc<Term>, out: Arc<Outlet>, mut rx: mpsc::Receiver<Envelope>) {
    loop {
        let first = tokio::select! {
            _ = term.hungup() => break,
            _ = out.kick.notified() => None,
            e = rx.recv() => match e { Some(e) => Some(e), None => break },
        };
        let mut sink = out.sink.lock().await;
        let mut taken = 0;
        let mut res = Ok(());
        if let Some(env) = first {
            taken += 1;
            res = sink.feed(encode(&term, &env)).await;
            while res.is_ok() {
                match rx.try_recv() {
                    Ok(env) => {
                        taken += 1;
                        res = sink.feed(encode(&term, &env)).await;
                    }
                    Err(_) => break,
                }
            }
        }
        let res = res.and(sink.flush().await);
        out.queued.fetch_sub(taken, AcqRel);
        drop(sink);
        if let Err(e) = res {
            crate::router::warn_link(&term, "write", e);
            break;
        }
    }
    let _ = out.sink.lock().await.close().await;
    term.hangup();
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use futures::StreamExt;

    use super::*;
    use crate::path::Addr;
    use crate::term::TermKind;

    fn env(id: u64, len: usize) -> Envelope {
        let a = Addr::parse("/n/a/svc/x/1").expect("valid");
        let b = Addr::parse("/n/b/svc/y").expect("valid");
        Envelope::new(id, a, b, Kind::Data, Bytes::from(vec![id as u8; len]))
    }

    /// A terminal whose link is a duplex pipe of `room` bytes; the frame
    /// stream of the other end.
    fn linked(room: usize) -> (Arc<Term>, dial::FrameStream) {
        let (ours, theirs) = tokio::io::duplex(room);
        let opts = dial::LinkOptions::default();
        let (tx, _) = dial::framed(ours, &opts);
        let (_, rx) = dial::framed(theirs, &opts);
        let (term, writer) =
            Term::linked("net-b".into(), TermKind::Net("b".parse().expect("valid")), "mem!t".into(), true, tx);
        tokio::spawn(writer);
        (term, rx)
    }

    /// Small envelopes (written inline while the link is idle), big ones
    /// (always queued) and pings (queued by `try_send`), mixed, arrive in
    /// the order they were sent, with the writer task on another thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inline_and_queued_envelopes_keep_their_order() {
        let (term, mut rx) = linked(64 << 10);
        let reader = tokio::spawn(async move {
            let mut ids = Vec::new();
            while let Some(Ok(f)) = rx.next().await {
                ids.push(Envelope::decode(f).expect("a frame we sent").id);
                if ids.len() == 600 {
                    break;
                }
            }
            ids
        });
        for id in 0..600u64 {
            let len = match id % 7 {
                0 => INLINE_MAX + 1,
                3 => 100_000,
                _ => 64,
            };
            if id % 11 == 5 {
                while !term.try_send(env(id, len)) {
                    tokio::task::yield_now().await;
                }
            } else {
                term.send(env(id, len)).await.expect("link up");
            }
        }
        let ids = tokio::time::timeout(Duration::from_secs(20), reader).await.expect("all arrive").expect("reader");
        assert_eq!(ids, (0..600).collect::<Vec<_>>());
    }

    /// A peer that reads nothing: senders end up waiting on the bounded
    /// queue instead of buffering without limit, inline or not.
    #[tokio::test]
    async fn a_stalled_link_makes_senders_wait() {
        let (term, _rx) = linked(4096);
        let mut sent = 0;
        let stalled = async {
            loop {
                term.send(env(sent, 1000)).await.expect("link up");
                sent += 1;
            }
        };
        let r = tokio::time::timeout(Duration::from_secs(2), stalled).await;
        assert!(r.is_err(), "the sender must block");
        // The queue, the sink's buffer and the pipe: nothing more.
        let bound = (LINK_QUEUE + dial::WRITE_BUFFER / 1000 + 10) as u64;
        assert!(sent <= bound, "{sent} envelopes taken, bound {bound}");
    }
}
