//! The envelope: what every frame on every link carries, and its encoding.
//!
//! On the wire an envelope is one CBOR array of two items: a map with every
//! field but the data, then the data as a CBOR byte string. Decoding slices
//! the data out of the received frame, so payloads travel as [`Bytes`]
//! without a copy from the socket buffer to the service.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::gossip::Announce;
use crate::path::{Addr, MachineId, ServiceName};

pub use crate::path::HOP_LIMIT;
/// The longest return path accepted.
pub const MAX_RETURN_PATH: usize = 32;
/// The largest message payload. Larger writes are refused with
/// [`crate::error::ETOOBIG`].
pub const MAX_MSG: usize = 8 << 20;
/// The largest frame a link accepts: a maximal payload plus its header.
pub const MAX_FRAME: usize = MAX_MSG + (64 << 10);

/// Link options every mesh link uses, a router's or a local client's.
pub fn link_options() -> dial::LinkOptions {
    dial::LinkOptions { max_frame: MAX_FRAME }
}

/// One message between two endpoints of the mesh.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// Unique per sending router, for tracing.
    pub id: u64,
    /// The endpoint that sent it: errors and credit go back here.
    pub src: Addr,
    /// Where it goes.
    pub dst: Addr,
    /// The return path: replies go to its first entry, carrying the rest.
    pub reply: Vec<Addr>,
    /// Where replies go once the return path is used up; `None` means `src`.
    pub origin: Option<Addr>,
    /// The machines crossed so far, the sender's first.
    pub via: Vec<MachineId>,
    /// On an envelope to a service (one that may open a conversation):
    /// the name of the user it is sent for on the source's machine, which
    /// the serving machine's `allow` rules may name; `None` for the
    /// router itself. Set by the source's router, never by a client.
    pub user: Option<Arc<str>>,
    /// Set when `data` is sealed end to end for the destination's machine
    /// (see [`crate::pairs`]): everything but `id` and `via` is bound to
    /// it, and `data` is the ciphertext with its tag.
    pub seal: Option<Seal>,
    pub kind: Kind,
    pub data: Bytes,
}

/// How an envelope is sealed end to end: the pair session and the
/// message's number in it (the nonce, never used twice).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    pub session: u64,
    pub n: u64,
}

/// What an envelope means.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Kind {
    /// One message of a conversation.
    Data,
    /// End of input: the writer closed; no more data on this stream.
    Eof,
    /// The sending endpoint is gone.
    Hangup,
    /// The reader was interrupted (Ctrl-C): the service may stop the work
    /// in hand. The conversation goes on.
    Cancel,
    /// Delivery failed, or the peer failed; a Plan 9 error string.
    Error(String),
    /// The receiver consumed this many bytes of window: the sender may send more.
    Credit(u32),
    /// The first frame on a link, each way.
    Hello(Hello),
    /// Path-vector routes from the neighbour at the other end of the link.
    Routes(Announce),
    /// Asks the neighbour for its full table (a gap in announcements).
    Resync,
    /// Liveness and round-trip time; carries the sender's latest gossip
    /// sequence number to this neighbour, so a lost update is noticed.
    Ping { stamp: u64, seq: u64 },
    /// Answers a ping with its stamp.
    Pong { stamp: u64 },
    /// A local client asks the router to offer a service it serves.
    Offer(ServiceName),
    /// A local client withdraws a service it offered.
    Withdraw(ServiceName),
    /// On a link with a session: the frames read so far from the other
    /// side, which it may drop from its replay buffer. Not itself
    /// numbered, kept or resent (see [`crate::session`]).
    Ack(u64),
    /// The handshake of an end-to-end pair session, between two routers'
    /// reserved addresses, relayed like data (see [`crate::pairs`]).
    Pair(PairMsg),
}

/// One step of an end-to-end pair handshake (Noise KK, [`dial::pair`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PairMsg {
    /// The initiator's first message, one per key it pins for the
    /// responder (a machine may have several while its key rolls over).
    Init(Vec<serde_bytes::ByteBuf>),
    /// The responder's answer to the one that opened.
    Answer(serde_bytes::ByteBuf),
    /// The responder cannot answer: it pins no key of the initiator, or
    /// none opened the message. Unauthenticated: it only ends the wait.
    Refused(String),
    /// The initiator completed session `session`: its proof, which lets
    /// the responder send under it ([`dial::pair::PairKeys::confirmation`]).
    Confirm { session: u64, proof: serde_bytes::ByteBuf },
}

