//! Links: a connection as a pair of frame sink and frame stream.
//!
//! Every transport ends up here. Byte-stream transports (mem, unix, tcp, and
//! later a security layer) go through [`framed`]: 4-byte big-endian length,
//! then the body, read with tokio-util's `LengthDelimitedCodec` and written
//! by [`crate::writer`], which hands big frames to the kernel uncopied. WebSocket maps
//! one frame to one binary message instead (see `ws`).

use std::fmt;
use std::io;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures::{Sink, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Decoder, FramedRead, LengthDelimitedCodec};

use crate::preauth::{Gate, PREAUTH_FRAME_MAX};

/// Sending half of a link. Frames are buffered: `feed` many, then `flush`
/// once to write them together.
pub type FrameSink = Pin<Box<dyn Sink<Frame, Error = io::Error> + Send>>;

/// A frame on its way out, in two parts that travel as one frame: a
/// caller puts its own header before a payload without copying the
/// payload into a new buffer. The receiver gets the parts joined.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub head: Bytes,
    pub body: Bytes,
    /// The body is sealed end to end already (the mesh's pairs): a
    /// secured link carries it as it is, encrypting only the head.
    pub sealed: bool,
}

impl Frame {
    pub fn new(head: Bytes, body: Bytes) -> Frame {
        Frame { head, body, sealed: false }
    }

    /// A frame whose body is ciphertext already, authenticated by its
    /// receiver together with the head (see [`Frame::sealed`]).
    pub fn with_sealed_body(head: Bytes, body: Bytes) -> Frame {
        Frame { head, body, sealed: true }
    }

    /// Bytes in the frame, both parts.
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame in one buffer: a copy only when both parts have bytes.
    pub fn into_bytes(self) -> Bytes {
        match (self.head.is_empty(), self.body.is_empty()) {
            (_, true) => self.head,
            (true, false) => self.body,
            (false, false) => {
                let mut b = BytesMut::with_capacity(self.len());
                b.extend_from_slice(&self.head);
                b.extend_from_slice(&self.body);
                b.freeze()
            }
        }
    }
}

/// A frame is equal to the bytes of its parts joined.
impl PartialEq<Bytes> for Frame {
    fn eq(&self, other: &Bytes) -> bool {
        self.len() == other.len()
            && self.head[..] == other[..self.head.len()]
            && self.body[..] == other[self.head.len()..]
    }
}

impl From<Bytes> for Frame {
    fn from(b: Bytes) -> Frame {
        Frame { head: b, body: Bytes::new(), sealed: false }
    }
}

impl From<&'static [u8]> for Frame {
    fn from(b: &'static [u8]) -> Frame {
        Bytes::from_static(b).into()
    }
}

impl From<&'static str> for Frame {
    fn from(s: &'static str) -> Frame {
        Bytes::from_static(s.as_bytes()).into()
    }
}

impl From<Vec<u8>> for Frame {
    fn from(b: Vec<u8>) -> Frame {
        Bytes::from(b).into()
    }
}

/// Receiving half of a link. Ends (`None`) when the peer closes cleanly.
/// A frame comes in one part ([`Frame::head`]) except from a secured link
/// that carried its body in clear: then in two, the body as it came off
/// the connection, not copied behind the head.
pub type FrameStream = Pin<Box<dyn Stream<Item = io::Result<Frame>> + Send>>;

/// Default largest frame: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// Bytes of encoded frames a sink buffers before `poll_ready` starts
/// writing them out. Large enough that a burst of small frames goes out in
/// one syscall, small enough to bound memory per link.
pub const WRITE_BUFFER: usize = 256 << 10;

/// Largest length the 4-byte length prefix can carry.
const LENGTH_PREFIX_MAX: usize = u32::MAX as usize;

/// One established connection, whatever the transport.
pub struct Link {
    /// Frames to the peer.
    pub tx: FrameSink,
    /// Frames from the peer.
    pub rx: FrameStream,
    /// The peer, for people: e.g. `tcp!127.0.0.2!40312`.
    pub remote: String,
    /// This end, for people: e.g. `tcp!127.0.0.1!17001`.
    pub local: String,
    /// The peer's uid, known only for Unix sockets (`SO_PEERCRED`).
    pub uid: Option<u32>,
    /// Pre-authentication limits, on links accepted by
    /// [`listen_secure`](crate::listen_secure) until the peer is
    /// authenticated (see `preauth`).
    pub(crate) gate: Option<Gate>,
}

