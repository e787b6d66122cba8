//! The `gpu` service: CBOR [`Snapshot`]s in, CBOR [`Frame`]s out, one
//! frame per snapshot, in order.
//!
//! A session's [`mesh_frame::End`] is passed on as it is, after the last
//! frame: the encoder holds that frame until the session's end.
//!
//! One [`Renderer`] serves every conversation. Vulkan objects and mapped
//! memory stay on one thread of their own, fed through a small bounded
//! queue: a conversation waits for its frame before reading its next
//! snapshot, so each stays in order, and a burst of conversations waits
//! in the queue instead of piling up frames in memory.
//!
//! A message that is not a valid snapshot, or one that fails to render,
//! ends the conversation with an error string (`gpu: bad message: ...`,
//! `gpu: bad snapshot: ...`): logged at warn, sent downstream as an error
//! and passed back upstream, so no one mistakes it for a clean end.
//!
//! A renderer that failed for good (device lost, hung) is dropped and a
//! new one made for the next snapshot.

use std::sync::Arc;

use futures::future::BoxFuture;
use mesh_frame::{Frame, Snapshot};
use ns::conv::{Conv, ConvWriter, Msg, Service};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::{GpuError, Renderer};

/// Snapshots waiting for the render thread, beyond the one it renders.
const QUEUE: usize = 2;

/// A snapshot to render and where its frame goes.
type Job = (Snapshot, oneshot::Sender<Result<Frame, GpuError>>);

/// The `gpu` service kind. Cheap to clone: clones share the renderer,
/// whose thread ends when the last clone and conversation are gone.
#[derive(Clone)]
pub struct GpuService {
    jobs: mpsc::Sender<Job>,
    device: Arc<str>,
}

impl GpuService {
    /// Starts the render thread and opens the device there. Blocks while
    /// the device opens (tens of milliseconds on lavapipe).
    pub fn new() -> Result<GpuService, GpuError> {
        let (jobs, rx) = mpsc::channel::<Job>(QUEUE);
        let (ready_tx, ready) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("mesh-gpu".into())
            .spawn(move || match Renderer::new() {
                Ok(r) => {
                    let _ = ready_tx.send(Ok(r.device_name().to_string()));
                    render_loop(r, rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| GpuError::NoDevice(format!("cannot start the render thread: {e}")))?;
        let device = ready.recv().map_err(|_| GpuError::Stopped)??;
        Ok(GpuService { jobs, device: device.into() })
    }

    /// The name of the Vulkan device frames are rendered on.
    pub fn device_name(&self) -> String {
        self.device.to_string()
    }

    /// Renders one snapshot on the render thread.
    pub async fn render(&self, snap: Snapshot) -> Result<Frame, GpuError> {
        render(&self.jobs, snap).await
    }
}

async fn render(jobs: &mpsc::Sender<Job>, snap: Snapshot) -> Result<Frame, GpuError> {
    let (tx, rx) = oneshot::channel();
    jobs.send((snap, tx)).await.map_err(|_| GpuError::Stopped)?;
    rx.await.map_err(|_| GpuError::Stopped)?
}

/// The render thread: one job at a time until every sender is gone.
fn render_loop(renderer: Renderer, mut jobs: mpsc::Receiver<Job>) {
    let mut renderer = Some(renderer);
    while let Some((snap, reply)) = jobs.blocking_recv() {
        let r = match renderer.take() {
            Some(r) => Ok(r),
            None => Renderer::new(),
        };
        let result = match r {
            Ok(mut r) => {
                let res = r.render(&snap);
                if r.is_broken() {
                    warn!(device = r.device_name(), "gpu: renderer failed; making a new one");
                } else {
                    renderer = Some(r);
                }
                res
            }
            Err(e) => Err(e),
        };
        // The conversation may have ended meanwhile; nothing to do then.
        let _ = reply.send(result);
    }
    debug!("gpu: render thread done");
}

impl Service for GpuService {
    fn serve(&self, conv: Conv) -> BoxFuture<'static, ()> {
        let jobs = self.jobs.clone();
        Box::pin(serve(jobs, conv))
    }
}

async fn serve(jobs: mpsc::Sender<Job>, conv: Conv) {
    let Conv { mut rx, tx } = conv;
    let path = rx.path().clone();
    while let Some(m) = rx.recv().await {
        let b = match m {
            Msg::Data(b) => b,
            Msg::Eof => {
                tx.eof().await;
                return;
            }
            Msg::Error(e) => {
                debug!(conv = %path, "gpu: conversation failed: {e}");
                return;
            }
        };
        if mesh_frame::end(&b).is_some() {
            // The session's end: the last frame lasts until it. In order,
            // since this loop sends each frame before reading on.
            if let Err(e) = tx.send(b).await {
                debug!(conv = %path, "gpu: {e}");
                return;
            }
            continue;
        }
        let snap = match mesh_frame::decode::<Snapshot>(&b) {
            Ok(s) => s,
            Err(e) => return fail(&tx, &format!("gpu: {e}")).await,
        };
        let frame = match render(&jobs, snap).await {
            Ok(f) => f,
            Err(e) => return fail(&tx, &e.to_string()).await,
        };
        if let Err(e) = tx.send(mesh_frame::encode(&frame)).await {
            // A reader that went away is normal; anything else (a frame
            // over the message limit) is worth a warning.
            if e.starts_with(ns::error::EHUNGUP) {
                debug!(conv = %path, "gpu: {e}");
            } else {
                warn!(conv = %path, "gpu: cannot send frame: {e}");
            }
            return;
        }
    }
}

/// Ends a conversation that cannot go on: the reader downstream gets the
/// error, and so does the writer upstream when it is another party (a
/// pipeline's previous stage), so neither mistakes it for a clean end.
async fn fail(tx: &ConvWriter, why: &str) {
    warn!(conv = %tx.path(), "{why}");
    tx.send_error(why).await;
    tx.fail(why);
}
