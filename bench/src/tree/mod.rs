//! Workload `tree`: a file of another machine read through the mount
//! (issue 7, workload 4), against sshfs over loopback.
//!
//! Machine b serves a directory as a `dir` service `files`; machine a,
//! linked to b over tcp, mounts its tree; the workload reads
//! `a/n/b/svc/files/root/big` (256 MiB; 32 MiB with `--quick`) with
//! 1 MiB reads, each read of the whole file from a fresh open. Twice: a
//! mesh whose link is encrypted (Noise, as deployed: the target's case,
//! since ssh encrypts too) and one in plaintext. Baseline: the same file
//! through sshfs, from an sshd the bench starts on a loopback port with a
//! throwaway key ([`sshfs`]); where sshfs or sshd is not installed the
//! rows say so and the mesh is still measured. For reference the note
//! gives the same file read directly.
//!
//! Caches, for fairness: every path reads the whole file once before
//! anything is timed, so the file is in the page cache of b's disk for
//! all of them (nothing drops caches: that needs root and disturbs the
//! machine). Neither client keeps file data between opens: the mesh's
//! served files open with direct I/O, and sshfs runs with its defaults,
//! which leave out `kernel_cache` and `auto_cache`, so each timed read
//! crosses the link. Reads take turns by rounds, in a rotating order.

pub mod sshfs;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use srv::fs::mount::Mounted;

use crate::mesh::Chain;
use crate::report::{Row, Target, Unit};
use crate::rpc::GRACE;
use crate::stats::Transfer;
use crate::{Ctx, Sizes};

/// Bytes per read(2): what `cat` asks of a file whose block size is
/// 1 MiB (the mesh's served files report that).
const READ: usize = 1 << 20;
/// How long a fresh mount may take to show b's file.
const VISIBLE_WAIT: Duration = Duration::from_secs(15);

/// Machines a and b, b serving `dir` as `files`, a's tree mounted.
pub(crate) struct Remote {
    _chain: Chain,
    pub(crate) mounted: Mounted,
}

impl Remote {
    pub(crate) async fn start(dir: &Path, mount: &Path, secure: bool) -> anyhow::Result<Remote> {
        let nodes = [("a", "tcp!127.0.0.1!0".to_string()), ("b", "tcp!127.0.0.2!0".to_string())];
        let chain = if secure { Chain::new_secure(&nodes).await? } else { Chain::new(&nodes).await? };
        let b = chain.router(1)?;
        let root = srv::fs::dir::Root::open(dir).map_err(|e| anyhow!("dir {}: {e}", dir.display()))?;
        // a's user is b's, as sshfs logs in as the bench's own user.
        let root = Arc::new(root.squashing(ns::deploy::Squash::None));
        let tree = srv::fs::Namespace::new(b.clone());
        tree.set_kind("files", srv::fs::KindExtras { root: Some(root.clone()), ..Default::default() });
        b.add_service(crate::mesh::name("files")?, Arc::new(srv::fs::dir::DirService::new(root, "files")));
        // b serves its tree to a, as every router of a deployment does.
        b.add_service(ns::conv::reserved(), Arc::new(srv::fs::remote::TreeServer(tree)));
        let mounted = srv::fs::mount::mount(srv::fs::Namespace::new(chain.head().clone()), mount, false).await?;
        Ok(Remote { _chain: chain, mounted })
    }

    /// b's served directory as a sees it.
    pub(crate) fn root(&self) -> PathBuf {
        self.mounted.path().join("n/b/svc/files/root")
    }

    /// b's file as a sees it.
    fn file(&self) -> PathBuf {
        self.root().join("big")
    }
}

/// One way to read the file, and what its reads came to.
struct Reader {
    label: &'static str,
    path: PathBuf,
    got: Transfer,
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let sz = ctx.sizes.clone();
    let name = format!("tree read {} MiB file", sz.tree_bytes >> 20);
    if !Path::new("/dev/fuse").exists() {
        return Ok(vec![Row::new(name, "all", Unit::MBps, None, None, "sshfs").note("not run: no /dev/fuse")]);
    }
    let tmp = ctx.tmp.path();
    let dir = tmp.join("tree-b");
    let src = dir.join("big");
    {
        let (dir, src, n) = (dir.clone(), src.clone(), sz.tree_bytes);
        tokio::task::spawn_blocking(move || make_file(&dir, &src, n)).await.context("making the file")??;
    }
    let secure = Remote::start(&dir, &tmp.join("tree-a-noise"), true).await?;
    let plain = match Remote::start(&dir, &tmp.join("tree-a-plain"), false).await {
        Ok(p) => p,
        Err(e) => {
            secure.mounted.unmount().await;
            return Err(e);
        }
    };
    // The baseline, started on a blocking thread (it spawns and waits).
    let (ssh, why_not) = sshfs::Sshfs::baseline(&dir, &tmp.join("tree-sshfs"), &tmp.join("tree-ssh"), "tree").await?;
    let mut paths = vec![
        Reader { label: "mesh, encrypted", path: secure.file(), got: Transfer::default() },
        Reader { label: "mesh, plaintext", path: plain.file(), got: Transfer::default() },
        Reader { label: "local file", path: src.clone(), got: Transfer::default() },
    ];
    if let Some(s) = &ssh {
        paths.push(Reader { label: "sshfs", path: s.mount().join("big"), got: Transfer::default() });
    }
    let reads = (paths.len() * (sz.tree_rounds + 1)) as u32;
    let budget = VISIBLE_WAIT + sz.phase_limit * reads + GRACE;
    let res = tokio::time::timeout(
        budget,
        tokio::task::spawn_blocking(move || {
            let r = measure(&sz, &src, &mut paths);
            (r, paths)
        }),
    )
    .await;
    // Tear down whatever happened: mounts first, so no read stays blocked.
    secure.mounted.unmount().await;
    plain.mounted.unmount().await;
    let version = ssh.as_ref().map(|s| s.version.clone()).unwrap_or_default();
    tokio::task::spawn_blocking(move || drop(ssh)).await.context("stopping sshfs")?;
    let (r, paths) =
        res.map_err(|_| anyhow!("tree workload over its budget of {budget:?}"))?.context("tree workload thread")?;
    r?;
    Ok(rows(&ctx.sizes, &name, &paths, &version, &why_not))
}

