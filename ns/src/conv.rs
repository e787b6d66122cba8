//! Conversations: the endpoints that send and receive envelopes.
//!
//! A conversation endpoint lives on one router (or one local client) and
//! has a path, `/n/M/svc/S/N`. It reads messages from an ordered input
//! queue and writes to one output target: the service it opened, or, for a
//! service's side, the first entry of the return path it was given.
//!
//! Flow control is end to end, per stream: a writer spends credit for each
//! message (at least [`MIN_COST`] bytes) and the reader returns credit as it
//! consumes. So at most [`WINDOW`] bytes of one stream are in flight, input
//! queues never overflow, and a slow reader slows its own writer without
//! stalling the shared links other conversations use.
//!
//! Signals: `Eof` travels with the data (no more from me), `Hangup` against
//! it (I am gone, stop writing to me), `Error` ends both directions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::envelope::{Envelope, Kind, MAX_MSG};
use crate::error::{self, EHUNGUP};
use crate::path::{Addr, MachineId, ServiceName};

/// The service name every router keeps for itself: control messages and
/// its file tree, served to other machines.
pub const RESERVED: &str = "router";

/// Bytes of one stream allowed in flight before the writer waits.
pub const WINDOW: u32 = 4 << 20;
/// The least a message costs, so tiny messages cannot flood a queue.
pub const MIN_COST: u32 = 4 << 10;
/// Messages an input queue holds: a full window of minimal messages from
/// a few writers, plus control messages.
const INPUT_QUEUE: usize = 4 * (WINDOW / MIN_COST) as usize + 64;

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
    /// Credit owed to each writer, returned in batches.
    owed: HashMap<Addr, u32>,
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

/// The endpoints of one router or client, and the services it offers.
pub struct ConvTable {
    me: MachineId,
    outbox: std::sync::OnceLock<Arc<dyn Outbox>>,
    next: AtomicU64,
    /// Conversation numbers are `base + i`: a router uses base 0, each
    /// local client its own block, so numbers are unique per machine.
    base: u64,
    convs: Mutex<HashMap<u64, Arc<Shared>>>,
    /// Service-side endpoints by (service, the writer that opened it).
    by_peer: Mutex<HashMap<(ServiceName, Addr), u64>>,
    services: Mutex<HashMap<ServiceName, Arc<dyn Service>>>,
}

/// What became of an envelope handed to [`ConvTable::deliver`].
pub enum Delivery {
    Done,
    /// Not deliverable here: bounce it with this error.
    Bounce(Envelope, String),
    /// Neither a conversation nor a service of this table.
    NotMine(Envelope),
}

impl ConvTable {
    pub fn new(me: MachineId, base: u64) -> Arc<ConvTable> {
        Arc::new(ConvTable {
            me,
            outbox: Default::default(),
            next: AtomicU64::new(1),
            base,
            convs: Default::default(),
            by_peer: Default::default(),
            services: Default::default(),
        })
    }

    /// Wires the outbox in; a table is useless before this.
    pub fn set_outbox(&self, outbox: Arc<dyn Outbox>) {
        let _ = self.outbox.set(outbox);
    }

    fn outbox(&self) -> &Arc<dyn Outbox> {
        self.outbox.get().expect("ConvTable used before set_outbox")
    }

    pub fn machine(&self) -> &MachineId {
        &self.me
    }

    pub fn add_service(&self, name: ServiceName, svc: Arc<dyn Service>) {
        lock(&self.services).insert(name, svc);
    }

    pub fn remove_service(&self, name: &ServiceName) -> bool {
        lock(&self.services).remove(name).is_some()
    }

    pub fn has_service(&self, name: &str) -> bool {
        lock(&self.services).contains_key(name)
    }

    /// The services offered here, sorted; the reserved `router` service
    /// (each router's tree server) is not listed.
    pub fn services(&self) -> Vec<ServiceName> {
        let mut v: Vec<_> = lock(&self.services).keys().filter(|s| s.as_str() != RESERVED).cloned().collect();
        v.sort();
        v
    }

    /// Whether conversation number `n` is in this table's block.
    pub fn owns_number(&self, n: u64) -> bool {
        n >> 32 == self.base >> 32
    }

    /// Opens a conversation with `dst` from this table. `label` is the
    /// service name the endpoint is listed under (the one it talks to).
    pub fn open(self: &Arc<Self>, dst: Addr, reply: Vec<Addr>) -> Conv {
        let label = dst.service.clone();
        self.make(label, None, Target { dst, reply, origin: None })
    }

