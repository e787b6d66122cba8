//! A dir service on machine b, used from machine a through the tree
//! protocol, with two in-process routers linked over `mem!`: the
//! operations, the streaming of large reads, requests from a hostile
//! peer that try to leave the root, and the links' record of the
//! conversations that crossed them, which must not outlive them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ns::conv::{Msg, RESERVED};
use ns::deploy::Squash;
use ns::{Addr, Config, Name, Router};
use srv::fs::caller::Caller;
use srv::fs::dir::{Access, Attrs, DirService, Root};
use srv::fs::remote::{TreeReq, TreeResp, TreeServer};
use srv::fs::tree::FileKind;
use srv::fs::{KindExtras, Namespace};
use tokio_util::sync::CancellationToken;

struct Two {
    a: Arc<Namespace>,
    b: Arc<Namespace>,
    dir: tempfile::TempDir,
    _stop: tokio_util::sync::DropGuard,
}

impl Two {
    fn disk(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join("files").join(rel)
    }
}

fn p(s: &str) -> Vec<String> {
    s.split('/').filter(|c| !c.is_empty()).map(String::from).collect()
}

const RW: Access = Access { read: true, write: true, trunc: false, append: false };
const R: Access = Access { read: true, write: false, trunc: false, append: false };

/// a and b linked; b serves `<tmp>/files` as the dir service `files` and
/// `<tmp>/outside` holds a secret beside it.
async fn two(tag: &str) -> Two {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("files/sub")).unwrap();
    std::fs::create_dir_all(dir.path().join("outside")).unwrap();
    std::fs::write(dir.path().join("outside/secret"), "secret").unwrap();
    let stop = CancellationToken::new();
    let mut trees = Vec::new();
    for id in ["a", "b"] {
        let r = Router::new(Config::new(id.parse().unwrap()), stop.child_token());
        r.listen(&format!("mem!{tag}-{id}").parse().unwrap()).await.unwrap();
        let ns = Namespace::new(r.clone());
        r.add_service(Name::new(RESERVED).unwrap(), Arc::new(TreeServer(ns.clone())));
        trees.push(ns);
    }
    let (a, b) = (trees[0].clone(), trees[1].clone());
    // Root of a is root here: these tests are about the operations;
    // squashing is users.rs's (mnt-tests) and dir/tests.rs's.
    let root = Arc::new(Root::open(&dir.path().join("files")).unwrap().squashing(Squash::None));
    b.router().add_service("files".parse().unwrap(), Arc::new(DirService::new(root.clone(), "files")));
    b.set_kind("files", KindExtras { root: Some(root), ..KindExtras::default() });
    a.router().dial(format!("mem!{tag}-b").parse().unwrap());
    for _ in 0..200 {
        if a.router().table().nearest("files").is_some() {
            return Two { a, b, dir, _stop: stop.drop_guard() };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("a never saw b's files");
}

async fn read_all(ns: &Namespace, path: &str) -> Result<Vec<u8>, String> {
    let h = ns.open_with(&p(path), R).await?;
    let mut out = Vec::new();
    loop {
        let b = ns.read(&h, out.len() as u64, 1 << 20).await?;
        if b.is_empty() {
            break;
        }
        out.extend_from_slice(&b);
    }
    ns.release(h).await;
    Ok(out)
}

#[tokio::test]
async fn files_on_another_machine_change_from_here() {
    let t = two("dir-ops").await;
    let a = &t.a;
    let names = |v: Vec<srv::fs::tree::Entry>| v.into_iter().map(|e| e.name).collect::<Vec<_>>();
    assert!(names(t.b.list(&p("svc/files")).await.unwrap()).contains(&"root".to_string()));
    let e = a.stat(&p("n/b/svc/files/root")).await.unwrap();
    assert_eq!(e.kind, FileKind::Dir);
    // Create and write from a; the file is on b's disk.
    let (e, h) = a.create(&p("n/b/svc/files/root/hello"), 0o644, RW, true).await.unwrap();
    assert_eq!((e.kind, e.meta.map(|m| m.size)), (FileKind::Stored, Some(0)));
    assert_eq!(a.write_at(&h, 0, b"hello, ").await.unwrap(), 7);
    assert_eq!(a.write_at(&h, 7, b"world\n").await.unwrap(), 6);
    assert_eq!(a.read(&h, 7, 100).await.unwrap(), Bytes::from("world\n"));
    a.sync(&h).await.unwrap();
    a.release(h).await;
    assert_eq!(std::fs::read_to_string(t.disk("hello")).unwrap(), "hello, world\n");
    // svc/files/root is the nearest replica's root: b's.
    assert_eq!(read_all(a, "svc/files/root/hello").await.unwrap(), b"hello, world\n");
    let e = a.stat(&p("svc/files/root/hello")).await.unwrap();
    assert_eq!((e.name.as_str(), e.meta.map(|m| m.size)), ("hello", Some(13)));
    a.mkdir(&p("svc/files/root/d"), 0o755).await.unwrap();
    a.rename(&p("svc/files/root/hello"), &p("n/b/svc/files/root/d/moved"), 0).await.unwrap();
    assert!(t.disk("d/moved").exists() && !t.disk("hello").exists());
    let e =
        a.set_attr(&p("n/b/svc/files/root/d/moved"), None, Attrs { size: Some(5), ..Attrs::default() }).await.unwrap();
    assert_eq!(e.meta.map(|m| m.size), Some(5));
    assert_eq!(names(a.list(&p("n/b/svc/files/root/d")).await.unwrap()), ["moved"]);
    let err = a.remove(&p("n/b/svc/files/root/d"), true).await.unwrap_err();
    assert_eq!(srv::fs::errors::errno(&err), libc::ENOTEMPTY, "{err}");
    a.remove(&p("n/b/svc/files/root/d/moved"), false).await.unwrap();
    a.remove(&p("n/b/svc/files/root/d"), true).await.unwrap();
    assert_eq!(names(a.list(&p("svc/files/root")).await.unwrap()), ["sub"]);
    // Only served directories change.
    let err = a.mkdir(&p("svc/files/x"), 0o755).await.unwrap_err();
    assert_eq!(srv::fs::errors::errno(&err), libc::EACCES, "{err}");
    let err = a.rename(&p("n/b/svc/files/root/sub"), &p("n/a/machine"), 0).await.unwrap_err();
    assert_ne!(srv::fs::errors::errno(&err), 0);
}

/// The `crossing N conversation ends` count of `r`'s link to `peer`.
fn crossing(r: &Router, peer: &str) -> usize {
    let status = r.term(&ns::path::TermName::Net(peer.parse().unwrap())).map(|t| t.status_text()).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("crossing ")).unwrap_or_else(|| panic!("no crossing in {status}"));
    line.split(' ').nth(1).and_then(|w| w.parse().ok()).unwrap()
}

