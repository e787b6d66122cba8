//! End to end (issue 18), on the in-process transport with paused time:
//! four routers that pin each other's keys, a, d — b — c, where the link
//! from b to c runs through a [`Wire`] that sees every frame b sends to c
//! and can change it, as a compromised relay would. What c receives from
//! a is sealed by a's router for c's: the relay can read no payload, and
//! whatever it changes or forges is refused at c, told in c's `ctl` with
//! the relay's name, and fails the conversation with a clear error.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use ns::config::Security;
use ns::envelope::{Envelope, Kind};
use ns::probe::Echo;
use ns::{Addr, Config, Msg, Name, Router};
use tokio_util::sync::CancellationToken;

fn n(s: &str) -> Name {
    s.parse().unwrap()
}

/// What the wire does to an envelope from b to c.
type Change = Arc<Mutex<Option<Box<dyn Fn(&mut Envelope) + Send>>>>;

/// Carries frames between b (dialing `mem!FROM`) and c (at `mem!TO`),
/// recording b's and changing them with the change in force.
struct Wire {
    seen: Arc<Mutex<Vec<Bytes>>>,
    change: Change,
    /// Handshake messages still to be dropped.
    drop_pairs: Arc<std::sync::atomic::AtomicUsize>,
    stop: CancellationToken,
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Wire {
    async fn new(from: &str, to: &str) -> Wire {
        let opts = ns::link::link_options();
        let mut l = dial::listen(&format!("mem!{from}").parse().unwrap(), &opts).await.unwrap();
        let to: dial::DialString = format!("mem!{to}").parse().unwrap();
        let wire = Wire {
            seen: Default::default(),
            change: Default::default(),
            drop_pairs: Default::default(),
            stop: CancellationToken::new(),
        };
        let (seen, change, stop) = (wire.seen.clone(), wire.change.clone(), wire.stop.clone());
        let drop_pairs = wire.drop_pairs.clone();
        tokio::spawn(async move {
            loop {
                let mut near = tokio::select! {
                    _ = stop.cancelled() => return,
                    l = l.accept() => l.unwrap(),
                };
                // Nobody at c (it restarts): b tries again.
                let Ok(mut far) = dial::dial(&to, &opts).await else { continue };
                let (seen, change, stop2, drop_pairs) =
                    (seen.clone(), change.clone(), stop.clone(), drop_pairs.clone());
                tokio::spawn(async move {
                    while let Some(Ok(f)) = tokio::select! { _ = stop2.cancelled() => None, f = near.rx.next() => f } {
                        let f = f.into_bytes();
                        seen.lock().unwrap().push(f.clone());
                        let pair = Envelope::decode(f.clone()).is_ok_and(|e| matches!(e.kind, Kind::Pair(_)));
                        let dropping = |n: usize| (n > 0).then(|| n - 1);
                        if pair && drop_pairs.fetch_update(SeqCst, SeqCst, dropping).is_ok() {
                            continue;
                        }
                        let f = match (change.lock().unwrap().as_ref(), Envelope::decode(f.clone())) {
                            (Some(ch), Ok(mut env)) if env.kind == Kind::Data => {
                                ch(&mut env);
                                env.encode()
                            }
                            _ => f,
                        };
                        if far.tx.send(f.into()).await.is_err() {
                            return;
                        }
                    }
                });
                let stop3 = stop.clone();
                tokio::spawn(async move {
                    while let Some(Ok(f)) = tokio::select! { _ = stop3.cancelled() => None, f = far.rx.next() => f } {
                        let f = f.into_bytes();
                        if near.tx.send(f.into()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        wire
    }

    fn set(&self, f: impl Fn(&mut Envelope) + Send + 'static) {
        *self.change.lock().unwrap() = Some(Box::new(f));
    }
}

struct Mesh {
    a: Router,
    b: Router,
    c: Router,
    d: Router,
    wire: Wire,
    stop: CancellationToken,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Routers `ids` that each pin every other's key.
fn routers(ids: &[&str], stop: &CancellationToken) -> Vec<Router> {
    let keys: Vec<dial::Identity> = ids.iter().map(|_| dial::Identity::generate()).collect();
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let mut trust = dial::Trust::new();
            for (j, other) in ids.iter().enumerate().filter(|(j, _)| *j != i) {
                trust.pin(*other, keys[j].public()).unwrap();
            }
            let security = Some(Arc::new(Security { identity: keys[i].clone(), trust }));
            Router::new(Config { security, ..Config::new(n(id)) }, stop.child_token())
        })
        .collect()
}

impl Mesh {
    async fn new(tag: &str) -> Mesh {
        Mesh::dropping(tag, 0).await
    }

    /// The mesh, with the first `pairs` handshake messages from b to c
    /// lost.
    async fn dropping(tag: &str, pairs: usize) -> Mesh {
        let stop = CancellationToken::new();
        let mut rs = routers(&["a", "b", "c", "d"], &stop).into_iter();
        let (a, b, c, d) = (rs.next().unwrap(), rs.next().unwrap(), rs.next().unwrap(), rs.next().unwrap());
        b.listen(&format!("mem!{tag}-b").parse().unwrap()).await.unwrap();
        c.listen(&format!("mem!{tag}-c").parse().unwrap()).await.unwrap();
        let wire = Wire::new(&format!("{tag}-wire"), &format!("{tag}-c")).await;
        wire.drop_pairs.store(pairs, SeqCst);
        a.dial(format!("mem!{tag}-b").parse().unwrap());
        d.dial(format!("mem!{tag}-b").parse().unwrap());
        b.dial(format!("mem!{tag}-wire").parse().unwrap());
        c.add_service(n("echo"), Arc::new(Echo));
        let m = Mesh { a, b, c, d, wire, stop };
        for _ in 0..600 {
            if m.a.table().nearest("echo").is_some() && m.d.table().nearest("echo").is_some() {
                let c_knows = m.c.table().best(&n("a")).is_some() && m.c.table().best(&n("d")).is_some();
                if c_knows {
                    return m;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("mesh did not converge");
    }
}

/// One message to c's echo from `r` for `user`: the answer or the error.
async fn ask(r: &Router, user: &str, what: &'static [u8]) -> Result<Bytes, String> {
    let mut conv = r.open_as(Addr::parse("/n/c/svc/echo").unwrap(), vec![], Some(Arc::from(user)));
    conv.tx.send(Bytes::from_static(what)).await.map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(20), conv.rx.recv()).await {
        Ok(Some(Msg::Data(b))) => Ok(b),
        Ok(Some(Msg::Error(e))) => Err(e),
        other => Err(format!("{other:?}")),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(start_paused = true)]
async fn the_relay_carries_only_ciphertext_and_opens_nothing() {
    let m = Mesh::new("e2e-clear").await;
    const MARKER: &[u8] = b"MARKER-7f3c-not-for-relays";
    for _ in 0..3 {
        assert_eq!(ask(&m.a, "alice", MARKER).await.as_deref(), Ok(MARKER));
    }
    let seen = m.wire.seen.lock().unwrap().clone();
    assert!(seen.len() >= 6, "the wire saw the traffic ({} frames)", seen.len());
    for f in &seen {
        assert!(!contains(f, MARKER), "a frame from the relay holds the marker in clear");
    }
    let sealed = seen.iter().filter_map(|f| Envelope::decode(f.clone()).ok()).filter(|e| e.seal.is_some()).count();
    assert!(sealed >= 3, "data crossed sealed ({sealed})");
    let b = m.b.pairs().unwrap();
    assert_eq!(b.stats.opened.load(std::sync::atomic::Ordering::Relaxed), 0, "the relay opened nothing");
    let status = m.c.pairs().unwrap().status();
    assert!(status.contains("failed 0"), "{status}");
}

#[tokio::test(start_paused = true)]
async fn a_flipped_byte_is_refused_at_the_destination_which_names_the_relay() {
    let m = Mesh::new("e2e-flip").await;
    assert!(ask(&m.a, "alice", b"before").await.is_ok());
    m.wire.set(|env| {
        let mut d = env.data.to_vec();
        if let Some(x) = d.first_mut() {
            *x ^= 0x40;
        }
        env.data = d.into();
    });
    let e = ask(&m.a, "alice", b"tampered").await.unwrap_err();
    assert!(e.starts_with("end-to-end check failed: at c: changed on the way"), "{e}");
    assert!(e.contains("passed on by b"), "{e}");
    assert_eq!(ns::error::errno(&e), libc::EBADMSG);
    let ctl = ns::text::ctl_text(&m.c);
    assert!(ctl.contains("refused from a via b: data /n/c/svc/echo: changed on the way"), "{ctl}");
    // Once the relay behaves, the same session goes on.
    *m.wire.change.lock().unwrap() = None;
    assert_eq!(ask(&m.a, "alice", b"after").await.as_deref(), Ok(&b"after"[..]));
}

#[tokio::test(start_paused = true)]
async fn a_relay_cannot_speak_for_another_user_or_another_machine() {
    let m = Mesh::new("e2e-forge").await;
    assert!(ask(&m.a, "alice", b"x").await.is_ok());
    assert!(ask(&m.d, "dave", b"x").await.is_ok());
    // Another user of the same machine.
    m.wire.set(|env| env.user = Some(Arc::from("root")));
    let e = ask(&m.a, "alice", b"as root").await.unwrap_err();
    assert!(e.starts_with("end-to-end check failed: at c"), "{e}");
    // Another machine the relay routes to: d, with a path that says so,
    // so that no neighbour check can tell.
    m.wire.set(|env| {
        if env.src.machine.as_ref().is_some_and(|s| s.as_str() == "a") {
            env.src.machine = Some(n("d"));
            env.via[0] = n("d");
        }
    });
    let conv = m.a.open_as(Addr::parse("/n/c/svc/echo").unwrap(), vec![], Some(Arc::from("alice")));
    conv.tx.send(Bytes::from_static(b"as d")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ctl = ns::text::ctl_text(&m.c);
    assert!(ctl.contains("refused from d via b: data /n/c/svc/echo"), "{ctl}");
    assert!(ctl.contains("refused from a via b"), "{ctl}");
    let refused = m.c.pairs().unwrap().stats.refused.load(std::sync::atomic::Ordering::Relaxed);
    assert!(refused >= 2, "{refused}");
}

#[tokio::test(start_paused = true)]
async fn a_replayed_message_is_refused() {
    let m = Mesh::new("e2e-replay").await;
    assert!(ask(&m.a, "alice", b"x").await.is_ok());
    // The wire keeps the first sealed data envelope and puts it in place
    // of every later one.
    let kept: Arc<Mutex<Option<Envelope>>> = Default::default();
    m.wire.set(move |env| {
        let mut k = kept.lock().unwrap();
        match &*k {
            Some(old) if env.seal.is_some() => {
                env.seal = old.seal;
                env.data = old.data.clone();
            }
            _ => *k = Some(env.clone()),
        }
    });
    assert!(ask(&m.a, "alice", b"first").await.is_ok());
    let e = ask(&m.a, "alice", b"second").await.unwrap_err();
    assert!(e.starts_with("end-to-end check failed: at c"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_restarted_machine_makes_a_new_session_and_conversations_go_on() {
    let m = Mesh::new("e2e-restart").await;
    assert!(ask(&m.a, "alice", b"x").await.is_ok());
    // A new run of c's router, with its key: it has none of the old
    // sessions.
    let sec = m.c.config().security.clone();
    m.c.shutdown();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c2 = Router::new(Config { security: sec, ..Config::new(n("c")) }, m.stop.child_token());
    c2.listen(&"mem!e2e-restart-c".parse().unwrap()).await.unwrap();
    c2.add_service(n("echo"), Arc::new(Echo));
    for _ in 0..600 {
        if c2.table().best(&n("a")).is_some() && m.a.table().nearest("echo").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut answers = vec![];
    for _ in 0..3 {
        answers.push(ask(&m.a, "alice", b"again").await.map(|b| b.len()));
    }
    assert_eq!(answers, vec![Ok(5), Ok(5), Ok(5)]);
    let status = c2.pairs().unwrap().status();
    assert!(status.contains("failed 0"), "{status}");
}

#[tokio::test(start_paused = true)]
async fn lost_handshake_messages_are_sent_again() {
    // Every handshake message from b to c lost at first: a's greeting of
    // c, and a's answer to c's greeting of a, and a few more.
    let m = Mesh::dropping("e2e-lost", 4).await;
    let t0 = tokio::time::Instant::now();
    assert_eq!(ask(&m.a, "alice", b"x").await.as_deref(), Ok(&b"x"[..]));
    assert!(t0.elapsed() < Duration::from_secs(4), "took {:?}", t0.elapsed());
    assert_eq!(m.wire.drop_pairs.load(SeqCst), 0, "the wire dropped what it was told to");
}
