//! ws transport: the suite plus protocol misbehaviour by raw clients.

mod common;

use std::io;
use std::time::Duration;

use bytes::Bytes;
use common::{connected, dial_and_accept, exchange, opts, parse, suite, within};
use dial::{DialString, Host, Listener};
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

#[tokio::test]
async fn conversation() {
    suite(&parse("ws!127.0.0.1!0")).await;
}

async fn listener() -> (Listener, u16) {
    let listener = dial::listen(&parse("ws!127.0.0.1!0"), &opts()).await.unwrap();
    let DialString::Ws(Host::Name(ip), port) = listener.local_addr() else {
        panic!("not ws: {}", listener.local_addr());
    };
    assert_eq!(ip, "127.0.0.1");
    assert_ne!(port, 0);
    (listener, port)
}

/// A tungstenite client that can send what our sink would refuse.
async fn raw_client(port: u16, path: &str) -> WebSocketStream<TcpStream> {
    let config = WebSocketConfig::default().max_message_size(None).max_frame_size(None);
    let url = format!("ws://127.0.0.1:{port}{path}");
    within("raw client", async {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config)).await.unwrap();
        ws
    })
    .await
}

/// Dials the listener properly and checks the link works.
async fn still_accepting(listener: &mut Listener) {
    let ds = listener.local_addr();
    let (mut c, mut s) = dial_and_accept(listener, &ds).await;
    exchange(&mut c, &mut s).await;
}

#[tokio::test]
async fn descriptions() {
    let (listener, client, server) = connected(&parse("ws!127.0.0.1!0")).await;
    let DialString::Ws(_, port) = listener.local_addr() else { unreachable!() };
    assert_eq!(client.remote, format!("ws!127.0.0.1!{port}"));
    assert_eq!(server.local, client.remote);
    assert_eq!(server.remote, client.local);
}

#[tokio::test]
async fn text_message_is_an_error() {
    let (mut listener, port) = listener().await;
    let mut raw = raw_client(port, "/mesh").await;
    let mut link = within("accept", listener.accept()).await.unwrap();
    raw.send(Message::text("hello")).await.unwrap();
    let err = within("text", link.rx.next()).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(err.to_string(), "ws: text message on a binary link");
    assert!(within("after error", link.rx.next()).await.is_none());
}

#[tokio::test]
async fn oversized_message_is_an_error() {
    let (mut listener, port) = listener().await;
    let mut raw = raw_client(port, "/mesh").await;
    let mut link = within("accept", listener.accept()).await.unwrap();
    let limit = opts().max_frame;
    // Sending may fail once the server gives up; only the server's view matters.
    let _ = raw.send(Message::binary(vec![0u8; limit + 1])).await;
    let err = within("oversized", link.rx.next()).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(err.to_string(), format!("frame too large: {} bytes, limit {limit}", limit + 1));
    still_accepting(&mut listener).await;
}

#[tokio::test]
async fn ping_is_answered_and_skipped() {
    let (mut listener, port) = listener().await;
    let mut raw = raw_client(port, "/mesh").await;
    let mut link = within("accept", listener.accept()).await.unwrap();
    let reader = tokio::spawn(async move { link.rx.next().await });
    raw.send(Message::Ping(Bytes::from_static(b"are you there"))).await.unwrap();
    match within("pong", raw.next()).await {
        Some(Ok(Message::Pong(p))) => assert_eq!(p, Bytes::from_static(b"are you there")),
        other => panic!("expected a pong, got {other:?}"),
    }
    raw.send(Message::binary(Bytes::from_static(b"data"))).await.unwrap();
    let got = within("frame after ping", reader).await.unwrap();
    assert_eq!(got.unwrap().unwrap(), Bytes::from_static(b"data"));
}

#[tokio::test]
async fn close_message_ends_the_stream() {
    let (mut listener, port) = listener().await;
    let mut raw = raw_client(port, "/mesh").await;
    let mut link = within("accept", listener.accept()).await.unwrap();
    raw.send(Message::binary(Bytes::from_static(b"last"))).await.unwrap();
    raw.close(None).await.unwrap();
    assert_eq!(within("last", link.rx.next()).await.unwrap().unwrap(), Bytes::from_static(b"last"));
    assert!(within("end", link.rx.next()).await.is_none());
}

#[tokio::test]
async fn bad_handshakes_do_not_stop_or_stall_the_listener() {
    let (mut listener, port) = listener().await;

    // Not HTTP at all.
    let mut junk = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    junk.write_all(b"\x00\x01 this is not http\r\n\r\n").await.unwrap();
    // HTTP, but no upgrade.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    plain.write_all(b"GET /mesh HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    // Connects and says nothing: its handshake only times out after 10 s,
    // and must not hold up anyone else meanwhile.
    let _silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();

    let prompt = tokio::time::timeout(Duration::from_secs(5), still_accepting(&mut listener)).await;
    assert!(prompt.is_ok(), "a stalled handshake held up the listener");
}

#[tokio::test]
async fn wrong_path_is_refused() {
    let (mut listener, port) = listener().await;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let url = format!("ws://127.0.0.1:{port}/elsewhere");
    let err = within("handshake", tokio_tungstenite::client_async(url, tcp)).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    still_accepting(&mut listener).await;
}

#[tokio::test]
async fn star_listens_on_all_addresses() {
    let mut listener = dial::listen(&parse("ws!*!0"), &opts()).await.unwrap();
    let DialString::Ws(Host::Name(ip), port) = listener.local_addr() else {
        panic!("not ws: {}", listener.local_addr());
    };
    assert_eq!(ip, "0.0.0.0");
    let ds = parse(&format!("ws!127.0.0.1!{port}"));
    let (mut c, mut s) = dial_and_accept(&mut listener, &ds).await;
    exchange(&mut c, &mut s).await;
}

#[tokio::test]
async fn nobody_listening_is_refused() {
    let (listener, _) = listener().await;
    let ds = listener.local_addr();
    drop(listener);
    let err = within("dial", dial::dial(&ds, &opts())).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn dropping_the_listener_frees_the_port_at_once() {
    let (listener, port) = listener().await;
    let ds = listener.local_addr();
    drop(listener);
    let err = TcpStream::connect(("127.0.0.1", port)).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    // The same port can be listened on again straight away.
    let mut again = dial::listen(&ds, &opts()).await.unwrap();
    still_accepting(&mut again).await;
}

#[tokio::test]
async fn dial_completes_before_accept_is_called() {
    let (mut listener, _) = listener().await;
    let ds = listener.local_addr();
    // Like tcp's backlog: the handshake does not wait for `accept`.
    let mut client = within("dial", dial::dial(&ds, &opts())).await.unwrap();
    let mut server = within("accept", listener.accept()).await.unwrap();
    exchange(&mut client, &mut server).await;
}
