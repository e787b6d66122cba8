//! Abandoned sends: what has spent its credit goes whole and in order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;

use super::{ConvTable, Outbox};
use crate::envelope::{Envelope, Kind};
use crate::path::Addr;

/// An outbox that lets an envelope through only when the test opens its
/// gate, and keeps what went through.
struct Gate {
    open: Semaphore,
    sent: Mutex<Vec<Envelope>>,
}

fn gate() -> Arc<Gate> {
    Arc::new(Gate { open: Semaphore::new(0), sent: Mutex::default() })
}

impl Outbox for Gate {
    fn send(&self, env: Envelope) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Ok(p) = self.open.acquire().await {
                p.forget();
            }
            self.sent.lock().unwrap_or_else(|e| e.into_inner()).push(env);
        })
    }

    fn next_id(&self) -> u64 {
        0
    }
}

fn data(g: &Gate) -> Vec<Bytes> {
    let sent = g.sent.lock().unwrap_or_else(|e| e.into_inner());
    sent.iter().filter(|e| e.kind == Kind::Data).map(|e| e.data.clone()).collect()
}

#[tokio::test]
async fn a_send_abandoned_on_its_way_out_still_goes_whole_and_first() {
    let gate = gate();
    let table = ConvTable::new("a".parse().expect("machine"), 0);
    table.set_outbox(gate.clone());
    let conv = table.open(Addr::parse("/n/b/svc/s").expect("address"), Vec::new());
    // It has its credit and waits in the outbox (a congested link) when
    // its writer gives up, as an interrupted write does.
    let first = tokio::time::timeout(Duration::from_millis(50), conv.tx.send(Bytes::from_static(b"one"))).await;
    assert!(first.is_err(), "the gate was shut");
    let tx = conv.tx.clone();
    let second = tokio::spawn(async move { tx.send(Bytes::from_static(b"two")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.open.add_permits(2);
    second.await.expect("task").expect("second send");
    assert_eq!(data(&gate), [Bytes::from_static(b"one"), Bytes::from_static(b"two")]);
}

#[tokio::test]
async fn a_send_abandoned_while_waiting_for_credit_sends_nothing_and_keeps_the_credit() {
    let gate = gate();
    gate.open.add_permits(100);
    let table = ConvTable::new("a".parse().expect("machine"), 0);
    table.set_outbox(gate.clone());
    let conv = table.open(Addr::parse("/n/b/svc/s").expect("address"), Vec::new());
    let mib = Bytes::from(vec![0u8; 1 << 20]);
    for _ in 0..super::WINDOW >> 20 {
        conv.tx.send(mib.clone()).await.expect("within the window");
    }
    let blocked = tokio::time::timeout(Duration::from_millis(50), conv.tx.send(mib.clone())).await;
    assert!(blocked.is_err(), "sent past the window");
    assert_eq!(data(&gate).len(), (super::WINDOW >> 20) as usize);
    // The reader's credit comes back whole: the next send takes it at once.
    conv.rx.shared.credit.add_permits(1 << 20);
    tokio::time::timeout(Duration::from_secs(5), conv.tx.send(mib)).await.expect("credit").expect("send");
}
