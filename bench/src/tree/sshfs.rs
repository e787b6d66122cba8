//! The remote-tree baseline: a directory through sshfs over loopback.
//!
//! [`Sshfs::start`] makes a throwaway key pair and host key in a private
//! directory, starts its own sshd (Debian's openssh-server) on a free
//! loopback port, allowing only that key, with the in-process SFTP server,
//! and mounts the directory with sshfs in the foreground, so both are
//! children of this process. Dropping the [`Sshfs`] unmounts (lazily, so a
//! busy mount cannot hold it) and kills both, whatever happened before:
//! an early return or a failed read leaves no mount and no process.
//!
//! Options are Debian's defaults apart from what a throwaway server
//! needs: no host key check, no password, the key file given. Nothing is
//! tuned (cipher, compression and caching as shipped), so the baseline is
//! sshfs as people get it.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

/// Longest wait for sshd to listen and for the mount to appear.
const START_WAIT: Duration = Duration::from_secs(10);
/// Starts of sshd tried, each on a fresh port, when its port was taken.
const SSHD_ATTEMPTS: usize = 5;

/// Why the baseline cannot run here: a program is missing.
#[derive(Debug, thiserror::Error)]
#[error("{0} not found (Debian: apt-get install sshfs openssh-server)")]
pub struct Missing(pub &'static str);

/// A running sshd and an sshfs mount of one directory; torn down on drop.
pub struct Sshfs {
    sshd: Option<Child>,
    sshfs: Option<Child>,
    mount: PathBuf,
    /// `/run/sshd` when this made it (sshd run as root needs it), to remove.
    made_privsep: Option<PathBuf>,
    /// `sshfs --version`'s first line and the SSH cipher in use, for notes.
    pub version: String,
}

/// The first of `dirs` (then `$PATH`) holding an executable `name`.
fn find(name: &'static str, dirs: &[&str]) -> Result<PathBuf, Missing> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    dirs.iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(Missing(name))
}

/// Runs a short command to completion; fails with its standard error.
fn run(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A loopback port nobody listens on now (the kernel's choice), for sshd
/// to bind: taken in between, sshd fails and is started again.
fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Whether `path` is a mount point now, from /proc/self/mountinfo.
fn mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(want.as_ref()))
}

fn user() -> anyhow::Result<String> {
    // SAFETY: geteuid cannot fail; getpwuid returns a pointer into static
    // storage or null, read at once.
    let name = unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() {
            None
        } else {
            Some(std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned())
        }
    };
    name.ok_or_else(|| anyhow!("this user has no name in the password database"))
}

