//! A link's reader: frames in, acknowledgements handled, envelopes
//! passed to forwarding or to the routing protocol.
//!
//! On a link with a session the reader never stops reading while an
//! envelope's handling waits (a full queue towards another link): frames
//! that arrive meanwhile wait in a backlog, and acknowledgements among
//! them are taken at once. Otherwise two routers relaying bulk both ways
//! through each other could each stop reading the acknowledgements that
//! would let the other go on, and wait for ever. The backlog is bounded
//! by what the peer may send unacknowledged (its replay buffer,
//! `outlet::REPLAY_BYTES`): frames are acknowledged only once handled, so
//! an honest peer never overfills it, and one that does ends the session.
//!
//! A frame is counted read (and so acknowledged) only once handled: when
//! the connection ends while one waits, it is dropped uncounted, and the
//! peer sends it again on the next connection.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::envelope::{Envelope, Hello, Kind, SessionMsg, MAX_FRAME};
use crate::error;
use crate::outlet::{REPLAY_BYTES, REPLAY_FRAMES};
use crate::path::MachineId;
use crate::router::Router;
use crate::term::{now_us, Term};

/// Why a link's connection stopped being read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Ended {
    /// The connection failed or was ended: a session may resume.
    Lost,
    /// The link is over: hung up, shut down, or the peer broke the
    /// protocol or ended the session.
    Over,
}

/// What one frame read was.
// Boxing the envelope would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
enum Frame {
    /// An envelope to handle, and its encoded length.
    Env(Envelope, usize),
    /// An acknowledgement, taken.
    Acked,
    /// The connection or the link is over.
    End(Ended),
}

/// Envelopes read while the one before them was being handled.
#[derive(Default)]
struct Backlog {
    envs: VecDeque<(Envelope, usize)>,
    bytes: usize,
}

impl Backlog {
    fn push(&mut self, env: Envelope, len: usize) -> Result<(), String> {
        self.bytes += len;
        self.envs.push_back((env, len));
        if self.envs.len() > REPLAY_FRAMES + 1 || self.bytes > REPLAY_BYTES + MAX_FRAME {
            return Err(format!("{} frames, {} bytes sent past the acknowledged", self.envs.len(), self.bytes));
        }
        Ok(())
    }

    fn pop(&mut self) -> Option<(Envelope, usize)> {
        let (env, len) = self.envs.pop_front()?;
        self.bytes -= len;
        Some((env, len))
    }
}

impl Router {
    /// Reads one connection of a link until it ends.
    pub(crate) async fn read_link(
        &self,
        term: &Arc<Term>,
        peer: &MachineId,
        frames: &mut dial::FrameStream,
        conn: &CancellationToken,
    ) -> Ended {
        let mut backlog = Backlog::default();
        loop {
            let (env, len) = match backlog.pop() {
                Some(x) => x,
                None => {
                    let f = tokio::select! {
                        biased;
                        _ = self.shutdown_token().cancelled() => return Ended::Over,
                        _ = term.hungup() => return Ended::Over,
                        _ = conn.cancelled() => return Ended::Lost,
                        f = frames.next() => f,
                    };
                    match frame_in(term, f) {
                        Frame::Env(env, len) => (env, len),
                        Frame::Acked => continue,
                        Frame::End(e) => return e,
                    }
                }
            };
            if let (Kind::Hello(Hello { session: Some(SessionMsg::Refused(why)), .. }), Some(_)) =
                (&env.kind, &term.session)
            {
                info!(term = %term.name, "neighbour ended the session: {why}");
                return Ended::Over;
            }
            term.note("in", &env);
            if matches!(env.kind, Kind::Routes(_)) {
                term.count_routes(true, len);
            }
            let work = self.receive_from_peer(term, peer, env);
            tokio::pin!(work);
            let res = loop {
                tokio::select! {
                    biased;
                    r = &mut work => break r,
                    _ = self.shutdown_token().cancelled() => return Ended::Over,
                    _ = term.hungup() => return Ended::Over,
                    // Dropped uncounted: the peer sends it again.
                    _ = conn.cancelled() => return Ended::Lost,
                    f = frames.next(), if term.session.is_some() => match frame_in(term, f) {
                        Frame::Env(env, len) => {
                            if let Err(e) = backlog.push(env, len) {
                                term.warn("neighbour sent past its window, closing link", e);
                                return Ended::Over;
                            }
                        }
                        Frame::Acked => {}
                        Frame::End(e) => return e,
                    },
                }
            };
            if let Err(e) = res {
                term.warn("protocol error, closing link", e);
                return Ended::Over;
            }
            if let Some(n) = term.session.as_ref().and_then(|s| s.read_one(len)) {
                term.ack(n);
            }
        }
    }

    /// Handles one envelope from a neighbour.
    async fn receive_from_peer(&self, term: &Arc<Term>, peer: &MachineId, env: Envelope) -> Result<(), String> {
        match env.kind {
            Kind::Routes(_) | Kind::Resync | Kind::Ping { .. } | Kind::Pong { .. } => {
                self.routing().receive(self, term, peer, env).await
            }
            Kind::Hello(_) | Kind::Offer(_) | Kind::Withdraw(_) | Kind::Ack(_) => {
                Err(format!("unexpected {} from a neighbour", crate::term::kind_name(&env.kind)))
            }
            Kind::Data | Kind::Eof | Kind::Hangup | Kind::Cancel | Kind::Error(_) | Kind::Credit(_) | Kind::Pair(_) => {
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
                if self.config().gossip && !self.table().peer_reaches(peer, &src) {
                    term.stats.errors.fetch_add(1, Relaxed);
                    warn!(%peer, source = %env.src, "refused: neighbour does not route to the source");
                    self.bounce(env, error::detail(error::EPERM, format!("{peer} does not route to {src}")));
                    return Ok(());
                }
                let mut env = env;
                if env.dst.machine.as_ref().is_some_and(|m| m != self.id()) {
                    crate::tamper::relayed(&mut env);
                }
                self.forward(env).await;
                Ok(())
            }
        }
    }
}

/// Takes one frame off the connection: an envelope to handle, or an
/// acknowledgement (taken here), or the end.
fn frame_in(term: &Term, f: Option<std::io::Result<dial::Frame>>) -> Frame {
    let frame = match f {
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            term.warn("read", e);
            return Frame::End(Ended::Lost);
        }
        None => return Frame::End(Ended::Lost),
    };
    term.last_rx.store(now_us(), Relaxed);
    let len = frame.len();
    let env = match Envelope::decode_frame(frame) {
        Ok(env) => env,
        Err(e) => {
            term.warn("bad frame, closing link", e);
            return Frame::End(Ended::Over);
        }
    };
    if let Kind::Ack(n) = env.kind {
        if let Some(Err(e)) = term.outlet().map(|o| o.acked(n)) {
            term.warn("bad acknowledgement, closing link", e);
            return Frame::End(Ended::Over);
        }
        return Frame::Acked;
    }
    Frame::Env(env, len)
}
