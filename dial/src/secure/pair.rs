//! End-to-end keys between two machines that pin each other, agreed over
//! any path (the mesh carries the two messages through relays).
//!
//! The handshake is Noise KK (`Noise_KK_25519_AESGCM_SHA256`): each side
//! already holds the other's pinned static key, so one message each way
//! proves both keys and agrees fresh ephemeral secrets. A relay that sees
//! both messages learns nothing and cannot answer in either side's name.
//!
//! What it yields is a [`PairKeys`]: the two keys of Noise's split, one
//! per direction, used with AES-256-GCM (ring) and associated data, which
//! snow's transport messages do not take. The caller seals each message
//! with its own counter as the nonce and checks the counters it receives
//! against replays; this module holds no counters, since messages of one
//! pair may arrive out of order.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use snow::HandshakeState;

use super::keys::{Identity, PublicKey};

/// The end-to-end handshake.
const PROTOCOL: &str = "Noise_KK_25519_AESGCM_SHA256";
/// Binds the handshake to its use, so a link's handshake message never
/// passes for one of these.
const PROLOGUE: &[u8] = b"mesh end-to-end pair";
/// Bytes a seal adds to a message.
pub const SEAL_TAG: usize = 16;
/// The longest handshake message: an ephemeral key and an empty payload's
/// tag.
pub const PAIR_MSG_MAX: usize = 32 + 16;

/// The number of the confirmation, never a data message's (counters
/// start at 0 and do not reach it).
const CONFIRM_NONCE: u64 = u64::MAX;
const CONFIRM_AAD: &[u8] = b"mesh pair confirm";

/// Why a handshake message was refused.
#[derive(Debug, thiserror::Error)]
#[error("end-to-end handshake: {0}")]
pub struct PairError(String);

fn build(me: &Identity, peer: &PublicKey, initiator: bool) -> Result<HandshakeState, PairError> {
    let params = PROTOCOL.parse().map_err(|e| PairError(format!("{e:?}")))?;
    let resolver = snow::resolvers::FallbackResolver::new(
        Box::new(snow::resolvers::RingResolver),
        Box::new(snow::resolvers::DefaultResolver),
    );
    let b = snow::Builder::with_resolver(params, Box::new(resolver))
        .local_private_key(me.private_bytes())
        .and_then(|b| b.remote_public_key(peer.as_bytes()))
        .and_then(|b| b.prologue(PROLOGUE))
        .map_err(|e| PairError(e.to_string()))?;
    let hs = if initiator { b.build_initiator() } else { b.build_responder() };
    hs.map_err(|e| PairError(e.to_string()))
}

/// The initiator's side between its message and the answer.
pub struct PairStart {
    hs: HandshakeState,
}

impl std::fmt::Debug for PairStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairStart")
    }
}

/// Starts a handshake with the machine whose key is `peer`: the first
/// message, to carry to it, and the state that reads its answer.
///
/// # Errors
///
/// Only if snow refuses the keys, which it does not for valid ones.
pub fn initiate(me: &Identity, peer: &PublicKey) -> Result<(PairStart, Vec<u8>), PairError> {
    let mut hs = build(me, peer, true)?;
    let mut msg = vec![0u8; PAIR_MSG_MAX];
    let n = hs.write_message(&[], &mut msg).map_err(|e| PairError(e.to_string()))?;
    msg.truncate(n);
    Ok((PairStart { hs }, msg))
}

impl PairStart {
    /// Reads the responder's answer.
    ///
    /// # Errors
    ///
    /// When the answer does not come from the pinned key's holder, or is
    /// not an answer to this handshake.
    pub fn finish(mut self, answer: &[u8]) -> Result<PairKeys, PairError> {
        if answer.len() > PAIR_MSG_MAX {
            return Err(PairError(format!("answer of {} bytes", answer.len())));
        }
        let mut payload = [0u8; PAIR_MSG_MAX];
        self.hs.read_message(answer, &mut payload).map_err(|e| PairError(format!("answer does not open: {e}")))?;
        PairKeys::split(&mut self.hs, true)
    }
}