/// Introduces one side of a link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub machine: MachineId,
    pub version: u32,
    /// From a router to a local client: the block of conversation numbers
    /// the client allocates from. `None` between routers.
    pub client: Option<u32>,
    /// Between routers: the session the link starts or resumes (see
    /// [`crate::session`]); `None` for a link that does not resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionMsg>,
}

impl Hello {
    /// A hello with no session part.
    pub fn new(machine: MachineId, client: Option<u32>) -> Hello {
        Hello { machine, version: VERSION, client, session: None }
    }
}

/// A session's part of the handshake (doc/resume.md): starting one on a
/// fresh link, and the three steps of resuming one on a new connection.
/// Sent only inside a link that is encrypted or local, so the nonces are
/// known to the two ends alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SessionMsg {
    /// Each side of a fresh link: its half of the session's secret, and
    /// the number of its router's run (a restarted router is a new run,
    /// never the old session).
    New { nonce: serde_bytes::ByteBuf, run: u64 },
    /// Dialer, on a new connection: resume session `id`, of which it has
    /// read `received` frames; `nonce` is fresh.
    Resume { id: u64, received: u64, nonce: serde_bytes::ByteBuf },
    /// Acceptor: it has read `received` frames, and proves that it holds
    /// the session's key over both nonces and both counts.
    Resumed { received: u64, nonce: serde_bytes::ByteBuf, proof: serde_bytes::ByteBuf },
    /// Acceptor: no such session here (any more); the dialer ends its own.
    Refused(String),
    /// Dialer: its own proof; the session goes on once it is checked.
    Proof(serde_bytes::ByteBuf),
}

/// The protocol version spoken; a peer with another is refused.
pub const VERSION: u32 = 1;

/// Room reserved for an encoded header: most fit, none has to.
const HEAD_CAPACITY: usize = 128;

/// The header as decoded. [`HeaderRef`] writes the same fields by
/// reference, so encoding copies nothing but bytes.
#[derive(Deserialize)]
struct Header {
    #[serde(rename = "i")]
    id: u64,
    #[serde(rename = "s")]
    src: Addr,
    #[serde(rename = "d")]
    dst: Addr,
    #[serde(rename = "r", default)]
    reply: Vec<Addr>,
    #[serde(rename = "o", default)]
    origin: Option<Addr>,
    #[serde(rename = "v")]
    via: Vec<MachineId>,
    #[serde(rename = "u", default)]
    user: Option<String>,
    #[serde(rename = "e", default)]
    seal: Option<Seal>,
    #[serde(rename = "k")]
    kind: Kind,
}

#[derive(Serialize)]
struct HeaderRef<'a> {
    #[serde(rename = "i")]
    id: u64,
    #[serde(rename = "s")]
    src: &'a Addr,
    #[serde(rename = "d")]
    dst: &'a Addr,
    #[serde(rename = "r", skip_serializing_if = "<[Addr]>::is_empty")]
    reply: &'a [Addr],
    #[serde(rename = "o", skip_serializing_if = "Option::is_none")]
    origin: &'a Option<Addr>,
    #[serde(rename = "v")]
    via: &'a [MachineId],
    #[serde(rename = "u", skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(rename = "e", skip_serializing_if = "Option::is_none")]
    seal: Option<&'a Seal>,
    #[serde(rename = "k")]
    kind: &'a Kind,
}

/// What a seal binds: every field a relay must not change, and the seal
/// itself. `id` (for tracing) and `via` (each relay adds itself) are
/// left out.
#[derive(Serialize)]
struct BoundRef<'a> {
    s: &'a Addr,
    d: &'a Addr,
    r: &'a [Addr],
    o: &'a Option<Addr>,
    u: Option<&'a str>,
    e: &'a Seal,
    k: &'a Kind,
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed envelope: {0}")]
    Malformed(String),
    #[error("malformed envelope: {0} entries in {1}, limit {2}")]
    TooMany(usize, &'static str, usize),
}

impl Envelope {
    /// A data envelope with an empty history.
    pub fn new(id: u64, src: Addr, dst: Addr, kind: Kind, data: Bytes) -> Envelope {
        Envelope { id, src, dst, reply: Vec::new(), origin: None, via: Vec::new(), user: None, seal: None, kind, data }
    }

