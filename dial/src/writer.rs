//! The sending half of byte-stream links: length-prefixed frames written
//! with vectored writes.
//!
//! tokio-util's `FramedWrite` copies every frame into its write buffer
//! before the system call copies it again into the kernel. On a router
//! that relays megabyte frames that first copy is a third of the work of
//! a hop. Here a frame of [`COPY_MAX`] bytes or more is queued as it is (a
//! `Bytes` handle, no copy) and goes to the kernel by `writev` beside its
//! length prefix; small frames and the prefixes are still copied into
//! one buffer, so a burst of small frames is one slice of one system
//! call, as before.
//!
//! Backpressure is `FramedWrite`'s: `poll_ready` writes until fewer than
//! [`WRITE_BUFFER`](crate::link) bytes wait, so a link holds at most that
//! much beyond the frame being added.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::Sink;
use tokio::io::AsyncWrite;

use crate::link::{too_large, Frame};

/// Frames at least this big are queued without copying; below it a copy
/// is cheaper than one more slice in the system call.
pub(crate) const COPY_MAX: usize = 16 << 10;

/// Slices handed to one `writev` (Linux takes up to 1024).
const MAX_SLICES: usize = 64;

/// Sink of length-prefixed frames over `W`.
pub(crate) struct FrameWriter<W> {
    io: W,
    /// Largest frame body.
    limit: usize,
    /// Write `poll_ready` waits for the queue to go under.
    boundary: usize,
    /// Prefixes and small frames not yet cut into `queue`.
    small: BytesMut,
    /// What goes out next, in order; the front may be partly written.
    queue: VecDeque<Bytes>,
    /// Bytes in `queue` and `small` together.
    pending: usize,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub(crate) fn new(io: W, limit: usize, boundary: usize) -> Self {
        FrameWriter { io, limit, boundary, small: BytesMut::new(), queue: VecDeque::new(), pending: 0 }
    }

    /// Adds one part of a frame: copied when small, queued when not.
    fn push(&mut self, part: Bytes) {
        if part.len() < COPY_MAX {
            self.small.extend_from_slice(&part);
        } else {
            self.cut_small();
            self.queue.push_back(part);
        }
    }

    /// Moves the small bytes gathered so far to the end of the queue.
    fn cut_small(&mut self) {
        if !self.small.is_empty() {
            let part = self.small.split().freeze();
            self.queue.push_back(part);
        }
    }

    /// One `writev` of the front of the queue.
    fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.cut_small();
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut k = 0;
        for part in self.queue.iter().take(MAX_SLICES) {
            slices[k] = IoSlice::new(part);
            k += 1;
        }
        let n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..k]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.pending -= n;
        let mut left = n;
        while left > 0 {
            let Some(front) = self.queue.front_mut() else { break };
            if front.len() <= left {
                left -= front.len();
                self.queue.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> Sink<Frame> for FrameWriter<W> {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pending >= this.boundary {
            ready!(this.poll_write_some(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, frame: Frame) -> io::Result<()> {
        let this = self.get_mut();
        let len = frame.len();
        if len > this.limit {
            return Err(too_large(io::ErrorKind::InvalidInput, len, this.limit));
        }
        // Fits: the limit is at most u32::MAX (see `framed`).
        this.small.put_u32(len as u32);
        this.pending += 4 + len;
        this.push(frame.head);
        this.push(frame.body);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pending > 0 {
            ready!(this.poll_write_some(cx))?;
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::SinkExt;
    use tokio::io::AsyncReadExt;

    /// Small and big frames mixed, through a pipe narrower than a frame:
    /// the bytes arrive in order, each after its prefix.
    #[tokio::test]
    async fn mixed_frames_arrive_in_order_through_partial_writes() {
        let (a, mut b) = tokio::io::duplex(1000);
        let mut w = FrameWriter::new(a, 1 << 20, 64 << 10);
        let big = Bytes::from((0..100_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let frames = vec![
            Frame::from(&b"one"[..]),
            big.clone().into(),
            Frame::default(),
            Frame::new(Bytes::from_static(b"head "), big.clone()),
            Frame::new(big.clone(), Bytes::from_static(b" tail")),
            Frame::new(Bytes::from_static(b"two "), Bytes::from_static(b"parts")),
        ];
        let expect: Vec<u8> = frames
            .iter()
            .flat_map(|f| {
                let bytes = f.clone().into_bytes();
                (bytes.len() as u32).to_be_bytes().into_iter().chain(bytes.to_vec())
            })
            .collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.map(|_| got)
        });
        for f in frames {
            w.feed(f).await.unwrap();
        }
        w.close().await.unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), expect);
    }

    #[tokio::test]
    async fn ready_waits_while_the_queue_is_over_the_boundary() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut w = FrameWriter::new(a, 1 << 20, 1024);
        // 2 KiB queued without a flush: the next `poll_ready` must write
        // it out, which the 64-byte pipe allows only as it is read.
        Pin::new(&mut w).start_send(vec![1u8; 2048].into()).unwrap();
        let ready = futures::poll!(futures::future::poll_fn(|cx| Pin::new(&mut w).poll_ready(cx)));
        assert!(ready.is_pending(), "the queue is over the boundary and the pipe is full");
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.map(|_| got)
        });
        futures::future::poll_fn(|cx| Pin::new(&mut w).poll_ready(cx)).await.unwrap();
        assert!(w.pending < 1024, "ready only once under the boundary");
        w.close().await.unwrap();
        let got = reader.await.unwrap().unwrap();
        assert_eq!(got.len(), 4 + 2048);
        assert_eq!(&got[..4], &2048u32.to_be_bytes());
    }
}
