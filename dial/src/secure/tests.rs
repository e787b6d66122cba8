//! Tests of link security: keys and key files, handshakes over every
//! transport, refusals, tampering, a man in the middle, and throughput.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};

use super::*;
use crate::Frame;
use crate::{dial, listen, DialString, FrameSink, FrameStream};

// ---- keys ----

#[test]
fn fingerprint_is_sha256_prefix() {
    // SHA-256 of 32 zero bytes is 66687aadf862bd77...
    let k = PublicKey::from_bytes([0; 32]);
    assert_eq!(k.fingerprint(), "66687aadf862bd77");
}

#[test]
fn public_key_text_round_trip() {
    let k = Identity::generate().public();
    let text = k.to_string();
    assert_eq!(text.len(), 44);
    assert_eq!(text.parse::<PublicKey>().unwrap(), k);
    assert_eq!(format!(" {text}\n").parse::<PublicKey>().unwrap(), k);
    let short = "AAAA".parse::<PublicKey>().unwrap_err();
    assert_eq!(short.to_string(), "bad public key \"AAAA\": not 32 bytes (44 base64 characters)");
    assert!("not base64!".parse::<PublicKey>().is_err());
}

#[test]
fn generated_identities_differ_and_derive_their_public_key() {
    let a = Identity::generate();
    let b = Identity::generate();
    assert_ne!(a.public(), b.public());
    assert_eq!(Identity::from_private(*a.private_bytes()).public(), a.public());
    // Debug shows the public key only.
    let private = data_encoding::BASE64.encode(a.private_bytes());
    let dbg = format!("{a:?}");
    assert!(dbg.contains(&a.public().to_string()), "{dbg}");
    assert!(!dbg.contains(&private), "{dbg}");
}

#[test]
fn key_file_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.key");
    let id = Identity::generate();
    id.save(&path).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(&format!("\npublic {}\n", id.public())), "{text}");
    let back = Identity::load(&path).unwrap();
    assert_eq!(back.public(), id.public());
    assert_eq!(back.private_bytes(), id.private_bytes());

    // Never overwritten.
    let err = Identity::generate().save(&path).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(Identity::load(&path).unwrap().public(), id.public());
}

#[test]
fn key_file_open_to_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.key");
    Identity::generate().save(&path).unwrap();
    for mode in [0o644, 0o640, 0o604, 0o620] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let err = Identity::load(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        let msg = err.to_string();
        assert!(msg.contains(&format!("(mode {mode:04o})")), "{msg}");
        assert!(msg.contains(&format!("chmod 600 {}", path.display())), "{msg}");
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    Identity::load(&path).unwrap();
}

