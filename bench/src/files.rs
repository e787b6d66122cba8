//! Workload `fuse`: the mesh as files, through a real FUSE mount.
//!
//! (a) One fd opened O_RDWR on `svc/echo/data`: write 64 bytes, read the
//! 64-byte reply, in a loop; against the same loop on the null FUSE file
//! system ([`crate::nullfs`]). (b) 1 MiB writes into a conversation with
//! `svc/sink` (opened through `clone`, so that closing the writer is end
//! of input while another fd still reads the sink's byte count); against
//! 1 MiB writes to a file in /dev/shm, and for reference to the null
//! FUSE file.
//!
//! File I/O blocks, so all of it runs on one blocking thread while the
//! FUSE servers run on the runtime. Every loop has its own deadline, and
//! the whole thread a time budget; past it the mounts are torn down,
//! which ends any read still blocked (the mesh answers it with EOF).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::mesh::Chain;
use crate::report::{Row, Target, Unit};
use crate::rpc::GRACE;
use crate::stats::{Samples, Transfer, Usage};
use crate::{nullfs, Ctx, Sizes};

const SMALL: usize = 64;
const BIG: usize = 1 << 20;
/// The tmpfs file is cut back to empty past this, so the baseline keeps
/// writing fresh pages like a growing file without filling memory.
const SHM_WRAP: u64 = 64 << 20;

/// Latencies and throughput of one case.
#[derive(Default)]
struct Got {
    ops: Samples,
    rate: Transfer,
}

#[derive(Default)]
struct Found {
    rt_mesh: Got,
    rt_null: Got,
    wr_mesh: Got,
    wr_null: Got,
    wr_shm: Got,
    shm_dir: PathBuf,
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    if !Path::new("/dev/fuse").exists() {
        return Ok(vec![Row::new("fuse", "all", Unit::Micros, None, None, "null FUSE").note("not run: no /dev/fuse")]);
    }
    let chain = Chain::single("f")?;
    let mesh_at = ctx.tmp.path().join("mesh");
    let mesh = srv::fs::mount::mount(srv::fs::Namespace::new(chain.head().clone()), &mesh_at, false).await?;
    // From here the guards unmount on any early return.
    let null = nullfs::mount(&ctx.tmp.path().join("null")).await?;
    let (sz, root, null_file) = (ctx.sizes.clone(), mesh_at.clone(), null.file());
    let loops = 5 + 5 * sz.rounds as u32;
    let budget = sz.phase_limit * loops + GRACE;
    let res = tokio::time::timeout(budget, tokio::task::spawn_blocking(move || measure(&sz, &root, &null_file))).await;
    mesh.unmount().await;
    null.unmount().await;
    let found =
        res.map_err(|_| anyhow!("FUSE workload over its budget of {budget:?}"))?.context("FUSE workload thread")??;
    Ok(rows(&found))
}

