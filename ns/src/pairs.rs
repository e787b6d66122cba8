//! End to end: one session per pair of machines that pin each other's
//! keys. It seals every conversation message this machine sends to the
//! other and opens and checks what comes from it, so relays can neither
//! read the payload nor change or forge anything but the route
//! (doc/security.md).
//!
//! - **Handshake.** Noise KK ([`dial::pair`]), in two [`Kind::Pair`]
//!   envelopes between the routers' reserved addresses, relayed like data.
//!   The first message to a machine without a session starts one; senders
//!   wait for it (the router bounds the wait).
//! - **Seal.** AES-256-GCM under the session's key for the direction; the
//!   nonce is the message's number in the session, carried in
//!   [`Envelope::seal`] with the session's id; the associated data is
//!   [`Envelope::bound_head`].
//! - **Open.** The session is found by id among the last few the peer
//!   made ([`MAX_RECV`]); a number is taken once (a sliding window of
//!   [`WINDOW`], as IPsec has, since messages of different conversations
//!   may pass each other).
//! - **Which session sends.** The newest the peer is known to hold: the
//!   one this side started, once answered, or one the peer started, once
//!   the peer confirmed it (a third message, [`Pairs::on_confirm`]) or a
//!   message under it opened. Never one merely answered: the answer may
//!   be lost, and a first message a relay replays makes a session nobody
//!   else has. A new run of a router greets each machine it pins as it
//!   becomes reachable ([`Pairs::greet`]), so a peer that restarted
//!   confirms a new session before anyone sends under the old. Should a
//!   message still arrive under a session its receiver does not know, it
//!   is refused and its sender told, and the error, sealed under a new
//!   session, starts that one both ways.
//!
//! Lock order: `peers`, then a session's `window`.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use dial::pair::{PairKeys, PairStart, SEAL_TAG};
use dial::PublicKey;
use tokio::time::Instant;

use crate::envelope::{Envelope, Kind, Seal};
use crate::path::MachineId;

/// How long a sender waits for a handshake's answer.
pub const PAIR_TIMEOUT: Duration = Duration::from_secs(5);
/// A handshake not answered in this long is sent again (its first
/// message or the answer may have met a machine with no route yet);
/// an answer to any of the tries completes it.
pub const PAIR_RETRY: Duration = Duration::from_secs(1);
/// Tries of one handshake kept for a late answer.
const MAX_TRIES: usize = 8;
/// First messages answered per machine and second: each costs a few
/// Diffie-Hellman operations and a session slot, and a neighbour could
/// otherwise flood them in another machine's name.
const MAX_INITS_PER_SEC: u32 = 16;
/// Sessions a peer made that are still opened (older ones are dropped).
pub const MAX_RECV: usize = 4;
/// Keys pinned per machine that a handshake tries.
pub const MAX_KEYS: usize = 4;
/// How far behind the newest number a message may still arrive.
pub const WINDOW: u64 = 4096;

/// Whether an envelope of this kind belongs to a conversation and is
/// sealed end to end (control messages are each link's own).
pub fn sealed_kind(k: &Kind) -> bool {
    matches!(k, Kind::Data | Kind::Eof | Kind::Hangup | Kind::Cancel | Kind::Error(_) | Kind::Credit(_))
}

/// The end-to-end sessions of one router.
pub struct Pairs {
    identity: dial::Identity,
    /// The keys pinned for each machine, fixed for the router's life.
    pinned: HashMap<MachineId, Vec<PublicKey>>,
    peers: Mutex<HashMap<MachineId, Peer>>,
    /// Woken when a session is made or a handshake refused.
    changed: tokio::sync::Notify,
    pub stats: PairStats,
}

/// Counters for `ctl`.
#[derive(Default)]
pub struct PairStats {
    pub sealed: AtomicU64,
    pub opened: AtomicU64,
    pub refused: AtomicU64,
    pub handshakes: AtomicU64,
}

#[derive(Default)]
struct Peer {
    send: Option<Arc<Session>>,
    /// Newest first.
    recv: VecDeque<Arc<Session>>,
    /// The handshake this side started, one state per key tried.
    pending: Option<(Vec<PairStart>, Instant)>,
    /// Why the peer refused our last handshake, told to who waits.
    refused: Option<String>,
    /// This run started a handshake with it on its own (see `greet`).
    greeted: bool,
    /// First messages answered in the second that began then.
    inits: Option<(Instant, u32)>,
}