#[test]
fn bad_key_files_say_what_and_where_without_quoting_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = Identity::generate();
    let b = Identity::generate();
    let private = data_encoding::BASE64.encode(a.private_bytes());
    let cases = [
        (format!("private {private}\npublic {}\n", b.public()), "not the public key of the private line"),
        (format!("# c\n\nsecret {private}\n"), "line 3: unknown field \"secret\""),
        (format!("private {private}\nprivate {private}\n"), "line 2: second private line"),
        (format!("private {}\n", &private[..20]), "line 1: private key is not 32 bytes"),
        (format!("private {}!\n", &private[..43]), "line 1: private key is not base64"),
        ("public AAAA\n".to_owned(), "line 1: public key is not"),
        (format!("public {}\n", a.public()), "no private line"),
        ("private\n".to_owned(), "line 1: expected `private KEY`"),
        ("x".repeat(5000), "longer than 4096 bytes"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("{i}.key"));
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = Identity::load(&path).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{msg}");
        assert!(msg.starts_with(&format!("key file {}: ", path.display())), "{msg}");
        assert!(msg.contains(want), "{msg} should say {want}");
        assert!(!msg.contains(&private[..20]), "{msg} quotes the private key");
    }
    // A key without the public line is fine: it is derived.
    let path = dir.path().join("bare.key");
    fs::write(&path, format!("private {private}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(Identity::load(&path).unwrap().public(), a.public());
}

#[test]
fn a_key_belongs_to_one_machine() {
    let k1 = Identity::generate().public();
    let k2 = Identity::generate().public();
    let mut t = Trust::new();
    assert!(t.is_empty());
    t.pin("a", k1).unwrap();
    t.pin("a", k1).unwrap();
    t.pin("a", k2).unwrap(); // a second key for a, e.g. during a rollover
    let err = t.pin("b", k1).unwrap_err();
    assert_eq!(err.to_string(), format!("key {} is pinned for both a and b", k1.fingerprint()));
    assert_eq!(t.machine(&k1), Some("a"));
    assert_eq!(t.machine(&k2), Some("a"));
    assert_eq!(t.len(), 2);
}

// ---- handshakes ----

/// Two machines, a and b, each pinning the other.
struct Pair {
    a: Identity,
    b: Identity,
    a_trusts: Trust,
    b_trusts: Trust,
}

impl Pair {
    fn new() -> Pair {
        let a = Identity::generate();
        let b = Identity::generate();
        let mut a_trusts = Trust::new();
        a_trusts.pin("b", b.public()).unwrap();
        let mut b_trusts = Trust::new();
        b_trusts.pin("a", a.public()).unwrap();
        Pair { a, b, a_trusts, b_trusts }
    }
}

fn opts(max_frame: usize) -> LinkOptions {
    LinkOptions { max_frame }
}

const BIG: usize = 8 << 20;

fn unique_mem() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("mem!secure-test-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A connected pair of raw links: (dialer's, acceptor's).
async fn raw_pair(ds: &str, o: &LinkOptions) -> (Link, Link) {
    let ds: DialString = ds.parse().unwrap();
    let mut l = listen(&ds, o).await.unwrap();
    let client = dial(&l.local_addr(), o).await.unwrap();
    let server = l.accept().await.unwrap();
    (client, server)
}

/// Secures both ends at once: a dials (initiator), b accepts.
async fn secure_both(
    client: Link,
    server: Link,
    co: &LinkOptions,
    so: &LinkOptions,
    a: (&Identity, &Trust),
    b: (&Identity, &Trust),
) -> (Result<(Link, PeerInfo), SecureError>, Result<(Link, PeerInfo), SecureError>) {
    tokio::join!(secure(client, co, a.0, a.1, Role::Initiator), secure(server, so, b.0, b.1, Role::Responder),)
}

async fn secured_pair(ds: &str, p: &Pair) -> (Link, Link) {
    let o = opts(BIG);
    let (c, s) = raw_pair(ds, &o).await;
    let (c, s) = secure_both(c, s, &o, &o, (&p.a, &p.a_trusts), (&p.b, &p.b_trusts)).await;
    let (c, c_peer) = c.unwrap();
    let (s, s_peer) = s.unwrap();
    assert_eq!(c_peer, PeerInfo { machine: "b".into(), key: p.b.public() });
    assert_eq!(s_peer, PeerInfo { machine: "a".into(), key: p.a.public() });
    (c, s)
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>().into()
}

/// Frames of every interesting size, both ways at once.
async fn exchange(c: Link, s: Link) {
    let frames = |seed| {
        vec![
            Bytes::from_static(b"hello"),
            Bytes::new(),
            pattern(1, seed),
            pattern(65535, seed), // around a message boundary
            pattern(1 << 20, seed),
            pattern(4 << 20, seed),
            Bytes::from_static(b"bye"),
        ]
    };
    async fn send(mut tx: FrameSink, frames: Vec<Bytes>) -> FrameSink {
        for f in frames {
            tx.send(f.into()).await.unwrap();
        }
        tx
    }
    async fn recv(mut rx: FrameStream, frames: Vec<Bytes>) -> FrameStream {
        for want in frames {
            let got = rx.next().await.unwrap().unwrap();
            assert_eq!(got.len(), want.len());
            assert!(got == want, "frame of {} bytes differs", want.len());
        }
        rx
    }
    let (ctx, crx) = (c.tx, c.rx);
    let (stx, srx) = (s.tx, s.rx);
    let (_, _, _, _) =
        tokio::join!(send(ctx, frames(1)), recv(srx, frames(1)), send(stx, frames(2)), recv(crx, frames(2)),);
}

#[tokio::test]
async fn frames_cross_a_secured_mem_link() {
    let p = Pair::new();
    let (c, s) = secured_pair(&unique_mem(), &p).await;
    exchange(c, s).await;
}

#[tokio::test]
async fn frames_cross_a_secured_tcp_link() {
    let p = Pair::new();
    let (c, s) = secured_pair("tcp!127.0.0.1!0", &p).await;
    assert!(c.remote.starts_with("tcp!127.0.0.1!"));
    exchange(c, s).await;
}

#[tokio::test]
async fn frames_cross_a_secured_ws_link() {
    let p = Pair::new();
    let (c, s) = secured_pair("ws!127.0.0.1!0", &p).await;
    exchange(c, s).await;
}

#[tokio::test]
async fn a_sealed_body_crosses_in_clear_after_its_encrypted_head() {
    // A relay between the two sees the big sealed body as it is (it is
    // ciphertext of the layer above), and the head encrypted; small
    // bodies and ordinary frames are encrypted whole, and all arrive as
    // sent, interleaved.
    let p = Pair::new();
    let seen = Arc::new(Mutex::new(Vec::<Bytes>::new()));
    let log = seen.clone();
    let tamper: Tamper = Arc::new(move |_, f: Bytes| {
        log.lock().unwrap().push(f.clone());
        Some(f)
    });
    let (mut c, mut s) = secured_through(&p, tamper).await;
    let head = Bytes::from_static(b"HEAD-SECRET");
    let frames = vec![
        Frame::with_sealed_body(head.clone(), pattern(3 << 20, 7)),
        Frame::with_sealed_body(head.clone(), pattern(100, 8)),
        Frame::from(pattern(70_000, 9)),
        Frame::with_sealed_body(head.clone(), pattern(1024, 10)),
        Frame::with_sealed_body(Bytes::new(), pattern(5000, 11)),
    ];
    for f in frames.clone() {
        c.tx.send(f).await.unwrap();
    }
    for f in frames {
        let want = f.clone().into_bytes();
        let got = s.rx.next().await.unwrap().unwrap();
        assert!(got == want, "a frame of {} bytes differs", want.len());
        // A clear body comes up as it came off the connection, not
        // copied behind the head; the rest in one part.
        let clear = f.sealed && f.body.len() >= 1024;
        assert_eq!(got.body.len(), if clear { f.body.len() } else { 0 }, "frame of {} bytes", want.len());
    }
    let seen = seen.lock().unwrap();
    let clear = |b: &Bytes| seen.iter().any(|f| f == b);
    assert!(clear(&pattern(3 << 20, 7)), "the big sealed body went as it is");
    assert!(clear(&pattern(1024, 10)), "from 1 KiB on");
    assert!(!clear(&pattern(100, 8)), "a small one rides encrypted");
    assert!(!seen.iter().any(|f| f.windows(head.len()).any(|w| w == &head[..])), "heads are encrypted");
}

#[tokio::test]
async fn a_clear_body_of_the_wrong_length_breaks_the_link() {
    let p = Pair::new();
    let tamper: Tamper = Arc::new(move |_, f: Bytes| if f.len() == 4096 { Some(f.slice(1..)) } else { Some(f) });
    let (mut c, mut s) = secured_through(&p, tamper).await;
    c.tx.send(Frame::with_sealed_body(Bytes::from_static(b"h"), pattern(4096, 1))).await.unwrap();
    let err = s.rx.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("clear body of 4095 bytes, want 4096"), "{err}");
}

#[tokio::test]
async fn close_ends_the_peers_stream() {
    let p = Pair::new();
    let (mut c, mut s) = secured_pair("tcp!127.0.0.1!0", &p).await;
    c.tx.send(Bytes::from_static(b"last").into()).await.unwrap();
    c.tx.close().await.unwrap();
    assert_eq!(s.rx.next().await.unwrap().unwrap(), Bytes::from_static(b"last"));
    assert!(s.rx.next().await.is_none());
    // TCP: a half-close; the other way still works.
    s.tx.send(Bytes::from_static(b"reply").into()).await.unwrap();
    assert_eq!(c.rx.next().await.unwrap().unwrap(), Bytes::from_static(b"reply"));
}

#[tokio::test]
async fn small_links_split_frames_into_small_messages() {
    // max_frame 300: every message is at most 300 bytes on the wire, so a
    // 300-byte frame takes two.
    let p = Pair::new();
    let o = opts(300);
    let (c, s) = raw_pair(&unique_mem(), &o).await;
    let (c, s) = secure_both(c, s, &o, &o, (&p.a, &p.a_trusts), (&p.b, &p.b_trusts)).await;
    let (mut c, _) = c.unwrap();
    let (mut s, _) = s.unwrap();
    for len in [0, 1, 279, 280, 281, 300] {
        c.tx.send(Frame::from(pattern(len, 3))).await.unwrap();
        assert_eq!(s.rx.next().await.unwrap().unwrap(), pattern(len, 3));
    }
    let err = c.tx.send(Frame::from(pattern(301, 3))).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(err.to_string(), "frame too large: 301 bytes, limit 300");
}

#[tokio::test]
async fn frame_over_the_receivers_limit_is_refused() {
    // The dialer allows 4 KiB frames, the acceptor 300 bytes: messages fit
    // both (the hellos agree on 300), the frame does not.
    let p = Pair::new();
    let (co, so) = (opts(4096), opts(300));
    let (c, s) = raw_pair(&unique_mem(), &co).await;
    let (c, s) = secure_both(c, s, &co, &so, (&p.a, &p.a_trusts), (&p.b, &p.b_trusts)).await;
    let (mut c, _) = c.unwrap();
    let (mut s, _) = s.unwrap();
    c.tx.send(Frame::from(pattern(1000, 0))).await.unwrap();
    let err = s.rx.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(err.to_string(), "frame too large: 1000 bytes, limit 300");
    assert!(s.rx.next().await.is_none());
}

#[tokio::test]
async fn tiny_max_frame_cannot_be_secured() {
    let p = Pair::new();
    let o = opts(100);
    let (c, _s) = raw_pair(&unique_mem(), &o).await;
    let err = secure(c, &o, &p.a, &p.a_trusts, Role::Initiator).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("max_frame 100 is too small"), "{err}");
}

