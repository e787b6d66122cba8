//! The endpoints of one router or client, by number, and the services it
//! offers: where incoming envelopes are delivered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, watch, Semaphore};

use super::{
    lock, Conv, ConvReader, ConvWriter, Counters, HangupGuard, Outbox, Service, Shared, Target, INPUT_QUEUE, RESERVED,
    WINDOW,
};
use crate::envelope::{Envelope, Kind};
use crate::error;
use crate::path::{Addr, MachineId, ServiceName};

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
    /// What the readers' windows may still grow by (see `window`).
    pub(super) budget: super::window::Budget,
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
            budget: Default::default(),
        })
    }

    /// Wires the outbox in; a table is useless before this.
    pub fn set_outbox(&self, outbox: Arc<dyn Outbox>) {
        let _ = self.outbox.set(outbox);
    }

    pub(super) fn outbox(&self) -> &Arc<dyn Outbox> {
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
        self.open_as(dst, reply, None)
    }

    /// [`ConvTable::open`] for `user` (see [`crate::envelope::Envelope::user`]).
    pub fn open_as(self: &Arc<Self>, dst: Addr, reply: Vec<Addr>, user: Option<Arc<str>>) -> Conv {
        let label = dst.service.clone();
        self.make(label, None, user, Target { dst, reply, origin: None })
    }

    fn make(
        self: &Arc<Self>,
        service: ServiceName,
        peer: Option<Addr>,
        user: Option<Arc<str>>,
        target: Target,
    ) -> Conv {
        let n = self.base + self.next.fetch_add(1, Relaxed);
        let path = Addr::conv(self.me.clone(), service, n);
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        let shared = Arc::new(Shared {
            path,
            peer,
            user,
            target: Mutex::new(target),
            credit: Semaphore::new(WINDOW as usize),
            closed: Mutex::new(None),
            input: tx,
            counters: Counters::default(),
            eof_sent: AtomicBool::new(false),
            cancels: watch::channel(0).0,
            hung_up: Default::default(),
            turn: Default::default(),
        });
        lock(&self.convs).insert(n, shared.clone());
        let guard = Arc::new(HangupGuard { shared: shared.clone(), table: self.clone() });
        Conv {
            rx: ConvReader {
                shared: shared.clone(),
                input: rx,
                writers: HashMap::new(),
                table: self.clone(),
                ended: false,
                _guard: guard.clone(),
            },
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
        let (service, peer, user) = (env.dst.service.clone(), Some(env.src.clone()), env.user.clone());
        let conv = self.make(service, peer, user, Target { dst, reply, origin });
        let n = conv.tx.shared.path.conv.unwrap_or_default();
        lock(&self.by_peer).insert(key, n);
        tracing::debug!(conv = %conv.tx.shared.path, peer = %env.src, "new conversation");
        let res = conv.tx.shared.take(env);
        tokio::spawn(svc.serve(conv));
        res
    }

    /// Whether `src` opened conversation `n`, when that is a service's
    /// end here; `None` if it is no service's end here.
    pub fn opened_by(&self, n: u64, src: &Addr) -> Option<bool> {
        Some(lock(&self.convs).get(&n)?.peer.as_ref()? == src)
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

    /// Fails every endpoint whose peer is one of `peers` (their link died).
    pub fn peers_lost(&self, peers: &std::collections::HashSet<Addr>, why: &str) {
        if peers.is_empty() {
            return;
        }
        let convs: Vec<_> = lock(&self.convs).values().cloned().collect();
        for s in convs {
            if s.peer.as_ref().is_some_and(|p| peers.contains(p)) {
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

    /// Hangs up conversation `n` from this end (its ctl's `hangup`): its
    /// reader and writer here, a writer blocked for credit included, get
    /// `conversation hung up`, and so does the other end, told by an
    /// error envelope. False if `n` is not here.
    pub fn hangup(&self, n: u64) -> bool {
        let Some(s) = lock(&self.convs).get(&n).cloned() else { return false };
        s.fail(error::EHUNGUP);
        let target = lock(&s.target).dst.clone();
        let mut msgs = vec![(target.clone(), Kind::Error(error::EHUNGUP.into()))];
        if let Some(peer) = s.peer.as_ref().filter(|p| **p != target) {
            msgs.push((peer.clone(), Kind::Error(error::EHUNGUP.into())));
        }
        self.send_controls(&s, msgs);
        true
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

    /// Sends one control message from `src` (a credit, on the hot path:
    /// no list to build).
    pub(super) fn send_control(&self, src: &Addr, dst: Addr, kind: Kind) {
        if tokio::runtime::Handle::try_current().is_err() {
            return; // the runtime is gone: so are the peers' tasks
        }
        let outbox = self.outbox().clone();
        let env = Envelope::new(outbox.next_id(), src.clone(), dst, kind, Bytes::new());
        // Control messages are tiny and must not wait behind the caller.
        tokio::spawn(async move { outbox.send(env).await });
    }

    /// Sends control messages from end `s`, in order and after what it
    /// is still sending (its turn): one task sends them all, since
    /// separate tasks may run in any order (a multi-threaded runtime runs
    /// the task spawned last first), and an `Eof` that overtook its own
    /// `Hangup` would leave the end remembered on every link it crossed
    /// (see [`crate::crossed`]).
    pub(super) fn send_controls(&self, s: &Shared, msgs: Vec<(Addr, Kind)>) {
        if tokio::runtime::Handle::try_current().is_err() {
            return; // the runtime is gone: so are the peers' tasks
        }
        let outbox = self.outbox().clone();
        let envs: Vec<Envelope> = msgs
            .into_iter()
            .map(|(dst, kind)| Envelope::new(outbox.next_id(), s.path.clone(), dst, kind, Bytes::new()))
            .collect();
        let turn = s.turn.clone();
        tokio::spawn(async move {
            let _turn = turn.lock().await;
            for env in envs {
                outbox.send(env).await;
            }
        });
    }

    pub(super) fn forget(&self, shared: &Shared) {
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
    /// The largest window its reader grants a writer, in bytes.
    pub window: u64,
}
