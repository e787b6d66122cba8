//! File-system errors of the tree, beyond the mesh's own (`ns::error`).
//!
//! Served directories fail the way file systems do: no such file, not
//! empty, exists, no space. These travel between machines as strings like
//! every mesh error, so they too get Plan 9 wording, are declared once
//! here and map back to errno in one table, [`errno`], at the FUSE edge.

use ns::error::{self, EPERM};

pub const ENOTFOUND: &str = "file does not exist";
pub const EEXIST: &str = "file already exists";
pub const ENOTEMPTY: &str = "directory not empty";
pub const EISDIR: &str = "is a directory";
pub const ENOTDIR: &str = "not a directory";
pub const ENAMETOOLONG: &str = "file name too long";
pub const ENOSPC: &str = "file system full";
pub const EFBIG: &str = "file too large";
pub const EROFS: &str = "read-only file system";
pub const EXDEV: &str = "rename across services";
pub const EBUSY: &str = "file in use";
pub const ELOOP: &str = "symbolic link loop";
pub const ENOTSUP: &str = "operation not supported";
pub const EIO: &str = "i/o error";
pub const ENOATTR: &str = "no such attribute";
/// A record lock conflicts (EAGAIN, as fcntl F_SETLK says it).
pub const ELOCKED: &str = "locked by another owner";
pub const ERANGE: &str = "buffer too small";
/// A request no file system would take (mknod of a directory).
pub const EBADARG: &str = "bad argument";
/// EPERM, not EACCES: what no mode bit would allow (a device, chown).
pub const ENOTPERM: &str = "operation not permitted";
/// A directory is not the one a request was answered in (a removal sent
/// ahead, its directory renamed meanwhile).
pub const ESTALE: &str = "directory moved";

/// The path leaves the served directory: `..`, an absolute symbolic link,
/// a link leading out. Worded as `permission denied` so it maps to EACCES
/// through the mesh's own table.
pub fn escapes() -> String {
    error::detail(EPERM, "path escapes the root")
}

/// A kind of file not served (none Linux has today).
pub fn not_served() -> String {
    error::detail(EPERM, "a kind of file not served")
}

const TABLE: &[(&str, i32)] = &[
    (ENOTFOUND, libc::ENOENT),
    (EEXIST, libc::EEXIST),
    (ENOTEMPTY, libc::ENOTEMPTY),
    (EISDIR, libc::EISDIR),
    (ENOTDIR, libc::ENOTDIR),
    (ENAMETOOLONG, libc::ENAMETOOLONG),
    (ENOSPC, libc::ENOSPC),
    (EFBIG, libc::EFBIG),
    (EROFS, libc::EROFS),
    (EXDEV, libc::EXDEV),
    (EBUSY, libc::EBUSY),
    (ELOOP, libc::ELOOP),
    (ENOTSUP, libc::EOPNOTSUPP),
    (ENOTPERM, libc::EPERM),
    (ESTALE, libc::ESTALE),
    (EBADARG, libc::EINVAL),
    (ENOATTR, libc::ENODATA),
    (ELOCKED, libc::EAGAIN),
    (ERANGE, libc::ERANGE),
];

/// An OS error of a served directory as a mesh error string, naming the
/// path inside the root (`file does not exist: a/b`).
pub fn os(e: nix::errno::Errno, what: &str) -> String {
    use nix::errno::Errno as E;
    let s = match e {
        E::ENOENT => ENOTFOUND,
        E::EEXIST => EEXIST,
        E::ENOTEMPTY => ENOTEMPTY,
        E::EISDIR => EISDIR,
        E::ENOTDIR => ENOTDIR,
        E::ENAMETOOLONG => ENAMETOOLONG,
        E::ENOSPC | E::EDQUOT => ENOSPC,
        E::EFBIG => EFBIG,
        E::EROFS => EROFS,
        E::EBUSY | E::ETXTBSY => EBUSY,
        // The kernel's own confinement (RESOLVE_BENEATH) answers EXDEV for
        // a path that would leave the root.
        E::EXDEV => return escapes(),
        E::ELOOP => ELOOP,
        E::EACCES => EPERM,
        E::EPERM => ENOTPERM,
        E::ENODATA => ENOATTR,
        E::EAGAIN => ELOCKED,
        E::ERANGE | E::E2BIG => ERANGE,
        E::EOPNOTSUPP | E::ENOSYS => ENOTSUP,
        E::EINVAL => error::EBADPATH,
        other => return error::detail(EIO, format!("{what}: {}", other.desc())),
    };
    if what.is_empty() {
        s.to_string()
    } else {
        error::detail(s, what)
    }
}

/// [`os`] for a `std::io::Error`.
pub fn io(e: &std::io::Error, what: &str) -> String {
    match e.raw_os_error() {
        Some(n) => os(nix::errno::Errno::from_raw(n), what),
        None => error::detail(EIO, format!("{what}: {e}")),
    }
}

/// The errno for any error string of the tree: this table first, then the
/// mesh's. Strings carrying detail (`what: detail`) map by their lead; the
/// tree's own "'/x' file does not exist" by its end.
pub fn errno(e: &str) -> i32 {
    if let Some(&(_, n)) = TABLE.iter().find(|(s, _)| e.starts_with(s)) {
        return n;
    }
    if e.ends_with(ENOTFOUND) {
        return libc::ENOENT;
    }
    error::errno(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_strings() {
        for (e, n) in [
            (nix::errno::Errno::ENOENT, libc::ENOENT),
            (nix::errno::Errno::ENOTEMPTY, libc::ENOTEMPTY),
            (nix::errno::Errno::EXDEV, libc::EACCES),
            (nix::errno::Errno::EACCES, libc::EACCES),
            (nix::errno::Errno::EPERM, libc::EPERM),
            (nix::errno::Errno::EINVAL, libc::EINVAL),
            (nix::errno::Errno::EIO, libc::EIO),
        ] {
            assert_eq!(errno(&os(e, "a/b")), n, "{e:?}");
        }
        assert_eq!(errno(&escapes()), libc::EACCES);
        assert_eq!(errno("'/x' file does not exist"), libc::ENOENT);
        assert_eq!(errno("no route to machine"), libc::EHOSTUNREACH);
    }
}
