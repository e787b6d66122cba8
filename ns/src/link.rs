//! Links: handshakes, the reader and writer of each link, dialing with
//! backoff, and local clients.
//!
//! The dialer speaks first: `Hello` with its machine id (or, from a local
//! client, a request for a block of conversation numbers); the acceptor
//! answers with its own. A bad frame, a wrong first frame or a silent peer
//! closes that link alone; the router keeps serving everyone else.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use dial::{DialString, Link, LinkOptions};
use futures::{SinkExt, StreamExt};
use tracing::{debug, info, warn};

use crate::conv::lock;
use crate::envelope::{Envelope, Hello, Kind, MAX_FRAME, VERSION};
use crate::error;
use crate::gossip::adverts;
use crate::path::{Addr, MachineId};
use crate::router::{warn_link, Router};
use crate::term::{Term, TermKind};

/// This machine's key and the keys of the machines it accepts.
pub struct Security {
    pub identity: dial::Identity,
    pub trust: dial::Trust,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Security {{ key {}, {} pinned }}", self.identity.public().fingerprint(), self.trust.len())
    }
}

/// How a network link was secured: the peer machine its key belongs to,
/// and the status line; or no check at all.
struct Secured {
    machine: Option<String>,
    status: String,
}

/// How long the other side has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Link options every mesh link uses.
pub fn link_options() -> LinkOptions {
    LinkOptions { max_frame: MAX_FRAME, ..LinkOptions::default() }
}

/// Microseconds on the runtime's clock (paused in tests).
pub fn now_us() -> u64 {
    static START: OnceLock<tokio::time::Instant> = OnceLock::new();
    START.get_or_init(tokio::time::Instant::now).elapsed().as_micros() as u64
}

fn hello_env(from: &MachineId, client: Option<u32>) -> Envelope {
    let router = crate::conv::reserved();
    let a = Addr::on(from.clone(), router);
    Envelope::new(0, a.clone(), a, Kind::Hello(Hello { machine: from.clone(), version: VERSION, client }), Bytes::new())
}

/// Reads the other side's hello; `None` if it closed without a word.
async fn read_hello(link: &mut Link) -> io::Result<Option<Hello>> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let frame = tokio::time::timeout(HELLO_TIMEOUT, link.rx.next())
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no hello"))?;
    let Some(frame) = frame else { return Ok(None) };
    let env = Envelope::decode(frame?).map_err(|e| bad(e.to_string()))?;
    match env.kind {
        Kind::Hello(h) if h.version == VERSION => Ok(Some(h)),
        Kind::Hello(h) => Err(bad(format!("protocol version {} (want {VERSION})", h.version))),
        _ => Err(bad("first frame is not hello".into())),
    }
}

async fn send_frame(link: &mut Link, env: &Envelope) -> io::Result<()> {
    link.tx.send(env.encode().into()).await
}

impl Router {
    /// Listens on `ds` for neighbours and, on `unix!` and `mem!`, for local
    /// clients. Returns the address actually bound.
    pub async fn listen(&self, ds: &DialString) -> io::Result<DialString> {
        let mut listener = dial::listen(ds, &link_options()).await?;
        let bound = listener.local_addr();
        let clients_ok = matches!(ds, DialString::Unix(_) | DialString::Mem(_));
        let network = ds.is_network();
        info!(addr = %bound, "listening");
        let r = self.clone();
        let addr = bound.clone();
        self.spawn(async move {
            loop {
                tokio::select! {
                    _ = r.0.shutdown.cancelled() => return,
                    res = listener.accept() => match res {
                        Ok(link) => { r.spawn(r.clone().accepted(link, clients_ok, network)); }
                        Err(e) => {
                            warn!(%addr, "accept: {e}");
                            tokio::time::sleep(BACKOFF_MIN).await;
                        }
                    }
                }
            }
        });
        Ok(bound)
    }

