//! Links accepted by `listen_secure` before and after authentication:
//! full-size frames once secured (or marked authenticated), a
//! handshake's size before, refused on the length prefix.

mod common;

use std::time::Duration;

use common::attack::{pinned_pair, socket_addr};
use common::{big_frame, opts, parse, pass, within};
use dial::{Link, Role, PREAUTH_FRAME_MAX};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

async fn accepted(net: &str) -> (dial::Listener, Link, Link) {
    let mut l = within("listen", dial::listen_secure(&parse(&format!("{net}!127.0.0.1!0")), &opts())).await.unwrap();
    let (ds, o) = (l.local_addr(), opts());
    let (c, s) = within("dial and accept", async { tokio::join!(dial::dial(&ds, &o), l.accept()) }).await;
    (l, c.unwrap(), s.unwrap())
}

async fn secured_frames_are_full_size(net: &str) {
    let ((a, ta), (b, tb)) = pinned_pair();
    let (_l, c, s) = accepted(net).await;
    let o = opts();
    let (c, s) = within("secure", async {
        tokio::join!(dial::secure(c, &o, &b, &tb, Role::Initiator), dial::secure(s, &o, &a, &ta, Role::Responder))
    })
    .await;
    let ((mut c, _), (mut s, _)) = (c.unwrap(), s.unwrap());
    pass(&mut c, &mut s, &[big_frame()]).await;
    pass(&mut s, &mut c, &[big_frame()]).await;
}

#[tokio::test]
async fn secured_tcp_link_carries_full_frames() {
    secured_frames_are_full_size("tcp").await;
}

#[tokio::test]
async fn secured_ws_link_carries_full_frames() {
    secured_frames_are_full_size("ws").await;
}

#[tokio::test]
async fn authenticated_lifts_the_limits_without_secure() {
    for net in ["tcp", "ws"] {
        let (_l, mut c, mut s) = accepted(net).await;
        s.authenticated();
        pass(&mut c, &mut s, &[big_frame()]).await;
    }
}

#[tokio::test]
async fn oversized_prefix_before_authentication_fails_at_once() {
    let (mut l, _c, _s) = accepted("tcp").await;
    let mut raw = tokio::net::TcpStream::connect(socket_addr(&l.local_addr())).await.unwrap();
    let mut server = within("accept", l.accept()).await.unwrap();
    // Under the link's own limit (2 MiB), over a handshake's; only the
    // prefix: the refusal must not wait for the body.
    raw.write_all(&1_000_000u32.to_be_bytes()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), server.rx.next()).await.expect("no answer in 5 s");
    let err = got.expect("a frame or an error").expect_err("a refusal");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(
        err.to_string(),
        format!("frame too large: 1000000 bytes before authenticating, limit {PREAUTH_FRAME_MAX}")
    );
}