// Real threads, as in `mesh up`: the order in which the runtime runs the
// messages that end each conversation is what the record must survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_tree_operations_leave_no_crossed_ends() {
    let t = two("dir-crossed").await;
    let a = &t.a;
    // Each is a short conversation with b's tree server, or two.
    for i in 0..400 {
        let f = format!("n/b/svc/files/root/f{}", i % 4);
        let (_, h) = a.create(&p(&f), 0o644, RW, false).await.unwrap();
        a.write_at(&h, 0, b"x").await.unwrap();
        a.release(h).await;
        a.stat(&p(&f)).await.unwrap();
        a.list(&p("n/b/svc/files/root")).await.unwrap();
        assert_eq!(read_all(a, &f).await.unwrap(), b"x");
        a.remove(&p(&f), false).await.unwrap();
    }
    // The requests that get one answer went in one session, kept.
    assert_eq!(a.sessions().idle(), 1);
    a.sessions().drop_idle();
    let (ra, rb) = (a.router(), t.b.router());
    // Wait for a count that stays at zero: the last hangups may still be
    // on their way.
    let mut zero = 0;
    for _ in 0..100 {
        zero = if crossing(ra, "b") == 0 && crossing(rb, "a") == 0 { zero + 1 } else { 0 };
        if zero == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((crossing(ra, "b"), crossing(rb, "a")), (0, 0), "ends remembered after 2,000 tree operations ended");
}