impl Link {
    /// Lifts the pre-authentication limits of a link accepted by
    /// [`listen_secure`](crate::listen_secure) (frames of a handshake's
    /// size, 16 KiB in all, a slot that newer connections can take):
    /// the caller has authenticated the peer. [`secure`](crate::secure)
    /// calls it on success; a caller that trusts the link some other way
    /// calls it itself. Does nothing on other links.
    pub fn authenticated(&self) {
        if let Some(g) = &self.gate {
            g.open();
        }
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("remote", &self.remote)
            .field("local", &self.local)
            .field("uid", &self.uid)
            .field("authenticated", &self.gate.as_ref().is_none_or(Gate::is_open))
            .finish_non_exhaustive()
    }
}

/// Settings shared by every link.
#[derive(Clone, Debug)]
pub struct LinkOptions {
    /// Largest frame body in bytes, enforced on send and on receive.
    /// Byte-stream links cap it at 4 GiB - 1, what the length prefix holds.
    pub max_frame: usize,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions { max_frame: DEFAULT_MAX_FRAME }
    }
}

/// The error for a frame over the limit, shared by every transport so the
/// message reads the same whichever carried it.
pub(crate) fn too_large(kind: io::ErrorKind, len: usize, limit: usize) -> io::Error {
    io::Error::new(kind, format!("frame too large: {len} bytes, limit {limit}"))
}

/// Wraps any byte stream in length-delimited frames (4-byte big-endian
/// length). Used for mem, unix, tcp, and later by a security layer.
pub fn framed<S: AsyncRead + AsyncWrite + Send + 'static>(s: S, opts: &LinkOptions) -> (FrameSink, FrameStream) {
    framed_gated(s, opts, None)
}

/// [`framed`], with frames held to [`PREAUTH_FRAME_MAX`] while `gate` is
/// shut.
pub(crate) fn framed_gated<S: AsyncRead + AsyncWrite + Send + 'static>(
    s: S,
    opts: &LinkOptions,
    gate: Option<Gate>,
) -> (FrameSink, FrameStream) {
    let limit = opts.max_frame.min(LENGTH_PREFIX_MAX);
    let (r, w) = tokio::io::split(s);
    let write = crate::writer::FrameWriter::new(w, limit, WRITE_BUFFER);
    // `FramedRead` yields `BytesMut`; freeze it so receivers can share it.
    let read = FramedRead::new(r, FrameCodec::new(limit, gate)).map(|r| r.map(|b| Frame::from(b.freeze())));
    (Box::pin(write), Box::pin(read))
}

/// `LengthDelimitedCodec` with our frame-size errors.
///
/// The inner codec enforces the limit too, but its error says only "frame
/// size too big"; we peek at each length prefix ourselves so the error says
/// how big, and it still comes before any of the body is read.
struct FrameCodec {
    inner: LengthDelimitedCodec,
    limit: usize,
    /// True when the next bytes in the read buffer are a length prefix,
    /// i.e. before the first frame and after each complete one.
    at_head: bool,
    /// The length of the frame whose prefix was read, while `!at_head`.
    want: usize,
    /// While shut, frames are held to [`PREAUTH_FRAME_MAX`].
    gate: Option<Gate>,
}

