//! Service kinds: what a `kind` in the deployment file becomes.
//!
//! A kind may also take ctl messages of its own on its conversations'
//! `ctl` files (`size 80 24` for a pty); [`Built::ctl`] carries them.

use std::sync::Arc;

use ns::conv::Service;
use ns::deploy::{ServiceKind, ServiceSpec};
use ns::registry::RegistryService;
use ns::Router;

use crate::exec::Exec;
use crate::fs::dir::{DirService, Root};
pub use crate::fs::{CtlHook, FileFn};
use crate::parser::ParserService;
use crate::pty::PtyService;

/// A built service, with what it adds to the tree.
pub struct Built {
    pub service: Arc<dyn Service>,
    pub ctl: Option<CtlHook>,
    /// One line about the service for its `info` file (the device, ...).
    pub about: Option<String>,
    /// Files of its own in `svc/S/` (the display's `frame.png`).
    pub files: Vec<(String, FileFn)>,
    /// The directory a dir service serves at `svc/S/root/`.
    pub root: Option<Arc<Root>>,
}

/// Why a service of the deployment file is not offered.
#[derive(Debug, thiserror::Error)]
pub enum KindError {
    #[error("service {name} (line {line}): kind {kind} is not available in this build")]
    Unavailable { name: String, line: usize, kind: String },
    #[error("service {name} (line {line}): {err}")]
    Bad { name: String, line: usize, err: anyhow::Error },
    #[error("service {name} (line {line}): kind {kind} runs in the mesh-av binary; restart this router to start it")]
    Elsewhere { name: String, line: usize, kind: String },
}

/// Builds the kinds this crate leaves to others: `None` for the rest.
pub type Extra = fn(&ServiceSpec, &Router) -> Option<Result<Built, KindError>>;

static EXTRA: std::sync::OnceLock<Extra> = std::sync::OnceLock::new();

/// Builds the kinds that link FFmpeg (encoder, display) with `extra`: the
/// `mesh-av` binary does this first, and the `mesh` binary never, so that
/// it does not load FFmpeg's libraries (see the `mesh-av` crate).
pub fn register(extra: Extra) {
    let _ = EXTRA.set(extra);
}

/// Whether kind `k` is built by another binary (`mesh-av`), not this
/// process.
pub fn elsewhere(k: ServiceKind) -> bool {
    matches!(k, ServiceKind::Encoder | ServiceKind::Display) && EXTRA.get().is_none()
}

/// The default terminal size and frame rate of the seed's pipeline.
pub const DEFAULT_SIZE: (u16, u16) = (80, 24);
pub const DEFAULT_FPS: u32 = 30;

/// A service that adds nothing else to the tree.
pub fn plain(service: Arc<dyn Service>) -> Built {
    Built { service, ctl: None, about: None, files: Vec::new(), root: None }
}

/// Builds the service a deployment entry describes, on `router`.
pub fn build(spec: &ServiceSpec, router: &Router) -> Result<Built, KindError> {
    let bad = |err| KindError::Bad { name: spec.name.to_string(), line: spec.line, err };
    let size = spec.size.unwrap_or(DEFAULT_SIZE);
    match spec.kind {
        ServiceKind::Exec => Ok(plain(Arc::new(Exec::new(spec.command.clone()).map_err(bad)?))),
        ServiceKind::Registry => Ok(plain(Arc::new(RegistryService::new(router.clone())))),
        ServiceKind::Echo => Ok(plain(Arc::new(ns::probe::Echo))),
        ServiceKind::Sink => Ok(plain(Arc::new(ns::probe::Sink))),
        ServiceKind::Pty => {
            let pty = Arc::new(PtyService::new(spec.command.clone(), size).map_err(bad)?.restarting(spec.restart));
            let (p, q) = (pty.clone(), pty.clone());
            let status: FileFn = Arc::new(move || Ok(bytes::Bytes::from(q.status())));
            let about = format!("restart {}", spec.restart.as_str());
            Ok(Built {
                ctl: Some(Arc::new(move |n, line| p.ctl(n, line))),
                about: Some(about),
                files: vec![("status".into(), status)],
                ..plain(pty)
            })
        }
        ServiceKind::Dir => {
            // The file checks that dir has a root; opening it here makes a
            // missing or unreadable directory a start-up error.
            let path = spec.root.as_deref().ok_or_else(|| bad(anyhow::anyhow!("kind dir needs root")))?;
            let root = Root::open(path).map_err(|e| bad(anyhow::anyhow!("root {}: {e}", path.display())))?;
            let root = Arc::new(root.squashing(spec.squash));
            let service = Arc::new(DirService::new(root.clone(), spec.name.as_str()));
            let about = format!("root {}\nsquash {}", root.path().display(), root.squash().as_str());
            Ok(Built { about: Some(about), root: Some(root), ..plain(service) })
        }
        ServiceKind::Parser => {
            Ok(plain(Arc::new(ParserService::new(size, spec.fps.unwrap_or(DEFAULT_FPS)).map_err(bad)?)))
        }
        #[cfg(feature = "gpu")]
        ServiceKind::Gpu => {
            let gpu = mesh_gpu::GpuService::new().map_err(|e| bad(e.into()))?;
            let about = format!("device {}", gpu.device_name());
            Ok(Built { about: Some(about), ..plain(Arc::new(gpu)) })
        }
        // Built by the binary that registered them (`mesh-av`), or by
        // none in this process.
        #[allow(unreachable_patterns)]
        _ => {
            if let Some(built) = EXTRA.get().and_then(|b| b(spec, router)) {
                return built;
            }
            if elsewhere(spec.kind) {
                return Err(KindError::Elsewhere {
                    name: spec.name.to_string(),
                    line: spec.line,
                    kind: spec.kind.to_string(),
                });
            }
            Err(KindError::Unavailable { name: spec.name.to_string(), line: spec.line, kind: spec.kind.to_string() })
        }
    }
}
