//! Link security: mutual authentication and encryption of a [`Link`] with
//! the Noise protocol framework (the `snow` crate), pattern
//! `Noise_XX_25519_AESGCM_SHA256`. No cryptography is done here: snow
//! and the ring and RustCrypto primitives under it do all of it; this module only
//! moves snow's messages over frames and decides whom to trust.
//!
//! # Identities and trust
//!
//! Each machine has an [`Identity`], a Curve25519 key pair kept in a key
//! file (see [`Identity::load`]), and a [`Trust`]: the public keys of its
//! peers, pinned by the deployment file, each with its machine id.
//! [`secure`] runs the handshake on a freshly dialed or accepted link and
//! returns the secured link and the [`PeerInfo`] of the other side: which
//! pinned machine it proved to be. Neither side knows in advance which
//! machine it will meet (the acceptor does not know who dials, the dialer
//! knows only an address), so both accept any pinned key and report whose
//! it is; the caller checks that against what the peer claims afterwards
//! (the router's `Hello`).
//!
//! # The handshake
//!
//! XX, so that both static keys travel encrypted and each side proves it
//! holds its private key:
//!
//! ```text
//! initiator                                  responder
//!   -> e                                       (msg 1, 32 bytes)
//!   <- e, ee, s, es, {hello}                   (msg 2)
//!      check: responder's key is pinned
//!   -> s, se, {hello}                          (msg 3)
//!                                              check: initiator's key is pinned
//!   <- {verdict}                               (first transport message)
//! ```
//!
//! Each handshake message is one frame of the underlying link. `hello` is
//! 5 bytes: a version (1) and the largest frame the sender's underlying
//! link carries (u32, big-endian), from which both sides derive the same
//! size of transport messages. The prologue binds the handshake to this
//! protocol. The initiator checks the responder's key before it sends its
//! own, so an unknown responder never learns who dialed it. The verdict
//! (1 = accepted, 0 = refused) exists so that a refused initiator learns
//! why, [`SecureError::Refused`], instead of seeing the link close after
//! a handshake that looked complete. The whole exchange has
//! [`HANDSHAKE_TIMEOUT`]; an unknown key is refused before [`secure`]
//! returns, so no application frame from an unknown peer is ever read.
//! On a link from [`listen_secure`](crate::listen_secure) the handshake
//! runs under the pre-authentication limits (frames of at most
//! [`HANDSHAKE_MSG_MAX`] bytes, 16 KiB in all, a slot newer connections
//! may take); [`secure`] lifts them once the peer's key is pinned.
//!
//! # Frames on a secured link
//!
//! Noise messages are at most 65535 bytes, frames up to
//! [`LinkOptions::max_frame`](crate::LinkOptions::max_frame), so one frame
//! is one or more transport messages, each carried by one frame of the
//! underlying link. The first message's plaintext starts with the frame's
//! length and the length of its clear body (u32 each, big-endian), the
//! rest is frame bytes in order: the
//! receiver learns the size first, refuses a frame over its limit before
//! buffering it, allocates once, and decrypts every message straight into
//! place. Message boundaries and lengths are authenticated (the length is
//! inside the ciphertext; snow's nonces make reordering, dropping or
//! replaying a message a decryption failure), so a relay can neither
//! split, merge nor cut frames.
//!
//! A frame whose body is sealed end to end already ([`Frame::sealed`],
//! the mesh's pair sessions) and at least 1 KiB long is not encrypted
//! twice: its head goes in transport messages as above, saying how long
//! the clear body is, and the body follows as one message of the
//! underlying link, as it is. Its integrity is its receiver's to check
//! (the pair's AEAD binds it to the head), so a relay passes it on
//! without an AES pass; a body changed on the wire fails there, not here.
//!
//! [`Frame::sealed`]: crate::Frame::sealed
//!
//! Messages are at most `min(65535, both sides' underlying max_frame)`
//! bytes, which is why [`secure`] needs the [`LinkOptions`] the link was
//! made with (at least [`MIN_MAX_FRAME`] bytes) and why the hello carries
//! each side's limit. Frame limits keep their meaning: a frame over
//! `max_frame` is `InvalidInput` on send and `InvalidData` on receive.
//!
//! # Errors and closing
//!
//! A message that fails to decrypt, or breaks the framing above, is an
//! `InvalidData` error; the secured stream then ends and the sink refuses
//! further frames (`BrokenPipe`), because nothing after a forged message
//! can be trusted. Both halves drop their side of the underlying link, so
//! the connection closes once the caller drops the secured link.
//! `tx.close()` behaves as on the underlying link.
//!
//! # Costs
//!
//! AES-256-GCM from ring (AES-NI, carry-less multiply, VAES where the
//! processor has it): about 8 GB/s each way per core on this project's
//! machines, five times the portable ChaCha20-Poly1305 it replaced.
//! Per message: one copy in, one AES-GCM pass and 16 bytes of tag (snow
//! copies the plaintext into the output and encrypts in place; on
//! receive it copies the ciphertext into the frame's buffer and opens it
//! there, which is why that buffer has room for the tag). Ciphertexts are
//! cut from 256 KiB slabs reused across frames; a received frame is one
//! buffer of its size. The first message of a frame is gathered in a
//! reused 64 KiB scratch buffer, to put the length before the data; a
//! frame's later messages are sealed straight from its parts. Nonces are snow's:
//! a counter per direction, never reused; each link has fresh keys from
//! fresh ephemeral keys, and 2^64 messages per link is out of reach, so
//! there is no rekeying.
//!
//! The private key is held in memory as plain bytes (snow keeps its own
//! copies too); protect the process, and the key file (mode 0600, which
//! [`Identity::load`] insists on).

