//! POSIX record locks on served files, held on the serving machine.
//!
//! A lock taken through any machine's tree is a real lock on the file
//! here, so two machines locking the same file exclude each other, and
//! both exclude a process of this machine using the file directly (sshfs
//! and NFSv3 without lockd give neither). Each lock owner (a process on
//! some machine, as FUSE names it: the machine and its `lock_owner`) gets
//! an open file description of its own for each file, and its locks are
//! open-file-description locks (`F_OFD_SETLK`) on it: owners conflict
//! with each other and with classic POSIX locks here, while one owner's
//! locks merge and split as POSIX says. Closing that description drops
//! the owner's locks: [`Locks::drop_owner`] when the opener closes the
//! file (POSIX drops a process's locks on any close), or its machine is
//! gone.
//!
//! Waiting for a lock is the opener's business (it asks again), so no
//! thread here ever blocks on one and an interrupted waiter costs nothing.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, Mode};
use serde::{Deserialize, Serialize};

/// A lock owner: the machine it is on, and FUSE's `lock_owner` there.
pub type Owner = (String, u64);

/// A range and a type, as `struct flock` has them (`end` inclusive,
/// `u64::MAX` for "to the end of the file").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub start: u64,
    pub end: u64,
    /// `F_RDLCK`, `F_WRLCK` or `F_UNLCK`.
    pub typ: i32,
    /// Of a conflicting lock: the process holding it here, or 0 when it
    /// is another owner's (a description's lock has no process).
    pub pid: u32,
}

/// The descriptions held for lock owners, by file and owner.
#[derive(Default)]
pub struct Locks(Mutex<HashMap<(u64, u64, Owner), OwnedFd>>);

fn flock(l: &Lock) -> Result<libc::flock, Errno> {
    let start = i64::try_from(l.start).map_err(|_| Errno::EINVAL)?;
    // FUSE says "to the end" with the largest offset; flock with 0.
    let len = if l.end == u64::MAX || l.end == i64::MAX as u64 {
        0
    } else {
        i64::try_from(l.end.checked_sub(l.start).ok_or(Errno::EINVAL)? + 1).map_err(|_| Errno::EINVAL)?
    };
    // SAFETY: flock is plain data; zeroed is a valid value.
    let mut f: libc::flock = unsafe { std::mem::zeroed() };
    f.l_type = l.typ as libc::c_short;
    f.l_whence = libc::SEEK_SET as libc::c_short;
    f.l_start = start;
    f.l_len = len;
    Ok(f)
}

fn fcntl(fd: &OwnedFd, cmd: libc::c_int, f: &mut libc::flock) -> Result<(), Errno> {
    // SAFETY: fd is open; f is a valid flock for the call to read and fill.
    Errno::result(unsafe { libc::fcntl(fd.as_raw_fd(), cmd, f as *mut libc::flock) }).map(drop)
}

/// A new description of the file `f` is open on, read and write when
/// that is allowed, else read only.
fn reopen(f: &File) -> Result<OwnedFd, Errno> {
    let path = format!("/proc/self/fd/{}", f.as_raw_fd());
    let flags = OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
    nix::fcntl::open(path.as_str(), OFlag::O_RDWR | flags, Mode::empty())
        .or_else(|_| nix::fcntl::open(path.as_str(), OFlag::O_RDONLY | flags, Mode::empty()))
}

