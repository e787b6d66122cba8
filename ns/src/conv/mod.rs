//! Conversations: the endpoints that send and receive envelopes.
//!
//! A conversation endpoint lives on one router (or one local client) and
//! has a path, `/n/M/svc/S/N`. It reads messages from an ordered input
//! queue and writes to one output target: the service it opened, or, for a
//! service's side, the first entry of the return path it was given.
//!
//! Flow control is end to end, per stream: a writer spends credit for each
//! message (at least [`MIN_COST`] bytes) and the reader returns credit as it
//! consumes. So at most a window of one stream is in flight, input
//! queues never overflow, and a slow reader slows its own writer without
//! stalling the shared links other conversations use. A window starts at
//! [`WINDOW`] and grows with the path's bandwidth-delay product, up to a
//! cap per conversation and a budget per router ([`window`]).
//!
//! Signals: `Eof` travels with the data (no more from me), `Hangup` against
//! it (I am gone, stop writing to me), `Error` ends both directions.
//!
//! A send may be abandoned (an interrupted write drops it): while it waits
//! for credit, nothing is spent and nothing sent; once it has its credit,
//! the message goes whole, finished in a task of its own if need be, and
//! everything this end sends after it waits its turn (see [`Whole`]). So
//! a conversation never holds half a message, nor loses credit.
//!
//! Locks: `target`, `closed` and the table's maps are held only for a
//! moment and never two at once; `turn` (async) is held while an end's
//! envelopes go out, and no other lock is taken under it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::envelope::{Envelope, Kind, MAX_MSG};
use crate::error::{self, EHUNGUP};
use crate::path::{Addr, ServiceName};

mod table;
pub mod window;
pub use table::{ConvStatus, ConvTable, Delivery};

/// The service name every router keeps for itself: control messages and
/// its file tree, served to other machines.
pub const RESERVED: &str = "router";

/// [`RESERVED`] as a name: the address of a router's control messages
/// and of its tree server, `/n/M/svc/router`.
pub fn reserved() -> ServiceName {
    crate::path::Name::new(RESERVED).expect("RESERVED is a valid name")
}

/// Bytes of one stream allowed in flight before the writer waits, until
/// the window grows (see [`window`]).
pub const WINDOW: u32 = 4 << 20;
/// The least a message costs, so tiny messages cannot flood a queue.
pub const MIN_COST: u32 = 4 << 10;
/// Messages an input queue holds: a full window, grown to its largest, of
/// minimal messages from a few writers, plus control messages. (The queue
/// takes room only for what it holds.)
const INPUT_QUEUE: usize = 4 * (window::MAX_WINDOW / MIN_COST) as usize + 64;

/// The credit a message of `len` bytes takes.
pub fn cost(len: usize) -> u32 {
    (len.min(WINDOW as usize) as u32).max(MIN_COST)
}

/// Where a conversation's envelopes go once they leave it: a router's
/// forwarding, or a local client's link to its router.
pub trait Outbox: Send + Sync + 'static {
    /// Sends, waiting while the path is congested. Delivery failures come
    /// back later as `Error` envelopes.
    fn send(&self, env: Envelope) -> BoxFuture<'_, ()>;
    /// A fresh envelope id.
    fn next_id(&self) -> u64;
}

/// Serves conversations: called once per new conversation, in its own task.
pub trait Service: Send + Sync + 'static {
    fn serve(&self, conv: Conv) -> BoxFuture<'static, ()>;
}

/// What a reader gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Data(Bytes),
    /// The writer closed: no more data will come.
    Eof,
    /// The conversation failed: a Plan 9 error string.
    Error(String),
}

/// A message on its way into an input queue.
struct Incoming {
    from: Addr,
    msg: Msg,
}

/// Message and byte counters of one endpoint.
#[derive(Default, Debug)]
pub struct Counters {
    pub msgs_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub msgs_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// The largest window this end's reader has granted a writer, once
    /// grown (0: none grown; see [`window`]).
    pub window: AtomicU64,
}

/// Where a conversation writes.
#[derive(Clone, Debug)]
pub struct Target {
    pub dst: Addr,
    pub reply: Vec<Addr>,
    pub origin: Option<Addr>,
}

