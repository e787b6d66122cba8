//! Extended attributes of served files: the `user.` namespace only.
//!
//! The others are the kernel's business on each machine (`security.`
//! labels, `system.` ACLs) or privileged (`trusted.`); a machine answers
//! for them itself, at once, without asking the serving one: the kernel
//! asks for `security.capability` before every write, and that must not
//! cost a round trip. Files are named by `/proc/self/fd/N` of an `O_PATH`
//! descriptor opened beneath the root, so nothing is resolved twice.

use std::ffi::CString;

use nix::errno::Errno;

/// The one namespace served.
pub const USER: &str = "user.";
/// Linux's limits: a name of 255 bytes, a value of 64 KiB.
pub const NAME_MAX: usize = 255;
pub const VALUE_MAX: usize = 65536;

fn c(s: &str) -> Result<CString, Errno> {
    CString::new(s).map_err(|_| Errno::EINVAL)
}

/// Refuses names outside `user.`, and those too long.
pub fn check(name: &str) -> Result<(), Errno> {
    if !name.starts_with(USER) || name.len() == USER.len() {
        return Err(Errno::EOPNOTSUPP);
    }
    if name.len() > NAME_MAX {
        return Err(Errno::ERANGE);
    }
    Ok(())
}

pub fn get(path: &str, name: &str) -> Result<Vec<u8>, Errno> {
    check(name)?;
    let (p, n) = (c(path)?, c(name)?);
    let mut buf = vec![0u8; VALUE_MAX];
    // SAFETY: p and n are NUL-terminated; buf is VALUE_MAX bytes long.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let len = usize::try_from(r).map_err(|_| Errno::last())?;
    buf.truncate(len);
    Ok(buf)
}

pub fn set(path: &str, name: &str, value: &[u8], flags: u32) -> Result<(), Errno> {
    check(name)?;
    if value.len() > VALUE_MAX {
        return Err(Errno::E2BIG);
    }
    let flags = flags as i32 & (libc::XATTR_CREATE | libc::XATTR_REPLACE);
    let (p, n) = (c(path)?, c(name)?);
    // SAFETY: p and n are NUL-terminated; value is value.len() bytes.
    let r = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), flags) };
    Errno::result(r).map(drop)
}

/// The `user.` names.
pub fn list(path: &str) -> Result<Vec<String>, Errno> {
    let p = c(path)?;
    let mut buf = vec![0u8; VALUE_MAX];
    // SAFETY: p is NUL-terminated; buf is VALUE_MAX bytes long.
    let r = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let len = usize::try_from(r).map_err(|_| Errno::last())?;
    Ok(buf[..len]
        .split(|&b| b == 0)
        .filter_map(|n| std::str::from_utf8(n).ok())
        .filter(|n| n.starts_with(USER))
        .map(String::from)
        .collect())
}

pub fn remove(path: &str, name: &str) -> Result<(), Errno> {
    check(name)?;
    let (p, n) = (c(path)?, c(name)?);
    // SAFETY: p and n are NUL-terminated.
    Errno::result(unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) }).map(drop)
}
