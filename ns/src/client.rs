//! The client library: how a local process reaches its router over the
//! router's Unix socket, to open conversations, offer services and read
//! the router's state.
//!
//! A client is a small endpoint of its own: the router hands it a block of
//! conversation numbers at hello, and it runs its conversations with the
//! same machinery as the router ([`ConvTable`]), so a service served from
//! another process behaves exactly like one in the router's process.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use dial::{DialString, Link};
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::conv::{Conv, ConvTable, Delivery, Outbox, Service};
use crate::envelope::{link_options, Envelope, Hello, Kind, VERSION};
use crate::error;
use crate::outlet::{write_link, Inline, Outlet, Owner};
use crate::path::{Addr, MachineId, Name, ServiceName};

/// A connection to a router.
pub struct Client {
    table: Arc<ConvTable>,
    out: Arc<ClientOutbox>,
    gone: CancellationToken,
}

struct ClientOutbox {
    out: Arc<Outlet>,
    link: Arc<RouterLink>,
    next: AtomicU64,
}

/// The link to the router, as its outlet's owner: failing ends the client.
struct RouterLink {
    gone: CancellationToken,
}

impl Owner for RouterLink {
    fn routes_out(&self, _len: usize) {}
    fn write_failed(&self, e: io::Error) {
        warn!("router link: {e}");
    }
    fn hangup(&self) {
        self.gone.cancel();
    }
    fn hungup(&self) -> impl std::future::Future<Output = ()> + Send + '_ {
        self.gone.cancelled()
    }
    fn is_hungup(&self) -> bool {
        self.gone.is_cancelled()
    }
    fn connection(&self) -> CancellationToken {
        self.gone.clone()
    }
}

impl Outbox for ClientOutbox {
    fn send(&self, env: Envelope) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // As a router's links do: a small envelope on an idle link is
            // written by its sender, with no hand-off to the writer task.
            match self.out.try_inline(&*self.link, env) {
                Inline::Sent => {}
                Inline::Failed(e, _) => {
                    self.link.write_failed(e);
                    self.link.hangup();
                }
                Inline::Busy(env) => {
                    if self.out.queue(env).await.is_err() {
                        debug!("router link gone; envelope not sent");
                    }
                }
            }
        })
    }
    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Relaxed)
    }
}

impl Client {
    /// Connects to the router listening on `ds` (normally `unix!PATH`).
    pub async fn connect(ds: &DialString) -> io::Result<Client> {
        let mut link = dial::dial(ds, &link_options()).await?;
        let me = Name::new("client").expect("valid name");
        let a = Addr::on(me.clone(), me.clone());
        let hello = Envelope::new(0, a.clone(), a, Kind::Hello(Hello::new(me, Some(0))), Bytes::new());
        link.tx.send(hello.encode().into()).await?;
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{ds}: {m}"));
        let frame = link.rx.next().await.ok_or_else(|| bad("router closed the connection"))??;
        let env = Envelope::decode_frame(frame).map_err(|e| bad(&e.to_string()))?;
        let (machine, k) = match env.kind {
            Kind::Hello(Hello { machine, version: VERSION, client: Some(k), .. }) => (machine, k),
            _ => return Err(bad("router refused the client")),
        };
        Ok(Client::run(link, machine, k))
    }

    fn run(link: Link, machine: MachineId, k: u32) -> Client {
        let table = ConvTable::new(machine, (k as u64) << 32);
        let gone = CancellationToken::new();
        let Link { tx: sink, rx: mut frames, .. } = link;
        let (outlet, queue) = Outlet::new(sink, false);
        let link = Arc::new(RouterLink { gone: gone.clone() });
        let out = Arc::new(ClientOutbox { out: outlet.clone(), link: link.clone(), next: AtomicU64::new(1) });
        table.set_outbox(out.clone());
        tokio::spawn(write_link(link, outlet, queue));
        let (t, o, g) = (table.clone(), out.clone(), gone.clone());
        tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    _ = g.cancelled() => break,
                    f = frames.next() => f,
                };
                let env = match frame.map(|f| {
                    f.map_err(|e| e.to_string()).and_then(|f| Envelope::decode_frame(f).map_err(|e| e.to_string()))
                }) {
                    Some(Ok(env)) => env,
                    Some(Err(e)) => {
                        warn!("router link: {e}");
                        break;
                    }
                    None => break,
                };
                let (env, why) = match t.deliver(env) {
                    Delivery::Done => continue,
                    Delivery::Bounce(env, why) => (env, why),
                    Delivery::NotMine(env) => {
                        let why = error::detail(error::ENOSERVICE, &env.dst.service);
                        (env, why)
                    }
                };
                if matches!(env.kind, Kind::Data | Kind::Eof) {
                    let err = Envelope::new(o.next_id(), env.dst, env.src, Kind::Error(why), Bytes::new());
                    o.send(err).await;
                }
            }
            g.cancel();
            t.fail_all(error::ELINK);
        });
        Client { table, out, gone }
    }

    /// The router's machine.
    pub fn machine(&self) -> &MachineId {
        self.table.machine()
    }

    /// Opens a conversation with `dst`; replies follow `reply`, then come here.
    pub fn open(&self, dst: Addr, reply: Vec<Addr>) -> Conv {
        self.table.open(dst, reply)
    }

    /// Offers a service served by this process.
    pub async fn offer(&self, name: ServiceName, svc: Arc<dyn Service>) {
        self.table.add_service(name.clone(), svc);
        let a = Addr::on(self.machine().clone(), name.clone());
        let env = Envelope::new(self.out.next_id(), a.clone(), a, Kind::Offer(name), Bytes::new());
        self.out.send(env).await;
    }

    /// Resolves when the link to the router is gone.
    pub async fn closed(&self) {
        self.gone.cancelled().await
    }
}

/// Where routers put their Unix sockets: `$XDG_RUNTIME_DIR/mesh`, else
/// `/run/mesh` for root, else `/tmp/mesh-UID`.
pub fn socket_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return std::path::Path::new(&d).join("mesh");
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    if uid == 0 {
        "/run/mesh".into()
    } else {
        format!("/tmp/mesh-{uid}").into()
    }
}

/// Picks the router to talk to: `-m ID`, `--router unix!PATH`, or the only
/// socket there is.
pub fn pick_router(machine: Option<&str>, router: Option<&str>) -> Result<DialString, String> {
    if let Some(r) = router {
        return r.parse::<DialString>().map_err(|e| e.to_string());
    }
    let dir = socket_dir();
    if let Some(m) = machine {
        Name::new(m).map_err(|e| e.to_string())?;
        return Ok(DialString::Unix(dir.join(format!("{m}.sock"))));
    }
    let mut socks: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".sock").map(String::from))
                .collect()
        })
        .unwrap_or_default();
    socks.sort();
    match socks.as_slice() {
        [] => Err(format!("no router running: no socket in {}", dir.display())),
        [one] => Ok(DialString::Unix(dir.join(format!("{one}.sock")))),
        many => Err(format!("several routers run here ({}): pick one with -m ID", many.join(" "))),
    }
}