fn rows(f: &Found) -> Vec<Row> {
    let mut rows = Vec::new();
    for (metric, pct) in [("p50", 50.0), ("p99", 99.0)] {
        let mut r = Row::new(
            format!("fuse 64 B write+read {metric}"),
            "svc/echo/data",
            Unit::Micros,
            f.rt_mesh.ops.percentile_us(pct),
            f.rt_null.ops.percentile_us(pct),
            "null FUSE",
        )
        .note(format!("{} vs {} round trips", f.rt_mesh.ops.len(), f.rt_null.ops.len()));
        if metric == "p50" {
            r = r.target(Target::AtMost(2.0));
        }
        rows.push(r);
    }
    let shm = format!("{} file", f.shm_dir.display());
    for (metric, pct) in [("p50", 50.0), ("p99", 99.0)] {
        rows.push(
            Row::new(
                format!("fuse 1 MiB write {metric}"),
                "svc/sink/N/data",
                Unit::Micros,
                f.wr_mesh.ops.percentile_us(pct),
                f.wr_shm.ops.percentile_us(pct),
                &shm,
            )
            .note(format!("{} vs {} writes", f.wr_mesh.ops.len(), f.wr_shm.ops.len())),
        );
    }
    let mib = |g: &Got| g.rate.bytes >> 20;
    // What the process spent per MiB written: CPU and fresh pages touched.
    let cost = |g: &Got| g.rate.usage.per_op(mib(g)).replace("per op", "per MiB");
    rows.push(
        Row::new(
            "fuse 1 MiB writes",
            "svc/sink/N/data",
            Unit::MBps,
            f.wr_mesh.rate.mb_per_s(),
            f.wr_shm.rate.mb_per_s(),
            &shm,
        )
        .note(format!(
            "{} MiB vs {} MiB; mesh timed to the sink's count; mesh {}; tmpfs {}",
            mib(&f.wr_mesh),
            mib(&f.wr_shm),
            cost(&f.wr_mesh),
            cost(&f.wr_shm)
        )),
    );
    // The same mesh numbers against the null FUSE file: what the mesh adds
    // on top of FUSE itself.
    rows.push(Row::new(
        "fuse 1 MiB write p50",
        "svc/sink/N/data",
        Unit::Micros,
        f.wr_mesh.ops.p50(),
        f.wr_null.ops.p50(),
        "null FUSE",
    ));
    rows.push(
        Row::new(
            "fuse 1 MiB writes",
            "svc/sink/N/data",
            Unit::MBps,
            f.wr_mesh.rate.mb_per_s(),
            f.wr_null.rate.mb_per_s(),
            "null FUSE",
        )
        .note(format!("{} MiB vs {} MiB; null FUSE {}", mib(&f.wr_mesh), mib(&f.wr_null), cost(&f.wr_null))),
    );
    rows
}

/// Runs every case, interleaved by rounds; blocking.
fn measure(sz: &Sizes, root: &Path, null_file: &Path) -> anyhow::Result<Found> {
    let mut f = Found { shm_dir: shm_dir(), ..Found::default() };
    let rw =
        |p: &Path| OpenOptions::new().read(true).write(true).open(p).with_context(|| format!("open {}", p.display()));
    let mut echo = rw(&root.join("svc/echo/data"))?;
    let mut null = rw(null_file)?;
    round_trips(&mut echo, sz.warmup, sz.phase_limit).context("echo warm-up")?;
    round_trips(&mut null, sz.warmup, sz.phase_limit).context("null warm-up")?;
    for round in 0..sz.rounds {
        // Alternate who goes first.
        let order: [bool; 2] = if round % 2 == 0 { [true, false] } else { [false, true] };
        for mesh in order {
            if mesh {
                f.rt_mesh.ops.extend(round_trips(&mut echo, sz.fuse_iters, sz.phase_limit).context("echo")?);
            } else {
                f.rt_null.ops.extend(round_trips(&mut null, sz.fuse_iters, sz.phase_limit).context("null")?);
            }
        }
    }
    drop((echo, null));
    let chunk = vec![0xa5u8; BIG];
    let warm = (sz.fuse_bytes / 8).max(BIG);
    sink_writes(root, &chunk, warm, sz.phase_limit).context("sink warm-up")?;
    null_writes(null_file, &chunk, warm, sz.phase_limit).context("null warm-up")?;
    shm_writes(&f.shm_dir, &chunk, warm, sz.phase_limit).context("shm warm-up")?;
    for round in 0..sz.rounds {
        for k in 0..3 {
            let before = Usage::now();
            let (got, res) = match (k + round) % 3 {
                0 => (&mut f.wr_mesh, sink_writes(root, &chunk, sz.fuse_bytes, sz.phase_limit).context("sink")),
                1 => (
                    &mut f.wr_null,
                    null_writes(null_file, &chunk, sz.fuse_bytes, sz.phase_limit).context("null writes"),
                ),
                _ => {
                    (&mut f.wr_shm, shm_writes(&f.shm_dir, &chunk, sz.fuse_bytes, sz.phase_limit).context("shm writes"))
                }
            };
            let (ops, bytes, took) = res?;
            got.ops.extend(ops);
            got.rate.add(bytes, took);
            got.rate.usage.add(Usage::since(before));
        }
    }
    Ok(f)
}

