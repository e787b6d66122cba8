//! [`MeshFs`]'s handlers called as the kernel calls them, on one router
//! with a service that never reads: a write blocked on the
//! conversation's credit ends on an interrupt (also one that came before
//! the write), at unmount, and on a `hangup` written to the ctl of either
//! end of the conversation listed under `svc/stall/`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use futures::future::BoxFuture;
use ns::conv::{Conv, Service};
use ns::Router;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::DropGuard;

use super::inodes::ROOT;
use super::*;

/// How long a blocked write is watched not ending, and how long a write
/// that must end may take: generous, the machine may be busy.
const QUICK: Duration = Duration::from_millis(300);
const ANSWER: Duration = Duration::from_secs(5);

/// Holds each conversation without reading it until it is hung up, then
/// says so.
struct Stall(Arc<Notify>);

impl Service for Stall {
    fn serve(&self, conv: Conv) -> BoxFuture<'static, ()> {
        let seen = self.0.clone();
        Box::pin(async move {
            let Conv { rx, tx } = conv;
            tx.hung_up().await;
            seen.notify_one();
            drop(rx);
        })
    }
}

struct Fixture {
    fs: Arc<MeshFs>,
    ns: Arc<Namespace>,
    shutdown: CancellationToken,
    hung_up: Arc<Notify>,
    unique: AtomicU64,
    _stop: DropGuard,
}

fn req(unique: u64) -> Request {
    Request { unique, uid: 0, gid: 0, pid: 0 }
}

fn fixture() -> Fixture {
    let stop = CancellationToken::new();
    let r = Router::new(ns::Config::new("a".parse().expect("machine name")), stop.child_token());
    let hung_up = Arc::new(Notify::new());
    r.add_service("stall".parse().expect("service name"), Arc::new(Stall(hung_up.clone())));
    let ns = Namespace::new(r);
    let shutdown = CancellationToken::new();
    let fs = Arc::new(MeshFs::new(ns.clone(), shutdown.clone()));
    Fixture { fs, ns, shutdown, hung_up, unique: AtomicU64::new(1), _stop: stop.drop_guard() }
}

impl Fixture {
    fn next(&self) -> u64 {
        self.unique.fetch_add(1, Relaxed)
    }

    async fn ino(&self, path: &str) -> u64 {
        let mut ino = ROOT;
        for c in components(path) {
            ino = self.fs.lookup(req(self.next()), ino, OsStr::new(&c)).await.expect(&c).attr.ino;
        }
        ino
    }

    async fn open(&self, path: &str) -> (u64, u64) {
        let ino = self.ino(path).await;
        let fh = self.fs.open(req(self.next()), ino, libc::O_WRONLY as u32).await.expect(path).fh;
        (ino, fh)
    }

    /// A write of `len` bytes as request `unique`, in a task of its own.
    fn write(&self, unique: u64, (ino, fh): (u64, u64), len: usize) -> JoinHandle<FuseResult<ReplyWrite>> {
        let fs = self.fs.clone();
        tokio::spawn(async move { fs.write(req(unique), ino, fh, 0, &vec![0; len], 0, 0).await })
    }

    /// Opens `svc/stall/data` and writes 1 MiB at a time until a write
    /// blocks, as the one past the window must (nothing is read): the
    /// file, the blocked write and its request.
    async fn blocked(&self) -> ((u64, u64), JoinHandle<FuseResult<ReplyWrite>>, u64) {
        let file = self.open("svc/stall/data").await;
        for _ in 0..ns::conv::WINDOW >> 20 {
            assert_eq!(ended(self.write(self.next(), file, 1 << 20)).await, Ok(1 << 20));
        }
        let unique = self.next();
        let mut w = self.write(unique, file, 1 << 20);
        assert!(tokio::time::timeout(QUICK, &mut w).await.is_err(), "wrote past the window");
        (file, w, unique)
    }

    /// The conversation numbers listed under `svc/stall/`: (the opener's
    /// end, the service's end).
    fn ends(&self) -> (u64, u64) {
        let list = self.ns.router().convs().list();
        let end = |service_side: bool| {
            // The newest: those of earlier rounds stay while their files are open.
            list.iter()
                .filter(|c| c.path.service.as_str() == "stall" && c.peer.is_some() == service_side)
                .filter_map(|c| c.path.conv)
                .max()
                .expect("a conversation of stall")
        };
        (end(false), end(true))
    }

    async fn ctl(&self, n: u64, msg: &str) -> FuseResult<ReplyWrite> {
        let file = self.open(&format!("svc/stall/{n}/ctl")).await;
        let fs = self.fs.clone();
        let msg = msg.to_string();
        let unique = self.next();
        tokio::spawn(async move { fs.write(req(unique), file.0, file.1, 0, msg.as_bytes(), 0, 0).await })
            .await
            .expect("ctl write task")
    }
}

/// What a write ended with, within [`ANSWER`]: bytes written or errno.
async fn ended(w: JoinHandle<FuseResult<ReplyWrite>>) -> Result<u32, i32> {
    match tokio::time::timeout(ANSWER, w).await {
        // fuse3 keeps errno negated, as the kernel wants it.
        Ok(r) => r.expect("write task").map(|r| r.written).map_err(|e| -i32::from(e)),
        Err(_) => panic!("the blocked write did not end within {ANSWER:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_ends_a_write_blocked_on_credit() {
    let f = fixture();
    let (file, w, unique) = f.blocked().await;
    let sent = |f: &Fixture| f.ns.router().convs().status(f.ends().0).expect("opener's end").msgs_out;
    let before = sent(&f);
    f.fs.interrupt(req(f.next()), unique).await.expect("interrupt");
    assert_eq!(ended(w).await, Err(libc::EINTR));
    // The interrupted write sent nothing, and the conversation goes on.
    tokio::time::sleep(QUICK).await;
    assert_eq!(sent(&f), before);
    // An interrupt that comes before its write is not lost.
    let unique = f.next();
    f.fs.interrupt(req(f.next()), unique).await.expect("interrupt");
    assert_eq!(ended(f.write(unique, file, 1 << 20)).await, Err(libc::EINTR));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmounting_ends_a_blocked_write() {
    let f = fixture();
    let (_, w, _) = f.blocked().await;
    f.shutdown.cancel();
    assert_eq!(ended(w).await, Err(libc::ESHUTDOWN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangup_on_either_end_ends_the_conversation_for_both() {
    let f = fixture();
    for service_side in [false, true] {
        let (_, w, _) = f.blocked().await;
        let (opener, service) = f.ends();
        let n = if service_side { service } else { opener };
        f.ctl(n, "hangup\n").await.unwrap_or_else(|e| panic!("hangup on {n}: {e:?}"));
        // The blocked writer sees the hangup, and so does the service.
        assert_eq!(ended(w).await, Err(libc::EPIPE), "hangup on the service's end: {service_side}");
        tokio::time::timeout(ANSWER, f.hung_up.notified()).await.expect("the service saw the hangup");
    }
}
