//! The `dir` kind through real FUSE mounts: machine b serves a temporary
//! directory as `files`; machine a, another router process, uses it under
//! `a/n/b/svc/files/root/` (and `a/svc/files/root/`, the nearest replica)
//! with ls, cat, echo, mkdir, mv, rm, truncate, dd and cmp, and tries to
//! get out of it.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mnt_tests::{sh, sh_ok, until, Deploy, Mesh};

const T: Duration = Duration::from_secs(30);

struct Ab {
    _m: Mesh,
    dir: PathBuf,
}

impl Ab {
    fn d(&self) -> String {
        self.dir.display().to_string()
    }
    /// b's served directory on b's disk.
    fn files(&self) -> String {
        format!("{}/files", self.d())
    }
    /// The same directory through a's mount.
    fn remote(&self) -> String {
        format!("{}/a/n/b/svc/files/root", self.d())
    }
    /// The same directory through b's own mount.
    fn local(&self) -> String {
        format!("{}/b/svc/files/root", self.d())
    }
}

/// a -tcp- b; b serves `DIR/files` (holding hello.txt and sub/) as `files`;
/// `DIR/outside` holds a file nobody should reach.
fn start() -> Ab {
    let mut m = Mesh::new();
    let dir = m.dir.path().to_path_buf();
    let d = dir.display();
    std::fs::create_dir_all(dir.join("files/sub")).unwrap();
    std::fs::create_dir_all(dir.join("outside")).unwrap();
    std::fs::write(dir.join("files/hello.txt"), "hello from b\n").unwrap();
    std::fs::set_permissions(dir.join("files/hello.txt"), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(dir.join("files/sub/deep.txt"), "deep\n").unwrap();
    std::fs::write(dir.join("outside/secret"), "secret\n").unwrap();
    let deploy = Deploy::new()
        .machine("a", 1)
        .machine("b", 2)
        .dial("a", "b")
        .mount("a")
        .mount("b")
        // Root on a is root on b: these check what root may do; squashing is
        // the adversarial suite's (users.rs).
        .service("b", &format!(r#"{{ name = "files", kind = "dir", root = "{d}/files", squash = "none" }}"#));
    m.start("ab.toml", &deploy);
    let ab = Ab { _m: m, dir };
    let probe = PathBuf::from(format!("{}/hello.txt", ab.remote()));
    until("a reaches b's files", T, || std::fs::read_to_string(&probe).is_ok());
    ab
}

#[test]
fn shell_tools_on_a_directory_of_another_machine() {
    let ab = start();
    let (f, disk) = (ab.remote(), ab.files());
    assert_eq!(sh_ok(&format!("ls {f}"), T), "hello.txt\nsub\n");
    // The service's directory shows its root here and on b.
    for m in ["a", "b"] {
        assert_eq!(sh_ok(&format!("ls {}/{m}/svc/files", ab.d()), T), "clone\ndata\ninfo\nroot\n");
    }
    assert_eq!(sh_ok(&format!("cat {f}/hello.txt {f}/sub/deep.txt"), T), "hello from b\ndeep\n");
    assert_eq!(
        sh_ok(&format!("stat -c '%s %F %a' {f}/hello.txt; stat -c %F {f}/sub"), T),
        "13 regular file 644\ndirectory\n"
    );
    // Write, append, and read back; it is on b's disk.
    sh_ok(&format!("echo one > {f}/new.txt && echo two >> {f}/new.txt"), T);
    assert_eq!(sh_ok(&format!("cat {f}/new.txt"), T), "one\ntwo\n");
    assert_eq!(std::fs::read_to_string(format!("{disk}/new.txt")).unwrap(), "one\ntwo\n");
    // Overwrite truncates.
    sh_ok(&format!("echo 1 > {f}/new.txt"), T);
    assert_eq!(std::fs::read_to_string(format!("{disk}/new.txt")).unwrap(), "1\n");
    // mkdir, mv, truncate, rm, rmdir.
    sh_ok(&format!("mkdir {f}/dir && mv {f}/new.txt {f}/dir/moved.txt && echo abcdef > {f}/dir/moved.txt"), T);
    assert_eq!(sh_ok(&format!("ls {f}/dir"), T), "moved.txt\n");
    assert!(!PathBuf::from(format!("{disk}/new.txt")).exists());
    sh_ok(&format!("truncate -s 3 {f}/dir/moved.txt"), T);
    assert_eq!(sh_ok(&format!("stat -c %s {f}/dir/moved.txt; cat {f}/dir/moved.txt"), T), "3\nabc");
    sh_ok(&format!("truncate -s 10 {f}/dir/moved.txt"), T);
    assert_eq!(std::fs::read(format!("{disk}/dir/moved.txt")).unwrap(), b"abc\0\0\0\0\0\0\0");
    let (st, _, err) = sh(&format!("rmdir {f}/dir"), T);
    assert!(!st.success() && err.contains("not empty"), "{err}");
    sh_ok(&format!("rm {f}/dir/moved.txt && rmdir {f}/dir"), T);
    assert_eq!(sh_ok(&format!("ls {f}"), T), "hello.txt\nsub\n");
    // Through svc/files/root, the nearest replica's: the same files; mv
    // between the two spellings is a rename on b.
    let near = format!("{}/a/svc/files/root", ab.d());
    sh_ok(&format!("cp {near}/hello.txt {near}/copy.txt && mv {near}/copy.txt {f}/sub/"), T);
    assert_eq!(std::fs::read_to_string(format!("{disk}/sub/copy.txt")).unwrap(), "hello from b\n");
    // chmod and touch keep what they set.
    sh_ok(&format!("chmod 600 {f}/sub/copy.txt && touch -d '2001-02-03 04:05:06 UTC' {f}/sub/copy.txt"), T);
    assert_eq!(sh_ok(&format!("stat -c '%a %Y' {disk}/sub/copy.txt"), T), "600 981173106\n");
    // A conversation with the service lists its root.
    assert_eq!(sh_ok(&format!("cat {}/a/svc/files/data", ab.d()), T), "hello.txt\nsub/\n");
    // b's own mount shows the same directory.
    assert_eq!(sh_ok(&format!("cat {}/b/svc/files/root/sub/copy.txt", ab.d()), T), "hello from b\n");
}

#[test]
fn a_64_mib_file_there_and_back() {
    let ab = start();
    let (f, d) = (ab.remote(), ab.d());
    sh_ok(&format!("head -c 64M /dev/urandom > {d}/src"), T);
    let t0 = Instant::now();
    sh_ok(&format!("dd if={d}/src of={f}/big bs=1M status=none"), Duration::from_secs(120));
    let wrote = t0.elapsed();
    sh_ok(&format!("cmp {d}/src {}/big", ab.files()), T);
    assert_eq!(sh_ok(&format!("stat -c %s {f}/big"), T), "67108864\n");
    // Read it back over the mesh: once to time it, once to compare.
    let t0 = Instant::now();
    sh_ok(&format!("cat {f}/big > /dev/null"), Duration::from_secs(120));
    let read = t0.elapsed();
    sh_ok(&format!("cmp {d}/src {f}/big"), Duration::from_secs(120));
    let mib_s = |t: Duration| 64.0 / t.as_secs_f64();
    eprintln!("64 MiB through a/n/b/svc/files/root: write (dd bs=1M) {wrote:?} = {:.0} MiB/s, read (cat) {read:?} = {:.0} MiB/s", mib_s(wrote), mib_s(read));
    // A read in the middle, at an odd offset and size.
    let mid = sh_ok(&format!("dd if={f}/big bs=4093 skip=5001 count=3 status=none | od -An -tx1 | md5sum"), T);
    let want = sh_ok(&format!("dd if={d}/src bs=4093 skip=5001 count=3 status=none | od -An -tx1 | md5sum"), T);
    assert_eq!(mid, want);
}

#[test]
fn nothing_outside_the_root_is_reachable() {
    let ab = start();
    let (f, d, disk) = (ab.remote(), ab.d(), ab.files());
    // `..` is the kernel's to resolve, in the mount: it never leaves it.
    for path in [
        format!("{d}/a/svc/files/root/../../etc/passwd"),
        format!("{f}/../../../../../../etc/passwd"),
        format!("{f}/../../../../../outside/secret"),
    ] {
        let (st, out, _) = sh(&format!("cat {path}"), T);
        assert!(!st.success() && out.is_empty(), "{path}: {out}");
    }
    // Links placed in b's directory: served as links. What b resolves by
    // path (`mesh cat`, which asks b's tree server) stays beneath the
    // root; a link leading out fails there.
    std::os::unix::fs::symlink("/etc/passwd", format!("{disk}/passwd")).unwrap();
    std::os::unix::fs::symlink("../outside/secret", format!("{disk}/sneaky")).unwrap();
    std::os::unix::fs::symlink(format!("{d}/outside"), format!("{disk}/out")).unwrap();
    std::os::unix::fs::symlink(format!("{d}/outside/target"), format!("{disk}/evil")).unwrap();
    std::os::unix::fs::symlink("sub/deep.txt", format!("{disk}/alias")).unwrap();
    let m = &ab._m;
    for name in ["passwd", "sneaky", "out/secret", "evil"] {
        let out = m.run(&["cat", "-m", "a", &format!("/n/b/svc/files/root/{name}")], "");
        assert!(!out.status.success() && out.stdout.is_empty(), "{name} read on b: {:?}", out.stdout);
    }
    assert_eq!(m.ok(&["cat", "-m", "a", "/n/b/svc/files/root/alias"], ""), "deep\n");
    assert_eq!(sh_ok(&format!("ls {f}"), T), "alias\nevil\nhello.txt\nout\npasswd\nsneaky\nsub\n");
    assert_eq!(sh_ok(&format!("readlink {f}/passwd {f}/sneaky"), T), "/etc/passwd\n../outside/secret\n");
    assert_eq!(sh_ok(&format!("cat {f}/alias"), T), "deep\n");
    // Through a mount the opener's kernel follows a link, in the opener's
    // own tree (as on NFS): a relative one leading out of the root leads
    // to the tree's `svc/files/`, where there is no secret.
    let (st, out, _) = sh(&format!("cat {f}/sneaky"), T);
    assert!(!st.success() && out.is_empty(), "sneaky: {out}");
    // Python, by descriptor: openat with .. from a directory of the mount.
    // (A link is followed by the opener's kernel with the opener's own
    // rights, in its own file system, so on one host `out/secret` is the
    // host's file, read as this test's user could anyway.)
    let py = format!(
        "import os, errno\n\
         fd = os.open('{f}/sub', os.O_RDONLY | os.O_DIRECTORY)\n\
         for p in ['../../../../outside/secret', '../../../../../../../etc/passwd']:\n\
         \x20   try:\n\
         \x20       os.open(p, os.O_RDONLY, dir_fd=fd); print('opened', p)\n\
         \x20   except OSError as e:\n\
         \x20       print(errno.errorcode[e.errno])\n"
    );
    let out = sh_ok(&format!("python3 -c \"{py}\""), T);
    assert!(!out.contains("opened"), "{out}");
    // A name that is not UTF-8 cannot be made through the tree.
    let (st, _, _) = sh(&format!("touch {f}/$'bad\\xff'"), T);
    assert!(!st.success());
}

#[test]
fn links_fifos_attributes_and_df_on_a_directory_of_another_machine() {
    let ab = start();
    let (f, disk) = (ab.remote(), ab.files());
    // Symbolic links: made on b, read back as written, followed here.
    sh_ok(&format!("cd {f} && ln -s sub/deep.txt deep && ln -s /nowhere/at/all dangling"), T);
    assert_eq!(std::fs::read_link(format!("{disk}/deep")).unwrap(), PathBuf::from("sub/deep.txt"));
    assert_eq!(sh_ok(&format!("readlink {f}/deep {f}/dangling"), T), "sub/deep.txt\n/nowhere/at/all\n");
    assert_eq!(sh_ok(&format!("cat {f}/deep"), T), "deep\n");
    assert_eq!(sh_ok(&format!("stat -c %F {f}/deep; stat -L -c %F {f}/deep"), T), "symbolic link\nregular file\n");
    // O_NOFOLLOW refuses to open a link, as the kernel does anywhere.
    let py = format!(
        "import os, errno\ntry:\n    os.open('{f}/deep', os.O_RDONLY | os.O_NOFOLLOW)\nexcept OSError as e:\n    \
         print(errno.errorcode[e.errno])"
    );
    assert_eq!(sh_ok(&format!("python3 -c \"{py}\""), T), "ELOOP\n");
    // A hard link: one file, two names, on b.
    sh_ok(&format!("ln {f}/hello.txt {f}/sub/hello-again"), T);
    let ino = |p: &str| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    assert_eq!(ino(&format!("{disk}/hello.txt")), ino(&format!("{disk}/sub/hello-again")));
    sh_ok(&format!("echo more >> {f}/sub/hello-again"), T);
    assert_eq!(sh_ok(&format!("cat {f}/hello.txt"), T), "hello from b\nmore\n");
    assert_eq!(sh_ok(&format!("stat -c %h {f}/hello.txt"), T), "2\n");
    // Seen from a too, it is one file: one inode number for both names,
    // kept through a rename, so du and tar count it once.
    let here = ino(&format!("{f}/hello.txt"));
    assert_eq!(ino(&format!("{f}/sub/hello-again")), here);
    sh_ok(&format!("mv {f}/sub/hello-again {f}/sub/moved"), T);
    assert_eq!(ino(&format!("{f}/sub/moved")), here);
    let listed = sh_ok(&format!("ls -i {f}/hello.txt {f}/sub/moved | cut -d' ' -f1 | sort -u | wc -l"), T);
    assert_eq!(listed.trim(), "1");
    let tar = format!("{}/links.tar", ab.d());
    let archived =
        sh_ok(&format!("cd {f} && tar cf {tar} hello.txt sub/moved && tar tvf {tar} | grep -c 'link to'"), T);
    assert_eq!(archived.trim(), "1", "tar stores the second name as a link");
    sh_ok(&format!("mv {f}/sub/moved {f}/sub/hello-again"), T);
    // A fifo is made on b; what goes through it stays on this machine.
    sh_ok(&format!("mkfifo {f}/pipe"), T);
    let on_disk = std::fs::symlink_metadata(format!("{disk}/pipe")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&on_disk.file_type()));
    assert_eq!(sh_ok(&format!("(echo through > {f}/pipe &) ; cat {f}/pipe"), T), "through\n");
    // A device node is made on b by root (not squashed here), with its
    // numbers, and shown with them; no machine opens it through a mount
    // (nodev: a node made elsewhere would open this machine's device).
    sh_ok(&format!("mknod {f}/null c 1 3 && mknod {f}/disk b 259 70000"), T);
    let numbers = |p: &str| sh_ok(&format!("stat -c '%F %t:%T' {p}/null {p}/disk"), T);
    assert_eq!(numbers(&f), "character special file 1:3\nblock special file 103:11170\n");
    assert_eq!(numbers(&f), numbers(&disk));
    let (st, _, err) = sh(&format!("echo x > {f}/null"), T);
    assert!(!st.success() && err.contains("Permission denied"), "{err}");
    assert!(sh_ok(&format!("grep ' {}/a ' /proc/mounts", ab.d()), T).contains("nosuid,nodev"));
    sh_ok(&format!("rm {f}/null {f}/disk"), T);
    // The mode asked for is the mode made, masked by the maker's umask
    // alone (not b's router's too), on either machine's mount.
    for (at, tag) in [(&f, "a"), (&ab.local(), "b")] {
        let made = sh_ok(
            &format!("umask 0; cd {at} && mkdir open-{tag} && mkfifo open-{tag}/p && : > open-{tag}/f && stat -c %a open-{tag} open-{tag}/p open-{tag}/f"),
            T,
        );
        assert_eq!(made, "777\n666\n666\n", "through {tag}'s mount");
        sh_ok(&format!("rm -r {at}/open-{tag}"), T);
    }
    // df shows b's file system, not zeros.
    let blocks = |p: &str| sh_ok(&format!("stat -f -c '%b %S' {p}"), T);
    assert_eq!(blocks(&f), blocks(&disk));
    assert_ne!(blocks(&f), "0 4096\n");
    // user.* attributes, kept on b; the kernel's own namespaces are not
    // asked of b (and refused).
    let py = format!(
        "import os, errno\n\
         p = '{f}/hello.txt'\n\
         os.setxattr(p, 'user.origin', b'machine b')\n\
         print(os.getxattr(p, 'user.origin').decode(), os.listxattr(p))\n\
         try:\n    os.setxattr(p, 'trusted.x', b'1')\n\
         except OSError as e:\n    print(errno.errorcode[e.errno])\n"
    );
    assert_eq!(sh_ok(&format!("python3 -c \"{py}\""), T), "machine b ['user.origin']\nENOTSUP\n");
    let on_b = format!("python3 -c \"import os; print(os.getxattr('{disk}/hello.txt', 'user.origin').decode())\"");
    assert_eq!(sh_ok(&on_b, T), "machine b\n");
    // renameat2 with RENAME_EXCHANGE swaps two names on b.
    let py = format!(
        "import ctypes, os\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         r = libc.renameat2(-100, b'{f}/hello.txt', -100, b'{f}/sub/deep.txt', 2)\n\
         print(r, os.strerror(ctypes.get_errno()) if r else '')\n"
    );
    assert_eq!(sh_ok(&format!("python3 -c \"{py}\""), T), "0 \n");
    assert_eq!(std::fs::read_to_string(format!("{disk}/hello.txt")).unwrap(), "deep\n");
    assert_eq!(sh_ok(&format!("cat {f}/sub/deep.txt"), T), "hello from b\nmore\n");
    // fallocate reserves space in the file on b.
    sh_ok(&format!("fallocate -l 1M {f}/space"), T);
    assert_eq!(std::fs::metadata(format!("{disk}/space")).unwrap().len(), 1 << 20);
    // A file removed while open is still the opener's, here and on b.
    for root in [f.clone(), format!("{}/b/svc/files/root", ab.d())] {
        let py = format!(
            "import os\np = '{root}/gone'\nfd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)\nos.unlink(p)\n\
             os.write(fd, b'hello')\nos.fchmod(fd, 0o600)\nos.ftruncate(fd, 2)\nst = os.fstat(fd)\n\
             print(st.st_size, oct(st.st_mode & 0o777))"
        );
        assert_eq!(sh_ok(&format!("python3 -c \"{py}\""), T), "2 0o600\n", "{root}");
    }
    // And all of it goes like files do.
    sh_ok(&format!("rm {f}/deep {f}/dangling {f}/pipe {f}/sub/hello-again {f}/space"), T);
    assert_eq!(sh_ok(&format!("ls {f}"), T), "hello.txt\nsub\n");
}

#[test]
fn record_locks_mappings_and_sqlite_across_machines() {
    let ab = start();
    let (f, d, disk) = (ab.remote(), ab.d(), ab.files());
    let local = ab.local();
    std::fs::write(format!("{disk}/db"), "").unwrap();
    // A process on a holds a write lock through a's tree until told to go.
    let holder = format!(
        "import fcntl, sys, time\n\
         f = open('{f}/db', 'r+')\n\
         fcntl.lockf(f, fcntl.LOCK_EX)\n\
         open('{d}/held', 'w').close()\n\
         while not __import__('os').path.exists('{d}/release'): time.sleep(0.02)\n"
    );
    std::fs::write(format!("{d}/holder.py"), holder).unwrap();
    let (hd, hd2) = (d.clone(), d.clone());
    let holder = std::thread::spawn(move || sh(&format!("python3 {hd}/holder.py"), T));
    until("a holds the lock", T, || PathBuf::from(format!("{hd2}/held")).exists());
    let try_lock = |path: &str| {
        let py = format!(
            "import fcntl, errno\nf = open('{path}', 'r+')\ntry:\n    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n    \
             print('locked')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])"
        );
        sh_ok(&format!("python3 -c \"{py}\""), T)
    };
    // Refused on b through b's tree, and to a process using b's disk.
    assert_eq!(try_lock(&format!("{local}/db")), "EAGAIN\n");
    assert_eq!(try_lock(&format!("{disk}/db")), "EAGAIN\n");
    // A waiting lock on b is taken once a's process lets go.
    let waiter = format!(
        "import fcntl, time\nf = open('{local}/db', 'r+')\nt = time.time()\nfcntl.lockf(f, fcntl.LOCK_EX)\n\
         print('waited %.1f' % (time.time() - t))"
    );
    let (wd, release) = (d.clone(), format!("{d}/release"));
    let waiter = std::thread::spawn(move || sh(&format!("python3 -c \"{waiter}\""), T));
    std::thread::sleep(Duration::from_millis(700));
    std::fs::write(&release, "").unwrap();
    let (st, out, err) = waiter.join().unwrap();
    assert!(st.success() && out.starts_with("waited "), "{out}{err}");
    holder.join().unwrap();
    drop(wd);
    // sqlite from two machines at once (rollback journal): every
    // increment is kept.
    let counter = |path: &str, n: usize| {
        format!(
            "import sqlite3\nc = sqlite3.connect('{path}', timeout=30, isolation_level=None)\n\
             for i in range({n}):\n    c.execute('BEGIN IMMEDIATE')\n    \
             c.execute('UPDATE n SET v = v + 1')\n    c.execute('COMMIT')\n"
        )
    };
    sh_ok(&format!("python3 -c \"import sqlite3; c = sqlite3.connect('{disk}/count.db'); c.execute('CREATE TABLE n (v)'); c.execute('INSERT INTO n VALUES (0)'); c.commit()\""), T);
    let (ca, cb) = (counter(&format!("{f}/count.db"), 100), counter(&format!("{local}/count.db"), 100));
    let a = std::thread::spawn(move || sh(&format!("python3 -c \"{ca}\""), T * 3));
    let b = std::thread::spawn(move || sh(&format!("python3 -c \"{cb}\""), T * 3));
    for (who, r) in [("a", a.join().unwrap()), ("b", b.join().unwrap())] {
        assert!(r.0.success(), "{who}: {}{}", r.1, r.2);
    }
    let total = sh_ok(&format!("python3 -c \"import sqlite3; print(sqlite3.connect('{disk}/count.db').execute('SELECT v FROM n').fetchone()[0])\""), T);
    assert_eq!(total, "200\n");
    // A shared mapping of a file on b, written on a: on b's disk after
    // msync. And sqlite's WAL mode, which maps its index shared.
    let py = format!(
        "import mmap, os, sqlite3\n\
         with open('{f}/mapped', 'wb') as w: w.write(bytes(8192))\n\
         fd = os.open('{f}/mapped', os.O_RDWR)\n\
         m = mmap.mmap(fd, 8192, mmap.MAP_SHARED)\n\
         m[4096:4101] = b'hello'\nm.flush()\n\
         c = sqlite3.connect('{f}/wal.db')\n\
         print(c.execute('PRAGMA journal_mode=WAL').fetchone()[0])\n\
         c.execute('CREATE TABLE t (x)')\n\
         c.executemany('INSERT INTO t VALUES (?)', [(i,) for i in range(500)])\n\
         c.commit()\nprint(c.execute('SELECT sum(x) FROM t').fetchone()[0])\n"
    );
    assert_eq!(sh_ok(&format!("python3 -c \"{py}\""), T), "wal\n124750\n");
    assert_eq!(&std::fs::read(format!("{disk}/mapped")).unwrap()[4096..4101], b"hello");
    let on_b = format!("python3 -c \"import sqlite3; print(sqlite3.connect('{disk}/wal.db').execute('SELECT count(*) FROM t').fetchone()[0])\"");
    assert_eq!(sh_ok(&on_b, T), "500\n");
}

/// Unmounts a test's small file system when the test ends, passed or not.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A program running from b's directory is refused writes as it is
/// anywhere, an open that truncates included.
#[test]
fn a_running_program_is_not_emptied_by_an_open_that_may_not_truncate_it() {
    use nix::errno::Errno;
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let ab = start();
    let (f, disk) = (ab.remote(), ab.files());
    let prog = format!("{f}/sleeper");
    let size = std::fs::metadata("/bin/sleep").unwrap().len();
    std::fs::copy("/bin/sleep", &prog).unwrap();
    std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Killed however the test ends: a program left running keeps the mount busy.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Running(std::process::Command::new(&prog).arg("30").spawn().unwrap());
    // Refused as anywhere (ETXTBSY), and nothing is emptied: FUSE hands a
    // read-only open its truncation before the kernel's check. Unchecked,
    // b's copy was emptied each time, and before b truncated on such an
    // open, a's kernel took the size to 0 and the program died of SIGSEGV
    // or SIGBUS in about 1 try of 60 (pjdfstest's open::etxtbsy saw it).
    for flags in [OFlag::O_WRONLY, OFlag::O_RDWR, OFlag::O_RDONLY | OFlag::O_TRUNC].iter().cycle().take(60) {
        assert_eq!(open(prog.as_str(), *flags, Mode::empty()).map(drop), Err(Errno::ETXTBSY), "{flags:?}");
    }
    assert_eq!(std::fs::metadata(format!("{disk}/sleeper")).unwrap().len(), size);
    assert!(child.0.try_wait().unwrap().is_none(), "the program still runs");
    drop(child);
    // Once it no longer runs, the same open truncates, as it does locally.
    drop(open(prog.as_str(), OFlag::O_RDONLY | OFlag::O_TRUNC, Mode::empty()).unwrap());
    assert_eq!(std::fs::metadata(format!("{disk}/sleeper")).unwrap().len(), 0);
}

/// Writes to another machine go ahead of their answers; one that fails
/// there (its disk is full) still fails the writer, at a later write or
/// at close, and nothing is taken for written that was not.
#[test]
fn a_write_that_fails_there_fails_the_writer() {
    let ab = start();
    let small = PathBuf::from(format!("{}/small", ab.files()));
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "mesh-test-small"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    let _tmpfs = Tmpfs(small.clone());
    let f = format!("{}/small", ab.remote());
    // dd: 4 MiB in 64 KiB writes into 1 MiB.
    let (st, _, err) = sh(&format!("dd if=/dev/zero of={f}/dd bs=64k count=64"), T);
    assert!(!st.success() && err.contains("No space left on device"), "dd: {err}");
    // Small writes, then close: the error comes at a write or at close.
    let script = format!(
        r#"
import errno, os
fd = os.open("{f}/py", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
try:
    for i in range(1024):
        os.write(fd, b"x" * 4096)
    os.close(fd)
    print("no error")
except OSError as e:
    print(errno.errorcode[e.errno], "at", "close" if i == 1023 else "write")
"#
    );
    let out = sh_ok(&format!("python3 -c '{}'", script.replace('\'', "'\\''")), T);
    assert!(out.starts_with("ENOSPC at"), "{out}");
    // What is there is what was written, no more than the disk holds.
    let size = std::fs::metadata(small.join("py")).unwrap().len();
    assert!(size <= 1 << 20, "{size}");
    let seen = sh_ok(&format!("stat -c %s {f}/py"), T);
    assert_eq!(seen.trim(), size.to_string());
}

/// Trees removed on b behind a's back, their inode numbers soon given to
/// the files made next through a's mount: a's kernel may still hold the
/// old nodes, and each new file is reached by its new name (inode
/// numbers come from b's; see mesh(4)). On the first cut of that, every
/// round after the first failed with ENOENT.
#[test]
fn trees_removed_behind_the_mounts_back_leave_nothing_stale() {
    let ab = start();
    let (f, disk) = (ab.remote(), ab.files());
    let script = format!(
        r#"
import os, shutil
for r in range(4):
    w = "{f}/w%d" % r
    os.mkdir(w)
    for i in range(100):
        d = "%s/repo/d%02d" % (w, i % 10)
        if i < 10:
            os.makedirs(d)
        with open("%s/f%03d" % (d, i), "w") as out:
            out.write("x" * i)
    assert len(os.listdir(w + "/repo/d03")) == 10
    shutil.rmtree("{disk}/w%d" % r)
print("ok")
"#
    );
    assert_eq!(sh_ok(&format!("python3 -c '{script}'"), T), "ok\n");
}

/// Microseconds a `stat` of `p` takes, 2,000 of them after two (kept: a
/// few; asked for: a round trip).
fn per_stat(p: &str) -> f64 {
    let py = format!(
        "import os, time\nos.stat('{p}')\ntime.sleep(0.3)\nos.stat('{p}')\nt = time.time()\n\
         for _ in range(2000): os.stat('{p}')\nprint((time.time() - t) / 2000 * 1e6)"
    );
    sh_ok(&format!("python3 -c \"{py}\""), T).trim().parse::<f64>().unwrap()
}

/// Names and attributes of b's files are kept by a's kernel (a `stat`
/// repeated costs no request), and b tells a of every change made on its
/// disk, so a sees it at once (well within the ten seconds a kept answer
/// may live) and never a stale size after opening; b's own mount too.
/// After the link is hung up (the conversation of changes is lost),
/// a forgets what it kept and is told again.
#[test]
fn names_are_kept_and_changes_on_the_serving_machine_are_seen_at_once() {
    let ab = start();
    let (f, disk, d) = (ab.remote(), ab.files(), ab.d());
    let local = ab.local();
    // Kept: 2,000 stats of one file, after the first, ask nobody.
    let us = per_stat(&format!("{f}/sub/deep.txt"));
    eprintln!("a kept stat: {us:.1} us");
    assert!(us < 200.0, "a stat of a kept file took {us:.0} us");
    let seen = |what: &str, check: &dyn Fn() -> bool| {
        let t = Instant::now();
        until(what, T, check);
        let took = t.elapsed();
        assert!(took < Duration::from_secs(2), "{what}: seen after {took:?}");
    };
    for (who, root) in [("a", f.clone()), ("b", local.clone())] {
        let size = |p: &str| std::fs::symlink_metadata(format!("{root}/{p}")).map(|m| m.len()).ok();
        let mode = |p: &str| {
            std::fs::symlink_metadata(format!("{root}/{p}"))
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
                .ok()
        };
        let listed = |n: &str| std::fs::read_dir(&root).unwrap().any(|e| e.unwrap().file_name() == n);
        let f1 = format!("{who}-grows");
        std::fs::write(format!("{disk}/{f1}"), "12345").unwrap();
        until("made on b's disk", T, || size(&f1) == Some(5));
        // Grown, chmodded, renamed, removed on b's disk: seen at once.
        std::fs::OpenOptions::new().append(true).open(format!("{disk}/{f1}")).unwrap().write_all(b"678").unwrap();
        seen(&format!("{who}: grown"), &|| size(&f1) == Some(8));
        assert_eq!(std::fs::read_to_string(format!("{root}/{f1}")).unwrap(), "12345678");
        std::fs::set_permissions(format!("{disk}/{f1}"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        seen(&format!("{who}: chmod"), &|| mode(&f1) == Some(0o600));
        let f2 = format!("{who}-moved");
        std::fs::rename(format!("{disk}/{f1}"), format!("{disk}/{f2}")).unwrap();
        seen(&format!("{who}: renamed"), &|| {
            size(&f1).is_none() && size(&f2) == Some(8) && listed(&f2) && !listed(&f1)
        });
        std::fs::remove_file(format!("{disk}/{f2}")).unwrap();
        seen(&format!("{who}: removed"), &|| size(&f2).is_none() && !listed(&f2));
        // Close-to-open: a file rewritten on b and opened here reads whole.
        std::fs::write(format!("{disk}/{who}-rewritten"), "short").unwrap();
        until("made", T, || size(&format!("{who}-rewritten")) == Some(5));
        std::fs::write(format!("{disk}/{who}-rewritten"), "a good deal longer").unwrap();
        assert_eq!(std::fs::read_to_string(format!("{root}/{who}-rewritten")).unwrap(), "a good deal longer");
    }
    // A change of names made through a brings its directory back as it is
    // after (a's kernel asks for the directory again before its next
    // change there, and is answered without a round trip): never stale,
    // and a change on b's disk in it is still seen.
    let times = |p: &str| {
        let m = std::fs::metadata(p).unwrap();
        (m.mtime(), m.mtime_nsec(), m.ctime_nsec(), m.nlink())
    };
    let (here, there) = (format!("{f}/kept"), format!("{disk}/kept"));
    std::fs::create_dir(&here).unwrap();
    for i in 0..5 {
        std::fs::write(format!("{here}/x{i}"), "x").unwrap();
        std::fs::create_dir(format!("{here}/d{i}")).unwrap();
        if i % 2 == 0 {
            std::fs::remove_file(format!("{here}/x{i}")).unwrap();
            // A removal goes ahead of its answer (mesh(4)); the
            // directory's fsync waits for it to land.
            std::fs::File::open(&here).unwrap().sync_all().unwrap();
        }
        assert_eq!(times(&here), times(&there), "after change {i}");
    }
    std::fs::rename(format!("{here}/x1"), format!("{here}/d1/x1")).unwrap();
    assert_eq!(times(&here), times(&there), "after a rename out");
    assert_eq!(times(&format!("{here}/d1")), times(&format!("{there}/d1")), "after a rename in");
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(format!("{there}/made-on-b"), "b").unwrap();
    seen("a change on b in a directory kept", &|| times(&here) == times(&there));
    // The link to b hung up (a redial would resume it, losing nothing):
    // a forgets, asks again, and is told again.
    let size = |p: &str| std::fs::symlink_metadata(format!("{f}/{p}")).map(|m| m.len()).ok();
    std::fs::write(format!("{disk}/after"), "1").unwrap();
    until("made", T, || size("after") == Some(1));
    sh_ok(&format!("echo hangup > {d}/a/term/net-b/ctl"), T);
    until("a reaches b again", T, || std::fs::read_to_string(format!("{f}/hello.txt")).is_ok());
    std::fs::write(format!("{disk}/after"), "12").unwrap();
    seen("grown after the hangup", &|| size("after") == Some(2));
    until("told again", T, || per_stat(&format!("{f}/after")) < 200.0);
    std::fs::write(format!("{disk}/after"), "123").unwrap();
    seen("grown once told again", &|| size("after") == Some(3));
}

/// b's file system gives a removed file's inode number to the next file
/// made there (ext4 does at once). a's mount, which wrote the removed
/// file a moment before, must not take the new file's changes for the
/// notices of its own writes: on the first cut it kept the new file's
/// old size for ten seconds (seen in CI).
#[test]
fn a_new_file_given_a_removed_files_number_is_not_taken_for_it() {
    let ab = start();
    let (f, disk) = (ab.remote(), ab.files());
    until("a is told of b's changes", T, || per_stat(&format!("{f}/hello.txt")) < 200.0);
    let ino = |p: &str| std::fs::metadata(p).unwrap().ino();
    let size = |p: &str| std::fs::symlink_metadata(p).map(|m| m.len()).ok();
    let mut reused = None;
    for i in 0..20 {
        std::fs::write(format!("{f}/w{i}"), "written by a").unwrap();
        let old = ino(&format!("{disk}/w{i}"));
        std::fs::remove_file(format!("{f}/w{i}")).unwrap();
        std::fs::write(format!("{disk}/n{i}"), "12").unwrap();
        if ino(&format!("{disk}/n{i}")) == old {
            reused = Some(i);
            break;
        }
    }
    let Some(i) = reused else {
        eprintln!("skipped: b's file system gave no removed file's number again");
        return;
    };
    let (here, there) = (format!("{f}/n{i}"), format!("{disk}/n{i}"));
    until("kept", T, || size(&here) == Some(2) && per_stat(&here) < 200.0);
    std::fs::OpenOptions::new().append(true).open(&there).unwrap().write_all(b"3").unwrap();
    let t = Instant::now();
    until("grown on b", T, || size(&here) == Some(3));
    assert!(t.elapsed() < Duration::from_secs(1), "seen after {:?}", t.elapsed());
}

/// Microseconds a `stat` of a name that is not there takes, over 2,000
/// names never asked for before (each a lookup the kernel sends).
fn per_miss(dir: &str) -> f64 {
    per_miss_of(dir, "miss")
}

/// [`per_miss`] of names starting with `prefix`.
fn per_miss_of(dir: &str, prefix: &str) -> f64 {
    let py = format!(
        "import os, time\n\
         def miss(p):\n  try: os.stat(p)\n  except FileNotFoundError: return\n  raise SystemExit(p + ' is there')\n\
         miss('{dir}/none')\nt = time.time()\n\
         for i in range(2000): miss('{dir}/{prefix}%d' % i)\nprint((time.time() - t) / 2000 * 1e6)"
    );
    sh_ok(&format!("python3 -c \"{py}\""), T).trim().parse::<f64>().unwrap()
}

/// A directory a made, or listed, is known in full while b tells of its
/// changes: a name not there is answered without asking b (programs look
/// before they make: tar, git), and the kernel keeps the miss. A name
/// made there later by anyone else is seen at once; a directory made
/// again under the same name is asked again; and when the conversation
/// of changes is lost (a hangup), the misses kept go with the rest.
#[test]
fn misses_in_a_directory_known_whole_ask_nobody_and_names_made_elsewhere_are_seen() {
    let ab = start();
    let (f, disk, local, d) = (ab.remote(), ab.files(), ab.local(), ab.d());
    let seen = |what: &str, check: &dyn Fn() -> bool| {
        let t = Instant::now();
        until(what, T, check);
        let took = t.elapsed();
        assert!(took < Duration::from_secs(2), "{what}: seen after {took:?}");
    };
    let reads = |p: &str, want: &str| std::fs::read_to_string(p).is_ok_and(|s| s == want);
    until("a is told of b's changes", T, || per_stat(&format!("{f}/hello.txt")) < 200.0);
    std::fs::create_dir(format!("{disk}/cold")).unwrap();
    let cold = per_miss(&format!("{f}/cold"));
    std::fs::create_dir(format!("{f}/fresh")).unwrap();
    let made = per_miss(&format!("{f}/fresh"));
    assert_eq!(std::fs::read_dir(format!("{f}/sub")).unwrap().count(), 1);
    let listed = per_miss(&format!("{f}/sub"));
    eprintln!("a miss: {cold:.0} us asked of b, {made:.0} us in a directory a made, {listed:.0} us in one listed");
    // Answered here: a fraction of a round trip, on a loaded machine too
    // (a debug build's FUSE request and Python's loop are most of it; a
    // round trip under load is about three of them). Under CI's load a
    // burst can slow one loop of 2,000 misses: up to three tries, each
    // beside a loop asked of b just after it. A directory no longer known
    // whole stays so, and fails all three.
    let here = |us: f64, again: &dyn Fn() -> f64| {
        let mut got = vec![(us, cold)];
        while got.last().is_some_and(|&(us, cold)| us * 2.0 >= cold) && got.len() < 3 {
            got.push((again(), per_miss(&format!("{f}/cold"))));
        }
        got.last().is_some_and(|&(us, cold)| us * 2.0 < cold).then_some(()).ok_or(format!("{got:.0?}"))
    };
    if let Err(tries) = here(made, &|| per_miss(&format!("{f}/fresh"))) {
        panic!("misses in a directory a made, then asked of b (us): {tries}");
    }
    if let Err(tries) = here(listed, &|| per_miss(&format!("{f}/sub"))) {
        panic!("misses in a directory a listed, then asked of b (us): {tries}");
    }
    // Made on b's disk, and through b's mount, after a kept the misses.
    std::fs::write(format!("{disk}/fresh/miss7"), "b").unwrap();
    seen("made on b's disk", &|| reads(&format!("{f}/fresh/miss7"), "b"));
    std::fs::write(format!("{disk}/sub/miss8"), "b").unwrap();
    seen("made on b's disk in a listed directory", &|| reads(&format!("{f}/sub/miss8"), "b"));
    std::fs::write(format!("{local}/fresh/miss9"), "b's mount").unwrap();
    seen("made through b's mount", &|| reads(&format!("{f}/fresh/miss9"), "b's mount"));
    // Made through a: there at once, and on b's disk.
    std::fs::write(format!("{f}/fresh/mine"), "a").unwrap();
    assert!(reads(&format!("{disk}/fresh/mine"), "a"));
    std::fs::create_dir(format!("{f}/fresh/inner")).unwrap();
    std::fs::write(format!("{f}/fresh/inner/deeper"), "a").unwrap();
    assert!(reads(&format!("{disk}/fresh/inner/deeper"), "a"));
    let inner = per_miss(&format!("{f}/fresh/inner"));
    if let Err(tries) = here(inner, &|| per_miss(&format!("{f}/fresh/inner"))) {
        panic!("misses in a directory a made, then wrote in, then asked of b (us): {tries}");
    }
    // Removed and made again on b under the same name (perhaps with the
    // same inode number): what a knew of the old one is not taken.
    std::fs::remove_dir_all(format!("{disk}/fresh/inner")).unwrap();
    std::fs::create_dir(format!("{disk}/fresh/inner")).unwrap();
    std::fs::write(format!("{disk}/fresh/inner/miss3"), "again").unwrap();
    seen("a directory made again", &|| reads(&format!("{f}/fresh/inner/miss3"), "again"));
    // The link hung up: the misses a's kernel kept are dropped, and a
    // name made after is seen though a did not look into its directory.
    assert_eq!(std::fs::read_dir(format!("{f}/sub")).unwrap().count(), 2);
    let late = per_miss_of(&format!("{f}/sub"), "late");
    if let Err(tries) = here(late, &|| per_miss_of(&format!("{f}/sub"), "late")) {
        panic!("misses in a directory listed again, then asked of b (us): {tries}");
    }
    sh_ok(&format!("echo hangup > {d}/a/term/net-b/ctl"), T);
    until("a reaches b again", T, || std::fs::read_to_string(format!("{f}/hello.txt")).is_ok());
    std::fs::write(format!("{disk}/sub/late5"), "after").unwrap();
    seen("made after a hangup", &|| reads(&format!("{f}/sub/late5"), "after"));
}

/// A union of two served directories is never known whole: a name made
/// in its second member, whose notice names that member, is seen through
/// the union at once (on the first cut it was answered as missing for up
/// to ten seconds). Found by review.
#[test]
fn a_union_is_not_taken_for_a_directory_known_whole() {
    let ab = start();
    let (f, disk, d) = (ab.remote(), ab.files(), ab.d());
    for m in ["u1", "u2"] {
        std::fs::create_dir(format!("{disk}/{m}")).unwrap();
    }
    std::fs::write(format!("{disk}/u1/one"), "1").unwrap();
    until("a sees u2", T, || std::fs::metadata(format!("{f}/u2")).is_ok());
    sh_ok(&format!("echo 'bind -a /n/b/svc/files/root/u2 /n/b/svc/files/root/u1' > {d}/a/ctl"), T);
    let names = |p: &str| {
        let mut v: Vec<String> =
            std::fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&format!("{f}/u1")), ["one"]);
    // A miss through the union, then the name made in the second member.
    assert!(std::fs::metadata(format!("{f}/u1/two")).is_err());
    std::fs::write(format!("{disk}/u2/two"), "2").unwrap();
    let t = Instant::now();
    until("made in the union's second member", T, || {
        std::fs::read_to_string(format!("{f}/u1/two")).is_ok_and(|s| s == "2")
    });
    assert!(t.elapsed() < Duration::from_secs(2), "seen after {:?}", t.elapsed());
    assert_eq!(names(&format!("{f}/u1")), ["one", "two"]);
}

#[test]
fn an_open_file_is_not_asked_for_its_attributes_at_each_read_or_write() {
    // The kernel asks for an open file's attributes before reads (its
    // size) and after changes it hears of; kept while b tells of changes,
    // they cost a round trip once, not at every read or write. And what
    // this machine wrote stays in its page cache.
    let ab = start();
    let (f, disk, d) = (ab.remote(), ab.files(), ab.d());
    std::fs::write(format!("{disk}/big"), vec![7u8; 16 << 20]).unwrap();
    let py = format!(
        "import os, mmap, random, time\n\
         def out():\n\
         \x20   s = open('{d}/a/term/net-b/status').read().split()\n\
         \x20   return int(s[s.index('out') + 1])\n\
         buf = mmap.mmap(-1, 4096)\n\
         fd = os.open('{f}/big', os.O_RDONLY | os.O_DIRECT)\n\
         os.preadv(fd, [buf], 0)\n\
         n = out()\n\
         for i in range(300): os.preadv(fd, [buf], (2048 + random.randrange(2048)) * 4096)\n\
         reads = out() - n\n\
         with open('{disk}/big', 'ab') as g: g.write(b'x' * 4096)\n\
         t = time.time()\n\
         while os.fstat(fd).st_size != (16 << 20) + 4096 and time.time() - t < 5: time.sleep(0.01)\n\
         grown = time.time() - t\n\
         os.close(fd)\n\
         fd = os.open('{f}/new', os.O_WRONLY | os.O_CREAT | os.O_DIRECT)\n\
         os.pwritev(fd, [buf], 0)\n\
         time.sleep(0.3)\n\
         n = out()\n\
         for i in range(300):\n\
         \x20   os.pwritev(fd, [buf], random.randrange(256) * 4096)\n\
         \x20   if i % 30 == 0: time.sleep(0.05)\n\
         os.fsync(fd)\n\
         writes = out() - n\n\
         os.close(fd)\n\
         fd = os.open('{f}/new', os.O_RDWR)\n\
         for i in range(256): os.pwrite(fd, bytes([i]) * 4096, i * 4096)\n\
         os.fsync(fd)\n\
         time.sleep(0.5)\n\
         n = out()\n\
         back = all(os.pread(fd, 4096, i * 4096) == bytes([i]) * 4096 for i in range(256))\n\
         reread = out() - n\n\
         os.close(fd)\n\
         os.mkdir('{f}/many')\n\
         n = out()\n\
         for i in range(100):\n\
         \x20   fd = os.open('{f}/many/%d' % i, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)\n\
         \x20   os.write(fd, b'x')\n\
         \x20   os.utime(fd, (1, 1)); os.chown(fd, 0, 0); os.chmod(fd, 0o644)\n\
         \x20   os.close(fd)\n\
         made = out() - n\n\
         print(reads, writes, grown, reread, int(back), made)"
    );
    let got = sh_ok(&format!("python3 -c \"{py}\""), T);
    let v: Vec<f64> = got.split_whitespace().map(|s| s.parse().unwrap()).collect();
    eprintln!(
        "envelopes out for 300 reads: {}, for 300 writes: {}, to read back 1 MiB just written: {}; \
         growth seen after {:.3} s",
        v[0], v[1], v[3], v[2]
    );
    // Made as tar makes a file (create, write, then times, owner and
    // mode through the descriptor): the changes' notices are this
    // machine's own, and a chown needs no fresh look at the file first.
    eprintln!("envelopes out to make 100 files as tar does: {}", v[5]);
    assert!(v[5] <= 1500.0, "making 100 files as tar does sent {} envelopes", v[5]);
    // What this machine wrote stays in its cache: b's notice of the change
    // is this machine's own.
    assert_eq!(v[4], 1.0, "read back what was written");
    assert!(v[3] <= 40.0, "reading back 1 MiB just written sent {} envelopes", v[3]);
    assert!(v[0] <= 360.0, "300 reads of an open file sent {} envelopes", v[0]);
    assert!(v[1] <= 330.0, "300 writes to an open file sent {} envelopes", v[1]);
    // And what b changes is still seen, the file held open.
    assert!(v[2] < 2.0, "growth on b seen through an open file after {} s", v[2]);
}

#[test]
fn a_record_lock_taken_shows_what_another_machine_wrote_under_it() {
    // A change no notice tells of (made on b through another hard link,
    // in a directory a never looked into) is still seen by a reader on a
    // that takes a record lock: taking it drops what a's kernel kept of
    // the file. The file stays open on a throughout (no close-to-open).
    let ab = start();
    let (f, d, disk) = (ab.remote(), ab.d(), ab.files());
    std::fs::create_dir(format!("{disk}/elsewhere")).unwrap();
    std::fs::write(format!("{disk}/shared"), "old old old\n").unwrap();
    std::fs::hard_link(format!("{disk}/shared"), format!("{disk}/elsewhere/other-name")).unwrap();
    let py = format!(
        "import fcntl, os, time\n\
         f = open('{f}/shared', 'r+')\n\
         first = f.read()\n\
         time.sleep(0.3)\n\
         f.seek(0); again = f.read()\n\
         # b writes under the lock, through its other name, on its disk.\n\
         g = open('{disk}/elsewhere/other-name', 'r+')\n\
         fcntl.lockf(g, fcntl.LOCK_EX)\n\
         g.write('new new new\\n'); g.flush(); os.fsync(g.fileno())\n\
         fcntl.lockf(g, fcntl.LOCK_UN); g.close()\n\
         time.sleep(0.3)\n\
         fcntl.lockf(f, fcntl.LOCK_SH)\n\
         f.seek(0); locked = f.read()\n\
         fcntl.lockf(f, fcntl.LOCK_UN)\n\
         print(repr(first), repr(again), repr(locked))"
    );
    std::fs::write(format!("{d}/lockpoint.py"), py).unwrap();
    let got = sh_ok(&format!("python3 {d}/lockpoint.py"), T);
    assert_eq!(got, "'old old old\\n' 'old old old\\n' 'new new new\\n'\n", "first, again, under the lock");
}

/// sqlite in WAL mode from two machines at once, and from two processes
/// on one of them: a writes through b's tree, b through its own mount,
/// and a second process on a reads meanwhile. Every transaction moves 7
/// from one account to another and counts itself; every read must see
/// the accounts sum to 1000. The old code lost increments and reported
/// a malformed database (the index's pages went back whole, each machine
/// writing its stale copy of the other's bytes), and the reader failed
/// with a short read (the kernel dropped a size that crossed another
/// process's lock).
#[test]
fn sqlite_in_wal_mode_from_two_machines_at_once() {
    let ab = start();
    let (f, disk, local) = (ab.remote(), ab.files(), ab.local());
    let n = 150;
    sh_ok(
        &format!(
            "python3 -c \"import sqlite3; c = sqlite3.connect('{disk}/wal.db'); c.execute('PRAGMA journal_mode=WAL'); \
             c.execute('CREATE TABLE n (v)'); c.execute('INSERT INTO n VALUES (0)'); c.execute('CREATE TABLE acct (id, v)'); \
             c.execute('INSERT INTO acct VALUES (1, 1000), (2, 0)'); c.commit()\""
        ),
        T,
    );
    let writer = |path: &str| {
        format!(
            "import sqlite3\nc = sqlite3.connect('{path}/wal.db', timeout=60, isolation_level=None)\n\
             print(c.execute('PRAGMA journal_mode').fetchone()[0])\nbad = 0\n\
             for i in range({n}):\n    c.execute('BEGIN IMMEDIATE')\n    c.execute('UPDATE n SET v = v + 1')\n    \
             c.execute('UPDATE acct SET v = v - 7 WHERE id = 1')\n    c.execute('UPDATE acct SET v = v + 7 WHERE id = 2')\n    \
             c.execute('COMMIT')\n    bad += c.execute('SELECT sum(v) FROM acct').fetchone()[0] != 1000\n\
             print('bad', bad)\n"
        )
    };
    let reader = format!(
        "import sqlite3\nc = sqlite3.connect('{f}/wal.db', timeout=60, isolation_level=None)\nbad = 0\n\
         for i in range({}):\n    bad += c.execute('SELECT sum(v) FROM acct').fetchone()[0] != 1000\nprint('bad', bad)\n",
        n * 4
    );
    let run = |name: &str, py: String| {
        let file = format!("{}/{name}.py", ab.d());
        std::fs::write(&file, py).unwrap();
        std::thread::spawn(move || sh(&format!("python3 {file}"), T * 4))
    };
    let t = Instant::now();
    let jobs =
        [("a", run("on_a", writer(&f))), ("b", run("on_b", writer(&local))), ("reader on a", run("reader", reader))];
    for (who, job) in jobs {
        let (st, out, err) = job.join().unwrap();
        assert!(st.success(), "{who}: {out}{err}");
        assert!(out.ends_with("bad 0\n"), "{who} saw the accounts not sum to 1000: {out}");
        if who != "reader on a" {
            assert!(out.starts_with("wal\n"), "{who}: {out}");
        }
    }
    let check = format!(
        "python3 -c \"import sqlite3; c = sqlite3.connect('{disk}/wal.db'); \
         print(c.execute('SELECT v FROM n').fetchone()[0], c.execute('SELECT sum(v) FROM acct').fetchone()[0], \
         c.execute('PRAGMA integrity_check').fetchone()[0])\""
    );
    assert_eq!(sh_ok(&check, T), format!("{} 1000 ok\n", 2 * n));
    eprintln!(
        "measured: sqlite WAL, {} transactions from two machines and {} reads beside them in {:?}",
        2 * n,
        4 * n,
        t.elapsed()
    );
}
