//! The `dir` kind: a local directory served at `svc/S/root/`, read and
//! write, confined to it.
//!
//! [`Root`] holds a descriptor of the served directory, opened once when
//! the service starts, and does every operation relative to it through
//! [`beneath`], so nothing outside can be named: `..` is refused outright,
//! and a symbolic link is followed only while it stays beneath the root
//! (see [`beneath`] for the rule and the fallback). Directories, regular
//! files, symbolic links, fifos, sockets and device nodes are served, but
//! only regular files are ever opened here: a device node is a name and
//! its numbers, made by whoever this kernel lets make one (root, not
//! squashed), and opened by nobody through the mesh. A symbolic link is
//! served as itself: its opener's kernel reads its target and follows it
//! in the opener's tree, as NFS does; followed here (opening it by its
//! path), it must stay beneath the root. Names that are not UTF-8 are left
//! out too: the tree's paths are text.
//!
//! Extended attributes in the `user.` namespace are kept ([`xattr`]), and
//! record locks are held on the serving machine for whichever machine
//! takes them ([`locks`], kept by the [`super::Namespace`]). Directories
//! looked into are watched ([`watch`]), so that machines keeping what
//! they saw are told when it changes ([`look`]).
//!
//! Every call here blocks (it is file I/O): the [`super::Namespace`] runs
//! them through `super::io`, on the worker while they answer in
//! microseconds, off it when they may not.

pub mod beneath;
pub mod locks;
mod look;
mod service;
#[cfg(test)]
mod tests;
pub mod watch;
pub mod xattr;

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::UnlinkatFlags;
use ns::deploy::Squash;
use ns::error::{self, EBADPATH};
use serde::{Deserialize, Serialize};

use super::caller;
use super::errors::{self, EBADARG, EISDIR, ENOTPERM};
use super::tree::{Entry, FileKind, Meta};
use beneath::Resolver;
pub use service::DirService;

/// The most one read returns, and the largest write taken: what one
/// request between machines carries.
pub const MAX_IO: usize = 1 << 20;

/// How a file is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    pub read: bool,
    pub write: bool,
    /// Truncate to 0 at open (O_TRUNC).
    pub trunc: bool,
    /// Every write goes to the end (O_APPEND).
    pub append: bool,
}

impl Access {
    /// From open(2) flags.
    pub fn from_flags(flags: u32) -> Access {
        let f = flags as i32;
        let acc = f & libc::O_ACCMODE;
        Access {
            read: acc != libc::O_WRONLY,
            write: acc != libc::O_RDONLY,
            trunc: f & libc::O_TRUNC != 0,
            append: f & libc::O_APPEND != 0,
        }
    }

    fn oflag(self) -> OFlag {
        let mut f = match (self.read, self.write) {
            (_, false) => OFlag::O_RDONLY,
            (false, true) => OFlag::O_WRONLY,
            (true, true) => OFlag::O_RDWR,
        };
        // Linux truncates on a read-only open too, where the opener may
        // write; the opener's kernel, told the open truncates
        // (FUSE_ATOMIC_O_TRUNC), has already taken the size to 0.
        if self.trunc {
            f |= OFlag::O_TRUNC;
        }
        if self.write && self.append {
            f |= OFlag::O_APPEND;
        }
        f
    }
}

/// Attribute changes (setattr): each field that is set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attrs {
    pub size: Option<u64>,
    /// Permission bits.
    pub mode: Option<u32>,
    /// Seconds and nanoseconds since the epoch.
    pub atime: Option<(i64, u32)>,
    pub mtime: Option<(i64, u32)>,
    /// A new owner and group (chown), applied as the serving router may.
    #[serde(default)]
    pub uid: Option<Id>,
    #[serde(default)]
    pub gid: Option<Id>,
}

/// A user or group as machines tell each other: the serving router's
/// own (which each machine shows as its mount's), or a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Id {
    Router,
    Num(u32),
}