#[tokio::test]
async fn a_conversation_lists_the_root() {
    let t = two("dir-conv").await;
    std::fs::write(t.disk("f"), "x").unwrap();
    // Nothing to say: end of input starts it, as `cat svc/files/data` does.
    let mut c = t.a.router().open(Addr::parse("/svc/files").unwrap(), vec![]);
    c.tx.eof().await;
    assert_eq!(next(&mut c).await, Some(Msg::Data(Bytes::from("f\nsub/\n"))));
    assert_eq!(next(&mut c).await, Some(Msg::Eof));
    // Messages are refused, saying where the files are.
    let mut c = t.a.router().open(Addr::parse("/svc/files").unwrap(), vec![]);
    c.tx.send(Bytes::from("ls\n")).await.unwrap();
    match next(&mut c).await {
        Some(Msg::Error(e)) => assert!(e.contains("svc/files/root"), "{e}"),
        other => panic!("{other:?}"),
    }
}

async fn next(c: &mut ns::Conv) -> Option<Msg> {
    tokio::time::timeout(Duration::from_secs(10), c.rx.recv()).await.expect("an answer in time")
}

/// A 20 MiB file read from a in several patterns: in order with small and
/// large reads (prefetched), at random offsets, and past its end while it
/// grows.
#[tokio::test]
async fn large_reads_come_back_whole_and_in_order() {
    // Made before the routers start: on this test's one thread, seconds of
    // work in an unoptimised build would starve their keepalives, and a
    // neighbour silent for two periods is taken for dead.
    let data: Vec<u8> = (0..20u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let t = two("dir-large").await;
    std::fs::write(t.disk("big"), &data).unwrap();
    let a = &t.a;
    for chunk in [128 << 10, 1 << 20, 300_000] {
        let h = a.open_with(&p("n/b/svc/files/root/big"), R).await.unwrap();
        let mut off = 0usize;
        loop {
            let b = a.read(&h, off as u64, chunk).await.unwrap();
            if b.is_empty() {
                break;
            }
            assert!(b[..] == data[off..off + b.len()], "bytes differ at {off} (reads of {chunk})");
            off += b.len();
        }
        assert_eq!(off, data.len());
        a.release(h).await;
    }
    // Random offsets, and backwards.
    let h = a.open_with(&p("n/b/svc/files/root/big"), R).await.unwrap();
    let mut x = 12345u64;
    for _ in 0..60 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let off = (x >> 20) as usize % data.len();
        let len = ((x >> 8) as usize % (1 << 20)) + 1;
        let b = a.read(&h, off as u64, len).await.unwrap();
        let want = &data[off..(off + len).min(data.len())];
        assert!(b[..] == want[..], "bytes differ at {off}+{len}");
    }
    // Reads dropped halfway (an interrupted reader) leave the file usable:
    // no answer goes to the wrong read.
    for i in 0..20u64 {
        let off = i * 700_001;
        let _ = tokio::time::timeout(Duration::from_micros(50 * i), a.read(&h, off, 1 << 20)).await;
        let b = a.read(&h, off + 3, 5000).await.unwrap();
        assert!(
            b[..] == data[off as usize + 3..off as usize + 5003],
            "bytes differ after an interrupted read at {off}"
        );
    }
    // Reading at the end, then the file grows: the new bytes are read.
    let end = data.len() as u64;
    assert!(a.read(&h, end - 10, 100).await.unwrap().len() == 10);
    assert!(a.read(&h, end, 100).await.unwrap().is_empty());
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(t.disk("big")).unwrap();
        f.write_all(b"more").unwrap();
    }
    assert_eq!(a.read(&h, end, 100).await.unwrap(), Bytes::from("more"));
    a.release(h).await;
}

/// Requests straight to b's tree server, as a hostile machine could send.
async fn raw(t: &Two, on: &str, req: &TreeReq) -> Result<TreeResp, String> {
    let r = if on == "b" { t.a.router() } else { t.b.router() };
    let mut c = r.open(Addr::on(on.parse().unwrap(), Name::new(RESERVED).unwrap()), vec![]);
    c.tx.send(ns::cbor::encode(&(Caller::router(), req))).await?;
    match tokio::time::timeout(Duration::from_secs(10), c.rx.recv()).await.map_err(|_| "timeout")? {
        Some(Msg::Data(b)) => match ns::cbor::decode(&b, "tree message")? {
            TreeResp::Err(e) => Err(e),
            other => Ok(other),
        },
        other => Err(format!("{other:?}")),
    }
}