#[tokio::test]
async fn responder_refuses_an_unknown_key_and_says_so() {
    let p = Pair::new();
    let o = opts(BIG);
    let (c, s) = raw_pair("tcp!127.0.0.1!0", &o).await;
    let remote = s.remote.clone();
    let stranger = Trust::new(); // b pins nobody
    let (c, s) = secure_both(c, s, &o, &o, (&p.a, &p.a_trusts), (&p.b, &stranger)).await;

    let err = s.unwrap_err();
    assert!(matches!(&err, SecureError::UnknownKey { key, .. } if *key == p.a.public()));
    assert_eq!(err.to_string(), format!("unknown key {} from {remote}", p.a.public().fingerprint()));
    assert_eq!(err.remote(), remote);
    assert_eq!(io::Error::from(err).kind(), io::ErrorKind::PermissionDenied);

    let err = c.unwrap_err();
    assert!(matches!(&err, SecureError::Refused { ours, .. } if *ours == p.a.public()));
    assert!(err.to_string().ends_with(&format!("refused our key {}", p.a.public().fingerprint())), "{err}");
}

#[tokio::test]
async fn initiator_refuses_an_unknown_key_without_showing_its_own() {
    let p = Pair::new();
    let o = opts(BIG);
    let (c, s) = raw_pair(&unique_mem(), &o).await;
    let remote = c.remote.clone();
    let stranger = Trust::new(); // a pins nobody
    let (c, s) = secure_both(c, s, &o, &o, (&p.a, &stranger), (&p.b, &p.b_trusts)).await;

    let err = c.unwrap_err();
    assert!(matches!(&err, SecureError::UnknownKey { key, .. } if *key == p.b.public()));
    assert_eq!(err.to_string(), format!("unknown key {} from {remote}", p.b.public().fingerprint()));
    // b never got a's key: the link closed after message 2.
    let err = s.unwrap_err();
    assert!(matches!(err, SecureError::Closed { .. }), "{err}");
}

