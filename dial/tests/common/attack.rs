//! Attack clients for tests of what unauthenticated connections can cost
//! a listener: floods of idle connections, oversized length prefixes on
//! tcp and ws, and the measurements around them (RSS, a pinned peer's
//! time to secure a link). Written against plain sockets so a
//! process-level suite can aim them at a running router too.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use dial::{DialString, Identity, LinkOptions, Listener, PeerInfo, Role, Trust};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

/// Raises the soft limit on open files to the hard limit (at most
/// `want`), so a flood and the listener's side of it fit. Returns the
/// soft limit now in force.
pub fn raise_nofile(want: u64) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return 1024 };
    let new = want.min(hard).max(soft);
    if new > soft && setrlimit(Resource::RLIMIT_NOFILE, new, hard).is_ok() {
        return new;
    }
    soft
}

/// This process's resident set, in bytes, from `/proc/self/status`.
pub fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Runs `f` while sampling [`rss`] every 20 ms; returns its output and
/// the highest RSS seen.
pub async fn peak_rss<T>(f: impl std::future::Future<Output = T>) -> (T, u64) {
    tokio::pin!(f);
    let mut peak = rss();
    loop {
        tokio::select! {
            out = &mut f => return (out, peak.max(rss())),
            () = tokio::time::sleep(Duration::from_millis(20)) => peak = peak.max(rss()),
        }
    }
}

/// Source addresses for `n` connections: 127.0.0.1, .2, ... in turn, so
/// a flood comes from several addresses as a real one would.
pub fn sources(n: usize) -> Vec<IpAddr> {
    (0..n).map(|i| IpAddr::from([127, 0, 0, 1 + (i % 40) as u8])).collect()
}

/// The socket address of a bound tcp or ws listener.
pub fn socket_addr(ds: &DialString) -> SocketAddr {
    match ds {
        DialString::Tcp(host, port) | DialString::Ws(host, port) => {
            format!("{host}:{port}").parse().unwrap_or_else(|e| panic!("{ds}: {e}"))
        }
        _ => panic!("{ds} is not tcp or ws"),
    }
}

/// Opens a TCP connection to `to` from `from` (port chosen by the kernel).
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Opens `n` connections to `to` that never send a byte (idle, or a
/// handshake stalled before it began): what a listener's slots see of a
/// flood. Connections that fail are counted, not fatal.
pub async fn idle_flood(to: SocketAddr, n: usize) -> (Vec<TcpStream>, usize) {
    let mut open = Vec::with_capacity(n);
    let mut failed = 0;
    for from in sources(n) {
        match tokio::time::timeout(Duration::from_secs(5), connect_from(from, to)).await {
            Ok(Ok(s)) => open.push(s),
            _ => failed += 1,
        }
    }
    (open, failed)
}

/// What one oversized-prefix attacker saw.
#[derive(Debug)]
pub struct Oversized {
    /// Bytes the kernel took from us (into socket buffers, not
    /// necessarily read by the listener) before the link failed.
    pub sent: usize,
    /// Whether the listener closed the connection within the bound.
    pub closed: bool,
}

/// A raw WebSocket upgrade for `/mesh`; returns once the 101 answer is
/// read.
pub async fn ws_upgrade(s: &mut TcpStream, to: SocketAddr) -> io::Result<()> {
    let req = format!(
        "GET /mesh HTTP/1.1\r\nHost: {to}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut answer = Vec::new();
    let mut b = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 || answer.len() > 4096 {
            return Err(io::Error::other("no WebSocket answer"));
        }
        answer.push(b[0]);
    }
    if !answer.starts_with(b"HTTP/1.1 101") {
        return Err(io::Error::other(String::from_utf8_lossy(&answer).into_owned()));
    }
    Ok(())
}

/// Announces a frame of `announce` bytes before authenticating (a length
/// prefix on tcp, a masked binary frame header after the upgrade on ws),
/// then sends up to `send` bytes of it, and waits up to `bound` for the
/// listener to close. Keeps the connection open until then, as an
/// attacker would.
pub async fn oversized(to: SocketAddr, ws: bool, announce: u64, send: usize, bound: Duration) -> io::Result<Oversized> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut s = TcpStream::connect(to).await?;
    let mut head = Vec::new();
    if ws {
        // A listener that closes during the upgrade (an evicted
        // connection) has refused the attack already.
        if ws_upgrade(&mut s, to).await.is_err() {
            return Ok(Oversized { sent: 0, closed: true });
        }
        // FIN + binary, masked, 64-bit length, a zero mask.
        head.extend_from_slice(&[0x82, 0x80 | 127]);
        head.extend_from_slice(&announce.to_be_bytes());
        head.extend_from_slice(&[0, 0, 0, 0]);
    } else {
        let len = u32::try_from(announce).map_err(|_| io::Error::other("tcp prefix is 32 bits"))?;
        head.extend_from_slice(&len.to_be_bytes());
    }
    let deadline = Instant::now() + bound;
    let mut sent = 0;
    let write = async {
        s.write_all(&head).await?;
        while sent < send {
            let n = (send - sent).min(ZEROS.len());
            s.write_all(&ZEROS[..n]).await?;
            sent += n;
        }
        io::Result::Ok(())
    };
    let wrote = tokio::time::timeout_at(deadline.into(), write).await;
    let closed = match wrote {
        Ok(Err(_)) => true,
        Err(_) => false,
        // All sent: closed only if the listener ends the connection.
        Ok(Ok(())) => {
            let mut b = [0u8; 256];
            loop {
                match tokio::time::timeout_at(deadline.into(), s.read(&mut b)).await {
                    Ok(Ok(0) | Err(_)) => break true,
                    Ok(Ok(_)) => continue,
                    Err(_) => break false,
                }
            }
        }
    };
    Ok(Oversized { sent, closed })
}

