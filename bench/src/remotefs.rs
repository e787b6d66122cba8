//! Workload `remote-fs`: what ordinary programs do to a directory of
//! another machine (issue 15), beside sshfs and a local directory.
//!
//! Machine b serves a directory as `files`; machine a, linked to b over
//! tcp with Noise (as deployed, and since ssh encrypts too), mounts its
//! tree, and every job runs on `a/n/b/svc/files/root/`. Both are `mesh
//! up` processes of their own, as deployed ([`crate::procs`]). The baseline is
//! the same directory through sshfs from a private sshd on loopback
//! ([`crate::tree::sshfs`], Debian's defaults); the local directory is
//! the reference (no ratio). The three are views of one directory on b's
//! disk, used one at a time.
//!
//! Jobs, each on every path in rotating order, round by round:
//!
//! - fio (where installed): 4 KiB random read and write at queue depth 1
//!   (psync) and 16 (libaio), direct; 4 KiB random at depth 1 buffered;
//!   1 MiB sequential read and write, direct and buffered. One file made
//!   on b's disk before, the same for all paths; time-based runs.
//! - `git add -A` and `git commit` of about 1,000 files in 25 directories
//!   (written through the path beforehand, untimed).
//! - `tar x` of about 2,000 small files in 100 directories, from a tar
//!   file on local disk.
//! - `rm -rf` of them.
//!
//! `MESH_BENCH_CASE=TEXT` runs only the fio jobs whose name holds TEXT
//! (none for `meta`), beside the metadata jobs.
//!
//! Targets: 4 KiB random read and write at least 1.5x sshfs's IOPS, 1 MiB
//! sequential at least 5x its MB/s, the metadata jobs in at most half its
//! time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::procs::{Deployed, Extra};
use crate::report::{Row, Target, Unit};
use crate::rpc::GRACE;
use crate::stats::{median, spread};
use crate::tree::sshfs;
use crate::Ctx;

/// One way to the directory.
struct Place {
    label: &'static str,
    dir: PathBuf,
}

/// A fio job: name, `--rw`, block size, depth, direct.
struct Fio {
    name: &'static str,
    rw: &'static str,
    bs: &'static str,
    depth: u32,
    direct: bool,
}

const FIO: &[Fio] = &[
    Fio { name: "4k randread QD1 direct", rw: "randread", bs: "4k", depth: 1, direct: true },
    Fio { name: "4k randwrite QD1 direct", rw: "randwrite", bs: "4k", depth: 1, direct: true },
    Fio { name: "4k randread QD16 direct", rw: "randread", bs: "4k", depth: 16, direct: true },
    Fio { name: "4k randwrite QD16 direct", rw: "randwrite", bs: "4k", depth: 16, direct: true },
    Fio { name: "4k randread QD1 buffered", rw: "randread", bs: "4k", depth: 1, direct: false },
    Fio { name: "4k randwrite QD1 buffered", rw: "randwrite", bs: "4k", depth: 1, direct: false },
    Fio { name: "1M read direct", rw: "read", bs: "1m", depth: 1, direct: true },
    Fio { name: "1M write direct", rw: "write", bs: "1m", depth: 1, direct: true },
    Fio { name: "1M read buffered", rw: "read", bs: "1m", depth: 1, direct: false },
    Fio { name: "1M write buffered", rw: "write", bs: "1m", depth: 1, direct: false },
];

/// Metadata jobs, by name.
const META: &[&str] = &["git add + commit", "tar x", "rm -rf"];

/// How much: fio file size, seconds per fio run, files for git and tar,
/// rounds.
struct Size {
    fio_bytes: u64,
    fio_secs: u32,
    git_files: usize,
    tar_files: usize,
    rounds: usize,
}

fn size(quick: bool) -> Size {
    if quick {
        Size { fio_bytes: 16 << 20, fio_secs: 1, git_files: 200, tar_files: 400, rounds: 1 }
    } else {
        Size { fio_bytes: 128 << 20, fio_secs: 4, git_files: 1000, tar_files: 2000, rounds: 3 }
    }
}

