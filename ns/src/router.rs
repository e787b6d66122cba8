//! The router: forwards envelopes by destination and keeps the terminals.
//!
//! Forwarding, for each envelope: count the hop (a loop or the hop limit is
//! an error), resolve `/svc/S` to the nearest replica once per
//! conversation (sticky), then deliver here or send on the terminal of the
//! best route. Whatever cannot be delivered goes back to its source as an
//! `Error` envelope: nothing is dropped silently.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::conv::{lock, Conv, ConvTable, Delivery, Outbox, Service};
use crate::envelope::{Envelope, Kind, HOP_LIMIT};
use crate::error::{self, EHOPS, ENOROUTE, ENOSERVICE};
use crate::gossip::PeerGossip;
use crate::path::{Addr, MachineId, ServiceName};
use crate::route::RouteTable;
use crate::term::{Term, TermKind};

/// How a router behaves.
#[derive(Clone, Debug)]
pub struct Config {
    pub id: MachineId,
    /// Exchange routes with neighbours by path-vector gossip.
    pub gossip: bool,
    /// The machine whose `registry` service to register with and ask.
    pub registry: Option<MachineId>,
    /// Gossip and registry period. Neighbours are pinged every half
    /// period, and one silent for two periods is taken for dead.
    pub period: Duration,
    /// This machine's key and the keys it accepts, for tcp and ws links.
    /// `None` leaves network links unauthenticated and unencrypted, which
    /// is logged loudly: for benchmarks only.
    pub security: Option<Arc<crate::link::Security>>,
    /// Say which link was lost along with the changes it causes, and heed
    /// neighbours who do (see [`crate::gossip`]). Off only to measure what
    /// withdrawals cost without it.
    pub root_cause: bool,
}

impl Config {
    pub fn new(id: MachineId) -> Config {
        Config {
            id,
            gossip: true,
            registry: None,
            period: Duration::from_millis(500),
            security: None,
            root_cause: true,
        }
    }

    /// How long paths over a link reported lost are set aside: long
    /// enough for the report to cross the mesh and for every neighbour
    /// that sent such a path to replace it (each does at once on hearing
    /// of the loss), short next to the redial of a lost link (100 ms
    /// backoff, then the handshake) and the period, so that paths over a
    /// link that came back are used again soon.
    pub fn lost_link_hold(&self) -> Duration {
        self.period / 2
    }
}

/// A router; cloning gives another handle to the same one.
#[derive(Clone)]
pub struct Router(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) cfg: Config,
    pub(crate) convs: Arc<ConvTable>,
    pub(crate) table: RwLock<RouteTable>,
    pub(crate) terms: RwLock<BTreeMap<String, Arc<Term>>>,
    /// Terminals of neighbours dialed and not linked: shown in `term/`
    /// while the real one is absent, with why the link is down.
    pub(crate) pending: Mutex<BTreeMap<String, Arc<Term>>>,
    /// Local client processes by their number block.
    pub(crate) clients: RwLock<HashMap<u32, Arc<Term>>>,
    /// Services offered by local clients, and which client serves each.
    pub(crate) client_services: RwLock<HashMap<ServiceName, u32>>,
    /// Conversations each client has open, to hang them up if it dies.
    pub(crate) client_convs: Mutex<HashMap<u32, HashMap<Addr, Addr>>>,
    /// The replica each conversation talks to, by (source, service).
    sticky: Mutex<HashMap<(Addr, ServiceName), MachineId>>,
    pub(crate) gossip: Mutex<HashMap<MachineId, PeerGossip>>,
    /// Neighbours owed a full table.
    pub(crate) resync: Mutex<HashSet<MachineId>>,
    pub(crate) changed: Notify,
    next_id: AtomicU64,
    pub(crate) next_client: AtomicU32,
    pub(crate) shutdown: CancellationToken,
    /// Recent ctl errors and events, for reading `ctl`.
    pub(crate) log: Mutex<std::collections::VecDeque<String>>,
    pub(crate) registry: crate::registry::ClientState,
}