    /// Authenticates and encrypts a tcp or ws link, unless this router
    /// runs insecure. An unknown key is refused before anything is read.
    async fn secure(&self, link: Link, role: dial::Role) -> io::Result<(Link, Secured)> {
        match &self.0.cfg.security {
            Some(sec) => {
                let (link, peer) = dial::secure(link, &link_options(), &sec.identity, &sec.trust, role).await?;
                let status = format!("noise {} ({})", peer.key.fingerprint(), peer.machine);
                Ok((link, Secured { machine: Some(peer.machine), status }))
            }
            None => {
                warn!(remote = %link.remote, "INSECURE link: neither authenticated nor encrypted (insecure = true is for benchmarks only)");
                Ok((link, Secured { machine: None, status: "insecure".into() }))
            }
        }
    }

    async fn accepted(self, link: Link, clients_ok: bool, network: bool) {
        let remote = link.remote.clone();
        let (mut link, secured) = if network {
            match self.secure(link, dial::Role::Responder).await {
                Ok(x) => x,
                Err(e) => {
                    warn!(%remote, "refused: {e}");
                    self.log_event(format!("refused {remote}: {e}"));
                    return;
                }
            }
        } else {
            (link, Secured { machine: None, status: "local".into() })
        };
        let hello = match read_hello(&mut link).await {
            Ok(Some(h)) => h,
            // Closed without a word: a probe (a second `mesh up` seeing
            // whether this socket is alive), not a peer that was refused.
            Ok(None) => {
                debug!(%remote, "closed before hello");
                return;
            }
            Err(e) => {
                warn!(%remote, "refused: {e}");
                self.log_event(format!("refused {remote}: {e}"));
                return;
            }
        };
        if hello.client.is_some() {
            let uid_ok = link.uid.is_none_or(|u| u == 0 || u == nix_uid());
            if !clients_ok || !uid_ok {
                warn!(%remote, uid = ?link.uid, "refused local client");
                return;
            }
            let k = self.0.next_client.fetch_add(1, Relaxed);
            if send_frame(&mut link, &hello_env(self.id(), Some(k))).await.is_ok() {
                self.run_client(link, k).await;
            }
            return;
        }
        if hello.machine == *self.id() {
            warn!(%remote, "refused: peer claims to be this machine");
            return;
        }
        if let Some(m) = secured.machine.as_ref().filter(|m| **m != hello.machine.as_str()) {
            warn!(%remote, "refused: key of {m} used by a peer saying it is {}", hello.machine);
            let line = format!("{remote}: key of {m}, hello from {}", hello.machine);
            match m.parse::<MachineId>() {
                Ok(id) => self.note_refusal(&id, line),
                Err(_) => self.log_event(format!("refused {line}")),
            }
            return;
        }
        if send_frame(&mut link, &hello_env(self.id(), None)).await.is_ok() {
            self.run_peer(link, hello.machine, false, remote, secured.status).await;
        }
    }