/// What a path measured: per fio job the values of each round (IOPS for
/// 4 KiB, MB/s for 1 MiB), per metadata job its times.
#[derive(Default)]
struct Got {
    fio: Vec<Vec<f64>>,
    meta: Vec<Vec<Duration>>,
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let quick = ctx.sizes.phase_limit < Duration::from_secs(5);
    let sz = size(quick);
    if !Path::new("/dev/fuse").exists() {
        return Ok(vec![Row::new("remote-fs", "all", Unit::Millis, None, None, "sshfs").note("not run: no /dev/fuse")]);
    }
    let tmp = ctx.tmp.path();
    let served = tmp.join("rfs-b");
    std::fs::create_dir_all(&served).context("create the served directory")?;
    let mnt = tmp.join("rfs-a");
    let extra = [
        Extra {
            keys: format!("mount = {:?}\n", mnt.display().to_string()),
            mount: Some(mnt.clone()),
            ..Default::default()
        },
        Extra {
            // a's user is b's, as sshfs logs in as the bench's own user.
            services: vec![format!(
                "{{ name = \"files\", kind = \"dir\", root = {:?}, squash = \"none\" }}",
                served.display().to_string()
            )],
            ..Default::default()
        },
    ];
    let remote = Deployed::line_with(&["a", "b"], false, &extra).await?;
    let root = mnt.join("n/b/svc/files/root");
    let (ssh, why_not) =
        sshfs::Sshfs::baseline(&served, &tmp.join("rfs-sshfs"), &tmp.join("rfs-ssh"), "remote-fs").await?;
    let mut places = vec![Place { label: "mesh", dir: root }, Place { label: "local", dir: served.clone() }];
    if let Some(s) = &ssh {
        places.push(Place { label: "sshfs", dir: s.mount().to_path_buf() });
    }
    let has_fio = Command::new("fio").arg("--version").output().is_ok_and(|o| o.status.success());
    let jobs = FIO.len() * usize::from(has_fio) + META.len();
    let budget = Duration::from_secs(60)
        + Duration::from_secs(u64::from(sz.fio_secs) + 30) * (jobs * places.len() * sz.rounds) as u32
        + GRACE;
    let (tar_dir, served2) = (tmp.join("rfs-tar"), served.clone());
    let res = tokio::time::timeout(
        budget,
        tokio::task::spawn_blocking(move || {
            let r = measure(&sz, &served2, &tar_dir, &places, has_fio);
            (r, places)
        }),
    )
    .await;
    tokio::task::spawn_blocking(move || drop(remote)).await.context("stopping the routers")?;
    let version = ssh.as_ref().map(|s| s.version.clone()).unwrap_or_default();
    tokio::task::spawn_blocking(move || drop(ssh)).await.context("stopping sshfs")?;
    let (r, places) =
        res.map_err(|_| anyhow!("remote-fs workload over its budget of {budget:?}"))?.context("remote-fs thread")?;
    let got = r?;
    Ok(rows(&size(quick), &places, &got, has_fio, &version, &why_not))
}

