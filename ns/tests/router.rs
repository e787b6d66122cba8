//! The router on the in-process transport, with paused time: topologies of
//! the seed, multi-hop forwarding, return paths, discovery, failures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use ns::conv::{Conv, Msg, Service};
use ns::path::TermName;
use ns::term::TermKind;
use ns::{Addr, Config, Envelope, Kind, Name, Router};
use tokio_util::sync::CancellationToken;

fn n(s: &str) -> Name {
    s.parse().unwrap()
}

/// The terminal of the link to neighbour `s`.
fn net(s: &str) -> TermName {
    TermName::Net(n(s))
}
fn a(s: &str) -> Addr {
    Addr::parse(s).unwrap()
}

/// Replies to each message with `tag(MESSAGE)` in upper case.
struct Tag(String);

impl Service for Tag {
    fn serve(&self, mut conv: Conv) -> BoxFuture<'static, ()> {
        let tag = self.0.clone();
        Box::pin(async move {
            while let Some(m) = conv.rx.recv().await {
                match m {
                    Msg::Data(b) => {
                        let s = format!("{tag}({})", String::from_utf8_lossy(&b).to_uppercase());
                        if conv.tx.send(Bytes::from(s)).await.is_err() {
                            break;
                        }
                    }
                    Msg::Eof => {
                        conv.tx.eof().await;
                        break;
                    }
                    Msg::Error(_) => break,
                }
            }
        })
    }
}

