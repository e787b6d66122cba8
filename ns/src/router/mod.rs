//! The router: forwards envelopes by destination and keeps the tables.
//!
//! Forwarding, for each envelope: count the hop (a loop or the hop limit is
//! an error), resolve `/svc/S` to the nearest replica once per
//! conversation (sticky), then deliver here or send on the terminal of the
//! best route. Whatever cannot be delivered goes back to its source as an
//! `Error` envelope: nothing is dropped silently.
//!
//! The hop limit: an envelope that has crossed [`HOP_LIMIT`] machines,
//! this one included, is delivered if it is here and stops here if not.
//! Its error then goes back over no more machines than it came by, so it
//! fits the limit too (stopping it one machine later, the error would
//! need one machine more than the limit allows, and be lost).
//!
//! The router owns forwarding and its tables: routes, terminals
//! ([`Terms`]), local clients (`Clients`), sticky replicas. The rest
//! plugs in, and forwarding never names it: the routing protocol as a
//! [`Routing`] (gossip, `peers`), a way to find what the table
//! misses as a [`Discovery`] (the registry client, [`crate::registry`]).
//! `start` builds a router with its parts. Its child module `rules`
//! applies who may reach what: the policy, its reload, the check of each
//! envelope for this machine, the events told once in a while.
//!
//! Lock order: `sticky`, then `table`, then the locks of [`Terms`] and
//! `Clients` (each file says its own order); `log`, `states`, `policy`
//! and `told` are taken alone (`told` is let go before `log` is taken).
//! No lock is held across an await.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, Instrument};

pub use crate::config::{Config, Security};

mod rules;

use crate::clients::Clients;
use crate::conv::{lock, Conv, ConvTable, Delivery, Outbox, Service};
use crate::envelope::{Envelope, Kind, HOP_LIMIT};
use crate::error::{self, EHOPS, ENOROUTE, ENOSERVICE};
use crate::pairs::Pairs;
use crate::path::{bang_path, Addr, MachineId, ServiceName, TermName};
use crate::policy::Policy;
use crate::route::{Change, RouteTable};
use crate::term::{Term, Terms};
use rules::Reloader;

