//! Serving a local client's link, once `link` has accepted it and
//! given it a number block: the envelopes it sends (offers, withdrawals,
//! conversations), and hanging up for it when it goes.
//!
//! The state lives in the router's `Clients`
//! table; this is the I/O around it, above the router.

use bytes::Bytes;
use dial::Link;
use futures::StreamExt;
use tracing::{debug, info, warn};

use crate::envelope::{Envelope, Kind};
use crate::error;
use crate::router::Router;
use crate::term::{Term, TermKind};

/// Serves local client `k` on `link` until it goes.
pub(crate) async fn serve(r: Router, link: Link, k: u32) {
    let Link { tx, rx: mut frames, remote, uid, .. } = link;
    // Who the client's conversations are for: its uid, as the socket
    // told it, never what the client says.
    let user = crate::policy::user_name(uid.unwrap_or_else(own_uid));
    let (term, writer) = Term::linked(TermKind::Client(k), remote, false, tx, None);
    r.clients().add(k, term.clone());
    debug!(client = k, "local client up");
    let writer = r.spawn(writer);
    loop {
        let frame = tokio::select! {
            _ = r.shutdown_token().cancelled() => break,
            f = frames.next() => f,
        };
        let env = match frame
            .map(|f| f.map_err(|e| e.to_string()).and_then(|f| Envelope::decode_frame(f).map_err(|e| e.to_string())))
        {
            Some(Ok(env)) => env,
            Some(Err(e)) => {
                term.warn("local client, closing", e);
                break;
            }
            None => break,
        };
        receive(&r, k, &user, env).await;
    }
    writer.abort();
    gone(&r, k).await;
}

/// Handles one envelope from client `k`, run by `user`.
async fn receive(r: &Router, k: u32, user: &std::sync::Arc<str>, mut env: Envelope) {
    let owned = env.src.machine.as_ref() == Some(r.id()) && env.src.conv.is_some_and(|n| n >> 32 == k as u64);
    match &env.kind {
        Kind::Offer(name) => {
            let taken = r.convs().has_service(name.as_str()) || name.as_str() == crate::conv::RESERVED;
            if taken {
                warn!(client = k, service = %name, "offer refused: served here already");
                return;
            }
            r.clients().offer(name.clone(), k);
            info!(client = k, service = %name, "service offered by local client");
            r.local_changed();
        }
        Kind::Withdraw(name) => {
            r.clients().withdraw(name, k);
            r.local_changed();
        }
        _ if !crate::pairs::sealed_kind(&env.kind) => {
            // Handshakes and the links' own messages are routers' alone.
            warn!(
                client = k,
                kind = crate::term::kind_name(&env.kind),
                "local client sent a router's message, dropped"
            );
        }
        _ if !owned => {
            let src = env.src.clone();
            r.bounce(env, error::detail(error::EPERM, format!("client may not send as {src}")));
        }
        Kind::Hangup => {
            r.clients().hung_up(k, &env.src);
            env.user = Some(user.clone());
            env.seal = None;
            r.forward(env).await;
        }
        _ => {
            r.clients().sent(k, &env.src, &env.dst);
            env.user = Some(user.clone());
            env.seal = None;
            r.forward(env).await;
        }
    }
}

fn own_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Client `k` went: withdraw its services and hang up for it.
async fn gone(r: &Router, k: u32) {
    debug!(client = k, "local client gone");
    let (had, convs) = r.clients().remove(k);
    if had {
        r.local_changed();
    }
    for (src, dst) in convs {
        let env = Envelope::new(r.next_id(), src, dst, Kind::Hangup, Bytes::new());
        r.forward(env).await;
    }
}
