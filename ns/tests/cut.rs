//! Links cut without a word, on the in-process transport with paused
//! time: a link that goes silent rather than closed is noticed by each of
//! its ends on its own clock, and in between the two ends route
//! differently. A conversation must get its answer or an error, whichever
//! way its envelopes went.
//!
//! The links here do not resume (`resume` zero): the tests are of what a
//! link lost for good costs; `resume.rs` has the cuts a session survives.
//!
//! The cut is a [`Cable`]: a relay of frames between two routers that
//! can stop carrying them one way or both, keeping both ends open, as a
//! pulled cable does.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use ns::conv::{Conv, Msg, Service};
use ns::path::TermName;
use ns::probe::Echo;
use ns::{Addr, Config, Name, Router};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn n(s: &str) -> Name {
    s.parse().unwrap()
}

fn a(s: &str) -> Addr {
    Addr::parse(s).unwrap()
}

/// Answers the first message with itself and ends at once: its answer,
/// `Eof` and hangup go out together.
struct Once;

impl Service for Once {
    fn serve(&self, mut conv: Conv) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Some(Msg::Data(b)) = conv.rx.recv().await {
                let _ = conv.tx.send(b).await;
            }
        })
    }
}

/// Answers the first message with itself, then says `Eof` once its
/// writer fails (as an `exec` service does when its command exits).
struct EofAfter;

impl Service for EofAfter {
    fn serve(&self, mut conv: Conv) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Some(Msg::Data(b)) = conv.rx.recv().await {
                let _ = conv.tx.send(b).await;
            }
            conv.tx.hung_up().await;
            conv.tx.eof().await;
            // Keep the end a while, so that only what eof said goes out.
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
    }
}

/// Answers the first message with itself once let go: the test decides
/// when the answer leaves.
#[derive(Clone, Default)]
struct Held {
    /// Set once the request is in.
    got: Arc<AtomicBool>,
    /// Lets the answer go.
    go: Arc<tokio::sync::Notify>,
    /// The end that asked.
    asker: Arc<std::sync::Mutex<Option<Addr>>>,
}

impl Service for Held {
    fn serve(&self, mut conv: Conv) -> BoxFuture<'static, ()> {
        let (got, go, asker) = (self.got.clone(), self.go.clone(), self.asker.clone());
        Box::pin(async move {
            if let Some(Msg::Data(b)) = conv.rx.recv().await {
                *asker.lock().unwrap() = conv.tx.peer().cloned();
                got.store(true, SeqCst);
                go.notified().await;
                let _ = conv.tx.send(b).await;
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
    }
}

/// A relay of frames from `mem!FROM` to `mem!TO` that can go silent.
struct Cable {
    /// Frames flow towards the dialer, and towards the listener.
    to_dialer: Arc<AtomicBool>,
    to_listener: Arc<AtomicBool>,
    /// Once cut, an end that closes is not passed on, and new
    /// connections are held and ignored.
    cut: Arc<AtomicBool>,
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
            to_dialer: Arc::new(AtomicBool::new(true)),
            to_listener: Arc::new(AtomicBool::new(true)),
            cut: Arc::new(AtomicBool::new(false)),
            stop: CancellationToken::new(),
        };
        let (down, up, cut, stop) =
            (cable.to_dialer.clone(), cable.to_listener.clone(), cable.cut.clone(), cable.stop.clone());
        tokio::spawn(async move {
            loop {
                let dialer = tokio::select! {
                    _ = stop.cancelled() => return,
                    l = l.accept() => l.unwrap(),
                };
                if cut.load(SeqCst) {
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        stop.cancelled().await;
                        drop(dialer);
                    });
                    continue;
                }
                let listener = dial::dial(&to, &opts).await.unwrap();
                tokio::spawn(pump(dialer.rx, listener.tx, up.clone(), cut.clone(), stop.clone()));
                tokio::spawn(pump(listener.rx, dialer.tx, down.clone(), cut.clone(), stop.clone()));
            }
        });
        cable
    }

    /// Nothing more reaches the dialer.
    fn silence_to_dialer(&self) {
        self.cut.store(true, SeqCst);
        self.to_dialer.store(false, SeqCst);
    }

    /// Nothing more crosses either way.
    fn silence(&self) {
        self.silence_to_dialer();
        self.to_listener.store(false, SeqCst);
    }
}

