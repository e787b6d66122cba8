//! Limits that must hold at scale, with routers on the in-process
//! transport: the hop limit (routes past it are neither advertised nor
//! chosen, and what reaches it comes back as an error), and a link's
//! record of crossed conversations, which must shrink as they end.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use ns::conv::{Conv, Msg, Service};
use ns::envelope::HOP_LIMIT;
use ns::path::TermName;
use ns::{Addr, Config, Envelope, Kind, Name, Router};
use tokio_util::sync::CancellationToken;

fn n(s: &str) -> Name {
    s.parse().unwrap()
}

fn a(s: &str) -> Addr {
    Addr::parse(s).unwrap()
}

/// Answers the first message with `NAME@MACHINE`, then ends at once, as
/// a tree server answers one request.
struct Once(String);

impl Service for Once {
    fn serve(&self, mut conv: Conv) -> BoxFuture<'static, ()> {
        let tag = self.0.clone();
        Box::pin(async move {
            if let Some(Msg::Data(_)) = conv.rx.recv().await {
                let _ = conv.tx.send(Bytes::from(tag)).await;
            }
        })
    }
}

/// Routers `r0`, `r1`, ... each listening on `mem!TAG-rI`, stopped on drop.
struct Line {
    routers: Vec<Router>,
    stop: CancellationToken,
}

impl Drop for Line {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Line {
    /// `len` routers, each linked to the next.
    async fn new(tag: &str, len: usize) -> Line {
        let stop = CancellationToken::new();
        let mut routers = Vec::new();
        for i in 0..len {
            let r = Router::new(Config::new(n(&format!("r{i}"))), stop.child_token());
            r.listen(&format!("mem!{tag}-r{i}").parse().unwrap()).await.unwrap();
            routers.push(r);
        }
        for i in 1..len {
            routers[i - 1].dial(format!("mem!{tag}-r{i}").parse().unwrap());
        }
        Line { routers, stop }
    }

