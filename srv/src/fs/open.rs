//! Open files of the tree: opening a path (a stream over a new
//! conversation, a text or ctl file, a served file here or on another
//! machine, a conversation's files), and reading, writing, interrupting
//! and closing what was opened.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ns::Addr;

use super::dir::Access;
use super::handle::{slice_at, Handle, Slot, Stream, Trace, Waker};
use super::tree::Node;
use super::{caller, conv_status, ctl, dir, errors, handle, io, name, remote, Namespace};

impl Namespace {
    /// Opens a file to read, write or both.
    pub async fn open(&self, path: &[String], read: bool, write: bool) -> Result<Handle, String> {
        self.open_with(path, Access { read, write, ..Access::default() }).await
    }

    /// Opens a file; truncating and appending apply to the files of
    /// served directories only.
    pub async fn open_with(&self, path: &[String], access: Access) -> Result<Handle, String> {
        let node = self.resolve(path)?;
        let r = &self.router;
        let text = |s: String| Ok(Handle::Text(Bytes::from(s)));
        let write = access.write;
        match node {
            Node::Remote(m, rest) if m != *r.id() => remote::open(r, &m, &rest, access).await,
            Node::Remote(_, rest) => Box::pin(self.open_with(&rest, access)).await,
            Node::Stored(s, rel) => {
                let root = self.root(&s)?;
                let (co, who) = (self.coherence.clone(), dir::watch::asker());
                // Watched before it is opened, so that nothing changed
                // after goes untold (see `handle::Told`).
                let (f, told) = io::quick(move || {
                    let watched = root.watch_parent(&rel, &co.watcher, &who);
                    let f = root.open_file(&rel, access)?;
                    Ok((f, handle::Told::new(watched, Some((root, rel, who)))))
                })
                .await?;
                Ok(Handle::Stored(Arc::new(f), Arc::new(told)))
            }
            Node::Machine => text(format!("{}\n", r.id())),
            Node::Routes => text(r.routes()),
            Node::Ctl => {
                let mut text = ns::text::ctl_text(r);
                text.push_str(&self.binds().lines());
                Ok(Handle::Ctl(Bytes::from(text), ctl::Target::Router))
            }
            Node::SvcInfo(s) => {
                let mut info = ns::text::info(r, &s)?;
                if let Some(about) = self.extras(&s).about {
                    info.push_str(&about);
                    info.push('\n');
                }
                text(info)
            }
            Node::SvcData(s) => {
                let user = caller::Caller::current_user();
                let stream = Stream::new(r.open_as(Addr::service(name(&s)?), Vec::new(), user));
                // Opened only to read: there will be no input, so say so
                // now; that also starts a service that needs none.
                if !write {
                    stream.writer().eof().await;
                }
                Ok(Handle::Stream(stream))
            }
            Node::SvcClone(s) => {
                let conv = r.open_as(Addr::service(name(&s)?), Vec::new(), caller::Caller::current_user());
                let n = conv.rx.path().conv.unwrap_or_default();
                let owner = caller::Caller::current().map(|c| c.uid);
                let slot = Slot::owned(n, Stream::new(conv), owner);
                self.slots.insert(&slot);
                Ok(Handle::Clone(Mutex::new(Bytes::from(format!("{n}\n"))), slot))
            }
            Node::SvcFile(s, f) => {
                let make = self.extras(&s).files.into_iter().find(|x| x.0 == f).map(|x| x.1).ok_or("file gone")?;
                // A kind's file may take a while to make (decoding a frame).
                let data = tokio::task::spawn_blocking(move || make()).await.map_err(|e| e.to_string())??;
                Ok(Handle::Text(data))
            }
            Node::ConvData(_, n) => {
                let slot = self.slots.get(n).ok_or_else(|| format!("conversation {n} is not open here"))?;
                self.may_use(&slot)?;
                if write {
                    slot.add_writer();
                }
                Ok(Handle::SlotData { slot, writes: write })
            }
            Node::ConvCtl(s, n) => {
                if write {
                    if let Some(slot) = self.slots.get(n) {
                        self.may_use(&slot)?;
                    }
                }
                Ok(Handle::Ctl(Bytes::new(), ctl::Target::Conv(s, n)))
            }
            Node::SvcCtl(s) => {
                // Reading shows the kind's settings, when it has them.
                let settings = self.extras(&s).files.into_iter().find(|f| f.0 == "settings").map(|f| f.1);
                let text = match settings {
                    Some(f) => tokio::task::spawn_blocking(move || f()).await.map_err(|e| e.to_string())??,
                    None => Bytes::new(),
                };
                Ok(Handle::Ctl(text, ctl::Target::Service(s)))
            }
            Node::ConvStatus(_, n) => text(conv_status(r, n)?),
            Node::TermCtl(t) => {
                let term = r.shown_term(&t).ok_or("terminal gone")?;
                Ok(Handle::Ctl(Bytes::from(term.ctl_text()), ctl::Target::Term(t)))
            }
            Node::TermStatus(t) => text(r.shown_term(&t).ok_or("terminal gone")?.status_text()),
            Node::TermData(t) => {
                let term = r.shown_term(&t).ok_or("terminal gone")?;
                Ok(Handle::Trace(tokio::sync::Mutex::new(Trace::new(term.subscribe()))))
            }
            _ => Err(errors::EISDIR.into()),
        }
    }