mod keys;
pub mod pair;
mod transport;

#[cfg(test)]
mod tests;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use snow::params::NoiseParams;
use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};
use snow::HandshakeState;
use tracing::debug;

use crate::link::{Link, LinkOptions};

pub use keys::{Identity, KeyError, PinError, PublicKey, Trust};

use keys::KEY_LEN;
use transport::{SecureSink, SecureStream, Secured};

/// The Noise protocol name; both sides must use the same.
const PROTOCOL: &str = "Noise_XX_25519_AESGCM_SHA256";

/// Mixed into the handshake hash, so a handshake for anything else
/// (another program using the same Noise pattern) cannot complete.
const PROLOGUE: &[u8] = b"mesh dial secure link";

/// Version of the framing and hello described in the module doc.
const VERSION: u8 = 2;

/// Bytes of the hello payload: version, then u32 max frame.
const HELLO_LEN: usize = 5;

/// Verdict bytes of the first transport message from the responder.
const ACCEPTED: u8 = 1;
const REFUSED: u8 = 0;

/// Largest Noise message, including its tag (Noise spec, section 3).
pub(crate) const NOISE_MAX: usize = 65535;

/// Bytes of the authentication tag on every transport message.
pub(crate) const TAG_LEN: usize = 16;

/// Bytes of the frame length at the head of a frame's first message.
pub(crate) const HEADER_LEN: usize = 8;

/// How long the whole handshake may take, verdict included.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Smallest `max_frame` a link to be secured may have: the handshake's
/// second message (about 100 bytes) must fit in one frame, and transport
/// messages should carry more than their own overhead.
pub const MIN_MAX_FRAME: usize = 256;

/// Largest handshake message we ever send: msg 2 is two keys, two tags
/// and the hello.
pub(crate) const HANDSHAKE_MSG_MAX: usize = 2 * KEY_LEN + 2 * TAG_LEN + HELLO_LEN;

pub(crate) fn params() -> NoiseParams {
    PROTOCOL.parse().expect("a valid Noise protocol name")
}

/// A snow builder for [`PROTOCOL`]: ring for the cipher and the hash
/// (AES-GCM with AES-NI and carry-less multiply, several times faster
/// than a portable ChaCha20-Poly1305 on the links that carry bulk data),
/// RustCrypto for Curve25519 and random numbers, which ring's resolver
/// does not offer.
pub(crate) fn builder() -> snow::Builder<'static> {
    let resolver = FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver));
    snow::Builder::with_resolver(params(), Box::new(resolver))
}

/// Which side of the handshake this end plays: the dialer initiates, the
/// acceptor responds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The side that dialed; speaks first.
    Initiator,
    /// The side that accepted.
    Responder,
}

