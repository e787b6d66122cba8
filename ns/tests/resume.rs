//! Links that resume their session across cuts (doc/resume.md), on the
//! in-process transport with paused time.
//!
//! The cut is a [`Cable`] between a and b: cutting it stops carrying
//! frames on every connection through it, keeping their ends open as a
//! pulled cable does (what was on its way is lost), and holds new
//! connections unanswered until it is mended. Each end notices by its
//! keepalive, a dials again, and the session resumes on the new
//! connection: nothing lost, nothing twice.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use ns::envelope::{Envelope, Hello, Kind, SessionMsg};
use ns::path::TermName;
use ns::probe::Echo;
use ns::{Addr, Config, Msg, Name, Router};
use tokio_util::sync::CancellationToken;

fn n(s: &str) -> Name {
    s.parse().unwrap()
}

fn a(s: &str) -> Addr {
    Addr::parse(s).unwrap()
}

/// Per connection through a cable, the frames its dialer sent.
type Sent = Arc<Mutex<Vec<Vec<Bytes>>>>;

/// A relay of frames that can be cut and mended. It also keeps the
/// frames each connection's dialer sent, for replaying them.
struct Cable {
    /// The connections' generation: pumps of an older one carry nothing.
    gen: Arc<AtomicU64>,
    cut: Arc<AtomicBool>,
    /// Per connection, the frames its dialer sent, in order.
    sent: Sent,
    stop: CancellationToken,
}

impl Drop for Cable {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Cable {
    async fn new(from: &str, to: &str) -> Cable {
        let opts = ns::link::link_options();
        let mut l = dial::listen(&format!("mem!{from}").parse().unwrap(), &opts).await.unwrap();
        let to: dial::DialString = format!("mem!{to}").parse().unwrap();
        let cable = Cable {
            gen: Default::default(),
            cut: Default::default(),
            sent: Default::default(),
            stop: CancellationToken::new(),
        };
        let (gen, cut, sent, stop) = (cable.gen.clone(), cable.cut.clone(), cable.sent.clone(), cable.stop.clone());
        tokio::spawn(async move {
            loop {
                let dialer = tokio::select! {
                    _ = stop.cancelled() => return,
                    l = l.accept() => l.unwrap(),
                };
                if cut.load(SeqCst) {
                    // Held, unanswered, until the test ends.
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        stop.cancelled().await;
                        drop(dialer);
                    });
                    continue;
                }
                let listener = dial::dial(&to, &opts).await.unwrap();
                let g = gen.load(SeqCst);
                let k = {
                    let mut s = sent.lock().unwrap();
                    s.push(Vec::new());
                    s.len() - 1
                };
                let log = Some((sent.clone(), k));
                tokio::spawn(pump(dialer.rx, listener.tx, gen.clone(), g, log, stop.clone()));
                tokio::spawn(pump(listener.rx, dialer.tx, gen.clone(), g, None, stop.clone()));
            }
        });
        cable
    }

    /// Nothing more crosses, and nobody new gets through.
    fn cut(&self) {
        self.cut.store(true, SeqCst);
        self.gen.fetch_add(1, SeqCst);
    }

    /// New connections get through again (the old ones stay dead).
    fn mend(&self) {
        self.cut.store(false, SeqCst);
    }

    /// The frames the dialer sent on connection `k`.
    fn sent_on(&self, k: usize) -> Vec<Bytes> {
        self.sent.lock().unwrap().get(k).cloned().unwrap_or_default()
    }

    fn connections(&self) -> usize {
        self.sent.lock().unwrap().len()
    }
}

/// Carries frames one way while the cable's generation is `g`; keeps
/// its ends open once cut.
async fn pump(
    mut rx: dial::FrameStream,
    mut tx: dial::FrameSink,
    gen: Arc<AtomicU64>,
    g: u64,
    log: Option<(Sent, usize)>,
    stop: CancellationToken,
) {
    while let Some(Ok(f)) = tokio::select! { _ = stop.cancelled() => None, f = rx.next() => f } {
        let f = f.into_bytes();
        if gen.load(SeqCst) != g {
            continue;
        }
        if let Some((log, k)) = &log {
            log.lock().unwrap()[*k].push(f.clone());
        }
        if tx.send(f.into()).await.is_err() {
            return;
        }
    }
    if gen.load(SeqCst) != g {
        stop.cancelled().await;
    }
}