#[tokio::test]
async fn a_key_pinned_for_another_machine_is_reported_as_that_machine() {
    // The router compares PeerInfo::machine with the Hello: here a's key
    // is pinned as "c", and that is what b is told.
    let p = Pair::new();
    let o = opts(BIG);
    let (c, s) = raw_pair(&unique_mem(), &o).await;
    let mut b_trusts = Trust::new();
    b_trusts.pin("c", p.a.public()).unwrap();
    let (c, s) = secure_both(c, s, &o, &o, (&p.a, &p.a_trusts), (&p.b, &b_trusts)).await;
    assert_eq!(c.unwrap().1.machine, "b");
    assert_eq!(s.unwrap().1.machine, "c");
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_times_out() {
    let p = Pair::new();
    let o = opts(BIG);
    let (_c, s) = raw_pair(&unique_mem(), &o).await;
    let t0 = tokio::time::Instant::now();
    let err = secure(s, &o, &p.b, &p.b_trusts, Role::Responder).await.unwrap_err();
    assert!(matches!(err, SecureError::Timeout { .. }), "{err}");
    assert!(err.to_string().ends_with("timed out after 10 s"), "{err}");
    assert_eq!(t0.elapsed(), HANDSHAKE_TIMEOUT);
}

#[tokio::test]
async fn a_peer_that_does_not_speak_noise_is_refused() {
    let p = Pair::new();
    let o = opts(BIG);
    let (mut c, s) = raw_pair(&unique_mem(), &o).await;
    c.tx.send(Frame::from(Bytes::from_static(b"HELLO I AM A ROUTER"))).await.unwrap();
    let err = secure(s, &o, &p.b, &p.b_trusts, Role::Responder).await.unwrap_err();
    assert!(matches!(err, SecureError::BadMessage { .. }), "{err}");
    assert_eq!(io::Error::from(err).kind(), io::ErrorKind::InvalidData);

    // And an initiator that gets garbage for message 2.
    let (c, mut s) = raw_pair(&unique_mem(), &o).await;
    let garbage = async {
        let _msg1 = s.rx.next().await;
        s.tx.send(Frame::from(pattern(101, 0))).await.unwrap();
        s
    };
    let (res, _s) = tokio::join!(secure(c, &o, &p.a, &p.a_trusts, Role::Initiator), garbage);
    let err = res.unwrap_err();
    assert!(matches!(err, SecureError::BadMessage { .. }), "{err}");
}

// ---- relays: tampering, eavesdropping, a man in the middle ----

/// What a relay saw and may change: `tamper(n, frame)` gets the n-th
/// frame from the dialer to the acceptor (0 and 1 are handshake
/// messages 1 and 3) and returns what to pass on, if anything.
type Tamper = Arc<dyn Fn(usize, Bytes) -> Option<Bytes> + Send + Sync>;

/// Forwards frames from `rx` to `tx` until `rx` ends, then closes `tx`.
async fn forward(mut rx: FrameStream, mut tx: FrameSink, tamper: Option<Tamper>) {
    let mut n = 0;
    while let Some(Ok(f)) = rx.next().await {
        let f = f.into_bytes();
        let f = match &tamper {
            Some(t) => t(n, f),
            None => Some(f),
        };
        n += 1;
        let Some(f) = f else { continue };
        if tx.send(f.into()).await.is_err() {
            break;
        }
    }
    let _ = tx.close().await;
}

/// A secured pair, a dialing b through a [`relay`] that applies `tamper`.
async fn secured_through(p: &Pair, tamper: Tamper) -> (Link, Link) {
    let o = opts(BIG);
    let mut server_l = listen(&"tcp!127.0.0.1!0".parse().unwrap(), &o).await.unwrap();
    let addr = relay(server_l.local_addr(), tamper).await;
    let c = dial(&addr, &o).await.unwrap();
    let s = server_l.accept().await.unwrap();
    let (c, s) = secure_both(c, s, &o, &o, (&p.a, &p.a_trusts), (&p.b, &p.b_trusts)).await;
    (c.unwrap().0, s.unwrap().0)
}

/// A raw tcp relay in front of `target`; returns its address.
async fn relay(target: DialString, tamper: Tamper) -> DialString {
    let o = opts(BIG);
    let mut l = listen(&"tcp!127.0.0.1!0".parse().unwrap(), &o).await.unwrap();
    let addr = l.local_addr();
    tokio::spawn(async move {
        let client = l.accept().await.unwrap();
        let server = dial(&target, &o).await.unwrap();
        tokio::join!(forward(client.rx, server.tx, Some(tamper)), forward(server.rx, client.tx, None),);
    });
    addr
}

#[tokio::test]
async fn a_relay_sees_no_plaintext_and_cannot_tamper() {
    let p = Pair::new();
    let secret = Bytes::from_static(b"the launch codes are 0000");
    let seen = Arc::new(Mutex::new(Vec::<Bytes>::new()));
    let log = seen.clone();
    let tamper: Tamper = Arc::new(move |n, f: Bytes| {
        log.lock().unwrap().push(f.clone());
        if n == 3 {
            // Frame 2 is the first secured frame; flip a byte of the second.
            let mut v = f.to_vec();
            v[10] ^= 0x01;
            return Some(v.into());
        }
        Some(f)
    });
    let (mut c, mut s) = secured_through(&p, tamper).await;

    c.tx.send(secret.clone().into()).await.unwrap();
    assert_eq!(s.rx.next().await.unwrap().unwrap(), secret);
    let wire = seen.lock().unwrap().clone();
    assert_eq!(wire.len(), 3);
    for f in &wire {
        assert!(!f.windows(secret.len()).any(|w| w == secret), "plaintext on the wire");
    }

    c.tx.send(secret.clone().into()).await.unwrap();
    let err = s.rx.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("failed to decrypt"), "{err}");
    // The link is done: the stream ends, the sink refuses.
    assert!(s.rx.next().await.is_none());
    let err = s.tx.send(Bytes::from_static(b"x").into()).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    // Dropping it closes the connection; the dialer sees the end.
    drop(s);
    let end = tokio::time::timeout(Duration::from_secs(5), c.rx.next()).await.unwrap();
    assert!(end.is_none_or(|r| r.is_err()));
}

