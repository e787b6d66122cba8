//! `mesh ns`: a command in a namespace of its own.
//!
//! 1. The namespace file is parsed first ([`ns::nsfile`]): a bad line
//!    stops everything with its file and line number.
//! 2. The router mounts a private view of its tree next to its own mount
//!    (`TreeReq::View`); the view lives as long as this process's
//!    conversation with the router, so it goes when `mesh ns` goes, even
//!    killed.
//! 3. The file's `bind`, `mount` and `unmount` lines go to the view as
//!    ctl messages over that conversation; a refused one is reported with
//!    its line.
//! 4. The command runs in a private mount namespace (unshare(2)) where the
//!    view is bound over the machine's mount point, the view's staging
//!    mount is hidden, and the file's binds onto host paths are bind
//!    mounts. Nothing of it is visible to other processes; all of it is
//!    gone when the command ends.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use dial::DialString;
use ns::conv::Msg;
use ns::nsfile::{Line, Op, Place};
use ns::Addr;

use crate::fs::remote::{decode, encode, first, TreeReq, TreeResp};

/// What `mesh ns` was asked to do.
pub struct Options {
    /// The namespace file; none: the machine's tree as it is.
    pub file: Option<PathBuf>,
    pub router: DialString,
    pub command: Vec<String>,
}

/// The host side of the namespace: what the child's mount namespace gets.
struct Setup {
    staging: CString,
    mount: CString,
    /// Bind mounts onto host paths, in file order.
    binds: Vec<(CString, CString)>,
    cd: Option<CString>,
}

fn cstr(p: &Path) -> anyhow::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).with_context(|| format!("{}: NUL in path", p.display()))
}

/// Runs the command in its namespace; returns its exit code (128 + the
/// signal that ended it, as shells do).
pub async fn run(opts: Options) -> anyhow::Result<i32> {
    if opts.command.is_empty() {
        bail!("mesh ns: no command");
    }
    let lines = match &opts.file {
        Some(f) => ns::nsfile::load(f).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    let client = ns::client::Client::connect(&opts.router)
        .await
        .with_context(|| format!("cannot reach the router at {}", opts.router))?;
    let mut conv = client.open(Addr::on(client.machine().clone(), ns::conv::reserved()), Vec::new());
    conv.tx.send(first(&TreeReq::View)).await.map_err(anyhow::Error::msg)?;
    let (staging, mount) = match recv(&mut conv).await? {
        TreeResp::View { staging, mount } => (PathBuf::from(staging), PathBuf::from(mount)),
        other => bail!("unexpected answer to a view: {other:?}"),
    };
    let mut setup = Setup { staging: cstr(&staging)?, mount: cstr(&mount)?, binds: Vec::new(), cd: None };
    for l in &lines {
        apply(&mut conv, &mut setup, &mount, l).await?;
    }
    let mut cmd = std::process::Command::new(&opts.command[0]);
    cmd.args(&opts.command[1..]);
    // SAFETY: the closure runs in the child between fork and exec. It
    // only makes system calls on strings prepared before the fork, and
    // allocates nothing (errors are raw errno values).
    unsafe {
        cmd.pre_exec(move || enter(&setup));
    }
    let status = tokio::task::spawn_blocking(move || cmd.status()).await?.with_context(|| {
        format!(
            "mesh ns: {}: cannot run it in its namespace (mesh ns needs CAP_SYS_ADMIN: run it as root)",
            opts.command[0]
        )
    })?;
    drop(conv);
    drop(client);
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

async fn recv(conv: &mut ns::Conv) -> anyhow::Result<TreeResp> {
    match conv.rx.recv().await {
        Some(Msg::Data(b)) => match decode::<TreeResp>(&b).map_err(anyhow::Error::msg)? {
            TreeResp::Err(e) => bail!("{e}"),
            r => Ok(r),
        },
        Some(Msg::Error(e)) => bail!("{e}"),
        _ => bail!("the router ended the view"),
    }
}

/// Applies one line: to the view through the router, or to the setup of
/// the child's mount namespace.
async fn apply(conv: &mut ns::Conv, setup: &mut Setup, mount: &Path, l: &Line) -> anyhow::Result<()> {
    let host = |p: &Place| match p {
        Place::Mesh(parts) => parts.iter().fold(mount.to_path_buf(), |acc, c| acc.join(c)),
        Place::Host(p) => p.clone(),
    };
    match &l.op {
        Op::Bind { .. } | Op::Mount { .. } | Op::Unmount { .. } => {
            conv.tx
                .send(encode(&TreeReq::Write(l.text.as_bytes().to_vec())))
                .await
                .map_err(|e| anyhow::anyhow!(l.error(e)))?;
            recv(conv).await.map_err(|e| anyhow::anyhow!(l.error(e)))?;
        }
        Op::HostBind { old, new } => {
            if !new.exists() {
                bail!(l.error(format!("{}: no such file or directory on this host", new.display())));
            }
            setup.binds.push((cstr(&host(old))?, cstr(new)?));
        }
        Op::Cd(p) => setup.cd = Some(cstr(&host(p))?),
    }
    Ok(())
}

/// In the child: a mount namespace of its own, the view over the mount
/// point, the host binds, the working directory.
fn enter(s: &Setup) -> std::io::Result<()> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let none: Option<&std::ffi::CStr> = None;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    // Nothing done here may propagate back to the host's namespace.
    mount(none, c"/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)?;
    mount(Some(s.staging.as_c_str()), s.mount.as_c_str(), none, MsFlags::MS_BIND, none)?;
    umount2(s.staging.as_c_str(), MntFlags::MNT_DETACH)?;
    for (src, dst) in &s.binds {
        mount(Some(src.as_c_str()), dst.as_c_str(), none, MsFlags::MS_BIND, none)?;
    }
    if let Some(d) = &s.cd {
        nix::unistd::chdir(d.as_c_str())?;
    }
    Ok(())
}