/// Routers a and b, a dialing b through a cable; b serves `echo`.
struct Pair {
    a: Router,
    b: Router,
    cable: Cable,
    stop: CancellationToken,
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Pair {
    async fn new(tag: &str, resume: Duration) -> Pair {
        let stop = CancellationToken::new();
        let router = |id: &str| Router::new(Config { resume, ..Config::new(n(id)) }, stop.child_token());
        let (ra, rb) = (router("a"), router("b"));
        rb.listen(&format!("mem!{tag}-b").parse().unwrap()).await.unwrap();
        let cable = Cable::new(&format!("{tag}-cable"), &format!("{tag}-b")).await;
        ra.dial(format!("mem!{tag}-cable").parse().unwrap());
        rb.add_service(n("echo"), Arc::new(Echo));
        let p = Pair { a: ra, b: rb, cable, stop };
        until("b's echo known at a", || p.a.table().nearest("echo").is_some()).await;
        p
    }

    fn status(&self, r: &Router, of: &str) -> String {
        r.term(&TermName::Net(n(of))).map(|t| t.status_text()).unwrap_or_default()
    }

    /// A count of the session line of `r`'s terminal to `of`:
    /// `session ID resumes N refused M`.
    fn session_count(&self, r: &Router, of: &str, word: &str) -> u64 {
        let s = self.status(r, of);
        let line = s.lines().find(|l| l.starts_with("session ")).unwrap_or("");
        line.split_whitespace().skip_while(|w| *w != word).nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    fn resumes(&self, r: &Router, of: &str) -> u64 {
        self.session_count(r, of, "resumes")
    }

    fn refused(&self, r: &Router, of: &str) -> u64 {
        self.session_count(r, of, "refused")
    }
}

/// Waits until `cond` holds, failing after 60 s of (paused) time.
async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..1200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Sends `count` numbered messages on a conversation with b's echo,
/// one every `gap`, while `cuts` run beside; returns the numbers that
/// came back, in the order they came, and any error.
async fn numbered_stream(
    p: &Pair,
    count: u64,
    gap: Duration,
    cuts: impl std::future::Future<Output = ()>,
) -> (Vec<u64>, Option<String>) {
    let ns::Conv { tx, mut rx } = p.a.open(a("/n/b/svc/echo"), vec![]);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while (got.len() as u64) < count {
            match tokio::time::timeout(Duration::from_secs(120), rx.recv()).await {
                Ok(Some(Msg::Data(b))) => got.push(u64::from_be_bytes(b[..8].try_into().unwrap())),
                Ok(Some(Msg::Error(e))) => return (got, Some(e)),
                Ok(Some(_)) => {}
                Ok(None) => return (got, Some("conversation ended".into())),
                Err(_) => return (got, Some("no answer in 120 s".into())),
            }
        }
        (got, None)
    });
    let writer = async {
        for i in 0..count {
            tx.send(Bytes::copy_from_slice(&i.to_be_bytes())).await.unwrap();
            tokio::time::sleep(gap).await;
        }
    };
    tokio::join!(writer, cuts);
    let got = reader.await.unwrap();
    drop(tx);
    got
}

#[tokio::test(start_paused = true)]
async fn numbered_messages_cross_three_cuts_each_once_in_order() {
    let p = Pair::new("three", Duration::from_secs(30)).await;
    let cuts = async {
        for k in 0..3 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            p.cable.cut();
            // Long enough for both ends to notice, and for a's tries to
            // meet the cut.
            tokio::time::sleep(Duration::from_secs(4)).await;
            assert!(p.a.term(&TermName::Net(n("b"))).is_some_and(|t| t.state().starts_with("resuming")), "cut {k}");
            p.cable.mend();
            until("resumed", || p.resumes(&p.a, "b") > k).await;
        }
    };
    let (got, err) = numbered_stream(&p, 3000, Duration::from_millis(5), cuts).await;
    assert_eq!(err, None, "after {} answers", got.len());
    assert_eq!(got, (0..3000).collect::<Vec<_>>(), "each once, in order");
    assert_eq!(p.resumes(&p.a, "b"), 3, "{}", p.status(&p.a, "b"));
    assert_eq!(p.resumes(&p.b, "a"), 3, "{}", p.status(&p.b, "a"));
    // The link is the one it was: no route changed, nothing failed.
    let ctl = ns::text::ctl_text(&p.a);
    assert!(!ctl.contains("link down"), "{ctl}");
    assert!(ctl.contains("net-b resumed"), "{ctl}");
}

