//! The rungs of the RPC ladder: from a raw TCP ping-pong up to the
//! mesh, adding one of the mesh's layers at a time.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use dial::{FrameSink, Link};
use futures::{SinkExt, StreamExt};
use ns::conv::Conv;
use ns::{Envelope, Kind, Name};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

use crate::mesh::addr;
use crate::raw::PingPong;
use crate::rpc::{mesh_round_trip, raw_round_trip, Ping};

/// A tcp link pair made by the mesh's own transport crate:
/// (dialing end, accepting end).
pub async fn link_pair(ip: &str) -> anyhow::Result<(Link, Link)> {
    let opts = ns::link::link_options();
    let ds: dial::DialString = format!("tcp!{ip}!0").parse()?;
    let mut l = dial::listen(&ds, &opts).await?;
    let at = l.local_addr();
    let (c, s) = tokio::try_join!(dial::dial(&at, &opts), l.accept())?;
    Ok((c, s))
}

/// An envelope like the mesh's first hop carries: conversation 1 of a
/// to b's echo, having crossed a.
pub fn envelope(data: Bytes) -> anyhow::Result<Envelope> {
    let mut e = Envelope::new(1, addr("/n/a/svc/echo/1")?, addr("/n/b/svc/echo")?, Kind::Data, data);
    e.via.push(Name::new("a").map_err(|e| anyhow!("{e}"))?);
    Ok(e)
}

/// Turns a request around, as the echo's reply would travel.
fn reply(mut e: Envelope, me: &Name) -> Envelope {
    std::mem::swap(&mut e.src, &mut e.dst);
    e.via.clear();
    e.via.push(me.clone());
    e
}

pub enum Rung {
    Raw(PingPong),
    /// Frames over a dial link, sent and received inline at both ends;
    /// with `Some(envelope)`, each frame is an encoded envelope.
    Framed {
        link: Link,
        server: JoinHandle<()>,
        envelope: Option<Envelope>,
    },
    /// Envelopes through a reader task and a queue at both ends, but
    /// written inline by the task that sends them (the sink behind a
    /// lock): what the router's links would cost without writer tasks.
    Inline {
        sink: Arc<Mutex<FrameSink>>,
        inbox: mpsc::Receiver<Envelope>,
        tasks: Vec<JoinHandle<()>>,
        envelope: Envelope,
    },
    /// Envelopes through a writer task and a reader task at both ends and
    /// a queue to an echo task, the way the router moves them.
    Tasked {
        out: mpsc::Sender<Envelope>,
        inbox: mpsc::Receiver<Envelope>,
        tasks: Vec<JoinHandle<()>>,
        envelope: Envelope,
    },
    Mesh(Conv),
}

impl Rung {
    pub async fn framed(ip: &str, with_envelope: bool) -> anyhow::Result<Rung> {
        let (link, mut far) = link_pair(ip).await?;
        let me = Name::new("b").map_err(|e| anyhow!("{e}"))?;
        let server = tokio::spawn(async move {
            while let Some(Ok(f)) = far.rx.next().await {
                let out = if with_envelope {
                    match Envelope::decode_frame(f) {
                        Ok(e) => reply(e, &me).encode(),
                        Err(_) => break,
                    }
                } else {
                    f.into_bytes()
                };
                if far.tx.send(out.into()).await.is_err() {
                    break;
                }
            }
        });
        let envelope = if with_envelope { Some(envelope(Bytes::from_static(&[0x5a; 64]))?) } else { None };
        Ok(Rung::Framed { link, server, envelope })
    }

    pub async fn tasked(ip: &str) -> anyhow::Result<Rung> {
        let (near, far) = link_pair(ip).await?;
        let (out, inbox, mut tasks) = link_end(near);
        let (far_out, mut far_in, far_tasks) = link_end(far);
        tasks.extend(far_tasks);
        let me = Name::new("b").map_err(|e| anyhow!("{e}"))?;
        tasks.push(tokio::spawn(async move {
            while let Some(e) = far_in.recv().await {
                if far_out.send(reply(e, &me)).await.is_err() {
                    break;
                }
            }
        }));
        Ok(Rung::Tasked { out, inbox, tasks, envelope: envelope(Bytes::from_static(&[0x5a; 64]))? })
    }
}