    /// Where replies to this envelope go, with the return path they carry:
    /// the first entry of the return path, else the origin, else the source.
    pub fn reply_target(&self) -> (Addr, Vec<Addr>) {
        match self.reply.split_first() {
            Some((first, rest)) => (first.clone(), rest.to_vec()),
            None => (self.origin.clone().unwrap_or_else(|| self.src.clone()), Vec::new()),
        }
    }

    /// Encodes into one frame.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(HEAD_CAPACITY + self.data.len());
        self.put_head(&mut buf);
        buf.extend_from_slice(&self.data);
        buf.freeze()
    }

    /// The same frame as [`Envelope::encode`], in two parts: the header
    /// and the data itself, not copied. Links send it as one frame.
    pub fn encode_frame(&self) -> dial::Frame {
        let mut head = BytesMut::with_capacity(HEAD_CAPACITY);
        self.put_head(&mut head);
        if self.seal.is_some() {
            // Ciphertext already: a secured link need not encrypt it again.
            return dial::Frame::with_sealed_body(head.freeze(), self.data.clone());
        }
        dial::Frame::new(head.freeze(), self.data.clone())
    }

    /// Everything of the frame before the data bytes.
    fn put_head(&self, buf: &mut BytesMut) {
        let hdr = HeaderRef {
            id: self.id,
            src: &self.src,
            dst: &self.dst,
            reply: &self.reply,
            origin: &self.origin,
            via: &self.via,
            user: self.user.as_deref(),
            seal: self.seal.as_ref(),
            kind: &self.kind,
        };
        buf.put_u8(0x82); // CBOR array of 2
        let mut w = buf.writer();
        // Writing CBOR into memory fails only on a serializer bug.
        ciborium::into_writer(&hdr, &mut w).expect("CBOR encoding to memory");
        put_bstr_head(w.into_inner(), self.data.len());
    }

    /// Decodes one frame; the data is a slice of `frame`, not a copy.
    pub fn decode(frame: Bytes) -> Result<Envelope, DecodeError> {
        let (hdr, len, from) = Envelope::header(&frame)?;
        if frame.len() - from != len {
            return Err(DecodeError::Malformed("data length does not match the frame".into()));
        }
        Ok(hdr.with_data(frame.slice(from..)))
    }

    /// Decodes a frame as a link delivers it: in one part, or in two whose
    /// second is the data (a secured link's clear body), taken as it is.
    pub fn decode_frame(frame: dial::Frame) -> Result<Envelope, DecodeError> {
        if frame.body.is_empty() {
            return Envelope::decode(frame.head);
        }
        let (hdr, len, from) = Envelope::header(&frame.head)?;
        if from != frame.head.len() || len != frame.body.len() {
            return Err(DecodeError::Malformed("data length does not match the frame".into()));
        }
        Ok(hdr.with_data(frame.body))
    }

    /// The header at the start of `frame`, its data's length, and where
    /// the data starts.
    fn header(frame: &[u8]) -> Result<(Header, usize, usize), DecodeError> {
        let bad = |s: &str| DecodeError::Malformed(s.to_string());
        if frame.first() != Some(&0x82) {
            return Err(bad("not a 2-item array"));
        }
        let mut rest = &frame[1..];
        let hdr: Header = ciborium::from_reader(&mut rest).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if hdr.via.len() > HOP_LIMIT {
            return Err(DecodeError::TooMany(hdr.via.len(), "via", HOP_LIMIT));
        }
        if hdr.reply.len() > MAX_RETURN_PATH {
            return Err(DecodeError::TooMany(hdr.reply.len(), "return path", MAX_RETURN_PATH));
        }
        if hdr.user.as_ref().is_some_and(|u| !crate::policy::is_user_name(u)) {
            return Err(bad("user is not a user name"));
        }
        let start = frame.len() - rest.len();
        let (len, head) = bstr_head(rest).ok_or_else(|| bad("data is not a byte string"))?;
        Ok((hdr, len, start + head))
    }
}

impl Header {
    fn with_data(self, data: Bytes) -> Envelope {
        Envelope {
            id: self.id,
            src: self.src,
            dst: self.dst,
            reply: self.reply,
            origin: self.origin,
            via: self.via,
            user: self.user.map(Arc::from),
            seal: self.seal,
            kind: self.kind,
            data,
        }
    }
}