/// Answers a first message from the machine whose key is `peer`: the
/// keys, and the answer to carry back.
///
/// # Errors
///
/// When the message does not come from `peer`'s key holder for this
/// machine's key.
pub fn respond(me: &Identity, peer: &PublicKey, first: &[u8]) -> Result<(PairKeys, Vec<u8>), PairError> {
    if first.len() > PAIR_MSG_MAX {
        return Err(PairError(format!("first message of {} bytes", first.len())));
    }
    let mut hs = build(me, peer, false)?;
    let mut payload = [0u8; PAIR_MSG_MAX];
    hs.read_message(first, &mut payload).map_err(|e| PairError(format!("first message does not open: {e}")))?;
    let mut msg = vec![0u8; PAIR_MSG_MAX];
    let n = hs.write_message(&[], &mut msg).map_err(|e| PairError(e.to_string()))?;
    msg.truncate(n);
    Ok((PairKeys::split(&mut hs, false)?, msg))
}

/// The keys of one pair session: one to seal what this side sends, one to
/// open what it receives, and the session's number (the same on both
/// sides, from the handshake hash: public, not a secret).
pub struct PairKeys {
    pub id: u64,
    send: LessSafeKey,
    recv: LessSafeKey,
}

impl std::fmt::Debug for PairKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PairKeys {{ id {:016x} }}", self.id)
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

impl PairKeys {
    fn split(hs: &mut HandshakeState, initiator: bool) -> Result<PairKeys, PairError> {
        if !hs.is_handshake_finished() {
            return Err(PairError("handshake not finished".into()));
        }
        let hash = hs.get_handshake_hash();
        let id = u64::from_be_bytes(hash[..8].try_into().map_err(|_| PairError("short handshake hash".into()))?);
        let (i2r, r2i) = hs.dangerously_get_raw_split();
        let key = |k: [u8; 32]| {
            UnboundKey::new(&AES_256_GCM, &k).map(LessSafeKey::new).map_err(|_| PairError("AES-256-GCM key".into()))
        };
        let (send, recv) = if initiator { (key(i2r)?, key(r2i)?) } else { (key(r2i)?, key(i2r)?) };
        Ok(PairKeys { id, send, recv })
    }

    /// Seals `data` in place under message number `counter` (never used
    /// twice with these keys), binding `aad`; appends the tag.
    pub fn seal(&self, counter: u64, aad: &[u8], data: &mut Vec<u8>) {
        let tag = self
            .send
            .seal_in_place_separate_tag(nonce(counter), Aad::from(aad), data)
            .expect("AES-GCM seals any message under 64 GiB");
        data.extend_from_slice(tag.as_ref());
    }

    /// Seals `data` in place under `counter` into a buffer that has room
    /// for the tag after it: `buf[..len]` is the message, the tag is
    /// written to `buf[len..len + SEAL_TAG]`.
    pub fn seal_into(&self, counter: u64, aad: &[u8], buf: &mut [u8], len: usize) {
        let (data, rest) = buf.split_at_mut(len);
        let tag = self
            .send
            .seal_in_place_separate_tag(nonce(counter), Aad::from(aad), data)
            .expect("AES-GCM seals any message under 64 GiB");
        rest[..SEAL_TAG].copy_from_slice(tag.as_ref());
    }