impl Locks {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, u64, Owner), OwnedFd>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes, changes or drops (`F_UNLCK`) `owner`'s lock on a range of
    /// the file `f` is open on, without waiting: a conflict is EAGAIN.
    pub fn set(&self, f: &File, owner: &Owner, l: &Lock) -> Result<(), Errno> {
        let st = fstat(f)?;
        let key = (st.st_dev, st.st_ino, owner.clone());
        let mut held = self.held();
        if !held.contains_key(&key) {
            if l.typ == libc::F_UNLCK {
                return Ok(());
            }
            held.insert(key.clone(), reopen(f)?);
        }
        let fd = held.get(&key).ok_or(Errno::EBADF)?;
        let mut fl = flock(l)?;
        fcntl(fd, libc::F_OFD_SETLK, &mut fl).map_err(|e| if e == Errno::EACCES { Errno::EAGAIN } else { e })
    }

    /// The first lock that would conflict with `l` for `owner`, or `l`
    /// with type `F_UNLCK` when none would.
    pub fn get(&self, f: &File, owner: &Owner, l: &Lock) -> Result<Lock, Errno> {
        let st = fstat(f)?;
        let key = (st.st_dev, st.st_ino, owner.clone());
        let mut fl = flock(l)?;
        {
            let held = self.held();
            match held.get(&key) {
                Some(fd) => fcntl(fd, libc::F_OFD_GETLK, &mut fl)?,
                None => fcntl(&reopen(f)?, libc::F_OFD_GETLK, &mut fl)?,
            }
        }
        if fl.l_type == libc::F_UNLCK as libc::c_short {
            return Ok(Lock { typ: libc::F_UNLCK, ..*l });
        }
        let start = fl.l_start.max(0) as u64;
        let end = if fl.l_len == 0 { u64::MAX } else { start + fl.l_len as u64 - 1 };
        Ok(Lock { start, end, typ: fl.l_type as i32, pid: fl.l_pid.max(0) as u32 })
    }

    /// Drops every lock of `owner` on the file `f` is open on.
    pub fn drop_owner(&self, f: &File, owner: &Owner) {
        if let Ok(st) = fstat(f) {
            self.held().remove(&(st.st_dev, st.st_ino, owner.clone()));
        }
    }

    /// Descriptions held now.
    pub fn len(&self) -> usize {
        self.held().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(start: u64, end: u64, typ: i32) -> Lock {
        Lock { start, end, typ, pid: 0 }
    }

    #[test]
    fn owners_exclude_each_other_and_a_local_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, "data").unwrap();
        let (f1, f2) = (File::options().read(true).write(true).open(&path).unwrap(), File::open(&path).unwrap());
        let locks = Locks::default();
        let (a, b) = (("a".to_string(), 1), ("b".to_string(), 1));
        locks.set(&f1, &a, &lock(0, 9, libc::F_WRLCK)).unwrap();
        // The same owner again, through another open file: merges.
        locks.set(&f2, &a, &lock(5, 20, libc::F_WRLCK)).unwrap();
        assert_eq!(locks.len(), 1);
        assert_eq!(locks.set(&f2, &b, &lock(15, 15, libc::F_RDLCK)), Err(Errno::EAGAIN));
        let c = locks.get(&f2, &b, &lock(0, u64::MAX, libc::F_RDLCK)).unwrap();
        assert_eq!((c.start, c.end, c.typ), (0, 20, libc::F_WRLCK));
        // Beyond a's range, b is free.
        locks.set(&f2, &b, &lock(21, u64::MAX, libc::F_RDLCK)).unwrap();
        // A classic POSIX lock of a process here conflicts too: ask as
        // a child would (a POSIX lock of our own process would not).
        let mut fl = flock(&lock(0, 0, libc::F_WRLCK)).unwrap();
        let raw = File::options().read(true).write(true).open(&path).unwrap();
        // SAFETY: raw is open; fl is a valid flock.
        let r = unsafe { libc::fcntl(raw.as_raw_fd(), libc::F_GETLK, &mut fl as *mut libc::flock) };
        assert_eq!((r, fl.l_type), (0, libc::F_WRLCK as libc::c_short));
        // Unlocking part, then dropping the owner, frees it all.
        locks.set(&f1, &a, &lock(0, 4, libc::F_UNLCK)).unwrap();
        locks.set(&f2, &b, &lock(0, 4, libc::F_WRLCK)).unwrap();
        locks.drop_owner(&f1, &a);
        locks.set(&f2, &b, &lock(0, u64::MAX, libc::F_WRLCK)).unwrap();
        locks.drop_owner(&f2, &b);
        assert!(locks.is_empty());
        // Unlocking what was never locked holds nothing.
        locks.set(&f1, &a, &lock(0, 1, libc::F_UNLCK)).unwrap();
        assert!(locks.is_empty());
    }
}
