//! Machine keys for network links.
//!
//! A machine's key comes from its `key` file and the keys it accepts from
//! its `peers`, both in the deployment file; that is how machines on
//! different hosts are set up (`mesh keygen` makes a key). A deployment
//! that names no keys is still secure: each machine's key is made once, on
//! this host, in the state directory (`$XDG_STATE_HOME/mesh/keys/SCOPE/`),
//! and every machine of the file pins the others' keys from there. So the
//! built-in mesh, and any deployment whose machines run on one host, need
//! no setup. `insecure = true` turns it all off, loudly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use dial::{Identity, PublicKey, Trust};
use ns::deploy::{Deployment, Machine};
use ns::link::Security;
use tracing::{info, warn};

/// Where the mesh keeps state: `$XDG_STATE_HOME/mesh`, else
/// `~/.local/state/mesh`, else `/var/lib/mesh`.
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Path::new(&d).join("mesh");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Path::new(&h).join(".local/state/mesh"),
        None => "/var/lib/mesh".into(),
    }
}

/// The scope of a deployment's host-made keys: `builtin`, or the file's
/// name and a hash of its full path, so two files never share keys.
pub fn scope(file: Option<&Path>) -> String {
    let Some(file) = file else { return "builtin".into() };
    let full = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    // FNV-1a: a stable name, not a secret.
    let hash = full
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("deploy");
    let stem: String = stem.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
    format!("{stem}-{hash:016x}")
}

/// The host-made key of `id` in `dir`, made the first time.
fn host_key(dir: &Path, id: &str) -> anyhow::Result<Identity> {
    let path = dir.join(format!("{id}.key"));
    if path.exists() {
        return Identity::load(&path).with_context(|| format!("key of {id}"));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("key directory {}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let key = Identity::generate();
    // Several machines' processes may start at once: write a private
    // file, then link it into place, so a key appears whole or not at all,
    // and the first one made is the one every process uses.
    let tmp = dir.join(format!(".{id}.key.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    key.save(&tmp).with_context(|| format!("saving {}", tmp.display()))?;
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            info!(machine = id, key = %key.public().fingerprint(), path = %path.display(), "made a machine key");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Identity::load(&path).with_context(|| format!("key of {id}"))
        }
        Err(e) => Err(e).with_context(|| format!("saving {}", path.display())),
    }
}

/// The security of machine `m` of `dep`; `None` when it runs insecure.
pub fn security(dep: &Deployment, m: &Machine, scope: &str) -> anyhow::Result<Option<Arc<Security>>> {
    if m.insecure {
        warn!(machine = %m.id, "INSECURE: network links are neither authenticated nor encrypted (insecure = true is for benchmarks only)");
        return Ok(None);
    }
    let dir = state_dir().join("keys").join(scope);
    let identity = match &m.key {
        Some(path) => Identity::load(path).with_context(|| format!("machines.{}.key", m.id))?,
        None => host_key(&dir, m.id.as_str())?,
    };
    let mut trust = Trust::new();
    if m.key.is_some() && m.peers.is_empty() {
        bail!("machines.{}: a key of its own but no peers pinned: whom would it accept?", m.id);
    }
    if m.peers.is_empty() {
        for other in dep.machines.values().filter(|o| o.id != m.id) {
            let key = host_key(&dir, other.id.as_str())?.public();
            trust.pin(other.id.to_string(), key).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    } else {
        for (peer, key) in &m.peers {
            let key: PublicKey = key.parse().map_err(|e| anyhow::anyhow!("machines.{}.peers.{peer}: {e}", m.id))?;
            trust.pin(peer.to_string(), key).map_err(|e| anyhow::anyhow!("machines.{}.peers: {e}", m.id))?;
        }
    }
    info!(machine = %m.id, key = %identity.public().fingerprint(), pinned = trust.len(), "network links authenticated and encrypted (Noise)");
    Ok(Some(Arc::new(Security { identity, trust })))
}

/// `mesh keygen PATH`: makes a key file; returns the public key line to
/// put in the other machines' `peers`.
pub fn keygen(path: &Path) -> anyhow::Result<String> {
    let key = Identity::generate();
    key.save(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(format!("public = \"{}\"   # fingerprint {}", key.public(), key.public().fingerprint()))
}