#[tokio::test]
async fn a_relay_cannot_drop_or_replay_messages() {
    let p = Pair::new();
    let o = opts(BIG);
    for trick in ["drop", "replay"] {
        let mut server_l = listen(&"tcp!127.0.0.1!0".parse().unwrap(), &o).await.unwrap();
        let first = Arc::new(Mutex::new(None::<Bytes>));
        let tamper: Tamper = Arc::new(move |n, f: Bytes| match (trick, n) {
            (_, 2) => {
                *first.lock().unwrap() = Some(f.clone());
                Some(f)
            }
            ("drop", 3) => None,
            ("replay", 3) => first.lock().unwrap().clone(),
            _ => Some(f),
        });
        let addr = relay(server_l.local_addr(), tamper).await;
        let c = dial(&addr, &o).await.unwrap();
        let s = server_l.accept().await.unwrap();
        let (c, s) = secure_both(c, s, &o, &o, (&p.a, &p.a_trusts), (&p.b, &p.b_trusts)).await;
        let (mut c, _) = c.unwrap();
        let (mut s, _) = s.unwrap();
        for i in 0..3u8 {
            c.tx.send(Frame::from(Bytes::from(vec![i; 10]))).await.unwrap();
        }
        assert_eq!(s.rx.next().await.unwrap().unwrap(), Bytes::from(vec![0u8; 10]));
        let err = s.rx.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{trick}: {err}");
        assert!(s.rx.next().await.is_none(), "{trick}");
    }
}

