//! The null FUSE file system: the cheapest a FUSE round trip can be with
//! the same library (fuse3) the mesh serves its tree with.
//!
//! One file, `data`. A write is accepted whole and forgotten; a read
//! answers [`REPLY`] bytes at once. It opens like the mesh's stream files
//! (direct I/O, non-seekable, stream), so every read reaches the daemon
//! and the kernel takes the same path for both; what differs between the
//! two mounts is then the mesh's own work.

use std::ffi::{CString, OsStr, OsString};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use fuse3::raw::prelude::*;
use fuse3::raw::MountHandle;
use fuse3::{Errno, MountOptions, Result as FuseResult, Timestamp};
use futures::stream::{self, Stream as FutStream};

/// Bytes a read answers.
pub const REPLY: usize = 64;
/// The one file's name.
pub const FILE: &str = "data";

const ROOT: u64 = 1;
const DATA: u64 = 2;
const TTL: Duration = Duration::from_secs(1);
const FOPEN_DIRECT_IO: u32 = 1 << 0;
const FOPEN_NONSEEKABLE: u32 = 1 << 2;
const FOPEN_STREAM: u32 = 1 << 4;
static ANSWER: [u8; REPLY] = [0x5a; REPLY];

struct NullFs {
    uid: u32,
    gid: u32,
}

impl NullFs {
    fn attr(&self, ino: u64) -> FileAttr {
        let now = Timestamp::from(SystemTime::now());
        let dir = ino == ROOT;
        FileAttr {
            ino,
            size: 0,
            blocks: 0,
            atime: now,
            mtime: now,
            ctime: now,
            kind: if dir { FileType::Directory } else { FileType::RegularFile },
            perm: if dir { 0o555 } else { 0o666 },
            nlink: if dir { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
        }
    }

    fn known(ino: u64) -> FuseResult<u64> {
        if ino == ROOT || ino == DATA {
            Ok(ino)
        } else {
            Err(Errno::from(libc::ENOENT))
        }
    }
}

impl Filesystem for NullFs {
    async fn init(&self, _req: Request) -> FuseResult<ReplyInit> {
        // The same write size the mesh asks for, so writes split alike.
        Ok(ReplyInit::new(NonZeroU32::new(1 << 20).expect("non-zero")))
    }

    async fn destroy(&self, _req: Request) {}

    // Record locks are the kernel's own here (the workspace builds fuse3
    // with them, for the mesh's served files).
    async fn getlk(
        &self,
        _req: Request,
        _inode: u64,
        _fh: u64,
        _lock_owner: u64,
        _start: u64,
        _end: u64,
        _type: u32,
        _pid: u32,
    ) -> FuseResult<ReplyLock> {
        Err(Errno::from(libc::ENOSYS))
    }

    async fn setlk(
        &self,
        _req: Request,
        _inode: u64,
        _fh: u64,
        _lock_owner: u64,
        _start: u64,
        _end: u64,
        _type: u32,
        _pid: u32,
        _block: bool,
    ) -> FuseResult<()> {
        Err(Errno::from(libc::ENOSYS))
    }

    async fn lookup(&self, _req: Request, parent: u64, name: &OsStr) -> FuseResult<ReplyEntry> {
        if parent != ROOT || name != FILE {
            return Err(Errno::from(libc::ENOENT));
        }
        Ok(ReplyEntry { ttl: TTL, attr: self.attr(DATA), generation: 0 })
    }

    async fn getattr(&self, _req: Request, inode: u64, _fh: Option<u64>, _flags: u32) -> FuseResult<ReplyAttr> {
        Ok(ReplyAttr { ttl: TTL, attr: self.attr(Self::known(inode)?) })
    }

    async fn setattr(&self, req: Request, inode: u64, fh: Option<u64>, _set: SetAttr) -> FuseResult<ReplyAttr> {
        self.getattr(req, inode, fh, 0).await
    }

    async fn open(&self, _req: Request, inode: u64, _flags: u32) -> FuseResult<ReplyOpen> {
        if Self::known(inode)? != DATA {
            return Err(Errno::from(libc::EISDIR));
        }
        Ok(ReplyOpen { fh: 1, flags: FOPEN_DIRECT_IO | FOPEN_NONSEEKABLE | FOPEN_STREAM })
    }

