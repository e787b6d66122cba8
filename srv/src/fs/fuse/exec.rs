//! Whether a file of this mount is the program of a process here: what
//! `open(O_RDONLY | O_TRUNC)` must ask before the truncation it asks for.
//!
//! The kernel refuses to truncate a program that runs (ETXTBSY), but for a
//! FUSE file system that takes truncation at open (`FUSE_ATOMIC_O_TRUNC`,
//! which fuse3 always takes) it asks only after the open: for a read-only
//! open the file system's OPEN comes first and carries the truncation, so
//! the file would be emptied on the serving machine and the open then fail
//! with ETXTBSY, and the program, its pages read again, dies (SIGSEGV or
//! SIGBUS). An open for writing is refused by the kernel before the OPEN,
//! so only the read-only one is asked here. The kernel's check is on
//! `i_writecount`, which it does not show; what holds it now is a process's
//! program (`/proc/PID/exe`), so that is what is looked for.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Device and inode of `path` as the kernel has them, without asking the
/// file system (a file of this mount would ask this very server).
fn dev_ino(path: &Path) -> Option<(u64, u64)> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `c` is a valid C string and `st` is large enough for statx.
    let r =
        unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), libc::AT_STATX_DONT_SYNC, libc::STATX_INO, st.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: statx filled it.
    let st = unsafe { st.assume_init() };
    Some((libc::makedev(st.stx_dev_major, st.stx_dev_minor), st.stx_ino))
}

/// Whether a process on this machine runs the file whose inode number is
/// `ino` on the file system mounted at `mount`.
pub fn running_here(mount: &Path, ino: u64) -> bool {
    let Some((dev, _)) = dev_ino(mount) else { return false };
    let Ok(procs) = std::fs::read_dir("/proc") else { return false };
    procs
        .flatten()
        .filter(|p| p.file_name().as_bytes().iter().all(u8::is_ascii_digit))
        .any(|p| dev_ino(&p.path().join("exe")) == Some((dev, ino)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_runs_its_own_program_and_not_another() {
        let exe = std::env::current_exe().unwrap();
        let (_, ino) = dev_ino(&exe).unwrap();
        let dir = exe.parent().unwrap();
        assert!(running_here(dir, ino));
        assert!(!running_here(dir, ino ^ 1));
    }
}
