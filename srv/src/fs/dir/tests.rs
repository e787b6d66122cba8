//! Confinement of a served directory, and its operations, on real files.
//!
//! Each test makes `base/root` (served) beside `base/outside` (holding a
//! secret), then tries to reach the outside every way a path can.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::beneath::NAME_MAX;
use super::*;
use crate::fs::errors::errno;

struct Fixture {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    root: Root,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().to_path_buf();
    std::fs::create_dir_all(base.join("root/sub")).unwrap();
    std::fs::create_dir_all(base.join("outside")).unwrap();
    std::fs::write(base.join("outside/secret"), "secret\n").unwrap();
    std::fs::write(base.join("root/sub/file"), "inside\n").unwrap();
    let root = Root::open(&base.join("root")).expect("open root");
    Fixture { _tmp: tmp, base, root }
}

fn p(s: &str) -> Vec<String> {
    s.split('/').filter(|c| !c.is_empty()).map(String::from).collect()
}

fn read_all(root: &Root, path: &str) -> Result<String, String> {
    let f = root.open_file(&p(path), Access { read: true, ..Access::default() })?;
    Ok(String::from_utf8_lossy(&read_at(&f, 0, 1 << 20)?).into_owned())
}

fn names(root: &Root, path: &str) -> Vec<String> {
    root.list(&p(path)).expect("list").into_iter().map(|e| e.name).collect()
}

/// Fails with `want` (an errno), and says so.
#[track_caller]
fn fails<T: std::fmt::Debug>(r: Result<T, String>, want: i32) {
    match r {
        Ok(v) => panic!("succeeded: {v:?}"),
        Err(e) => assert_eq!(errno(&e), want, "{e}"),
    }
}

#[test]
fn dot_dot_is_refused_everywhere() {
    let f = fixture();
    let r = &f.root;
    let up = vec!["..".to_string(), "outside".into(), "secret".into()];
    fails(r.stat(&up), libc::EACCES);
    fails(r.open_file(&up, Access { read: true, ..Access::default() }), libc::EACCES);
    fails(r.list(&["..".to_string()]), libc::EACCES);
    // Even where it would stay inside.
    fails(r.stat(&p("sub/../sub/file")), libc::EACCES);
    fails(r.mkdir(&["..".into(), "made".into()], 0o755), libc::EACCES);
    fails(
        r.create(&["..".into(), "made".into()], 0o644, Access { write: true, ..Access::default() }, true),
        libc::EACCES,
    );
    fails(r.remove(&["..".into(), "outside".into(), "secret".into()], false), libc::EACCES);
    fails(r.rename(&p("sub/file"), &["..".into(), "stolen".into()], 0), libc::EACCES);
    assert!(!f.base.join("made").exists() && !f.base.join("stolen").exists());
    assert!(f.base.join("outside/secret").exists());
}

#[test]
fn odd_names_are_refused() {
    let f = fixture();
    for bad in ["", ".", "a/b", "../x", "a\0b", "/etc"] {
        fails(f.root.stat(&[bad.to_string()]), libc::EINVAL);
    }
}

#[test]
fn absolute_symlinks_are_refused() {
    let f = fixture();
    symlink("/etc/passwd", f.base.join("root/passwd")).unwrap();
    symlink("/etc", f.base.join("root/etc")).unwrap();
    symlink(f.base.join("root/sub/file"), f.base.join("root/abs-in")).unwrap();
    fails(read_all(&f.root, "passwd"), libc::EACCES);
    fails(f.root.stat(&p("etc/passwd")), libc::EACCES);
    fails(f.root.list(&p("etc")), libc::EACCES);
    // Absolute even when it names a file inside: the root's own path is
    // no business of the link's.
    fails(read_all(&f.root, "abs-in"), libc::EACCES);
    // Listed as what they are: links, whose targets the opener's kernel
    // follows in its own tree, never here.
    assert_eq!(names(&f.root, ""), ["abs-in", "etc", "passwd", "sub"]);
    assert_eq!(f.root.stat(&p("passwd")).unwrap().kind, FileKind::Link);
    assert_eq!(f.root.readlink(&p("passwd")).unwrap(), "/etc/passwd");
}

