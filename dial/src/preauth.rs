//! Limits on connections that have not authenticated yet.
//!
//! Principle: nothing unauthenticated can make a router hold memory or
//! slots that a pinned peer needs. A listener made by
//! [`listen_secure`](crate::listen_secure) admits every tcp or ws
//! connection through an [`Admission`] and wraps its socket in a
//! [`Gated`] stream until [`secure`](crate::secure) has authenticated the
//! peer (or the owner calls [`Link::authenticated`](crate::Link::authenticated)):
//!
//! - Slots: at most [`MAX_PENDING`] connections of one listener wait to
//!   authenticate, at most [`MAX_PENDING_PER_IP`] from one source address.
//!   A new connection over either cap evicts the oldest pending one (of
//!   its address, else of all); it is never refused and the accept loop
//!   never waits. An evicted connection's next read fails at once, so its
//!   task ends and its socket closes. A pinned peer's handshake takes a
//!   round trip or two, so a flood has to open [`MAX_PENDING`] new
//!   connections within that time to push it out; idle or stalled
//!   connections only ever push each other out.
//! - Bytes: at most [`PREAUTH_BYTES`] are read from an unauthenticated
//!   socket (the WebSocket upgrade and the Noise messages take well under
//!   1 KiB); reads are capped at what is left, so nothing past the budget
//!   is buffered, and the read after it fails.
//! - Frames: a length prefix over [`PREAUTH_FRAME_MAX`] (the largest
//!   Noise handshake message) fails the link as soon as it is read,
//!   before anything is allocated for the body.
//!
//! So a flood costs at most [`MAX_PENDING`] × ([`PREAUTH_BYTES`] plus a
//! socket's buffers) per listener, and its memory goes back as each
//! connection is evicted or times out.
//!
//! Lock order: one lock, [`Admission`]'s table; it is never held while a
//! waker runs or a gate is dropped (a gate's drop takes it).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Connections of one listener waiting to authenticate.
pub const MAX_PENDING: usize = 256;

/// Connections from one source address waiting to authenticate.
pub const MAX_PENDING_PER_IP: usize = 32;

/// Bytes read from a connection before it authenticates.
pub const PREAUTH_BYTES: usize = 16 << 10;

/// Largest frame read before authentication: the largest Noise handshake
/// message.
pub const PREAUTH_FRAME_MAX: usize = crate::secure::HANDSHAKE_MSG_MAX;

/// The pending connections of one listener, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    /// By admission order: the first entry is the oldest.
    pending: BTreeMap<u64, (IpAddr, Weak<GateInner>)>,
    per_ip: HashMap<IpAddr, usize>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Weak<GateInner>> {
        let (ip, gate) = self.pending.remove(&id)?;
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        Some(gate)
    }

    /// The oldest pending connection from `ip`, or of all with `None`.
    fn oldest(&self, ip: Option<IpAddr>) -> Option<u64> {
        self.pending.iter().find(|(_, (from, _))| ip.is_none_or(|ip| ip == *from)).map(|(id, _)| *id)
    }
}

impl Admission {
    /// Admits a connection from `ip`, evicting the oldest pending ones
    /// over the caps. Never waits.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Gate {
        let mut evicted = Vec::new();
        let gate = {
            let mut t = lock(&self.table);
            while t.per_ip.get(&ip).copied().unwrap_or(0) >= MAX_PENDING_PER_IP {
                let Some(id) = t.oldest(Some(ip)) else { break };
                evicted.extend(t.remove(id));
            }
            while t.pending.len() >= MAX_PENDING {
                let Some(id) = t.oldest(None) else { break };
                evicted.extend(t.remove(id));
            }
            let id = t.next;
            t.next += 1;
            let inner = Arc::new(GateInner {
                open: AtomicBool::new(false),
                evicted: AtomicBool::new(false),
                waker: AtomicWaker::new(),
                slot: Some((Arc::downgrade(self), id)),
            });
            t.pending.insert(id, (ip, Arc::downgrade(&inner)));
            *t.per_ip.entry(ip).or_insert(0) += 1;
            Gate { inner }
        };
        // Outside the lock: dropping an upgraded gate may take it.
        for gate in evicted.iter().filter_map(Weak::upgrade) {
            gate.evicted.store(true, Ordering::Release);
            gate.waker.wake();
        }
        gate
    }

    /// How many connections wait to authenticate.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        lock(&self.table).pending.len()
    }

    fn release(&self, id: u64) {
        let gone = lock(&self.table).remove(id);
        drop(gone);
    }
}