impl Router {
    /// Starts a router; it runs until `shutdown` is cancelled.
    pub fn new(cfg: Config, shutdown: CancellationToken) -> Router {
        let convs = ConvTable::new(cfg.id.clone(), 0);
        let mut terms = BTreeMap::new();
        terms.insert("local".to_string(), Term::internal("local", TermKind::Local));
        terms.insert("loopback".to_string(), Term::internal("loopback", TermKind::Loopback));
        let inner = Arc::new(Inner {
            table: RwLock::new(RouteTable::new(cfg.id.clone())),
            cfg,
            convs: convs.clone(),
            terms: RwLock::new(terms),
            pending: Default::default(),
            clients: Default::default(),
            client_services: Default::default(),
            client_convs: Default::default(),
            sticky: Default::default(),
            gossip: Default::default(),
            resync: Default::default(),
            changed: Notify::new(),
            next_id: AtomicU64::new(1),
            next_client: AtomicU32::new(1),
            shutdown,
            log: Default::default(),
            registry: Default::default(),
        });
        convs.set_outbox(Arc::new(Forwarder(Arc::downgrade(&inner))));
        let r = Router(inner);
        r.spawn(r.clone().gossip_loop());
        r.spawn(r.clone().keepalive_loop());
        if r.0.cfg.registry.is_some() {
            r.spawn(crate::registry::client_loop(r.clone()));
        }
        r
    }

