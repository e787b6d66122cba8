//! tcp transport: the suite plus addressing and hostile peers.

mod common;

use std::io;

use common::{connected, dial_and_accept, exchange, opts, parse, suite, within};
use dial::{DialString, Host};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn conversation() {
    suite(&parse("tcp!127.0.0.1!0")).await;
}

#[tokio::test]
async fn ephemeral_port_and_descriptions() {
    let (listener, client, server) = connected(&parse("tcp!127.0.0.1!0")).await;
    let DialString::Tcp(Host::Name(ip), port) = listener.local_addr() else {
        panic!("not tcp: {}", listener.local_addr());
    };
    assert_eq!(ip, "127.0.0.1");
    assert_ne!(port, 0);
    assert_eq!(client.remote, format!("tcp!127.0.0.1!{port}"));
    assert_eq!(server.local, client.remote);
    assert_eq!(server.remote, client.local);
    assert!(client.uid.is_none() && server.uid.is_none());
}

#[tokio::test]
async fn star_listens_on_all_addresses() {
    let listener = dial::listen(&parse("tcp!*!0"), &opts()).await.unwrap();
    let DialString::Tcp(Host::Name(ip), port) = listener.local_addr() else {
        panic!("not tcp: {}", listener.local_addr());
    };
    assert_eq!(ip, "0.0.0.0");
    let mut listener = listener;
    let ds = parse(&format!("tcp!127.0.0.1!{port}"));
    let (mut c, mut s) = dial_and_accept(&mut listener, &ds).await;
    exchange(&mut c, &mut s).await;
}

#[tokio::test]
async fn host_names_resolve() {
    let mut listener = dial::listen(&parse("tcp!127.0.0.1!0"), &opts()).await.unwrap();
    let DialString::Tcp(_, port) = listener.local_addr() else { unreachable!() };
    // localhost may resolve to ::1 first; the dialer must move on to 127.0.0.1.
    let ds = parse(&format!("tcp!localhost!{port}"));
    let (mut c, mut s) = dial_and_accept(&mut listener, &ds).await;
    exchange(&mut c, &mut s).await;
}

#[tokio::test]
async fn dialing_star_is_refused() {
    let err = dial::dial(&parse("tcp!*!1"), &opts()).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(err.to_string(), "tcp!*!1: cannot dial '*' (all addresses); it is only for listening");
}

#[tokio::test]
async fn nobody_listening_is_refused() {
    let listener = dial::listen(&parse("tcp!127.0.0.1!0"), &opts()).await.unwrap();
    let ds = listener.local_addr();
    drop(listener);
    let err = within("dial", dial::dial(&ds, &opts())).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    assert!(err.to_string().starts_with(&format!("{ds}: connect 127.0.0.1:")), "{err}");
}

#[tokio::test]
async fn port_in_use() {
    let listener = dial::listen(&parse("tcp!127.0.0.1!0"), &opts()).await.unwrap();
    let err = dial::listen(&listener.local_addr(), &opts()).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
}

#[tokio::test]
async fn oversized_length_prefix_fails_that_link_only() {
    let mut listener = dial::listen(&parse("tcp!127.0.0.1!0"), &opts()).await.unwrap();
    let DialString::Tcp(_, port) = listener.local_addr() else { unreachable!() };
    let limit = opts().max_frame;

    // A raw client announces a frame one byte over the limit and sends no body.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut victim = within("accept raw", listener.accept()).await.unwrap();
    raw.write_all(&((limit + 1) as u32).to_be_bytes()).await.unwrap();
    let err = within("oversized", victim.rx.next()).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(err.to_string(), format!("frame too large: {} bytes, limit {limit}", limit + 1));

    // The listener goes on accepting.
    let ds = listener.local_addr();
    let (mut c, mut s) = dial_and_accept(&mut listener, &ds).await;
    exchange(&mut c, &mut s).await;
}
