//! Who may reach what (issue 18), on the in-process transport: the
//! serving router checks what opens a conversation against the service's
//! `allow` rules, by machine and user, and a change applies from the
//! next message without touching the link.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ns::policy::{Policy, Rule, Who};
use ns::probe::Echo;
use ns::{Addr, Config, Msg, Name, Router};
use tokio_util::sync::CancellationToken;

fn n(s: &str) -> Name {
    s.parse().unwrap()
}

fn rules(allow: &[&str]) -> Policy {
    let allow: Vec<Who> = allow.iter().map(|s| s.parse().unwrap()).collect();
    let mut p = Policy::default();
    p.rules.insert(n("echo"), Rule { allow: Some(allow), read: vec![] });
    p
}

/// One message to b's echo from `r` for `user`: the answer or the error.
async fn ask(r: &Router, user: Option<&str>) -> Result<Bytes, String> {
    let mut conv = r.open_as(Addr::parse("/n/b/svc/echo").unwrap(), vec![], user.map(Arc::from));
    conv.tx.send(Bytes::from_static(b"hi")).await.map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(10), conv.rx.recv()).await {
        Ok(Some(Msg::Data(b))) => Ok(b),
        Ok(Some(Msg::Error(e))) => Err(e),
        other => Err(format!("{other:?}")),
    }
}