#[tokio::test]
async fn hostile_requests_stay_in_the_root() {
    let t = two("dir-hostile").await;
    let errno = |r: Result<TreeResp, String>| match r {
        Ok(resp) => panic!("answered {resp:?}"),
        Err(e) => srv::fs::errors::errno(&e),
    };
    let up = p("svc/files/root/../../outside/secret");
    assert_eq!(errno(raw(&t, "b", &TreeReq::Stat(up.clone())).await), libc::EACCES);
    assert_eq!(errno(raw(&t, "b", &TreeReq::Open { path: up.clone(), access: R, batch: false }).await), libc::EACCES);
    let mut slash = p("svc/files/root");
    slash.push("../../outside/secret".into());
    assert_eq!(errno(raw(&t, "b", &TreeReq::Stat(slash)).await), libc::EINVAL);
    let mut abs = p("svc/files/root");
    abs.push("/etc/passwd".into());
    assert_eq!(errno(raw(&t, "b", &TreeReq::Open { path: abs, access: R, batch: false }).await), libc::EINVAL);
    let to = p("svc/files/root/../stolen");
    let req = TreeReq::Rename { from: p("svc/files/root/sub"), to, flags: 0 };
    assert_eq!(errno(raw(&t, "b", &req).await), libc::EACCES);
    let req =
        TreeReq::Create { path: p("svc/files/root/../planted"), mode: 0o644, access: RW, excl: true, batch: false };
    assert_eq!(errno(raw(&t, "b", &req).await), libc::EACCES);
    assert!(!t.dir.path().join("planted").exists() && !t.dir.path().join("stolen").exists());
    // a serves no files of its own: it does not pass the request on to b.
    assert_eq!(errno(raw(&t, "a", &TreeReq::Stat(p("svc/files/root"))).await), libc::ENOENT);
    // A directory is not a file to open.
    let req = TreeReq::Open { path: p("svc/files/root/sub"), access: R, batch: false };
    assert_eq!(errno(raw(&t, "b", &req).await), libc::EISDIR);
}

/// Many requests in flight on one open file, as a queue depth of 16 and
/// the kernel's readahead make: writes at scattered offsets, then reads
/// of them, all at once; every answer goes to its own request, including
/// those of callers that stopped waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_together_get_their_own_answers() {
    let t = two("dir-flight").await;
    std::fs::write(t.disk("f"), vec![0u8; 1 << 20]).unwrap();
    let h = t.a.open_with(&p("n/b/svc/files/root/f"), RW).await.unwrap();
    let block = |i: u64| vec![(i % 251) as u8 + 1; 4096];
    let order: Vec<u64> = (0..64u64).map(|i| (i * 37) % 256).collect();
    let writes = order.iter().map(|&i| {
        let (a, h) = (&t.a, &h);
        async move { a.write_at(h, i * 4096, &block(i)).await }
    });
    for r in futures::future::join_all(writes).await {
        assert_eq!(r.unwrap(), 4096);
    }
    // Reads given up on halfway leave nothing behind for the others.
    for i in 0..8u64 {
        let _ = tokio::time::timeout(Duration::from_micros(20 * i), t.a.read(&h, i * 8192 + 3, 100)).await;
    }
    let reads = order.iter().map(|&i| {
        let (a, h) = (&t.a, &h);
        async move { (i, a.read(h, i * 4096, 4096).await) }
    });
    for (i, r) in futures::future::join_all(reads).await {
        assert_eq!(r.unwrap()[..], block(i)[..], "block {i}");
    }
    t.a.settle_writes(&h, true).await.unwrap();
    t.a.release(h).await;
    let disk = std::fs::read(t.disk("f")).unwrap();
    for &i in &order {
        let at = (i * 4096) as usize;
        assert_eq!(disk[at..at + 4096], block(i)[..], "block {i} on b's disk");
    }
}

/// The `in` and `out` envelope counts of `r`'s link to `peer`.
fn envelopes(r: &Router, peer: &str) -> (u64, u64) {
    let status = r.term(&ns::path::TermName::Net(peer.parse().unwrap())).map(|t| t.status_text()).unwrap_or_default();
    let count = |dir: &str| {
        let line = status.lines().find(|l| l.starts_with(dir)).unwrap_or_else(|| panic!("no {dir} in {status}"));
        line.split(' ').nth(1).and_then(|w| w.parse().ok()).unwrap()
    };
    (count("in "), count("out "))
}