/// One pair session.
pub struct Session {
    keys: PairKeys,
    /// Number of the next message sealed.
    next: AtomicU64,
    window: Mutex<Window>,
    /// A message under it opened (or it answered our handshake): the
    /// peer holds it.
    confirmed: AtomicBool,
}

impl Session {
    fn new(keys: PairKeys, confirmed: bool) -> Arc<Session> {
        Arc::new(Session {
            keys,
            next: AtomicU64::new(0),
            window: Mutex::new(Window::default()),
            confirmed: AtomicBool::new(confirmed),
        })
    }
}

/// What a sender does next.
pub enum Sender {
    /// Seal with this.
    Ready(Arc<Session>),
    /// Send these first messages to the peer, then wait.
    Start(Vec<serde_bytes::ByteBuf>),
    /// A handshake is under way: wait.
    Wait,
    /// The peer refused the handshake.
    Refused(String),
}

/// Why a received envelope was refused.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// Its source pins our key but did not seal it.
    NotSealed,
    /// No session of its source has that id (one of us restarted).
    UnknownSession,
    /// It does not open: changed on the way or forged.
    Altered,
    /// Its number was taken already.
    Replayed,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::NotSealed => "not sealed by its source",
            Refusal::UnknownSession => "sealed under a session this machine does not know (one of the two restarted)",
            Refusal::Altered => "changed on the way, or not from its source",
            Refusal::Replayed => "a replay",
        })
    }
}