#[test]
fn relative_symlinks_leading_out_are_refused() {
    let f = fixture();
    symlink("../outside/secret", f.base.join("root/up")).unwrap();
    symlink("../../outside", f.base.join("root/sub/out")).unwrap();
    symlink("sub/../../outside/secret", f.base.join("root/twisty")).unwrap();
    fails(read_all(&f.root, "up"), libc::EACCES);
    fails(read_all(&f.root, "sub/out/secret"), libc::EACCES);
    fails(read_all(&f.root, "twisty"), libc::EACCES);
    // A change by name is the link's own (the kernel has followed what it
    // follows): a link has no mode to change, and what it names keeps its.
    fails(f.root.set_attr(&p("up"), &Attrs { mode: Some(0o777), ..Attrs::default() }), libc::EOPNOTSUPP);
    let times = Attrs { mtime: Some((1_000_000_000, 0)), ..Attrs::default() };
    assert_eq!(f.root.set_attr(&p("up"), &times).unwrap().meta.map(|m| m.mtime), Some((1_000_000_000, 0)));
    let outside = std::fs::metadata(f.base.join("outside/secret")).unwrap();
    assert_ne!(std::os::unix::fs::MetadataExt::mtime(&outside), 1_000_000_000);
    fails(f.root.set_attr(&p("up"), &Attrs { size: Some(0), ..Attrs::default() }), libc::EACCES);
    assert_eq!(std::fs::read_to_string(f.base.join("outside/secret")).unwrap(), "secret\n");
    assert_eq!(names(&f.root, "sub"), ["file", "out"]);
}

#[test]
fn creating_through_a_link_out_is_refused() {
    let f = fixture();
    symlink(f.base.join("outside/new"), f.base.join("root/abs")).unwrap();
    symlink("../outside/new2", f.base.join("root/rel")).unwrap();
    let w = Access { write: true, ..Access::default() };
    fails(f.root.create(&p("abs"), 0o644, w, false), libc::EACCES);
    fails(f.root.create(&p("rel"), 0o644, w, false), libc::EACCES);
    assert!(!f.base.join("outside/new").exists() && !f.base.join("outside/new2").exists());
    // Removing the link removes the link, not what it names.
    f.root.remove(&p("abs"), false).unwrap();
    assert!(f.base.join("outside").exists());
}

#[test]
fn symlinks_that_stay_inside_are_followed() {
    let f = fixture();
    symlink("sub/file", f.base.join("root/link")).unwrap();
    symlink("sub", f.base.join("root/dirlink")).unwrap();
    symlink("../sub/file", f.base.join("root/sub/self")).unwrap();
    assert_eq!(read_all(&f.root, "link").unwrap(), "inside\n");
    assert_eq!(read_all(&f.root, "dirlink/file").unwrap(), "inside\n");
    assert_eq!(read_all(&f.root, "sub/self").unwrap(), "inside\n");
    // stat is lstat: the link itself; what is beneath it is reached.
    assert_eq!(f.root.stat(&p("dirlink")).unwrap().kind, FileKind::Link);
    assert_eq!(f.root.stat(&p("dirlink/file")).unwrap().kind, FileKind::Stored);
    assert_eq!(names(&f.root, ""), ["dirlink", "link", "sub"]);
}

#[test]
fn without_openat2_every_symlink_is_refused() {
    let f = fixture();
    symlink("sub/file", f.base.join("root/link")).unwrap();
    symlink("sub", f.base.join("root/dirlink")).unwrap();
    symlink("/etc/passwd", f.base.join("root/passwd")).unwrap();
    let root = Root::open(&f.base.join("root")).unwrap().walking();
    assert_eq!(read_all(&root, "sub/file").unwrap(), "inside\n");
    fails(read_all(&root, "link"), libc::EACCES);
    fails(read_all(&root, "dirlink/file"), libc::EACCES);
    fails(read_all(&root, "passwd"), libc::EACCES);
    fails(root.stat(&p("dirlink/file")), libc::EACCES);
    fails(root.create(&p("passwd"), 0o644, Access { write: true, ..Access::default() }, false), libc::EACCES);
    // A link is still seen as itself.
    assert_eq!(root.stat(&p("link")).unwrap().kind, FileKind::Link);
    assert_eq!(names(&root, ""), ["dirlink", "link", "passwd", "sub"]);
}

