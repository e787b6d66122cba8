//! Mounting a machine's tree, replacing stale mounts, and unmounting.
//!
//! A router killed with its tree mounted leaves a dead mount behind
//! (ENOTCONN on every access); the next start detaches it and mounts
//! afresh. A live mesh mount at the same place is an error, not stacked.
//! Unmounting first ends every blocked read with end of file, then
//! unmounts; if a process still has a file open or its working directory
//! in the tree, it detaches (MNT_DETACH, or `fusermount3 -u -z` for a user
//! who may not) and never waits for them: the kernel ends the connection
//! when this process exits, and they see ENOTCONN.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use fuse3::raw::{MountHandle, Session};
use fuse3::MountOptions;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::fuse::{notify, MeshFs, Removals};
use super::Namespace;

/// One mount at a time in this process (see [`mount`]).
static MOUNTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A mounted tree; dropping it detaches the mount.
pub struct Mounted {
    handle: Option<MountHandle>,
    /// The changes its kernel is told of (closed with it).
    told: Option<Arc<super::dir::watch::Feed>>,
    path: PathBuf,
    stop: CancellationToken,
    /// Still in the mount table: dropped, even half-way through
    /// [`Mounted::unmount`], it detaches.
    attached: bool,
    /// Removals answered and on their way, which an unmount lets land.
    removals: Arc<Removals>,
}

/// Mounts `ns` at `path`, created if missing.
pub async fn mount(ns: Arc<Namespace>, path: &Path, allow_other: bool) -> anyhow::Result<Mounted> {
    clean_stale(path)?;
    std::fs::create_dir_all(path).with_context(|| format!("mount point {}", path.display()))?;
    let id = ns.router().id().to_string();
    let stop = CancellationToken::new();
    let fs = MeshFs::new(ns.clone(), stop.clone()).mounted_at(path);
    let telling = fs.telling();
    let removals = fs.removals();
    let mut opts = MountOptions::default();
    // The kernel checks every access against the modes and owners the
    // tree shows (see mesh(4), PERMISSIONS): shared with other users, they
    // get what the modes give them; served files keep their owners.
    opts.fs_name(format!("mesh-{id}")).allow_other(allow_other).default_permissions(true).nonempty(true);
    // Device nodes and set-user-ID files of other machines are not this
    // machine's to honour: a device node made there would open this
    // machine's device, a set-user-ID file run as this machine's root
    // (fusermount3 says the same for mounts by users other than root).
    opts.custom_options("nodev,nosuid");
    // The serving machine's kernel clears set-user-ID and set-group-ID
    // bits itself on a write, truncate or chown by the caller (done as
    // the caller, without CAP_FSETID): the kernel here need not refresh a
    // file's attributes before each chown to compute them
    // (FUSE_HANDLE_KILLPRIV), a round trip per chown.
    opts.handle_killpriv(true);
    let session = Session::new(opts);
    // The session's /dev/fuse descriptor is the one new across the mount;
    // mounts in this process take turns so that it is.
    let turn = MOUNTING.lock().await;
    let before = notify::fuse_fds();
    // Through fusermount3 for root too: fuse3 then reads /dev/fuse as it
    // becomes readable, where its mount for root reads it on a blocking
    // thread, a hand-off per request (a lookup on the serving machine's
    // own mount took 215 us that way, 95 us this way).
    let handle =
        session.mount_with_unprivileged(fs, path).await.with_context(|| format!("mount {}", path.display()))?;
    let new: Vec<i32> = notify::fuse_fds().difference(&before).copied().collect();
    drop(turn);
    let told = match (new.as_slice(), ns.coherence().mount()) {
        (&[fd], Ok(feed)) => match notify::duplicate(fd) {
            Some(dup) => {
                telling.start(feed.clone(), dup, ns.coherence().clone());
                Some(feed)
            }
            None => None,
        },
        (_, Err(e)) => {
            warn!(path = %path.display(), "served files are not kept: {e}");
            None
        }
        _ => {
            warn!(path = %path.display(), "served files are not kept: no /dev/fuse descriptor of its own");
            None
        }
    };
    info!(machine = %id, path = %path.display(), "mounted");
    Ok(Mounted { handle: Some(handle), told, path: path.to_path_buf(), stop, attached: true, removals })
}

impl Mounted {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ends blocked reads, then unmounts (detaching if still busy).
    pub async fn unmount(mut self) {
        self.removals.landed_within(super::fuse::LANDING).await;
        self.stop.cancel();
        if let Some(f) = self.told.take() {
            f.close();
        }
        if let Some(h) = self.handle.take() {
            match h.unmount().await {
                Ok(()) => info!(path = %self.path.display(), "unmounted"),
                Err(e) => {
                    info!(path = %self.path.display(), "unmount: {e}; detaching");
                    detach(&self.path);
                }
            }
            self.attached = false;
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(f) = self.told.take() {
            f.close();
        }
        if std::mem::take(&mut self.attached) {
            detach(&self.path);
        }
    }
}

/// Readahead for the tree: served files are read through the page cache,
/// and the kernel's default of 128 KiB asks another machine for too
/// little at a time. Only root may raise it; others keep the default.
const READAHEAD_KB: u32 = 4096;

/// Raises the readahead of the tree mounted at `path`; after the kernel
/// took the INIT answer, which would set it back.
pub(super) fn raise_readahead(path: &Path) {
    // The device from the mount table: a stat of the mount point would be
    // a request to this very process, which may be serving none yet.
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = path.to_string_lossy();
    let dev = info.lines().map(|l| l.split(' ').collect::<Vec<_>>()).rfind(|f| f.get(4) == Some(&want.as_ref()));
    let Some(dev) = dev.and_then(|f| f.get(2).map(|d| d.to_string())) else { return };
    let bdi = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    if let Err(e) = std::fs::write(&bdi, READAHEAD_KB.to_string()) {
        tracing::debug!(%bdi, "readahead stays the kernel's: {e}");
    }
}

/// Takes the mount at `path` out of the tree now, however busy it is.
fn detach(path: &Path) {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) => info!(path = %path.display(), "detached"),
        // Not root: the setuid helper may (it detaches our own mounts).
        Err(nix::errno::Errno::EPERM) => {
            let helper = std::process::Command::new("fusermount3").arg("-u").arg("-z").arg(path).status();
            match helper {
                Ok(st) if st.success() => info!(path = %path.display(), "detached"),
                Ok(st) => warn!(path = %path.display(), "detach: fusermount3 -u -z: {st}"),
                Err(e) => warn!(path = %path.display(), "detach: fusermount3: {e}"),
            }
        }
        Err(e) => warn!(path = %path.display(), "detach: {e}"),
    }
}

/// Whether a mesh tree is mounted at `path`, per /proc/self/mountinfo.
fn mesh_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy();
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|&x| x == "-");
        f.get(4) == Some(&want.as_ref())
            && sep.is_some_and(|i| {
                f.get(i + 1).is_some_and(|t| t.starts_with("fuse"))
                    && f.get(i + 2).is_some_and(|s| s.starts_with("mesh"))
            })
    })
}

/// Detaches a dead mesh mount left at `path`; refuses a live one.
fn clean_stale(path: &Path) -> anyhow::Result<()> {
    if !mesh_mounted(path) {
        return Ok(());
    }
    match std::fs::metadata(path) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) || e.raw_os_error() == Some(libc::EIO) => {
            warn!(path = %path.display(), "stale mount from a dead router; detaching");
            detach(path);
            Ok(())
        }
        _ => bail!("{} is already mounted by a running mesh router", path.display()),
    }
}