impl Id {
    /// The number on this, the serving, machine.
    pub(crate) fn here(self, own: u32) -> u32 {
        match self {
            Id::Router => own,
            Id::Num(n) => n,
        }
    }

    /// As an entry tells it ([`crate::fs::tree::Meta::uid`]): `None` for
    /// the serving router's own.
    pub(crate) fn told(self) -> Option<u32> {
        match self {
            Id::Router => None,
            Id::Num(n) => Some(n),
        }
    }
}

/// Changes the owner or group of the file `fd` is open on (any kind, a
/// link itself included); a router that may not gets EPERM.
fn chown(fd: &OwnedFd, a: &Attrs, what: &str) -> Result<(), String> {
    if a.uid.is_none() && a.gid.is_none() {
        return Ok(());
    }
    let (own_uid, own_gid) = crate::fs::caller::own();
    let uid = a.uid.map(|u| nix::unistd::Uid::from_raw(u.here(own_uid)));
    let gid = a.gid.map(|g| nix::unistd::Gid::from_raw(g.here(own_gid)));
    nix::unistd::fchownat(fd, "", uid, gid, AtFlags::AT_EMPTY_PATH).map_err(|e| errors::os(e, what))
}

/// What statfs says of the file system a served directory is on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// A served directory.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
    resolver: Resolver,
    /// Who callers from other machines are taken to be.
    squash: Squash,
}

/// The entry for a file with status `st`; `None` for what is not served.
pub fn entry(name: &str, st: &FileStat) -> Option<Entry> {
    let kind = match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFDIR => FileKind::Dir,
        SFlag::S_IFREG => FileKind::Stored,
        SFlag::S_IFLNK => FileKind::Link,
        SFlag::S_IFIFO => FileKind::Fifo,
        SFlag::S_IFSOCK => FileKind::Socket,
        SFlag::S_IFCHR => FileKind::CharDevice,
        SFlag::S_IFBLK => FileKind::BlockDevice,
        _ => return None,
    };
    let t = |s: i64, ns: i64| (s, ns.clamp(0, 999_999_999) as u32);
    let own = |id: u32, mine: u32| (id != mine).then_some(id);
    let meta = Meta {
        size: st.st_size.max(0) as u64,
        atime: t(st.st_atime, st.st_atime_nsec),
        mtime: t(st.st_mtime, st.st_mtime_nsec),
        ctime: t(st.st_ctime, st.st_ctime_nsec),
        nlink: st.st_nlink as u32,
        uid: own(st.st_uid, crate::fs::caller::own().0),
        gid: own(st.st_gid, crate::fs::caller::own().1),
        id: Some(super::tree::file_id(st.st_dev, st.st_ino)),
        watched: false,
        empty_told: false,
        rdev: st.st_rdev,
    };
    Some(Entry { name: name.to_string(), kind, mode: (st.st_mode & 0o7777) as u16, meta: Some(meta) })
}

/// Marks `e` as told of (see `tree::Meta::watched`).
pub fn watch_all(e: &mut Entry, watched: bool) {
    if let Some(m) = e.meta.as_mut() {
        m.watched = watched;
    }
}

/// What another machine said is told of stays so only while this
/// machine's conversation of changes with it was up throughout (`still`,
/// see `coherence::Coherence::still`).
pub fn told_if(e: &mut Entry, still: bool) {
    if let Some(m) = e.meta.as_mut() {
        m.watched &= still;
        m.empty_told &= still;
    }
}

fn fd_entry(name: &str, fd: impl AsFd, what: &str) -> Result<Entry, String> {
    let st = fstat(fd).map_err(|e| errors::os(e, what))?;
    entry(name, &st).ok_or_else(errors::not_served)
}

