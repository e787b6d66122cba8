//! `--quick` end to end: every default workload runs, and the report
//! files are written. Checks that the harness works, not timings.

use mesh_bench::{Opts, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_run_writes_a_report() {
    let out = tempfile::tempdir().expect("temp dir");
    let report =
        mesh_bench::run(Opts { quick: true, only: Vec::new(), out_dir: out.path().to_path_buf(), routers: None })
            .await
            .expect("run");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    for w in [
        "rpc 64 B p50",
        "bulk 1 MiB msgs",
        "fuse 64 B write+read p50",
        "tree read 32 MiB file",
        "remote-fs tar x, 400 files",
        "discovery rounds to converge",
        "discovery idle bytes per router per round",
        "pipeline fps, parser at 30/s",
        "pipeline latency p50",
    ] {
        assert!(report.rows.iter().any(|r| r.workload == w), "no {w} row");
    }
    // Everything measured has a number on both sides, except the slot
    // kept for encryption, FUSE where the machine has none, and sshfs and
    // fio where they are not installed.
    for r in &report.rows {
        if r.status() == Status::NotAvailable {
            let missing = r.note.contains("/dev/fuse") || r.note.contains("not installed");
            assert!(r.case.contains("encrypted") || missing, "{r:?}");
        } else if r.note.starts_with("baseline not available") || r.note.contains("; baseline not available") {
            let remote = r.workload.starts_with("tree") || r.workload.starts_with("remote-fs");
            // A quick run's relay hop can drown in its noise.
            let hop = r.workload.starts_with("a further hop");
            assert!((remote || hop) && r.mesh.is_some_and(f64::is_finite), "{r:?}");
        } else {
            assert!(r.ratio().is_some_and(f64::is_finite), "{r:?}");
        }
    }
    let md = std::fs::read_to_string(out.path().join("report.md")).expect("report.md");
    assert!(md.contains("| rpc 64 B p50 | tcp, 1 hop |"));
    assert!(md.contains("| discovery rounds to converge | 100 routers, degree 4, mem |"));
    let svg = std::fs::read_to_string(out.path().join("chart.svg")).expect("chart.svg");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
}

#[tokio::test]
async fn unknown_workload_is_an_error() {
    let out = tempfile::tempdir().expect("temp dir");
    let err = mesh_bench::run(Opts {
        quick: true,
        only: vec!["nope".into()],
        out_dir: out.path().to_path_buf(),
        routers: None,
    })
    .await
    .err()
    .expect("error");
    assert!(err.to_string().contains("rpc"), "{err}");
}