#[test]
fn long_names_and_paths() {
    let f = fixture();
    let long = "x".repeat(NAME_MAX + 1);
    fails(f.root.stat(&[long]), libc::ENAMETOOLONG);
    let deep: Vec<String> = (0..40).map(|i| format!("{i:0>120}")).collect();
    fails(f.root.stat(&deep), libc::ENAMETOOLONG);
    // Just under the limits works, all the way down.
    let name = "y".repeat(NAME_MAX);
    let ok: Vec<String> = (0..15).map(|i| format!("{i}{}", &name[..200])).collect();
    for i in 1..=ok.len() {
        f.root.mkdir(&ok[..i], 0o755).unwrap();
    }
    let mut file = ok.clone();
    file.push(name);
    let (fh, _) = f.root.create(&file, 0o644, Access { write: true, ..Access::default() }, true).unwrap();
    write_at(&fh, 0, b"deep").unwrap();
    assert_eq!(f.root.stat(&file).unwrap().meta.map(|m| m.size), Some(4));
}

#[test]
fn names_that_are_not_utf8_are_left_out() {
    let f = fixture();
    let bad = std::ffi::OsStr::from_bytes(b"bad\xff\xfe");
    std::fs::write(f.base.join("root").join(bad), "x").unwrap();
    std::fs::create_dir(f.base.join("root/sub").join(bad)).unwrap();
    std::fs::write(f.base.join("root/gut-\u{e9}"), "y").unwrap();
    assert_eq!(names(&f.root, ""), ["gut-\u{e9}", "sub"]);
    assert_eq!(names(&f.root, "sub"), ["file"]);
}

#[test]
fn fifos_sockets_and_devices_are_served_but_never_opened_here() {
    let f = fixture();
    let fifo = f.base.join("root/fifo");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o644)).unwrap();
    std::os::unix::net::UnixListener::bind(f.base.join("root/sock")).unwrap();
    symlink("/dev/null", f.base.join("root/null")).unwrap();
    let root_user = nix::unistd::geteuid().is_root();
    if root_user {
        let dev = f.base.join("root/dev");
        nix::sys::stat::mknod(&dev, SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), nix::sys::stat::makedev(1, 3))
            .unwrap();
        let e = f.root.stat(&p("dev")).unwrap();
        assert_eq!((e.kind, e.meta.map(|m| m.rdev)), (FileKind::CharDevice, Some(nix::sys::stat::makedev(1, 3))));
        fails(read_all(&f.root, "dev"), libc::EPERM);
        assert_eq!(names(&f.root, ""), ["dev", "fifo", "null", "sock", "sub"]);
        std::fs::remove_file(&dev).unwrap();
    }
    assert_eq!(names(&f.root, ""), ["fifo", "null", "sock", "sub"]);
    assert_eq!(f.root.stat(&p("fifo")).unwrap().kind, FileKind::Fifo);
    assert_eq!(f.root.stat(&p("sock")).unwrap().kind, FileKind::Socket);
    // Opening the fifo here would block until a writer came: refused
    // without opening it (through a mount the opener's kernel serves it).
    fails(read_all(&f.root, "fifo"), libc::EPERM);
    fails(f.root.create(&p("fifo"), 0o644, Access { write: true, ..Access::default() }, false), libc::EPERM);
    fails(read_all(&f.root, "null"), libc::EACCES);
    fails(read_all(&f.root, "sub"), libc::EISDIR);
    // Made here too; a device by whom the kernel lets (root).
    assert_eq!(f.root.mknod(&p("fifo2"), libc::S_IFIFO | 0o600, 0).unwrap().kind, FileKind::Fifo);
    assert_eq!(f.root.mknod(&p("sub/sock2"), libc::S_IFSOCK | 0o600, 0).unwrap().kind, FileKind::Socket);
    assert_eq!(f.root.mknod(&p("plain"), libc::S_IFREG | 0o600, 0).unwrap().kind, FileKind::Stored);
    fails(f.root.mknod(&p("dir"), libc::S_IFDIR | 0o700, 0), libc::EINVAL);
    let blk = nix::sys::stat::makedev(300, 70000);
    match f.root.mknod(&p("blk"), libc::S_IFBLK | 0o600, blk) {
        Ok(e) => {
            assert!(root_user);
            assert_eq!((e.kind, e.meta.map(|m| m.rdev)), (FileKind::BlockDevice, Some(blk)));
            fails(read_all(&f.root, "blk"), libc::EPERM);
        }
        Err(e) => assert_eq!((root_user, crate::fs::errors::errno(&e)), (false, libc::EPERM)),
    }
}

