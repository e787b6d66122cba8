//! Terminals: the router's connection points.
//!
//! `local` holds the services of this machine, in-process or in local
//! client processes; `loopback` counts messages the router sends to itself;
//! `net-M` is the link to neighbour M. Every terminal keeps counters and a
//! live trace that costs nothing while nobody reads it. [`Terms`] is the
//! router's table of them.

use std::collections::VecDeque;
use std::fmt::Write;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::conv::lock;
use crate::crossed::Crossed;
use crate::envelope::{Envelope, Kind};
use crate::outlet::{self, write_link, Inline, Outlet};
use crate::path::Addr;
use crate::path::{MachineId, TermName};
use crate::session::Session;

mod table;
#[cfg(test)]
mod tests;

pub use table::Terms;

/// Microseconds on the runtime's clock (paused in tests): when frames
/// arrive, and ping stamps.
pub fn now_us() -> u64 {
    static START: OnceLock<tokio::time::Instant> = OnceLock::new();
    START.get_or_init(tokio::time::Instant::now).elapsed().as_micros() as u64
}

/// Refusals a terminal remembers.
const MAX_REFUSALS: usize = 8;
/// Trace lines buffered per reader; a reader that falls further behind
/// is told how many it missed.
const TRACE_QUEUE: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TermKind {
    Local,
    Loopback,
    /// A link to a neighbouring router.
    Net(MachineId),
    /// A local client process on the Unix socket, by its number block.
    Client(u32),
}

impl std::fmt::Display for TermKind {
    /// The terminal's name: its [`TermName`] in `term/`, or `client-K` for
    /// a local client (not in `term/`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TermKind::Local => TermName::Local.fmt(f),
            TermKind::Loopback => TermName::Loopback.fmt(f),
            TermKind::Net(m) => write!(f, "{}", TermName::Net(m.clone())),
            TermKind::Client(k) => write!(f, "client-{k}"),
        }
    }
}

/// Counters of one terminal.
#[derive(Default, Debug)]
pub struct TermStats {
    pub envs_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub envs_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub errors: AtomicU64,
    /// Route announcements and their encoded bytes, each way: what gossip
    /// costs this link.
    pub routes_in: AtomicU64,
    pub routes_in_bytes: AtomicU64,
    pub routes_out: AtomicU64,
    pub routes_out_bytes: AtomicU64,
    /// Last measured round trip, in microseconds (0: none yet).
    pub rtt_us: AtomicU64,
    /// The least round trip measured (0: none yet): the path's own,
    /// without queues or a busy router's lateness. Keepalive gives a long
    /// path more time (see `peers`).
    pub min_rtt_us: AtomicU64,
}

/// One terminal.
pub struct Term {
    /// The kind's name (see [`TermKind`]'s `Display`), for logs and files.
    pub name: String,
    pub kind: TermKind,
    /// How the link was made: the dial string dialed, or the address it
    /// was accepted from.
    pub addr: String,
    /// Whether this side dialed.
    pub dialed: bool,
    /// How the link is protected: `noise KEYFINGERPRINT`, `insecure`, or
    /// `local` for in-host transports.
    pub security: Mutex<String>,
    pub stats: TermStats,
    /// Links only: where envelopes go out.
    outlet: Option<Arc<Outlet>>,
    trace: broadcast::Sender<Arc<str>>,
    state: Mutex<String>,
    hangup: CancellationToken,
    /// The current connection: a child of `hangup`, replaced when a
    /// session resumes on a new one.
    conn: Mutex<CancellationToken>,
    /// Links that resume: their session.
    pub session: Option<Arc<Session>>,
    /// When a frame last arrived, in [`now_us`] microseconds.
    pub last_rx: AtomicU64,
    /// Links only: the conversations that crossed it, to fail if it dies.
    pub crossed: Option<Crossed>,
    /// The latest links refused to or by this neighbour, newest last.
    refusals: Mutex<VecDeque<(String, u64)>>,
}

impl Term {
    /// A terminal with no link (local, loopback).
    pub fn internal(kind: TermKind) -> Arc<Term> {
        Arc::new(Term::make(kind, String::new(), false, None))
    }

