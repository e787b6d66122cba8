//! `ws!HOST!PORT`: WebSocket links, for networks that pass only HTTP.
//!
//! One frame is one binary message; the client asks for `ws://HOST:PORT/mesh`
//! and the server refuses any other path. Pings are answered by tungstenite
//! itself (it queues the pong and writes it on the next read or flush), a
//! text message is a protocol error, a close message ends the stream.
//!
//! The WebSocket handshake is a network round trip that a slow or hostile
//! client can stall, so `accept` does not wait on any one of them: it takes
//! TCP connections, handshakes each in its own task under a timeout, at
//! most [`MAX_HANDSHAKES`] at once, and returns whichever finishes first.
//! One bad client costs a debug log line, not the listener.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{Sink, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener as TokioTcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::addr::Host;
use crate::link::{too_large, FrameSink, FrameStream, Link, LinkOptions, WRITE_BUFFER};
use crate::tcp::{self, CONNECT_TIMEOUT};

/// The one HTTP path a mesh WebSocket lives on.
const PATH: &str = "/mesh";

/// Longest a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress (or finished, awaiting `accept`) at once;
/// further connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 64;

fn config(opts: &LinkOptions) -> WebSocketConfig {
    // Room for one full frame and its header on top of the batching
    // buffer: the sink only adds a message after the buffer drained below
    // `WRITE_BUFFER`, so this bound is never hit in normal use.
    let max_buffer = WRITE_BUFFER
        .saturating_add(opts.max_frame)
        .saturating_add(1024);
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
        WsError::Protocol(p) => {
            io::Error::new(io::ErrorKind::InvalidData, format!("ws: protocol error: {p}"))
        }
        other => io::Error::other(format!("ws: {other}")),
    }
}

/// Splits a WebSocket into a frame sink and stream.
fn frames<T>(ws: WebSocketStream<T>, limit: usize) -> (FrameSink, FrameStream)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    (
        Box::pin(BinarySink { inner: sink, limit }),
        Box::pin(BinaryStream {
            inner: stream,
            done: false,
        }),
    )
}

/// `Sink<Bytes>` over a WebSocket: each frame becomes one binary message.
struct BinarySink<T> {
    inner: SplitSink<WebSocketStream<T>, Message>,
    limit: usize,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Sink<Bytes> for BinarySink<T> {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_ready(cx).map_err(io_error)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Bytes) -> io::Result<()> {
        // tungstenite checks sizes only on receive; check here so the
        // sender gets the error instead of the peer dropping the link.
        if frame.len() > self.limit {
            return Err(too_large(io::ErrorKind::InvalidInput, frame.len(), self.limit));
        }
        Pin::new(&mut self.inner)
            .start_send(Message::Binary(frame))
            .map_err(io_error)
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
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        while !self.done {
            let item = ready!(self.inner.poll_next_unpin(cx));
            let result = match item {
                Some(Ok(Message::Binary(frame))) => return Poll::Ready(Some(Ok(frame))),
                // Pongs go out through tungstenite; nothing for us to do.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | None => None,
                Some(Ok(Message::Text(_))) => Some(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "ws: text message on a binary link",
                ))),
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
    let handshake =
        tokio_tungstenite::client_async_with_config(url(host, port), stream, Some(config(opts)));
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
    })
}

/// A WebSocket listener: a TCP listener plus the handshakes in flight.
///
/// The listening socket is owned here, not by a background task, so
/// dropping the listener closes the port at once.
#[derive(Debug)]
pub(crate) struct WsListener {
    listener: TokioTcpListener,
    local: SocketAddr,
    ds: String,
    opts: LinkOptions,
    /// Each task handshakes one connection; `None` means it failed.
    /// Dropping the set aborts them.
    handshakes: JoinSet<Option<Link>>,
}

pub(crate) async fn listen(host: &Host, port: u16, opts: &LinkOptions) -> io::Result<WsListener> {
    let ds = format!("ws!{host}!{port}");
    let listener = tcp::bind(host, port, &ds).await?;
    let local = listener
        .local_addr()
        .map_err(|e| crate::with_context(e, format_args!("{ds}: local address")))?;
    Ok(WsListener {
        listener,
        local,
        ds,
        opts: opts.clone(),
        handshakes: JoinSet::new(),
    })
}

impl WsListener {
    /// Takes new TCP connections and collects finished handshakes until
    /// one yields a link. Handshakes run in their own tasks, so a slow
    /// client delays nobody. Cancel-safe: both `accept` and `join_next` are,
    /// and a handshake finished meanwhile stays in the set.
    pub(crate) async fn accept(&mut self) -> io::Result<Link> {
        loop {
            let room = self.handshakes.len() < MAX_HANDSHAKES;
            tokio::select! {
                accepted = tcp::accept_stream(&self.listener, &self.ds), if room => {
                    let (stream, peer) = accepted?;
                    self.handshakes.spawn(handshake(stream, peer, self.opts.clone()));
                }
                Some(done) = self.handshakes.join_next() => match done {
                    Ok(Some(link)) => return Ok(link),
                    Ok(None) => {}
                    // A handshake task panicked: a bug, but one client's.
                    Err(e) => tracing::warn!("{}: handshake task: {e}", self.ds),
                },
            }
        }
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// Server side of one handshake; failures are the client's problem and
/// only logged.
async fn handshake(stream: TcpStream, peer: SocketAddr, opts: LinkOptions) -> Option<Link> {
    let remote = tcp::describe("ws", peer);
    let local = stream.local_addr().map(|a| tcp::describe("ws", a));
    let accept =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(config(&opts)));
    let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!("{remote}: ws handshake failed: {}", io_error(e));
            return None;
        }
        Err(_) => {
            tracing::debug!(
                "{remote}: ws handshake timed out after {}s",
                HANDSHAKE_TIMEOUT.as_secs()
            );
            return None;
        }
    };
    let (tx, rx) = frames(ws, opts.max_frame);
    Some(Link {
        tx,
        rx,
        remote,
        local: local.unwrap_or_else(|e| format!("ws!? ({e})")),
        uid: None,
    })
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
        let e = io_error(WsError::Capacity(CapacityError::MessageTooLong {
            size: 10,
            max_size: 4,
        }));
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(e.to_string(), "frame too large: 10 bytes, limit 4");
    }
}