#[test]
fn symlinks_hard_links_and_statfs() {
    let f = fixture();
    let r = &f.root;
    let e = r.symlink(&p("to-file"), "sub/file").unwrap();
    assert_eq!((e.kind, e.meta.map(|m| m.size)), (FileKind::Link, Some(8)));
    assert_eq!(r.readlink(&p("to-file")).unwrap(), "sub/file");
    assert_eq!(read_all(r, "to-file").unwrap(), "inside\n");
    // Any text is a target: it is resolved where the link is followed.
    r.symlink(&p("sub/far"), "/etc/passwd").unwrap();
    assert_eq!(std::fs::read_link(f.base.join("root/sub/far")).unwrap(), Path::new("/etc/passwd"));
    fails(read_all(r, "sub/far"), libc::EACCES);
    fails(r.symlink(&p("to-file"), "x"), libc::EEXIST);
    fails(r.symlink(&["..".into(), "planted".into()], "x"), libc::EACCES);
    fails(r.readlink(&p("sub/file")), libc::EINVAL);
    // A hard link is the same file under two names.
    let e = r.link(&p("sub/file"), &p("again")).unwrap();
    assert_eq!(e.meta.map(|m| m.nlink), Some(2));
    assert_eq!(read_all(r, "again").unwrap(), "inside\n");
    // Linking a symbolic link links the link, not what it names.
    assert_eq!(r.link(&p("sub/far"), &p("far2")).unwrap().kind, FileKind::Link);
    fails(r.link(&p("sub/file"), &["..".into(), "outside".into(), "stolen".into()]), libc::EACCES);
    fails(r.link(&["..".into(), "outside".into(), "secret".into()], &p("stolen")), libc::EACCES);
    assert!(!f.base.join("outside/stolen").exists() && !f.base.join("root/stolen").exists());
    let s = r.statfs().unwrap();
    let v = nix::sys::statvfs::statvfs(&f.base).unwrap();
    assert_eq!((s.blocks, s.bsize), (v.blocks() as u64, v.block_size() as u32));
    assert!(s.blocks > 0 && s.namelen > 0);
}

