//! `ws!HOST!PORT`: WebSocket links, for networks that pass only HTTP.
//!
//! One frame is one binary message; the client asks for `ws://HOST:PORT/mesh`
//! and the server refuses any other path. Pings are answered by tungstenite
//! itself (it queues the pong and writes it on the next read or flush), a
//! text message is a protocol error, a close message ends the stream.
//!
//! The WebSocket handshake is a network round trip that a slow or hostile
//! client can stall, so it is kept off the accept path: an acceptor task
//! takes TCP connections and handshakes each in its own task under a
//! timeout, and finished links wait in a bounded queue for `accept`. The
//! acceptor never waits for handshakes to finish: each connection is
//! admitted through the listener's `preauth::Admission`, which bounds
//! the handshakes in flight by evicting the oldest (of the same address
//! first), so a flood of idle connections cannot lock a pinned peer out.
//! Handshake reads go through a `preauth::Gated` socket (16 KiB at most
//! before authentication). On a plain listener the gate opens after the
//! WebSocket handshake; on one from `listen_secure` it stays shut until
//! [`secure`](crate::secure) succeeds. One bad client costs a debug log
//! line, not the listener. As with the other transports, a dial completes
//! even before the listener's owner calls `accept`.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use futures::{Sink, Stream, StreamExt};
use nix::sys::socket::{shutdown, Shutdown};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener as TokioTcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::addr::Host;
use crate::link::{too_large, Frame, FrameSink, FrameStream, Link, LinkOptions, WRITE_BUFFER};
use crate::preauth::{Admission, Gate, Gated};
use crate::tcp::{self, CONNECT_TIMEOUT};

/// The one HTTP path a mesh WebSocket lives on.
const PATH: &str = "/mesh";

/// Longest a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken links waiting for `accept`.
const READY_QUEUE: usize = 16;

/// Pause after a listener-level accept error (e.g. out of file
/// descriptors) so the acceptor does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

fn config(opts: &LinkOptions) -> WebSocketConfig {
    // Room for one full frame and its header on top of the batching
    // buffer: the sink only adds a message after the buffer drained below
    // `WRITE_BUFFER`, so this bound is never hit in normal use.
    let max_buffer = WRITE_BUFFER.saturating_add(opts.max_frame).saturating_add(1024);
    WebSocketConfig::default()
        .max_message_size(Some(opts.max_frame))
        .max_frame_size(Some(opts.max_frame))
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(max_buffer)
}

/// Maps tungstenite's errors onto `io::Error`, keeping size errors worded
/// like the other transports'.
fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            too_large(io::ErrorKind::InvalidData, size, max_size)
        }
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "ws: connection closed")
        }
        WsError::Protocol(p) => io::Error::new(io::ErrorKind::InvalidData, format!("ws: protocol error: {p}")),
        other => io::Error::other(format!("ws: {other}")),
    }
}

/// Splits a WebSocket into a frame sink and stream.
fn frames<T>(ws: WebSocketStream<T>, limit: usize) -> (FrameSink, FrameStream)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    (Box::pin(BinarySink { inner: sink, limit }), Box::pin(BinaryStream { inner: stream, done: false }))
}

/// `Sink<Frame>` over a WebSocket: each frame becomes one binary message
/// (its two parts joined: tungstenite takes one buffer).
struct BinarySink<T> {
    inner: SplitSink<WebSocketStream<T>, Message>,
    limit: usize,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Sink<Frame> for BinarySink<T> {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_ready(cx).map_err(io_error)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Frame) -> io::Result<()> {
        // tungstenite checks sizes only on receive; check here so the
        // sender gets the error instead of the peer dropping the link.
        if frame.len() > self.limit {
            return Err(too_large(io::ErrorKind::InvalidInput, frame.len(), self.limit));
        }
        Pin::new(&mut self.inner).start_send(Message::Binary(frame.into_bytes())).map_err(io_error)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx).map_err(io_error)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx).map_err(io_error)
    }
}

