//! Sessions: what a link to a neighbour keeps across its connections
//! (doc/resume.md).
//!
//! A link that drops and comes back within the grace period (the machine
//! key `resume`) goes on where it was: each side numbers the frames it
//! sends (implicitly, by their order on the session), keeps those not
//! yet acknowledged in a replay buffer (the outlet's), and counts what it
//! reads; on a new connection the two counts are exchanged, and each
//! side sends again what the other has not read. Nothing is lost,
//! nothing arrives twice, and no conversation that crossed the link
//! notices more than a pause.
//!
//! A session is made by the first hello of a link, each side giving a
//! fresh 32-byte nonce inside a connection that is encrypted (Noise) or
//! local, so the nonces are the two ends' secret. Its id is a digest of
//! both; its key is HKDF-SHA256 of both (ring). Resuming proves, each way,
//! that the side holds the key: an HMAC over both sides' fresh nonces and
//! counts, checked in constant time. A captured handshake replayed fails
//! (fresh nonces, and Noise's fresh keys under it); a peer with the right
//! machine key but another session (a restarted process, which has a new
//! [`new_run`]) cannot prove it.
//!
//! [`Session`] holds the counts of frames read, the acknowledgements
//! owed, the state (up or resuming, with its deadline) and the hand-over
//! of a resumed connection to the link's task.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use ring::{digest, hkdf, hmac, rand::SecureRandom};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::conv::lock;
use crate::envelope::{Envelope, Kind};
use crate::path::{Addr, MachineId};

/// Acknowledge at the latest after this many frames read...
const ACK_FRAMES: u64 = 256;
/// ...or this many bytes, so that a sender's replay buffer is drained
/// long before it fills (see `outlet::REPLAY_BYTES`).
const ACK_BYTES: u64 = 1 << 20;

/// A nonce's length.
pub const NONCE: usize = 32;

/// Random bytes from the system (ring's `SystemRandom`).
pub fn nonce() -> [u8; NONCE] {
    let mut n = [0; NONCE];
    // The system's random source fails only on a broken system; a
    // session made with a zero nonce would still be one neither side
    // shares with a third, as the link under it is encrypted or local.
    if ring::rand::SystemRandom::new().fill(&mut n).is_err() {
        tracing::error!("no random numbers from the system");
    }
    n
}

/// A router's run: drawn when it starts. A neighbour that restarts has
/// a new one, so its fresh link ends the old session at once instead of
/// waiting out the grace period.
pub fn new_run() -> u64 {
    u64::from_be_bytes(nonce()[..8].try_into().unwrap_or_default())
}

/// Which side of a resume handshake a proof is from; each side's proof
/// covers its own label, so one cannot be sent back as the other.
#[derive(Clone, Copy)]
pub enum Side {
    Dialer,
    Acceptor,
}

/// What both sides said in a resume handshake, which both proofs cover.
pub struct Exchange<'a> {
    pub dialer_nonce: &'a [u8],
    pub acceptor_nonce: &'a [u8],
    pub dialer_received: u64,
    pub acceptor_received: u64,
}

/// A new connection for a session being resumed, handed to the link's
/// task: its frames, and how many frames the peer had read.
pub struct Connection {
    pub link: dial::Link,
    pub peer_received: u64,
}

/// One session of a link.
pub struct Session {
    pub id: u64,
    key: hmac::Key,
    /// This machine and the neighbour, for acknowledgements' addresses.
    me: MachineId,
    pub peer: MachineId,
    /// The neighbour's [`new_run`].
    pub peer_run: u64,
    /// How long a lost connection is waited for (this side's `resume`).
    pub grace: Duration,
    /// Made over a network link (so encrypted): it resumes only over
    /// one, never over a local socket, nor a local session over a network.
    pub network: bool,
    /// Frames read from the peer (acknowledgements aside).
    received: AtomicU64,
    /// `received` as last told the peer, and the bytes read since.
    told: AtomicU64,
    untold_bytes: AtomicU64,
    /// Connections resumed so far, and resume proofs refused.
    pub resumes: AtomicU64,
    pub refused: AtomicU64,
    /// While resuming: until when.
    resuming: Mutex<Option<Instant>>,
    /// Told when the connection is lost: the dialer dials again.
    lost: Notify,
    /// Told when the session is resuming (the link's reader stopped).
    parked: Notify,
    handover: mpsc::Sender<Connection>,
}