#[tokio::test(start_paused = true)]
async fn a_cut_past_the_grace_period_fails_what_crossed_it_and_nothing_hangs() {
    let p = Pair::new("grace", Duration::from_secs(5)).await;
    let mut conv = p.a.open(a("/n/b/svc/echo"), vec![]);
    conv.tx.send(Bytes::from_static(b"before")).await.unwrap();
    assert!(matches!(conv.rx.recv().await, Some(Msg::Data(_))));
    p.cable.cut();
    let t0 = tokio::time::Instant::now();
    // Sent into the cut: held for the grace period, then failed.
    conv.tx.send(Bytes::from_static(b"into the cut")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), conv.rx.recv()).await.expect("an answer or an error");
    let took = t0.elapsed();
    assert!(matches!(&got, Some(Msg::Error(e)) if e.starts_with(ns::error::ELINK)), "{got:?}");
    // Noticed within about two periods, then five seconds of grace.
    assert!(took >= Duration::from_secs(5) && took <= Duration::from_secs(9), "{took:?}");
    until("a's link gone", || p.a.term(&TermName::Net(n("b"))).is_none()).await;
    until("b's link gone", || p.b.term(&TermName::Net(n("a"))).is_none()).await;
    assert!(ns::text::ctl_text(&p.a).contains("not resumed within 5s"), "{}", ns::text::ctl_text(&p.a));
    // Mended, a links afresh: a new session.
    p.cable.mend();
    until("a links b again", || p.a.term(&TermName::Net(n("b"))).is_some_and(|t| !t.is_resuming())).await;
    let mut again = p.a.open(a("/n/b/svc/echo"), vec![]);
    again.tx.send(Bytes::from_static(b"after")).await.unwrap();
    assert!(matches!(again.rx.recv().await, Some(Msg::Data(_))));
}