impl Sshfs {
    /// Serves `dir` with a private sshd and mounts it at `mount`, with keys
    /// and configuration in `work` (a private directory). `Missing` (in the
    /// error chain) when sshfs, sshd or ssh-keygen is not installed.
    pub fn start(dir: &Path, mount: &Path, work: &Path) -> anyhow::Result<Sshfs> {
        let sshd_bin = find("sshd", &["/usr/sbin", "/usr/local/sbin", "/sbin"])?;
        let sshfs_bin = find("sshfs", &["/usr/bin", "/usr/local/bin"])?;
        let keygen = find("ssh-keygen", &["/usr/bin", "/usr/local/bin"])?;
        std::fs::create_dir_all(work).with_context(|| format!("create {}", work.display()))?;
        std::fs::create_dir_all(mount).with_context(|| format!("create {}", mount.display()))?;
        let (id, host) = (work.join("id"), work.join("host"));
        for key in [&id, &host] {
            let _ = std::fs::remove_file(key);
            run(Command::new(&keygen).args(["-q", "-t", "ed25519", "-N", ""]).arg("-f").arg(key), "ssh-keygen")?;
        }
        std::fs::copy(work.join("id.pub"), work.join("authorized_keys")).context("authorized_keys")?;
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let mut me =
            Sshfs { sshd: None, sshfs: None, mount: mount.to_path_buf(), made_privsep: None, version: String::new() };
        // sshd run as root checks its privilege separation directory
        // exists (Debian's service makes it at boot); make it if missing,
        // and remove it again at the end.
        let privsep = PathBuf::from("/run/sshd");
        if root && !privsep.exists() {
            std::fs::create_dir_all(&privsep).context("create /run/sshd for sshd")?;
            me.made_privsep = Some(privsep);
        }
        let user = user()?;
        let config = work.join("sshd_config");
        // sshd binds the port itself, so it is picked first: a connection
        // may take it in between (it is in the ephemeral range). Then sshd
        // exits saying so, and it starts again on another.
        let mut port = 0;
        for attempt in 1..=SSHD_ATTEMPTS {
            port = free_port()?;
            std::fs::write(
                &config,
                format!(
                    "ListenAddress 127.0.0.1:{port}\nHostKey {}\nPidFile none\nAuthorizedKeysFile {}\nAllowUsers {user}\n\
                     StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                     PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\nLogLevel ERROR\n",
                    host.display(),
                    work.join("authorized_keys").display()
                ),
            )
            .context("sshd_config")?;
            me.sshd = Some(
                Command::new(&sshd_bin)
                    .arg("-D")
                    .arg("-e")
                    .arg("-f")
                    .arg(&config)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .context("starting sshd")?,
            );
            match me.wait_sshd(port) {
                Ok(()) => break,
                Err(e) if attempt < SSHD_ATTEMPTS && e.contains("Address already in use") => continue,
                Err(e) => bail!("{e}"),
            }
        }
        let until = Instant::now() + START_WAIT;
        let opts = format!(
            "IdentityFile={},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes,LogLevel=ERROR",
            id.display()
        );
        me.sshfs = Some(
            Command::new(&sshfs_bin)
                .arg("-f")
                .args(["-p", &port.to_string(), "-o", &opts])
                .arg(format!("{user}@127.0.0.1:{}", dir.display()))
                .arg(mount)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting sshfs")?,
        );
        while !mounted(mount) {
            if let Some(st) = me.sshfs.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let mut err = String::new();
                if let Some(e) = me.sshfs.as_mut().and_then(|c| c.stderr.as_mut()) {
                    let _ = e.read_to_string(&mut err);
                }
                bail!("sshfs exited ({st}): {}", err.trim());
            }
            if Instant::now() > until {
                bail!("sshfs did not mount {} after {START_WAIT:?}", mount.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let version = run(Command::new(&sshfs_bin).arg("--version"), "sshfs --version").unwrap_or_default();
        let version = version.lines().find(|l| l.starts_with("SSHFS")).unwrap_or("sshfs").to_string();
        // `ssh -V` prints to standard error.
        let ssh = Command::new("ssh")
            .arg("-V")
            .stdin(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string());
        me.version = match ssh {
            Ok(s) if !s.is_empty() => format!("{version}, {s}"),
            _ => version,
        };
        Ok(me)
    }
}

impl Sshfs {
    /// [`Sshfs::start`] on a blocking thread, for workload `who`: the
    /// baseline, or why it is not available (said on standard error too).
    pub async fn baseline(dir: &Path, mount: &Path, work: &Path, who: &str) -> anyhow::Result<(Option<Sshfs>, String)> {
        let (d, m, w) = (dir.to_path_buf(), mount.to_path_buf(), work.to_path_buf());
        let ssh = tokio::task::spawn_blocking(move || Sshfs::start(&d, &m, &w)).await.context("starting sshfs")?;
        Ok(match ssh {
            Ok(s) => (Some(s), String::new()),
            Err(e) => {
                eprintln!("mesh-bench: {who}: sshfs baseline not available: {e:#}");
                (None, format!("{e:#}"))
            }
        })
    }

    /// Waits for the sshd just started to listen on `port`; if it exits
    /// first, says why (its standard error).
    fn wait_sshd(&mut self, port: u16) -> Result<(), String> {
        let until = Instant::now() + START_WAIT;
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Some(st) = self.sshd.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let mut err = String::new();
                if let Some(e) = self.sshd.as_mut().and_then(|c| c.stderr.as_mut()) {
                    let _ = e.read_to_string(&mut err);
                }
                self.sshd = None;
                return Err(format!("sshd exited ({st}): {}", err.trim()));
            }
            if Instant::now() > until {
                return Err(format!("sshd not listening on 127.0.0.1:{port} after {START_WAIT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Where the directory is mounted.
    pub fn mount(&self) -> &Path {
        &self.mount
    }
}

impl Drop for Sshfs {
    fn drop(&mut self) {
        if mounted(&self.mount) {
            // Lazy, so an open file cannot keep the mount; fusermount3 is
            // what sshfs 3 uses, fusermount the older name.
            let ok = ["fusermount3", "fusermount"].iter().any(|f| {
                Command::new(f)
                    .arg("-u")
                    .arg("-z")
                    .arg(&self.mount)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            });
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
            }
        }
        for child in [self.sshfs.take(), self.sshd.take()].into_iter().flatten() {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(d) = self.made_privsep.take() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_named() {
        let e = find("no-such-program-for-mesh-bench", &["/nonexistent"]).expect_err("missing");
        assert!(e.to_string().starts_with("no-such-program-for-mesh-bench not found"), "{e}");
        assert!(!mounted(Path::new("/nonexistent/mount")));
    }
}
