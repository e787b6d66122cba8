//! The registry protocol and the router's registry client.
//!
//! A router configured with a registry keeps one conversation open with
//! `/n/R/svc/registry`: it registers its local services on it (again after
//! every change), and every period asks for the whole list, which becomes
//! its registry-learned routes. A name missing from the table is looked up
//! at once. Entries live as long as the registering conversation, like
//! Inferno's registry(4): when a router goes, so do its entries.
//! [`RegistryService`] is the service itself, for the `registry` kind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{debug, info};

use crate::cbor;
use crate::conv::{lock, Conv, Msg, Service};
use crate::path::{Addr, MachineId, Name, ServiceName};
use crate::route::Advert;
use crate::router::Router;

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

/// The client's state inside a router.
pub struct ClientState {
    changed: Notify,
    reachable: AtomicBool,
    /// When the list last came: registry routes expire three periods on.
    refreshed: Mutex<Option<tokio::time::Instant>>,
    lookups: mpsc::Sender<LookupReq>,
    lookups_rx: Mutex<Option<mpsc::Receiver<LookupReq>>>,
}

impl Default for ClientState {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(64);
        ClientState {
            changed: Notify::new(),
            reachable: AtomicBool::new(false),
            refreshed: Mutex::new(None),
            lookups: tx,
            lookups_rx: Mutex::new(Some(rx)),
        }
    }
}

impl ClientState {
    pub(crate) fn local_changed(&self) {
        self.changed.notify_one();
    }

    /// Whether the last exchange with the registry succeeded.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Relaxed)
    }
}

impl Router {
    /// Whether this router has a registry and last reached it.
    pub fn registry_status(&self) -> Option<(MachineId, bool)> {
        let r = self.config().registry.clone()?;
        Some((r, self.0.registry.reachable()))
    }
}

/// Drops the registry's routes once three periods have passed without a
/// fresh list: a registry that died takes its routes with it, late.
pub(crate) fn expire(r: &Router) {
    let stale = lock(&r.0.registry.refreshed).is_some_and(|t| t.elapsed() > r.config().period * 3);
    if stale {
        *lock(&r.0.registry.refreshed) = None;
        info!("registry routes expired");
        r.log_event("registry routes expired".into());
        let change = r.0.table.write().unwrap_or_else(|e| e.into_inner()).set_registry(HashMap::new());
        r.after_change(change);
    }
}

/// Looks up a service the table does not know, if there is a registry.
pub(crate) async fn lookup(r: &Router, name: &ServiceName) -> Option<MachineId> {
    ask_client(r, Some(name.clone())).await;
    r.table().nearest(name.as_str()).map(|rt| rt.machine.clone())
}

/// Refreshes the registry routes at once; false without a registry.
pub(crate) async fn refresh(r: &Router) -> bool {
    ask_client(r, None).await
}

async fn ask_client(r: &Router, name: Option<ServiceName>) -> bool {
    if r.config().registry.is_none() {
        return false;
    }
    let (tx, rx) = oneshot::channel();
    if r.0.registry.lookups.try_send((name, tx)).is_err() {
        return false;
    }
    matches!(tokio::time::timeout(Duration::from_secs(2), rx).await, Ok(Ok(())))
}

/// Runs the registry client until shutdown, reconnecting after failures.
pub(crate) async fn client_loop(r: Router) {
    let Some(reg) = r.config().registry.clone() else { return };
    let Some(mut lookups) = lock(&r.0.registry.lookups_rx).take() else { return };
    let svc = Name::new("registry").expect("valid name");
    let period = r.config().period;
    loop {
        let mut conv = r.open(Addr::on(reg.clone(), svc.clone()), Vec::new());
        let res = session(&r, &mut conv, &mut lookups).await;
        if r.0.shutdown.is_cancelled() {
            return;
        }
        if r.0.registry.reachable.swap(false, Relaxed) {
            info!(registry = %reg, "registry unreachable: {}", res.unwrap_err_or_default());
        }
        r.log_event(format!("registry {reg} unreachable: {}", res.unwrap_err_or_default()));
        drop(conv);
        tokio::select! {
            _ = r.0.shutdown.cancelled() => return,
            _ = tokio::time::sleep(period.min(Duration::from_secs(1))) => {}
        }
    }
}

trait ErrOrDefault {
    fn unwrap_err_or_default(&self) -> String;
}
impl ErrOrDefault for Result<(), String> {
    fn unwrap_err_or_default(&self) -> String {
        self.as_ref().err().cloned().unwrap_or_default()
    }
}

async fn session(r: &Router, conv: &mut Conv, lookups: &mut mpsc::Receiver<LookupReq>) -> Result<(), String> {
    let period = r.config().period;
    let mut tick = tokio::time::interval(period);
    register(r, conv).await?;
    loop {
        tokio::select! {
            _ = r.0.shutdown.cancelled() => return Ok(()),
            _ = r.0.registry.changed.notified() => register(r, conv).await?,
            _ = tick.tick() => {
                let entries = ask(conv, None, period * 3).await?;
                r.0.registry.reachable.store(true, Relaxed);
                *lock(&r.0.registry.refreshed) = Some(tokio::time::Instant::now());
                let ads = adverts(r, &entries);
                let change = r.0.table.write().unwrap_or_else(|e| e.into_inner()).set_registry(ads);
                r.after_change(change);
            }
            Some((name, answer)) = lookups.recv() => {
                debug!(service = ?name, "registry lookup");
                let entries = ask(conv, name.clone(), period * 3).await?;
                let ads = adverts(r, &entries);
                let change = if name.is_some() {
                    let mut t = r.0.table.write().unwrap_or_else(|e| e.into_inner());
                    let mut change = crate::route::Change::default();
                    for (m, ad) in ads {
                        let c = t.add_registry(m, ad);
                        change.changed.extend(c.changed);
                        change.lost.extend(c.lost);
                    }
                    change
                } else {
                    r.0.table.write().unwrap_or_else(|e| e.into_inner()).set_registry(ads)
                };
                r.after_change(change);
                let _ = answer.send(());
            }
        }
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
        if e.machine == *r.id() || e.path.first().is_none() {
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

/// The registry service: entries by registering conversation.
pub struct RegistryService {
    router: Router,
    entries: Arc<Mutex<HashMap<Addr, (MachineId, Vec<ServiceName>)>>>,
}

impl RegistryService {
    pub fn new(router: Router) -> RegistryService {
        RegistryService { router, entries: Default::default() }
    }

    /// Entries for `name` (or all), with this machine's path to each.
    fn lookup(
        router: &Router,
        entries: &HashMap<Addr, (MachineId, Vec<ServiceName>)>,
        name: Option<&ServiceName>,
    ) -> Vec<Entry> {
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