#[test]
fn files_change_as_asked() {
    let f = fixture();
    let r = &f.root;
    let rw = Access { read: true, write: true, ..Access::default() };
    let (fh, e) = r.create(&p("new"), 0o640, rw, true).unwrap();
    assert_eq!((e.kind, e.meta.map(|m| m.size)), (FileKind::Stored, Some(0)));
    write_at(&fh, 0, b"hello world").unwrap();
    assert_eq!(read_at(&fh, 6, 100).unwrap(), b"world");
    fails(r.create(&p("new"), 0o640, rw, true), libc::EEXIST);
    let e = r
        .set_attr(
            &p("new"),
            &Attrs {
                size: Some(5),
                mode: Some(0o600),
                mtime: Some((1_000_000_000, 5)),
                atime: None,
                ..Attrs::default()
            },
        )
        .unwrap();
    assert_eq!((e.mode, e.meta.map(|m| (m.size, m.mtime))), (0o600, Some((5, (1_000_000_000, 5)))));
    let e = file_attr(&fh, &Attrs { size: Some(2), ..Attrs::default() }, "new", "new").unwrap();
    assert_eq!(e.meta.map(|m| m.size), Some(2));
    // Opened to append, a write goes to the end whatever its offset.
    let a = r.open_file(&p("new"), Access { write: true, append: true, ..Access::default() }).unwrap();
    write_at(&a, 0, b"!!").unwrap();
    assert_eq!(read_all(r, "new").unwrap(), "he!!");
    // And to truncate, it starts empty.
    r.open_file(&p("new"), Access { write: true, trunc: true, ..Access::default() }).unwrap();
    assert_eq!(read_all(r, "new").unwrap(), "");
    r.mkdir(&p("d"), 0o755).unwrap();
    fails(r.mkdir(&p("d"), 0o755), libc::EEXIST);
    r.rename(&p("new"), &p("d/moved"), 0).unwrap();
    fails(r.stat(&p("new")), libc::ENOENT);
    std::fs::write(f.base.join("root/other"), "o").unwrap();
    fails(r.rename(&p("other"), &p("d/moved"), libc::RENAME_NOREPLACE), libc::EEXIST);
    fails(r.remove(&p("d"), true), libc::ENOTEMPTY);
    fails(r.remove(&p("d"), false), libc::EISDIR);
    r.remove(&p("d/moved"), false).unwrap();
    r.remove(&p("d"), true).unwrap();
    fails(r.remove(&[], true), libc::EINVAL);
    assert_eq!(names(r, ""), ["other", "sub"]);
}

#[test]
fn the_root_must_be_a_directory() {
    let f = fixture();
    fails(Root::open(&f.base.join("outside/secret")).map(|_| ()), libc::ENOTDIR);
    fails(Root::open(Path::new("/nonexistent/dir")).map(|_| ()), libc::ENOENT);
}