/// `Stream<io::Result<Bytes>>` over a WebSocket: binary messages are
/// frames, control messages are skipped, anything else ends the link.
struct BinaryStream<T> {
    inner: SplitStream<WebSocketStream<T>>,
    /// Set after a close or an error, so the stream stays ended.
    done: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Stream for BinaryStream<T> {
    type Item = io::Result<Frame>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        while !self.done {
            let item = ready!(self.inner.poll_next_unpin(cx));
            let result = match item {
                Some(Ok(Message::Binary(frame))) => return Poll::Ready(Some(Ok(Frame::from(frame)))),
                // Pongs go out through tungstenite; nothing for us to do.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | None => None,
                Some(Ok(Message::Text(_))) => {
                    Some(Err(io::Error::new(io::ErrorKind::InvalidData, "ws: text message on a binary link")))
                }
                Some(Err(e)) => Some(Err(io_error(e))),
            };
            self.done = true;
            return Poll::Ready(result);
        }
        Poll::Ready(None)
    }
}

/// `ws://HOST:PORT/mesh`, with IPv6 literals bracketed.
fn url(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("ws://[{host}]:{port}{PATH}")
    } else {
        format!("ws://{host}:{port}{PATH}")
    }
}

pub(crate) async fn dial(host: &str, port: u16, opts: &LinkOptions) -> io::Result<Link> {
    let ds = format!("ws!{host}!{port}");
    let stream = tcp::connect(host, port, &ds).await?;
    let remote = stream.peer_addr().map(|a| tcp::describe("ws", a));
    let local = stream.local_addr().map(|a| tcp::describe("ws", a));
    let handshake = tokio_tungstenite::client_async_with_config(url(host, port), stream, Some(config(opts)));
    let (ws, _response) = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{ds}: no handshake answer in {}s", CONNECT_TIMEOUT.as_secs()),
            )
        })?
        .map_err(|e| {
            let e = io_error(e);
            io::Error::new(e.kind(), format!("{ds}: handshake: {e}"))
        })?;
    let (tx, rx) = frames(ws, opts.max_frame);
    Ok(Link {
        tx,
        rx,
        remote: remote.unwrap_or_else(|_| ds.clone()),
        local: local.unwrap_or_else(|e| format!("ws!? ({e})")),
        uid: None,
        gate: None,
    })
}

/// A WebSocket listener: the output queue of an acceptor task.
///
/// The task owns the TCP listener, and an aborted task is only dropped
/// when the runtime next gets to it. So that dropping the listener closes
/// the port at once (new connections refused, the port free to bind
/// again), we also keep a duplicate of the socket and shut it down.
#[derive(Debug)]
pub(crate) struct WsListener {
    ready: mpsc::Receiver<io::Result<Link>>,
    local: SocketAddr,
    ds: String,
    acceptor: JoinHandle<()>,
    socket: OwnedFd,
}

/// Listens on `host!port`; with `guarded`, accepted links stay under the
/// pre-authentication limits until secured.
pub(crate) async fn listen(host: &Host, port: u16, opts: &LinkOptions, guarded: bool) -> io::Result<WsListener> {
    let ds = format!("ws!{host}!{port}");
    let ctx = |what: &'static str| {
        let ds = &ds;
        move |e: io::Error| crate::with_context(e, format_args!("{ds}: {what}"))
    };
    let listener = tcp::bind(host, port, &ds).await?;
    let local = listener.local_addr().map_err(ctx("local address"))?;
    let socket = listener.as_fd().try_clone_to_owned().map_err(ctx("dup"))?;
    let (tx, ready) = mpsc::channel(READY_QUEUE);
    let acceptor = tokio::spawn(acceptor(listener, ds.clone(), opts.clone(), guarded, tx));
    Ok(WsListener { ready, local, ds, acceptor, socket })
}