impl FrameCodec {
    fn new(limit: usize, gate: Option<Gate>) -> Self {
        let inner =
            LengthDelimitedCodec::builder().length_field_length(4).big_endian().max_frame_length(limit).new_codec();
        FrameCodec { inner, limit, at_head: true, want: 0, gate }
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        if self.at_head {
            let Some(head) = src.get(..4) else {
                return Ok(None);
            };
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if len > self.limit {
                return Err(too_large(io::ErrorKind::InvalidData, len, self.limit));
            }
            // Checked before the inner codec reserves room for the body,
            // so an unauthenticated peer cannot make us allocate it.
            if len > PREAUTH_FRAME_MAX && self.gate.as_ref().is_some_and(|g| !g.is_open()) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("frame too large: {len} bytes before authenticating, limit {PREAUTH_FRAME_MAX}"),
                ));
            }
            // The inner codec consumes the prefix on this call.
            self.at_head = false;
            self.want = len;
        }
        let frame = self.inner.decode(src)?;
        if frame.is_some() {
            self.at_head = true;
        }
        Ok(frame)
    }

    /// The stream ended: only between frames is that a clean close. The
    /// default would call it clean when a prefix was read (and consumed)
    /// but none of its body came, losing that frame silently.
    fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if self.at_head && src.is_empty() => Ok(None),
            None if self.at_head => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed inside a length prefix: {} of 4 bytes", src.len()),
            )),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed inside a frame: {} of {} bytes", src.len(), self.want),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::SinkExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn opts(max_frame: usize) -> LinkOptions {
        LinkOptions { max_frame }
    }

    #[tokio::test]
    async fn frames_cross_a_duplex() {
        let (a, b) = tokio::io::duplex(1024);
        let (mut tx, _) = framed(a, &opts(1 << 20));
        let (_, mut rx) = framed(b, &opts(1 << 20));
        let big = Bytes::from(vec![7u8; 100_000]);
        let sender = tokio::spawn(async move {
            for f in [Bytes::from_static(b"one"), Bytes::new(), big] {
                tx.send(f.into()).await?;
            }
            io::Result::Ok(())
        });
        assert_eq!(rx.next().await.unwrap().unwrap(), Bytes::from_static(b"one"));
        assert_eq!(rx.next().await.unwrap().unwrap(), Bytes::new());
        let got = rx.next().await.unwrap().unwrap().into_bytes();
        assert_eq!(got.len(), 100_000);
        assert!(got.iter().all(|&b| b == 7));
        sender.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn wire_format_is_big_endian_length_then_body() {
        let (a, mut b) = tokio::io::duplex(1024);
        let (mut tx, _) = framed(a, &opts(64));
        tx.send(Bytes::from_static(b"hi").into()).await.unwrap();
        let mut buf = [0u8; 6];
        b.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"\0\0\0\x02hi");
    }

    #[tokio::test]
    async fn oversized_send_is_refused() {
        let (a, _b) = tokio::io::duplex(1024);
        let (mut tx, _) = framed(a, &opts(8));
        let err = tx.send(Frame::from(Bytes::from(vec![0u8; 9]))).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(err.to_string(), "frame too large: 9 bytes, limit 8");
        // Exactly the limit is fine.
        tx.send(Frame::from(Bytes::from(vec![0u8; 8]))).await.unwrap();
    }

    #[tokio::test]
    async fn oversized_receive_fails_on_the_prefix() {
        let (a, mut b) = tokio::io::duplex(1024);
        let (_, mut rx) = framed(a, &opts(8));
        // Length 1 GiB but no body: the error must not wait for the body.
        b.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
        let err = rx.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(err.to_string(), "frame too large: 1073741824 bytes, limit 8");
    }

    #[tokio::test]
    async fn limit_is_checked_for_every_frame_not_just_the_first() {
        let (a, mut b) = tokio::io::duplex(1024);
        let (_, mut rx) = framed(a, &opts(8));
        let mut wire = Vec::new();
        wire.extend_from_slice(&3u32.to_be_bytes());
        wire.extend_from_slice(b"abc");
        wire.extend_from_slice(&9u32.to_be_bytes());
        b.write_all(&wire).await.unwrap();
        assert_eq!(rx.next().await.unwrap().unwrap(), Bytes::from_static(b"abc"));
        let err = rx.next().await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "frame too large: 9 bytes, limit 8");
    }

    #[tokio::test]
    async fn prefix_split_across_reads() {
        let (a, mut b) = tokio::io::duplex(1024);
        let (_, mut rx) = framed(a, &opts(8));
        let reader = tokio::spawn(async move { rx.next().await });
        b.write_all(&[0, 0]).await.unwrap();
        tokio::task::yield_now().await;
        b.write_all(&[0, 2, b'o']).await.unwrap();
        tokio::task::yield_now().await;
        b.write_all(b"k").await.unwrap();
        let got = reader.await.unwrap().unwrap().unwrap();
        assert_eq!(got, Bytes::from_static(b"ok"));
    }

    #[tokio::test]
    async fn clean_close_ends_the_stream() {
        let (a, b) = tokio::io::duplex(1024);
        let (mut tx, _) = framed(a, &opts(64));
        let (_, mut rx) = framed(b, &opts(64));
        tx.send(Bytes::from_static(b"x").into()).await.unwrap();
        tx.close().await.unwrap();
        assert_eq!(rx.next().await.unwrap().unwrap(), Bytes::from_static(b"x"));
        assert!(rx.next().await.is_none());
    }

    #[tokio::test]
    async fn prefix_without_body_is_an_error() {
        // Found by fuzz/ (frame): the prefix alone, then close, used to
        // end the stream cleanly.
        let (a, mut b) = tokio::io::duplex(1024);
        let (_, mut rx) = framed(a, &opts(64));
        b.write_all(&[0, 0, 0, 5]).await.unwrap();
        drop(b);
        let err = rx.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(err.to_string(), "closed inside a frame: 0 of 5 bytes");
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error() {
        let (a, mut b) = tokio::io::duplex(1024);
        let (_, mut rx) = framed(a, &opts(64));
        b.write_all(&[0, 0, 0, 5, b'a']).await.unwrap();
        drop(b);
        assert!(rx.next().await.unwrap().is_err());
    }
}
