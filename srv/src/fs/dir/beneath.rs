//! Confinement: every path of a served directory is resolved beneath its
//! root, and nowhere else.
//!
//! Two layers. [`check`] refuses what a path may not say at all: `..`
//! (always, even where it would stay inside), empty names, `.`, names with
//! `/` or NUL, names and paths too long. Then the kernel resolves the rest
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` from the root's
//! descriptor: a symbolic link is followed only while it stays beneath the
//! root; an absolute one, or one leading out, fails with EXDEV, and so do
//! `/proc` magic links. The check and the resolution are one system call,
//! so a link swapped in between cannot win a race.
//!
//! Where `openat2` is missing (Linux before 5.6, or a seccomp filter that
//! answers ENOSYS), [`Resolver::Walk`] opens one component at a time with
//! `O_NOFOLLOW` and refuses to follow any symbolic link, which is
//! stricter. Either way a caller's own `O_NOFOLLOW` opens a link that is
//! the last name as itself.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use ns::error::{self, EBADPATH};

use crate::fs::errors::{self, ENAMETOOLONG};

/// The longest name of one file, as Linux file systems have it.
pub const NAME_MAX: usize = 255;
/// The longest path beneath a root (PATH_MAX less the terminating NUL).
pub const PATH_MAX: usize = 4095;

/// How paths are resolved beneath a root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolver {
    /// The kernel confines: `openat2` with `RESOLVE_BENEATH`.
    Openat2,
    /// One component at a time, following no symbolic link at all.
    Walk,
}

impl Resolver {
    /// Which one this kernel supports, tried on `root`.
    pub fn probe(root: BorrowedFd<'_>) -> Resolver {
        match openat2(root, ".", how(OFlag::O_PATH, Mode::empty())) {
            Err(Errno::ENOSYS) => Resolver::Walk,
            _ => Resolver::Openat2,
        }
    }
}

/// Refuses paths that name anything but files beneath the root.
pub fn check(rel: &[String]) -> Result<(), String> {
    let mut len = 0;
    for c in rel {
        if c == ".." {
            return Err(errors::escapes());
        }
        if c.is_empty() || c == "." || c.contains('/') || c.contains('\0') {
            return Err(error::detail(EBADPATH, format!("bad name {c:?}")));
        }
        if c.len() > NAME_MAX {
            return Err(error::detail(ENAMETOOLONG, format!("{} bytes", c.len())));
        }
        len += c.len() + 1;
    }
    if len > PATH_MAX {
        return Err(error::detail(ENAMETOOLONG, format!("path of {len} bytes")));
    }
    Ok(())
}

/// The path relative to the root, `.` for the root itself.
pub fn join(rel: &[String]) -> String {
    if rel.is_empty() {
        ".".into()
    } else {
        rel.join("/")
    }
}

fn how(flags: OFlag, mode: Mode) -> OpenHow {
    // openat2 takes O_PATH with only O_DIRECTORY, O_NOFOLLOW, O_CLOEXEC.
    let extra = if flags.contains(OFlag::O_PATH) { OFlag::O_CLOEXEC } else { OFlag::O_CLOEXEC | OFlag::O_NOCTTY };
    OpenHow::new()
        .flags(flags | extra)
        .mode(mode)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Opens `rel` (already [`check`]ed) beneath `root`.
pub fn open(root: BorrowedFd<'_>, rel: &[String], flags: OFlag, mode: Mode, r: Resolver) -> Result<OwnedFd, Errno> {
    match r {
        Resolver::Openat2 => {
            let path = join(rel);
            // EAGAIN: a rename raced the resolution; the kernel asks to retry.
            let mut tries = 0;
            loop {
                match openat2(root, path.as_str(), how(flags, mode)) {
                    Err(Errno::EAGAIN) if tries < 8 => tries += 1,
                    other => return other,
                }
            }
        }
        Resolver::Walk => walk(root, rel, flags, mode),
    }
}

/// The fallback: each directory with `O_NOFOLLOW`, then the last name
/// with `O_NOFOLLOW`. A symbolic link anywhere answers EXDEV, the error
/// the kernel gives for a path that would leave the root.
fn walk(root: BorrowedFd<'_>, rel: &[String], flags: OFlag, mode: Mode) -> Result<OwnedFd, Errno> {
    let base = OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NOFOLLOW;
    let Some((last, dirs)) = rel.split_last() else {
        return openat(root, ".", flags | base, mode);
    };
    let mut cur: Option<OwnedFd> = None;
    for d in dirs {
        let at = cur.as_ref().map_or(root, |f| f.as_fd());
        let next = openat(at, d.as_str(), OFlag::O_PATH | OFlag::O_DIRECTORY | base, Mode::empty())
            .map_err(|e| link_or(at, d, e))?;
        cur = Some(next);
    }
    let at = cur.as_ref().map_or(root, |f| f.as_fd());
    let fd = openat(at, last.as_str(), flags | base, mode).map_err(|e| link_or(at, last, e))?;
    // With O_PATH, O_NOFOLLOW opens a link itself instead of failing:
    // what a caller that asked for O_NOFOLLOW wants (lstat), and for any
    // other, a link it may not follow.
    if flags.contains(OFlag::O_PATH) && !flags.contains(OFlag::O_NOFOLLOW) && is_link(&fstat(&fd)?) {
        return Err(Errno::EXDEV);
    }
    Ok(fd)
}

/// EXDEV when `name` in `at` is a symbolic link, else `e`.
fn link_or(at: BorrowedFd<'_>, name: &str, e: Errno) -> Errno {
    let st = nix::sys::stat::fstatat(at, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW);
    match st {
        Ok(st) if is_link(&st) => Errno::EXDEV,
        _ => e,
    }
}

fn is_link(st: &nix::sys::stat::FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFLNK
}
