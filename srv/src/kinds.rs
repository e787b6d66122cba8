//! Service kinds: what a `kind` in the deployment file becomes.

use std::sync::Arc;

use ns::conv::Service;
use ns::deploy::{ServiceKind, ServiceSpec};
use ns::registry::RegistryService;
use ns::Router;

use crate::exec::Exec;

/// Why a service of the deployment file is not offered.
#[derive(Debug, thiserror::Error)]
pub enum KindError {
    #[error("service {name} (line {line}): kind {kind} is not available in this build")]
    Unavailable { name: String, line: usize, kind: String },
    #[error("service {name} (line {line}): {err}")]
    Bad { name: String, line: usize, err: anyhow::Error },
}

/// Builds the service a deployment entry describes, on `router`.
pub fn build(spec: &ServiceSpec, router: &Router) -> Result<Arc<dyn Service>, KindError> {
    let bad = |err| KindError::Bad { name: spec.name.to_string(), line: spec.line, err };
    match spec.kind {
        ServiceKind::Exec => Ok(Arc::new(Exec::new(spec.command.clone()).map_err(bad)?)),
        ServiceKind::Registry => Ok(Arc::new(RegistryService::new(router.clone()))),
        _ => Err(KindError::Unavailable { name: spec.name.to_string(), line: spec.line, kind: spec.kind.to_string() }),
    }
}