impl Rung {
    pub async fn inline(ip: &str) -> anyhow::Result<Rung> {
        let (near, far) = link_pair(ip).await?;
        let (sink, inbox, reader) = reader_end(near);
        let (far_sink, mut far_in, far_reader) = reader_end(far);
        let me = Name::new("b").map_err(|e| anyhow!("{e}"))?;
        let echo = tokio::spawn(async move {
            while let Some(e) = far_in.recv().await {
                if far_sink.lock().await.send(dial::Frame::from(reply(e, &me).encode())).await.is_err() {
                    break;
                }
            }
        });
        Ok(Rung::Inline {
            sink,
            inbox,
            tasks: vec![reader, far_reader, echo],
            envelope: envelope(Bytes::from_static(&[0x5a; 64]))?,
        })
    }
}

/// A reader task decoding into a queue; the sink for inline writes.
fn reader_end(link: Link) -> (Arc<Mutex<FrameSink>>, mpsc::Receiver<Envelope>, JoinHandle<()>) {
    let Link { tx, mut rx, .. } = link;
    let (in_tx, in_rx) = mpsc::channel(64);
    let reader = tokio::spawn(async move {
        while let Some(Ok(f)) = rx.next().await {
            let Ok(e) = Envelope::decode_frame(f) else { break };
            if in_tx.send(e).await.is_err() {
                break;
            }
        }
    });
    (Arc::new(Mutex::new(tx)), in_rx, reader)
}

/// A writer task and a reader task on a link, with queues in and out:
/// the shape of the router's link (`ns::outlet`, `run_peer`).
fn link_end(link: Link) -> (mpsc::Sender<Envelope>, mpsc::Receiver<Envelope>, Vec<JoinHandle<()>>) {
    let Link { tx, mut rx, .. } = link;
    let (out_tx, out_rx) = mpsc::channel(64);
    let (in_tx, in_rx) = mpsc::channel(64);
    let writer = tokio::spawn(write_envelopes(out_rx, tx));
    let reader = tokio::spawn(async move {
        while let Some(Ok(f)) = rx.next().await {
            let Ok(e) = Envelope::decode_frame(f) else { break };
            if in_tx.send(e).await.is_err() {
                break;
            }
        }
    });
    (out_tx, in_rx, vec![writer, reader])
}

/// As the router's writer does: everything queued, then one flush.
async fn write_envelopes(mut rx: mpsc::Receiver<Envelope>, mut tx: FrameSink) {
    while let Some(e) = rx.recv().await {
        let mut res = tx.feed(e.encode().into()).await;
        while res.is_ok() {
            match rx.try_recv() {
                Ok(e) => res = tx.feed(e.encode().into()).await,
                Err(_) => break,
            }
        }
        if res.and(tx.flush().await).is_err() {
            break;
        }
    }
}

impl Ping for Rung {
    async fn round_trip(&mut self) -> anyhow::Result<()> {
        match self {
            Rung::Raw(p) => raw_round_trip(p).await,
            Rung::Mesh(conv) => mesh_round_trip(conv).await,
            Rung::Framed { link, envelope, .. } => {
                let frame = match envelope {
                    Some(e) => e.encode(),
                    None => Bytes::from_static(&[0x5a; 64]),
                };
                link.tx.send(frame.into()).await?;
                let back = link.rx.next().await.ok_or_else(|| anyhow!("link closed"))??;
                if envelope.is_some() {
                    Envelope::decode_frame(back).context("reply")?;
                }
                Ok(())
            }
            Rung::Inline { sink, inbox, envelope, .. } => {
                sink.lock().await.send(envelope.encode().into()).await?;
                match inbox.recv().await {
                    Some(e) if e.data.len() == envelope.data.len() => Ok(()),
                    Some(_) => bail!("reply of the wrong size"),
                    None => bail!("reader gone"),
                }
            }
            Rung::Tasked { out, inbox, envelope, .. } => {
                out.send(envelope.clone()).await.map_err(|_| anyhow!("writer gone"))?;
                match inbox.recv().await {
                    Some(e) if e.data.len() == envelope.data.len() => Ok(()),
                    Some(_) => bail!("reply of the wrong size"),
                    None => bail!("reader gone"),
                }
            }
        }
    }
}

impl Drop for Rung {
    fn drop(&mut self) {
        match self {
            Rung::Framed { server, .. } => server.abort(),
            Rung::Tasked { tasks, .. } | Rung::Inline { tasks, .. } => tasks.iter().for_each(JoinHandle::abort),
            Rung::Raw(_) | Rung::Mesh(_) => {}
        }
    }
}
