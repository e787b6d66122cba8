//! Links: handshakes, the reader of each link to a neighbour, dialing
//! with backoff.
//!
//! The dialer speaks first: `Hello` with its machine id (or, from a local
//! client, a request for a block of conversation numbers); the acceptor
//! answers with its own. A bad frame, a wrong first frame or a silent peer
//! closes that link alone; the router keeps serving everyone else.
//! Network listeners of a secured router come from `dial::listen_secure`:
//! until a peer proves a pinned key it gets a handshake's worth of frames
//! and bytes and a slot that newer connections can take, so nothing
//! unauthenticated holds memory or slots a pinned peer needs.
//!
//! A neighbour's envelopes are forwarded, or handed to the routing
//! protocol ([`crate::router::Routing`]) when they are addressed to the
//! router; a local client's link is served by `local`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dial::{DialString, Link};
use futures::{SinkExt, StreamExt};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use crate::envelope::link_options;
pub use crate::router::Security;
pub use crate::term::now_us;

use crate::conv::lock;
use crate::envelope::{Envelope, Hello, Kind, SessionMsg, VERSION};
use crate::inbound::Ended;
use crate::path::{Addr, MachineId, TermName};
use crate::router::Router;
use crate::session::{self, Connection, Session};
use crate::term::{Term, TermKind};

/// How a network link was secured: the peer machine its key belongs to,
/// and the status line; or no check at all.
pub(crate) struct Secured {
    pub(crate) machine: Option<String>,
    pub(crate) status: String,
}

/// A session made by a link's hello, and where its task receives the
/// connections it resumes on.
pub(crate) type NewSession = (Arc<Session>, tokio::sync::mpsc::Receiver<Connection>);

/// How long the other side has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub(crate) fn hello_env(from: &MachineId, client: Option<u32>, session: Option<SessionMsg>) -> Envelope {
    let router = crate::conv::reserved();
    let a = Addr::on(from.clone(), router);
    let hello = Hello { session, ..Hello::new(from.clone(), client) };
    Envelope::new(0, a.clone(), a, Kind::Hello(hello), Bytes::new())
}

/// A fresh link's session part, when this side resumes links like it.
fn new_session(nonce: &[u8; session::NONCE], run: u64) -> SessionMsg {
    SessionMsg::New { nonce: serde_bytes::ByteBuf::from(nonce.to_vec()), run }
}

/// Reads the other side's hello; `None` if it closed without a word.
pub(crate) async fn read_hello(link: &mut Link) -> io::Result<Option<Hello>> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let frame = tokio::time::timeout(HELLO_TIMEOUT, link.rx.next())
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no hello"))?;
    let Some(frame) = frame else { return Ok(None) };
    let env = Envelope::decode_frame(frame?).map_err(|e| bad(e.to_string()))?;
    match env.kind {
        Kind::Hello(h) if h.version == VERSION => Ok(Some(h)),
        Kind::Hello(h) => Err(bad(format!("protocol version {} (want {VERSION})", h.version))),
        _ => Err(bad("first frame is not hello".into())),
    }
}

pub(crate) async fn send_frame(link: &mut Link, env: &Envelope) -> io::Result<()> {
    link.tx.send(env.encode().into()).await
}

