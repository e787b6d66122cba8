//! The TCP baselines: what the mesh would cost if it were free. Both ends
//! live in this process, on loopback, with TCP_NODELAY, like the mesh's
//! own tcp links.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A connected pair: the client end, and the server end for a task.
async fn pair(ip: &str) -> anyhow::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind((ip, 0)).await.with_context(|| format!("bind {ip}"))?;
    let at = listener.local_addr()?;
    let (client, server) = tokio::try_join!(TcpStream::connect(at), async { listener.accept().await.map(|(s, _)| s) })?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    Ok((client, server))
}

/// A ping-pong over one connection: the server task echoes fixed-size
/// messages back.
pub struct PingPong {
    client: TcpStream,
    server: JoinHandle<()>,
    size: usize,
}

impl PingPong {
    pub async fn new(ip: &str, size: usize) -> anyhow::Result<PingPong> {
        let (client, mut server) = pair(ip).await?;
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; size];
            while server.read_exact(&mut buf).await.is_ok() {
                if server.write_all(&buf).await.is_err() {
                    break;
                }
            }
        });
        Ok(PingPong { client, server: task, size })
    }

    /// One request and its reply; `buf` is sent and overwritten.
    pub async fn round_trip(&mut self, buf: &mut [u8]) -> anyhow::Result<()> {
        if buf.len() != self.size {
            bail!("ping-pong message of {} bytes, set up for {}", buf.len(), self.size);
        }
        self.client.write_all(buf).await?;
        self.client.read_exact(buf).await?;
        Ok(())
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Writes `chunk` repeatedly, `total` bytes or until `deadline`, over a
/// fresh connection whose reader answers the byte count at end of
/// stream, as the mesh's sink does. Returns the bytes that arrived and
/// the time from the first write to the count; connecting is not timed.
pub async fn stream(ip: &str, chunk: &[u8], total: usize, deadline: Instant) -> anyhow::Result<(u64, Duration)> {
    let (mut client, mut server) = pair(ip).await?;
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 << 10];
        let mut got: u64 = 0;
        loop {
            match server.read(&mut buf).await? {
                0 => break,
                n => got += n as u64,
            }
        }
        server.write_all(&got.to_be_bytes()).await?;
        Ok::<u64, std::io::Error>(got)
    });
    let t = Instant::now();
    let mut sent: u64 = 0;
    while (sent as usize) < total && Instant::now() < deadline {
        client.write_all(chunk).await?;
        sent += chunk.len() as u64;
    }
    client.shutdown().await?;
    let mut count = [0u8; 8];
    client.read_exact(&mut count).await?;
    let took = t.elapsed();
    let got = reader.await.context("raw tcp reader")??;
    if got != sent || u64::from_be_bytes(count) != sent {
        bail!("raw tcp: sent {sent} bytes, reader got {got}");
    }
    Ok((sent, took))
}
