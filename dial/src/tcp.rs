//! `tcp!HOST!PORT`: TCP links, and the TCP plumbing `ws` builds on.
//!
//! Every socket gets `TCP_NODELAY`: frames are already batched by the
//! sink's write buffer, so Nagle would only add latency to the last
//! frame of each flush.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener as TokioTcpListener, TcpStream};

use crate::addr::Host;
use crate::link::{framed, framed_gated, Link, LinkOptions};
use crate::preauth::{Admission, Gate, Gated};
use crate::with_context;

/// Longest we wait for a name lookup or one connection attempt. The
/// kernel's own SYN timeout is minutes, far too long for a router that
/// redials peers.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most addresses of one name we try in turn.
const MAX_ADDRS: usize = 16;

/// A socket address in dial-string form: `NET!IP!PORT`.
pub(crate) fn describe(net: &str, addr: SocketAddr) -> String {
    format!("{net}!{}!{}", addr.ip(), addr.port())
}

/// The address to bind for `host`: `*` is every IPv4 address.
pub(crate) fn bind_host(host: &Host) -> &str {
    match host {
        Host::Any => "0.0.0.0",
        Host::Name(name) => name,
    }
}

/// Resolves `host` and connects to its addresses in turn, returning the
/// first that answers. `ds` names the dial string in errors.
pub(crate) async fn connect(host: &str, port: u16, ds: &str) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| timed_out(ds, "resolve"))?
        .map_err(|e| with_context(e, format_args!("{ds}: resolve {host:?}")))?
        .take(MAX_ADDRS)
        .collect();
    let mut last = None;
    for addr in &addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                nodelay(&stream, ds);
                return Ok(stream);
            }
            Ok(Err(e)) => last = Some(with_context(e, format_args!("{ds}: connect {addr}"))),
            Err(_) => last = Some(timed_out(ds, &format!("connect {addr}"))),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{ds}: {host:?} has no addresses"))))
}

fn timed_out(ds: &str, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{ds}: {what}: no answer in {}s", CONNECT_TIMEOUT.as_secs()))
}

/// Sets `TCP_NODELAY`; a failure only costs latency, so it is logged.
pub(crate) fn nodelay(stream: &TcpStream, ds: &str) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("{ds}: set TCP_NODELAY: {e}");
    }
}

/// Binds `host!port`; `ds` names the dial string in errors.
pub(crate) async fn bind(host: &Host, port: u16, ds: &str) -> io::Result<TokioTcpListener> {
    TokioTcpListener::bind((bind_host(host), port)).await.map_err(|e| with_context(e, format_args!("{ds}: bind")))
}

/// Accepts the next TCP connection, skipping connections that died before
/// we took them. Cancel-safe.
pub(crate) async fn accept_stream(listener: &TokioTcpListener, ds: &str) -> io::Result<(TcpStream, SocketAddr)> {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                nodelay(&stream, ds);
                return Ok((stream, peer));
            }
            Err(e) if crate::is_per_connection(&e) => tracing::debug!("{ds}: accept: {e}"),
            Err(e) => return Err(with_context(e, format_args!("{ds}: accept"))),
        }
    }
}

pub(crate) async fn dial(host: &str, port: u16, opts: &LinkOptions) -> io::Result<Link> {
    let ds = format!("tcp!{host}!{port}");
    let stream = connect(host, port, &ds).await?;
    Ok(link(stream, opts, None))
}

/// Frames an established TCP stream; with a gate, under the
/// pre-authentication limits.
fn link(stream: TcpStream, opts: &LinkOptions, gate: Option<Gate>) -> Link {
    let remote = stream.peer_addr().map(|a| describe("tcp", a));
    let local = stream.local_addr().map(|a| describe("tcp", a));
    let (tx, rx) = match &gate {
        Some(g) => framed_gated(Gated::new(stream, g.clone()), opts, gate.clone()),
        None => framed(stream, opts),
    };
    Link {
        tx,
        rx,
        remote: remote.unwrap_or_else(|e| format!("tcp!? ({e})")),
        local: local.unwrap_or_else(|e| format!("tcp!? ({e})")),
        uid: None,
        gate,
    }
}

/// A listening TCP socket producing framed links.
#[derive(Debug)]
pub(crate) struct TcpListener {
    listener: TokioTcpListener,
    local: SocketAddr,
    ds: String,
    opts: LinkOptions,
    /// For links to be secured: the pending connections.
    admission: Option<Arc<Admission>>,
}

/// Listens on `host!port`; with `guarded`, accepted links are under the
/// pre-authentication limits until secured.
pub(crate) async fn listen(host: &Host, port: u16, opts: &LinkOptions, guarded: bool) -> io::Result<TcpListener> {
    let ds = format!("tcp!{host}!{port}");
    let listener = bind(host, port, &ds).await?;
    let local = listener.local_addr().map_err(|e| with_context(e, format_args!("{ds}: local address")))?;
    let admission = guarded.then(Arc::default);
    Ok(TcpListener { listener, local, ds, opts: opts.clone(), admission })
}

impl TcpListener {
    /// Cancel-safe: no await after the connection is taken.
    pub(crate) async fn accept(&mut self) -> io::Result<Link> {
        let (stream, peer) = accept_stream(&self.listener, &self.ds).await?;
        let gate = self.admission.as_ref().map(|a| a.admit(peer.ip()));
        Ok(link(stream, &self.opts, gate))
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }
}