#[test]
fn exchange_attributes_and_allocation() {
    let f = fixture();
    let r = &f.root;
    std::fs::write(f.base.join("root/one"), "1").unwrap();
    r.rename(&p("one"), &p("sub/file"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!((read_all(r, "one").unwrap(), read_all(r, "sub/file").unwrap()), ("inside\n".into(), "1".into()));
    fails(r.rename(&p("one"), &p("nothing"), libc::RENAME_EXCHANGE), libc::ENOENT);
    fails(r.rename(&p("one"), &p("sub/file"), libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE), libc::EINVAL);
    fails(r.rename(&p("one"), &p("two"), libc::RENAME_WHITEOUT), libc::EINVAL);
    // user.* attributes are kept; other namespaces are not served.
    r.setxattr(&p("one"), "user.colour", b"blue", 0).unwrap();
    assert_eq!(r.getxattr(&p("one"), "user.colour").unwrap(), b"blue");
    assert_eq!(r.listxattr(&p("one")).unwrap(), ["user.colour"]);
    fails(r.setxattr(&p("one"), "user.colour", b"red", libc::XATTR_CREATE as u32), libc::EEXIST);
    fails(r.setxattr(&p("one"), "trusted.x", b"1", 0), libc::EOPNOTSUPP);
    fails(r.getxattr(&p("one"), "user.none"), libc::ENODATA);
    r.removexattr(&p("one"), "user.colour").unwrap();
    assert!(r.listxattr(&p("one")).unwrap().is_empty());
    fails(r.setxattr(&["..".into(), "outside".into(), "secret".into()], "user.x", b"1", 0), libc::EACCES);
    // fallocate: space, then a hole punched in it.
    let rw = Access { read: true, write: true, ..Access::default() };
    let fh = r.open_file(&p("one"), rw).unwrap();
    allocate(&fh, 0, 1 << 20, 0).unwrap();
    assert_eq!(r.stat(&p("one")).unwrap().meta.map(|m| m.size), Some(1 << 20));
    let keep = (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE) as u32;
    allocate(&fh, 0, 4096, keep).unwrap();
    assert_eq!(read_at(&fh, 0, 7).unwrap(), [0u8; 7]);
    fails(allocate(&fh, 0, 1, 0x4000_0000), libc::EOPNOTSUPP);
}

#[test]
fn owners_are_kept_and_given_away_by_root() {
    let f = fixture();
    let r = &f.root;
    let me = nix::unistd::geteuid().as_raw();
    let e = r.stat(&p("sub/file")).unwrap();
    let m = e.meta.unwrap();
    // The serving router's own files are shown as the router's.
    assert_eq!((m.uid, m.gid), (None, None));
    if me != 0 {
        fails(r.set_attr(&p("sub/file"), &Attrs { uid: Some(Id::Num(me + 1)), ..Attrs::default() }), libc::EPERM);
        return;
    }
    // Root may give a file away, a link itself included.
    let e =
        r.set_attr(&p("sub/file"), &Attrs { uid: Some(Id::Num(4242)), gid: Some(Id::Num(4343)), ..Attrs::default() });
    let m = e.unwrap().meta.unwrap();
    assert_eq!((m.uid, m.gid), (Some(4242), Some(4343)));
    std::os::unix::fs::symlink("sub/file", f.base.join("root/ln")).unwrap();
    let e = r.set_attr(&p("ln"), &Attrs { uid: Some(Id::Num(77)), ..Attrs::default() }).unwrap();
    assert_eq!((e.kind, e.meta.unwrap().uid), (FileKind::Link, Some(77)));
    assert_eq!(r.stat(&p("sub/file")).unwrap().meta.unwrap().uid, Some(4242));
    // And back to the router's own.
    let e = r.set_attr(&p("sub/file"), &Attrs { uid: Some(Id::Router), gid: Some(Id::Router), ..Attrs::default() });
    assert_eq!(e.unwrap().meta.map(|m| (m.uid, m.gid)), Some((None, None)));
}

/// Work done for a caller is done as them: the serving kernel answers
/// every permission question, and new files are theirs.
#[test]
fn callers_act_as_themselves() {
    use crate::fs::caller::{as_caller, Caller, NOBODY};
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    let r = &f.root;
    let me = nix::unistd::geteuid().as_raw();
    let user = Caller { uid: Id::Num(4242), gid: Id::Num(4242), groups: vec![4343], on_behalf: false };
    if me != 0 {
        // A router that is not root serves its own user alone.
        fails(as_caller(Some(&user), || r.stat(&p("sub/file"))), libc::EACCES);
        assert!(as_caller(Some(&Caller::router()), || r.stat(&p("sub/file"))).is_ok());
        return;
    }
    let mode = |path: &str, m: u32| std::fs::set_permissions(f.base.join(path), std::fs::Permissions::from_mode(m));
    for (path, m) in [("", 0o755), ("root", 0o755), ("root/sub", 0o700), ("root/sub/file", 0o644)] {
        mode(path, m).unwrap();
    }
    std::fs::create_dir(f.base.join("root/tmp")).unwrap();
    mode("root/tmp", 0o1777).unwrap();
    std::fs::create_dir(f.base.join("root/team")).unwrap();
    mode("root/team", 0o770).unwrap();
    nix::unistd::chown(&f.base.join("root/team"), None, Some(nix::unistd::Gid::from_raw(4343))).unwrap();

    // Search permission on the way, checked by the kernel.
    fails(as_caller(Some(&user), || r.stat(&p("sub/file"))), libc::EACCES);
    fails(as_caller(Some(&user), || r.mkdir(&p("new"), 0o755)), libc::EACCES);
    // A new file is its maker's, group and all.
    let e = as_caller(Some(&user), || r.mkdir(&p("tmp/mine"), 0o755)).unwrap().meta.unwrap();
    assert_eq!((e.uid, e.gid), (Some(4242), Some(4242)));
    // Supplementary groups count.
    as_caller(Some(&user), || r.create(&p("team/shared"), 0o644, Access::default(), true)).unwrap();
    let nogroups = Caller { groups: vec![], ..user.clone() };
    fails(as_caller(Some(&nogroups), || r.stat(&p("team/shared"))), libc::EACCES);
    // The sticky directory: nobody removes another's file.
    fails(as_caller(Some(&Caller::nobody()), || r.remove(&p("tmp/mine"), true)), libc::EPERM);
    assert_eq!(as_caller(Some(&Caller::nobody()), || r.statfs()).map(|_| ()), Ok(()));
    // The thread is the router again after, and root can do anything.
    assert!(r.stat(&p("sub/file")).is_ok());
    // SAFETY: asking with an impossible id only reads the current one.
    assert_eq!(unsafe { (libc::setfsuid(u32::MAX), libc::setfsgid(u32::MAX)) }, (0, 0));
    assert!(as_caller(None, || r.stat(&p("sub/file"))).is_ok());
    assert_eq!(Caller::nobody().uid, Id::Num(NOBODY));
}

/// Root of another machine is nobody unless the service says otherwise.
#[test]
fn squash_maps_root_and_everyone() {
    use crate::fs::caller::Caller;
    use ns::deploy::Squash;
    let me = nix::unistd::geteuid().as_raw();
    let root = Caller { uid: Id::Num(0), gid: Id::Num(0), groups: vec![1], on_behalf: false };
    let user = Caller { uid: Id::Num(1000), gid: Id::Num(1000), groups: vec![], on_behalf: false };
    assert_eq!(root.clone().squashed(Squash::Root), Caller::nobody());
    assert_eq!(root.clone().squashed(Squash::None), root);
    assert_eq!(user.clone().squashed(Squash::Root), user);
    assert_eq!(user.clone().squashed(Squash::All), Caller::nobody());
    // The calling router's own user is root here when this router is.
    let router = Caller::router().squashed(Squash::Root);
    assert_eq!(router == Caller::nobody(), me == 0);
}

#[test]
fn modes_asked_for_are_not_masked_again_by_the_routers_umask() {
    // The caller's kernel masked the mode with the caller's umask; the
    // router's own (022 here, as a rule) must not mask it again: mkdir -m
    // 777 under umask 0 made 755.
    let umask = || {
        let s = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        s.lines().find_map(|l| l.strip_prefix("Umask:")).unwrap().trim().to_string()
    };
    let before = umask();
    let f = fixture();
    let mode = |rel: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(f.base.join("root").join(rel)).unwrap().permissions().mode() & 0o7777
    };
    // On a thread of its own, as the router's threads are.
    std::thread::scope(|s| {
        s.spawn(|| {
            f.root.mkdir(&p("open"), 0o777).unwrap();
            f.root.create(&p("open/file"), 0o666, Access { write: true, ..Access::default() }, true).unwrap();
            f.root.mknod(&p("open/fifo"), libc::S_IFIFO | 0o666, 0).unwrap();
        });
    });
    assert_eq!([mode("open"), mode("open/file"), mode("open/fifo")], [0o777, 0o666, 0o666]);
    // The process's umask, which the rest of the router uses, is untouched.
    assert_eq!(umask(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_opened_before_its_opener_is_told_is_watched_at_a_later_look() {
    // The first open after a mount comes before the mount's conversation
    // of changes is up: not watched then, it is at the next look, so what
    // the open file says of itself may be kept from then on.
    use crate::fs::handle::Told;
    let f = fixture();
    let w = std::sync::Arc::new(super::watch::Watcher::default());
    let who: super::watch::Asker = Some("a".parse().unwrap());
    let root = std::sync::Arc::new(f.root);
    let told = Told::new(false, Some((root.clone(), p("sub/file"), who.clone())));
    assert!(!told.check(&w), "nobody to tell yet");
    let _feed = w.subscribe(who).unwrap();
    assert!(told.check(&w), "watched once it can be");
    assert!(!Told::new(false, None).check(&w), "a file made unwatched stays so");
}