/// Carries frames one way while `on`; past a cut, keeps the far end open
/// when the near one closes.
async fn pump(
    mut rx: dial::FrameStream,
    mut tx: dial::FrameSink,
    on: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    while let Some(Ok(f)) = tokio::select! { _ = stop.cancelled() => None, f = rx.next() => f } {
        let f = f.into_bytes();
        if on.load(SeqCst) && tx.send(f.into()).await.is_err() {
            return;
        }
    }
    if cut.load(SeqCst) {
        stop.cancelled().await;
    }
}

/// a, b and c, all linked; a reaches c directly through a [`Cable`].
struct Triangle {
    /// c's `held` service, as the test sees it.
    held: Held,
    a: Router,
    b: Router,
    c: Router,
    cable: Cable,
    stop: CancellationToken,
}

impl Drop for Triangle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Triangle {
    async fn new(tag: &str) -> Triangle {
        let stop = CancellationToken::new();
        // Links that do not resume: these cuts are for good, as one
        // longer than a resuming link's grace period is (see resume.rs).
        let router =
            |id: &str| Router::new(Config { resume: Duration::ZERO, ..Config::new(n(id)) }, stop.child_token());
        let (ra, rb, rc) = (router("a"), router("b"), router("c"));
        for (r, id) in [(&ra, "a"), (&rb, "b"), (&rc, "c")] {
            r.listen(&format!("mem!{tag}-{id}").parse().unwrap()).await.unwrap();
        }
        let cable = Cable::new(&format!("{tag}-cable"), &format!("{tag}-c")).await;
        ra.dial(format!("mem!{tag}-b").parse().unwrap());
        rb.dial(format!("mem!{tag}-c").parse().unwrap());
        ra.dial(format!("mem!{tag}-cable").parse().unwrap());
        rc.add_service(n("echo"), Arc::new(Echo));
        rc.add_service(n("once"), Arc::new(Once));
        rc.add_service(n("eofafter"), Arc::new(EofAfter));
        let held = Held::default();
        rc.add_service(n("held"), Arc::new(held.clone()));
        let t = Triangle { held, a: ra, b: rb, c: rc, cable, stop };
        t.until("the direct link both ways", |t| t.hops(&t.a, "c") == Some(1) && t.hops(&t.c, "a") == Some(1)).await;
        t.until("services known at a", |t| t.a.table().nearest("eofafter").is_some()).await;
        assert_eq!(t.hops(&t.b, "c"), Some(1));
        t
    }

    fn hops(&self, r: &Router, to: &str) -> Option<usize> {
        r.table().best(&n(to)).map(|rt| rt.hops())
    }