    fn make(self: &Arc<Self>, service: ServiceName, peer: Option<Addr>, target: Target) -> Conv {
        let n = self.base + self.next.fetch_add(1, Relaxed);
        let path = Addr::conv(self.me.clone(), service, n);
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        let shared = Arc::new(Shared {
            path,
            peer,
            target: Mutex::new(target),
            credit: Semaphore::new(WINDOW as usize),
            closed: Mutex::new(None),
            input: tx,
            counters: Counters::default(),
            eof_sent: AtomicBool::new(false),
            cancels: watch::channel(0).0,
            hung_up: Default::default(),
        });
        lock(&self.convs).insert(n, shared.clone());
        let guard = Arc::new(HangupGuard { shared: shared.clone(), table: self.clone() });
        Conv {
            rx: ConvReader { shared: shared.clone(), input: rx, owed: HashMap::new(), table: self.clone(), ended: false, _guard: guard.clone() },
            tx: ConvWriter { shared, table: self.clone(), _guard: guard },
        }
    }

    /// Delivers an envelope addressed to this machine: to a conversation
    /// by number, or to a service (opening a conversation on first data).
    pub fn deliver(self: &Arc<Self>, env: Envelope) -> Delivery {
        match env.dst.conv {
            Some(n) => {
                if !self.owns_number(n) {
                    return Delivery::NotMine(env);
                }
                let Some(shared) = lock(&self.convs).get(&n).cloned() else {
                    return Delivery::Bounce(env, error::detail(error::ENOCONV, n));
                };
                shared.take(env)
            }
            None => self.deliver_to_service(env),
        }
    }

    fn deliver_to_service(self: &Arc<Self>, env: Envelope) -> Delivery {
        let key = (env.dst.service.clone(), env.src.clone());
        let existing = lock(&self.by_peer).get(&key).copied();
        if let Some(shared) = existing.and_then(|n| lock(&self.convs).get(&n).cloned()) {
            if env.kind == Kind::Data {
                let (dst, reply) = env.reply_target();
                let mut t = lock(&shared.target);
                if t.dst != dst || t.reply != reply {
                    *t = Target { dst, reply, origin: env.origin.clone() };
                }
            }
            return shared.take(env);
        }
        let svc = lock(&self.services).get(&env.dst.service).cloned();
        let Some(svc) = svc else {
            return Delivery::NotMine(env);
        };
        if !matches!(env.kind, Kind::Data | Kind::Eof) {
            // A late hangup or credit for a conversation already gone.
            return Delivery::Done;
        }
        let (dst, reply) = env.reply_target();
        let origin = env.origin.clone().or_else(|| Some(env.src.clone()));
        let conv = self.make(env.dst.service.clone(), Some(env.src.clone()), Target { dst, reply, origin });
        let n = conv.tx.shared.path.conv.unwrap_or_default();
        lock(&self.by_peer).insert(key, n);
        tracing::debug!(conv = %conv.tx.shared.path, peer = %env.src, "new conversation");
        let res = conv.tx.shared.take(env);
        tokio::spawn(svc.serve(conv));
        res
    }

    /// Ends every endpoint whose peer or target is on `machine`: the route
    /// there is gone, so they would wait forever.
    pub fn machine_lost(&self, machine: &MachineId, why: &str) {
        let convs: Vec<_> = lock(&self.convs).values().cloned().collect();
        for s in convs {
            let on = |a: &Addr| a.machine.as_ref() == Some(machine);
            let target_on = on(&lock(&s.target).dst);
            if target_on || s.peer.as_ref().is_some_and(on) {
                s.fail(why);
            }
        }
    }

    /// Fails conversation `n` with an error both halves see.
    pub fn fail(&self, n: u64, why: &str) {
        if let Some(s) = lock(&self.convs).get(&n).cloned() {
            s.fail(why);
        }
    }

    /// Fails every endpoint (shutdown).
    pub fn fail_all(&self, why: &str) {
        let convs: Vec<_> = lock(&self.convs).values().cloned().collect();
        for s in convs {
            s.fail(why);
        }
    }

    /// Status lines of live conversations, for state files.
    pub fn list(&self) -> Vec<ConvStatus> {
        let mut v: Vec<_> = lock(&self.convs).values().map(|s| s.status()).collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }

    /// The status of conversation `n`.
    pub fn status(&self, n: u64) -> Option<ConvStatus> {
        lock(&self.convs).get(&n).map(|s| s.status())
    }

    /// Sets conversation `n`'s return path (its `ctl` file's `replyto`).
    pub fn set_reply(&self, n: u64, reply: Vec<Addr>) -> bool {
        match lock(&self.convs).get(&n) {
            Some(s) => {
                lock(&s.target).reply = reply;
                true
            }
            None => false,
        }
    }