#[tokio::test(start_paused = true)]
async fn rules_admit_by_machine_and_user_and_a_reload_applies_to_the_next_conversation() {
    let stop = CancellationToken::new();
    let (a, b) = (Router::new(Config::new(n("a")), stop.clone()), Router::new(Config::new(n("b")), stop.clone()));
    b.listen(&"mem!policy-b".parse().unwrap()).await.unwrap();
    a.dial_now("mem!policy-b".parse().unwrap()).await.unwrap();
    b.add_service(n("echo"), Arc::new(Echo));
    for _ in 0..200 {
        if a.table().nearest("echo").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ask(&a, Some("alice")).await.as_deref(), Ok(&b"hi"[..]), "no rules: open");

    b.set_policy(rules(&["b"]));
    let e = ask(&a, Some("alice")).await.unwrap_err();
    assert_eq!(e, "permission denied: a/alice may not open svc/echo");
    assert_eq!(ns::error::errno(&e), libc::EACCES);
    let ctl = ns::text::ctl_text(&b);
    assert!(ctl.contains("denied a/alice svc/echo: allow = [\"b\"]"), "{ctl}");
    // b's own users are held to the rules too, and b itself passes.
    assert!(ask(&b, Some("carol")).await.is_ok(), "\"b\" admits anyone on b");

    b.set_policy(rules(&["a/alice", "*/root"]));
    assert!(ask(&a, Some("alice")).await.is_ok());
    assert!(ask(&a, Some("root")).await.is_ok());
    assert!(ask(&a, Some("bob")).await.unwrap_err().starts_with("permission denied"));
    assert!(ask(&a, None).await.unwrap_err().starts_with("permission denied"), "a's router is not alice");

    // A rule takes effect at the next message an opener sends: an open
    // conversation the new rules deny fails then (revoked at once), one
    // they admit goes on; the link never dropped.
    let mut kept = a.open_as(Addr::parse("/n/b/svc/echo").unwrap(), vec![], Some(Arc::from("alice")));
    kept.tx.send(Bytes::from_static(b"1")).await.unwrap();
    assert!(matches!(kept.rx.recv().await, Some(Msg::Data(_))));
    b.set_policy(rules(&["a/alice"]));
    kept.tx.send(Bytes::from_static(b"2")).await.unwrap();
    assert!(matches!(kept.rx.recv().await, Some(Msg::Data(_))), "still admitted");
    b.set_policy(Policy { deny_by_default: true, ..Policy::default() });
    let _ = kept.tx.send(Bytes::from_static(b"3")).await;
    let got = tokio::time::timeout(Duration::from_secs(10), kept.rx.recv()).await.unwrap();
    assert!(matches!(&got, Some(Msg::Error(e)) if e.starts_with("permission denied")), "revoked: {got:?}");
    assert!(ask(&a, Some("alice")).await.unwrap_err().starts_with("permission denied"));
    assert!(!ns::text::ctl_text(&a).contains("link down"));
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn no_one_the_rules_deny_can_write_into_a_conversation_by_its_number() {
    let stop = CancellationToken::new();
    let r = |id: &str| Router::new(Config::new(n(id)), stop.clone());
    let (a, b, c) = (r("a"), r("b"), r("c"));
    b.listen(&"mem!join-b".parse().unwrap()).await.unwrap();
    a.dial_now("mem!join-b".parse().unwrap()).await.unwrap();
    c.dial_now("mem!join-b".parse().unwrap()).await.unwrap();
    b.add_service(n("echo"), Arc::new(Echo));
    for _ in 0..200 {
        if a.table().nearest("echo").is_some() && c.table().nearest("echo").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.set_policy(rules(&["a/alice"]));
    let alice = Some(Arc::from("alice"));
    let mut conv = a.open_as(Addr::parse("/n/b/svc/echo").unwrap(), vec![], alice);
    conv.tx.send(Bytes::from_static(b"mine")).await.unwrap();
    assert!(matches!(conv.rx.recv().await, Some(Msg::Data(d)) if &d[..] == b"mine"));
    // c, and bob beside alice on a, try the first numbers b gives: each
    // refused, nothing reaches the service.
    for (r, user, k) in (1..=8).flat_map(|k| [(&c, None, k), (&a, Some(Arc::from("bob")), k)]) {
        let mut x = r.open_as(Addr::parse(&format!("/n/b/svc/echo/{k}")).unwrap(), vec![], user);
        x.tx.send(Bytes::from_static(b"theirs")).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), x.rx.recv()).await.unwrap();
        assert!(
            matches!(&got, Some(Msg::Error(e)) if e.starts_with("permission denied") || e.starts_with("no such conversation")),
            "{got:?}"
        );
    }
    let ctl = ns::text::ctl_text(&b);
    assert!(ctl.contains("denied c svc/echo") && ctl.contains("denied a/bob svc/echo"), "{ctl}");
    conv.tx.send(Bytes::from_static(b"again")).await.unwrap();
    let got = conv.rx.recv().await;
    assert!(matches!(&got, Some(Msg::Data(d)) if &d[..] == b"again"), "only a's own data echoed: {got:?}");
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn nor_into_a_conversation_a_local_client_serves() {
    // The same, with echo served by a local client of b (`mesh serve`):
    // its conversations are numbered in the client's own block.
    let stop = CancellationToken::new();
    let r = |id: &str| Router::new(Config::new(n(id)), stop.clone());
    let (a, b) = (r("a"), r("b"));
    b.listen(&"mem!serve-b".parse().unwrap()).await.unwrap();
    a.dial_now("mem!serve-b".parse().unwrap()).await.unwrap();
    let client = ns::client::Client::connect(&"mem!serve-b".parse().unwrap()).await.unwrap();
    client.offer(n("echo"), Arc::new(Echo)).await;
    for _ in 0..200 {
        if a.table().nearest("echo").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.set_policy(rules(&["a/alice"]));
    let mut conv = a.open_as(Addr::parse("/n/b/svc/echo").unwrap(), vec![], Some(Arc::from("alice")));
    conv.tx.send(Bytes::from_static(b"mine")).await.unwrap();
    assert!(matches!(conv.rx.recv().await, Some(Msg::Data(d)) if &d[..] == b"mine"));
    // bob beside alice writes into the first numbers of the first
    // client's block: the one that is alice's conversation is refused,
    // the others do not exist.
    let mut denied = 0;
    for i in 1..=8u64 {
        let end = Addr::parse(&format!("/n/b/svc/echo/{}", (1u64 << 32) + i)).unwrap();
        let mut x = a.open_as(end, vec![], Some(Arc::from("bob")));
        x.tx.send(Bytes::from_static(b"theirs")).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), x.rx.recv()).await.unwrap();
        match &got {
            Some(Msg::Error(e)) if e.starts_with("permission denied") => denied += 1,
            Some(Msg::Error(e)) if e.starts_with("no such conversation") => {}
            other => panic!("bob reached a conversation: {other:?}"),
        }
    }
    assert_eq!(denied, 1, "alice's conversation, refused to bob");
    assert!(ns::text::ctl_text(&b).contains("denied a/bob svc/echo"));
    // alice's own conversation goes on.
    conv.tx.send(Bytes::from_static(b"again")).await.unwrap();
    let got = conv.rx.recv().await;
    assert!(matches!(&got, Some(Msg::Data(d)) if &d[..] == b"again"), "{got:?}");
    stop.cancel();
}
