//! The two halves of a secured link: [`SecureSink`] seals frames into
//! Noise transport messages, [`SecureStream`] opens and reassembles them.
//! The wire format is in the parent module's doc.
//!
//! The halves share snow's `StatelessTransportState` (its two cipher
//! states take the nonce as an argument, so each half keeps its own
//! counter and neither waits on a lock) and a flag that the stream sets
//! when the link can no longer be trusted.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Sink, Stream};
use snow::StatelessTransportState;

use super::{HEADER_LEN, TAG_LEN};
use crate::link::{too_large, Frame, FrameSink, FrameStream};

/// Ciphertexts are cut from buffers of this size, so a burst of small
/// frames costs one allocation per slab, not one per frame.
const SLAB: usize = 256 << 10;

/// State both halves share.
pub(crate) struct Secured {
    pub(crate) state: StatelessTransportState,
    /// Set once a received message failed to open: nothing more is sent.
    broken: AtomicBool,
}

impl Secured {
    pub(crate) fn new(state: StatelessTransportState) -> Self {
        Secured { state, broken: AtomicBool::new(false) }
    }

    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }
}

fn broken_pipe() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "secure link closed: a received message failed to decrypt or broke the framing",
    )
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Bodies sealed end to end from this size on travel in clear after
/// their head; smaller ones ride in the head's message, which costs less
/// than a frame of their own.
pub(crate) const CLEAR_MIN: usize = 1024;

/// A frame being sealed: `sent` bytes of it are in messages already.
struct Outgoing {
    frame: Frame,
    sent: usize,
    /// False until the first message (the one with the length) is out.
    started: bool,
    /// Bytes at the end (the whole body, or none) that go in clear, as
    /// one message of the underlying link after the encrypted ones.
    clear: usize,
}

impl Outgoing {
    /// Bytes that are encrypted: all but the clear body.
    fn sealed_len(&self) -> usize {
        self.frame.len() - self.clear
    }

    /// Bytes `from..from + n` of the frame, head and body read as one:
    /// a slice when they lie in one part, else gathered into `scratch`.
    fn range<'a>(&'a self, from: usize, n: usize, scratch: &'a mut Vec<u8>) -> &'a [u8] {
        let head = &self.frame.head[..];
        let to = from + n;
        if to <= head.len() {
            return &head[from..to];
        }
        if from >= head.len() {
            return &self.frame.body[from - head.len()..to - head.len()];
        }
        self.gather(from, n, scratch);
        scratch
    }

    /// Appends bytes `from..from + n` of the frame to `out`.
    fn gather(&self, from: usize, n: usize, out: &mut Vec<u8>) {
        let (head, body) = (&self.frame.head[..], &self.frame.body[..]);
        let to = from + n;
        if from < head.len() {
            out.extend_from_slice(&head[from..to.min(head.len())]);
        }
        if to > head.len() {
            out.extend_from_slice(&body[from.max(head.len()) - head.len()..to - head.len()]);
        }
    }
}

/// Sending half: each frame becomes one or more transport messages, each
/// one frame of the inner sink. Messages are sealed as the inner sink
/// takes them, so at most one frame waits here, and the work of sealing
/// a big frame is spread over as many polls as it has messages.
pub(crate) struct SecureSink {
    /// None once the link broke: the underlying half is let go.
    inner: Option<FrameSink>,
    shared: Arc<Secured>,
    /// Nonce of the next message we seal.
    nonce: u64,
    /// Largest frame we send.
    limit: usize,
    /// Largest message, tag included.
    message_max: usize,
    outgoing: Option<Outgoing>,
    /// Length prefix plus the start of the frame, for the first message.
    scratch: Vec<u8>,
    /// Where ciphertexts are written; each message is split off it.
    slab: BytesMut,
}

impl SecureSink {
    pub(crate) fn new(inner: FrameSink, shared: Arc<Secured>, nonce: u64, limit: usize, message_max: usize) -> Self {
        SecureSink {
            inner: Some(inner),
            shared,
            nonce,
            limit,
            message_max,
            outgoing: None,
            scratch: Vec::new(),
            slab: BytesMut::new(),
        }
    }