/// The path of a file by its descriptor, for the calls that take no
/// descriptor of an O_PATH open (chmod, utimes): the magic link names
/// exactly the file opened, so nothing can be swapped in between.
fn proc_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn timespec(t: Option<(i64, u32)>) -> TimeSpec {
    t.map_or(TimeSpec::UTIME_OMIT, |(s, ns)| TimeSpec::new(s, ns as _))
}

impl Root {
    /// Opens the directory to serve.
    pub fn open(path: &Path) -> Result<Root, String> {
        let what = path.display().to_string();
        let fd = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| errors::os(e, &what))?;
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let resolver = Resolver::probe(fd.as_fd());
        if resolver == Resolver::Walk {
            tracing::warn!(root = %path.display(), "no openat2 here: symbolic links under the root are refused");
        }
        Ok(Root { fd, path, resolver, squash: Squash::default() })
    }

    /// The same root, taking callers from other machines as `squash` says.
    pub fn squashing(mut self, squash: Squash) -> Root {
        self.squash = squash;
        self
    }

    pub fn squash(&self) -> Squash {
        self.squash
    }

    /// The same root resolved the fallback way (tests).
    #[cfg(test)]
    fn walking(mut self) -> Root {
        self.resolver = Resolver::Walk;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `rel` beneath the root.
    fn at(&self, rel: &[String], flags: OFlag, mode: Mode) -> Result<OwnedFd, String> {
        beneath::check(rel)?;
        beneath::open(self.fd.as_fd(), rel, flags, mode, self.resolver).map_err(|e| errors::os(e, &beneath::join(rel)))
    }

    /// The directory holding `rel`, and its last name, for the calls that
    /// act on a name without following it (mkdir, unlink, rename).
    fn parent<'a>(&self, rel: &'a [String]) -> Result<(OwnedFd, &'a str), String> {
        beneath::check(rel)?;
        let (last, dirs) = rel.split_last().ok_or_else(|| error::detail(EBADPATH, "the root itself"))?;
        Ok((self.at(dirs, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())?, last))
    }

    /// Opens a regular file.
    pub fn open_file(&self, rel: &[String], access: Access) -> Result<File, String> {
        let what = beneath::join(rel);
        // Look before opening: opening a device or a fifo can do things
        // (or block); only a regular file is opened for real.
        let probe = self.at(rel, OFlag::O_PATH, Mode::empty())?;
        let st = fstat(&probe).map_err(|e| errors::os(e, &what))?;
        match entry("", &st).map(|e| e.kind) {
            Some(FileKind::Stored) => {}
            Some(FileKind::Dir) => return Err(error::detail(EISDIR, &what)),
            // A fifo or socket opened through a mount never gets here:
            // the opener's kernel serves it.
            Some(_) | None => return Err(error::detail(ENOTPERM, format!("{what}: not a regular file"))),
        }
        let fd = self.at(rel, access.oflag() | OFlag::O_NONBLOCK, Mode::empty())?;
        same_file(&fd, &st, &what)?;
        Ok(File::from(fd))
    }

    /// Creates (or opens, unless `excl`) a regular file.
    pub fn create(&self, rel: &[String], mode: u32, access: Access, excl: bool) -> Result<(File, Entry), String> {
        let what = beneath::join(rel);
        // Only ever make a new file: O_EXCL follows no link and opens
        // nothing that is there. What is there is opened the careful way.
        let flags = access.oflag() | OFlag::O_CREAT | OFlag::O_EXCL;
        match caller::unmasked(|| self.at(rel, flags, Mode::from_bits_truncate(mode & 0o7777))) {
            Ok(fd) => {
                let e = fd_entry(rel.last().map_or("", |s| s), &fd, &what)?;
                Ok((File::from(fd), e))
            }
            Err(e) if !excl && errors::errno(&e) == libc::EEXIST => {
                let f = self.open_file(rel, access)?;
                let e = file_stat(&f, rel.last().map_or("", |s| s))?;
                Ok((f, e))
            }
            Err(e) => Err(e),
        }
    }

    pub fn mkdir(&self, rel: &[String], mode: u32) -> Result<Entry, String> {
        let (dir, name) = self.parent(rel)?;
        caller::unmasked(|| nix::sys::stat::mkdirat(&dir, name, Mode::from_bits_truncate(mode & 0o7777)))
            .map_err(|e| errors::os(e, &beneath::join(rel)))?;
        self.stat(rel)
    }

    /// Removes a file, or an empty directory when `dir`.
    pub fn remove(&self, rel: &[String], dir: bool) -> Result<(), String> {
        let (at, name) = self.parent(rel)?;
        let how = if dir { UnlinkatFlags::RemoveDir } else { UnlinkatFlags::NoRemoveDir };
        nix::unistd::unlinkat(&at, name, how).map_err(|e| errors::os(e, &beneath::join(rel)))
    }

    /// Renames within the root; `flags` as renameat2(2)'s:
    /// `RENAME_NOREPLACE` and `RENAME_EXCHANGE`.
    pub fn rename(&self, from: &[String], to: &[String], flags: u32) -> Result<(), String> {
        let known = RenameFlags::RENAME_NOREPLACE | RenameFlags::RENAME_EXCHANGE;
        let flags = RenameFlags::from_bits(flags)
            .filter(|f| known.contains(*f))
            .ok_or_else(|| error::detail(EBADPATH, format!("rename flags {flags:#x}")))?;
        let (fd, fname) = self.parent(from)?;
        let (td, tname) = self.parent(to)?;
        nix::fcntl::renameat2(&fd, fname, &td, tname, flags).map_err(|e| errors::os(e, &beneath::join(from)))
    }

    /// Extended attribute `name` of `rel` (`user.*` only; see [`xattr`]).
    pub fn getxattr(&self, rel: &[String], name: &str) -> Result<Vec<u8>, String> {
        let fd = self.at(rel, OFlag::O_PATH, Mode::empty())?;
        xattr::get(&proc_path(&fd), name).map_err(|e| errors::os(e, &beneath::join(rel)))
    }

    pub fn setxattr(&self, rel: &[String], name: &str, value: &[u8], flags: u32) -> Result<(), String> {
        let fd = self.at(rel, OFlag::O_PATH, Mode::empty())?;
        xattr::set(&proc_path(&fd), name, value, flags).map_err(|e| errors::os(e, &beneath::join(rel)))
    }

    /// The names of `rel`'s `user.*` attributes.
    pub fn listxattr(&self, rel: &[String]) -> Result<Vec<String>, String> {
        let fd = self.at(rel, OFlag::O_PATH, Mode::empty())?;
        xattr::list(&proc_path(&fd)).map_err(|e| errors::os(e, &beneath::join(rel)))
    }

    pub fn removexattr(&self, rel: &[String], name: &str) -> Result<(), String> {
        let fd = self.at(rel, OFlag::O_PATH, Mode::empty())?;
        xattr::remove(&proc_path(&fd), name).map_err(|e| errors::os(e, &beneath::join(rel)))
    }

    /// The target of symbolic link `rel`.
    pub fn readlink(&self, rel: &[String]) -> Result<String, String> {
        let (dir, name) = self.parent(rel)?;
        let t = nix::fcntl::readlinkat(&dir, name).map_err(|e| errors::os(e, &beneath::join(rel)))?;
        t.into_string().map_err(|_| error::detail(EBADPATH, format!("{}: target not UTF-8", beneath::join(rel))))
    }

    /// Makes symbolic link `rel` to `target`. The target is only text
    /// here; it is resolved where the link is followed.
    pub fn symlink(&self, rel: &[String], target: &str) -> Result<Entry, String> {
        if target.is_empty() || target.contains('\0') || target.len() > beneath::PATH_MAX {
            return Err(error::detail(EBADPATH, format!("link target {target:?}")));
        }
        let (dir, name) = self.parent(rel)?;
        nix::unistd::symlinkat(target, &dir, name).map_err(|e| errors::os(e, &beneath::join(rel)))?;
        self.stat(rel)
    }

    /// Gives file `from` the further name `to` (a hard link); both are
    /// beneath the root, and `from` is not followed if it is a link.
    pub fn link(&self, from: &[String], to: &[String]) -> Result<Entry, String> {
        let (fd, fname) = self.parent(from)?;
        let (td, tname) = self.parent(to)?;
        nix::unistd::linkat(&fd, fname, &td, tname, AtFlags::empty())
            .map_err(|e| errors::os(e, &beneath::join(from)))?;
        self.stat(to)
    }

    /// Makes a regular file, a fifo, a socket or a device node (`rdev`);
    /// the kernel says who may make a device (CAP_MKNOD, which a caller
    /// that is not root here lacks).
    pub fn mknod(&self, rel: &[String], mode: u32, rdev: u64) -> Result<Entry, String> {
        let kind = SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits());
        let kinds = [SFlag::S_IFREG, SFlag::S_IFIFO, SFlag::S_IFSOCK, SFlag::S_IFCHR, SFlag::S_IFBLK];
        if !kinds.contains(&kind) && kind != SFlag::empty() {
            return Err(error::detail(EBADARG, format!("{}: not a kind of file to make", beneath::join(rel))));
        }
        let (dir, name) = self.parent(rel)?;
        let perm = Mode::from_bits_truncate(mode & 0o7777);
        caller::unmasked(|| nix::sys::stat::mknodat(&dir, name, kind, perm, rdev))
            .map_err(|e| errors::os(e, &beneath::join(rel)))?;
        self.stat(rel)
    }

    /// The file system the root is on.
    pub fn statfs(&self) -> Result<StatFs, String> {
        let v = nix::sys::statvfs::fstatvfs(&self.fd).map_err(|e| errors::os(e, &self.path.display().to_string()))?;
        Ok(StatFs {
            blocks: v.blocks() as u64,
            bfree: v.blocks_free() as u64,
            bavail: v.blocks_available() as u64,
            files: v.files() as u64,
            ffree: v.files_free() as u64,
            bsize: v.block_size() as u32,
            namelen: v.name_max().min(beneath::NAME_MAX as _) as u32,
            frsize: v.fragment_size() as u32,
        })
    }

    /// Changes size, mode or times of a file by its path.
    pub fn set_attr(&self, rel: &[String], a: &Attrs) -> Result<Entry, String> {
        let what = beneath::join(rel);
        if a.size.is_some() {
            // Truncation needs a file open for writing.
            let f = self.open_file(rel, Access { write: true, ..Access::default() })?;
            return file_attr(&f, a, rel.last().map_or("", |s| s), &what);
        }
        // The name itself: the kernel has followed whatever link it had
        // to follow, so a link here is the link (lchown, lutimes).
        let fd = self.at(rel, OFlag::O_PATH | OFlag::O_NOFOLLOW, Mode::empty())?;
        let name = rel.last().map_or("", |s| s);
        let st = fd_entry(name, &fd, &what)?;
        let link = st.kind == FileKind::Link;
        let err = |e| errors::os(e, &what);
        chown(&fd, a, &what)?;
        if let Some(m) = a.mode {
            if link {
                return Err(errors::os(Errno::EOPNOTSUPP, &what));
            }
            let p = proc_path(&fd);
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                p.as_str(),
                Mode::from_bits_truncate(m & 0o7777),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(err)?;
        }
        if a.atime.is_some() || a.mtime.is_some() {
            let (atime, mtime) = (timespec(a.atime), timespec(a.mtime));
            if link {
                let (dir, last) = self.parent(rel)?;
                nix::sys::stat::utimensat(&dir, last, &atime, &mtime, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
                    .map_err(err)?;
            } else {
                let p = proc_path(&fd);
                let follow = nix::sys::stat::UtimensatFlags::FollowSymlink;
                nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, p.as_str(), &atime, &mtime, follow).map_err(err)?;
            }
        }
        if *a == Attrs::default() {
            return Ok(st);
        }
        fd_entry(name, &fd, &what)
    }
}