    /// Waits until `cond` holds, failing after 30 s of (paused) time.
    async fn until(&self, what: &str, cond: impl Fn(&Triangle) -> bool) {
        for _ in 0..600 {
            if cond(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }
}

/// The first message a conversation reads, or `None` after `limit`.
async fn first(conv: &mut Conv, limit: Duration) -> Option<Msg> {
    tokio::time::timeout(limit, conv.rx.recv()).await.ok().flatten()
}

impl Triangle {
    /// Cuts a-c so that a notices first and goes round by b while c, not
    /// knowing yet, still answers a over the direct link.
    async fn cut_a_first(&self) {
        self.cable.silence_to_dialer();
        self.until("a goes round by b", |t| t.hops(&t.a, "c") == Some(2)).await;
        self.cable.silence();
        assert!(self.c.term(&TermName::Net(n("a"))).is_some(), "c has not noticed the cut yet");
        assert_eq!(self.hops(&self.c, "a"), Some(1), "c answers a over the direct link");
    }

    /// Asks `service` of c from a, through the cut; returns the first
    /// thing a reads and how long it took.
    async fn ask_through_the_cut(&self, service: &str) -> (Option<Msg>, Duration) {
        let opened = Instant::now();
        let mut conv = self.a.open(a(&format!("/n/c/svc/{service}")), vec![]);
        conv.tx.send(Bytes::from("x")).await.unwrap();
        let got = first(&mut conv, Duration::from_secs(10)).await;
        (got, opened.elapsed())
    }
}

impl Triangle {
    /// Asks c's `held` service from a, once cut (a's request goes round by
    /// b), and waits until the service has the request, its answer held.
    async fn ask_held(&self) -> (Conv, Instant) {
        self.cut_a_first().await;
        let opened = Instant::now();
        let conv = self.a.open(a("/n/c/svc/held"), vec![]);
        conv.tx.send(Bytes::from("x")).await.unwrap();
        self.until("c's service has the request", |t| t.held.got.load(SeqCst)).await;
        (conv, opened)
    }

    /// c closes its link to a, as its keepalive does, without its link
    /// task having run yet.
    fn close_c_to_a(&self) {
        self.c.term(&TermName::Net(n("a"))).expect("c's link to a").hangup();
    }
}

/// Whether `got` is the `link lost` error, within c's detection time:
/// two periods of silence, checked every half period.
fn link_lost_in_time(got: &Option<Msg>, took: Duration) -> bool {
    matches!(got, Some(Msg::Error(e)) if e.starts_with(ns::error::ELINK)) && took <= Config::new(n("a")).period * 3
}

#[tokio::test(start_paused = true)]
async fn an_answer_lost_on_a_cut_link_fails_the_asker_that_never_crossed_it() {
    // a's request goes round by b, c's answer into the cut. Only c's end
    // crossed that link, but a's end is the one waiting.
    let t = Triangle::new("lostanswer").await;
    t.cut_a_first().await;
    let (got, took) = t.ask_through_the_cut("echo").await;
    assert!(link_lost_in_time(&got, took), "{got:?} after {took:?}");
    // c has noticed too, and a new conversation goes round both ways.
    t.until("c goes round by b", |t| t.hops(&t.c, "a") == Some(2)).await;
    let mut again = t.a.open(a("/n/c/svc/echo"), vec![]);
    again.tx.send(Bytes::from("y")).await.unwrap();
    assert_eq!(first(&mut again, Duration::from_secs(5)).await, Some(Msg::Data(Bytes::from("y"))));
}

#[tokio::test(start_paused = true)]
async fn a_conversation_that_ended_into_a_cut_fails_its_asker() {
    // c's answer, Eof and hangup all go into the cut: the conversation has
    // ended as far as c knows, yet a waits.
    let t = Triangle::new("endedcut").await;
    t.cut_a_first().await;
    let (got, took) = t.ask_through_the_cut("once").await;
    assert!(link_lost_in_time(&got, took), "{got:?} after {took:?}");
}

#[tokio::test(start_paused = true)]
async fn an_end_that_failed_says_no_eof_another_way() {
    // c's answer goes into the cut; when c notices, its end fails, and
    // the service, seeing its writer fail, says Eof. By the new route, an
    // Eof would end a's read cleanly with the answer missing.
    let t = Triangle::new("eofafter").await;
    t.cut_a_first().await;
    let (got, took) = t.ask_through_the_cut("eofafter").await;
    assert!(link_lost_in_time(&got, took), "{got:?} after {took:?}");
}

#[tokio::test(start_paused = true)]
async fn an_answer_sent_to_a_link_closing_but_not_yet_cleared_fails_the_asker() {
    // c has closed the direct link (it went silent) but its link task has
    // not yet failed what crossed it nor moved the routes: c's answer
    // finds the link closed. a's request went round by b, so neither end
    // crossed the link, and only the answer was lost; a must hear of it.
    let t = Triangle::new("closing").await;
    let (mut conv, opened) = t.ask_held().await;
    // In one step, so that the answer leaves before the link task runs.
    t.held.go.notify_one();
    t.close_c_to_a();
    let got = first(&mut conv, Duration::from_secs(10)).await;
    let took = opened.elapsed();
    assert!(link_lost_in_time(&got, took), "{got:?} after {took:?}");
}

#[tokio::test(start_paused = true)]
async fn an_error_sent_to_a_link_closing_but_not_yet_cleared_still_reaches_its_end() {
    // The same window, for what c's router says itself: an error for a's
    // end (as c's conversation table sends when c's end fails) that finds
    // the link closed must go round, not vanish: it is all a hears.
    let t = Triangle::new("closingerr").await;
    let (mut conv, opened) = t.ask_held().await;
    let asker = t.held.asker.lock().unwrap().clone().expect("the asker's end");
    t.close_c_to_a();
    let from = Addr::on(n("c"), ns::conv::reserved());
    let err = ns::Envelope::new(1 << 40, from, asker, ns::Kind::Error("told".into()), Bytes::new());
    t.c.forward(err).await;
    let got = first(&mut conv, Duration::from_secs(10)).await;
    let took = opened.elapsed();
    assert_eq!(got, Some(Msg::Error("told".into())), "after {took:?}");
    assert!(took <= Config::new(n("a")).period * 3, "{took:?}");
}