    /// The inner sink, unless the link broke.
    fn inner(&mut self) -> io::Result<&mut FrameSink> {
        if self.shared.is_broken() {
            self.inner = None;
        }
        self.inner.as_mut().ok_or_else(broken_pipe)
    }

    /// Hands the inner sink every message of the frame in progress.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.outgoing.is_some() {
            ready!(self.inner()?.as_mut().poll_ready(cx))?;
            let msg = self.seal_next()?;
            self.inner()?.as_mut().start_send(msg)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Seals the next message of the outgoing frame; once every sealed
    /// one is out, the clear body is the last.
    fn seal_next(&mut self) -> io::Result<Frame> {
        let Some(out) = self.outgoing.as_mut() else {
            return Err(io::Error::other("secure sink: no frame to seal"));
        };
        let total = out.sealed_len();
        if out.started && out.sent == total {
            let body = out.frame.body.clone();
            self.outgoing = None;
            return Ok(Frame::from(body));
        }
        let room = self.message_max - TAG_LEN;
        self.scratch.clear();
        let from = out.sent;
        let plain: &[u8] = if out.started {
            let n = (total - from).min(room);
            out.sent += n;
            out.range(from, n, &mut self.scratch)
        } else {
            // The length goes first, in the same ciphertext as the data,
            // so it is authenticated; the copy is at most one message.
            let n = total.min(room - HEADER_LEN);
            // Fits: the limit is at most u32::MAX (see `secure`).
            self.scratch.extend_from_slice(&(out.frame.len() as u32).to_be_bytes());
            self.scratch.extend_from_slice(&(out.clear as u32).to_be_bytes());
            out.gather(0, n, &mut self.scratch);
            out.sent = n;
            out.started = true;
            &self.scratch
        };
        let len = plain.len() + TAG_LEN;
        if self.slab.capacity() < len {
            self.slab.reserve(SLAB.max(len));
        }
        self.slab.resize(len, 0);
        let sealed = self.shared.state.write_message(self.nonce, plain, &mut self.slab);
        let n = sealed.map_err(|e| io::Error::other(format!("noise: {e}")))?;
        self.nonce += 1;
        let msg = self.slab.split_to(n).freeze();
        if out.sent == total && out.clear == 0 {
            self.outgoing = None;
        }
        Ok(Frame::from(msg))
    }
}

impl Sink<Frame> for SecureSink {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.inner()?.as_mut().poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, frame: Frame) -> io::Result<()> {
        let this = self.get_mut();
        this.inner()?;
        if frame.len() > this.limit {
            return Err(too_large(io::ErrorKind::InvalidInput, frame.len(), this.limit));
        }
        if this.outgoing.is_some() {
            return Err(io::Error::other("secure sink: start_send without poll_ready"));
        }
        let clear = if frame.sealed && frame.body.len() >= CLEAR_MIN { frame.body.len() } else { 0 };
        this.outgoing = Some(Outgoing { frame, sent: 0, started: false, clear });
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.inner()?.as_mut().poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.shared.is_broken() {
            // Already let go of; closing twice is not an error.
            this.inner = None;
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        this.inner()?.as_mut().poll_close(cx)
    }
}

/// Receiving half: opens messages and hands out whole frames.
pub(crate) struct SecureStream {
    /// None once the stream ended or failed.
    inner: Option<FrameStream>,
    shared: Arc<Secured>,
    /// Nonce of the next message we open.
    nonce: u64,
    /// Largest frame we accept.
    limit: usize,
    /// Largest message, tag included.
    message_max: usize,
    /// The frame being reassembled, and its announced length.
    frame: BytesMut,
    want: Option<usize>,
    /// How many bytes at its end come in clear, as one message.
    clear: usize,
}

impl SecureStream {
    pub(crate) fn new(inner: FrameStream, shared: Arc<Secured>, nonce: u64, limit: usize, message_max: usize) -> Self {
        SecureStream {
            inner: Some(inner),
            shared,
            nonce,
            limit,
            message_max,
            frame: BytesMut::new(),
            want: None,
            clear: 0,
        }
    }