/// Small writes sent ahead go to b together (see remote::batch): forty
/// of them cross the link in a few messages, land in order, and one that
/// fails there fails the close while the others land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_writes_sent_ahead_travel_together() {
    let t = two("dir-batch").await;
    let (_, h) = t.a.create(&p("n/b/svc/files/root/f"), 0o644, RW, true).await.unwrap();
    let (_, out) = envelopes(t.a.router(), "b");
    for i in 0..40u64 {
        let line = format!("line {i:02}\n");
        assert_eq!(t.a.write_at(&h, i * 8, line.as_bytes()).await.unwrap(), 8);
    }
    // Of this file's size, mode and times, a set_attr by handle that
    // waits for its answer: it sends what waits first.
    let e = t.a.set_attr(&p("n/b/svc/files/root/f"), Some(&h), Attrs { mode: Some(0o600), ..Attrs::default() }).await;
    assert_eq!(e.unwrap().meta.unwrap().size, 320);
    let sent = envelopes(t.a.router(), "b").1 - out;
    assert!(sent <= 4, "forty writes and a change took {sent} messages");
    // A write that fails there (past the largest file b's disk allows),
    // among others: the others land, the close is told.
    t.a.write_at(&h, 0, b"LINE").await.unwrap();
    t.a.write_at(&h, 1 << 62, b"too far").await.unwrap();
    t.a.write_at(&h, 8, b"LINE").await.unwrap();
    let err = t.a.settle_writes(&h, true).await.unwrap_err();
    assert_eq!(srv::fs::errors::errno(&err), libc::EFBIG, "{err}");
    t.a.release(h).await;
    let disk = std::fs::read_to_string(t.disk("f")).unwrap();
    let want: String = (0..40).map(|i| format!("line {i:02}\n")).collect();
    assert_eq!(disk, want.replacen("line", "LINE", 2));
}

