//! [`Listener`]: one accept loop over whichever transport was asked for.

use std::io;

use crate::addr::{DialString, Host};
use crate::link::Link;
use crate::mem::MemListener;
use crate::tcp::TcpListener;
use crate::unix::UnixListener;
use crate::ws::WsListener;

/// A bound listener. Dropping it stops accepting: a mem name is
/// unregistered, a unix socket file removed, a TCP port closed, and ws
/// handshakes in flight are abandoned.
#[derive(Debug)]
pub struct Listener {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Mem(MemListener),
    Unix(UnixListener),
    Tcp(TcpListener),
    Ws(WsListener),
}

impl Listener {
    pub(crate) fn mem(l: MemListener) -> Self {
        Listener { inner: Inner::Mem(l) }
    }

    pub(crate) fn unix(l: UnixListener) -> Self {
        Listener { inner: Inner::Unix(l) }
    }

    pub(crate) fn tcp(l: TcpListener) -> Self {
        Listener { inner: Inner::Tcp(l) }
    }

    pub(crate) fn ws(l: WsListener) -> Self {
        Listener { inner: Inner::Ws(l) }
    }

    /// Waits for the next connection and returns it as a link.
    ///
    /// Connections that fail on their own (reset before we took them, a
    /// botched ws handshake) are skipped and logged at debug level. An
    /// error means trouble with the listener itself, such as running out
    /// of file descriptors; the listener stays usable, so a caller may
    /// pause and call again.
    ///
    /// Cancel-safe: if the future is dropped, no connection is lost.
    ///
    /// # Errors
    ///
    /// Only listener-level failures, e.g. `EMFILE`, with the dial string in
    /// the message.
    pub async fn accept(&mut self) -> io::Result<Link> {
        match &mut self.inner {
            Inner::Mem(l) => l.accept().await,
            Inner::Unix(l) => l.accept().await,
            Inner::Tcp(l) => l.accept().await,
            Inner::Ws(l) => l.accept().await,
        }
    }

    /// The address actually bound: port 0 is replaced by the port the
    /// kernel chose, and `*` reads as `0.0.0.0`.
    #[must_use]
    pub fn local_addr(&self) -> DialString {
        match &self.inner {
            Inner::Mem(l) => DialString::Mem(l.name().to_owned()),
            Inner::Unix(l) => DialString::Unix(l.path().to_owned()),
            Inner::Tcp(l) => {
                let a = l.local_addr();
                DialString::Tcp(Host::Name(a.ip().to_string()), a.port())
            }
            Inner::Ws(l) => {
                let a = l.local_addr();
                DialString::Ws(Host::Name(a.ip().to_string()), a.port())
            }
        }
    }
}