#[tokio::test]
async fn a_man_in_the_middle_with_his_own_key_is_refused_both_ways() {
    let p = Pair::new();
    let o = opts(BIG);
    let m = Identity::generate();
    // m accepts anyone it knows and pretends to be whatever is asked.
    let mut m_trusts = Trust::new();
    m_trusts.pin("a", p.a.public()).unwrap();
    m_trusts.pin("b", p.b.public()).unwrap();

    // a dials m, thinking it is b.
    let (c, mm) = raw_pair("tcp!127.0.0.1!0", &o).await;
    let (c, mm) = secure_both(c, mm, &o, &o, (&p.a, &p.a_trusts), (&m, &m_trusts)).await;
    let err = c.unwrap_err();
    assert!(matches!(&err, SecureError::UnknownKey { key, .. } if *key == m.public()));
    assert!(err.to_string().contains(&m.public().fingerprint()));
    assert!(matches!(mm.unwrap_err(), SecureError::Closed { .. }));

    // m dials b, pretending to be a.
    let (mm, s) = raw_pair("ws!127.0.0.1!0", &o).await;
    let (mm, s) = secure_both(mm, s, &o, &o, (&m, &m_trusts), (&p.b, &p.b_trusts)).await;
    let err = s.unwrap_err();
    assert!(matches!(&err, SecureError::UnknownKey { key, .. } if *key == m.public()));
    assert!(err.to_string().contains(&m.public().fingerprint()));
    assert!(matches!(mm.unwrap_err(), SecureError::Refused { .. }));
}