/// The state of one endpoint shared by its reader, its writer and the table.
struct Shared {
    path: Addr,
    /// The first writer to it, for a service's side.
    peer: Option<Addr>,
    /// For an opener: the user it writes for, told to the service it
    /// opens. For a service's side: the user its opener wrote for.
    user: Option<Arc<str>>,
    target: Mutex<Target>,
    credit: Semaphore,
    /// Set with the reason when writing must fail.
    closed: Mutex<Option<String>>,
    input: mpsc::Sender<Incoming>,
    counters: Counters,
    eof_sent: AtomicBool,
    /// Counts cancels received; services watch it.
    cancels: watch::Sender<u64>,
    /// Cancelled when writing fails, so an idle service notices.
    hung_up: tokio_util::sync::CancellationToken,
    /// Held while this end's envelopes go out, so they leave in order even
    /// when a send was abandoned half-way (see [`Sending`]).
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// One endpoint, as handed to a service or opened by a client.
pub struct Conv {
    pub rx: ConvReader,
    pub tx: ConvWriter,
}

/// The reading half: messages in order, then `None` after `Eof` or `Error`.
pub struct ConvReader {
    shared: Arc<Shared>,
    input: mpsc::Receiver<Incoming>,
    /// Each writer's credit owed, returned in batches, and its window.
    writers: HashMap<Addr, (u32, window::Window)>,
    table: Arc<ConvTable>,
    ended: bool,
    _guard: Arc<HangupGuard>,
}

/// The writing half. The conversation ends when both halves are gone.
#[derive(Clone)]
pub struct ConvWriter {
    shared: Arc<Shared>,
    table: Arc<ConvTable>,
    _guard: Arc<HangupGuard>,
}

/// Sends `Eof` and `Hangup` and forgets the endpoint when both halves are gone.
struct HangupGuard {
    shared: Arc<Shared>,
    table: Arc<ConvTable>,
}

impl Shared {
    /// Takes an incoming envelope addressed to this endpoint.
    fn take(&self, env: Envelope) -> Delivery {
        let msg = match env.kind {
            Kind::Data => Msg::Data(env.data),
            Kind::Eof => Msg::Eof,
            Kind::Credit(n) => {
                self.credit.add_permits(n as usize);
                return Delivery::Done;
            }
            Kind::Cancel => {
                self.cancels.send_modify(|n| *n += 1);
                return Delivery::Done;
            }
            Kind::Hangup => {
                // Where this end writes is gone: writing must fail from now
                // on. A hangup from upstream changes nothing here, since
                // this end does not write there (unless it is the target).
                // A target still reading `/svc/S` matches by service.
                let from_target = {
                    let t = lock(&self.target);
                    match t.dst.conv {
                        Some(_) => env.src == t.dst,
                        None => {
                            env.src.service == t.dst.service
                                && (t.dst.machine.is_none() || t.dst.machine == env.src.machine)
                        }
                    }
                };
                if from_target {
                    self.close_writer(EHUNGUP);
                }
                // The writer feeding this end is gone: no more input.
                if Some(&env.src) == self.peer.as_ref() {
                    let _ = self.input.try_send(Incoming { from: env.src, msg: Msg::Eof });
                }
                return Delivery::Done;
            }
            Kind::Error(e) => {
                self.close_writer(&e);
                Msg::Error(e)
            }
            _ => return Delivery::Bounce(env, error::detail(error::EBADPATH, "not a conversation message")),
        };
        match self.input.try_send(Incoming { from: env.src, msg }) {
            Ok(()) => Delivery::Done,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close_writer(error::EOVERRUN);
                Delivery::Done
            }
            // The reader is gone; the writer's guard hangs up.
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Done,
        }
    }

    fn close_writer(&self, why: &str) {
        let mut c = lock(&self.closed);
        if c.is_none() {
            *c = Some(why.to_string());
        }
        self.credit.close();
        self.hung_up.cancel();
    }

    /// Ends both directions with an error the reader and writer see.
    fn fail(&self, why: &str) {
        self.close_writer(why);
        let _ = self.input.try_send(Incoming { from: self.path.clone(), msg: Msg::Error(why.to_string()) });
    }

    fn status(&self) -> ConvStatus {
        let t = lock(&self.target).clone();
        let c = &self.counters;
        ConvStatus {
            path: self.path.clone(),
            peer: self.peer.clone(),
            target: t.dst,
            reply: t.reply,
            state: match &*lock(&self.closed) {
                Some(why) => format!("closed ({why})"),
                None if self.eof_sent.load(Relaxed) => "eof sent".into(),
                None => "open".into(),
            },
            msgs_in: c.msgs_in.load(Relaxed),
            bytes_in: c.bytes_in.load(Relaxed),
            msgs_out: c.msgs_out.load(Relaxed),
            bytes_out: c.bytes_out.load(Relaxed),
            window: match c.window.load(Relaxed) {
                0 => u64::from(WINDOW),
                w => w,
            },
        }
    }
}