    /// The terminal of a neighbour dialed but not linked (yet): no link,
    /// state `dialing`, and the refusals that kept it down.
    pub fn placeholder(kind: TermKind, addr: String) -> Arc<Term> {
        let t = Term::make(kind, addr, true, None);
        t.set_state("dialing");
        *lock(&t.security) = "none (not linked)".into();
        Arc::new(t)
    }

    /// Records a refused link: shown in `status`, the last few kept; the
    /// same refusal again (a redial) is counted, not repeated.
    pub fn refused(&self, line: String) {
        self.refused_times(line, 1)
    }

    /// Records `n` refusals of the same kind.
    pub fn refused_times(&self, line: String, n: u64) {
        let mut r = lock(&self.refusals);
        if let Some(last) = r.back_mut().filter(|l| l.0 == line) {
            last.1 += n;
            return;
        }
        if r.len() == MAX_REFUSALS {
            r.pop_front();
        }
        r.push_back((line, n));
    }

    /// The refusals recorded so far, oldest first, with their counts.
    pub fn refusals(&self) -> Vec<(String, u64)> {
        lock(&self.refusals).iter().cloned().collect()
    }

    /// A terminal on a link that sends into `sink`, resuming `session` if
    /// it has one; returns the writer task to run, which ends when the
    /// link is hung up, or fails without a session to wait in.
    pub fn linked(
        kind: TermKind,
        addr: String,
        dialed: bool,
        sink: dial::FrameSink,
        session: Option<Arc<Session>>,
    ) -> (Arc<Term>, impl Future<Output = ()> + Send + 'static) {
        let (outlet, rx) = Outlet::new(sink, session.is_some());
        let mut term = Term::make(kind, addr, dialed, Some(outlet.clone()));
        term.session = session;
        let term = Arc::new(term);
        (term.clone(), write_link(term, outlet, rx))
    }

    fn make(kind: TermKind, addr: String, dialed: bool, outlet: Option<Arc<Outlet>>) -> Term {
        let hangup = CancellationToken::new();
        Term {
            conn: Mutex::new(hangup.child_token()),
            session: None,
            crossed: matches!(kind, TermKind::Net(_)).then(Crossed::default),
            name: kind.to_string(),
            kind,
            addr,
            dialed,
            security: Mutex::new("local".into()),
            stats: TermStats::default(),
            outlet,
            trace: broadcast::channel(TRACE_QUEUE).0,
            state: Mutex::new("up".into()),
            hangup,
            last_rx: AtomicU64::new(now_us()),
            refusals: Default::default(),
        }
    }

    /// Sends an envelope on the link: written at once when the link is
    /// idle and the envelope small, else queued, waiting while the queue
    /// is full (see [`crate::outlet`]). Gives the envelope back if the
    /// link is gone.
    pub async fn send(&self, env: Envelope) -> Result<(), Envelope> {
        let Some(out) = &self.outlet else { return Err(env) };
        // Gone since its route was chosen (see `Router::lost_at`).
        if self.is_hungup() || !self.note("out", &env) {
            return Err(env);
        }
        let last = self.last_words(&env);
        let res = match out.try_inline(self, env) {
            Inline::Sent => Ok(()),
            Inline::Failed(e, env) => {
                // As when the writer task fails: the connection goes; a
                // session keeps the envelope for the next one (in its
                // replay buffer, or queued), else what crossed the link
                // fails with `link lost`.
                self.warn("write", e);
                self.end_connection();
                match env {
                    _ if self.session.is_none() => return Ok(()),
                    Some(env) => out.queue(env).await,
                    None => Ok(()),
                }
            }
            Inline::Busy(env) => out.queue(env).await,
        };
        if let (Ok(()), Some((c, src, dst))) = (&res, last) {
            c.ended(&src, &dst);
        }
        res
    }

    /// Queues an envelope if there is room now; says whether it did.
    pub fn try_send(&self, env: Envelope) -> bool {
        let Some(out) = &self.outlet else { return false };
        if !self.note("out", &env) {
            return false;
        }
        let last = self.last_words(&env);
        let queued = out.try_queue(env).is_ok();
        if let (true, Some((c, src, dst))) = (queued, last) {
            c.ended(&src, &dst);
        }
        queued
    }