/// Who is at the other end of a secured link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The machine its key is pinned for.
    pub machine: String,
    /// The key it proved it holds.
    pub key: PublicKey,
}

/// Why a link could not be secured. Every message names the remote
/// address as the underlying link gives it (e.g. `tcp!127.0.0.1!40312`).
///
/// Converts into an `io::Error` of a matching kind, keeping the message.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    /// The peer proved it holds a key that is not pinned. Nothing it sent
    /// after the handshake was read.
    #[error("unknown key {} from {remote}", key.fingerprint())]
    UnknownKey {
        /// The peer's address.
        remote: String,
        /// Its key, for a person who wants to pin it.
        key: PublicKey,
    },
    /// The responder does not accept our key.
    #[error("{remote} refused our key {}", ours.fingerprint())]
    Refused {
        /// The peer's address.
        remote: String,
        /// This machine's key.
        ours: PublicKey,
    },
    /// The handshake did not finish within [`HANDSHAKE_TIMEOUT`].
    #[error("handshake with {remote} timed out after {} s", HANDSHAKE_TIMEOUT.as_secs())]
    Timeout {
        /// The peer's address.
        remote: String,
    },
    /// The peer sent something that is not the next handshake message:
    /// not a mesh peer, another version, or a forgery.
    #[error("bad handshake message from {remote}: {reason}")]
    BadMessage {
        /// The peer's address.
        remote: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The peer closed the link before the handshake finished. A peer
    /// that does not trust our key does this.
    #[error("{remote} closed the link during the handshake (does it pin our key?)")]
    Closed {
        /// The peer's address.
        remote: String,
    },
    /// The link failed under the handshake, or cannot be secured (its
    /// `max_frame` is below [`MIN_MAX_FRAME`]).
    #[error("handshake with {remote}: {source}")]
    Io {
        /// The peer's address.
        remote: String,
        /// What failed.
        source: io::Error,
    },
}

impl SecureError {
    /// The peer's address.
    #[must_use]
    pub fn remote(&self) -> &str {
        match self {
            SecureError::UnknownKey { remote, .. }
            | SecureError::Refused { remote, .. }
            | SecureError::Timeout { remote }
            | SecureError::BadMessage { remote, .. }
            | SecureError::Closed { remote }
            | SecureError::Io { remote, .. } => remote,
        }
    }

    /// The `io::ErrorKind` this error converts to.
    #[must_use]
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            SecureError::UnknownKey { .. } | SecureError::Refused { .. } => io::ErrorKind::PermissionDenied,
            SecureError::Timeout { .. } => io::ErrorKind::TimedOut,
            SecureError::BadMessage { .. } => io::ErrorKind::InvalidData,
            SecureError::Closed { .. } => io::ErrorKind::UnexpectedEof,
            SecureError::Io { source, .. } => source.kind(),
        }
    }
}

impl From<SecureError> for io::Error {
    fn from(e: SecureError) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

/// Authenticates both ends of `link` and encrypts everything after.
///
/// `opts` are the options the link was made with (its `max_frame` is the
/// limit of secured frames too, and bounds transport messages); `me` is
/// this machine; `trust` the keys accepted from the other side; `role`
/// says whether this end dialed (`Initiator`) or accepted (`Responder`).
/// On success the returned link carries frames as before, encrypted, with
/// the same `remote`, `local` and `uid`.
///
/// Run it off any accept loop (it waits for the peer, up to
/// [`HANDSHAKE_TIMEOUT`]). Cancel-safe in the sense that dropping the
/// future drops the link.
///
/// # Errors
///
/// See [`SecureError`]; the link is closed (dropped) on every error. A
/// responder that refuses an unknown key tells the initiator so before
/// closing.
pub async fn secure(
    link: Link,
    opts: &LinkOptions,
    me: &Identity,
    trust: &Trust,
    role: Role,
) -> Result<(Link, PeerInfo), SecureError> {
    let remote = link.remote.clone();
    if opts.max_frame < MIN_MAX_FRAME {
        return Err(SecureError::Io {
            remote,
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("max_frame {} is too small for a secured link (at least {MIN_MAX_FRAME})", opts.max_frame),
            ),
        });
    }
    let mut hs = Handshake { link, remote, max_frame: opts.max_frame.min(u32::MAX as usize) };
    let done = tokio::time::timeout(HANDSHAKE_TIMEOUT, hs.run(me, trust, role)).await;
    let Handshake { link, remote, .. } = hs;
    // Logged at debug level only: the caller decides what a refusal is
    // worth (the router warns, and shows it in the terminal's status).
    let (secured, peer, rx_nonce, tx_nonce, message_max) = match done {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            debug!(%remote, "secure link failed: {e}");
            return Err(e);
        }
        Err(_) => {
            let e = SecureError::Timeout { remote };
            debug!("secure link failed: {e}");
            return Err(e);
        }
    };
    // The peer is pinned: lift the pre-authentication limits.
    link.authenticated();
    let Link { tx, rx, remote, local, uid, gate } = link;
    let secured = Arc::new(secured);
    let limit = opts.max_frame.min(u32::MAX as usize);
    let link = Link {
        tx: Box::pin(SecureSink::new(tx, secured.clone(), tx_nonce, limit, message_max)),
        rx: Box::pin(SecureStream::new(rx, secured, rx_nonce, limit, message_max)),
        remote,
        local,
        uid,
        gate,
    };
    Ok((link, peer))
}