    /// Reads from an open file.
    pub async fn read(&self, h: &Handle, offset: u64, size: usize) -> Result<Bytes, String> {
        match h {
            Handle::Text(t) | Handle::Ctl(t, _) => Ok(slice_at(t, offset, size)),
            Handle::Clone(rest, _) => {
                let mut rest = rest.lock().unwrap_or_else(|e| e.into_inner());
                let n = size.min(rest.len());
                Ok(rest.split_to(n))
            }
            Handle::Stream(s) => s.read(size).await,
            Handle::SlotData { slot, .. } => slot.stream.read(size).await,
            Handle::Trace(t) => Ok(t.lock().await.read(size).await),
            Handle::RemoteFile(f) => f.read(offset, size).await,
            Handle::Stored(f, _) => {
                let f = f.clone();
                io::sized(size, move || dir::read_at(&f, offset, size)).await.map(Bytes::from)
            }
        }
    }

    /// Writes to an open file: one message, or ctl messages.
    pub async fn write(&self, h: &Handle, data: &[u8]) -> Result<usize, String> {
        match h {
            Handle::Ctl(_, target) => ctl::apply(self, target, data).await.map(|_| data.len()),
            Handle::Stream(s) => s.write(data).await,
            Handle::SlotData { slot, writes: true } => slot.stream.write(data).await,
            Handle::RemoteFile(f) => f.write(data).await,
            Handle::Stored(..) => Err(ns::error::detail(ns::error::EBADPATH, "write without an offset")),
            _ => Err("file not open for writing".into()),
        }
    }

    /// Whether a read would not block; `kh` is woken when one would not.
    pub fn poll(&self, h: &Handle, kh: Option<u64>, waker: Arc<Waker>) -> bool {
        match h {
            Handle::Stream(s) => s.poll(kh, waker),
            Handle::SlotData { slot, .. } => slot.stream.poll(kh, waker),
            Handle::RemoteFile(f) => f.stream().is_none_or(|s| s.poll(kh, waker)),
            _ => true,
        }
    }

    /// A read on `h` was interrupted: tell the service.
    pub async fn cancel(&self, h: &Handle) {
        match h {
            Handle::Stream(s) => s.writer().cancel().await,
            Handle::SlotData { slot, .. } => slot.stream.writer().cancel().await,
            Handle::RemoteFile(f) => f.cancel().await,
            _ => {}
        }
    }

    /// Closes an open file: end of input for what it wrote.
    pub async fn release(&self, h: Handle) {
        match h {
            Handle::Stream(s) => s.writer().eof().await,
            Handle::SlotData { slot, writes: true } => slot.drop_writer().await,
            Handle::RemoteFile(f) => f.close().await,
            // close(2) waits for the file's file system (a FUSE or NFS
            // mount beneath a served root sends a flush): a system call
            // like the others (see `io`).
            h @ Handle::Stored(..) => {
                let _ = io::quick(move || {
                    drop(h);
                    Ok(())
                })
                .await;
            }
            _ => {}
        }
    }
}