/// Makes the fio file and the tar file, then runs every job on every
/// path, round by round; blocking.
fn measure(sz: &Size, served: &Path, tar_dir: &Path, places: &[Place], has_fio: bool) -> anyhow::Result<Vec<Got>> {
    let until = Instant::now() + Duration::from_secs(15);
    while !places.iter().all(|p| p.dir.is_dir()) {
        if Instant::now() > until {
            bail!("a path to the directory did not appear");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if has_fio {
        crate::tree::make_file(served, &served.join("fio.dat"), sz.fio_bytes as usize)?;
    }
    let ball = make_tar(tar_dir, sz.tar_files)?;
    let case = std::env::var("MESH_BENCH_CASE").ok();
    let chosen = |job: &Fio| case.as_deref().is_none_or(|c| job.name.contains(c));
    let mut got: Vec<Got> = places.iter().map(|_| Got::default()).collect();
    for g in &mut got {
        g.fio = vec![Vec::new(); FIO.len()];
        g.meta = vec![Vec::new(); META.len()];
    }
    for round in 0..sz.rounds {
        for k in 0..places.len() {
            let i = (k + round) % places.len();
            let p = &places[i];
            if has_fio {
                for (j, job) in FIO.iter().enumerate().filter(|(_, job)| chosen(job)) {
                    let v = fio(&p.dir.join("fio.dat"), job, sz)
                        .with_context(|| format!("{}: fio {}", p.label, job.name))?;
                    got[i].fio[j].push(v);
                }
            }
            let work = p.dir.join(format!("work-{}-{round}", p.label));
            std::fs::create_dir(&work).with_context(|| format!("{}: mkdir", p.label))?;
            let repo = work.join("repo");
            write_tree(&repo, sz.git_files).with_context(|| format!("{}: writing the repository", p.label))?;
            let t = Instant::now();
            shell(
                &repo,
                "git init -q && git add -A && git -c user.name=bench -c user.email=bench@mesh commit -q -m files",
            )
            .with_context(|| format!("{}: git", p.label))?;
            got[i].meta[0].push(t.elapsed());
            let t = Instant::now();
            shell(&work, &format!("mkdir x && tar xf {} -C x", ball.display()))
                .with_context(|| format!("{}: tar", p.label))?;
            got[i].meta[1].push(t.elapsed());
            let t = Instant::now();
            shell(&work, "rm -rf x").with_context(|| format!("{}: rm", p.label))?;
            got[i].meta[2].push(t.elapsed());
            // Untimed: the repository goes too.
            std::fs::remove_dir_all(served.join(work.file_name().unwrap_or_default()))
                .with_context(|| format!("{}: cleaning up", p.label))?;
        }
    }
    Ok(got)
}

/// Runs `script` with sh in `dir`; fails with its standard error.
fn shell(dir: &Path, script: &str) -> anyhow::Result<()> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("{script}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// One fio run: IOPS for 4 KiB jobs, MB/s for the others.
fn fio(file: &Path, job: &Fio, sz: &Size) -> anyhow::Result<f64> {
    let out = Command::new("fio")
        .arg("--name=bench")
        .arg(format!("--filename={}", file.display()))
        .arg(format!("--size={}", sz.fio_bytes))
        .arg(format!("--rw={}", job.rw))
        .arg(format!("--bs={}", job.bs))
        .arg(format!("--iodepth={}", job.depth))
        .arg(format!("--ioengine={}", if job.depth > 1 { "libaio" } else { "psync" }))
        .arg(format!("--direct={}", u8::from(job.direct)))
        .arg("--time_based")
        .arg(format!("--runtime={}", sz.fio_secs))
        .arg("--randrepeat=0")
        .arg("--output-format=terse")
        .arg("--terse-version=3")
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("{} {}", String::from_utf8_lossy(&out.stderr).trim(), text.trim());
    }
    // Terse version 3: read bandwidth (KiB/s) and IOPS are fields 7 and 8,
    // write's 48 and 49 (1-based).
    let fields: Vec<&str> = text.lines().last().unwrap_or("").split(';').collect();
    let writes = job.rw.contains("write");
    let (bw, iops) = if writes { (47, 48) } else { (6, 7) };
    let num = |i: usize| fields.get(i).and_then(|f| f.trim().parse::<f64>().ok());
    let (Some(bw), Some(iops)) = (num(bw), num(iops)) else { bail!("fio said {text:?}") };
    Ok(if job.bs == "4k" { iops } else { bw * 1024.0 / 1e6 })
}

/// `n` small text files in 25 directories under `root`.
fn write_tree(root: &Path, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        let dir = root.join(format!("d{:02}", i % 25));
        if i < 25 {
            std::fs::create_dir_all(&dir)?;
        }
        let line = format!("file {i}: the quick brown fox jumps over the lazy dog\n");
        std::fs::write(dir.join(format!("f{i:04}.txt")), line.repeat(1 + i % 40))?;
    }
    Ok(())
}

/// A tar file of `n` small files in 100 directories, made once in `dir`.
fn make_tar(dir: &Path, n: usize) -> anyhow::Result<PathBuf> {
    let src = dir.join("src");
    let _ = std::fs::remove_dir_all(dir);
    for i in 0..n {
        let d = src.join(format!("d{:03}", i % 100));
        if i < 100 {
            std::fs::create_dir_all(&d)?;
        }
        std::fs::write(d.join(format!("f{i:05}")), vec![b'a' + (i % 26) as u8; 256 + (i * 37) % 3840])?;
    }
    let ball = dir.join("files.tar");
    let st = Command::new("tar").arg("cf").arg(&ball).arg("-C").arg(&src).arg(".").status()?;
    if !st.success() {
        bail!("tar cf: {st}");
    }
    Ok(ball)
}

fn rows(sz: &Size, places: &[Place], got: &[Got], has_fio: bool, version: &str, why_not: &str) -> Vec<Row> {
    let at = |l: &str| places.iter().position(|p| p.label == l);
    let (mesh, local, ssh) = (at("mesh"), at("local"), at("sshfs"));
    let baseline_name = if ssh.is_some() { "sshfs over loopback" } else { "sshfs: baseline not available" };
    let how = if ssh.is_some() {
        format!("baseline {version}, defaults")
    } else {
        format!("baseline not available: {why_not}")
    };
    let mut rows = Vec::new();
    if has_fio {
        // Jobs left out by MESH_BENCH_CASE have no runs and no row.
        for (j, job) in FIO.iter().enumerate().filter(|(j, _)| got.iter().any(|g| !g.fio[*j].is_empty())) {
            let unit = if job.bs == "4k" { Unit::Iops } else { Unit::MBps };
            let v = |i: Option<usize>| i.and_then(|i| median(&got[i].fio[j]));
            let runs = |i: Option<usize>| i.map_or_else(|| "n/a".into(), |i| spread(&got[i].fio[j], unit));
            let target = match (job.bs, job.depth, job.direct) {
                ("4k", _, true) => Some(Target::AtLeast(1.5)),
                ("1m", _, _) => Some(Target::AtLeast(5.0)),
                _ => None,
            };
            let mut row = Row::new(
                format!("remote-fs fio {}", job.name),
                "a/n/b/svc/files/root, tcp, Noise, router processes",
                unit,
                v(mesh),
                v(ssh),
                baseline_name,
            )
            .note(format!(
                "{}s per run, {} MiB file on b's disk; mesh {}; sshfs {}; local directory {} ({}); {how}",
                sz.fio_secs,
                sz.fio_bytes >> 20,
                runs(mesh),
                runs(ssh),
                v(local).map_or_else(|| "n/a".into(), |x| unit.fmt(x)),
                runs(local),
            ));
            if let Some(t) = target {
                row = row.target(t);
            }
            rows.push(row);
        }
    } else {
        rows.push(
            Row::new("remote-fs fio", "all", Unit::Iops, None, None, baseline_name)
                .note("not run: fio not installed (apt-get install fio)"),
        );
    }
    for (j, name) in META.iter().enumerate() {
        let ms = |i: usize| got[i].meta[j].iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<f64>>();
        let v = |i: Option<usize>| i.and_then(|i| median(&ms(i)));
        let runs = |i: Option<usize>| i.map_or_else(|| "n/a".into(), |i| spread(&ms(i), Unit::Millis));
        let files = if j == 0 { sz.git_files } else { sz.tar_files };
        rows.push(
            Row::new(
                format!("remote-fs {name}, {files} files"),
                "a/n/b/svc/files/root, tcp, Noise, router processes",
                Unit::Millis,
                v(mesh),
                v(ssh),
                baseline_name,
            )
            .target(Target::AtMost(0.5))
            .note(format!(
                "median; mesh {}; sshfs {}; local directory {} ({}); {how}",
                runs(mesh),
                runs(ssh),
                v(local).map_or_else(|| "n/a".into(), |x| Unit::Millis.fmt(x)),
                runs(local)
            )),
        );
    }
    rows
}