    /// The initiator's proof that it completed the handshake: an empty
    /// message sealed under a number data never takes. The responder
    /// starts sending under the session only once it has checked this
    /// (or opened a message under it): an answer lost on the way would
    /// otherwise leave it sending under keys the initiator never made.
    #[must_use]
    pub fn confirmation(&self) -> [u8; SEAL_TAG] {
        let tag = self
            .send
            .seal_in_place_separate_tag(nonce(CONFIRM_NONCE), Aad::from(CONFIRM_AAD), &mut [])
            .expect("AES-GCM seals an empty message");
        let mut out = [0u8; SEAL_TAG];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Whether `proof` is the peer's [`PairKeys::confirmation`].
    #[must_use]
    pub fn confirms(&self, proof: &[u8]) -> bool {
        let mut buf = proof.to_vec();
        self.recv.open_in_place(nonce(CONFIRM_NONCE), Aad::from(CONFIRM_AAD), &mut buf).is_ok()
    }

    /// Opens a sealed message (tag last) in place; the plaintext is the
    /// first `len - SEAL_TAG` bytes.
    ///
    /// # Errors
    ///
    /// When the message, its counter or `aad` were changed, or it was not
    /// sealed with the peer's key of this session.
    pub fn open(&self, counter: u64, aad: &[u8], sealed: &mut [u8]) -> Result<usize, PairError> {
        let n = self
            .recv
            .open_in_place(nonce(counter), Aad::from(aad), sealed)
            .map_err(|_| PairError("message does not open: changed on the way, or not sealed by its source".into()))?
            .len();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (PairKeys, PairKeys) {
        let (a, b) = (Identity::generate(), Identity::generate());
        let (start, first) = initiate(&a, &b.public()).unwrap();
        let (kb, answer) = respond(&b, &a.public(), &first).unwrap();
        let ka = start.finish(&answer).unwrap();
        (ka, kb)
    }

    #[test]
    fn both_sides_agree_and_each_direction_has_its_key() {
        let (ka, kb) = pair();
        assert_eq!(ka.id, kb.id);
        let mut m = b"hello".to_vec();
        ka.seal(0, b"head", &mut m);
        assert_eq!(m.len(), 5 + SEAL_TAG);
        let mut copy = m.clone();
        assert_eq!(kb.open(0, b"head", &mut copy).unwrap(), 5);
        assert_eq!(&copy[..5], b"hello");
        // Wrong counter, wrong head, a flipped bit, the wrong direction.
        assert!(kb.open(1, b"head", &mut m.clone()).is_err());
        assert!(kb.open(0, b"hEad", &mut m.clone()).is_err());
        let mut flipped = m.clone();
        flipped[2] ^= 1;
        assert!(kb.open(0, b"head", &mut flipped).is_err());
        assert!(ka.open(0, b"head", &mut m.clone()).is_err());
    }

    #[test]
    fn a_confirmation_opens_only_with_the_peers_key() {
        let (ka, kb) = pair();
        assert!(kb.confirms(&ka.confirmation()));
        assert!(!kb.confirms(&kb.confirmation()), "each direction its own key");
        assert!(!ka.confirms(&ka.confirmation()), "each direction its own key");
        let mut bad = ka.confirmation();
        bad[0] ^= 1;
        assert!(!kb.confirms(&bad));
        assert!(!kb.confirms(b"short"));
    }

    #[test]
    fn seal_into_matches_seal() {
        let (ka, kb) = pair();
        let mut buf = vec![7u8; 10 + SEAL_TAG];
        ka.seal_into(3, b"x", &mut buf, 10);
        assert_eq!(kb.open(3, b"x", &mut buf).unwrap(), 10);
        assert_eq!(&buf[..10], &[7u8; 10]);
    }

    #[test]
    fn only_the_pinned_keys_holders_complete_it() {
        let (a, b, mallory) = (Identity::generate(), Identity::generate(), Identity::generate());
        // Mallory claims to be a: b pins a's key, so her message fails.
        let (_, first) = initiate(&mallory, &b.public()).unwrap();
        assert!(respond(&b, &a.public(), &first).is_err());
        // Mallory answers in b's name: a's handshake fails.
        let (start, first) = initiate(&a, &b.public()).unwrap();
        assert!(respond(&mallory, &a.public(), &first).is_err());
        let (_, answer) = {
            let (s2, f2) = initiate(&a, &mallory.public()).unwrap();
            drop(s2);
            respond(&mallory, &a.public(), &f2).unwrap()
        };
        assert!(start.finish(&answer).is_err());
    }

    #[test]
    fn a_replayed_first_message_gives_keys_nobody_else_has() {
        let (a, b) = (Identity::generate(), Identity::generate());
        let (start, first) = initiate(&a, &b.public()).unwrap();
        let (kb1, answer) = respond(&b, &a.public(), &first).unwrap();
        let ka = start.finish(&answer).unwrap();
        // A relay replays the first message: b makes a fresh session whose
        // keys a never learns (b's ephemeral key is new).
        let (kb2, _) = respond(&b, &a.public(), &first).unwrap();
        assert_ne!(kb1.id, kb2.id);
        let mut m = b"x".to_vec();
        kb2.seal(0, b"", &mut m);
        assert!(ka.open(0, b"", &mut m).is_err());
    }
}
