//! Bytes written to a `ctl` file -> `srv::fs::ctl::apply`, the code the FUSE
//! server runs, on a real in-process router.
//!
//! The first input byte says which ctl file and in what state; the rest is
//! the write. Each input gets a fresh world, so a crash replays from its
//! input alone: machines `a` (whose tree it is) and `b`, listening on
//! `mem!a` and `mem!b`; a conversation of `a` open through the tree; and
//! the `pty` kind's own ctl messages (`size COLS ROWS`) on service `pty`.
//! Selector bits:
//!
//! - 0-1: the ctl file: router, terminal, conversation, or service
//! - 2:   `a` has dialed `b` first, so the terminal `net-b` exists
//! - 3-4: which terminal (`local`, `loopback`, `net-b`, `net-zz`), which
//!   conversation (the open one twice, 0, one never opened), which service
//!   (`pty`, `nosuch`)
//!
//! A write must succeed or fail with `bad ctl message: ...`; it must never
//! panic, and never hang: the clock is paused, so anything that waits for
//! nothing trips the timeout at once.
//!
//! Writes that would dial out of the process (`dial`/`mount` with a tcp, ws
//! or unix address) are skipped: a fuzzer must not send traffic to the
//! addresses it invents. Those dial strings are the `dial` target's.
#![no_main]

use std::time::Duration;

use dial::DialString;
use libfuzzer_sys::fuzz_target;
use ns::error::EBADCTL;
use ns::{Addr, Config, Name, Router};
use srv::fs::ctl::{apply, Target};
use srv::fs::{KindExtras, Namespace};
use tokio_util::sync::CancellationToken;

fn name(s: &str) -> Name {
    Name::new(s).expect("valid name")
}

/// Whether applying `data` to the router's ctl could dial outside the
/// process; lines are split as `apply` splits them.
fn dials_out(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    text.lines().map(str::trim).any(|line| {
        let mut w = line.split_whitespace();
        matches!(w.next(), Some("dial" | "mount"))
            && w.next().and_then(|ds| ds.parse::<DialString>().ok()).is_some_and(|ds| !matches!(ds, DialString::Mem(_)))
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&sel, data)) = input.split_first() else {
        return;
    };
    let which = (sel >> 3) & 3;
    if sel & 3 == 0 && dials_out(data) {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("runtime");
    let stop = CancellationToken::new();
    let res = rt.block_on(async {
        let a = Router::new(Config::new(name("a")), stop.child_token());
        let b = Router::new(Config::new(name("b")), stop.child_token());
        a.listen(&"mem!a".parse().unwrap()).await.expect("mem!a is free");
        b.listen(&"mem!b".parse().unwrap()).await.expect("mem!b is free");
        let ns = Namespace::new(a.clone());
        // The spec as a deployment file gives it, so new fields need no edit here.
        let file = "[machines.a]\nservices = [{ name = \"pty\", kind = \"pty\", command = [\"true\"] }]";
        let pty = &ns::deploy::parse(file, "ctl.toml").expect("a valid deployment").machines[&name("a")].services[0];
        let built = srv::kinds::build(pty, &a).expect("a pty service");
        ns.set_kind("pty", KindExtras { ctl: built.ctl, ..Default::default() });
        let slot = ns.open_pipeline(Addr::on(name("b"), name("pty")), Vec::new());
        if sel & 4 != 0 {
            a.dial_now("mem!b".parse().unwrap()).await.expect("a dials b");
        }
        let target = match sel & 3 {
            0 => Target::Router,
            1 => Target::Term(["local", "loopback", "net-b", "net-zz"][which as usize].into()),
            2 => Target::Conv("pty".into(), [slot.n, slot.n, 0, slot.n + 1000][which as usize]),
            _ => Target::Service(["pty", "nosuch"][which as usize & 1].into()),
        };
        let res = tokio::time::timeout(Duration::from_secs(3600), apply(&ns, &target, data))
            .await
            .expect("a ctl write hangs");
        drop(slot);
        res
    });
    stop.cancel();
    drop(rt);
    if let Err(e) = res {
        assert!(e.starts_with(EBADCTL), "ctl error {e:?} is not {EBADCTL:?}");
    }
});
