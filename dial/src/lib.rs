//! Dial strings, dialers and listeners for the mesh's transports, and the
//! framing every link speaks.
//!
//! A connection between two routers, or between a router and a local
//! client, is a [`Link`]: a sink and a stream of frames (byte strings up to
//! [`LinkOptions::max_frame`]). Which transport carries it is named by a
//! Plan 9 dial string and is invisible above this crate.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use futures::{SinkExt, StreamExt};
//! let opts = dial::LinkOptions::default();
//! let ds: dial::DialString = "tcp!127.0.0.1!0".parse().expect("valid");
//! let mut listener = dial::listen(&ds, &opts).await?;
//! let mut client = dial::dial(&listener.local_addr(), &opts).await?;
//! let mut server = listener.accept().await?;
//! client.tx.send("hello".into()).await?;
//! assert_eq!(server.rx.next().await.transpose()?, Some("hello".into()));
//! # Ok(()) }
//! ```
//!
//! Modules:
//!
//! - `addr`: [`DialString`] and [`Host`]: parsing (`mem!NAME`,
//!   `unix!/PATH`, `tcp!HOST!PORT`, `ws!HOST!PORT`, `*` for all addresses)
//!   and printing; [`DialError`] says what is wrong with a bad one.
//! - `link`: [`Link`], [`LinkOptions`], and [`framed`], which turns any byte
//!   stream into frames (4-byte big-endian length + body, read with
//!   tokio-util's `LengthDelimitedCodec`), enforcing the size limit both
//!   ways.
//! - `writer`: the sending half of [`framed`]: small frames gathered in
//!   one buffer, big ones handed to `writev` beside their prefix uncopied.
//! - `listener`: [`Listener`], one `accept` over every transport.
//! - `mem`: in-process links through a process-global name registry and
//!   `tokio::io::duplex` pipes; no timers, so it runs under a paused clock.
//! - `unix`: Unix sockets; the listener owns its socket file (mode 0600,
//!   stale files replaced, removed on drop) and reports peer uids.
//! - `tcp`: TCP with `TCP_NODELAY`, name resolution, bounded connect time.
//! - `preauth`: the limits on accepted connections that have not
//!   authenticated yet (see [`listen_secure`]).
//! - `ws`: WebSocket over TCP (tokio-tungstenite), one binary message per
//!   frame; handshakes run off the accept path so one bad client cannot
//!   stall or end a listener.
//! - `secure`: link security for the network transports: [`secure`] runs
//!   a Noise handshake (`Noise_XX_25519_AESGCM_SHA256`, the `snow`
//!   crate, ciphers from ring) on a link between two machine [`Identity`]s whose public keys
//!   the other side pins in its [`Trust`], and returns a link whose
//!   frames are encrypted and authenticated. An unknown key is refused
//!   before any frame is read. Listening and dialing stay as they are;
//!   the caller secures what it dialed or accepted. [`pair`]: end-to-end
//!   keys between two machines that pin each other, agreed by Noise KK
//!   over any path (the mesh's relays carry it), for AES-256-GCM with
//!   associated data.
//!
//! Errors are `std::io::Error`s; those of `dial`, `listen` and `accept`
//! start with the dial string. The kind is what callers branch on: `ConnectionRefused` when
//! nobody listens, `AddrInUse` when the address is taken, `InvalidInput`
//! for a frame too large to send, `InvalidData` for one too large (or
//! otherwise malformed) on receive.
//!
//! Every buffer is bounded: frames by `max_frame`, a sink's write buffer
//! by 256 KiB (plus one frame), accept queues and in-flight ws handshakes
//! by fixed small counts (a new ws connection evicts the oldest pending
//! handshake rather than wait); every name lookup, connect and ws
//! handshake by a 10 s timeout.
//!
//! Nothing unauthenticated can make a listener hold memory or slots that
//! a pinned peer needs: [`listen_secure`] holds each accepted network
//! link to small limits until [`secure`] authenticates it (`preauth`:
//! handshake-sized frames, 16 KiB read in all, a bounded number of
//! pending connections per listener and per source address, the oldest
//! evicted by newer ones). Waiting for frames on an established link is the
//! caller's business.
//!
//! `tx.close()` ends the peer's stream. On the byte-stream transports that
//! is a half-close and `rx` keeps receiving; on ws it starts the WebSocket
//! close handshake, which ends both directions. The connection goes away
//! when both halves are dropped.