    async fn read(&self, _req: Request, _inode: u64, _fh: u64, _offset: u64, size: u32) -> FuseResult<ReplyData> {
        let n = (size as usize).min(REPLY);
        Ok(ReplyData { data: Bytes::from_static(&ANSWER[..n]) })
    }

    async fn write(
        &self,
        _req: Request,
        _inode: u64,
        _fh: u64,
        _offset: u64,
        data: &[u8],
        _wf: u32,
        _flags: u32,
    ) -> FuseResult<ReplyWrite> {
        Ok(ReplyWrite { written: data.len() as u32 })
    }

    async fn flush(&self, _req: Request, _inode: u64, _fh: u64, _lock_owner: u64) -> FuseResult<()> {
        Ok(())
    }

    async fn release(
        &self,
        _req: Request,
        _inode: u64,
        _fh: u64,
        _flags: u32,
        _lock_owner: u64,
        _flush: bool,
    ) -> FuseResult<()> {
        Ok(())
    }

    async fn opendir(&self, _req: Request, _inode: u64, _flags: u32) -> FuseResult<ReplyOpen> {
        Ok(ReplyOpen { fh: 0, flags: 0 })
    }

    async fn readdir<'a>(
        &'a self,
        _req: Request,
        parent: u64,
        _fh: u64,
        offset: i64,
    ) -> FuseResult<ReplyDirectory<impl FutStream<Item = FuseResult<DirectoryEntry>> + Send + 'a>> {
        let all = [
            (parent, FileType::Directory, "."),
            (parent, FileType::Directory, ".."),
            (DATA, FileType::RegularFile, FILE),
        ];
        let out: Vec<FuseResult<DirectoryEntry>> = all
            .into_iter()
            .enumerate()
            .skip(offset.max(0) as usize)
            .map(|(i, (inode, kind, name))| {
                Ok(DirectoryEntry { inode, kind, name: OsString::from(name), offset: i as i64 + 1 })
            })
            .collect();
        Ok(ReplyDirectory { entries: stream::iter(out) })
    }

    async fn statfs(&self, _req: Request, _inode: u64) -> FuseResult<ReplyStatFs> {
        Ok(ReplyStatFs { blocks: 0, bfree: 0, bavail: 0, files: 0, ffree: 0, bsize: 4096, namelen: 255, frsize: 4096 })
    }
}

/// The null file system, mounted; dropping it detaches the mount.
pub struct NullMount {
    handle: Option<MountHandle>,
    path: PathBuf,
}

/// Mounts the null file system at `path`, created if missing.
pub async fn mount(path: &Path) -> anyhow::Result<NullMount> {
    std::fs::create_dir_all(path).with_context(|| format!("mount point {}", path.display()))?;
    // SAFETY: these calls cannot fail.
    let (uid, gid, euid) = unsafe { (libc::getuid(), libc::getgid(), libc::geteuid()) };
    let mut opts = MountOptions::default();
    opts.fs_name("mesh-bench-null");
    let session = Session::new(opts);
    let fs = NullFs { uid, gid };
    let handle =
        if euid == 0 { session.mount(fs, path).await } else { session.mount_with_unprivileged(fs, path).await }
            .with_context(|| format!("mount the null file system at {}", path.display()))?;
    Ok(NullMount { handle: Some(handle), path: path.to_path_buf() })
}

impl NullMount {
    pub fn file(&self) -> PathBuf {
        self.path.join(FILE)
    }

    /// Unmounts, detaching if files are still open.
    pub async fn unmount(mut self) {
        if let Some(h) = self.handle.take() {
            if h.unmount().await.is_err() {
                detach(&self.path);
            }
        }
    }
}

impl Drop for NullMount {
    fn drop(&mut self) {
        if self.handle.take().is_some() {
            detach(&self.path);
        }
    }
}

/// Lazy unmount: the mount goes now, open files keep it until closed.
pub fn detach(path: &Path) {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else { return };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    unsafe {
        libc::umount2(c.as_ptr(), libc::MNT_DETACH);
    }
}