// ---- throughput ----

/// MB/s of `n` frames of `size` bytes from `c` to `s`.
async fn rate(mut c: Link, mut s: Link, size: usize, n: usize) -> f64 {
    let frame = pattern(size, 9);
    let t0 = Instant::now();
    let send = async move {
        for _ in 0..n {
            c.tx.feed(frame.clone().into()).await.unwrap();
        }
        c.tx.flush().await.unwrap();
        c
    };
    let recv = async move {
        for _ in 0..n {
            let f = s.rx.next().await.unwrap().unwrap();
            assert_eq!(f.len(), size);
        }
    };
    let (_c, ()) = tokio::join!(send, recv);
    (size * n) as f64 / t0.elapsed().as_secs_f64() / 1e6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_of_encrypted_and_plain_tcp() {
    let p = Pair::new();
    let o = opts(BIG);
    // Debug builds encrypt slowly; keep the test short there.
    let n = if cfg!(debug_assertions) { 32 } else { 512 };
    let (c, s) = raw_pair("tcp!127.0.0.1!0", &o).await;
    let plain = rate(c, s, 1 << 20, n).await;
    let (c, s) = secured_pair("tcp!127.0.0.1!0", &p).await;
    let secured = rate(c, s, 1 << 20, n).await;
    eprintln!(
        "tcp loopback, {n} frames of 1 MiB: plain {plain:.0} MB/s, encrypted {secured:.0} MB/s ({:.0}%)",
        100.0 * secured / plain
    );
    assert!(secured > 5.0, "encrypted throughput {secured:.1} MB/s");
}
