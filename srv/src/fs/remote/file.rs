//! A file open on another machine: the opener's side of the conversation.
//!
//! Files of a served directory go through a [`Pipe`]; text and ctl files
//! answer one request at a time; streams are streams.

use std::sync::Arc;

use bytes::Bytes;
use ns::conv::Conv;

use super::pipe::Pipe;
use super::{ask, unexpected, TreeReq, TreeResp};
use crate::fs::handle::Stream;
use crate::fs::tree::FileKind;

/// A file open on another machine.
pub enum RemoteFile {
    Stream(Arc<Stream>),
    /// A text or ctl file: one request, one answer, each run to its end
    /// in a task of its own (see [`Pipe`] for why).
    File(FileKind, Arc<tokio::sync::Mutex<Conv>>),
    Stored(Pipe),
}

/// Asks `req` on a text or ctl file, uninterrupted.
async fn ask_file(c: &Arc<tokio::sync::Mutex<Conv>>, req: TreeReq) -> Result<TreeResp, String> {
    let c = c.clone();
    let task = tokio::spawn(async move { ask(&mut *c.lock().await, &req).await });
    task.await.map_err(|e| e.to_string())?
}

impl RemoteFile {
    pub fn kind(&self) -> FileKind {
        match self {
            RemoteFile::Stream(_) => FileKind::Stream,
            RemoteFile::File(k, _) => *k,
            RemoteFile::Stored(_) => FileKind::Stored,
        }
    }

    pub async fn read(&self, offset: u64, size: usize) -> Result<Bytes, String> {
        match self {
            RemoteFile::Stream(s) => s.read(size).await,
            RemoteFile::File(_, c) => match ask_file(c, TreeReq::Read { offset, size: size as u32 }).await? {
                TreeResp::Data(d) => Ok(Bytes::from(d)),
                other => Err(unexpected(other)),
            },
            RemoteFile::Stored(p) => p.read(offset, size).await,
        }
    }

    pub async fn write(&self, data: &[u8]) -> Result<usize, String> {
        match self {
            RemoteFile::Stream(s) => s.write(data).await,
            RemoteFile::File(_, c) => match ask_file(c, TreeReq::Write(data.to_vec())).await? {
                TreeResp::Written(n) => Ok(n as usize),
                other => Err(unexpected(other)),
            },
            // Its writes have offsets: Namespace::write_at.
            RemoteFile::Stored(_) => Err(ns::error::detail(ns::error::EBADPATH, "write without an offset")),
        }
    }

    pub fn stream(&self) -> Option<&Arc<Stream>> {
        match self {
            RemoteFile::Stream(s) => Some(s),
            _ => None,
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
            RemoteFile::Stored(p) => p.close().await,
        }
    }
}