impl Drop for ConvReader {
    /// The windows' growth goes back to the router's budget.
    fn drop(&mut self) {
        let grown: u64 = self.writers.values().map(|(_, w)| w.grown()).sum();
        if grown > 0 {
            self.table.budget.give(grown);
        }
    }
}

impl ConvReader {
    /// The next message; `None` once the conversation has ended.
    pub async fn recv(&mut self) -> Option<Msg> {
        if self.ended {
            return None;
        }
        let waited = self.input.is_empty();
        let Incoming { from, msg } = self.input.recv().await?;
        match &msg {
            Msg::Data(b) => {
                let c = &self.shared.counters;
                c.msgs_in.fetch_add(1, Relaxed);
                c.bytes_in.fetch_add(b.len() as u64, Relaxed);
                let now = std::time::Instant::now();
                if !self.writers.contains_key(&from) {
                    self.writers.insert(from.clone(), (0, window::Window::new(now)));
                }
                let Some((owed, w)) = self.writers.get_mut(&from) else { return Some(msg) };
                let grown = w.took(cost(b.len()), waited, now, &self.table.budget);
                if grown > 0 {
                    c.window.fetch_max(u64::from(w.size()), Relaxed);
                }
                *owed += cost(b.len()) + grown;
                // Batch credit, so a stream of small messages costs few replies.
                if *owed >= WINDOW / 4 || self.input.is_empty() && *owed >= WINDOW / 16 {
                    let n = std::mem::take(owed);
                    self.table.send_control(&self.shared.path, from, Kind::Credit(n));
                }
            }
            Msg::Eof | Msg::Error(_) => self.ended = true,
        }
        Some(msg)
    }

    pub fn path(&self) -> &Addr {
        &self.shared.path
    }

    /// Cancels received so far: changes each time a reader at the other
    /// end is interrupted.
    pub fn cancels(&self) -> watch::Receiver<u64> {
        self.shared.cancels.subscribe()
    }
}

/// A future run by whoever awaits it and, dropped before it is done (its
/// caller gave up waiting), finished in a task of its own: what it began
/// to send goes whole. Cheaper than a task for every send, which costs a
/// wake-up of another thread.
pub struct Whole<T: Send + 'static>(Option<BoxFuture<'static, T>>);

impl<T: Send + 'static> Whole<T> {
    pub fn new(f: impl Future<Output = T> + Send + 'static) -> Whole<T> {
        Whole(Some(Box::pin(f)))
    }
}

impl<T: Send + 'static> Future for Whole<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let f = self.0.as_mut().expect("Whole polled after it finished");
        let done = f.as_mut().poll(cx);
        if done.is_ready() {
            self.0 = None;
        }
        done
    }
}

impl<T: Send + 'static> Drop for Whole<T> {
    fn drop(&mut self) {
        if let (Some(f), Ok(rt)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(f);
        }
    }
}

/// Envelopes of one end going out in order, with the end's turn held,
/// whole (see [`Whole`]).
fn sending(outbox: Arc<dyn Outbox>, turn: tokio::sync::OwnedMutexGuard<()>, envs: Vec<Envelope>) -> Whole<()> {
    Whole::new(async move {
        for env in envs {
            outbox.send(env).await;
        }
        drop(turn);
    })
}

impl ConvWriter {
    /// Sends one message, waiting for credit. Fails once the peer has hung
    /// up or the conversation failed, with the reason. Abandoned while it
    /// waits for credit, it sends nothing; once it has credit, the message
    /// goes whole (see the module's doc).
    pub async fn send(&self, data: Bytes) -> Result<(), String> {
        if data.len() > MAX_MSG {
            return Err(error::detail(error::ETOOBIG, format!("{} bytes, limit {MAX_MSG}", data.len())));
        }
        let need = cost(data.len());
        let Ok(credit) = self.shared.credit.acquire_many(need).await else {
            return Err(self.closed_reason());
        };
        // Dropped while waiting here, the credit goes back.
        let turn = self.shared.turn.clone().lock_owned().await;
        credit.forget();
        let c = &self.shared.counters;
        c.msgs_out.fetch_add(1, Relaxed);
        c.bytes_out.fetch_add(data.len() as u64, Relaxed);
        let env = self.envelope(Kind::Data, data);
        sending(self.table.outbox().clone(), turn, vec![env]).await;
        Ok(())
    }

