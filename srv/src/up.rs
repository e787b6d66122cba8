//! `mesh up`: run the routers of a deployment in this process.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use dial::DialString;
use ns::deploy::{Deployment, Machine};
use std::sync::Arc;

use ns::{Config, MachineId, Router};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::kinds;

/// Which machines to run, and where.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The machines to run; all of the file's when empty.
    pub machines: Vec<MachineId>,
    /// Overrides the mount point (one machine only).
    pub mount: Option<PathBuf>,
    /// Overrides the directory of the routers' Unix sockets.
    pub socket_dir: Option<PathBuf>,
    /// Mount nothing, whatever the file says (`mesh demo`).
    pub no_mount: bool,
    /// Start no pipeline (a caller that runs them itself).
    pub no_pipelines: bool,
    /// Where host-made keys of this deployment live (see [`crate::keys`]).
    pub key_scope: String,
    /// The deployment file, read again by `reload` (`ctl`, SIGHUP).
    pub file: Option<PathBuf>,
}

/// A running machine.
pub struct Running {
    pub router: Router,
    /// The Unix socket local clients use.
    pub socket: PathBuf,
    /// Its tree, mounted where the deployment says.
    pub mounted: Option<crate::fs::mount::Mounted>,
    pub tree: Arc<crate::fs::Namespace>,
}

/// The first service of machines `machines` of `dep` (all when empty)
/// whose kind this process does not build but another binary does
/// (`kinds::elsewhere`), said as `machine c runs encoder mp4-encoder`.
pub fn elsewhere(dep: &Deployment, machines: &[MachineId]) -> Option<String> {
    dep.machines
        .iter()
        .filter(|(id, _)| machines.is_empty() || machines.contains(id))
        .flat_map(|(id, m)| m.services.iter().map(move |s| (id, s)))
        .find(|(_, s)| crate::kinds::elsewhere(s.kind))
        .map(|(id, s)| format!("machine {id} runs {} {}", s.kind, s.name))
}

/// Starts the chosen machines of `dep`. They run until `shutdown`.
pub async fn start(
    dep: &Deployment,
    opts: &Options,
    shutdown: &CancellationToken,
) -> anyhow::Result<BTreeMap<MachineId, Running>> {
    let ids: Vec<MachineId> =
        if opts.machines.is_empty() { dep.machines.keys().cloned().collect() } else { opts.machines.clone() };
    if opts.mount.is_some() && ids.len() != 1 {
        anyhow::bail!("--mount needs exactly one machine (-m ID)");
    }
    let mut out = BTreeMap::new();
    // Listen everywhere first, so that dials between machines of this
    // process find their peers at once.
    for id in &ids {
        let m = dep.machine(id.as_str()).with_context(|| format!("no machine {id} in the deployment"))?;
        let r = start_machine(dep, m, opts, shutdown).await?;
        out.insert(id.clone(), r);
    }
    for id in &ids {
        let m = dep.machine(id.as_str()).expect("checked above");
        for ds in &m.dial {
            match machine_at(dep, ds) {
                Some(peer) => out[id].router.dial_machine(ds.clone(), peer),
                None => out[id].router.dial(ds.clone()),
            }
        }
    }
    if !opts.no_pipelines {
        for p in &dep.pipelines {
            let Some(home) = crate::pipeline::home(dep, p).filter(|h| out.contains_key(h)) else { continue };
            let tree = out[&home].tree.clone();
            tokio::spawn(crate::pipeline::supervise(tree, p.clone(), shutdown.clone()));
        }
    }
    Ok(out)
}