impl Session {
    /// The session made by a fresh link's two nonces; also returns where
    /// the link's task receives resumed connections.
    pub fn new(
        me: MachineId,
        peer: MachineId,
        peer_run: u64,
        dialer_nonce: &[u8],
        acceptor_nonce: &[u8],
        grace: Duration,
    ) -> (Session, mpsc::Receiver<Connection>) {
        let mut ikm = Vec::with_capacity(2 * NONCE);
        ikm.extend_from_slice(dialer_nonce);
        ikm.extend_from_slice(acceptor_nonce);
        let d = digest::digest(&digest::SHA256, &ikm);
        let id = u64::from_be_bytes(d.as_ref()[..8].try_into().unwrap_or_default());
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"mesh resume").extract(&ikm);
        let key = match prk.expand(&[b"resume key"], hmac::HMAC_SHA256) {
            Ok(okm) => hmac::Key::from(okm),
            // Only for an output longer than 255 hashes, which this is not.
            Err(_) => hmac::Key::new(hmac::HMAC_SHA256, d.as_ref()),
        };
        let (handover, rx) = mpsc::channel(1);
        let s = Session {
            id,
            key,
            me,
            peer,
            peer_run,
            grace,
            network: false,
            received: AtomicU64::new(0),
            told: AtomicU64::new(0),
            untold_bytes: AtomicU64::new(0),
            resumes: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            resuming: Mutex::new(None),
            lost: Notify::new(),
            parked: Notify::new(),
            handover,
        };
        (s, rx)
    }

    /// The session, made over a network link if `network`.
    pub fn over(mut self, network: bool) -> Session {
        self.network = network;
        self
    }

    /// `side`'s proof over what both sides said.
    pub fn proof(&self, side: Side, x: &Exchange<'_>) -> Vec<u8> {
        hmac::sign(&self.key, &self.proven(side, x)).as_ref().to_vec()
    }

    /// Whether `proof` is `side`'s, in constant time.
    pub fn verify(&self, side: Side, x: &Exchange<'_>, proof: &[u8]) -> bool {
        hmac::verify(&self.key, &self.proven(side, x), proof).is_ok()
    }

    /// What a proof covers.
    fn proven(&self, side: Side, x: &Exchange<'_>) -> Vec<u8> {
        let mut m = Vec::with_capacity(64 + 2 * NONCE);
        m.extend_from_slice(match side {
            Side::Dialer => b"mesh resume dialer",
            Side::Acceptor => b"mesh resume acceptor",
        });
        m.extend_from_slice(&self.id.to_be_bytes());
        m.extend_from_slice(x.dialer_nonce);
        m.extend_from_slice(x.acceptor_nonce);
        m.extend_from_slice(&x.dialer_received.to_be_bytes());
        m.extend_from_slice(&x.acceptor_received.to_be_bytes());
        m
    }

    /// Frames read from the peer so far.
    pub fn received(&self) -> u64 {
        self.received.load(Relaxed)
    }

    /// Counts one frame of `len` bytes read; the count to acknowledge
    /// when an acknowledgement is due. Called by the link's reader only.
    pub fn read_one(&self, len: usize) -> Option<u64> {
        let n = self.received.fetch_add(1, Relaxed) + 1;
        let bytes = self.untold_bytes.fetch_add(len as u64, Relaxed) + len as u64;
        (n - self.told.load(Relaxed) >= ACK_FRAMES || bytes >= ACK_BYTES).then(|| self.told_now(n))
    }

    /// The count to acknowledge if anything was read since last told
    /// (the keepalive's round).
    pub fn ack_due(&self) -> Option<u64> {
        let n = self.received();
        (n > self.told.load(Relaxed)).then(|| self.told_now(n))
    }

    fn told_now(&self, n: u64) -> u64 {
        self.told.store(n, Relaxed);
        self.untold_bytes.store(0, Relaxed);
        n
    }

    /// The frame of an acknowledgement of `n` frames.
    pub fn ack_frame(&self, n: u64) -> dial::Frame {
        let router = crate::conv::reserved();
        let (me, peer) = (Addr::on(self.me.clone(), router.clone()), Addr::on(self.peer.clone(), router));
        Envelope::new(0, me, peer, Kind::Ack(n), Bytes::new()).encode_frame()
    }

    /// The connection is lost: resuming until the grace period ends.
    pub fn park(&self) -> Instant {
        let until = Instant::now() + self.grace;
        *lock(&self.resuming) = Some(until);
        self.lost.notify_one();
        self.parked.notify_waiters();
        until
    }

    /// A connection is back.
    pub fn unpark(&self) {
        *lock(&self.resuming) = None;
        self.resumes.fetch_add(1, Relaxed);
        self.told.store(self.received(), Relaxed);
    }

    /// When resuming: until when.
    pub fn resuming(&self) -> Option<Instant> {
        *lock(&self.resuming)
    }

    /// Resolves when the connection is lost (at once if it was lost
    /// since the last call).
    pub async fn lost(&self) {
        self.lost.notified().await
    }

    /// Waits until the link's reader has stopped (the session is
    /// resuming), at most `limit`. True if it has.
    pub async fn parked(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let wait = self.parked.notified();
            if self.resuming().is_some() {
                return true;
            }
            if tokio::time::timeout_at(deadline, wait).await.is_err() {
                return self.resuming().is_some();
            }
        }
    }

    /// Hands a resumed connection to the link's task; gives it back if
    /// the session is over or already has one waiting.
    #[allow(clippy::result_large_err)]
    pub fn hand_over(&self, c: Connection) -> Result<(), Connection> {
        self.handover.try_send(c).map_err(|e| match e {
            mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
        })
    }

    /// The session's lines in the terminal's `status`.
    pub fn status(&self) -> String {
        // The id stays out: with the machine's key it would let someone
        // interrupt (not take) the session.
        let mut s = format!("session resumes {} refused {}\n", self.resumes.load(Relaxed), self.refused.load(Relaxed));
        if let Some(until) = self.resuming() {
            let left = until.saturating_duration_since(Instant::now());
            s.push_str(&format!("resuming {}s left\n", left.as_secs_f64().ceil() as u64));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Session, Session) {
        let (a, b): (MachineId, MachineId) = ("a".parse().expect("valid"), "b".parse().expect("valid"));
        let (nd, na) = (nonce(), nonce());
        let d = Session::new(a.clone(), b.clone(), 1, &nd, &na, Duration::from_secs(30)).0;
        let c = Session::new(b, a, 2, &nd, &na, Duration::from_secs(30)).0;
        (d, c)
    }

    #[test]
    fn both_ends_derive_one_session_and_prove_it_each_way() {
        let (d, a) = pair();
        assert_eq!(d.id, a.id);
        let (n1, n2) = (nonce(), nonce());
        let x = Exchange { dialer_nonce: &n1, acceptor_nonce: &n2, dialer_received: 7, acceptor_received: 9 };
        let p = a.proof(Side::Acceptor, &x);
        assert!(d.verify(Side::Acceptor, &x, &p));
        // Not as the other side's, nor over other counts or nonces.
        assert!(!d.verify(Side::Dialer, &x, &p));
        let y = Exchange { acceptor_received: 10, ..x };
        assert!(!d.verify(Side::Acceptor, &y, &p));
        let n3 = nonce();
        let z = Exchange { acceptor_nonce: &n3, ..x };
        assert!(!d.verify(Side::Acceptor, &z, &p));
        // Another session cannot prove it.
        let (other, _) = pair();
        assert_ne!(other.id, d.id);
        assert!(!d.verify(Side::Acceptor, &x, &other.proof(Side::Acceptor, &x)));
    }

    #[test]
    fn acknowledgements_fall_due_by_frames_or_bytes() {
        let (s, _) = pair();
        for _ in 0..ACK_FRAMES - 1 {
            assert_eq!(s.read_one(10), None);
        }
        assert_eq!(s.read_one(10), Some(ACK_FRAMES));
        assert_eq!(s.ack_due(), None, "nothing read since");
        assert_eq!(s.read_one(ACK_BYTES as usize), Some(ACK_FRAMES + 1));
        assert_eq!(s.read_one(1), None);
        assert_eq!(s.ack_due(), Some(ACK_FRAMES + 2));
    }
}