impl Router {
    /// Listens on `ds` for neighbours and, on `unix!` and `mem!`, for local
    /// clients. Returns the address actually bound.
    pub async fn listen(&self, ds: &DialString) -> io::Result<DialString> {
        let clients_ok = matches!(ds, DialString::Unix(_) | DialString::Mem(_));
        let network = ds.is_network();
        // Links to be secured are held to dial's pre-authentication
        // limits until `secure` lifts them, so that nothing
        // unauthenticated holds memory or slots a pinned peer needs.
        let mut listener = if network && self.config().security.is_some() {
            dial::listen_secure(ds, &link_options()).await?
        } else {
            dial::listen(ds, &link_options()).await?
        };
        let bound = listener.local_addr();
        info!(addr = %bound, "listening");
        let r = self.clone();
        let addr = bound.clone();
        self.spawn(async move {
            loop {
                tokio::select! {
                    _ = r.shutdown_token().cancelled() => return,
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
    pub(crate) async fn secure(&self, link: Link, role: dial::Role) -> io::Result<(Link, Secured)> {
        match &self.config().security {
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
            let k = self.clients().next_block();
            if send_frame(&mut link, &hello_env(self.id(), Some(k), None)).await.is_ok() {
                crate::local::serve(self, link, k).await;
            }
            return;
        }
        // A router on the local socket has no key to prove who it is: it
        // is taken only from this user (or root), whose processes could run
        // this router's machines anyway. Another user given access to the
        // socket may be a client, never a machine of the mesh.
        if let Some(uid) = link.uid.filter(|&u| !network && u != 0 && u != nix_uid()) {
            warn!(%remote, uid, machine = %hello.machine, "refused: a router from another user on the local socket");
            self.log_event(format!(
                "refused {remote}: machine {} from uid {uid}, not this router's user",
                hello.machine
            ));
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
        let peer = hello.machine.clone();
        let (answer, session) = match hello.session {
            Some(SessionMsg::Resume { .. }) => {
                self.resume_accept(link, hello, remote, self.resumable(&secured, network), network).await;
                return;
            }
            Some(SessionMsg::New { nonce: theirs, run }) if self.resumable(&secured, network) => {
                let ours = session::nonce();
                let grace = self.config().resume;
                let (s, rx) = Session::new(self.id().clone(), peer.clone(), run, &theirs, &ours, grace);
                (Some(new_session(&ours, self.run())), Some((Arc::new(s.over(network)), rx)))
            }
            Some(SessionMsg::New { .. }) | None => (None, None),
            Some(other) => {
                warn!(%remote, "refused: {other:?} in a first hello");
                self.log_event(format!("refused {remote}: a resume step without a resume"));
                return;
            }
        };
        // A neighbour with a session here that links afresh from another
        // run has restarted, and one that dials afresh while its session
        // waits here has given it up: the old session cannot come back.
        if let Some(old) = self.term_table().get(&TermName::Net(peer.clone())) {
            let run = session.as_ref().map(|(s, _)| s.peer_run);
            let over = old
                .session
                .as_ref()
                .is_some_and(|s| Some(s.peer_run) != run || (s.resuming().is_some() && !old.dialed));
            if over {
                info!(%peer, "neighbour linked afresh: its old session ends");
                self.log_event(format!("{} linked afresh: old session ended", old.name));
                old.hangup();
            }
        }
        if send_frame(&mut link, &hello_env(self.id(), None, answer)).await.is_ok() {
            self.run_peer(link, peer, false, remote, secured.status, session).await;
        }
    }

    /// Whether a link secured as `secured` may resume: the machine's
    /// `resume` is not zero, and the link is encrypted or local (on a
    /// plaintext network link anyone on the wire could take the session).
    pub(crate) fn resumable(&self, secured: &Secured, network: bool) -> bool {
        !self.config().resume.is_zero() && (!network || secured.machine.is_some())
    }

    /// Dials `ds` once: connects, says hello and runs the link in a task.
    /// Returns the neighbour's id and the task, which ends with the link.
    pub async fn connect(&self, ds: &DialString) -> io::Result<(MachineId, tokio::task::JoinHandle<()>)> {
        self.connect_session(ds).await.map(|(m, t, _)| (m, t))
    }

    /// [`Router::connect`], with the link's session if it has one.
    async fn connect_session(
        &self,
        ds: &DialString,
    ) -> io::Result<(MachineId, tokio::task::JoinHandle<()>, Option<Arc<Session>>)> {
        let link = dial::dial(ds, &link_options()).await?;
        let (mut link, secured) = if ds.is_network() {
            self.secure(link, dial::Role::Initiator).await?
        } else {
            (link, Secured { machine: None, status: "local".into() })
        };
        let ours = self.resumable(&secured, ds.is_network()).then(session::nonce);
        send_frame(&mut link, &hello_env(self.id(), None, ours.as_ref().map(|n| new_session(n, self.run())))).await?;
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
        let session = match (ours, hello.session) {
            (Some(ours), Some(SessionMsg::New { nonce: theirs, run })) => {
                let grace = self.config().resume;
                let (s, rx) = Session::new(self.id().clone(), peer.clone(), run, &ours, &theirs, grace);
                Some((Arc::new(s.over(ds.is_network())), rx))
            }
            _ => None,
        };
        let kept = session.as_ref().map(|(s, _)| s.clone());
        let task =
            self.spawn(self.clone().run_peer(link, hello.machine, true, ds.to_string(), secured.status, session));
        Ok((peer, task, kept))
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
        self.term_table().add_placeholder(&m, ds.to_string());
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
        let (peer, task, session) = self.connect_session(&ds).await?;
        if let Some(want) = expect.filter(|w| **w != peer) {
            if let Some(t) = self.term(&TermName::Net(peer.clone())) {
                t.hangup();
            }
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{ds} is machine {peer}, not {want}")));
        }
        self.redial(ds, Some((task, session)), None);
        Ok(peer)
    }

    fn redial(&self, ds: DialString, first: Option<(JoinHandle<()>, Option<Arc<Session>>)>, expect: Option<MachineId>) {
        let r = self.clone();
        // The terminal shown while the link is down, for an expected peer.
        let placeholder = expect.as_ref().and_then(|m| self.term_table().placeholder(&TermName::Net(m.clone())));
        self.spawn(async move {
            let mut backoff = BACKOFF_MIN;
            if let Some((task, session)) = first {
                if !r.keep_link(&ds, task, session).await {
                    return;
                }
            }
            loop {
                match r.connect_session(&ds).await {
                    Ok((peer, task, session)) => {
                        info!(%peer, addr = %ds, "dialed");
                        backoff = BACKOFF_MIN;
                        if !r.keep_link(&ds, task, session).await {
                            return;
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
                    _ = r.shutdown_token().cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        });
    }

    /// Waits for a dialed link's task to end, resuming its session on new
    /// connections meanwhile. False on shutdown.
    async fn keep_link(&self, ds: &DialString, mut task: JoinHandle<()>, session: Option<Arc<Session>>) -> bool {
        match session {
            Some(s) => self.keep_session(ds, &mut task, &s).await,
            None => tokio::select! {
                _ = self.shutdown_token().cancelled() => false,
                _ = task => true,
            },
        }
    }

    async fn run_peer(
        self,
        link: Link,
        peer: MachineId,
        dialed: bool,
        addr: String,
        security: String,
        session: Option<NewSession>,
    ) {
        let Link { tx, rx: mut frames, .. } = link;
        let (session, mut handover) = session.map(|(s, h)| (Some(s), Some(h))).unwrap_or_default();
        let name = TermName::Net(peer.clone());
        let (term, writer) = Term::linked(TermKind::Net(peer.clone()), addr, dialed, tx, session.clone());
        *lock(&term.security) = security;
        // What kept the link down stays readable once it is up.
        if let Some(p) = self.term_table().placeholder(&name) {
            for (line, n) in p.refusals() {
                term.refused_times(line, n);
            }
        }
        if !self.term_table().link(&term, self.id(), &peer) {
            debug!(%peer, "duplicate link closed");
            return;
        }
        info!(%peer, term = %term.name, "link up");
        self.log_event(format!("link up {} {}", term.name, term.addr));
        self.routing().link_up(&peer);
        self.update_table(|t| t.peer_up(&peer));
        self.routing().table_changed();
        let writer = self.spawn(writer);
        let mut conn = term.connection();
        loop {
            let ended = self.read_link(&term, &peer, &mut frames, &conn).await;
            let (Ended::Lost, Some(s), Some(h)) = (ended, &session, &mut handover) else {
                if ended == Ended::Over && session.is_some() {
                    // Said to a peer that would otherwise wait out its
                    // grace period for a link that is not coming back.
                    let bye = hello_env(self.id(), None, Some(SessionMsg::Refused("hung up".into())));
                    if let Some(o) = term.outlet() {
                        o.farewell(bye.encode_frame());
                    }
                }
                break;
            };
            // Both halves of the old connection go, so that its peer
            // hears of the end as soon as the transport can tell it.
            drop(std::mem::replace(&mut frames, Box::pin(futures::stream::empty())));
            match self.wait_resume(&term, s, h).await {
                Some(rx) => {
                    frames = rx;
                    conn = term.connection();
                }
                None => break,
            }
        }
        term.hangup();
        let far = self.link_lost_here(&term);
        self.unregister(&term, &peer);
        self.tell_link_lost(&term, far);
        // A session's writer says its last words (bounded, see `outlet`);
        // any other writer has nothing left to say.
        let mut writer = writer;
        if session.is_some() {
            self.spawn(async move {
                if tokio::time::timeout(Duration::from_secs(2), &mut writer).await.is_err() {
                    writer.abort();
                }
            });
        } else {
            writer.abort();
        }
    }

    fn unregister(&self, term: &Arc<Term>, peer: &MachineId) {
        if !self.term_table().unlink(term, peer) {
            return;
        }
        info!(%peer, term = %term.name, "link down");
        self.log_event(format!("link down {}", term.name));
        self.routing().link_down(peer);
        self.update_table(|t| t.peer_down(peer));
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