    /// Sends one control envelope in this end's turn.
    async fn control(&self, kind: Kind) {
        let turn = self.shared.turn.clone().lock_owned().await;
        let env = self.envelope(kind, Bytes::new());
        sending(self.table.outbox().clone(), turn, vec![env]).await;
    }

    /// Ends this side's output: the peer reads end of file. Not once the
    /// conversation has failed or the peer hung up: what this end wrote
    /// may be lost, and an `Eof` would say that it all arrived.
    pub async fn eof(&self) {
        let turn = self.shared.turn.clone().lock_owned().await;
        if lock(&self.shared.closed).is_some() {
            return;
        }
        if !self.shared.eof_sent.swap(true, Relaxed) {
            let env = self.envelope(Kind::Eof, Bytes::new());
            sending(self.table.outbox().clone(), turn, vec![env]).await;
        }
    }

    /// Fails the conversation at the other end with `why`: its reader
    /// sees the error. For a service that cannot do its work.
    pub async fn send_error(&self, why: &str) {
        self.control(Kind::Error(why.to_string())).await
    }

    /// Tells the other end that a reader here was interrupted.
    pub async fn cancel(&self) {
        self.control(Kind::Cancel).await
    }

    /// Ends this endpoint with an error its reader and writer see.
    pub fn fail(&self, why: &str) {
        self.shared.fail(why);
    }

    /// Resolves once writing has failed: the other end hung up, or the
    /// conversation failed. A service with nothing to write waits on this.
    pub async fn hung_up(&self) {
        self.shared.hung_up.cancelled().await
    }

    /// Whether writing has failed, and why.
    pub fn closed(&self) -> Option<String> {
        lock(&self.shared.closed).clone()
    }

    fn closed_reason(&self) -> String {
        self.closed().unwrap_or_else(|| EHUNGUP.to_string())
    }

    fn envelope(&self, kind: Kind, data: Bytes) -> Envelope {
        let t = lock(&self.shared.target).clone();
        let mut env = Envelope::new(self.table.outbox().next_id(), self.shared.path.clone(), t.dst, kind, data);
        env.reply = t.reply;
        env.origin = t.origin;
        // Whoever it opens a conversation with learns who asks, on every
        // message (the rules are checked on each, see `Router::refused`).
        if self.shared.peer.is_none() {
            env.user = self.shared.user.clone();
        }
        env
    }

    pub fn path(&self) -> &Addr {
        &self.shared.path
    }

    /// The writer that opened this conversation, for a service's side.
    pub fn peer(&self) -> Option<&Addr> {
        self.shared.peer.as_ref()
    }

    /// For a service's side: the user its opener wrote for (see
    /// [`crate::envelope::Envelope::user`]).
    pub fn peer_user(&self) -> Option<&str> {
        self.shared.peer.as_ref().and(self.shared.user.as_deref())
    }

    pub fn set_target(&self, target: Target) {
        *lock(&self.shared.target) = target;
    }

    pub fn target(&self) -> Target {
        lock(&self.shared.target).clone()
    }
}

impl Drop for HangupGuard {
    fn drop(&mut self) {
        let s = &self.shared;
        self.table.forget(s);
        let target = lock(&s.target).dst.clone();
        let mut msgs = Vec::with_capacity(3);
        if !s.eof_sent.swap(true, Relaxed) && lock(&s.closed).is_none() {
            msgs.push((target.clone(), Kind::Eof));
        }
        msgs.push((target.clone(), Kind::Hangup));
        // Upstream learns why this end went: a failure downstream is passed
        // back as the error itself, like a broken pipe that says why.
        if let Some(peer) = s.peer.as_ref().filter(|p| **p != target) {
            let kind = match lock(&s.closed).clone() {
                Some(why) if why != EHUNGUP => Kind::Error(why),
                _ => Kind::Hangup,
            };
            msgs.push((peer.clone(), kind));
        }
        // In order: the hangup is the last this end says.
        self.table.send_controls(s, msgs);
    }
}

/// Locks a mutex, ignoring poisoning: the data stays consistent because
/// no code here panics while holding a lock.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