/// Where the tmpfs baseline writes; the temp dir if there is no /dev/shm.
fn shm_dir() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// `n` times (or until `limit`): write 64 bytes, read the 64-byte reply.
fn round_trips(f: &mut File, n: usize, limit: Duration) -> anyhow::Result<Samples> {
    let msg = [0x5au8; SMALL];
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + limit;
    let mut s = Samples::with_capacity(n);
    for _ in 0..n {
        if Instant::now() >= deadline {
            break;
        }
        let t = Instant::now();
        // One write() is one message: no write_all, which could split it.
        let w = f.write(&msg)?;
        let r = f.read(&mut buf)?;
        s.push(t.elapsed());
        if w != SMALL || r != SMALL {
            bail!("wrote {w} bytes and read {r}, expected {SMALL} each");
        }
    }
    Ok(s)
}

/// Writes `chunk` until `total` bytes or `limit`, timing each write().
/// `before` runs ahead of each write, untimed (the tmpfs wrap).
fn timed_writes(
    f: &mut File,
    chunk: &[u8],
    total: usize,
    limit: Duration,
    mut before: impl FnMut(&mut File, u64) -> std::io::Result<()>,
) -> anyhow::Result<(Samples, u64)> {
    let deadline = Instant::now() + limit;
    let mut ops = Samples::with_capacity(total / chunk.len() + 1);
    let mut sent: u64 = 0;
    while (sent as usize) < total && Instant::now() < deadline {
        before(f, sent)?;
        let t = Instant::now();
        let n = f.write(chunk)?;
        ops.push(t.elapsed());
        if n == 0 {
            bail!("write returned 0");
        }
        sent += n as u64;
    }
    Ok((ops, sent))
}

/// 1 MiB writes into a new conversation with the sink; timed until the
/// sink's count arrives, which it sends once the writer has closed.
fn sink_writes(root: &Path, chunk: &[u8], total: usize, limit: Duration) -> anyhow::Result<(Samples, u64, Duration)> {
    let clone_path = root.join("svc/sink/clone");
    let mut clone = File::open(&clone_path).with_context(|| format!("open {}", clone_path.display()))?;
    let mut num = [0u8; 32];
    let len = clone.read(&mut num)?;
    let n: u64 = std::str::from_utf8(&num[..len])
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| anyhow!("clone gave no conversation number"))?;
    let data = root.join(format!("svc/sink/{n}/data"));
    let mut writer =
        OpenOptions::new().write(true).open(&data).with_context(|| format!("open {} to write", data.display()))?;
    let mut reader = File::open(&data).with_context(|| format!("open {} to read", data.display()))?;
    let t = Instant::now();
    let (ops, sent) = timed_writes(&mut writer, chunk, total, limit, |_, _| Ok(()))?;
    // The last writer's close is end of input: the sink answers its count.
    drop(writer);
    let mut answer = [0u8; 32];
    let len = reader.read(&mut answer)?;
    let took = t.elapsed();
    let got: u64 = std::str::from_utf8(&answer[..len])
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| anyhow!("the sink answered no count"))?;
    if got != sent {
        bail!("wrote {sent} bytes, the sink got {got}");
    }
    drop((reader, clone));
    Ok((ops, sent, took))
}

fn null_writes(path: &Path, chunk: &[u8], total: usize, limit: Duration) -> anyhow::Result<(Samples, u64, Duration)> {
    let mut f = OpenOptions::new().write(true).open(path).with_context(|| format!("open {}", path.display()))?;
    let t = Instant::now();
    let (ops, sent) = timed_writes(&mut f, chunk, total, limit, |_, _| Ok(()))?;
    Ok((ops, sent, t.elapsed()))
}

fn shm_writes(dir: &Path, chunk: &[u8], total: usize, limit: Duration) -> anyhow::Result<(Samples, u64, Duration)> {
    // Removed when dropped, even on error.
    let mut tmp = tempfile::Builder::new()
        .prefix("mesh-bench-")
        .tempfile_in(dir)
        .with_context(|| format!("a file in {}", dir.display()))?;
    let f = tmp.as_file_mut();
    let t = Instant::now();
    let (ops, sent) = timed_writes(f, chunk, total, limit, |f, sent| {
        if sent > 0 && sent % SHM_WRAP == 0 {
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
        }
        Ok(())
    })?;
    Ok((ops, sent, t.elapsed()))
}