/// A routing protocol, as forwarding sees it: told of links and of
/// changes to the table, handed what neighbours say to it. Chosen once,
/// when the router is built (zenoh's shape).
pub trait Routing: Send + Sync {
    /// A link to neighbour `peer` came up.
    fn link_up(&self, peer: &MachineId);
    /// The link to neighbour `peer` went.
    fn link_down(&self, peer: &MachineId);
    /// The route table changed: neighbours may need telling.
    fn table_changed(&self);
    /// A router-to-router envelope from neighbour `peer` on `term`
    /// (routes, resync, ping, pong). An error closes the link.
    fn receive<'a>(
        &'a self,
        r: &'a Router,
        term: &'a Term,
        peer: &'a MachineId,
        env: Envelope,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// A way to learn routes the table misses, asked by forwarding.
pub trait Discovery: Send + Sync {
    /// The machine asked; never asked about itself.
    fn machine(&self) -> &MachineId;
    /// Whether the last exchange with it succeeded.
    fn reachable(&self) -> bool;
    /// Asks about one service, or `None` about everything, and puts what
    /// it learns in the table; false when no answer came.
    fn ask(&self, service: Option<ServiceName>) -> BoxFuture<'_, bool>;
    /// The services of this machine changed.
    fn local_changed(&self);
}

/// A router; cloning gives another handle to the same one.
#[derive(Clone)]
pub struct Router(Arc<Inner>);

struct Inner {
    cfg: Config,
    convs: Arc<ConvTable>,
    table: RwLock<RouteTable>,
    terms: Terms,
    clients: Clients,
    /// The replica each conversation talks to, by (source, service).
    sticky: Mutex<HashMap<(Addr, ServiceName), MachineId>>,
    next_id: AtomicU64,
    /// This run of the router (see `session::new_run`).
    run: u64,
    shutdown: CancellationToken,
    /// Recent ctl errors and events, for reading `ctl`.
    log: Mutex<VecDeque<String>>,
    /// The state of what runs on the router (pipelines), by name, for
    /// reading `ctl`.
    states: Mutex<std::collections::BTreeMap<String, String>>,
    routing: Arc<dyn Routing>,
    discovery: Option<Arc<dyn Discovery>>,
    /// Who may reach this machine's services, and whether it ever
    /// refuses anyone (when not, nothing is checked).
    policy: RwLock<(Arc<Policy>, bool)>,
    /// Reads the rules again (`reload` in `ctl`, SIGHUP), where the
    /// router was started from a deployment file.
    reloader: std::sync::OnceLock<Reloader>,
    /// When each event told at most once in a while (a denial by who
    /// and service, a refusal by source and relay) was last told.
    told: Mutex<HashMap<(String, String), tokio::time::Instant>>,
    /// End-to-end sessions with the machines this one pins; `None` when
    /// links are not secured.
    pairs: Option<Pairs>,
}

impl Router {
    /// A router with its parts, running until `shutdown` is cancelled;
    /// `start` starts their tasks.
    pub(crate) fn with(
        cfg: Config,
        shutdown: CancellationToken,
        routing: Arc<dyn Routing>,
        discovery: Option<Arc<dyn Discovery>>,
    ) -> Router {
        let convs = ConvTable::new(cfg.id.clone(), 0);
        let pairs = cfg.security.as_ref().map(|s| Pairs::new(s.identity.clone(), &s.trust));
        let inner = Arc::new(Inner {
            table: RwLock::new(RouteTable::new(cfg.id.clone())),
            cfg,
            convs: convs.clone(),
            terms: Terms::new(),
            clients: Clients::default(),
            sticky: Default::default(),
            next_id: AtomicU64::new(1),
            run: crate::session::new_run(),
            shutdown,
            log: Default::default(),
            states: Default::default(),
            routing,
            discovery,
            policy: RwLock::new((Arc::new(Policy::default()), true)),
            reloader: Default::default(),
            told: Default::default(),
            pairs,
        });
        convs.set_outbox(Arc::new(Forwarder(Arc::downgrade(&inner))));
        Router(inner)
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

    /// This run of the router: a neighbour's fresh link from another run
    /// is a restart, never the old session.
    pub fn run(&self) -> u64 {
        self.0.run
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

    /// Opens a conversation for `user` of this machine (a FUSE caller):
    /// the service's `allow` rules see that user.
    pub fn open_as(&self, dst: Addr, reply: Vec<Addr>, user: Option<Arc<str>>) -> Conv {
        self.0.convs.open_as(dst, reply, user)
    }

    /// The end-to-end sessions, where links are secured.
    pub fn pairs(&self) -> Option<&Pairs> {
        self.0.pairs.as_ref()
    }

    /// The conversations of this router's own endpoints.
    pub fn convs(&self) -> &Arc<ConvTable> {
        &self.0.convs
    }

    /// A read view of the route table.
    pub fn table(&self) -> std::sync::RwLockReadGuard<'_, RouteTable> {
        self.0.table.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the route table; the caller acts on the change.
    pub(crate) fn write_table<T>(&self, f: impl FnOnce(&mut RouteTable) -> T) -> T {
        f(&mut self.0.table.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// Changes the route table and acts on the change.
    pub(crate) fn update_table(&self, f: impl FnOnce(&mut RouteTable) -> Change) {
        let change = self.write_table(f);
        self.after_change(change);
    }

    /// The `routes` file.
    pub fn routes(&self) -> String {
        self.table().render()
    }

    /// The terminal table.
    pub fn term_table(&self) -> &Terms {
        &self.0.terms
    }

    /// The terminals, sorted by name.
    pub fn terms(&self) -> Vec<Arc<Term>> {
        self.0.terms.all()
    }

    pub fn term(&self, name: &TermName) -> Option<Arc<Term>> {
        self.0.terms.get(name)
    }

    /// The terminals to show: the linked ones, and the placeholders of
    /// neighbours dialed but not linked.
    pub fn shown_terms(&self) -> Vec<Arc<Term>> {
        self.0.terms.shown()
    }

    /// A terminal to show, by its name in `term/`: linked, else a
    /// placeholder; none for text that is no terminal name.
    pub fn shown_term(&self, name: &str) -> Option<Arc<Term>> {
        self.0.terms.shown_one(&name.parse().ok()?)
    }

    /// The local clients.
    pub(crate) fn clients(&self) -> &Clients {
        &self.0.clients
    }

    /// The routing protocol.
    pub(crate) fn routing(&self) -> &dyn Routing {
        &*self.0.routing
    }

    /// Whether this router has a registry and last reached it.
    pub fn registry_status(&self) -> Option<(MachineId, bool)> {
        let d = self.0.discovery.as_ref()?;
        Some((d.machine().clone(), d.reachable()))
    }

    /// Records a link refused to or by machine `m`, in the status of its
    /// terminal (linked or placeholder) and in `ctl`.
    pub fn note_refusal(&self, m: &MachineId, line: String) {
        self.0.terms.refused(&TermName::Net(m.clone()), &line);
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

    /// Says what `name` (a pipeline) is doing now, shown in `ctl` as
    /// `NAME STATE` until said again.
    pub fn set_state(&self, name: &str, state: String) {
        lock(&self.0.states).insert(name.to_string(), state);
    }

    /// What runs on the router and its state, by name.
    pub fn states(&self) -> Vec<(String, String)> {
        lock(&self.0.states).iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The recent events, oldest first.
    pub fn events(&self) -> Vec<String> {
        lock(&self.0.log).iter().cloned().collect()
    }

    /// Recomputes local services after a change and tells the neighbours.
    pub(crate) fn local_changed(&self) {
        let mut svcs = self.0.convs.services();
        svcs.extend(self.0.clients.services());
        self.update_table(|t| t.set_local(svcs));
        if let Some(d) = &self.0.discovery {
            d.local_changed();
        }
    }

    /// Acts on a route change: ends conversations with lost machines and
    /// tells the routing protocol.
    pub(crate) fn after_change(&self, change: Change) {
        if change.is_empty() {
            return;
        }
        for m in &change.lost {
            info!(machine = %m, "machine unreachable");
            if let Some(p) = self.pairs() {
                p.unreachable(m);
            }
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
        self.greet_new(&change.changed);
        self.0.routing.table_changed();
    }

    /// Fails a local endpoint, in this process or in a local client.
    pub(crate) fn fail_endpoint(&self, src: Addr, why: &str) {
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
            debug!(path = %bang_path(&env.via), "hop limit passed");
            return self.bounce(env, EHOPS.to_string());
        }
        if env.dst.machine.is_none() {
            match self.resolve(&env) {
                Some(m) => env.dst.machine = Some(m),
                None => {
                    if let Some(m) = self.discover(&env.dst.service).await {
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
        if let Err(why) = self.seal_for(&dst, &mut env).await {
            return self.bounce(env, why);
        }
        let term = {
            let t = self.table();
            t.best(&dst).and_then(|r| self.term(&r.term))
        };
        let term = match term {
            Some(t) => Some(t),
            // Discovery (a registry) is asked about machines the table
            // misses, but not about its own machine: that would ask itself.
            None if self.refresh_for(&dst).await => {
                let t = self.table();
                t.best(&dst).and_then(|r| self.term(&r.term))
            }
            None => None,
        };
        let Some(term) = term else {
            return self.bounce(env, error::detail(ENOROUTE, dst));
        };
        if env.via.len() >= HOP_LIMIT {
            // Counted where it would have left, for the terminal's status.
            term.stats.errors.fetch_add(1, Relaxed);
            debug!(term = %term.name, path = %bang_path(&env.via), "hop limit reached");
            return self.bounce(env, EHOPS.to_string());
        }
        debug!(term = %term.name, "forward");
        if let Err(env) = term.send(env).await {
            self.lost_at(&term, env);
        }
    }

    /// Asks discovery about a service the table does not know.
    async fn discover(&self, name: &ServiceName) -> Option<MachineId> {
        if let Some(d) = &self.0.discovery {
            d.ask(Some(name.clone())).await;
        }
        self.table().nearest(name.as_str()).map(|rt| rt.machine.clone())
    }

    /// Refreshes what discovery knows, for a machine the table misses;
    /// false without discovery, or when it is the machine asked.
    async fn refresh_for(&self, m: &MachineId) -> bool {
        match &self.0.discovery {
            Some(d) if d.machine() != m => d.ask(None).await,
            _ => false,
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

    async fn deliver_here(&self, mut env: Envelope) {
        if let Kind::Pair(_) = env.kind {
            return self.pair_message(env);
        }
        if let Err(why) = self.open_arrival(&mut env) {
            return self.refuse_arrival(env, why);
        }
        if env.src.machine.as_ref() == Some(self.id()) {
            if let Some(lb) = self.term(&TermName::Loopback) {
                lb.note("out", &env);
            }
        }
        if let Some(why) = self.refused(&env) {
            return self.bounce(env, why);
        }
        if let Some(client) = self.0.clients.target(&env) {
            return match client {
                Ok(term) => {
                    if let Err(env) = term.send(env).await {
                        self.bounce(env, error::detail(error::ELINK, "local client gone"));
                    }
                }
                Err(e) => self.bounce(env, e),
            };
        }
        if let Some(local) = self.term(&TermName::Local) {
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

    /// Sends an error back to the source of an envelope that cannot be
    /// delivered. Errors about control messages are only logged: their
    /// sender is gone or does not wait for an answer.
    pub(crate) fn bounce(&self, env: Envelope, why: String) {
        if !matches!(env.kind, Kind::Data | Kind::Eof) {
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
