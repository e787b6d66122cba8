//! Resuming a link's session on a new connection (doc/resume.md).
//!
//! The side that dialed the link dials again: at once when the connection
//! is lost, then with a backoff capped at [`RESUME_BACKOFF_MAX`], each try
//! bounded by [`RESUME_TRY`]. The side that accepted it waits. Meanwhile
//! the link's task ([`Router::wait_resume`]) keeps the terminal, its
//! routes and what crossed it; senders queue until the queue is full.
//!
//! The handshake, after Noise (or on a local transport):
//!
//! 1. dialer: `Resume { id, received, nonce }`;
//! 2. acceptor: stops the old connection's reader if it had not noticed
//!    the loss, so that its count is final; answers `Resumed { received,
//!    nonce, proof }`, or `Refused` when it has no such session;
//! 3. dialer: checks the proof, answers with its own (`Proof`);
//! 4. acceptor: checks it. Each side then hands the connection to the
//!    link's task, which sends again what the other has not read.
//!
//! A wrong proof closes the new connection and is counted in the
//! terminal's `status`; the session goes on waiting for its real peer.
//!
//! A dial that finds nobody listening (connection refused) ends the
//! session at once: the neighbour's process is gone, and its sessions
//! with it, as a cut cable never refuses. So a killed neighbour is
//! noticed as fast as without sessions when this side dialed it; one
//! that dialed this side is waited for until the grace period ends, or
//! until it links afresh from a new run.

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use dial::{DialString, Link};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::envelope::{link_options, Hello, SessionMsg};
use crate::link::{hello_env, read_hello, send_frame, Secured};
use crate::path::TermName;
use crate::router::Router;
use crate::session::{self, Connection, Exchange, Session, Side};
use crate::term::{now_us, Term};

/// The first wait between tries to resume, and the longest.
const RESUME_BACKOFF_MIN: Duration = Duration::from_millis(20);
const RESUME_BACKOFF_MAX: Duration = Duration::from_millis(250);
/// How long one try may take, dial and handshake.
const RESUME_TRY: Duration = Duration::from_secs(3);
/// How long the acceptor waits for an old connection's reader to stop.
const PARK_WAIT: Duration = Duration::from_secs(2);

/// Why a try to resume failed.
enum Failed {
    /// The acceptor has no such session: it is over.
    Refused(String),
    /// Anything else: try again.
    Again(String),
}

impl From<io::Error> for Failed {
    fn from(e: io::Error) -> Failed {
        Failed::Again(e.to_string())
    }
}

fn buf(b: &[u8]) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(b.to_vec())
}

impl Router {
    /// Dialer: until the link's task ends, resumes its session whenever
    /// the connection is lost. False on shutdown.
    pub(crate) async fn keep_session(&self, ds: &DialString, task: &mut JoinHandle<()>, s: &Arc<Session>) -> bool {
        loop {
            tokio::select! {
                _ = self.shutdown_token().cancelled() => return false,
                _ = &mut *task => return true,
                _ = s.lost() => {}
            }
            let mut backoff = RESUME_BACKOFF_MIN;
            while !task.is_finished() && s.resuming().is_some() {
                let res = match tokio::time::timeout(RESUME_TRY, self.resume_dial(ds, s)).await {
                    Ok(r) => r,
                    Err(_) => Err(Failed::Again("no answer".into())),
                };
                match res {
                    Ok(()) => break,
                    Err(Failed::Refused(why)) => {
                        let term = self.term(&TermName::Net(s.peer.clone()));
                        let line = format!("resume of {}: refused: {why}", ds);
                        warn!("{line}");
                        self.log_event(line);
                        if let Some(t) = term.filter(|t| t.session.as_ref().is_some_and(|x| Arc::ptr_eq(x, s))) {
                            t.hangup();
                        }
                        break;
                    }
                    Err(Failed::Again(e)) => debug!(addr = %ds, "resume: {e}"),
                }
                tokio::select! {
                    _ = self.shutdown_token().cancelled() => return false,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RESUME_BACKOFF_MAX);
            }
        }
    }