fn lock(m: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    // The table stays consistent across a panic (each change is one
    // step), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One connection's pre-authentication state, shared by its link (which
/// opens it) and its socket (which obeys it).
#[derive(Clone, Debug)]
pub(crate) struct Gate {
    inner: Arc<GateInner>,
}

#[derive(Debug)]
struct GateInner {
    open: AtomicBool,
    evicted: AtomicBool,
    /// The socket's reader, woken on eviction.
    waker: AtomicWaker,
    /// The admission slot held until open.
    slot: Option<(Weak<Admission>, u64)>,
}

impl Gate {
    /// Marks the peer authenticated: the limits are lifted and the slot
    /// given back.
    pub(crate) fn open(&self) {
        if !self.inner.open.swap(true, Ordering::AcqRel) {
            self.inner.release();
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.inner.open.load(Ordering::Acquire)
    }
}

impl GateInner {
    fn release(&self) {
        if let Some((admission, id)) = &self.slot {
            if let Some(a) = admission.upgrade() {
                a.release(*id);
            }
        }
    }
}

impl Drop for GateInner {
    fn drop(&mut self) {
        if !*self.open.get_mut() {
            self.release();
        }
    }
}

/// A socket under a [`Gate`]: reads are capped at [`PREAUTH_BYTES`] and
/// fail once evicted, until the gate opens. Writes pass through.
#[derive(Debug)]
pub(crate) struct Gated<S> {
    inner: S,
    gate: Gate,
    /// Bytes read while the gate was shut.
    read: usize,
}

impl<S> Gated<S> {
    pub(crate) fn new(inner: S, gate: Gate) -> Self {
        Gated { inner, gate, read: 0 }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Gated<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.gate.is_open() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        self.gate.inner.waker.register(cx.waker());
        if self.gate.inner.evicted.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "evicted: too many connections waiting to authenticate",
            )));
        }
        let left = PREAUTH_BYTES - self.read;
        if left == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{PREAUTH_BYTES} bytes sent before authenticating, the most allowed"),
            )));
        }
        // Read through a small buffer so nothing past the budget is
        // taken from the kernel; only handshakes pass here.
        let mut scratch = [0u8; 2048];
        let n = left.min(scratch.len()).min(buf.remaining());
        let mut small = ReadBuf::new(&mut scratch[..n]);
        match Pin::new(&mut self.inner).poll_read(cx, &mut small) {
            Poll::Ready(Ok(())) => {
                let got = small.filled().len();
                buf.put_slice(small.filled());
                self.read += got;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gated<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_of_an_address_is_evicted_first_then_oldest_of_all() {
        let a = Arc::new(Admission::default());
        let ip1: IpAddr = [127, 0, 0, 1].into();
        let gates: Vec<Gate> = (0..MAX_PENDING_PER_IP).map(|_| a.admit(ip1)).collect();
        assert_eq!(a.pending(), MAX_PENDING_PER_IP);
        let newest = a.admit(ip1);
        assert!(gates[0].inner.evicted.load(Ordering::Acquire));
        assert!(!gates[1].inner.evicted.load(Ordering::Acquire));
        assert!(!newest.inner.evicted.load(Ordering::Acquire));
        assert_eq!(a.pending(), MAX_PENDING_PER_IP);
        newest.open();
        assert_eq!(a.pending(), MAX_PENDING_PER_IP - 1);
        drop(gates);
        assert_eq!(a.pending(), 0);
        let many: Vec<Gate> = (0..=MAX_PENDING).map(|i| a.admit([10, 0, (i / 256) as u8, i as u8].into())).collect();
        assert!(many[0].inner.evicted.load(Ordering::Acquire));
        assert_eq!(a.pending(), MAX_PENDING);
    }
}