/// Runs `n` [`oversized`] attackers at once; returns each one's result.
pub async fn oversized_many(
    to: SocketAddr,
    ws: bool,
    n: usize,
    announce: u64,
    send: usize,
    bound: Duration,
) -> Vec<io::Result<Oversized>> {
    let mut set = JoinSet::new();
    for _ in 0..n {
        set.spawn(oversized(to, ws, announce, send, bound));
    }
    let mut out = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap_or_else(|e| Err(io::Error::other(e))));
    }
    out
}

/// Two machines that pin each other's keys: (listener's identity and
/// trust, pinned peer's identity and trust).
pub fn pinned_pair() -> ((Identity, Trust), (Identity, Trust)) {
    let (a, b) = (Identity::generate(), Identity::generate());
    let mut ta = Trust::new();
    let mut tb = Trust::new();
    ta.pin("b", b.public()).unwrap_or_else(|e| panic!("pin b: {e}"));
    tb.pin("a", a.public()).unwrap_or_else(|e| panic!("pin a: {e}"));
    ((a, ta), (b, tb))
}

/// A router's accept loop in small: every accepted link is secured in a
/// task of its own, and a secured one echoes frames. Ends with the task.
pub async fn serve(mut listener: Listener, opts: LinkOptions, me: Identity, trust: Trust) {
    let (me, trust) = (std::sync::Arc::new(me), std::sync::Arc::new(trust));
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let Ok(link) = listener.accept().await else { continue };
        let (opts, me, trust) = (opts.clone(), me.clone(), trust.clone());
        tasks.spawn(async move {
            let Ok((mut link, _)) = dial::secure(link, &opts, &me, &trust, Role::Responder).await else { return };
            while let Some(Ok(frame)) = link.rx.next().await {
                if link.tx.send(frame).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The pinned peer: dials `ds`, secures the link and has one frame
/// echoed. Returns the time that took and whom it met.
pub async fn pinned_peer(
    ds: &DialString,
    opts: &LinkOptions,
    me: &Identity,
    trust: &Trust,
) -> io::Result<(Duration, PeerInfo)> {
    let start = Instant::now();
    let link = dial::dial(ds, opts).await?;
    let (mut link, peer) = dial::secure(link, opts, me, trust, Role::Initiator).await?;
    link.tx.send("ping".into()).await?;
    match link.rx.next().await {
        Some(Ok(f)) if f.clone().into_bytes()[..] == b"ping"[..] => Ok((start.elapsed(), peer)),
        other => Err(io::Error::other(format!("no echo: {other:?}"))),
    }
}