mod addr;
mod link;
mod listener;
mod mem;
mod preauth;
mod secure;
mod tcp;
mod unix;
mod writer;
mod ws;

use std::fmt::Display;
use std::io;

pub use addr::{DialError, DialString, Host};
pub use link::{framed, Frame, FrameSink, FrameStream, Link, LinkOptions, DEFAULT_MAX_FRAME, WRITE_BUFFER};
pub use listener::Listener;
pub use preauth::{MAX_PENDING, MAX_PENDING_PER_IP, PREAUTH_BYTES, PREAUTH_FRAME_MAX};
pub use secure::pair;
pub use secure::{
    secure, Identity, KeyError, PeerInfo, PinError, PublicKey, Role, SecureError, Trust, HANDSHAKE_TIMEOUT,
    MIN_MAX_FRAME,
};

/// Connects to `ds`.
///
/// # Errors
///
/// `InvalidInput` for a `*` host, which only makes sense for listening;
/// `ConnectionRefused` when nobody listens there; `TimedOut` when a network
/// peer does not answer (or finish the ws handshake) within 10 s; otherwise
/// the transport's error. Every message starts with the dial string.
pub async fn dial(ds: &DialString, opts: &LinkOptions) -> io::Result<Link> {
    match ds {
        DialString::Mem(name) => mem::dial(name, opts).await,
        DialString::Unix(path) => unix::dial(path, opts).await,
        DialString::Tcp(Host::Name(host), port) => tcp::dial(host, *port, opts).await,
        DialString::Ws(Host::Name(host), port) => ws::dial(host, *port, opts).await,
        DialString::Tcp(Host::Any, _) | DialString::Ws(Host::Any, _) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{ds}: cannot dial '*' (all addresses); it is only for listening"),
        )),
    }
}

/// Starts listening on `ds`. Port 0 picks a free port; see
/// [`Listener::local_addr`] for the one chosen.
///
/// # Errors
///
/// `AddrInUse` when the mem name, port or live unix socket is taken;
/// `AlreadyExists` when a unix path holds something other than a socket;
/// otherwise the error from creating the directory, binding or chmod.
pub async fn listen(ds: &DialString, opts: &LinkOptions) -> io::Result<Listener> {
    Ok(match ds {
        DialString::Mem(name) => Listener::mem(mem::listen(name, opts)?),
        DialString::Unix(path) => Listener::unix(unix::listen(path, opts).await?),
        DialString::Tcp(host, port) => Listener::tcp(tcp::listen(host, *port, opts, false).await?),
        DialString::Ws(host, port) => Listener::ws(ws::listen(host, *port, opts, false).await?),
    })
}

/// Like [`listen`], for links the caller will [`secure`]: each tcp or ws
/// link is accepted under the pre-authentication limits, which
/// [`secure`] lifts once the peer proved a pinned key (or the caller
/// with [`Link::authenticated`]). Until then at most 256 connections
/// of the listener (32 of one source address) wait, a newer one evicting
/// the oldest; a frame is at most a handshake message's size (an
/// oversized length prefix fails the link at once) and 16 KiB in all may
/// be read. So a flood of unauthenticated connections costs a bounded,
/// small amount of memory and cannot keep a pinned peer out. mem and unix
/// listeners are as with [`listen`].
///
/// # Errors
///
/// As [`listen`].
pub async fn listen_secure(ds: &DialString, opts: &LinkOptions) -> io::Result<Listener> {
    Ok(match ds {
        DialString::Tcp(host, port) => Listener::tcp(tcp::listen(host, *port, opts, true).await?),
        DialString::Ws(host, port) => Listener::ws(ws::listen(host, *port, opts, true).await?),
        _ => listen(ds, opts).await?,
    })
}

/// Prefixes an I/O error with what we were doing, keeping its kind so
/// callers can still branch on it.
pub(crate) fn with_context(e: io::Error, what: impl Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Accept errors that concern one connection, not the listener: the
/// client went away before we took its connection.
pub(crate) fn is_per_connection(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted)
}
