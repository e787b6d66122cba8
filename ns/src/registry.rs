//! The registry protocol and the router's registry client.
//!
//! A router configured with a registry keeps one conversation open with
//! `/n/R/svc/registry`: it registers its local services on it (again after
//! every change), and every period asks for the whole list, which becomes
//! its registry-learned routes. A name missing from the table is looked up
//! at once. Entries live as long as the registering conversation, like
//! Inferno's registry(4): when a router goes, so do its entries.
//! The client plugs into forwarding as the router's [`Discovery`], so the
//! router never names the registry. [`RegistryService`] is the service
//! itself, for the `registry` kind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{debug, info};

use crate::cbor;
use crate::conv::{lock, Conv, Msg, Service};
use crate::path::{Addr, MachineId, Name, ServiceName};
use crate::route::{Advert, Change};
use crate::router::{Discovery, Router};

/// A request to the registry, one CBOR message each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Replaces the services registered by this conversation.
    Register(Vec<ServiceName>),
    /// Asks for the machines serving one service, or for every registered
    /// machine; answered with one message holding a `Vec<Entry>`.
    Lookup(Option<ServiceName>),
}

/// A registered machine, as the registry's machine sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub machine: MachineId,
    /// From the registry's machine to `machine`, both included.
    pub path: Vec<MachineId>,
    pub services: Vec<ServiceName>,
}

/// A lookup: one service, or `None` to refresh the whole list.
type LookupReq = (Option<ServiceName>, oneshot::Sender<()>);

/// The router's registry client: its state, its task, and the
/// [`Discovery`] forwarding asks.
///
/// Lock order: `refreshed` and `lookups_rx` are each taken alone (the
/// service's `entries`, below, is taken before the router's table).
pub struct Client {
    /// The registry's machine.
    machine: MachineId,
    changed: Notify,
    reachable: AtomicBool,
    /// When the list last came: registry routes expire three periods on.
    refreshed: Mutex<Option<tokio::time::Instant>>,
    lookups: mpsc::Sender<LookupReq>,
    lookups_rx: Mutex<Option<mpsc::Receiver<LookupReq>>>,
}

impl Client {
    /// A client of the registry on `machine`; [`Client::run`] runs it.
    pub(crate) fn new(machine: MachineId) -> Client {
        let (tx, rx) = mpsc::channel(64);
        Client {
            machine,
            changed: Notify::new(),
            reachable: AtomicBool::new(false),
            refreshed: Mutex::new(None),
            lookups: tx,
            lookups_rx: Mutex::new(Some(rx)),
        }
    }

    /// Runs the client until shutdown, reconnecting after failures, and
    /// expires the registry's routes when no fresh list comes.
    pub(crate) async fn run(self: Arc<Self>, r: Router) {
        let Some(mut lookups) = lock(&self.lookups_rx).take() else { return };
        r.spawn(self.clone().expiry(r.clone()));
        let svc = Name::new("registry").expect("valid name");
        let reg = self.machine.clone();
        let period = r.config().period;
        loop {
            let mut conv = r.open(Addr::on(reg.clone(), svc.clone()), Vec::new());
            let res = self.session(&r, &mut conv, &mut lookups).await;
            if r.shutdown_token().is_cancelled() {
                return;
            }
            let why = res.err().unwrap_or_default();
            if self.reachable.swap(false, Relaxed) {
                info!(registry = %reg, "registry unreachable: {why}");
            }
            r.log_event(format!("registry {reg} unreachable: {why}"));
            drop(conv);
            tokio::select! {
                _ = r.shutdown_token().cancelled() => return,
                _ = tokio::time::sleep(period.min(Duration::from_secs(1))) => {}
            }
        }
    }

    /// Every period, drops the registry's routes once three periods have
    /// passed without a fresh list: a registry that died takes its routes
    /// with it, late.
    async fn expiry(self: Arc<Self>, r: Router) {
        let period = r.config().period;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = r.shutdown_token().cancelled() => return,
                _ = tick.tick() => {}
            }
            let stale = lock(&self.refreshed).is_some_and(|t| t.elapsed() > period * 3);
            if stale {
                *lock(&self.refreshed) = None;
                info!("registry routes expired");
                r.log_event("registry routes expired".into());
                r.update_table(|t| t.set_registry(HashMap::new()));
            }
        }
    }

    async fn session(
        &self,
        r: &Router,
        conv: &mut Conv,
        lookups: &mut mpsc::Receiver<LookupReq>,
    ) -> Result<(), String> {
        let period = r.config().period;
        let mut tick = tokio::time::interval(period);
        register(r, conv).await?;
        loop {
            tokio::select! {
                _ = r.shutdown_token().cancelled() => return Ok(()),
                _ = self.changed.notified() => register(r, conv).await?,
                _ = tick.tick() => {
                    let entries = ask(conv, None, period * 3).await?;
                    self.reachable.store(true, Relaxed);
                    *lock(&self.refreshed) = Some(tokio::time::Instant::now());
                    let ads = adverts(r, &entries);
                    r.update_table(|t| t.set_registry(ads));
                }
                Some((name, answer)) = lookups.recv() => {
                    debug!(service = ?name, "registry lookup");
                    let entries = ask(conv, name.clone(), period * 3).await?;
                    let ads = adverts(r, &entries);
                    r.update_table(|t| {
                        if name.is_none() {
                            return t.set_registry(ads);
                        }
                        let mut change = Change::default();
                        for (m, ad) in ads {
                            let c = t.add_registry(m, ad);
                            change.changed.extend(c.changed);
                            change.lost.extend(c.lost);
                        }
                        change
                    });
                    let _ = answer.send(());
                }
            }
        }
    }
}