/// Changes size, mode or times of an open file.
pub fn file_attr(f: &File, a: &Attrs, name: &str, what: &str) -> Result<Entry, String> {
    let err = |e| errors::os(e, what);
    if let Some(size) = a.size {
        let size = i64::try_from(size).map_err(|_| error::detail(errors::EFBIG, what))?;
        nix::unistd::ftruncate(f, size).map_err(err)?;
    }
    if let Some(m) = a.mode {
        nix::sys::stat::fchmod(f, Mode::from_bits_truncate(m & 0o7777)).map_err(err)?;
    }
    if a.atime.is_some() || a.mtime.is_some() {
        nix::sys::stat::futimens(f, &timespec(a.atime), &timespec(a.mtime)).map_err(err)?;
    }
    if a.uid.is_some() || a.gid.is_some() {
        let fd = f.try_clone().map(OwnedFd::from).map_err(|e| errors::io(&e, what))?;
        chown(&fd, a, what)?;
    }
    fd_entry(name, f, what)
}

/// Allocates (or, with `mode`'s flags, punches or zeroes) a range of an
/// open file, as fallocate(2).
pub fn allocate(f: &File, offset: u64, len: u64, mode: u32) -> Result<(), String> {
    let flags = nix::fcntl::FallocateFlags::from_bits(mode as i32)
        .ok_or_else(|| error::detail(errors::ENOTSUP, format!("fallocate mode {mode:#x}")))?;
    let (off, len) = (i64::try_from(offset), i64::try_from(len));
    let (Ok(off), Ok(len)) = (off, len) else { return Err(error::detail(errors::EFBIG, "fallocate")) };
    nix::fcntl::fallocate(f, flags, off, len).map_err(|e| errors::os(e, "fallocate"))
}