/// A small file comes whole with its open (`TreeResp::OpenedWith`): its
/// reads ask nobody, and the next open sees what changed there since.
/// A larger one, or one opened only to write, is read as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_file_comes_whole_with_its_open() {
    let t = two("dir-head").await;
    std::fs::write(t.disk("small"), b"hello").unwrap();
    let big: Vec<u8> = (0..(64 << 10) + 1).map(|i| i as u8).collect();
    std::fs::write(t.disk("big"), &big).unwrap();
    let h = t.a.open_with(&p("n/b/svc/files/root/small"), R).await.unwrap();
    // Emptied there after the open: the reads are the open's bytes, as
    // reads sent at the open would have been.
    std::fs::write(t.disk("small"), b"").unwrap();
    assert_eq!(t.a.read(&h, 2, 4096).await.unwrap(), Bytes::from("llo"));
    // Read to its end, the file is asked again (it may grow).
    assert_eq!(t.a.read(&h, 0, 100).await.unwrap(), Bytes::new());
    t.a.release(h).await;
    // Changed there: the next open has the new bytes.
    std::fs::write(t.disk("small"), b"hello again").unwrap();
    assert_eq!(read_all(&t.a, "n/b/svc/files/root/small").await.unwrap(), b"hello again");
    assert_eq!(read_all(&t.a, "n/b/svc/files/root/big").await.unwrap(), big);
    // Written here after the open: read back from there, not the head.
    let h = t.a.open_with(&p("n/b/svc/files/root/small"), RW).await.unwrap();
    t.a.write_at(&h, 0, b"HELLO").await.unwrap();
    assert_eq!(t.a.read(&h, 0, 4096).await.unwrap(), Bytes::from("HELLO again"));
    t.a.release(h).await;
    // Straight to b: what the answer holds.
    let r = t.a.router();
    let ask = |path: &str, access: Access, batch: bool| {
        let mut c = r.open(Addr::on("b".parse().unwrap(), Name::new(RESERVED).unwrap()), vec![]);
        let req = TreeReq::Open { path: p(path), access, batch };
        async move {
            c.tx.send(ns::cbor::encode(&(Caller::router(), &req))).await.unwrap();
            let Some(Msg::Data(b)) = next(&mut c).await else { panic!("no answer") };
            ns::cbor::decode::<TreeResp>(&b, "tree message").unwrap()
        }
    };
    let with = |resp: TreeResp| match resp {
        TreeResp::Batching(r) => match *r {
            TreeResp::OpenedWith { entry, head } => (entry.meta.unwrap().size, head.map(|b| b.into_vec())),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    assert_eq!(with(ask("svc/files/root/small", R, true).await), (11, Some(b"HELLO again".to_vec())));
    assert_eq!(with(ask("svc/files/root/big", R, true).await), (big.len() as u64, None));
    const W: Access = Access { read: false, write: true, trunc: false, append: false };
    assert_eq!(with(ask("svc/files/root/small", W, true).await), (11, None));
    assert!(matches!(ask("svc/files/root/small", R, false).await, TreeResp::Opened(FileKind::Stored)));
}

/// A batch straight to b's tree server: answered as a batch, in order;
/// an opener that did not ask for batches is not told of them; a batch
/// cut short ends the file's conversation.
#[tokio::test]
async fn a_batch_is_answered_in_order_and_a_bad_one_ends_the_file() {
    let t = two("dir-batch-raw").await;
    let r = t.a.router();
    let open = |path: &str, batch: bool| {
        let mut c = r.open(Addr::on("b".parse().unwrap(), Name::new(RESERVED).unwrap()), vec![]);
        let req = TreeReq::Create { path: p(path), mode: 0o644, access: RW, excl: false, batch };
        async move {
            c.tx.send(ns::cbor::encode(&(Caller::router(), &req))).await.unwrap();
            let Some(Msg::Data(b)) = next(&mut c).await else { panic!("no answer") };
            (c, ns::cbor::decode::<TreeResp>(&b, "tree message").unwrap())
        }
    };
    let raw_write = |offset: u64, data: &[u8]| {
        let mut b = vec![0u8];
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(data);
        Bytes::from(b)
    };
    let join = |items: &[Bytes]| {
        let mut b = vec![1u8];
        for i in items {
            b.extend_from_slice(&(i.len() as u32).to_le_bytes());
            b.extend_from_slice(i);
        }
        Bytes::from(b)
    };
    let (mut c, resp) = open("svc/files/root/g", true).await;
    assert!(matches!(resp, TreeResp::Batching(_)), "{resp:?}");
    let batch = join(&[
        raw_write(0, b"hello"),
        ns::cbor::encode(&TreeReq::FileAttr(Attrs { mode: Some(0o600), ..Attrs::default() })),
        raw_write(5, b" world"),
        ns::cbor::encode(&TreeReq::Read { offset: 0, size: 100 }),
    ]);
    c.tx.send(batch).await.unwrap();
    let Some(Msg::Data(b)) = next(&mut c).await else { panic!("no answer") };
    assert_eq!(b[0], 1, "not a batch: {b:?}");
    let (mut answers, mut at) = (Vec::new(), 1);
    while at < b.len() {
        let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        answers.push(b.slice(at + 4..at + 4 + len));
        at += 4 + len;
    }
    assert_eq!(answers.len(), 4);
    let resp = |b: &Bytes| ns::cbor::decode::<TreeResp>(b, "tree message").unwrap();
    assert!(matches!(resp(&answers[0]), TreeResp::Written(5)));
    assert!(matches!(resp(&answers[1]), TreeResp::Entry(e) if e.mode & 0o777 == 0o600));
    assert!(matches!(resp(&answers[2]), TreeResp::Written(6)));
    assert_eq!(&answers[3][..], b"\0hello world");
    // Cut short: the conversation ends, saying why; the file as it was.
    let cut = join(&[raw_write(0, b"HELLO")]);
    c.tx.send(cut.slice(..cut.len() - 2)).await.unwrap();
    assert!(matches!(next(&mut c).await, Some(Msg::Error(e)) if e.contains("batch cut")));
    assert_eq!(std::fs::read(t.disk("g")).unwrap(), b"hello world");
    // What a batch may make the server hold is bounded: a big read in a
    // batch, or too many messages, end the file.
    for (items, size) in [(1, 1u32 << 20), (257, 1)] {
        let (mut c, _) = open("svc/files/root/g", true).await;
        let read = ns::cbor::encode(&TreeReq::Read { offset: 0, size });
        c.tx.send(join(&vec![read; items])).await.unwrap();
        assert!(matches!(next(&mut c).await, Some(Msg::Error(e)) if e.starts_with("bad tree message")));
    }
    // An opener that sends no batches is answered as before.
    let (_, resp) = open("svc/files/root/h", false).await;
    assert!(matches!(resp, TreeResp::After(..) | TreeResp::Created(_)), "{resp:?}");
}

/// The next changes b tells on conversation `c`, or none within `wait`.
async fn told(c: &mut ns::Conv, wait: Duration) -> Option<Vec<srv::fs::dir::watch::Change>> {
    match tokio::time::timeout(wait, c.rx.recv()).await {
        Ok(Some(Msg::Data(b))) => match ns::cbor::decode(&b, "tree message").unwrap() {
            TreeResp::Changed(v) => Some(v),
            other => panic!("not changes: {other:?}"),
        },
        Ok(other) => panic!("the conversation of changes ended: {other:?}"),
        Err(_) => None,
    }
}

/// b promises to tell a of changes only in what a looked into, once a
/// asked to be told (an answer says so), and tells nothing of the
/// directories a never looked into: no machine learns names it could not
/// have listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_is_told_only_of_what_it_looked_into() {
    use srv::fs::dir::watch::Change;
    let t = two("told").await;
    std::fs::write(t.disk("sub/x"), "x").unwrap();
    let watched = |r: Result<TreeResp, String>| match r {
        Ok(TreeResp::Entry(e)) => e.meta.unwrap().watched,
        other => panic!("{other:?}"),
    };
    // Not asked yet: no promise.
    assert!(!watched(raw(&t, "b", &TreeReq::Stat(p("svc/files/root/sub/x"))).await));
    let mut c = t.a.router().open(Addr::on("b".parse().unwrap(), Name::new(RESERVED).unwrap()), vec![]);
    c.tx.send(ns::cbor::encode(&(Caller::router(), TreeReq::Watch))).await.unwrap();
    assert!(
        matches!(next(&mut c).await, Some(Msg::Data(b)) if matches!(ns::cbor::decode(&b, "tree message").unwrap(), TreeResp::Done))
    );
    // A change in a directory a never looked into: not told.
    std::fs::write(t.disk("unseen"), "1").unwrap();
    std::fs::write(t.disk("sub/y"), "1").unwrap();
    assert_eq!(told(&mut c, Duration::from_millis(500)).await, None);
    // a looks into sub: promised, and told of the next change there.
    assert!(watched(raw(&t, "b", &TreeReq::Stat(p("svc/files/root/sub/x"))).await));
    std::fs::write(t.disk("sub/z"), "1").unwrap();
    let got = told(&mut c, Duration::from_secs(10)).await.expect("told of sub/z");
    assert!(got.iter().any(|c| matches!(c, Change::Name { name, .. } if name == "z")), "{got:?}");
    assert!(!got.iter().any(|c| matches!(c, Change::Name { name, .. } if name == "unseen")), "{got:?}");
    // Still nothing of the root, which a has not listed.
    std::fs::write(t.disk("unseen"), "22").unwrap();
    let later = told(&mut c, Duration::from_millis(500)).await.unwrap_or_default();
    assert!(!later.iter().any(|c| matches!(c, Change::Name { name, .. } if name == "unseen")), "{later:?}");
}