thread_local! {
    /// The associated data of the seal being made or opened.
    static BOUND: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pairs {
    pub fn new(identity: dial::Identity, trust: &dial::Trust) -> Pairs {
        let mut pinned: HashMap<MachineId, Vec<PublicKey>> = HashMap::new();
        for (key, machine) in trust.iter() {
            if let Ok(m) = machine.parse::<MachineId>() {
                pinned.entry(m).or_default().push(*key);
            }
        }
        for keys in pinned.values_mut() {
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            keys.truncate(MAX_KEYS);
        }
        Pairs { identity, pinned, peers: Default::default(), changed: Default::default(), stats: Default::default() }
    }

    /// Whether messages to and from `m` are sealed: it pins us, we pin it.
    pub fn covers(&self, m: &MachineId) -> bool {
        self.pinned.contains_key(m)
    }

    /// A future that completes at the next change of any session; create
    /// it before looking, so a change in between is not missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// How to send to `m` now.
    pub fn sender(&self, m: &MachineId) -> Sender {
        let mut peers = lock(&self.peers);
        let peer = peers.entry(m.clone()).or_default();
        if let Some(s) = &peer.send {
            return Sender::Ready(s.clone());
        }
        if let Some(why) = peer.refused.take() {
            return Sender::Refused(why);
        }
        if let Some((_, at)) = &peer.pending {
            if at.elapsed() < PAIR_RETRY {
                return Sender::Wait;
            }
        }
        match self.start(m, peer) {
            Some(firsts) => Sender::Start(firsts),
            None => Sender::Refused(format!("no key of {m} is pinned")),
        }
    }

    /// Whether to greet `m`, newly reachable: the first time this run,
    /// unless a session exists already, so that a machine that restarted
    /// has a session before anyone sends (the caller then drives
    /// [`Pairs::sender`] until it is ready).
    pub fn greet(&self, m: &MachineId) -> bool {
        if !self.covers(m) {
            return false;
        }
        let mut peers = lock(&self.peers);
        let peer = peers.entry(m.clone()).or_default();
        if peer.greeted || peer.send.is_some() {
            return false;
        }
        peer.greeted = true;
        true
    }

    fn start(&self, m: &MachineId, peer: &mut Peer) -> Option<Vec<serde_bytes::ByteBuf>> {
        // Earlier tries stay, for an answer still on its way.
        let mut starts = peer.pending.take().map(|(s, _)| s).unwrap_or_default();
        let kept = starts.len().saturating_sub(MAX_TRIES * MAX_KEYS);
        starts.drain(..kept);
        let mut firsts = Vec::new();
        for key in self.pinned.get(m).into_iter().flatten() {
            if let Ok((start, first)) = dial::pair::initiate(&self.identity, key) {
                starts.push(start);
                firsts.push(serde_bytes::ByteBuf::from(first));
            }
        }
        if firsts.is_empty() {
            return None;
        }
        self.stats.handshakes.fetch_add(1, Relaxed);
        peer.pending = Some((starts, Instant::now()));
        Some(firsts)
    }

    /// `m` became unreachable: it may come back as a new run, with none
    /// of our sessions, so the next message waits for a new one (and a
    /// greeting starts it as soon as `m` is reachable). What it sent
    /// under the old ones still opens.
    pub fn unreachable(&self, m: &MachineId) {
        if let Some(p) = lock(&self.peers).get_mut(m) {
            p.send = None;
            p.pending = None;
            p.greeted = false;
        }
    }

    /// Drops a handshake to `m` that a sender gave up on, so the next
    /// one starts afresh.
    pub fn give_up(&self, m: &MachineId) {
        let mut peers = lock(&self.peers);
        if let Some(p) = peers.get_mut(m) {
            if p.pending.as_ref().is_some_and(|(_, at)| at.elapsed() >= PAIR_RETRY) {
                p.pending = None;
            }
        }
    }

    /// Answers a first message from `from`.
    pub fn on_init(&self, from: &MachineId, firsts: &[serde_bytes::ByteBuf]) -> Result<Vec<u8>, String> {
        let keys = self.pinned.get(from).ok_or_else(|| format!("{from}'s key is not pinned here"))?;
        {
            let mut peers = lock(&self.peers);
            let peer = peers.entry(from.clone()).or_default();
            let now = Instant::now();
            let (since, n) = peer.inits.get_or_insert((now, 0));
            if now.duration_since(*since) >= Duration::from_secs(1) {
                (*since, *n) = (now, 0);
            }
            *n += 1;
            if *n > MAX_INITS_PER_SEC {
                return Err(format!("more than {MAX_INITS_PER_SEC} handshakes a second in {from}'s name"));
            }
        }
        let me = &self.identity;
        for first in firsts.iter().take(MAX_KEYS) {
            for key in keys {
                if let Ok((keys, answer)) = dial::pair::respond(me, key, first) {
                    let mut peers = lock(&self.peers);
                    let peer = peers.entry(from.clone()).or_default();
                    // Not sent under until confirmed (see `on_confirm`): the
                    // answer may never reach the initiator.
                    peer.recv.push_front(Session::new(keys, false));
                    peer.recv.truncate(MAX_RECV);
                    return Ok(answer);
                }
            }
        }
        Err(format!("no first message opened with a key pinned for {from}"))
    }

    /// Reads the answer to our handshake from `from`: the session's id
    /// and the confirmation to send the responder.
    pub fn on_answer(&self, from: &MachineId, answer: &[u8]) -> Result<(u64, [u8; SEAL_TAG]), String> {
        let mut peers = lock(&self.peers);
        let peer = peers.get_mut(from).ok_or("no handshake under way")?;
        let (starts, _) = peer.pending.take().ok_or("no handshake under way")?;
        for start in starts {
            if let Ok(keys) = start.finish(answer) {
                let done = (keys.id, keys.confirmation());
                let s = Session::new(keys, true);
                peer.recv.push_front(s.clone());
                peer.recv.truncate(MAX_RECV);
                peer.send = Some(s);
                peer.refused = None;
                drop(peers);
                self.changed.notify_waiters();
                return Ok(done);
            }
        }
        drop(peers);
        self.changed.notify_waiters();
        Err("the answer does not open: not from the key pinned for it".into())
    }

    /// The initiator of session `session` confirms it: this side sends
    /// under it from now on.
    pub fn on_confirm(&self, from: &MachineId, session: u64, proof: &[u8]) -> Result<(), String> {
        let s = {
            let peers = lock(&self.peers);
            let peer = peers.get(from).ok_or("no session")?;
            peer.recv.iter().find(|s| s.keys.id == session).cloned().ok_or("no such session")?
        };
        if !s.keys.confirms(proof) {
            return Err("a confirmation that does not open".into());
        }
        s.confirmed.store(true, Relaxed);
        self.confirm(from, &s);
        self.changed.notify_waiters();
        Ok(())
    }

    /// The peer refused our handshake.
    pub fn on_refused(&self, from: &MachineId, why: &str) {
        let mut peers = lock(&self.peers);
        if let Some(p) = peers.get_mut(from) {
            if p.pending.take().is_some() {
                p.refused = Some(why.chars().take(200).collect());
            }
        }
        drop(peers);
        self.changed.notify_waiters();
    }

    /// Seals `env`'s data under `s`.
    pub fn seal(&self, s: &Session, env: &mut Envelope) {
        let seal = Seal { session: s.keys.id, n: s.next.fetch_add(1, Relaxed) };
        let len = env.data.len();
        // In place when the payload is this envelope's alone; else one
        // copy, which the ciphertext needs a buffer of its own for anyway.
        let mut buf = match std::mem::take(&mut env.data).try_into_mut() {
            Ok(b) => b,
            Err(shared) => {
                let mut b = BytesMut::with_capacity(len + SEAL_TAG);
                b.extend_from_slice(&shared);
                b
            }
        };
        buf.resize(len + SEAL_TAG, 0);
        BOUND.with(|b| {
            let mut b = b.borrow_mut();
            env.bound_head(&seal, &mut b);
            s.keys.seal_into(seal.n, &b, &mut buf, len);
        });
        env.data = buf.freeze();
        env.seal = Some(seal);
        self.stats.sealed.fetch_add(1, Relaxed);
    }

    /// Opens and checks `env`, which came from a machine this one pins,
    /// in place: on success its data is the plaintext.
    pub fn open(&self, env: &mut Envelope) -> Result<(), Refusal> {
        let r = self.open_inner(env);
        if r.is_err() {
            self.stats.refused.fetch_add(1, Relaxed);
        } else {
            self.stats.opened.fetch_add(1, Relaxed);
        }
        r
    }

    fn open_inner(&self, env: &mut Envelope) -> Result<(), Refusal> {
        let seal = env.seal.ok_or(Refusal::NotSealed)?;
        let from = env.src.machine.as_ref().ok_or(Refusal::NotSealed)?;
        let (s, newest) = {
            let peers = lock(&self.peers);
            let peer = peers.get(from).ok_or(Refusal::UnknownSession)?;
            let i = peer.recv.iter().position(|s| s.keys.id == seal.session).ok_or(Refusal::UnknownSession)?;
            (peer.recv[i].clone(), i == 0)
        };
        if env.data.len() < SEAL_TAG {
            return Err(Refusal::Altered);
        }
        if !lock(&s.window).fresh(seal.n) {
            return Err(Refusal::Replayed);
        }
        let mut buf = match std::mem::take(&mut env.data).try_into_mut() {
            Ok(b) => b,
            Err(shared) => BytesMut::from(&shared[..]),
        };
        let opened = BOUND.with(|b| {
            let mut b = b.borrow_mut();
            env.bound_head(&seal, &mut b);
            s.keys.open(seal.n, &b, &mut buf)
        });
        let n = opened.map_err(|_| Refusal::Altered)?;
        if !lock(&s.window).take(seal.n) {
            return Err(Refusal::Replayed);
        }
        buf.truncate(n);
        env.data = buf.freeze();
        env.seal = None;
        if !s.confirmed.swap(true, Relaxed) || newest {
            self.confirm(from, &s);
        }
        Ok(())
    }

    /// A message under `s` opened: the peer holds it. It sends from now
    /// on when it is the peer's newest, or when ours is not confirmed.
    fn confirm(&self, from: &MachineId, s: &Arc<Session>) {
        let mut peers = lock(&self.peers);
        let Some(peer) = peers.get_mut(from) else { return };
        let newest = peer.recv.front().is_some_and(|n| Arc::ptr_eq(n, s));
        let keep = peer.send.as_ref().is_some_and(|c| Arc::ptr_eq(c, s) || (c.confirmed.load(Relaxed) && !newest));
        if !keep {
            peer.send = Some(s.clone());
        }
    }

    /// One line for `ctl`.
    pub fn status(&self) -> String {
        let st = &self.stats;
        let n = lock(&self.peers).values().filter(|p| p.send.is_some()).count();
        format!(
            "end-to-end sessions {n} handshakes {} sealed {} opened {} failed {}",
            st.handshakes.load(Relaxed),
            st.sealed.load(Relaxed),
            st.opened.load(Relaxed),
            st.refused.load(Relaxed)
        )
    }
}

/// The numbers taken of one session: the newest, and a bitmap of the
/// [`WINDOW`] before it.
struct Window {
    /// One past the newest number taken.
    top: u64,
    bits: [u64; (WINDOW / 64) as usize],
}

impl Default for Window {
    fn default() -> Window {
        Window { top: 0, bits: [0; (WINDOW / 64) as usize] }
    }
}

impl Window {
    /// Whether `n` may still be taken (checked before the costly open).
    fn fresh(&self, n: u64) -> bool {
        if n >= self.top {
            return true;
        }
        if self.top - n > WINDOW {
            return false;
        }
        let i = (n % WINDOW) as usize;
        self.bits[i / 64] & (1 << (i % 64)) == 0
    }

    /// Takes `n`; false when it was taken already or is too old.
    fn take(&mut self, n: u64) -> bool {
        if !self.fresh(n) {
            return false;
        }
        if n >= self.top {
            // Clear the slots the window slides past.
            let from = self.top;
            let steps = (n + 1 - from).min(WINDOW);
            for k in 0..steps {
                let i = ((n - k) % WINDOW) as usize;
                self.bits[i / 64] &= !(1 << (i % 64));
            }
            self.top = n + 1;
        }
        let i = (n % WINDOW) as usize;
        self.bits[i / 64] |= 1 << (i % 64);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> (Pairs, Pairs) {
        let (ka, kb) = (dial::Identity::generate(), dial::Identity::generate());
        let (mut ta, mut tb) = (dial::Trust::new(), dial::Trust::new());
        ta.pin("b", kb.public()).unwrap();
        tb.pin("a", ka.public()).unwrap();
        (Pairs::new(ka, &ta), Pairs::new(kb, &tb))
    }

    fn m(s: &str) -> MachineId {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn a_session_sends_on_the_responder_only_once_confirmed() {
        let (a, b) = two();
        let Sender::Start(firsts) = a.sender(&m("b")) else { panic!("a starts") };
        let answer = b.on_init(&m("a"), &firsts).unwrap();
        // Answered, not confirmed: b has nothing to send under yet.
        assert!(matches!(b.sender(&m("a")), Sender::Start(_)));
        let (session, proof) = a.on_answer(&m("b"), &answer).unwrap();
        assert!(b.on_confirm(&m("a"), session, &[0u8; 16]).is_err(), "a forged confirmation");
        b.on_confirm(&m("a"), session, &proof).unwrap();
        let (Sender::Ready(sa), Sender::Ready(sb)) = (a.sender(&m("b")), b.sender(&m("a"))) else {
            panic!("both ready")
        };
        assert_eq!(sa.keys.id, sb.keys.id);
    }

    #[tokio::test]
    async fn first_messages_in_one_machines_name_are_answered_at_most_so_often() {
        let (a, b) = two();
        let Sender::Start(firsts) = a.sender(&m("b")) else { panic!("a starts") };
        for _ in 0..MAX_INITS_PER_SEC {
            b.on_init(&m("a"), &firsts).unwrap();
        }
        let e = b.on_init(&m("a"), &firsts).unwrap_err();
        assert!(e.contains("handshakes a second"), "{e}");
        // A machine nobody pinned is refused outright.
        assert!(b.on_init(&m("z"), &firsts).unwrap_err().contains("not pinned"));
    }

    #[test]
    fn the_window_takes_each_number_once_in_any_order() {
        let mut w = Window::default();
        assert!(w.take(5));
        assert!(!w.take(5));
        assert!(w.take(3));
        assert!(!w.take(3));
        assert!(w.take(4));
        assert!(w.take(5000));
        // Too old now.
        assert!(!w.take(6));
        assert!(w.take(5000 - WINDOW + 1));
        assert!(!w.take(5000 - WINDOW));
        // A jump past the window forgets everything before it.
        assert!(w.take(20_000));
        assert!(w.take(19_999));
        assert!(!w.take(20_000));
        for n in 20_001..30_000 {
            assert!(w.take(n));
        }
        assert!(!w.take(29_999));
    }
}