    /// Spawns a task of this router, in its span, so that every log line
    /// names the machine even when several routers share a process.
    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let current = tracing::Span::current();
        let span = if current.metadata().is_some_and(|m| m.name() == "router") {
            current
        } else {
            tracing::info_span!("router", machine = %self.id())
        };
        tokio::spawn(f.instrument(span))
    }

    pub fn id(&self) -> &MachineId {
        &self.0.cfg.id
    }

    pub fn config(&self) -> &Config {
        &self.0.cfg
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.0.shutdown
    }

    /// Offers a service in this process.
    pub fn add_service(&self, name: ServiceName, svc: Arc<dyn Service>) {
        self.0.convs.add_service(name, svc);
        self.local_changed();
    }

    pub fn remove_service(&self, name: &ServiceName) {
        self.0.convs.remove_service(name);
        self.local_changed();
    }

    /// Opens a conversation from this router with `dst`.
    pub fn open(&self, dst: Addr, reply: Vec<Addr>) -> Conv {
        self.0.convs.open(dst, reply)
    }

    /// The conversations of this router's own endpoints.
    pub fn convs(&self) -> &Arc<ConvTable> {
        &self.0.convs
    }

    /// A read view of the route table.
    pub fn table(&self) -> std::sync::RwLockReadGuard<'_, RouteTable> {
        self.0.table.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The `routes` file.
    pub fn routes(&self) -> String {
        self.table().render()
    }

    /// The terminals, sorted by name.
    pub fn terms(&self) -> Vec<Arc<Term>> {
        self.0.terms.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    pub fn term(&self, name: &str) -> Option<Arc<Term>> {
        self.0.terms.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// The terminals to show: the linked ones, and the placeholders of
    /// neighbours dialed but not linked.
    pub fn shown_terms(&self) -> Vec<Arc<Term>> {
        let mut all: BTreeMap<String, Arc<Term>> = lock(&self.0.pending).clone();
        all.extend(self.0.terms.read().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (k.clone(), v.clone())));
        all.into_values().collect()
    }

    /// A terminal to show: linked, else a placeholder.
    pub fn shown_term(&self, name: &str) -> Option<Arc<Term>> {
        self.term(name).or_else(|| lock(&self.0.pending).get(name).cloned())
    }

    /// Records a link refused to or by machine `m`, in the status of its
    /// terminal (linked or placeholder) and in `ctl`.
    pub fn note_refusal(&self, m: &MachineId, line: String) {
        let name = format!("net-{m}");
        for t in [self.term(&name), lock(&self.0.pending).get(&name).cloned()].into_iter().flatten() {
            t.refused(line.clone());
        }
        self.log_event(format!("refused {line}"));
    }

    /// Records an event or error for readers of `ctl`; keeps the last 64.
    pub fn log_event(&self, line: String) {
        let mut l = lock(&self.0.log);
        if l.len() >= 64 {
            l.pop_front();
        }
        l.push_back(line);
    }

    /// The recent events, oldest first.
    pub fn events(&self) -> Vec<String> {
        lock(&self.0.log).iter().cloned().collect()
    }

    /// Recomputes local services after a change and tells the neighbours.
    pub(crate) fn local_changed(&self) {
        let mut svcs = self.0.convs.services();
        svcs.extend(self.0.client_services.read().unwrap_or_else(|e| e.into_inner()).keys().cloned());
        let change = self.0.table.write().unwrap_or_else(|e| e.into_inner()).set_local(svcs);
        self.after_change(change);
        self.0.registry.local_changed();
    }

    /// Acts on a route change: ends conversations with lost machines and
    /// wakes the gossip task.
    pub(crate) fn after_change(&self, change: crate::route::Change) {
        if change.is_empty() {
            return;
        }
        for m in &change.lost {
            info!(machine = %m, "machine unreachable");
            let why = error::detail(ENOROUTE, m);
            self.0.convs.machine_lost(m, &why);
            // Conversations that resolved `/svc/S` to a replica there fail
            // too: they would otherwise wait for a reply that cannot come.
            let stuck: Vec<Addr> = {
                let mut sticky = lock(&self.0.sticky);
                let v = sticky.iter().filter(|(_, v)| *v == m).map(|((src, _), _)| src.clone()).collect();
                sticky.retain(|_, v| v != m);
                v
            };
            for src in stuck {
                self.fail_endpoint(src, &why);
            }
        }
        self.0.changed.notify_one();
    }

    /// A link is gone: every conversation end whose envelopes crossed it
    /// hears `link lost`, since some of them may have gone with it. Ends
    /// here fail at once; ends elsewhere are told through the routes that
    /// remain (their own routers fail them too when they see the loss).
    pub(crate) fn link_lost(&self, term: &Term) {
        let Some(crossed) = &term.crossed else { return };
        let ends = crossed.take();
        if ends.is_empty() {
            return;
        }
        let why = error::detail(error::ELINK, &term.name);
        info!(term = %term.name, ends = ends.len(), "failing the conversations that crossed a lost link");
        let me = self.id().clone();
        let (here, far): (Vec<Addr>, Vec<Addr>) = ends.into_iter().partition(|a| a.machine.as_ref() == Some(&me));
        self.0.convs.peers_lost(&far.iter().cloned().collect(), &why);
        for a in here {
            self.fail_endpoint(a, &why);
        }
        let r = self.clone();
        self.spawn(async move {
            for a in far {
                let env = Envelope::new(
                    r.next_id(),
                    Addr::on(me.clone(), crate::conv::reserved()),
                    a,
                    Kind::Error(why.clone()),
                    Bytes::new(),
                );
                r.forward(env).await;
            }
        });
    }

    /// Fails a local endpoint, in this process or in a local client.
    fn fail_endpoint(&self, src: Addr, why: &str) {
        let Some(n) = src.conv else { return };
        if n >> 32 == 0 {
            self.0.convs.fail(n, why);
            return;
        }
        let router = crate::conv::reserved();
        let env = Envelope::new(
            self.next_id(),
            Addr::on(self.id().clone(), router),
            src,
            Kind::Error(why.to_string()),
            Bytes::new(),
        );
        let r = self.clone();
        self.spawn(async move { r.forward(env).await });
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.0.next_id.fetch_add(1, Relaxed)
    }

    /// A router-to-router control envelope.
    pub(crate) fn control(&self, to: &MachineId, kind: Kind) -> Envelope {
        let me = self.id().clone();
        let router = crate::conv::reserved();
        Envelope::new(self.next_id(), Addr::on(me, router.clone()), Addr::on(to.clone(), router), kind, Bytes::new())
    }

    /// Forwards an envelope towards its destination.
    pub async fn forward(&self, env: Envelope) {
        let span = tracing::debug_span!("hop", id = env.id, kind = crate::term::kind_name(&env.kind), src = %env.src, dst = %env.dst);
        self.forward_inner(env).instrument(span).await
    }

    async fn forward_inner(&self, mut env: Envelope) {
        let me = self.id().clone();
        if env.via.contains(&me) {
            return self.bounce(env, error::detail(EHOPS, "loop"));
        }
        env.via.push(me.clone());
        if env.via.len() > HOP_LIMIT {
            return self.bounce(env, EHOPS.to_string());
        }
        if env.dst.machine.is_none() {
            match self.resolve(&env) {
                Some(m) => env.dst.machine = Some(m),
                None => {
                    if let Some(m) = crate::registry::lookup(self, &env.dst.service).await {
                        env.dst.machine = Some(m);
                    } else {
                        let svc = env.dst.service.clone();
                        return self.bounce(env, error::detail(ENOSERVICE, svc));
                    }
                }
            }
        }
        let dst = env.dst.machine.clone().unwrap_or_else(|| me.clone());
        if dst == me {
            return self.deliver_here(env).await;
        }
        let term = {
            let t = self.table();
            t.best(&dst).and_then(|r| self.term(&r.term))
        };
        let term = match term {
            Some(t) => Some(t),
            // Routers with a registry ask it about machines they miss (not
            // about the registry's own machine: that would ask itself).
            None if self.0.cfg.registry.as_ref() != Some(&dst) && crate::registry::refresh(self).await => {
                let t = self.table();
                t.best(&dst).and_then(|r| self.term(&r.term))
            }
            None => None,
        };
        let Some(term) = term else {
            return self.bounce(env, error::detail(ENOROUTE, dst));
        };
        debug!(term = %term.name, "forward");
        if let Err(env) = term.send(env).await {
            self.bounce(env, error::detail(error::ELINK, &term.name));
        }
    }

    /// The machine a service-addressed envelope goes to: the replica its
    /// conversation already talks to, else the nearest one.
    fn resolve(&self, env: &Envelope) -> Option<MachineId> {
        let key = (env.src.clone(), env.dst.service.clone());
        let mut sticky = lock(&self.0.sticky);
        if env.kind == Kind::Hangup {
            return sticky.remove(&key);
        }
        if let Some(m) = sticky.get(&key) {
            return Some(m.clone());
        }
        let m = self.table().nearest(env.dst.service.as_str())?.machine.clone();
        // Only conversations stick; a lone control message need not. Eof
        // can start one too (a data file opened only to read).
        if env.src.conv.is_some() && matches!(env.kind, Kind::Data | Kind::Eof) {
            sticky.insert(key, m.clone());
        }
        Some(m)
    }

    async fn deliver_here(&self, env: Envelope) {
        if env.src.machine.as_ref() == Some(self.id()) {
            if let Some(lb) = self.term("loopback") {
                lb.note("out", &env);
            }
        }
        if let Some(client) = self.client_for(&env) {
            return match client {
                Ok(term) => {
                    if let Err(env) = term.send(env).await {
                        self.bounce(env, error::detail(error::ELINK, "local client gone"));
                    }
                }
                Err(e) => self.bounce(env, e),
            };
        }
        if let Some(local) = self.term("local") {
            local.note("in", &env);
        }
        match self.0.convs.deliver(env) {
            Delivery::Done => {}
            Delivery::Bounce(env, why) => self.bounce(env, why),
            Delivery::NotMine(env) => {
                let why = match env.dst.conv {
                    Some(n) => error::detail(error::ENOCONV, n),
                    None => error::detail(ENOSERVICE, &env.dst.service),
                };
                self.bounce(env, why)
            }
        }
    }

    /// The local client an envelope belongs to, if any.
    fn client_for(&self, env: &Envelope) -> Option<Result<Arc<Term>, String>> {
        let clients = self.0.clients.read().unwrap_or_else(|e| e.into_inner());
        match env.dst.conv {
            Some(n) if n >> 32 != 0 => {
                let k = (n >> 32) as u32;
                Some(clients.get(&k).cloned().ok_or_else(|| error::detail(error::ENOCONV, n)))
            }
            Some(_) => None,
            None => {
                let k = *self.0.client_services.read().unwrap_or_else(|e| e.into_inner()).get(&env.dst.service)?;
                Some(clients.get(&k).cloned().ok_or_else(|| error::detail(ENOSERVICE, &env.dst.service)))
            }
        }
    }

    /// Sends an error back to the source of an envelope that cannot be
    /// delivered. Errors about control messages are only logged: their
    /// sender is gone or does not wait for an answer.
    pub(crate) fn bounce(&self, env: Envelope, why: String) {
        if !matches!(env.kind, Kind::Data | Kind::Eof | Kind::Query(_)) {
            debug!(src = %env.src, dst = %env.dst, kind = crate::term::kind_name(&env.kind), %why, "undeliverable control message");
            return;
        }
        debug!(src = %env.src, dst = %env.dst, %why, "bounce");
        // The error comes from the address that failed when it is here,
        // else from this router: an envelope's source is always on the
        // machine it starts from.
        let from = match &env.dst.machine {
            Some(m) if m == self.id() => env.dst.clone(),
            None => Addr { machine: Some(self.id().clone()), ..env.dst.clone() },
            Some(_) => Addr::on(self.id().clone(), crate::conv::reserved()),
        };
        let err = Envelope::new(self.next_id(), from, env.src, Kind::Error(why), Bytes::new());
        // The head of a chain is waiting for the end of it: tell it too.
        let origin = env.origin.filter(|o| *o != err.dst).map(|o| {
            let mut e = err.clone();
            e.id = self.next_id();
            e.dst = o;
            e
        });
        let r = self.clone();
        self.spawn(async move {
            r.forward(err).await;
            if let Some(e) = origin {
                r.forward(e).await;
            }
        });
    }

    /// Ends every link, fails every conversation and stops the tasks.
    pub fn shutdown(&self) {
        self.0.convs.fail_all(error::ESHUTDOWN);
        self.0.shutdown.cancel();
    }

    /// Pings the neighbours and notices silent ones, in a task of its own
    /// so that a link whose writer is stuck cannot delay the verdict.
    async fn keepalive_loop(self) {
        let mut tick = tokio::time::interval(self.0.cfg.period / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.0.shutdown.cancelled() => return,
                _ = tick.tick() => crate::link::ping_all(&self),
            }
        }
    }

    /// Sends updates to the neighbours, expires registry routes and
    /// reports of lost links.
    async fn gossip_loop(self) {
        let period = self.0.cfg.period;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let expiry = self.table().next_expiry();
            tokio::select! {
                _ = self.0.shutdown.cancelled() => return,
                _ = self.0.changed.notified() => self.send_updates().await,
                _ = sleep_until(expiry) => {
                    let change = self.0.table.write().unwrap_or_else(|e| e.into_inner()).expire(tokio::time::Instant::now());
                    self.after_change(change);
                }
                _ = tick.tick() => {
                    self.send_updates().await;
                    crate::registry::expire(&self);
                }
            }
        }
    }

    /// Sends each neighbour what changed since it was last told.
    async fn send_updates(&self) {
        if !self.0.cfg.gossip {
            return;
        }
        let peers: Vec<(MachineId, Arc<Term>)> = self
            .terms()
            .into_iter()
            .filter_map(|t| match &t.kind {
                TermKind::Net(m) => Some((m.clone(), t)),
                _ => None,
            })
            .collect();
        for (peer, term) in peers {
            let full = lock(&self.0.resync).remove(&peer);
            let ann = {
                let table = self.table();
                let mut g = lock(&self.0.gossip);
                let g = g.entry(peer.clone()).or_default();
                if full {
                    Some(g.full(&table, &peer))
                } else {
                    g.update(&table, &peer)
                }
            };
            if let Some(mut ann) = ann {
                if !self.0.cfg.root_cause {
                    ann.lost.clear();
                }
                debug!(%peer, seq = ann.seq, full = ann.full, entries = ann.entries.len(), lost = ann.lost.len(), "announce");
                let env = self.control(&peer, Kind::Routes(ann));
                let _ = term.send(env).await;
            }
        }
    }
}

/// Sleeps until `t`, or for ever.
async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The router as the outbox of its own conversations.
struct Forwarder(std::sync::Weak<Inner>);

impl Outbox for Forwarder {
    fn send(&self, env: Envelope) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(inner) = self.0.upgrade() {
                Router(inner).forward(env).await
            }
        })
    }

    fn next_id(&self) -> u64 {
        self.0.upgrade().map(|i| i.next_id.fetch_add(1, Relaxed)).unwrap_or(0)
    }
}

#[allow(dead_code)]
fn _assert_send(r: Router, e: Envelope) {
    fn is_send<T: Send>(_: T) {}
    is_send(r.forward(e));
}

pub(crate) fn warn_link(term: &Term, what: &str, err: impl std::fmt::Display) {
    term.stats.errors.fetch_add(1, Relaxed);
    // A local client that exits mid-write is ordinary, not a fault.
    if matches!(term.kind, TermKind::Client(_)) {
        debug!(term = %term.name, "{what}: {err}");
    } else {
        warn!(term = %term.name, addr = %term.addr, "{what}: {err}");
    }
}