    /// Waits until `cond` holds, failing after `secs` seconds.
    async fn until(&self, what: &str, secs: u64, cond: impl Fn(&Line) -> bool) {
        for _ in 0..secs * 20 {
            if cond(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }
}

/// One request and its answer, or the error, within 10 s.
async fn ask(r: &Router, dst: &str) -> Result<String, String> {
    let mut conv = r.open(a(dst), vec![]);
    conv.tx.send(Bytes::from("x")).await?;
    match tokio::time::timeout(Duration::from_secs(10), conv.rx.recv()).await {
        Err(_) => Err("timeout".into()),
        Ok(Some(Msg::Data(b))) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Ok(Some(Msg::Error(e))) => Err(e),
        Ok(other) => Err(format!("{other:?}")),
    }
}

#[tokio::test(start_paused = true)]
async fn routes_end_at_the_hop_limit_and_what_reaches_it_fails() {
    // A route is kept when a request over it, and the error or reply
    // back, cross at most HOP_LIMIT machines: HOP_LIMIT - 1 hops.
    let far = HOP_LIMIT - 1;
    let len = HOP_LIMIT + 4;
    let line = Line::new("hopline", len).await;
    for (i, r) in line.routers.iter().enumerate() {
        r.add_service(n(&format!("s{i}")), Arc::new(Once(format!("s{i}@r{i}"))));
    }
    // The line settles: each end knows every machine within reach.
    line.until("routes along the line", 60, |l| {
        l.routers[0].table().best(&n(&format!("r{far}"))).is_some()
            && l.routers[len - 1].table().best(&n(&format!("r{}", len - 1 - far))).is_some()
    })
    .await;
    // Let gossip run on; nothing further may appear.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (i, r) in line.routers.iter().enumerate() {
        for rt in r.table().routes() {
            assert!(rt.hops() <= far, "r{i} keeps a route of {} hops: {:?}", rt.hops(), rt.path);
        }
        let machines: HashSet<String> = r.table().routes().iter().map(|rt| rt.machine.to_string()).collect();
        for j in 0..len {
            let d = i.abs_diff(j);
            assert_eq!(machines.contains(&format!("r{j}")), d <= far, "r{i} to r{j}, {d} hops:\n{}", r.routes());
        }
    }
    let r0 = &line.routers[0];
    // The farthest service within reach answers, by machine and by name.
    assert_eq!(ask(r0, &format!("/n/r{far}/svc/s{far}")).await, Ok(format!("s{far}@r{far}")));
    assert_eq!(ask(r0, &format!("/svc/s{far}")).await, Ok(format!("s{far}@r{far}")));
    // Beyond it: an error at once, not a hang.
    for j in far + 1..len {
        let got = ask(r0, &format!("/n/r{j}/svc/s{j}")).await;
        assert!(
            matches!(&got, Err(e) if e.starts_with(ns::error::ENOROUTE) || e.starts_with(ns::error::EHOPS)),
            "r{j}: {got:?}"
        );
        let got = ask(r0, &format!("/svc/s{j}")).await;
        assert!(matches!(&got, Err(e) if e.starts_with(ns::error::ENOSERVICE)), "s{j}: {got:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_envelope_at_the_hop_limit_comes_back_as_an_error() {
    // An envelope that has crossed HOP_LIMIT machines stops where it is,
    // unless it is there: the error back then needs no more hops than it
    // came by. The writer hears `hop limit`; the terminal it would have
    // left by counts it.
    let line = Line::new("hopedge", 4).await;
    line.routers[3].add_service(n("end"), Arc::new(Once("end".into())));
    line.until("route", 30, |l| l.routers[0].table().nearest("end").is_some()).await;
    // An envelope from r0 that has come a long way round to r1: its path
    // starts at r0, as every neighbour checks.
    let send = |via: usize, id: u64| {
        let conv = line.routers[0].open(a("/n/r3/svc/end"), vec![]);
        let mut env = Envelope::new(id, conv.rx.path().clone(), a("/n/r3/svc/end"), Kind::Data, Bytes::from("x"));
        env.via = std::iter::once(n("r0")).chain((1..via).map(|i| n(&format!("m{i}")))).collect();
        (conv, env)
    };
    // With r1 and r2 it has crossed HOP_LIMIT machines at r2.
    let (mut conv, env) = send(HOP_LIMIT - 2, 1);
    line.routers[1].forward(env).await;
    let got = tokio::time::timeout(Duration::from_secs(5), conv.rx.recv()).await.unwrap();
    assert_eq!(got, Some(Msg::Error(ns::error::EHOPS.into())));
    let term = line.routers[2].term(&TermName::Net(n("r3"))).unwrap();
    assert!(term.status_text().contains("errors 1\n"), "{}", term.status_text());
    // One machine less arrives: r3 is the HOP_LIMIT-th.
    let (mut conv, env) = send(HOP_LIMIT - 3, 2);
    line.routers[1].forward(env).await;
    let got = tokio::time::timeout(Duration::from_secs(5), conv.rx.recv()).await.unwrap();
    assert_eq!(got, Some(Msg::Data(Bytes::from("end"))));
}

/// The `crossing N conversation ends` count of a terminal's status.
fn crossing(r: &Router, peer: &str) -> usize {
    let status = r.term(&TermName::Net(n(peer))).map(|t| t.status_text()).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("crossing ")).unwrap_or_else(|| panic!("no crossing in {status}"));
    line.split(' ').nth(1).and_then(|w| w.parse().ok()).unwrap()
}

// Real threads: the order in which a runtime with several workers runs
// the messages that end a conversation is what the record must survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_links_record_of_crossed_conversations_shrinks_as_they_end() {
    let line = Line::new("crossed", 2).await;
    let (a, b) = (&line.routers[0], &line.routers[1]);
    b.add_service(n("once"), Arc::new(Once("once".into())));
    line.until("route", 30, |l| l.routers[0].table().nearest("once").is_some()).await;
    for _ in 0..2000 {
        // One request, its answer, then both ends go: a tree operation.
        assert_eq!(ask(a, "/n/r1/svc/once").await, Ok("once".into()));
    }
    // The last hangups may still be on their way, and a late `Eof` may
    // bring an end back for a moment (until its hangup follows): wait
    // for a count that stays at zero.
    let mut zero = 0;
    for _ in 0..100 {
        zero = if crossing(a, "r1") == 0 && crossing(b, "r0") == 0 { zero + 1 } else { 0 };
        if zero == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // On failure, which ends were left: their addresses say who talked.
    let ends = |r: &Router, p: &str| r.term(&TermName::Net(n(p))).and_then(|t| t.crossed.as_ref().map(|c| c.take()));
    assert_eq!(
        (crossing(a, "r1"), crossing(b, "r0")),
        (0, 0),
        "ends remembered after every conversation ended: {:?} {:?}",
        ends(a, "r1"),
        ends(b, "r0")
    );
}