    /// A conversation end's last envelope out (hangup, error): its record
    /// ends only once the envelope is queued (see `Crossed::ended`).
    fn last_words(&self, env: &Envelope) -> Option<(&Crossed, Addr, Addr)> {
        let c = self.crossed.as_ref()?;
        matches!(env.kind, Kind::Hangup | Kind::Error(_)).then(|| (c, env.src.clone(), env.dst.clone()))
    }

    /// Counts and logs a failure of the link.
    pub fn warn(&self, what: &str, err: impl std::fmt::Display) {
        self.stats.errors.fetch_add(1, Relaxed);
        // A local client that exits mid-write is ordinary, not a fault.
        if matches!(self.kind, TermKind::Client(_)) {
            debug!(term = %self.name, "{what}: {err}");
        } else {
            warn!(term = %self.name, addr = %self.addr, "{what}: {err}");
        }
    }

    /// Counts and traces an envelope crossing this terminal. False when
    /// it is a link that is gone, which nothing may cross any more.
    pub fn note(&self, dir: &str, env: &Envelope) -> bool {
        if let Some(c) = &self.crossed {
            if !c.note(env, dir == "out") {
                return false;
            }
        }
        let (n, b) = if dir == "in" {
            (&self.stats.envs_in, &self.stats.bytes_in)
        } else {
            (&self.stats.envs_out, &self.stats.bytes_out)
        };
        // A sealed payload counts as what it carries, without its tag.
        let len = env.data.len() - if env.seal.is_some() { dial::pair::SEAL_TAG.min(env.data.len()) } else { 0 };
        n.fetch_add(1, Relaxed);
        b.fetch_add(len as u64, Relaxed);
        if self.trace.receiver_count() > 0 {
            let line = format!("{dir} {} {} {} {len}\n", kind_name(&env.kind), env.src, env.dst);
            let _ = self.trace.send(line.into());
        }
        true
    }

    /// Counts a route announcement of `len` encoded bytes, `in` or not.
    pub fn count_routes(&self, incoming: bool, len: usize) {
        let (n, b) = if incoming {
            (&self.stats.routes_in, &self.stats.routes_in_bytes)
        } else {
            (&self.stats.routes_out, &self.stats.routes_out_bytes)
        };
        n.fetch_add(1, Relaxed);
        b.fetch_add(len as u64, Relaxed);
    }

