//! mem transport, under tokio's paused clock to prove it needs no timers.

mod common;

use std::io;

use common::{connected, opts, parse, suite, within};
use futures::StreamExt;

#[tokio::test(start_paused = true)]
async fn conversation() {
    suite(&parse("mem!conversation")).await;
}

#[tokio::test(start_paused = true)]
async fn link_descriptions() {
    let (listener, client, server) = connected(&parse("mem!described")).await;
    assert_eq!(listener.local_addr().to_string(), "mem!described");
    assert_eq!(client.remote, "mem!described");
    assert_eq!(server.local, "mem!described");
    assert_eq!(client.local, server.remote);
    assert!(client.uid.is_none() && server.uid.is_none());
}

#[tokio::test(start_paused = true)]
async fn nobody_listening_is_refused() {
    let err = dial::dial(&parse("mem!nobody-here"), &opts()).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    assert_eq!(err.to_string(), "mem!nobody-here: nobody listening");
}

#[tokio::test(start_paused = true)]
async fn second_listener_on_a_name_is_refused() {
    let ds = parse("mem!taken");
    let _first = dial::listen(&ds, &opts()).await.unwrap();
    let err = dial::listen(&ds, &opts()).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    assert_eq!(err.to_string(), "mem!taken: already listening");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_listener_frees_the_name() {
    let ds = parse("mem!freed");
    let listener = dial::listen(&ds, &opts()).await.unwrap();
    drop(listener);
    let err = dial::dial(&ds, &opts()).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    // The name can be taken again.
    let (_l, _c, _s) = connected(&ds).await;
}

#[tokio::test(start_paused = true)]
async fn more_dialers_than_the_backlog_all_get_through() {
    let ds = parse("mem!crowd");
    let mut listener = dial::listen(&ds, &opts()).await.unwrap();
    let dialers: Vec<_> = (0..200)
        .map(|_| {
            let ds = ds.clone();
            tokio::spawn(async move { dial::dial(&ds, &opts()).await })
        })
        .collect();
    within("accept all", async {
        for _ in 0..200 {
            listener.accept().await.unwrap();
        }
    })
    .await;
    for d in dialers {
        d.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn queued_connection_ends_when_the_listener_goes() {
    let ds = parse("mem!gone");
    let listener = dial::listen(&ds, &opts()).await.unwrap();
    let mut client = dial::dial(&ds, &opts()).await.unwrap();
    drop(listener);
    assert!(within("end", client.rx.next()).await.is_none());
}