fn rows(sz: &Sizes, name: &str, paths: &[Reader], version: &str, why_not: &str) -> Vec<Row> {
    let get = |l: &str| paths.iter().find(|p| p.label == l);
    let rate = |l: &str| get(l).and_then(|p| p.got.mb_per_s());
    let base = rate("sshfs");
    let local = rate("local file").map(|r| format!("{r:.0} MB/s")).unwrap_or_else(|| "?".into());
    let note = |l: &str| {
        let n = get(l).map(|p| p.got.bytes / sz.tree_bytes.max(1) as u64).unwrap_or(0);
        let how = format!(
            "{n} timed reads per path in {} rounds, 1 MiB reads from a fresh open, after one untimed read per path (the file is then in b's page cache for all; neither client caches between opens); the file read directly: {local}",
            sz.tree_rounds
        );
        if base.is_some() {
            format!("{how}; baseline {version}, defaults")
        } else {
            format!("baseline not available: {why_not}; {how}")
        }
    };
    let baseline_name = if base.is_some() { "sshfs over loopback" } else { "sshfs: baseline not available" };
    vec![
        Row::new(
            name,
            "a/n/b/svc/files/root, tcp, encrypted",
            Unit::MBps,
            rate("mesh, encrypted"),
            base,
            baseline_name,
        )
        .target(Target::AtLeast(2.0))
        .note(note("mesh, encrypted")),
        Row::new(
            name,
            "a/n/b/svc/files/root, tcp, plaintext",
            Unit::MBps,
            rate("mesh, plaintext"),
            base,
            baseline_name,
        )
        .note(note("mesh, plaintext")),
    ]
}

/// Fills `path` with `n` pseudo-random bytes (not zeros, which some
/// layers could treat specially), creating `dir`.
pub(crate) fn make_file(dir: &Path, path: &Path, n: usize) -> anyhow::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut f = std::io::BufWriter::with_capacity(
        READ,
        File::create(path).with_context(|| format!("create {}", path.display()))?,
    );
    let mut rng = crate::discovery::graph::Rng::new(0x7ee);
    let mut block = vec![0u8; READ];
    let mut left = n;
    while left > 0 {
        for w in block.chunks_exact_mut(8) {
            w.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let k = left.min(READ);
        f.write_all(&block[..k])?;
        left -= k;
    }
    f.flush()?;
    Ok(())
}

/// Waits for every path, reads each once (checking the bytes against the
/// source), then times whole-file reads round by round; blocking.
fn measure(sz: &Sizes, src: &Path, paths: &mut [Reader]) -> anyhow::Result<()> {
    let until = Instant::now() + VISIBLE_WAIT;
    for p in paths.iter() {
        while std::fs::metadata(&p.path).map(|m| m.len()).unwrap_or(0) != sz.tree_bytes as u64 {
            if Instant::now() > until {
                bail!("{} ({}) not visible after {VISIBLE_WAIT:?}", p.label, p.path.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut buf = vec![0u8; READ];
    let mut want = vec![0u8; READ];
    for p in paths.iter() {
        compare(&p.path, src, &mut buf, &mut want).with_context(|| format!("{}: warm-up read", p.label))?;
    }
    for round in 0..sz.tree_rounds {
        for k in 0..paths.len() {
            let i = (k + round) % paths.len();
            let p = &mut paths[i];
            let (bytes, took) =
                read_all(&p.path, &mut buf, sz.phase_limit).with_context(|| format!("{}: read", p.label))?;
            if bytes != sz.tree_bytes as u64 && took < sz.phase_limit {
                bail!("{}: read {bytes} bytes of {}", p.label, sz.tree_bytes);
            }
            p.got.add(bytes, took);
        }
    }
    Ok(())
}

/// Reads `path` to its end, or until `limit`: bytes and time taken.
fn read_all(path: &Path, buf: &mut [u8], limit: Duration) -> anyhow::Result<(u64, Duration)> {
    let t = Instant::now();
    let mut f = File::open(path)?;
    let mut total = 0u64;
    loop {
        let n = f.read(buf)?;
        total += n as u64;
        if n == 0 || t.elapsed() > limit {
            break;
        }
    }
    Ok((total, t.elapsed()))
}

/// Reads `path` whole and fails unless it equals `src`.
fn compare(path: &Path, src: &Path, buf: &mut [u8], want: &mut [u8]) -> anyhow::Result<()> {
    let (mut f, mut s) = (File::open(path)?, File::open(src)?);
    let mut at = 0u64;
    loop {
        let n = f.read(buf)?;
        if n == 0 {
            break;
        }
        s.read_exact(&mut want[..n]).map_err(|_| anyhow!("longer than the source: more than {at} bytes"))?;
        if buf[..n] != want[..n] {
            bail!("differs from the source within bytes {at}..{}", at + n as u64);
        }
        at += n as u64;
    }
    if s.read(&mut want[..1])? != 0 {
        bail!("shorter than the source: {at} bytes");
    }
    Ok(())
}