    /// A live trace: one line per envelope crossing from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.trace.subscribe()
    }

    pub fn state(&self) -> String {
        match self.session.as_ref().and_then(|s| s.resuming()) {
            Some(until) if !self.is_hungup() => {
                let left = until.saturating_duration_since(tokio::time::Instant::now());
                format!("resuming {}s left", left.as_secs_f64().ceil() as u64)
            }
            _ => lock(&self.state).clone(),
        }
    }

    /// Whether the link waits for its connection to come back.
    pub fn is_resuming(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.resuming().is_some())
    }

    /// Ends the link's connection: a link with a session resumes on a
    /// new one; any other is hung up.
    pub fn end_connection(&self) {
        match &self.session {
            Some(_) => lock(&self.conn).cancel(),
            None => self.hangup(),
        }
    }

    /// The current connection's token.
    pub fn connection(&self) -> CancellationToken {
        lock(&self.conn).clone()
    }

    /// Starts a new connection's token, ending any before it.
    pub(crate) fn new_connection(&self) -> CancellationToken {
        let mut c = lock(&self.conn);
        c.cancel();
        *c = self.hangup.child_token();
        c.clone()
    }

    /// The outlet, for the link's own task.
    pub(crate) fn outlet(&self) -> Option<&Arc<Outlet>> {
        self.outlet.as_ref()
    }

    /// Acknowledges `n` frames read on the session.
    pub(crate) fn ack(&self, n: u64) {
        if let Some(o) = &self.outlet {
            o.ack(self, n);
        }
    }

    pub fn set_state(&self, s: &str) {
        *lock(&self.state) = s.to_string();
    }

    /// Asks the link to close; its tasks end and the router cleans up.
    pub fn hangup(&self) {
        self.set_state("hungup");
        self.hangup.cancel();
    }

    pub fn is_hungup(&self) -> bool {
        self.hangup.is_cancelled()
    }

    /// Resolves when [`Term::hangup`] is called.
    pub async fn hungup(&self) {
        self.hangup.cancelled().await
    }

    /// The `ctl` file's text: type, dial string, state.
    pub fn ctl_text(&self) -> String {
        let kind = match &self.kind {
            TermKind::Local => "local",
            TermKind::Loopback => "loopback",
            TermKind::Net(_) => "net",
            TermKind::Client(_) => "client",
        };
        let addr = if self.addr.is_empty() { "-" } else { &self.addr };
        format!("{kind} {addr} {}\n", self.state())
    }

    /// The `status` file's text: counters each way, errors, rtt.
    pub fn status_text(&self) -> String {
        let s = &self.stats;
        let mut out = String::new();
        let _ = writeln!(out, "in {} envelopes {} bytes", s.envs_in.load(Relaxed), s.bytes_in.load(Relaxed));
        let _ = writeln!(out, "out {} envelopes {} bytes", s.envs_out.load(Relaxed), s.bytes_out.load(Relaxed));
        if matches!(self.kind, TermKind::Net(_)) {
            let _ = writeln!(
                out,
                "routes in {} announcements {} bytes",
                s.routes_in.load(Relaxed),
                s.routes_in_bytes.load(Relaxed)
            );
            let _ = writeln!(
                out,
                "routes out {} announcements {} bytes",
                s.routes_out.load(Relaxed),
                s.routes_out_bytes.load(Relaxed)
            );
        }
        let _ = writeln!(out, "errors {}", s.errors.load(Relaxed));
        let _ = writeln!(out, "rtt {}us min {}us", s.rtt_us.load(Relaxed), s.min_rtt_us.load(Relaxed));
        let _ = writeln!(out, "security {}", lock(&self.security));
        for (line, n) in lock(&self.refusals).iter() {
            match n {
                1 => writeln!(out, "refused {line}"),
                n => writeln!(out, "refused {line} ({n} times)"),
            }
            .ok();
        }
        if let Some(c) = &self.crossed {
            let _ = writeln!(out, "crossing {} conversation ends, {} untracked", c.len(), c.untracked());
        }
        if let Some(s) = &self.session {
            out.push_str(&s.status());
            if let Some((sent, frames, bytes)) = self.outlet.as_ref().and_then(|o| o.replay_state()) {
                let _ = writeln!(out, "sent {sent} frames unacknowledged {frames} frames {bytes} bytes");
            }
        }
        out
    }
}

impl outlet::Owner for Term {
    fn routes_out(&self, len: usize) {
        self.count_routes(false, len);
    }

    fn write_failed(&self, e: std::io::Error) {
        self.warn("write", e);
        self.end_connection();
    }

    fn hangup(&self) {
        Term::hangup(self);
    }

    fn hungup(&self) -> impl Future<Output = ()> + Send + '_ {
        Term::hungup(self)
    }

    fn is_hungup(&self) -> bool {
        Term::is_hungup(self)
    }

    fn connection(&self) -> CancellationToken {
        Term::connection(self)
    }

    fn ack_frame(&self, n: u64) -> Option<dial::Frame> {
        self.session.as_ref().map(|s| s.ack_frame(n))
    }
}

/// The kind's name in trace lines.
pub fn kind_name(k: &Kind) -> &'static str {
    match k {
        Kind::Data => "data",
        Kind::Eof => "eof",
        Kind::Hangup => "hangup",
        Kind::Cancel => "cancel",
        Kind::Error(_) => "error",
        Kind::Credit(_) => "credit",
        Kind::Hello(_) => "hello",
        Kind::Routes(_) => "routes",
        Kind::Resync => "resync",
        Kind::Ping { .. } => "ping",
        Kind::Pong { .. } => "pong",
        Kind::Offer(_) => "offer",
        Kind::Withdraw(_) => "withdraw",
        Kind::Ack(_) => "ack",
        Kind::Pair(_) => "pair",
    }
}