/// What a finished handshake yields: the shared state, the peer, the
/// next receive and send nonces, and the largest message size.
type Finished = (Secured, PeerInfo, u64, u64, usize);

/// A handshake in progress over `link`.
struct Handshake {
    link: Link,
    remote: String,
    /// This side's frame limit, announced in the hello.
    max_frame: usize,
}

impl Handshake {
    async fn run(&mut self, me: &Identity, trust: &Trust, role: Role) -> Result<Finished, SecureError> {
        let builder = builder().local_private_key(me.private_bytes()).and_then(|b| b.prologue(PROLOGUE));
        let built = builder.and_then(|b| match role {
            Role::Initiator => b.build_initiator(),
            Role::Responder => b.build_responder(),
        });
        // Only a broken snow build can fail here: our parameters and key
        // sizes are fixed.
        let mut hs = built.map_err(|e| self.io(io::Error::other(format!("noise setup: {e}"))))?;
        let hello = self.hello();
        match role {
            Role::Initiator => {
                self.write(&mut hs, &[]).await?; // -> e
                let theirs = self.read(&mut hs).await?; // <- e, ee, s, es, {hello}
                let peer_max = self.parse_hello(&theirs)?;
                let peer = self.check_key(&hs, trust)?;
                self.write(&mut hs, &hello).await?; // -> s, se, {hello}
                let secured = self.transport(hs)?;
                let verdict = self.recv().await?;
                let mut buf = [0u8; 1];
                match secured.state.read_message(0, &verdict, &mut buf) {
                    Ok(1) if buf[0] == ACCEPTED => {}
                    Ok(1) if buf[0] == REFUSED => {
                        return Err(SecureError::Refused { remote: self.remote.clone(), ours: me.public() })
                    }
                    Ok(_) => return Err(self.bad("verdict is not accept or refuse")),
                    Err(e) => return Err(self.bad(format!("verdict: {e}"))),
                }
                Ok((secured, peer, 1, 0, self.message_max(peer_max)))
            }
            Role::Responder => {
                let first = self.read(&mut hs).await?; // -> e
                if !first.is_empty() {
                    return Err(self.bad("first message carries a payload"));
                }
                self.write(&mut hs, &hello).await?; // <- e, ee, s, es, {hello}
                let theirs = self.read(&mut hs).await?; // -> s, se, {hello}
                let peer_max = self.parse_hello(&theirs)?;
                let checked = self.check_key(&hs, trust);
                let secured = self.transport(hs)?;
                let verdict = if checked.is_ok() { ACCEPTED } else { REFUSED };
                let mut msg = [0u8; 1 + TAG_LEN];
                let n = secured
                    .state
                    .write_message(0, &[verdict], &mut msg)
                    .map_err(|e| self.io(io::Error::other(format!("noise: {e}"))))?;
                let sent = self.send(Bytes::copy_from_slice(&msg[..n])).await;
                // An unknown peer hears the verdict if it can, but the
                // refusal is what we report either way.
                let peer = checked?;
                sent?;
                Ok((secured, peer, 0, 1, self.message_max(peer_max)))
            }
        }
    }

