//! Other machines' trees, through the mesh.
//!
//! Every router serves its own tree to the others as the reserved service
//! `router`. Each operation is one conversation with `/n/M/svc/router`,
//! over as many hops as it takes: the first message is a [`TreeReq`].
//! `Stat` and `List` get one [`TreeResp`] and end. `Open` gets `Opened`,
//! then the conversation is the open file:
//!
//! - a stream file (data, clone, trace) carries raw messages both ways,
//!   one per write and one per read, exactly as the file does locally; a
//!   cancel on the conversation is an interrupted read; the opener's end of
//!   input is its close.
//! - a text or ctl file answers `Read` and `Write` requests one by one,
//!   so a bad ctl message fails the opener's write, as it would locally.

use std::sync::Arc;

use bytes::Bytes;
use ns::conv::{Conv, Msg, Service, RESERVED};
use ns::{Addr, MachineId, Name, Router};
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::handle::{Handle, Stream};
use super::tree::{Entry, FileKind};
use super::{handle_kind, Namespace};

/// A request to a machine's tree server.
#[derive(Debug, Serialize, Deserialize)]
pub enum TreeReq {
    Stat(Vec<String>),
    List(Vec<String>),
    Open { path: Vec<String>, read: bool, write: bool },
    Read { offset: u64, size: u32 },
    Write(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// An answer from a tree server.
#[derive(Debug, Serialize, Deserialize)]
pub enum TreeResp {
    Entry(Entry),
    Entries(Vec<Entry>),
    Opened(FileKind),
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    Written(u32),
    Err(String),
}

fn encode<T: Serialize>(v: &T) -> Bytes {
    let mut buf = Vec::new();
    ciborium::into_writer(v, &mut buf).expect("CBOR encoding to memory");
    Bytes::from(buf)
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    ciborium::from_reader(b).map_err(|e| format!("bad tree message: {e}"))
}

fn server(m: &MachineId) -> Addr {
    Addr::on(m.clone(), Name::new(RESERVED).expect("valid name"))
}

/// Sends one request on `conv` and waits for the answer.
async fn ask(conv: &mut Conv, req: &TreeReq) -> Result<TreeResp, String> {
    conv.tx.send(encode(req)).await?;
    match conv.rx.recv().await {
        Some(Msg::Data(b)) => match decode(&b)? {
            TreeResp::Err(e) => Err(e),
            resp => Ok(resp),
        },
        Some(Msg::Error(e)) => Err(e),
        _ => Err(ns::error::EHUNGUP.into()),
    }
}

pub async fn stat(r: &Router, m: &MachineId, path: &[String]) -> Result<Entry, String> {
    let mut conv = r.open(server(m), Vec::new());
    match ask(&mut conv, &TreeReq::Stat(path.to_vec())).await? {
        TreeResp::Entry(e) => Ok(e),
        other => Err(format!("bad tree answer {other:?}")),
    }
}

pub async fn list(r: &Router, m: &MachineId, path: &[String]) -> Result<Vec<Entry>, String> {
    let mut conv = r.open(server(m), Vec::new());
    match ask(&mut conv, &TreeReq::List(path.to_vec())).await? {
        TreeResp::Entries(e) => Ok(e),
        other => Err(format!("bad tree answer {other:?}")),
    }
}

pub async fn open(r: &Router, m: &MachineId, path: &[String], read: bool, write: bool) -> Result<Handle, String> {
    let mut conv = r.open(server(m), Vec::new());
    match ask(&mut conv, &TreeReq::Open { path: path.to_vec(), read, write }).await? {
        TreeResp::Opened(FileKind::Stream) => Ok(Handle::RemoteFile(RemoteFile::Stream(Stream::new(conv)))),
        TreeResp::Opened(kind) => Ok(Handle::RemoteFile(RemoteFile::File(kind, tokio::sync::Mutex::new(conv)))),
        other => Err(format!("bad tree answer {other:?}")),
    }
}

/// A file open on another machine.
pub enum RemoteFile {
    Stream(Arc<Stream>),
    File(FileKind, tokio::sync::Mutex<Conv>),
}

impl RemoteFile {
    pub fn kind(&self) -> FileKind {
        match self {
            RemoteFile::Stream(_) => FileKind::Stream,
            RemoteFile::File(k, _) => *k,
        }
    }

    pub async fn read(&self, offset: u64, size: usize) -> Result<Bytes, String> {
        match self {
            RemoteFile::Stream(s) => s.read(size).await,
            RemoteFile::File(_, c) => match ask(&mut *c.lock().await, &TreeReq::Read { offset, size: size as u32 }).await? {
                TreeResp::Data(d) => Ok(Bytes::from(d)),
                other => Err(format!("bad tree answer {other:?}")),
            },
        }
    }

    pub async fn write(&self, data: &[u8]) -> Result<usize, String> {
        match self {
            RemoteFile::Stream(s) => s.write(data).await,
            RemoteFile::File(_, c) => match ask(&mut *c.lock().await, &TreeReq::Write(data.to_vec())).await? {
                TreeResp::Written(n) => Ok(n as usize),
                other => Err(format!("bad tree answer {other:?}")),
            },
        }
    }

    pub fn stream(&self) -> Option<&Arc<Stream>> {
        match self {
            RemoteFile::Stream(s) => Some(s),
            RemoteFile::File(..) => None,
        }
    }

    pub async fn cancel(&self) {
        if let RemoteFile::Stream(s) = self {
            s.writer().cancel().await;
        }
    }

    pub async fn close(&self) {
        match self {
            RemoteFile::Stream(s) => s.writer().eof().await,
            RemoteFile::File(_, c) => c.lock().await.tx.eof().await,
        }
    }
}

/// This machine's tree, served to the others.
pub struct TreeServer(pub Arc<Namespace>);

impl Service for TreeServer {
    fn serve(&self, conv: Conv) -> futures::future::BoxFuture<'static, ()> {
        let ns = self.0.clone();
        Box::pin(async move {
            let peer = conv.tx.peer().cloned();
            if let Err(e) = serve(ns, conv).await {
                debug!(?peer, "tree server: {e}");
            }
        })
    }
}

async fn serve(ns: Arc<Namespace>, mut conv: Conv) -> Result<(), String> {
    let Some(Msg::Data(first)) = conv.rx.recv().await else { return Ok(()) };
    let reply = |resp: TreeResp| encode(&resp);
    let (path, read, write) = match decode::<TreeReq>(&first)? {
        TreeReq::Stat(p) => {
            let resp = ns.stat(&p).await.map(TreeResp::Entry).unwrap_or_else(TreeResp::Err);
            return conv.tx.send(reply(resp)).await;
        }
        TreeReq::List(p) => {
            let resp = ns.list(&p).await.map(TreeResp::Entries).unwrap_or_else(TreeResp::Err);
            return conv.tx.send(reply(resp)).await;
        }
        TreeReq::Open { path, read, write } => (path, read, write),
        other => return conv.tx.send(reply(TreeResp::Err(format!("{other:?} before open")))).await,
    };
    let h = match ns.open(&path, read, write).await {
        Ok(h) => h,
        Err(e) => return conv.tx.send(reply(TreeResp::Err(e))).await,
    };
    let kind = handle_kind(&h);
    conv.tx.send(reply(TreeResp::Opened(kind))).await?;
    let res = match kind {
        FileKind::Stream => pump(&ns, &h, &mut conv).await,
        _ => answer(&ns, &h, &mut conv).await,
    };
    ns.release(h).await;
    res
}

/// Text and ctl files: one answer per request.
async fn answer(ns: &Namespace, h: &Handle, conv: &mut Conv) -> Result<(), String> {
    while let Some(Msg::Data(b)) = conv.rx.recv().await {
        let resp = match decode::<TreeReq>(&b)? {
            TreeReq::Read { offset, size } => ns.read(h, offset, size as usize).await.map(|d| TreeResp::Data(d.to_vec())),
            TreeReq::Write(d) => ns.write(h, &d).await.map(|n| TreeResp::Written(n as u32)),
            other => Err(format!("{other:?} on an open file")),
        };
        conv.tx.send(encode(&resp.unwrap_or_else(TreeResp::Err))).await?;
    }
    Ok(())
}

/// Stream files: messages both ways until the opener closes.
async fn pump(ns: &Namespace, h: &Handle, conv: &mut Conv) -> Result<(), String> {
    let mut cancels = conv.rx.cancels();
    let mut reading = true;
    loop {
        tokio::select! {
            m = conv.rx.recv() => match m {
                Some(Msg::Data(b)) => { ns.write(h, &b).await?; }
                // The opener closed the file, or failed.
                _ => return Ok(()),
            },
            d = ns.read(h, 0, ns::envelope::MAX_MSG), if reading => {
                let d = d?;
                if d.is_empty() {
                    // End of the file; keep it open until the opener closes.
                    conv.tx.eof().await;
                    reading = false;
                } else {
                    conv.tx.send(d).await?;
                }
            }
            Ok(()) = cancels.changed() => ns.cancel(h).await,
        }
    }
}