    /// Dialer: one try to resume session `s` over a new connection to
    /// `ds`; on success the link's task has the connection.
    async fn resume_dial(&self, ds: &DialString, s: &Session) -> Result<(), Failed> {
        let link = dial::dial(ds, &link_options()).await.map_err(|e| match e.kind() {
            // Nobody listens: the neighbour's process is gone, and its
            // session with it (one started again is a new session).
            io::ErrorKind::ConnectionRefused => Failed::Refused(format!("{e}: nobody listens")),
            _ => e.into(),
        })?;
        let (mut link, secured) = if ds.is_network() {
            self.secure(link, dial::Role::Initiator).await?
        } else {
            (link, Secured { machine: None, status: "local".into() })
        };
        if secured.machine.as_ref().is_some_and(|m| *m != s.peer.as_str()) {
            return Err(Failed::Again(format!("{ds} has the key of another machine")));
        }
        let ours = session::nonce();
        let received = s.received();
        let ask = SessionMsg::Resume { id: s.id, received, nonce: buf(&ours) };
        send_frame(&mut link, &hello_env(self.id(), None, Some(ask))).await?;
        let hello = read_hello(&mut link).await?.ok_or_else(|| Failed::Again("closed before answering".into()))?;
        if hello.machine != s.peer {
            return Err(Failed::Again(format!("{ds} is machine {}", hello.machine)));
        }
        let (theirs, peer_received, proof) = match hello.session {
            Some(SessionMsg::Resumed { received, nonce, proof }) => (nonce, received, proof),
            Some(SessionMsg::Refused(why)) => return Err(Failed::Refused(why)),
            other => return Err(Failed::Again(format!("answered {other:?}"))),
        };
        let x = Exchange {
            dialer_nonce: &ours,
            acceptor_nonce: &theirs,
            dialer_received: received,
            acceptor_received: peer_received,
        };
        if !s.verify(Side::Acceptor, &x, &proof) {
            s.refused.fetch_add(1, Relaxed);
            return Err(Failed::Again(format!("{ds} did not prove the session")));
        }
        let mine = SessionMsg::Proof(buf(&s.proof(Side::Dialer, &x)));
        send_frame(&mut link, &hello_env(self.id(), None, Some(mine))).await?;
        s.hand_over(Connection { link, peer_received })
            .map_err(|_| Failed::Refused("the session ended meanwhile".into()))
    }

    /// Acceptor: a hello asking to resume a session, on a link that may
    /// resume (`resumable`) and came over the network or not.
    pub(crate) async fn resume_accept(
        &self,
        mut link: Link,
        hello: Hello,
        remote: String,
        resumable: bool,
        network: bool,
    ) {
        let Some(SessionMsg::Resume { id, received: peer_received, nonce: theirs }) = hello.session else { return };
        let peer = hello.machine;
        // Only over a link as safe as the one that made the session: an
        // insecure network link, or a local socket for a session made over
        // the network (or the other way round), finds none.
        let found = self
            .term(&TermName::Net(peer.clone()))
            .filter(|t| !t.dialed && resumable)
            .and_then(|t| t.session.clone().filter(|s| s.id == id && s.network == network).map(|s| (t, s)));
        let Some((term, s)) = found else {
            debug!(%peer, %remote, "no session {id:016x} to resume");
            let no = SessionMsg::Refused(format!("no session {id:016x} here"));
            let _ = send_frame(&mut link, &hello_env(self.id(), None, Some(no))).await;
            return;
        };
        // The old connection may not have been noticed lost yet: stop its
        // reader, so that the count told is final.
        term.end_connection();
        if !s.parked(PARK_WAIT).await {
            warn!(term = %term.name, "resume: the old connection did not stop");
            return;
        }
        let ours = session::nonce();
        let received = s.received();
        let x = Exchange {
            dialer_nonce: &theirs,
            acceptor_nonce: &ours,
            dialer_received: peer_received,
            acceptor_received: received,
        };
        let answer = SessionMsg::Resumed { received, nonce: buf(&ours), proof: buf(&s.proof(Side::Acceptor, &x)) };
        if send_frame(&mut link, &hello_env(self.id(), None, Some(answer))).await.is_err() {
            return;
        }
        let proof = match read_hello(&mut link).await {
            Ok(Some(Hello { session: Some(SessionMsg::Proof(p)), .. })) => p,
            Ok(_) => Vec::new().into(),
            Err(e) => {
                debug!(%remote, "resume: {e}");
                return;
            }
        };
        if !s.verify(Side::Dialer, &x, &proof) {
            s.refused.fetch_add(1, Relaxed);
            let line = format!("{remote}: resume of session {id:016x} without its proof");
            warn!(term = %term.name, "refused {line}");
            term.refused(line.clone());
            self.log_event(format!("refused {line}"));
            return;
        }
        if s.hand_over(Connection { link, peer_received }).is_err() {
            debug!(term = %term.name, "resume: the session ended meanwhile");
        }
    }

    /// The link's task, its connection lost: waits for a new one within
    /// the grace period and resumes on it. `None` when the session is
    /// over (the grace period passed, hangup, shutdown).
    pub(crate) async fn wait_resume(
        &self,
        term: &Arc<Term>,
        s: &Session,
        handover: &mut mpsc::Receiver<Connection>,
    ) -> Option<dial::FrameStream> {
        let out = term.outlet()?.clone();
        term.end_connection();
        out.detach().await;
        let until = s.park();
        info!(term = %term.name, grace_s = s.grace.as_secs(), "connection lost, resuming");
        self.log_event(format!("{} resuming ({}s)", term.name, s.grace.as_secs()));
        let c = tokio::select! {
            _ = self.shutdown_token().cancelled() => return None,
            _ = term.hungup() => return None,
            _ = tokio::time::sleep_until(until) => {
                let line = format!("{} not resumed within {}s", term.name, s.grace.as_secs());
                warn!("{line}");
                self.log_event(line);
                return None;
            }
            c = handover.recv() => c?,
        };
        term.new_connection();
        if let Err(e) = out.attach(c.link.tx, c.peer_received, s.received()).await {
            term.warn("resume refused, closing link", e);
            return None;
        }
        term.last_rx.store(now_us(), Relaxed);
        s.unpark();
        info!(term = %term.name, "resumed");
        self.log_event(format!("{} resumed", term.name));
        Some(c.link.rx)
    }
}