    /// Dials `ds` once: connects, says hello and runs the link in a task.
    /// Returns the neighbour's id and the task, which ends with the link.
    pub async fn connect(&self, ds: &DialString) -> io::Result<(MachineId, tokio::task::JoinHandle<()>)> {
        let link = dial::dial(ds, &link_options()).await?;
        let (mut link, secured) = if ds.is_network() {
            self.secure(link, dial::Role::Initiator).await?
        } else {
            (link, Secured { machine: None, status: "local".into() })
        };
        send_frame(&mut link, &hello_env(self.id(), None)).await?;
        let hello = read_hello(&mut link)
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "closed before hello"))?;
        if hello.machine == *self.id() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{ds} is this machine")));
        }
        if let Some(m) = secured.machine.as_ref().filter(|m| **m != hello.machine.as_str()) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{ds} has the key of {m} but says it is {}", hello.machine),
            ));
        }
        let peer = hello.machine.clone();
        let task = self.spawn(self.clone().run_peer(link, hello.machine, true, ds.to_string(), secured.status));
        Ok((peer, task))
    }

    /// Keeps a link to `ds` up: dials, and redials with backoff when it
    /// drops, until shutdown.
    pub fn dial(&self, ds: DialString) {
        self.redial(ds, None, None);
    }

    /// Like [`Router::dial`], for a neighbour known to be machine `m`:
    /// until the link is up, `term/net-M` shows it dialing, down or
    /// refused, with the refusals in its status.
    pub fn dial_machine(&self, ds: DialString, m: MachineId) {
        let name = format!("net-{m}");
        let t = Term::placeholder(name.clone(), TermKind::Net(m.clone()), ds.to_string());
        lock(&self.0.pending).entry(name).or_insert(t);
        self.redial(ds, None, Some(m));
    }

    /// Dials `ds` now, failing if it cannot be reached; then keeps the
    /// link up as [`Router::dial`] does.
    pub async fn dial_now(&self, ds: DialString) -> io::Result<MachineId> {
        self.dial_expecting(ds, None).await
    }

    /// Like [`Router::dial_now`], but the machine must be `expect`; a
    /// link to any other is closed again.
    pub async fn dial_expecting(&self, ds: DialString, expect: Option<&MachineId>) -> io::Result<MachineId> {
        let (peer, task) = self.connect(&ds).await?;
        if let Some(want) = expect.filter(|w| **w != peer) {
            if let Some(t) = self.term(&format!("net-{peer}")) {
                t.hangup();
            }
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{ds} is machine {peer}, not {want}")));
        }
        self.redial(ds, Some(task), None);
        Ok(peer)
    }

    fn redial(&self, ds: DialString, first: Option<tokio::task::JoinHandle<()>>, expect: Option<MachineId>) {
        let r = self.clone();
        // The terminal shown while the link is down, for an expected peer.
        let placeholder = expect.as_ref().and_then(|m| lock(&self.0.pending).get(&format!("net-{m}")).cloned());
        self.spawn(async move {
            let mut backoff = BACKOFF_MIN;
            if let Some(task) = first {
                tokio::select! {
                    _ = r.0.shutdown.cancelled() => return,
                    _ = task => {}
                }
            }
            loop {
                match r.connect(&ds).await {
                    Ok((peer, task)) => {
                        info!(%peer, addr = %ds, "dialed");
                        backoff = BACKOFF_MIN;
                        tokio::select! {
                            _ = r.0.shutdown.cancelled() => return,
                            _ = task => {}
                        }
                        if let Some(t) = &placeholder {
                            t.set_state("down");
                        }
                    }
                    Err(e) => {
                        debug!(addr = %ds, "dial: {e}");
                        let refused = is_refusal(&e);
                        if let Some(t) = &placeholder {
                            t.set_state(if refused { "refused" } else { "down" });
                        }
                        match (&expect, refused) {
                            (Some(m), true) => {
                                warn!(addr = %ds, "refused: {e}");
                                r.note_refusal(m, e.to_string());
                            }
                            _ => r.log_event(format!("dial {ds}: {e}")),
                        }
                    }
                }
                tokio::select! {
                    _ = r.0.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        });
    }

    /// Registers a terminal, keeping one link per neighbour: of two links
    /// between the same pair, the one dialed by the smaller id stays.
    fn register(&self, term: &Arc<Term>, peer: &MachineId) -> bool {
        let mut terms = self.0.terms.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = terms.get(&term.name) {
            let old_dialer_me = old.dialed;
            let keep_new = {
                let new_dialer = if term.dialed { self.id() } else { peer };
                let old_dialer = if old_dialer_me { self.id() } else { peer };
                new_dialer < old_dialer || old.is_hungup()
            };
            if !keep_new {
                return false;
            }
            old.hangup();
        }
        terms.insert(term.name.clone(), term.clone());
        true
    }

    async fn run_peer(self, link: Link, peer: MachineId, dialed: bool, addr: String, security: String) {
        let Link { tx, rx: mut frames, .. } = link;
        let (term, writer) = Term::linked(format!("net-{peer}"), TermKind::Net(peer.clone()), addr, dialed, tx);
        *lock(&term.security) = security;
        // What kept the link down stays readable once it is up.
        if let Some(p) = lock(&self.0.pending).get(&term.name) {
            for (line, n) in p.refusals() {
                term.refused_times(line, n);
            }
        }
        if !self.register(&term, &peer) {
            debug!(%peer, "duplicate link closed");
            return;
        }
        info!(%peer, term = %term.name, "link up");
        self.log_event(format!("link up {} {}", term.name, term.addr));
        lock(&self.0.gossip).insert(peer.clone(), Default::default());
        lock(&self.0.resync).insert(peer.clone());
        let change = self.0.table.write().unwrap_or_else(|e| e.into_inner()).peer_up(&peer);
        self.after_change(change);
        self.0.changed.notify_one();
        let writer = self.spawn(writer);
        loop {
            let frame = tokio::select! {
                _ = self.0.shutdown.cancelled() => break,
                _ = term.hungup() => break,
                f = frames.next() => f,
            };
            let frame = match frame {
                Some(Ok(f)) => f,
                Some(Err(e)) => {
                    warn_link(&term, "read", e);
                    break;
                }
                None => break,
            };
            term.last_rx.store(now_us(), Relaxed);
            let len = frame.len();
            let env = match Envelope::decode(frame) {
                Ok(env) => env,
                Err(e) => {
                    warn_link(&term, "bad frame, closing link", e);
                    break;
                }
            };
            term.note("in", &env);
            if matches!(env.kind, Kind::Routes(_)) {
                term.count_routes(true, len);
            }
            if let Err(e) = self.from_peer(&term, &peer, env).await {
                warn_link(&term, "protocol error, closing link", e);
                break;
            }
        }
        term.hangup();
        writer.abort();
        self.unregister(&term, &peer);
        self.link_lost(&term);
    }

    fn unregister(&self, term: &Arc<Term>, peer: &MachineId) {
        let mine = {
            let mut terms = self.0.terms.write().unwrap_or_else(|e| e.into_inner());
            let mine = terms.get(&term.name).is_some_and(|t| Arc::ptr_eq(t, term));
            if mine {
                terms.remove(&term.name);
            }
            mine
        };
        if !mine {
            return;
        }
        info!(%peer, term = %term.name, "link down");
        self.log_event(format!("link down {}", term.name));
        lock(&self.0.gossip).remove(peer);
        let change = self.0.table.write().unwrap_or_else(|e| e.into_inner()).peer_down(peer);
        self.after_change(change);
    }

    /// Handles one envelope from a neighbour.
    async fn from_peer(&self, term: &Arc<Term>, peer: &MachineId, env: Envelope) -> Result<(), String> {
        match env.kind {
            Kind::Routes(a) => {
                if !self.0.cfg.gossip {
                    return Ok(());
                }
                let accepted = lock(&self.0.gossip).get(peer).is_some_and(|g| g.accepts(&a));
                if !accepted {
                    debug!(%peer, seq = a.seq, "gap in announcements, asking for the full table");
                    let _ = term.send(self.control(peer, Kind::Resync)).await;
                    return Ok(());
                }
                let lost = if self.0.cfg.root_cause { &a.lost[..] } else { &[] };
                let until = tokio::time::Instant::now() + self.0.cfg.lost_link_hold();
                let res = self.0.table.write().unwrap_or_else(|e| e.into_inner()).apply_lost(
                    peer,
                    a.full,
                    lost,
                    until,
                    adverts(&a),
                );
                match res {
                    Ok(change) => {
                        if let Some(g) = lock(&self.0.gossip).get_mut(peer) {
                            g.seq_in = a.seq;
                        }
                        self.after_change(change);
                        Ok(())
                    }
                    Err(n) => Err(format!("{n} routes, over the cap of {}", crate::route::MAX_ROUTES_PER_PEER)),
                }
            }
            Kind::Resync => {
                lock(&self.0.resync).insert(peer.clone());
                self.0.changed.notify_one();
                Ok(())
            }
            Kind::Ping { stamp, seq } => {
                let _ = term.send(self.control(peer, Kind::Pong { stamp })).await;
                let behind = self.0.cfg.gossip && lock(&self.0.gossip).get(peer).is_some_and(|g| seq > g.seq_in);
                if behind {
                    let _ = term.send(self.control(peer, Kind::Resync)).await;
                }
                Ok(())
            }
            Kind::Pong { stamp } => {
                term.stats.rtt_us.store(now_us().saturating_sub(stamp), Relaxed);
                Ok(())
            }
            Kind::Hello(_) | Kind::Offer(_) | Kind::Withdraw(_) | Kind::Query(_) => {
                Err(format!("unexpected {} from a neighbour", crate::term::kind_name(&env.kind)))
            }
            Kind::Data | Kind::Eof | Kind::Hangup | Kind::Cancel | Kind::Error(_) | Kind::Credit(_) => {
                // What a neighbour may speak for: the envelope started on
                // its source's machine and reached us from this neighbour,
                // so its path must say so; anything else is a lie about the
                // path and closes the link.
                let src = env.src.machine.as_ref();
                if env.via.first() != src || env.via.last() != Some(peer) {
                    return Err(format!(
                        "envelope from {} with path {} does not start at its source or end at {peer}",
                        env.src,
                        crate::path::bang_path(&env.via)
                    ));
                }
                // And the source must be the neighbour, or a machine it
                // says it reaches (with gossip on: without it, neighbours
                // advertise nothing to check against).
                let src = src.expect("checked above").clone();
                if self.0.cfg.gossip && !self.table().peer_reaches(peer, &src) {
                    term.stats.errors.fetch_add(1, Relaxed);
                    warn!(%peer, source = %env.src, "refused: neighbour does not route to the source");
                    self.bounce(env, error::detail(error::EPERM, format!("{peer} does not route to {src}")));
                    return Ok(());
                }
                self.forward(env).await;
                Ok(())
            }
        }
    }

    /// Serves one local client process until it goes.
    async fn run_client(self, link: Link, k: u32) {
        let name = format!("client-{k}");
        let Link { tx, rx: mut frames, remote, .. } = link;
        let (term, writer) = Term::linked(name, TermKind::Client(k), remote, false, tx);
        self.0.clients.write().unwrap_or_else(|e| e.into_inner()).insert(k, term.clone());
        debug!(client = k, "local client up");
        let writer = self.spawn(writer);
        loop {
            let frame = tokio::select! {
                _ = self.0.shutdown.cancelled() => break,
                f = frames.next() => f,
            };
            let env = match frame
                .map(|f| f.map_err(|e| e.to_string()).and_then(|f| Envelope::decode(f).map_err(|e| e.to_string())))
            {
                Some(Ok(env)) => env,
                Some(Err(e)) => {
                    warn_link(&term, "local client, closing", e);
                    break;
                }
                None => break,
            };
            self.from_client(&term, k, env).await;
        }
        writer.abort();
        self.client_gone(k).await;
    }

    async fn from_client(&self, term: &Arc<Term>, k: u32, env: Envelope) {
        let owned = env.src.machine.as_ref() == Some(self.id()) && env.src.conv.is_some_and(|n| n >> 32 == k as u64);
        match &env.kind {
            Kind::Offer(name) => {
                let taken = self.0.convs.has_service(name.as_str()) || name.as_str() == crate::conv::RESERVED;
                if taken {
                    warn!(client = k, service = %name, "offer refused: served here already");
                    return;
                }
                self.0.client_services.write().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), k);
                info!(client = k, service = %name, "service offered by local client");
                self.local_changed();
            }
            Kind::Withdraw(name) => {
                let mut cs = self.0.client_services.write().unwrap_or_else(|e| e.into_inner());
                if cs.get(name) == Some(&k) {
                    cs.remove(name);
                }
                drop(cs);
                self.local_changed();
            }
            Kind::Query(q) => {
                let (kind, data) = match crate::query::answer(self, q) {
                    Ok(text) => (Kind::Data, Bytes::from(text)),
                    Err(e) => (Kind::Error(e), Bytes::new()),
                };
                let mut reply = Envelope::new(self.next_id(), env.dst.clone(), env.src.clone(), kind.clone(), data);
                reply.via.push(self.id().clone());
                let _ = term.send(reply.clone()).await;
                if kind == Kind::Data {
                    reply.kind = Kind::Eof;
                    reply.data = Bytes::new();
                    let _ = term.send(reply).await;
                }
            }
            _ if !owned => {
                let src = env.src.clone();
                self.bounce(env, error::detail(error::EPERM, format!("client may not send as {src}")));
            }
            Kind::Hangup => {
                if let Some(m) = lock(&self.0.client_convs).get_mut(&k) {
                    m.remove(&env.src);
                }
                self.forward(env).await;
            }
            _ => {
                {
                    let mut cc = lock(&self.0.client_convs);
                    let m = cc.entry(k).or_default();
                    if !m.contains_key(&env.src) {
                        m.insert(env.src.clone(), env.dst.clone());
                    }
                }
                self.forward(env).await;
            }
        }
    }

    /// A local client went: withdraw its services and hang up for it.
    async fn client_gone(&self, k: u32) {
        debug!(client = k, "local client gone");
        self.0.clients.write().unwrap_or_else(|e| e.into_inner()).remove(&k);
        let had = {
            let mut cs = self.0.client_services.write().unwrap_or_else(|e| e.into_inner());
            let before = cs.len();
            cs.retain(|_, c| *c != k);
            before != cs.len()
        };
        if had {
            self.local_changed();
        }
        let convs: HashMap<Addr, Addr> = lock(&self.0.client_convs).remove(&k).unwrap_or_default();
        for (src, dst) in convs {
            let env = Envelope::new(self.next_id(), src, dst, Kind::Hangup, Bytes::new());
            self.forward(env).await;
        }
    }
}