struct Mesh {
    routers: HashMap<String, Router>,
    stop: CancellationToken,
    tag: String,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Mesh {
    /// Routers named by `ids`, each listening on `mem!TAG-ID`.
    async fn new(tag: &str, ids: &[&str], cfg: impl Fn(&mut Config)) -> Mesh {
        let stop = CancellationToken::new();
        let mut routers = HashMap::new();
        for id in ids {
            let mut c = Config::new(n(id));
            cfg(&mut c);
            let r = Router::new(c, stop.child_token());
            r.listen(&format!("mem!{tag}-{id}").parse().unwrap()).await.unwrap();
            routers.insert(id.to_string(), r);
        }
        Mesh { routers, stop, tag: tag.into() }
    }

    fn r(&self, id: &str) -> &Router {
        &self.routers[id]
    }

    fn link(&self, from: &str, to: &str) {
        self.r(from).dial(format!("mem!{}-{to}", self.tag).parse().unwrap());
    }

    fn serve(&self, on: &str, name: &str) {
        self.r(on).add_service(n(name), Arc::new(Tag(format!("{name}@{on}"))));
    }

    /// Waits until `cond` holds, failing after 30 s of (paused) time.
    async fn until(&self, what: &str, cond: impl Fn(&Mesh) -> bool) {
        for _ in 0..600 {
            if cond(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }
}

fn hops(r: &Router, service: &str) -> Option<(String, usize)> {
    r.table().nearest(service).map(|rt| (rt.machine.to_string(), rt.hops()))
}

/// One request, the replies until end of file.
async fn ask(conv: &mut Conv, msg: &str) -> Result<Vec<String>, String> {
    conv.tx.send(Bytes::from(msg.to_string())).await?;
    conv.tx.eof().await;
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), conv.rx.recv()).await {
            Err(_) => return Err("timeout".into()),
            Ok(None) | Ok(Some(Msg::Eof)) => return Ok(out),
            Ok(Some(Msg::Data(b))) => out.push(String::from_utf8_lossy(&b).into_owned()),
            Ok(Some(Msg::Error(e))) => return Err(e),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn chain_over_two_hops_and_back() {
    let m = Mesh::new("chain", &["a", "b", "c"], |_| {}).await;
    m.link("a", "b");
    m.link("b", "c");
    m.serve("c", "upper");
    m.until("a learns upper", |m| hops(m.r("a"), "upper") == Some(("c".into(), 2))).await;
    assert!(m.r("a").routes().contains("upper c net-b 2 a!b!c\n"), "{}", m.r("a").routes());
    let mut conv = m.r("a").open(a("/svc/upper"), vec![]);
    assert_eq!(ask(&mut conv, "hello").await.unwrap(), ["upper@c(HELLO)"]);
}

#[tokio::test(start_paused = true)]
async fn hairpin_reply_crosses_back() {
    // A asks C's gpu; the reply goes to A's encoder, whose output comes
    // back to the asker.
    let m = Mesh::new("hairpin", &["a", "b", "c"], |_| {}).await;
    m.link("a", "b");
    m.link("c", "b");
    m.serve("c", "gpu");
    m.serve("a", "enc");
    m.until("routes", |m| hops(m.r("a"), "gpu").is_some() && hops(m.r("c"), "enc").is_some()).await;
    let mut conv = m.r("a").open(a("/svc/gpu"), vec![a("/n/a/svc/enc")]);
    assert_eq!(ask(&mut conv, "frame").await.unwrap(), ["enc@a(GPU@C(FRAME))"]);
    // The gpu's reply crossed c -> b -> a.
    let c_out = m.r("c").term(&net("b")).unwrap().stats.envs_out.load(SeqCst);
    assert!(c_out > 0);
}

#[tokio::test(start_paused = true)]
async fn pipeline_is_a_return_path() {
    let m = Mesh::new("pipe", &["a", "b", "c"], |_| {}).await;
    m.link("a", "b");
    m.link("b", "c");
    m.serve("b", "parser");
    m.serve("c", "gpu");
    m.serve("c", "encoder");
    m.serve("a", "display");
    m.until("routes", |m| {
        ["parser", "gpu", "encoder", "display"]
            .iter()
            .all(|s| hops(m.r("a"), s).is_some() && hops(m.r("c"), s).is_some())
    })
    .await;
    let mut conv = m.r("a").open(a("/svc/parser"), vec![a("/svc/gpu"), a("/svc/encoder"), a("/n/a/svc/display")]);
    let got = ask(&mut conv, "ls").await.unwrap();
    assert_eq!(got, ["display@a(ENCODER@C(GPU@C(PARSER@B(LS))))"]);
}

#[tokio::test(start_paused = true)]
async fn fewer_hops_preferred_and_withdrawn_at_once() {
    let m = Mesh::new("tri", &["a", "b", "c"], |_| {}).await;
    m.link("a", "b");
    m.link("b", "c");
    m.link("a", "c");
    m.serve("c", "upper");
    m.until("direct route", |m| hops(m.r("a"), "upper") == Some(("c".into(), 1))).await;
    // Cut a-c: the route moves through b.
    m.r("a").term(&net("c")).unwrap().hangup();
    m.until("route via b", |m| m.r("a").table().best(&n("c")).is_some_and(|r| r.term == net("b"))).await;
    // No path in any table contains a machine twice.
    for r in m.routers.values() {
        for rt in r.table().routes() {
            let mut p = rt.path.clone();
            p.sort();
            p.dedup();
            assert_eq!(p.len(), rt.path.len(), "loop in {:?}", rt.path);
        }
    }
    let mut conv = m.r("a").open(a("/svc/upper"), vec![]);
    assert_eq!(ask(&mut conv, "x").await.unwrap(), ["upper@c(X)"]);
}

#[tokio::test(start_paused = true)]
async fn replicas_nearest_and_sticky() {
    let m = Mesh::new("repl", &["a", "b", "c"], |_| {}).await;
    m.link("a", "b");
    m.link("b", "c");
    m.serve("b", "up");
    m.serve("c", "up");
    m.until("replicas", |m| m.r("a").routes().lines().filter(|l| l.starts_with("up ")).count() == 2).await;
    let mut conv = m.r("a").open(a("/svc/up"), vec![]);
    conv.tx.send(Bytes::from("1")).await.unwrap();
    assert_eq!(conv.rx.recv().await, Some(Msg::Data(Bytes::from("up@b(1)"))));
    // A nearer replica appears: the conversation sticks, a new one moves.
    m.serve("a", "up");
    m.until("local replica", |m| hops(m.r("a"), "up") == Some(("a".into(), 0))).await;
    conv.tx.send(Bytes::from("2")).await.unwrap();
    assert_eq!(conv.rx.recv().await, Some(Msg::Data(Bytes::from("up@b(2)"))));
    let mut fresh = m.r("a").open(a("/svc/up"), vec![]);
    assert_eq!(ask(&mut fresh, "3").await.unwrap(), ["up@a(3)"]);
    // Ties between replicas break by machine id, the same everywhere.
    let mut far = m.r("c").open(a("/n/b/svc/up"), vec![]);
    assert_eq!(ask(&mut far, "4").await.unwrap(), ["up@b(4)"]);
}

#[tokio::test(start_paused = true)]
async fn losing_a_link_fails_its_conversations() {
    let m = Mesh::new("lose", &["a", "b", "c"], |_| {}).await;
    m.link("a", "b");
    m.link("b", "c");
    m.serve("c", "upper");
    m.until("route", |m| hops(m.r("a"), "upper").is_some()).await;
    let mut conv = m.r("a").open(a("/svc/upper"), vec![]);
    conv.tx.send(Bytes::from("x")).await.unwrap();
    assert!(matches!(conv.rx.recv().await, Some(Msg::Data(_))));
    m.r("b").term(&net("c")).unwrap().hangup();
    // b's dialer redials; until then a sees the loss. The conversation
    // on the lost route gets an error instead of hanging.
    let got = tokio::time::timeout(Duration::from_secs(5), conv.rx.recv()).await.unwrap();
    let lost = |e: &str| e.starts_with(ns::error::ENOROUTE) || e.starts_with(ns::error::ELINK);
    assert!(matches!(&got, Some(Msg::Error(e)) if lost(e)), "{got:?}");
    assert!(conv.tx.send(Bytes::from("y")).await.is_err());
    // The link comes back and so does the route.
    m.until("redial", |m| hops(m.r("a"), "upper").is_some()).await;
}

/// Replies like [`Tag`]; counts the conversations that ended in an error.
struct Watch(Arc<AtomicUsize>);

impl Service for Watch {
    fn serve(&self, mut conv: Conv) -> BoxFuture<'static, ()> {
        let failed = self.0.clone();
        Box::pin(async move {
            while let Some(m) = conv.rx.recv().await {
                match m {
                    Msg::Data(b) => {
                        if conv.tx.send(b).await.is_err() {
                            break;
                        }
                    }
                    Msg::Eof => break,
                    Msg::Error(_) => {
                        failed.fetch_add(1, SeqCst);
                        break;
                    }
                }
            }
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_lost_link_fails_what_crossed_it_even_with_another_path() {
    // A square: a-b-c and a-d-c. c stays reachable from a when b-c goes,
    // but what was in flight on b-c may be lost, so the conversation that
    // crossed it must hear of it, at both ends, instead of hanging.
    let m = Mesh::new("square", &["a", "b", "c", "d"], |_| {}).await;
    for (x, y) in [("a", "b"), ("b", "c"), ("a", "d"), ("d", "c")] {
        m.link(x, y);
    }
    let failed = Arc::new(AtomicUsize::new(0));
    m.r("c").add_service(n("echo"), Arc::new(Watch(failed.clone())));
    m.until("routes", |m| {
        hops(m.r("a"), "echo") == Some(("c".into(), 2))
            && m.r("b").term(&net("c")).is_some()
            && m.r("d").term(&net("c")).is_some()
    })
    .await;
    let mut conv = m.r("a").open(a("/svc/echo"), vec![]);
    conv.tx.send(Bytes::from("x")).await.unwrap();
    assert!(matches!(conv.rx.recv().await, Some(Msg::Data(_))));
    // Ties break by neighbour id: the conversation went through b.
    let via_b = m.r("b").term(&net("c")).unwrap();
    assert!(via_b.crossed.as_ref().is_some_and(|c| !c.is_empty()), "b remembers the conversation");
    via_b.hangup();
    let got = tokio::time::timeout(Duration::from_secs(2), conv.rx.recv()).await.unwrap();
    assert!(matches!(&got, Some(Msg::Error(e)) if e.starts_with(ns::error::ELINK)), "{got:?}");
    assert!(conv.tx.send(Bytes::from("y")).await.is_err(), "writes fail too");
    m.until("c's end fails", |_| failed.load(SeqCst) == 1).await;
    // c was never unreachable: a new conversation goes through d.
    assert!(hops(m.r("a"), "echo").is_some());
    let mut again = m.r("a").open(a("/svc/echo"), vec![]);
    again.tx.send(Bytes::from("z")).await.unwrap();
    assert!(matches!(again.rx.recv().await, Some(Msg::Data(b)) if &b[..] == b"z"));
    // Conversations that never crossed the link are not touched.
    assert_eq!(failed.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn messages_arrive_in_order_exactly_once_over_hops() {
    let m = Mesh::new("order", &["a", "b", "c"], |_| {}).await;
    m.link("a", "b");
    m.link("b", "c");
    m.r("c").add_service(n("echo"), Arc::new(Watch(Arc::new(AtomicUsize::new(0)))));
    m.until("route", |m| hops(m.r("a"), "echo").is_some()).await;
    let conv = m.r("a").open(a("/svc/echo"), vec![]);
    let (tx, mut rx) = (conv.tx, conv.rx);
    const N: u32 = 20_000;
    // Writing and reading at once: the writer runs into the credit
    // window and waits for the reader, as a real client would.
    let writer = tokio::spawn(async move {
        for i in 0..N {
            tx.send(Bytes::from(i.to_be_bytes().to_vec())).await.unwrap();
        }
        tx
    });
    for i in 0..N {
        match rx.recv().await {
            Some(Msg::Data(b)) => assert_eq!(b[..], i.to_be_bytes()[..], "message {i} out of order"),
            other => panic!("message {i}: {other:?}"),
        }
    }
    let tx = writer.await.unwrap();
    tx.eof().await;
    // Nothing more: no duplicate follows the last message.
    let rest = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap();
    assert!(matches!(rest, None | Some(Msg::Eof)), "{rest:?}");
}

#[tokio::test(start_paused = true)]
async fn missing_service_and_machine_are_errors() {
    let m = Mesh::new("miss", &["a", "b"], |_| {}).await;
    m.link("a", "b");
    m.serve("b", "upper");
    m.until("route", |m| hops(m.r("a"), "upper").is_some()).await;
    let mut c1 = m.r("a").open(a("/svc/nope"), vec![]);
    assert_eq!(ask(&mut c1, "x").await, Err("no such service: nope".into()));
    let mut c2 = m.r("a").open(a("/n/b/svc/nope"), vec![]);
    assert_eq!(ask(&mut c2, "x").await, Err("no such service: nope".into()));
    let mut c3 = m.r("a").open(a("/n/zz/svc/upper"), vec![]);
    assert_eq!(ask(&mut c3, "x").await, Err("no route to machine: zz".into()));
    // A reply path naming a missing service fails back to the asker.
    let mut c4 = m.r("a").open(a("/svc/upper"), vec![a("/svc/gone")]);
    assert_eq!(ask(&mut c4, "x").await, Err("no such service: gone".into()));
}

#[tokio::test(start_paused = true)]
async fn hop_limit_is_an_error_not_a_loop() {
    let m = Mesh::new("hops", &["a", "b"], |_| {}).await;
    m.link("a", "b");
    m.serve("b", "upper");
    m.until("route", |m| hops(m.r("a"), "upper").is_some()).await;
    let mut conv = m.r("a").open(a("/svc/upper"), vec![]);
    let mut env = Envelope::new(1, conv.rx.path().clone(), a("/n/b/svc/upper"), Kind::Data, Bytes::from("x"));
    env.via = (0..ns::envelope::HOP_LIMIT).map(|i| n(&format!("m{i}"))).collect();
    m.r("a").forward(env).await;
    let got = tokio::time::timeout(Duration::from_secs(5), conv.rx.recv()).await.unwrap();
    assert_eq!(got, Some(Msg::Error("hop limit".into())));
}

async fn registry_mesh(tag: &str, gossip: bool) -> Mesh {
    let m = Mesh::new(tag, &["a", "b", "c"], |c| {
        c.gossip = gossip;
        c.registry = Some(n("b"));
    })
    .await;
    m.r("b").add_service(n("registry"), Arc::new(srv_registry(m.r("b").clone())));
    m.link("a", "b");
    m.link("c", "b");
    m.serve("c", "upper");
    m
}

#[tokio::test(start_paused = true)]
async fn registry_only() {
    let m = registry_mesh("regonly", false).await;
    m.until("registry routes", |m| hops(m.r("a"), "upper") == Some(("c".into(), 2))).await;
    assert_eq!(m.r("a").table().best(&n("c")).unwrap().source, "registry");
    let mut conv = m.r("a").open(a("/svc/upper"), vec![]);
    assert_eq!(ask(&mut conv, "via registry").await.unwrap(), ["upper@c(VIA REGISTRY)"]);
    // c goes: its entries go with its session.
    m.r("c").shutdown();
    m.until("entries expire", |m| hops(m.r("a"), "upper").is_none()).await;
}

#[tokio::test(start_paused = true)]
async fn registry_routes_expire_when_the_registry_dies() {
    // a reaches c only through what b's registry told it; b keeps the
    // link but its registry goes silent.
    let m = Mesh::new("regdie", &["a", "b", "c"], |c| {
        c.gossip = false;
        c.registry = Some(n("b"));
    })
    .await;
    let kill = CancellationToken::new();
    m.r("b").add_service(n("registry"), Arc::new(Killable(Arc::new(srv_registry(m.r("b").clone())), kill.clone())));
    m.link("a", "b");
    m.link("c", "b");
    m.serve("c", "upper");
    m.until("registry routes", |m| hops(m.r("a"), "upper") == Some(("c".into(), 2))).await;
    // The registry dies; b and its links stay.
    m.r("b").remove_service(&n("registry"));
    kill.cancel();
    let lost = tokio::time::Instant::now();
    m.until("routes expire", |m| hops(m.r("a"), "upper").is_none()).await;
    let took = lost.elapsed();
    let period = Config::new(n("a")).period;
    assert!(took >= period * 2 && took <= period * 6, "expired after {took:?}");
    assert_eq!(m.r("a").registry_status(), Some((n("b"), false)));
    assert!(ns::text::ctl_text(m.r("a")).contains("registry b unreachable"));
}

#[tokio::test(start_paused = true)]
async fn registry_lookup_on_demand() {
    // Periodic lists are a minute apart: only a lookup can find a service
    // that appears in between.
    let m = Mesh::new("regask", &["a", "b", "c"], |c| {
        c.gossip = false;
        c.registry = Some(n("b"));
        c.period = Duration::from_secs(60);
    })
    .await;
    m.r("b").add_service(n("registry"), Arc::new(srv_registry(m.r("b").clone())));
    m.link("a", "b");
    m.link("c", "b");
    let up = |m: &Mesh, id: &str| m.r(id).registry_status().is_some_and(|(_, ok)| ok);
    m.until("sessions", |m| up(m, "a") && up(m, "c")).await;
    m.serve("c", "late");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(hops(m.r("a"), "late").is_none(), "not listed yet");
    let mut conv = m.r("a").open(a("/svc/late"), vec![]);
    assert_eq!(ask(&mut conv, "now").await.unwrap(), ["late@c(NOW)"]);
    assert_eq!(hops(m.r("a"), "late"), Some(("c".into(), 2)));
}

#[tokio::test(start_paused = true)]
async fn gossip_and_registry_together() {
    let m = registry_mesh("both", true).await;
    m.until("routes", |m| hops(m.r("a"), "upper") == Some(("c".into(), 2))).await;
    // Gossip wins ties over the registry.
    assert_eq!(m.r("a").table().best(&n("c")).unwrap().source, "gossip");
    let mut conv = m.r("a").open(a("/svc/upper"), vec![]);
    assert_eq!(ask(&mut conv, "both").await.unwrap(), ["upper@c(BOTH)"]);
}

#[tokio::test(start_paused = true)]
async fn gossip_only_has_no_registry() {
    let m = Mesh::new("gonly", &["a", "b", "c"], |_| {}).await;
    m.link("a", "b");
    m.link("c", "b");
    m.serve("c", "upper");
    m.until("routes", |m| hops(m.r("a"), "upper") == Some(("c".into(), 2))).await;
    assert!(m.r("a").registry_status().is_none());
    assert_eq!(m.r("a").table().best(&n("c")).unwrap().source, "gossip");
}

/// Reads one message a second (paused time).
struct Slow(Arc<AtomicUsize>);

impl Service for Slow {
    fn serve(&self, mut conv: Conv) -> BoxFuture<'static, ()> {
        let seen = self.0.clone();
        Box::pin(async move {
            while let Some(Msg::Data(_)) = conv.rx.recv().await {
                seen.fetch_add(1, SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }
}

#[tokio::test(start_paused = true)]
async fn slow_reader_slows_its_writer_only() {
    let m = Mesh::new("slow", &["a", "b", "c"], |_| {}).await;
    m.link("a", "b");
    m.link("b", "c");
    let seen = Arc::new(AtomicUsize::new(0));
    m.r("c").add_service(n("slow"), Arc::new(Slow(seen.clone())));
    m.serve("c", "upper");
    m.until("routes", |m| hops(m.r("a"), "slow").is_some() && hops(m.r("a"), "upper").is_some()).await;
    let conv = m.r("a").open(a("/svc/slow"), vec![]);
    let sent = Arc::new(AtomicUsize::new(0));
    let s2 = sent.clone();
    let writer = tokio::spawn(async move {
        for _ in 0..64 {
            conv.tx.send(Bytes::from(vec![0u8; 1 << 20])).await.unwrap();
            s2.fetch_add(1, SeqCst);
        }
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (s, r) = (sent.load(SeqCst), seen.load(SeqCst));
    // The writer is held to the reader's pace: at most a window ahead.
    let window = (ns::conv::WINDOW >> 20) as usize;
    assert!(s <= r + window + 1, "sent {s}, read {r}");
    assert!(r >= 9, "reader made progress: {r}");
    // Meanwhile another conversation over the same links is not stalled.
    let mut other = m.r("a").open(a("/svc/upper"), vec![]);
    assert_eq!(ask(&mut other, "fast").await.unwrap(), ["upper@c(FAST)"]);
    writer.abort();
}

#[tokio::test(start_paused = true)]
async fn garbage_from_a_peer_closes_that_link_only() {
    use futures::{SinkExt, StreamExt};
    let m = Mesh::new("garbage", &["a", "b"], |_| {}).await;
    m.link("a", "b");
    m.serve("b", "upper");
    m.until("route", |m| hops(m.r("a"), "upper").is_some()).await;
    let opts = ns::link::link_options();
    let mut bad = dial::dial(&"mem!garbage-b".parse().unwrap(), &opts).await.unwrap();
    let hello = Envelope::new(
        0,
        a("/n/x/svc/router"),
        a("/n/x/svc/router"),
        Kind::Hello(ns::envelope::Hello::new(n("x"), None)),
        Bytes::new(),
    );
    bad.tx.send(hello.encode().into()).await.unwrap();
    assert!(bad.rx.next().await.is_some(), "hello answered");
    bad.tx.send(Bytes::from_static(b"\xff\x00garbage").into()).await.unwrap();
    // b closes the bad link...
    let end =
        tokio::time::timeout(Duration::from_secs(5), async { while let Some(Ok(_)) = bad.rx.next().await {} }).await;
    assert!(end.is_ok(), "bad link closed");
    assert!(m.r("b").term(&net("x")).is_none());
    // ...and keeps serving a.
    let mut conv = m.r("a").open(a("/svc/upper"), vec![]);
    assert_eq!(ask(&mut conv, "still").await.unwrap(), ["upper@b(STILL)"]);
}

/// A service whose conversations all end when its token is cancelled.
struct Killable(Arc<dyn Service>, CancellationToken);

impl Service for Killable {
    fn serve(&self, conv: Conv) -> BoxFuture<'static, ()> {
        let (inner, kill) = (self.0.serve(conv), self.1.clone());
        Box::pin(async move {
            tokio::select! {
                _ = inner => {}
                _ = kill.cancelled() => {}
            }
        })
    }
}

fn srv_registry(r: Router) -> impl Service {
    ns::registry::RegistryService::new(r)
}

/// Counts the messages it gets.
struct Count(Arc<AtomicUsize>);

impl Service for Count {
    fn serve(&self, mut conv: Conv) -> BoxFuture<'static, ()> {
        let n = self.0.clone();
        Box::pin(async move {
            while let Some(Msg::Data(_)) = conv.rx.recv().await {
                n.fetch_add(1, SeqCst);
            }
        })
    }
}

/// A rogue neighbour `x` of b, past its hello.
async fn rogue(tag: &str) -> dial::Link {
    use futures::{SinkExt, StreamExt};
    let mut l = dial::dial(&format!("mem!{tag}-b").parse().unwrap(), &ns::link::link_options()).await.unwrap();
    let hello = Envelope::new(
        0,
        a("/n/x/svc/router"),
        a("/n/x/svc/router"),
        Kind::Hello(ns::envelope::Hello::new(n("x"), None)),
        Bytes::new(),
    );
    l.tx.send(hello.encode().into()).await.unwrap();
    assert!(l.rx.next().await.is_some(), "hello answered");
    l
}

#[tokio::test(start_paused = true)]
async fn a_neighbour_speaks_only_for_what_it_routes() {
    use futures::{SinkExt, StreamExt};
    let m = Mesh::new("spoof", &["a", "b"], |_| {}).await;
    m.link("a", "b");
    let seen = Arc::new(AtomicUsize::new(0));
    m.r("b").add_service(n("count"), Arc::new(Count(seen.clone())));
    m.until("route", |m| hops(m.r("a"), "count").is_some()).await;
    // A path that does not start at the source: the link closes.
    let mut x = rogue("spoof").await;
    let mut lie = Envelope::new(1, a("/n/a/svc/count/7"), a("/n/b/svc/count"), Kind::Data, Bytes::from("lie"));
    lie.via = vec![n("x")];
    x.tx.send(lie.encode().into()).await.unwrap();
    let end =
        tokio::time::timeout(Duration::from_secs(5), async { while let Some(Ok(_)) = x.rx.next().await {} }).await;
    assert!(end.is_ok(), "link closed");
    // A consistent path from a machine x does not route to: refused.
    let mut x = rogue("spoof").await;
    let mut posing = Envelope::new(2, a("/n/a/svc/count/7"), a("/n/b/svc/count"), Kind::Data, Bytes::from("posing"));
    posing.via = vec![n("a"), n("x")];
    x.tx.send(posing.encode().into()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(seen.load(SeqCst), 0, "no service saw either");
    assert!(m.r("b").term(&net("x")).is_some_and(|t| t.stats.errors.load(SeqCst) == 1));
    // Its own messages are fine.
    let mut own = Envelope::new(3, a("/n/x/svc/count/7"), a("/n/b/svc/count"), Kind::Data, Bytes::from("own"));
    own.via = vec![n("x")];
    x.tx.send(own.encode().into()).await.unwrap();
    m.until("x's own message arrives", |_| seen.load(SeqCst) == 1).await;
    // a is served as before.
    let conv = m.r("a").open(a("/svc/count"), vec![]);
    conv.tx.send(Bytes::from("real")).await.unwrap();
    m.until("a's message arrives", |_| seen.load(SeqCst) == 2).await;
}

#[tokio::test(start_paused = true)]
async fn an_announcement_flood_closes_that_link() {
    use futures::{SinkExt, StreamExt};
    use ns::gossip::{Announce, RouteAd};
    let m = Mesh::new("flood", &["a", "b"], |_| {}).await;
    m.link("a", "b");
    m.serve("b", "upper");
    m.until("route", |m| hops(m.r("a"), "upper").is_some()).await;
    let mut x = rogue("flood").await;
    let entries: Vec<RouteAd> = (0..ns::route::MAX_ROUTES_PER_PEER + 1)
        .map(|i| RouteAd {
            machine: n(&format!("m{i}")),
            path: vec![n("x"), n(&format!("m{i}"))],
            services: vec![n("bogus")],
        })
        .collect();
    let mut flood = Envelope::new(
        1,
        a("/n/x/svc/router"),
        a("/n/b/svc/router"),
        Kind::Routes(Announce { seq: 1, full: true, entries, lost: vec![] }),
        Bytes::new(),
    );
    flood.via = vec![n("x")];
    x.tx.send(flood.encode().into()).await.unwrap();
    let end =
        tokio::time::timeout(Duration::from_secs(5), async { while let Some(Ok(_)) = x.rx.next().await {} }).await;
    assert!(end.is_ok(), "flooding link closed");
    // None of it stayed, and b still serves a.
    assert!(m.r("b").table().best(&n("m1")).is_none());
    assert!(!m.r("b").routes().contains("bogus"));
    let mut conv = m.r("a").open(a("/svc/upper"), vec![]);
    assert_eq!(ask(&mut conv, "calm").await.unwrap(), ["upper@b(CALM)"]);
}

/// Hops between machines over `edges`, leaving `gone` out: what every
/// router's table must say once settled.
fn distances(edges: &[(String, String)], gone: Option<&str>) -> HashMap<(String, String), usize> {
    let mut adj: HashMap<&str, Vec<&str>> = HashMap::new();
    for (x, y) in edges.iter().filter(|(x, y)| gone != Some(x.as_str()) && gone != Some(y.as_str())) {
        adj.entry(x).or_default().push(y);
        adj.entry(y).or_default().push(x);
    }
    let mut out = HashMap::new();
    for &from in adj.keys() {
        let mut next = vec![from];
        let mut d = 0;
        while !next.is_empty() {
            let mut further = Vec::new();
            for m in next {
                if out.contains_key(&(from.to_string(), m.to_string())) {
                    continue;
                }
                out.insert((from.to_string(), m.to_string()), d);
                further.extend(adj[m].iter().copied());
            }
            next = further;
            d += 1;
        }
    }
    out
}

/// Whether every router's table holds exactly the shortest routes.
fn settled(m: &Mesh, want: &HashMap<(String, String), usize>) -> bool {
    m.routers.iter().filter(|(id, _)| want.contains_key(&(id.to_string(), id.to_string()))).all(|(id, r)| {
        let routes = r.table().routes();
        let reachable = want.keys().filter(|(from, _)| from == id).count();
        routes.len() == reachable
            && routes.iter().all(|rt| want.get(&(id.clone(), rt.machine.to_string())) == Some(&rt.hops()))
    })
}

/// Counts the route announcements every router sends from now on.
fn count_announcements(m: &Mesh) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    for r in m.routers.values() {
        for t in r.terms().into_iter().filter(|t| matches!(t.kind, TermKind::Net(_))) {
            let (mut rx, count) = (t.subscribe(), count.clone());
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(line) if line.starts_with("out routes ") => {
                            count.fetch_add(1, SeqCst);
                        }
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => panic!("trace lagged by {k}"),
                        Err(_) => return,
                    }
                }
            });
        }
    }
    count
}

/// Two random cycles over `k` machines (a random graph of degree 4, as
/// mesh-bench's discovery builds), from a fixed seed.
fn random_mesh(k: usize) -> Vec<(String, String)> {
    let mut x: u64 = 7;
    let mut cycle = || {
        let mut v: Vec<usize> = (0..k).collect();
        for i in (1..k).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            v.swap(i, ((x >> 33) % (i as u64 + 1)) as usize);
        }
        (0..k).map(|i| (v[i].min(v[(i + 1) % k]), v[i].max(v[(i + 1) % k]))).collect::<Vec<_>>()
    };
    let mut pairs: Vec<(usize, usize)> = cycle().into_iter().chain(cycle()).collect();
    pairs.sort();
    pairs.dedup();
    pairs.into_iter().map(|(a, b)| (format!("m{a:02}"), format!("m{b:02}"))).collect()
}

/// A mesh over `edges`, `victim` removed once settled: the route
/// announcements it took until every table settled without it.
async fn removal(tag: &str, edges: &[(String, String)], victim: &str, root_cause: bool) -> usize {
    let mut ids: Vec<&str> = edges.iter().flat_map(|(x, y)| [x.as_str(), y.as_str()]).collect();
    ids.sort();
    ids.dedup();
    let m = Mesh::new(tag, &ids, |c| c.root_cause = root_cause).await;
    for (x, y) in edges {
        m.link(x, y);
    }
    m.until("mesh settled", |m| settled(m, &distances(edges, None))).await;
    let count = count_announcements(&m);
    m.r(victim).shutdown();
    m.until("no route to the victim", |m| {
        m.routers.iter().all(|(id, r)| id == victim || r.table().best(&n(victim)).is_none())
    })
    .await;
    let without = distances(edges, Some(victim));
    m.until("settled without the victim", |m| settled(m, &without)).await;
    // Nothing more comes, reports of lost links expired or not.
    let settled_after = count.load(SeqCst);
    tokio::time::sleep(Config::new(n("x")).period * 2).await;
    assert_eq!(count.load(SeqCst), settled_after, "announcements after settling");
    assert!(settled(&m, &without));
    settled_after
}

#[tokio::test(start_paused = true)]
async fn removing_a_machine_does_not_explore_dead_paths() {
    // Without reports of lost links, the routers around the dead machine
    // try each other's dead paths, longer and longer, before giving up.
    let edges = random_mesh(48);
    let without = removal("explore", &edges, "m12", false).await;
    let with = removal("reports", &edges, "m12", true).await;
    assert!(with * 5 < without, "{with} announcements with reports of lost links, {without} without");
}

#[tokio::test(start_paused = true)]
async fn a_lost_link_fails_over_to_the_long_way_and_back() {
    // A ring: cut a-b, and a reaches b the long way round at once; a
    // redials, and paths over a-b, set aside while the loss was news,
    // come back.
    let ids = ["a", "b", "c", "d", "e", "f"];
    let edges: Vec<(String, String)> = (0..6).map(|i| (ids[i].to_string(), ids[(i + 1) % 6].to_string())).collect();
    let m = Mesh::new("ring", &ids, |_| {}).await;
    for (x, y) in &edges {
        m.link(x, y);
    }
    let whole = distances(&edges, None);
    m.until("ring settled", |m| settled(m, &whole)).await;
    m.r("a").term(&net("b")).unwrap().hangup();
    let cut: Vec<(String, String)> = edges[1..].to_vec();
    m.until("the long way round", |m| settled(m, &distances(&cut, None))).await;
    assert_eq!(m.r("a").table().best(&n("b")).unwrap().path, [n("a"), n("f"), n("e"), n("d"), n("c"), n("b")]);
    m.until("back to the short way", |m| settled(m, &whole)).await;
    let mut conv = m.r("a").open(a("/n/b/svc/upper"), vec![]);
    m.serve("b", "upper");
    m.until("upper known", |m| hops(m.r("a"), "upper") == Some(("b".into(), 1))).await;
    assert_eq!(ask(&mut conv, "back").await.unwrap(), ["upper@b(BACK)"]);
}