impl Discovery for Client {
    fn machine(&self) -> &MachineId {
        &self.machine
    }

    fn reachable(&self) -> bool {
        self.reachable.load(Relaxed)
    }

    fn ask(&self, service: Option<ServiceName>) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            if self.lookups.try_send((service, tx)).is_err() {
                return false;
            }
            matches!(tokio::time::timeout(Duration::from_secs(2), rx).await, Ok(Ok(())))
        })
    }

    fn local_changed(&self) {
        self.changed.notify_one();
    }
}

async fn register(r: &Router, conv: &Conv) -> Result<(), String> {
    let svcs = r.table().best(r.id()).map(|rt| rt.services.clone()).unwrap_or_default();
    conv.tx.send(cbor::encode(&Request::Register(svcs))).await
}

async fn ask(conv: &mut Conv, name: Option<ServiceName>, wait: Duration) -> Result<Vec<Entry>, String> {
    conv.tx.send(cbor::encode(&Request::Lookup(name))).await?;
    match tokio::time::timeout(wait, conv.rx.recv()).await {
        Err(_) => Err("no answer".into()),
        Ok(Some(Msg::Data(b))) => cbor::decode(&b, "registry message"),
        Ok(Some(Msg::Error(e))) => Err(e),
        Ok(_) => Err(crate::error::EHUNGUP.into()),
    }
}

/// Routes from registry entries: the path to the registry's machine, then
/// its path to each machine, or this router's own path when it is no
/// longer; looping paths are skipped.
fn adverts(r: &Router, entries: &[Entry]) -> HashMap<MachineId, Advert> {
    let table = r.table();
    let mut out: HashMap<MachineId, Advert> = HashMap::new();
    for e in entries {
        if e.machine == *r.id() || e.path.is_empty() {
            continue;
        }
        // A path this router knows without the registry (a neighbour, or
        // gossip) is kept when no longer: the entry then outlives the
        // registry's machine until it expires, as registry routes should.
        let own = table
            .alternatives(&e.machine)
            .into_iter()
            .find(|rt| rt.source != "registry")
            .map(|rt| rt.path[1..].to_vec());
        let Some(to_reg) = table.best(&e.path[0]) else { continue };
        let mut path: Vec<MachineId> = to_reg.path[1..].to_vec();
        path.extend(e.path[1..].iter().cloned());
        if let Some(own) = own.filter(|p| !p.is_empty() && p.len() <= path.len()) {
            path = own;
        }
        let mut seen = std::collections::HashSet::new();
        if path.is_empty() || path.contains(r.id()) || !path.iter().all(|m| seen.insert(m.clone())) {
            continue;
        }
        out.insert(e.machine.clone(), Advert { path, services: e.services.clone() });
    }
    out
}

/// What each registering conversation registered: its machine and the
/// services there.
type Entries = HashMap<Addr, (MachineId, Vec<ServiceName>)>;

/// The registry service: entries by registering conversation.
pub struct RegistryService {
    router: Router,
    entries: Arc<Mutex<Entries>>,
}

impl RegistryService {
    pub fn new(router: Router) -> RegistryService {
        RegistryService { router, entries: Default::default() }
    }

    /// Entries for `name` (or all), with this machine's path to each.
    fn lookup(router: &Router, entries: &Entries, name: Option<&ServiceName>) -> Vec<Entry> {
        let table = router.table();
        let mut out = Vec::new();
        for (m, svcs) in entries.values() {
            let Some(route) = table.best(m) else { continue };
            if name.is_none_or(|n| svcs.contains(n)) {
                out.push(Entry { machine: m.clone(), path: route.path.clone(), services: svcs.clone() });
            }
        }
        out.sort_by(|a, b| a.machine.cmp(&b.machine));
        out
    }
}

impl Service for RegistryService {
    fn serve(&self, mut conv: Conv) -> futures::future::BoxFuture<'static, ()> {
        let router = self.router.clone();
        let entries = self.entries.clone();
        Box::pin(async move {
            let me = conv.rx.path().clone();
            let Some(machine) = conv.tx.peer().and_then(|p| p.machine.clone()) else { return };
            while let Some(Msg::Data(b)) = conv.rx.recv().await {
                let reply = match cbor::decode::<Request>(&b, "registry message") {
                    Ok(Request::Register(svcs)) => {
                        debug!(%machine, services = svcs.len(), "registered");
                        lock(&entries).insert(me.clone(), (machine.clone(), svcs));
                        continue;
                    }
                    Ok(Request::Lookup(name)) => {
                        let found = Self::lookup(&router, &lock(&entries), name.as_ref());
                        cbor::encode(&found)
                    }
                    Err(e) => {
                        debug!(%machine, "registry: {e}");
                        break;
                    }
                };
                if conv.tx.send(reply).await.is_err() {
                    break;
                }
            }
            // The session is over: its entries go with it.
            lock(&entries).remove(&me);
            debug!(%machine, "registry session ended");
        })
    }
}