#[tokio::test(start_paused = true)]
async fn a_replayed_resume_handshake_and_a_wrong_proof_are_refused_and_the_session_goes_on() {
    let p = Pair::new("replay", Duration::from_secs(30)).await;
    // One real resume, whose handshake the cable records.
    p.cable.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    p.cable.mend();
    until("resumed", || p.resumes(&p.a, "b") == 1).await;
    let k = p.cable.connections() - 1;
    let captured = p.cable.sent_on(k);
    let is_step = |f: &Bytes, want: fn(&SessionMsg) -> bool| matches!(Envelope::decode(f.clone()).map(|e| e.kind), Ok(Kind::Hello(Hello { session: Some(ref m), .. })) if want(m));
    assert!(
        is_step(&captured[0], |m| matches!(m, SessionMsg::Resume { .. })),
        "the dialer's first frame asks to resume"
    );
    assert!(is_step(&captured[1], |m| matches!(m, SessionMsg::Proof(_))), "its second is its proof");

    // Replayed to b as they were: b's fresh nonce makes the proof wrong.
    let opts = ns::link::link_options();
    let mut l = dial::dial(&"mem!replay-b".parse().unwrap(), &opts).await.unwrap();
    l.tx.send(captured[0].clone().into()).await.unwrap();
    let answer = Envelope::decode_frame(l.rx.next().await.unwrap().unwrap()).unwrap();
    assert!(matches!(answer.kind, Kind::Hello(Hello { session: Some(SessionMsg::Resumed { .. }), .. })), "{answer:?}");
    l.tx.send(captured[1].clone().into()).await.unwrap();
    assert!(l.rx.next().await.is_none(), "closed after the wrong proof");
    until("the replay counted", || p.refused(&p.b, "a") == 1).await;
    assert!(p.status(&p.b, "a").contains("without its proof"), "{}", p.status(&p.b, "a"));

    // A session id b does not have: refused without touching the link.
    let mut l = dial::dial(&"mem!replay-b".parse().unwrap(), &opts).await.unwrap();
    let mut env = Envelope::decode(captured[0].clone()).unwrap();
    if let Kind::Hello(Hello { session: Some(SessionMsg::Resume { id, .. }), .. }) = &mut env.kind {
        *id ^= 1;
    }
    l.tx.send(env.encode().into()).await.unwrap();
    let answer = Envelope::decode_frame(l.rx.next().await.unwrap().unwrap()).unwrap();
    assert!(matches!(answer.kind, Kind::Hello(Hello { session: Some(SessionMsg::Refused(_)), .. })), "{answer:?}");

    // The real session resumed after the replay stopped its connection,
    // and carries on.
    until("resumed again", || p.resumes(&p.a, "b") == 2).await;
    let mut conv = p.a.open(a("/n/b/svc/echo"), vec![]);
    conv.tx.send(Bytes::from_static(b"still here")).await.unwrap();
    assert!(matches!(conv.rx.recv().await, Some(Msg::Data(_))));
    assert_eq!(p.resumes(&p.b, "a"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_neighbour_is_a_new_session_and_what_crossed_the_old_fails_at_once() {
    let p = Pair::new("restart", Duration::from_secs(30)).await;
    let mut conv = p.b.open(a("/n/a/svc/echo-a"), vec![]);
    p.a.add_service(n("echo-a"), Arc::new(Echo));
    until("a's echo known at b", || p.b.table().nearest("echo-a").is_some()).await;
    conv.tx.send(Bytes::from_static(b"one")).await.unwrap();
    assert!(matches!(conv.rx.recv().await, Some(Msg::Data(_))));
    // a dies without a word (its links go silent), and another a starts.
    p.cable.cut();
    p.a.shutdown_token().cancel();
    p.cable.mend();
    let t0 = tokio::time::Instant::now();
    let again = Router::new(Config::new(n("a")), p.stop.child_token());
    again.dial("mem!restart-cable".parse().unwrap());
    let got = tokio::time::timeout(Duration::from_secs(20), conv.rx.recv()).await.expect("an error");
    assert!(matches!(&got, Some(Msg::Error(e)) if e.starts_with(ns::error::ELINK)), "{got:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "at once, not after the grace period: {:?}", t0.elapsed());
    until("b linked to the new a", || p.b.term(&TermName::Net(n("a"))).is_some_and(|t| !t.is_resuming())).await;
    assert!(ns::text::ctl_text(&p.b).contains("linked afresh"), "{}", ns::text::ctl_text(&p.b));
}

/// A relay whose first connection stops carrying b's frames to a (both
/// ends kept open, as a socket that no longer drains) once `stall` is
/// set, while a's frames still reach b; later connections carry both ways.
async fn half_stalled(from: &str, to: &str, stall: Arc<AtomicBool>, stop: CancellationToken) {
    let opts = ns::link::link_options();
    let mut l = dial::listen(&format!("mem!{from}").parse().unwrap(), &opts).await.unwrap();
    let to: dial::DialString = format!("mem!{to}").parse().unwrap();
    tokio::spawn(async move {
        for k in 0.. {
            let dialer = tokio::select! { _ = stop.cancelled() => return, l = l.accept() => l.unwrap() };
            let listener = dial::dial(&to, &opts).await.unwrap();
            let (mut arx, mut atx, mut brx, mut btx) = (dialer.rx, dialer.tx, listener.rx, listener.tx);
            tokio::spawn(async move {
                while let Some(Ok(f)) = arx.next().await {
                    let f = f.into_bytes();
                    if btx.send(f.into()).await.is_err() {
                        return;
                    }
                }
            });
            let (stall, stop) = (stall.clone(), stop.clone());
            tokio::spawn(async move {
                while let Some(Ok(f)) = brx.next().await {
                    let f = f.into_bytes();
                    if k == 0 && stall.load(SeqCst) {
                        stop.cancelled().await;
                        return;
                    }
                    if atx.send(f.into()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

#[tokio::test(start_paused = true)]
async fn a_reader_waiting_on_its_own_full_link_still_notices_the_loss_and_resumes() {
    // b sends a lot to a; the b->a direction stops draining, so b's link
    // queue fills, while a's pings still reach b, whose reader must answer
    // them on that full link. Found in review: the reader waited on its
    // own queue for ever, the session never parked, and the pair stayed
    // down for good.
    let stop = CancellationToken::new();
    let router = |id: &str| Router::new(Config::new(n(id)), stop.child_token());
    let (ra, rb) = (router("a"), router("b"));
    rb.listen(&"mem!half-b".parse().unwrap()).await.unwrap();
    let stall = Arc::new(AtomicBool::new(false));
    half_stalled("half-relay", "half-b", stall.clone(), stop.clone()).await;
    ra.dial("mem!half-relay".parse().unwrap());
    ra.add_service(n("sink"), Arc::new(ns::probe::Sink));
    until("a's sink known at b", || rb.table().nearest("sink").is_some()).await;
    stall.store(true, SeqCst);
    let done = Arc::new(AtomicU64::new(0));
    let mut convs = Vec::new();
    for _ in 0..4 {
        let conv = rb.open(a("/n/a/svc/sink"), vec![]);
        let tx = conv.tx.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let data = Bytes::from(vec![7u8; 1024]);
            for _ in 0..1024 {
                tx.send(data.clone()).await.expect("no error: the link resumes");
            }
            done.fetch_add(1, SeqCst);
        });
        convs.push(conv);
    }
    until("every sender done", || done.load(SeqCst) == 4).await;
    let status = rb.term(&TermName::Net(n("a"))).map(|t| t.status_text()).unwrap_or_default();
    assert!(status.contains("session resumes 1"), "{status}");
    stop.cancel();
}
