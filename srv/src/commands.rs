//! The client commands: `mesh send`, `mesh serve`, `mesh routes`, `mesh ls`,
//! `mesh cat`. Each talks to a running router over its Unix socket; `ls`,
//! `cat` and `routes` read the tree through [`crate::browse`].

use std::io::Write;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use bytes::BytesMut;
use dial::DialString;
use ns::client::Client;
use ns::conv::Msg;
use ns::{Addr, Name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::exec::Exec;

/// Largest message `send` makes from standard input.
const CHUNK: usize = 64 << 10;

async fn connect(router: &DialString) -> anyhow::Result<Client> {
    Client::connect(router).await.with_context(|| format!("cannot reach the router at {router}"))
}

/// Sends standard input to `path` as messages, one per read, and copies
/// the replies to standard output until the conversation ends.
pub async fn send(router: &DialString, path: &str, reply_to: &[String]) -> anyhow::Result<()> {
    let dst = Addr::parse(path)?;
    let reply = reply_to.iter().map(|p| Addr::parse(p)).collect::<Result<Vec<_>, _>>()?;
    let client = connect(router).await?;
    let conv = client.open(dst, reply);
    let ns::conv::Conv { mut rx, tx } = conv;
    let writer = async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            buf.reserve(CHUNK);
            let n = stdin.read_buf(&mut buf).await?;
            if n == 0 {
                break;
            }
            tx.send(buf.split().freeze()).await.map_err(|e| anyhow!(e))?;
        }
        tx.eof().await;
        // Keep our end open until the replies are read.
        Ok::<_, anyhow::Error>(tx)
    };
    let reader = async move {
        let mut out = tokio::io::stdout();
        while let Some(m) = rx.recv().await {
            match m {
                Msg::Data(b) => {
                    out.write_all(&b).await?;
                    out.flush().await?;
                }
                Msg::Eof => break,
                Msg::Error(e) => return Err(anyhow!("{path}: {e}")),
            }
        }
        Ok(())
    };
    tokio::pin!(writer, reader);
    let mut keep = None;
    loop {
        tokio::select! {
            w = &mut writer, if keep.is_none() => match w {
                Ok(tx) => keep = Some(tx),
                // A failed write is reported by the reader, with the reason.
                Err(_) => return reader.await,
            },
            r = &mut reader => return r,
        }
    }
}

/// Offers `name`, served by running `command` per conversation, until the
/// router goes or `shutdown`. The conversations still running are dropped
/// with the runtime when the command returns, which kills their process
/// groups ([`crate::exec`]).
pub async fn serve(
    router: &DialString,
    name: &str,
    command: Vec<String>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let name = Name::new(name)?;
    let client = connect(router).await?;
    client.offer(name.clone(), Arc::new(Exec::new(command)?)).await;
    eprintln!("serving {name} on {}", client.machine());
    tokio::select! {
        _ = client.closed() => Err(anyhow!("the router closed the connection")),
        _ = shutdown.cancelled() => Ok(()),
    }
}

/// Prints the names in directory `path` of the router's tree (another
/// machine's under `/n/M`), one a line.
pub async fn ls(router: &DialString, path: &str) -> anyhow::Result<()> {
    let client = connect(router).await?;
    let names = crate::browse::ls(&client, path).await.map_err(|e| anyhow!("ls {path}: {e}"))?;
    let mut out = std::io::stdout();
    for n in names {
        writeln!(out, "{n}")?;
    }
    Ok(())
}

/// Copies file `path` of the router's tree to standard output.
pub async fn cat(router: &DialString, path: &str) -> anyhow::Result<()> {
    let client = connect(router).await?;
    crate::browse::cat(&client, path, |b| std::io::stdout().write_all(b))
        .await
        .map_err(|e| anyhow!("cat {path}: {e}"))?;
    std::io::stdout().flush()?;
    Ok(())
}