/// Pings every neighbour and hangs up on those silent for two periods
/// (four missed pings). A ping that finds the link's queue full is not
/// sent: the link is busy, and whatever it delivers counts as alive.
pub(crate) fn ping_all(r: &Router) {
    let period = r.config().period;
    let limit = 2 * period.as_micros() as u64;
    for term in r.terms() {
        let TermKind::Net(peer) = &term.kind else { continue };
        let silent = now_us().saturating_sub(term.last_rx.load(Relaxed));
        if silent > limit {
            warn!(term = %term.name, silent_ms = silent / 1000, "neighbour silent, closing link");
            r.log_event(format!("{} silent for {} ms", term.name, silent / 1000));
            term.hangup();
            continue;
        }
        let seq = lock(&r.0.gossip).get(peer).map(|g| g.seq_out).unwrap_or(0);
        let env = r.control(peer, Kind::Ping { stamp: now_us(), seq });
        term.try_send(env);
    }
}

/// Whether a failed dial was a refusal (a key not accepted, either way)
/// rather than an unreachable or silent address.
fn is_refusal(e: &io::Error) -> bool {
    use dial::SecureError as S;
    match e.get_ref().and_then(|i| i.downcast_ref::<S>()) {
        Some(S::UnknownKey { .. } | S::Refused { .. } | S::BadMessage { .. }) => true,
        Some(_) => false,
        None => e.kind() == io::ErrorKind::PermissionDenied,
    }
}

fn nix_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}