/// Reads up to `size` bytes at `offset`, fewer only at the end.
pub fn read_at(f: &File, offset: u64, size: usize) -> Result<Vec<u8>, String> {
    read_after(f, offset, size, &[])
}

/// [`read_at`] into a buffer that starts with `head`: a message can carry
/// the bytes read without copying them again.
pub fn read_after(f: &File, offset: u64, size: usize, head: &[u8]) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; head.len() + size.min(MAX_IO)];
    buf[..head.len()].copy_from_slice(head);
    let mut n = head.len();
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset + (n - head.len()) as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(errors::io(&e, "read")),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// Writes all of `data` at `offset` (at the end, for a file opened to
/// append).
pub fn write_at(f: &File, offset: u64, data: &[u8]) -> Result<usize, String> {
    f.write_all_at(data, offset).map_err(|e| errors::io(&e, "write"))?;
    Ok(data.len())
}

/// The status of an open file.
pub fn file_stat(f: &File, name: &str) -> Result<Entry, String> {
    fd_entry(name, f, name)
}

/// Fails unless `fd` is the file `st` describes: the name was swapped
/// between the look and the open.
fn same_file(fd: &OwnedFd, st: &FileStat, what: &str) -> Result<(), String> {
    let now = fstat(fd).map_err(|e| errors::os(e, what))?;
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
        return Err(errors::os(Errno::EBUSY, what));
    }
    clear_nonblock(fd);
    Ok(())
}

/// O_NONBLOCK only guarded the open; a regular file reads as usual
/// without it, but a served directory may itself be a network mount.
fn clear_nonblock(fd: &OwnedFd) {
    if let Ok(fl) = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL) {
        let fl = OFlag::from_bits_truncate(fl) - OFlag::O_NONBLOCK;
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(fl));
    }
}