    fn send_control(&self, src: &Addr, dst: Addr, kind: Kind) {
        if tokio::runtime::Handle::try_current().is_err() {
            return; // the runtime is gone: so are the peers' tasks
        }
        let env = Envelope::new(self.outbox().next_id(), src.clone(), dst, kind, Bytes::new());
        let outbox = self.outbox().clone();
        // Control messages are tiny and must not wait behind the caller.
        tokio::spawn(async move { outbox.send(env).await });
    }

    fn forget(&self, shared: &Shared) {
        if let Some(n) = shared.path.conv {
            lock(&self.convs).remove(&n);
        }
        if let Some(peer) = &shared.peer {
            lock(&self.by_peer).remove(&(shared.path.service.clone(), peer.clone()));
        }
    }
}

/// A conversation's state as its status file shows it.
#[derive(Debug, Clone)]
pub struct ConvStatus {
    pub path: Addr,
    pub peer: Option<Addr>,
    pub target: Addr,
    pub reply: Vec<Addr>,
    pub state: String,
    pub msgs_in: u64,
    pub bytes_in: u64,
    pub msgs_out: u64,
    pub bytes_out: u64,
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
                        None => env.src.service == t.dst.service && (t.dst.machine.is_none() || t.dst.machine == env.src.machine),
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
        }
    }
}

impl ConvReader {
    /// The next message; `None` once the conversation has ended.
    pub async fn recv(&mut self) -> Option<Msg> {
        if self.ended {
            return None;
        }
        let Incoming { from, msg } = self.input.recv().await?;
        match &msg {
            Msg::Data(b) => {
                let c = &self.shared.counters;
                c.msgs_in.fetch_add(1, Relaxed);
                c.bytes_in.fetch_add(b.len() as u64, Relaxed);
                let owed = self.owed.entry(from.clone()).or_insert(0);
                *owed += cost(b.len());
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

impl ConvWriter {
    /// Sends one message, waiting for credit. Fails once the peer has hung
    /// up or the conversation failed, with the reason.
    pub async fn send(&self, data: Bytes) -> Result<(), String> {
        if data.len() > MAX_MSG {
            return Err(error::detail(error::ETOOBIG, format!("{} bytes, limit {MAX_MSG}", data.len())));
        }
        let need = cost(data.len());
        match self.shared.credit.acquire_many(need).await {
            Ok(p) => p.forget(),
            Err(_) => return Err(self.closed_reason()),
        }
        let c = &self.shared.counters;
        c.msgs_out.fetch_add(1, Relaxed);
        c.bytes_out.fetch_add(data.len() as u64, Relaxed);
        let env = self.envelope(Kind::Data, data);
        self.table.outbox().send(env).await;
        Ok(())
    }

    /// Ends this side's output: the peer reads end of file.
    pub async fn eof(&self) {
        if !self.shared.eof_sent.swap(true, Relaxed) {
            let env = self.envelope(Kind::Eof, Bytes::new());
            self.table.outbox().send(env).await;
        }
    }

    /// Fails the conversation at the other end with `why`: its reader
    /// sees the error. For a service that cannot do its work.
    pub async fn send_error(&self, why: &str) {
        let env = self.envelope(Kind::Error(why.to_string()), Bytes::new());
        self.table.outbox().send(env).await;
    }

    /// Tells the other end that a reader here was interrupted.
    pub async fn cancel(&self) {
        let env = self.envelope(Kind::Cancel, Bytes::new());
        self.table.outbox().send(env).await;
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
        env
    }

    pub fn path(&self) -> &Addr {
        &self.shared.path
    }

    /// The writer that opened this conversation, for a service's side.
    pub fn peer(&self) -> Option<&Addr> {
        self.shared.peer.as_ref()
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
        if !s.eof_sent.swap(true, Relaxed) && lock(&s.closed).is_none() {
            self.table.send_control(&s.path, target.clone(), Kind::Eof);
        }
        self.table.send_control(&s.path, target.clone(), Kind::Hangup);
        // Upstream learns why this end went: a failure downstream is passed
        // back as the error itself, like a broken pipe that says why.
        if let Some(peer) = s.peer.as_ref().filter(|p| **p != target) {
            let kind = match lock(&s.closed).clone() {
                Some(why) if why != EHUNGUP => Kind::Error(why),
                _ => Kind::Hangup,
            };
            self.table.send_control(&s.path, peer.clone(), kind);
        }
    }
}

/// Locks a mutex, ignoring poisoning: the data stays consistent because
/// no code here panics while holding a lock.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
