//! `unix!/path.sock`: Unix-domain stream sockets for clients on this machine.
//!
//! The listener owns its socket file: it creates the parent directory
//! (0700) if missing, replaces a stale socket left by a dead process but
//! never a live one or a non-socket file, makes the socket 0600 so only
//! this user can connect, and removes the file when dropped. Accepted links
//! carry the peer's uid from `SO_PEERCRED`.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener as TokioUnixListener, UnixStream};

use crate::link::{framed, Link, LinkOptions};
use crate::with_context;

/// Mode of the socket file: owner only. Connecting needs write permission.
const SOCKET_MODE: u32 = 0o600;

/// Mode of a parent directory we create: owner only.
const DIR_MODE: u32 = 0o700;

pub(crate) async fn dial(path: &Path, opts: &LinkOptions) -> io::Result<Link> {
    let ds = format!("unix!{}", path.display());
    let stream = UnixStream::connect(path).await.map_err(|e| match e.kind() {
        // A listener that shut down cleanly removed its file; to the caller
        // that is the same as one that died: nobody is listening.
        io::ErrorKind::NotFound => {
            io::Error::new(io::ErrorKind::ConnectionRefused, format!("{ds}: nobody listening (no socket file)"))
        }
        _ => with_context(e, format_args!("{ds}: connect")),
    })?;
    let (tx, rx) = framed(stream, opts);
    Ok(Link {
        tx,
        rx,
        remote: ds.clone(),
        local: format!("{ds} (client pid {})", std::process::id()),
        uid: None,
        gate: None,
    })
}

/// A listening socket and the file that names it.
#[derive(Debug)]
pub(crate) struct UnixListener {
    listener: TokioUnixListener,
    file: SocketFile,
    opts: LinkOptions,
}

pub(crate) async fn listen(path: &Path, opts: &LinkOptions) -> io::Result<UnixListener> {
    let ds = format!("unix!{}", path.display());
    let ctx = |what: &'static str| {
        let ds = &ds;
        move |e: io::Error| with_context(e, format_args!("{ds}: {what}"))
    };
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(parent)
                .map_err(ctx("create parent directory"))?;
        }
    }
    remove_stale(path).await.map_err(ctx("replace old socket"))?;
    let listener = TokioUnixListener::bind(path).map_err(ctx("bind"))?;
    // From here on the file is ours; the guard removes it on any failure.
    let file = SocketFile::adopt(path).map_err(ctx("stat new socket"))?;
    // chmod after bind leaves a short window with umask's mode; the parent
    // directory (0700 when we made it) is what keeps others out meanwhile.
    fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE)).map_err(ctx("chmod"))?;
    Ok(UnixListener { listener, file, opts: opts.clone() })
}

/// Removes a socket file nobody listens on. Refuses to touch a live socket
/// (another process is serving there) or anything that is not a socket.
async fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; refusing to replace it",
        ));
    }
    // Probe by connecting: only a refusal proves the owner is gone. A live
    // owner sees the probe as a connection that closes at once.
    match UnixStream::connect(path).await {
        Ok(_) => Err(io::Error::new(io::ErrorKind::AddrInUse, "another process is listening on it")),
        // Refused: a socket file whose listener is gone.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        Err(e) => Err(io::Error::new(io::ErrorKind::AddrInUse, format!("cannot tell whether it is still in use: {e}"))),
    }
}

impl UnixListener {
    /// Cancel-safe: no await after the connection is taken.
    pub(crate) async fn accept(&mut self) -> io::Result<Link> {
        let ds = format!("unix!{}", self.file.path.display());
        let stream = loop {
            match self.listener.accept().await {
                Ok((stream, _)) => break stream,
                // The client gave up before we got to it; not our problem.
                Err(e) if crate::is_per_connection(&e) => {
                    tracing::debug!("{ds}: accept: {e}");
                }
                Err(e) => return Err(with_context(e, format_args!("{ds}: accept"))),
            }
        };
        let (uid, remote) = match stream.peer_cred() {
            Ok(cred) => {
                let pid = cred.pid().map(|p| format!("pid {p}, ")).unwrap_or_default();
                (Some(cred.uid()), format!("{ds} ({pid}uid {})", cred.uid()))
            }
            Err(e) => {
                tracing::debug!("{ds}: SO_PEERCRED: {e}");
                (None, ds.clone())
            }
        };
        let (tx, rx) = framed(stream, &self.opts);
        Ok(Link { tx, rx, remote, local: ds, uid, gate: None })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.file.path
    }
}

/// Removes the socket file on drop, but only if it is still the one we
/// bound: a successor may have replaced it after we stopped listening.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn adopt(path: &Path) -> io::Result<Self> {
        let meta = fs::symlink_metadata(path).inspect_err(|_| {
            let _ = fs::remove_file(path);
        })?;
        Ok(SocketFile { path: path.to_owned(), dev: meta.dev(), ino: meta.ino() })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path).is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if ours {
            if let Err(e) = fs::remove_file(&self.path) {
                tracing::debug!("unix!{}: remove socket file: {e}", self.path.display());
            }
        }
    }
}
