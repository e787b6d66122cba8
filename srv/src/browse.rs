//! `mesh ls`, `mesh cat` and `mesh routes` without FUSE: the whole tree of
//! mesh(4), other machines' (`/n/M/...`, over any number of hops) included.
//!
//! A local client asks its router's tree server (the reserved service
//! `router`, [`crate::fs::remote`]) exactly what the FUSE server would ask
//! for the same path, so a path that works through the mount works here
//! and shows the same text. Each request is a conversation of its own.
//!
//! Stream files (`data`, `clone`, trace files) are not read: opening a
//! `data` file starts a conversation, and a read waits for a message. A
//! `cat` of one says so and points to `mesh send`, which is how a client
//! without FUSE talks to a service.

use ns::client::Client;
use ns::conv::Conv;
use ns::Addr;

use crate::fs::dir::{Access, MAX_IO};
use crate::fs::remote::{begin, TreeReq, TreeResp};
use crate::fs::tree::{Entry, FileKind};

/// The components of `path` ("/n/c/svc" -> ["n", "c", "svc"]).
fn split(path: &str) -> Vec<String> {
    path.split('/').filter(|p| !p.is_empty() && *p != ".").map(String::from).collect()
}

/// A conversation with the tree server of the client's own router.
fn server(client: &Client) -> Conv {
    client.open(Addr::on(client.machine().clone(), ns::conv::reserved()), Vec::new())
}

fn unexpected(path: &str, resp: TreeResp) -> String {
    format!("'{path}': bad tree answer {resp:?}")
}

/// What `path` is.
pub async fn stat(client: &Client, path: &str) -> Result<Entry, String> {
    match begin(&mut server(client), &TreeReq::Stat(split(path))).await? {
        TreeResp::Entry(e) => Ok(e),
        other => Err(unexpected(path, other)),
    }
}

/// The names in directory `path`, sorted; a file lists as its own name,
/// as ls(1) does.
pub async fn ls(client: &Client, path: &str) -> Result<Vec<String>, String> {
    let e = stat(client, path).await?;
    if e.kind != FileKind::Dir {
        return Ok(vec![split(path).pop().unwrap_or_else(|| "/".into())]);
    }
    match begin(&mut server(client), &TreeReq::List(split(path))).await? {
        TreeResp::Entries(mut v) => {
            v.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(v.into_iter().map(|e| e.name).collect())
        }
        other => Err(unexpected(path, other)),
    }
}

/// The service a stream file belongs to, for the hint to `mesh send`:
/// `/n/c/svc/upper/4/data` -> `/n/c/svc/upper`.
fn service_of(parts: &[String]) -> Option<String> {
    let i = parts.iter().position(|p| p == "svc")?;
    let svc = parts.get(i + 1)?;
    Some(format!("/{}/{svc}", parts[..=i].join("/")))
}

/// Why `cat` does not read a stream file, and what to use instead.
fn stream_refusal(path: &str) -> String {
    let parts = split(path);
    match (parts.last().map(String::as_str), service_of(&parts)) {
        (Some("data"), Some(svc)) => {
            format!("'{path}' is a stream: each write is a message to the service; use `mesh send {svc}`")
        }
        _ => format!("'{path}' is a stream of messages; read it through the mount"),
    }
}

/// Calls `out` with the contents of file `path`, in pieces.
pub async fn cat(client: &Client, path: &str, mut out: impl FnMut(&[u8]) -> std::io::Result<()>) -> Result<(), String> {
    let e = stat(client, path).await?;
    match e.kind {
        FileKind::Dir => return Err(format!("'{path}' is a directory")),
        FileKind::Stream => return Err(stream_refusal(path)),
        FileKind::Fifo | FileKind::Socket => return Err(format!("'{path}' is a fifo or a socket: nothing to read")),
        FileKind::CharDevice | FileKind::BlockDevice => return Err(format!("'{path}' is a device: not opened")),
        // Opened, a link is followed beneath its root.
        FileKind::File | FileKind::Stored | FileKind::Link => {}
    }
    let mut conv = server(client);
    let access = Access { read: true, ..Access::default() };
    match begin(&mut conv, &TreeReq::Open { path: split(path), access, batch: false }).await? {
        TreeResp::Opened(_) => {}
        other => return Err(unexpected(path, other)),
    }
    let mut offset = 0u64;
    loop {
        let data = crate::fs::remote::read(&mut conv, offset, MAX_IO as u32).await?;
        if data.is_empty() {
            return Ok(());
        }
        offset += data.len() as u64;
        out(&data).map_err(|e| format!("write: {e}"))?;
    }
}

/// The whole of text file `path`.
pub async fn text(client: &Client, path: &str) -> Result<String, String> {
    let mut buf = Vec::new();
    cat(client, path, |b| {
        buf.extend_from_slice(b);
        Ok(())
    })
    .await?;
    String::from_utf8(buf).map_err(|_| format!("'{path}' is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_points_to_its_service() {
        let s = |p: &str| service_of(&split(p));
        assert_eq!(s("/svc/upper/data").as_deref(), Some("/svc/upper"));
        assert_eq!(s("/n/c/svc/upper/4/data").as_deref(), Some("/n/c/svc/upper"));
        assert_eq!(s("/term/net-b/data"), None);
        assert!(stream_refusal("/n/b/svc/upper/data").contains("mesh send /n/b/svc/upper"));
        assert!(stream_refusal("/term/net-b/data").contains("through the mount"));
    }
}