/// A machine's conversations of changes: a new one replaces the old, so a
/// peer that opens hundreds holds one feed of changes on b, not a copy of
/// every change per conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_holds_one_conversation_of_changes_however_many_it_opens() {
    use srv::fs::dir::watch::Change;
    let t = two("watchflood").await;
    std::fs::write(t.disk("sub/x"), "x").unwrap();
    let to_b = || Addr::on("b".parse().unwrap(), Name::new(RESERVED).unwrap());
    let mut convs = Vec::new();
    for _ in 0..300 {
        let mut c = t.a.router().open(to_b(), vec![]);
        c.tx.send(ns::cbor::encode(&(Caller::router(), TreeReq::Watch))).await.unwrap();
        let done = next(&mut c).await;
        assert!(
            matches!(&done, Some(Msg::Data(b)) if matches!(ns::cbor::decode(b, "tree message").unwrap(), TreeResp::Done)),
            "{done:?}"
        );
        convs.push(c);
    }
    let mut last = convs.pop().unwrap();
    // Every earlier one has ended.
    for (i, c) in convs.iter_mut().enumerate() {
        let end = tokio::time::timeout(Duration::from_secs(10), c.rx.recv()).await.expect("ended in time");
        assert!(!matches!(end, Some(Msg::Data(_))), "conversation {i} still told: {end:?}");
    }
    // The last is told, once.
    let stat = TreeReq::Stat(p("svc/files/root/sub/x"));
    assert!(matches!(raw(&t, "b", &stat).await, Ok(TreeResp::Entry(e)) if e.meta.unwrap().watched));
    std::fs::write(t.disk("sub/z"), "1").unwrap();
    let got = told(&mut last, Duration::from_secs(10)).await.expect("told of sub/z");
    assert!(got.iter().any(|c| matches!(c, Change::Name { name, .. } if name == "z")), "{got:?}");
}