    /// Ends the stream for good and tells the sink.
    fn fail(&mut self) {
        self.shared.broken.store(true, Ordering::Release);
        self.inner = None;
        self.frame = BytesMut::new();
        self.want = None;
        self.clear = 0;
    }

    /// Decrypts `msg` into `out`, which has room for `msg` whole: snow
    /// then copies it once and opens it in place, where a buffer of only
    /// the plaintext's size costs it an allocation and two more copies.
    fn decrypt(&mut self, msg: &[u8], out: &mut [u8]) -> io::Result<()> {
        self.shared
            .state
            .read_message(self.nonce, msg, out)
            .map_err(|_| invalid("secure link: a message failed to decrypt (tampered with, reordered or replayed)"))?;
        self.nonce += 1;
        Ok(())
    }

    /// Takes one message; returns a frame when it completes one.
    fn open(&mut self, msg: &Bytes) -> io::Result<Option<Frame>> {
        if let Some(want) = self.want.filter(|w| self.clear > 0 && self.frame.len() == w - self.clear) {
            // The clear body, whole: its seal is checked where it goes.
            if msg.len() != self.clear {
                return Err(invalid(format!("secure link: clear body of {} bytes, want {}", msg.len(), self.clear)));
            }
            self.want = None;
            self.clear = 0;
            debug_assert_eq!(self.frame.len() + msg.len(), want);
            // In two parts: the body as it came, not copied behind the
            // head (a relay passes it on as it is).
            return Ok(Some(Frame::new(std::mem::take(&mut self.frame).freeze(), msg.clone())));
        }
        if msg.len() < TAG_LEN || msg.len() > self.message_max {
            return Err(invalid(format!(
                "secure link: message of {} bytes (want {TAG_LEN} to {})",
                msg.len(),
                self.message_max
            )));
        }
        let plain = msg.len() - TAG_LEN;
        let Some(want) = self.want else {
            // First message of a frame: the length, then data.
            if plain < HEADER_LEN {
                return Err(invalid("secure link: first message of a frame has no length"));
            }
            let mut buf = BytesMut::zeroed(msg.len());
            self.decrypt(msg, &mut buf)?;
            buf.truncate(plain);
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            let clear = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
            if len > self.limit {
                return Err(too_large(io::ErrorKind::InvalidData, len, self.limit));
            }
            if clear > len || (clear > 0 && clear < CLEAR_MIN) {
                return Err(invalid(format!("secure link: clear body of {clear} bytes in a frame of {len}")));
            }
            buf.advance(HEADER_LEN);
            if buf.len() > len - clear {
                return Err(invalid("secure link: message runs past the end of its frame"));
            }
            if buf.len() == len {
                return Ok(Some(Frame::from(buf.freeze())));
            }
            // One allocation of the frame's encrypted part (and room for
            // the last message's tag); later messages decrypt into it.
            buf.reserve(len - clear - buf.len() + TAG_LEN);
            self.frame = buf;
            self.want = Some(len);
            self.clear = clear;
            return Ok(None);
        };
        let have = self.frame.len();
        if plain == 0 || have + plain > want - self.clear {
            return Err(invalid(format!(
                "secure link: message of {plain} bytes where {} remain of a frame",
                want - have
            )));
        }
        let mut frame = std::mem::take(&mut self.frame);
        frame.resize(have + msg.len(), 0);
        let opened = self.decrypt(msg, &mut frame[have..]);
        frame.truncate(have + plain);
        self.frame = frame;
        opened?;
        if have + plain < want {
            return Ok(None);
        }
        self.want = None;
        self.clear = 0;
        Ok(Some(Frame::from(std::mem::take(&mut self.frame).freeze())))
    }
}

impl Stream for SecureStream {
    type Item = io::Result<Frame>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame>>> {
        let this = self.get_mut();
        loop {
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            let msg = match ready!(inner.as_mut().poll_next(cx)) {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    this.fail();
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    let cut = this.want.is_some();
                    this.inner = None;
                    if cut {
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "secure link: closed in the middle of a frame",
                        ))));
                    }
                    return Poll::Ready(None);
                }
            };
            match this.open(&msg.into_bytes()) {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => {}
                Err(e) => {
                    this.fail();
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}