    /// Our hello: version and frame limit.
    fn hello(&self) -> [u8; HELLO_LEN] {
        let mut h = [0u8; HELLO_LEN];
        h[0] = VERSION;
        h[1..].copy_from_slice(&(self.max_frame as u32).to_be_bytes());
        h
    }

    /// The peer's frame limit from its hello.
    fn parse_hello(&self, h: &[u8]) -> Result<usize, SecureError> {
        match h {
            [VERSION, a, b, c, d] => {
                let max = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
                if max < MIN_MAX_FRAME {
                    return Err(self.bad(format!("peer's max_frame {max} is below {MIN_MAX_FRAME}")));
                }
                Ok(max)
            }
            [v, ..] if *v != VERSION => Err(self.bad(format!("peer speaks version {v}, we speak {VERSION}"))),
            _ => Err(self.bad(format!("hello of {} bytes, want {HELLO_LEN}", h.len()))),
        }
    }

    /// Largest transport message both sides' links carry.
    fn message_max(&self, peer_max: usize) -> usize {
        NOISE_MAX.min(self.max_frame).min(peer_max)
    }

    /// The peer's static key, which the handshake has just proved it
    /// holds, if pinned.
    fn check_key(&self, hs: &HandshakeState, trust: &Trust) -> Result<PeerInfo, SecureError> {
        let key = hs
            .get_remote_static()
            .and_then(|k| <[u8; KEY_LEN]>::try_from(k).ok())
            .map(PublicKey::from_bytes)
            .ok_or_else(|| self.bad("no static key"))?;
        match trust.machine(&key) {
            Some(m) => Ok(PeerInfo { machine: m.to_owned(), key }),
            None => Err(SecureError::UnknownKey { remote: self.remote.clone(), key }),
        }
    }

    fn transport(&self, hs: HandshakeState) -> Result<Secured, SecureError> {
        hs.into_stateless_transport_mode()
            .map(Secured::new)
            .map_err(|e| self.bad(format!("handshake not finished: {e}")))
    }

    /// Writes the next handshake message with `payload` and sends it.
    async fn write(&mut self, hs: &mut HandshakeState, payload: &[u8]) -> Result<(), SecureError> {
        let mut msg = [0u8; HANDSHAKE_MSG_MAX];
        let n = hs.write_message(payload, &mut msg).map_err(|e| self.io(io::Error::other(format!("noise: {e}"))))?;
        self.send(Bytes::copy_from_slice(&msg[..n])).await
    }

    /// Receives the next handshake message; returns its payload.
    async fn read(&mut self, hs: &mut HandshakeState) -> Result<Vec<u8>, SecureError> {
        let msg = self.recv().await?;
        let mut payload = [0u8; HANDSHAKE_MSG_MAX];
        if msg.len() > HANDSHAKE_MSG_MAX {
            return Err(self.bad(format!("{} bytes, too long for a handshake message", msg.len())));
        }
        let n = hs.read_message(&msg, &mut payload).map_err(|e| self.bad(format!("{} bytes: {e}", msg.len())))?;
        Ok(payload[..n].to_vec())
    }

    async fn send(&mut self, msg: Bytes) -> Result<(), SecureError> {
        self.link.tx.send(msg.into()).await.map_err(|e| self.io(e))
    }

    async fn recv(&mut self) -> Result<Bytes, SecureError> {
        match self.link.rx.next().await {
            Some(Ok(msg)) => Ok(msg.into_bytes()),
            Some(Err(e)) if e.kind() == io::ErrorKind::InvalidData => Err(self.bad(e.to_string())),
            Some(Err(e)) => Err(self.io(e)),
            None => Err(SecureError::Closed { remote: self.remote.clone() }),
        }
    }

    fn bad(&self, reason: impl Into<String>) -> SecureError {
        SecureError::BadMessage { remote: self.remote.clone(), reason: reason.into() }
    }

    fn io(&self, source: io::Error) -> SecureError {
        SecureError::Io { remote: self.remote.clone(), source }
    }
}