/// A session with b's tree server as a hostile machine could open one.
async fn raw_session(t: &Two) -> ns::Conv {
    let mut c = t.a.router().open(Addr::on("b".parse().unwrap(), Name::new(RESERVED).unwrap()), vec![]);
    c.tx.send(ns::cbor::encode(&(Caller::router(), TreeReq::Session))).await.unwrap();
    assert!(matches!(next(&mut c).await, Some(Msg::Data(_))), "a session is answered");
    c
}

async fn in_session(c: &mut ns::Conv, req: &TreeReq) -> Result<TreeResp, String> {
    c.tx.send(ns::cbor::encode(req)).await?;
    match next(c).await {
        Some(Msg::Data(b)) => match ns::cbor::decode(&b, "tree message")? {
            TreeResp::Err(e) => Err(e),
            other => Ok(other),
        },
        other => Err(format!("{other:?}")),
    }
}

/// Each request in a session is judged as a conversation's first is: the
/// root holds, requests that would make the session something else are
/// refused, and the session goes on after each refusal.
#[tokio::test]
async fn a_session_judges_each_request() {
    let t = two("dir-session").await;
    let mut c = raw_session(&t).await;
    let errno = |r: Result<TreeResp, String>| match r {
        Ok(resp) => panic!("answered {resp:?}"),
        Err(e) => srv::fs::errors::errno(&e),
    };
    let up = p("svc/files/root/../../outside/secret");
    assert_eq!(errno(in_session(&mut c, &TreeReq::Stat(up)).await), libc::EACCES);
    let to = p("svc/files/root/../stolen");
    let req = TreeReq::Rename { from: p("svc/files/root/sub"), to, flags: 0 };
    assert_eq!(errno(in_session(&mut c, &req).await), libc::EACCES);
    assert!(!t.dir.path().join("stolen").exists());
    let open = TreeReq::Open { path: p("svc/files/root/sub"), access: R, batch: false };
    let e = in_session(&mut c, &open).await.unwrap_err();
    assert!(e.contains("open in a session"), "{e}");
    assert!(in_session(&mut c, &TreeReq::Watch).await.is_err());
    // Still a session: a request that may be answered is.
    match in_session(&mut c, &TreeReq::Stat(p("svc/files/root/sub"))).await {
        Ok(TreeResp::Entry(e)) => assert_eq!(e.name, "sub"),
        other => panic!("{other:?}"),
    }
    // A message that is no request fails alone.
    c.tx.send(Bytes::from_static(b"\xff\x00junk")).await.unwrap();
    assert!(matches!(next(&mut c).await, Some(Msg::Data(_))));
    assert!(in_session(&mut c, &TreeReq::List(p("svc/files/root"))).await.is_ok());
}

/// Callers that stop waiting (a Ctrl-C, a timeout) take their session
/// with them: no answer reaches the wrong caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_caller_leaves_no_answer_to_the_next() {
    let t = two("dir-session-stop").await;
    let a = &t.a;
    for i in 0..20u64 {
        std::fs::write(t.disk(&format!("f{i}")), vec![b'x'; i as usize]).unwrap();
    }
    let mut stopped = 0;
    for round in 0..400u64 {
        let i = round % 20;
        let f = p(&format!("n/b/svc/files/root/f{i}"));
        let wait = Duration::from_micros(round * 37 % 400);
        match tokio::time::timeout(wait, a.stat(&f)).await {
            Ok(got) => assert_eq!(got.unwrap().meta.map(|m| m.size), Some(i), "f{i} answered with another file's size"),
            Err(_) => stopped += 1,
        }
        let e = a.stat(&f).await.unwrap();
        assert_eq!((e.name.as_str(), e.meta.map(|m| m.size)), (format!("f{i}").as_str(), Some(i)));
    }
    assert!(stopped > 0 && stopped < 400, "{stopped} of 400 stopped: nothing tested");
    assert!(a.sessions().idle() <= srv::fs::remote::session::MAX_IDLE);
}