impl WsListener {
    /// Cancel-safe: a link is either received or left in the queue.
    pub(crate) async fn accept(&mut self) -> io::Result<Link> {
        match self.ready.recv().await {
            Some(result) => result,
            // Only if the acceptor task died, which it does not by design.
            None => Err(io::Error::other(format!("{}: acceptor stopped", self.ds))),
        }
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for WsListener {
    fn drop(&mut self) {
        // On Linux, shutting down a listening socket stops it listening
        // and releases the port for a new listener, even though the
        // acceptor task still holds its descriptor for a moment.
        if let Err(e) = shutdown(self.socket.as_raw_fd(), Shutdown::Both) {
            tracing::debug!("{}: shutdown: {e}", self.ds);
        }
        // Dropping the task drops its JoinSet, which aborts the
        // handshakes in flight.
        self.acceptor.abort();
    }
}

/// Accepts TCP connections and starts a handshake task for each, never
/// waiting for one to finish (admission bounds them); finished links go
/// to `ready`.
async fn acceptor(
    listener: TokioTcpListener,
    ds: String,
    opts: LinkOptions,
    guarded: bool,
    ready: mpsc::Sender<io::Result<Link>>,
) {
    let admission = Arc::new(Admission::default());
    let mut handshakes = JoinSet::new();
    loop {
        // Reap finished tasks; evicted ones end at their next read.
        while handshakes.try_join_next().is_some() {}
        let accepted = tokio::select! {
            accepted = tcp::accept_stream(&listener, &ds) => accepted,
            () = ready.closed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let gate = admission.admit(peer.ip());
                handshakes.spawn(handshake(stream, peer, gate, guarded, opts.clone(), ready.clone()));
            }
            Err(e) => {
                // The listener's own trouble (e.g. out of descriptors):
                // tell the owner, then pause so we do not spin on it.
                if ready.send(Err(e)).await.is_err() {
                    return;
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Server side of one handshake; failures are the client's problem and
/// only logged.
async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    gate: Gate,
    guarded: bool,
    opts: LinkOptions,
    ready: mpsc::Sender<io::Result<Link>>,
) {
    let remote = tcp::describe("ws", peer);
    let local = stream.local_addr().map(|a| tcp::describe("ws", a));
    let stream = Gated::new(stream, gate.clone());
    let accept = tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(config(&opts)));
    let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!("{remote}: ws handshake failed: {}", io_error(e));
            return;
        }
        Err(_) => {
            tracing::debug!("{remote}: ws handshake timed out after {}s", HANDSHAKE_TIMEOUT.as_secs());
            return;
        }
    };
    let gate = if guarded {
        Some(gate)
    } else {
        gate.open();
        None
    };
    let (tx, rx) = frames(ws, opts.max_frame);
    let link = Link { tx, rx, remote, local: local.unwrap_or_else(|e| format!("ws!? ({e})")), uid: None, gate };
    // Waits while the queue is full (the owner is not accepting); fails
    // only when the listener is gone, and the link just closes then.
    let _ = ready.send(Ok(link)).await;
}

/// Refuses any path but [`PATH`], so stray HTTP clients get a 404 rather
/// than a link.
#[allow(clippy::result_large_err)] // the error type is fixed by tungstenite
fn check_path(request: &Request, response: Response) -> Result<Response, ErrorResponse> {
    if request.uri().path() == PATH {
        return Ok(response);
    }
    let mut refusal = ErrorResponse::new(Some(format!("no mesh here; try {PATH}\n")));
    *refusal.status_mut() = StatusCode::NOT_FOUND;
    Err(refusal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(url("127.0.0.1", 80), "ws://127.0.0.1:80/mesh");
        assert_eq!(url("::1", 80), "ws://[::1]:80/mesh");
    }

    #[test]
    fn capacity_error_reads_like_the_others() {
        let e = io_error(WsError::Capacity(CapacityError::MessageTooLong { size: 10, max_size: 4 }));
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(e.to_string(), "frame too large: 10 bytes, limit 4");
    }
}