impl Envelope {
    /// Writes to `out` (cleared first) what a seal `seal` on this
    /// envelope binds: the associated data of its AEAD.
    pub fn bound_head(&self, seal: &Seal, out: &mut Vec<u8>) {
        out.clear();
        let b = BoundRef {
            s: &self.src,
            d: &self.dst,
            r: &self.reply,
            o: &self.origin,
            u: self.user.as_deref(),
            e: seal,
            k: &self.kind,
        };
        // Writing CBOR into memory fails only on a serializer bug.
        ciborium::into_writer(&b, out).expect("CBOR encoding to memory");
    }
}

fn put_bstr_head(buf: &mut BytesMut, len: usize) {
    const MAJOR: u8 = 2 << 5;
    match len {
        0..=23 => buf.put_u8(MAJOR | len as u8),
        24..=0xff => {
            buf.put_u8(MAJOR | 24);
            buf.put_u8(len as u8)
        }
        0x100..=0xffff => {
            buf.put_u8(MAJOR | 25);
            buf.put_u16(len as u16)
        }
        0x1_0000..=0xffff_ffff => {
            buf.put_u8(MAJOR | 26);
            buf.put_u32(len as u32)
        }
        _ => {
            buf.put_u8(MAJOR | 27);
            buf.put_u64(len as u64)
        }
    }
}

/// Reads a definite-length byte-string head: (length, head size).
fn bstr_head(b: &[u8]) -> Option<(usize, usize)> {
    let first = *b.first()?;
    if first >> 5 != 2 {
        return None;
    }
    let info = first & 0x1f;
    let (len, head) = match info {
        0..=23 => (info as u64, 1),
        24 => (*b.get(1)? as u64, 2),
        25 => (u16::from_be_bytes(b.get(1..3)?.try_into().ok()?) as u64, 3),
        26 => (u32::from_be_bytes(b.get(1..5)?.try_into().ok()?) as u64, 5),
        27 => (u64::from_be_bytes(b.get(1..9)?.try_into().ok()?), 9),
        _ => return None,
    };
    Some((usize::try_from(len).ok()?, head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        let mut e = Envelope::new(
            7,
            Addr::parse("/n/a/svc/pty/1").unwrap(),
            Addr::parse("/svc/parser").unwrap(),
            Kind::Data,
            Bytes::from(vec![0xab; 300]),
        );
        e.reply = vec![Addr::parse("/svc/gpu").unwrap(), Addr::parse("/n/a/svc/display").unwrap()];
        e.via = vec!["a".parse().unwrap(), "b".parse().unwrap()];
        e
    }

    #[test]
    fn round_trip_without_copy() {
        let e = sample();
        let frame = e.encode();
        let d = Envelope::decode(frame.clone()).unwrap();
        assert_eq!(d, e);
        // The data is a view into the frame.
        assert_eq!(d.data.as_ptr(), frame[frame.len() - 300..].as_ptr());
    }

    #[test]
    fn the_two_part_frame_is_the_same_frame_with_the_data_shared() {
        let e = sample();
        let f = e.encode_frame();
        assert_eq!(f.body.as_ptr(), e.data.as_ptr(), "the data is not copied");
        assert_eq!(f.into_bytes(), e.encode());
    }

    #[test]
    fn whole_frame_is_plain_cbor() {
        let v: ciborium::Value = ciborium::from_reader(&sample().encode()[..]).unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(arr[1].as_bytes().unwrap().len(), 300);
    }

    #[test]
    fn reply_target_walks_the_return_path() {
        let e = sample();
        let (to, rest) = e.reply_target();
        assert_eq!(to.to_string(), "/svc/gpu");
        assert_eq!(rest, vec![Addr::parse("/n/a/svc/display").unwrap()]);
        let mut last = e.clone();
        last.reply.clear();
        assert_eq!(last.reply_target().0, e.src);
    }

    #[test]
    fn malformed_frames_are_errors() {
        let good = sample().encode();
        for bad in [
            Bytes::new(),
            Bytes::from_static(b"\x00garbage"),
            good.slice(..good.len() - 1),
            good.slice(..20),
            Bytes::from([&good[..], b"x"].concat()),
        ] {
            assert!(Envelope::decode(bad).is_err());
        }
        // Valid CBOR, wrong types.
        let mut buf = vec![0x82];
        ciborium::into_writer(&ciborium::Value::Text("hi".into()), &mut buf).unwrap();
        buf.push(0x40);
        assert!(Envelope::decode(Bytes::from(buf)).is_err());
    }
}