async fn start_machine(
    dep: &Deployment,
    m: &Machine,
    opts: &Options,
    shutdown: &CancellationToken,
) -> anyhow::Result<Running> {
    let mut cfg = Config::new(m.id.clone());
    cfg.gossip = m.gossip;
    cfg.registry = m.registry.clone();
    cfg.resume = m.resume;
    let scope = if opts.key_scope.is_empty() { "builtin" } else { &opts.key_scope };
    cfg.security = crate::keys::security(dep, m, scope)?;
    let router = Router::new(cfg, shutdown.child_token());
    router.set_policy(m.policy());
    if let Some(file) = opts.file.clone() {
        let id = m.id.clone();
        router.set_reloader(move |r| reload(&file, &id, r));
    }
    for ds in &m.listen {
        router.listen(ds).await.with_context(|| format!("machine {}: listen {ds}", m.id))?;
    }
    let dir = match &opts.socket_dir {
        Some(d) => d.clone(),
        None => ns::client::socket_dir(),
    };
    let socket = dir.join(format!("{}.sock", m.id));
    router
        .listen(&DialString::Unix(socket.clone()))
        .await
        .with_context(|| format!("machine {}: local socket {}", m.id, socket.display()))?;
    let tree = crate::fs::Namespace::new(router.clone());
    for spec in &m.services {
        match kinds::build(spec, &router) {
            Ok(built) => {
                router.add_service(spec.name.clone(), built.service);
                tree.set_kind(
                    spec.name.as_str(),
                    crate::fs::KindExtras { ctl: built.ctl, about: built.about, files: built.files, root: built.root },
                );
            }
            Err(e @ kinds::KindError::Unavailable { .. }) => warn!(machine = %m.id, "{e}; not offered"),
            Err(e) => return Err(e.into()),
        }
    }
    // Every router serves its tree to the others, and mounts it here.
    router.add_service(ns::conv::reserved(), Arc::new(crate::fs::remote::TreeServer(tree.clone())));
    let mount = if opts.no_mount { None } else { opts.mount.clone().or_else(|| m.mount.clone()) };
    let mounted = match mount {
        Some(path) => {
            let mounted = crate::fs::mount::mount(tree.clone(), &path, m.allow_other)
                .await
                .with_context(|| format!("machine {}", m.id))?;
            tree.set_mounted_at(&path, m.allow_other);
            Some(mounted)
        }
        None => None,
    };
    info!(machine = %m.id, socket = %socket.display(), "router up");
    Ok(Running { router, socket, mounted, tree })
}

/// Runs until `shutdown`, then stops every router; `now` cuts that stop
/// short (a second Ctrl-C): the mounts are detached and it returns.
pub async fn run(
    dep: &Deployment,
    opts: &Options,
    shutdown: CancellationToken,
    now: CancellationToken,
) -> anyhow::Result<()> {
    let running = start(dep, opts, &shutdown).await?;
    for (id, r) in &running {
        match &r.mounted {
            Some(m) => println!("{id} up: socket {}, mounted at {}", r.socket.display(), m.path().display()),
            None => println!("{id} up: socket {}", r.socket.display()),
        }
    }
    // SIGHUP reads the rules again, as `reload` in `ctl` does.
    let routers: Vec<Router> = running.values().map(|r| r.router.clone()).collect();
    let hup = tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            for r in &routers {
                let _ = r.reload();
            }
        }
    });
    shutdown.cancelled().await;
    hup.abort();
    let stop = async {
        // Unmount first: blocked readers get end of file before the routers
        // go. A mount still in use is detached, never waited for.
        for r in running.into_values() {
            if let Some(m) = r.mounted {
                m.unmount().await;
            }
            r.router.shutdown();
        }
        // Let the links say goodbye and the listeners remove their sockets.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    tokio::select! {
        () = stop => {}
        // Dropping the stop detaches whatever it has not unmounted yet.
        () = now.cancelled() => warn!("stopping at once"),
    }
    Ok(())
}

/// Reads machine `id`'s rules again from `file` and applies them: the
/// `allow`, `read` and `policy` keys take effect for new conversations and
/// tree operations at once; links and conversations stay. Other changes
/// to the file wait for a restart, and say so.
fn reload(file: &std::path::Path, id: &MachineId, r: &Router) -> Result<String, String> {
    let dep = ns::deploy::load(file).map_err(|e| e.to_string())?;
    let m = dep.machine(id.as_str()).ok_or_else(|| format!("{}: no machine {id} any more", file.display()))?;
    let new = m.policy();
    if new == *r.policy() {
        return Ok(format!("{}: rules unchanged", file.display()));
    }
    let (rules, deny) = (new.rules.len(), new.deny_by_default);
    r.set_policy(new);
    let policy = if deny { "deny" } else { "allow" };
    Ok(format!("{}: rules of {rules} services, policy {policy}, for new conversations", file.display()))
}

/// The machine of `dep` listening at `ds`, if any: the neighbour a dial
/// expects (a listener on `*` matches any host on its port).
fn machine_at(dep: &Deployment, ds: &dial::DialString) -> Option<MachineId> {
    use dial::DialString as D;
    let serves = |l: &D| match (l, ds) {
        (D::Tcp(h, p), D::Tcp(h2, p2)) | (D::Ws(h, p), D::Ws(h2, p2)) => p == p2 && (h == h2 || h.to_string() == "*"),
        _ => l == ds,
    };
    dep.machines.iter().find(|(_, m)| m.listen.iter().any(serves)).map(|(id, _)| id.clone())
}
