//! End to end, as forwarding uses it ([`crate::pairs`] holds the
//! sessions): a conversation message that leaves this machine for a
//! machine it pins is sealed first, one that comes from such a machine is
//! opened and checked before anything else looks at it, and the
//! handshakes' messages addressed to this router are answered here.
//! Relays do none of it: they pass sealed messages on as they are.

use std::time::Duration;

use tracing::debug;

use crate::conv::RESERVED;
use crate::envelope::{Envelope, Kind, PairMsg};
use crate::error::{self, EAUTH, EBADSEAL};
use crate::pairs::{sealed_kind, Refusal, Sender, PAIR_RETRY, PAIR_TIMEOUT};
use crate::path::MachineId;
use crate::router::Router;

/// Refusals of the same source through the same relay are told in `ctl` at
/// most this often.
const REFUSAL_QUIET: Duration = Duration::from_secs(10);

impl Router {
    /// Seals `env` for machine `dst` when the two pin each other and it
    /// starts here. Without a session yet it starts one and waits for it
    /// (one round trip), at most [`PAIR_TIMEOUT`]; the error says why
    /// none could be made.
    pub(crate) async fn seal_for(&self, dst: &MachineId, env: &mut Envelope) -> Result<(), String> {
        let Some(p) = self.pairs() else { return Ok(()) };
        if env.seal.is_some()
            || !sealed_kind(&env.kind)
            || env.src.machine.as_ref() != Some(self.id())
            || !p.covers(dst)
        {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + PAIR_TIMEOUT;
        loop {
            let changed = p.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match p.sender(dst) {
                Sender::Ready(s) => {
                    p.seal(&s, env);
                    return Ok(());
                }
                Sender::Start(firsts) => {
                    debug!(peer = %dst, "end-to-end handshake");
                    self.send_pair(dst, PairMsg::Init(firsts));
                }
                Sender::Wait => {}
                Sender::Refused(why) => return Err(error::detail(EAUTH, format!("{dst} refused: {why}"))),
            }
            if tokio::time::Instant::now() >= deadline {
                p.give_up(dst);
                return Err(error::detail(
                    EAUTH,
                    format!("no end-to-end session with {dst}: no answer to the handshake in {PAIR_TIMEOUT:?}"),
                ));
            }
            let wake = deadline.min(tokio::time::Instant::now() + PAIR_RETRY);
            tokio::select! {
                _ = changed => {}
                // Looked at again: a handshake unanswered this long is
                // sent again.
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.shutdown_token().cancelled() => return Err(error::ESHUTDOWN.to_string()),
            }
        }
    }

    /// Greets the machines that became reachable (see
    /// [`crate::pairs::Pairs::greet`]): a task per machine drives the
    /// handshake, sent again each [`PAIR_RETRY`], until a session is
    /// ready or [`PAIR_TIMEOUT`] is over.
    pub(crate) fn greet_new(&self, changed: &std::collections::BTreeSet<MachineId>) {
        let Some(p) = self.pairs() else { return };
        for m in changed {
            if self.table().best(m).is_none() || !p.greet(m) {
                continue;
            }
            debug!(peer = %m, "end-to-end greeting");
            let (r, m) = (self.clone(), m.clone());
            self.spawn(async move {
                let Some(p) = r.pairs() else { return };
                let until = tokio::time::Instant::now() + PAIR_TIMEOUT;
                while tokio::time::Instant::now() < until {
                    match p.sender(&m) {
                        Sender::Ready(_) | Sender::Refused(_) => return,
                        Sender::Start(firsts) => r.send_pair(&m, PairMsg::Init(firsts)),
                        Sender::Wait => {}
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(PAIR_RETRY) => {}
                        _ = r.shutdown_token().cancelled() => return,
                    }
                }
            });
        }
    }

    /// Handles a handshake message for this router.
    pub(crate) fn pair_message(&self, env: Envelope) {
        let Kind::Pair(msg) = env.kind else { return };
        let Some(from) = env.src.machine.clone() else { return };
        // Only a router speaks the handshake.
        if env.src.service.as_str() != RESERVED || env.src.conv.is_some() {
            debug!(src = %env.src, "handshake message not from a router, dropped");
            return;
        }
        let relay = relay_of(&env.via);
        let Some(p) = self.pairs() else {
            if let PairMsg::Init(_) = msg {
                self.send_pair(&from, PairMsg::Refused("this machine does not seal end to end (insecure)".into()));
            }
            return;
        };
        match msg {
            PairMsg::Init(firsts) => match p.on_init(&from, &firsts) {
                Ok(answer) => self.send_pair(&from, PairMsg::Answer(answer.into())),
                Err(why) => {
                    self.tell_refusal(&from, &relay, &format!("end-to-end handshake: {why}"));
                    self.send_pair(&from, PairMsg::Refused(why));
                }
            },
            PairMsg::Answer(answer) => match p.on_answer(&from, &answer) {
                Ok((session, proof)) => {
                    self.send_pair(&from, PairMsg::Confirm { session, proof: proof.to_vec().into() })
                }
                Err(why) => self.tell_refusal(&from, &relay, &format!("end-to-end handshake: {why}")),
            },
            PairMsg::Confirm { session, proof } => {
                if let Err(why) = p.on_confirm(&from, session, &proof) {
                    self.tell_refusal(&from, &relay, &format!("end-to-end handshake: {why}"));
                }
            }
            PairMsg::Refused(why) => p.on_refused(&from, &why),
        }
    }

    /// Sends a handshake message from a task of its own (a plain
    /// function, so that forwarding's future does not contain itself).
    fn send_pair(&self, to: &MachineId, msg: PairMsg) {
        let env = self.control(to, Kind::Pair(msg));
        let r = self.clone();
        self.spawn(async move { r.forward(env).await });
    }

    /// Opens and checks an envelope that came for this machine from
    /// another, before it is delivered: the reason when it must be
    /// refused. Envelopes from machines this one does not pin pass as
    /// their neighbour passed them (doc/security.md).
    pub(crate) fn open_arrival(&self, env: &mut Envelope) -> Result<(), Refusal> {
        let Some(p) = self.pairs() else { return Ok(()) };
        if !sealed_kind(&env.kind) {
            return Ok(());
        }
        match env.src.machine.as_ref() {
            Some(src) if src != self.id() && p.covers(src) => p.open(env),
            _ => Ok(()),
        }
    }

    /// Refuses an envelope that failed its end-to-end check: told in
    /// `ctl` with its source and the relay that passed it on, its sender
    /// told with an error, and the conversation here it was for failed.
    pub(crate) fn refuse_arrival(&self, env: Envelope, why: Refusal) {
        let src = env.src.machine.clone().unwrap_or_else(|| self.id().clone());
        let relay = relay_of(&env.via);
        self.tell_refusal(&src, &relay, &format!("{} {}: {why}", crate::term::kind_name(&env.kind), env.dst));
        let line = error::detail(EBADSEAL, format!("at {}: {why} (passed on by {relay})", self.id()));
        if env.dst.conv.is_some() && env.dst.machine.as_ref().is_none_or(|m| m == self.id()) {
            self.fail_endpoint(env.dst.clone(), &line);
        }
        self.bounce(env, line);
    }

    /// One event in `ctl` per source, relay and reason every
    /// [`REFUSAL_QUIET`].
    fn tell_refusal(&self, src: &MachineId, relay: &str, what: &str) {
        // Keys apart from the denials' (who, service) in the same table.
        let key = (format!("from {src}"), relay.to_string());
        self.tell_once(key, REFUSAL_QUIET, || format!("refused from {src} via {relay}: {what}"));
    }
}

/// The relay that passed an envelope on: the machine before this one on
/// its path, or the link itself when it came straight from its source.
fn relay_of(via: &[MachineId]) -> String {
    match via.len() {
        0..=2 => "the direct link".to_string(),
        n => via[n - 2].to_string(),
    }
}
