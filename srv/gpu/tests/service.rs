//! The `gpu` service end to end through a real router: snapshots in,
//! frames out, in order; the session's end passed on; end of input; bad
//! messages.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mesh_frame::{Cell, Frame, Snapshot};
use mesh_gpu::GpuService;
use ns::conv::{Conv, Msg};
use ns::{Addr, Config, Router};
use tokio_util::sync::CancellationToken;

/// One device for the whole test binary, never torn down: two devices
/// made and dropped by tests running at once, or one dropped while the
/// process exits, once crashed lavapipe (SIGSEGV after every test passed).
fn gpu() -> &'static GpuService {
    static GPU: std::sync::LazyLock<GpuService> = std::sync::LazyLock::new(|| {
        GpuService::new().expect("a Vulkan device (apt-get install mesa-vulkan-drivers libvulkan1)")
    });
    &GPU
}

fn router(gpu: &GpuService) -> (Router, CancellationToken) {
    let stop = CancellationToken::new();
    let r = Router::new(Config::new("c".parse().unwrap()), stop.clone());
    r.add_service("gpu".parse().unwrap(), Arc::new(gpu.clone()));
    (r, stop)
}

fn snap(seq: u64, cols: u16, rows: u16) -> Snapshot {
    let cells = vec![Cell('#', [255, 255, 255], [0, 0, 64], 0); cols as usize * rows as usize];
    Snapshot { seq, pts_us: seq * 33_333, cols, rows, cells, cursor: Some((0, 0)) }
}

async fn next(conv: &mut Conv) -> Option<Msg> {
    tokio::time::timeout(Duration::from_secs(30), conv.rx.recv()).await.expect("reply in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_in_order_then_eof() {
    let gpu = gpu();
    assert!(!gpu.device_name().is_empty());
    let (r, stop) = router(gpu);
    let mut conv = r.open(Addr::parse("/svc/gpu").unwrap(), vec![]);
    let sizes = [(80, 24), (80, 24), (100, 30)];
    for (i, &(c, w)) in sizes.iter().enumerate() {
        conv.tx.send(mesh_frame::encode(&snap(i as u64, c, w))).await.unwrap();
    }
    let end = mesh_frame::End { end_us: 4_000_000 };
    conv.tx.send(mesh_frame::encode(&end)).await.unwrap();
    conv.tx.eof().await;
    for (i, &(c, w)) in sizes.iter().enumerate() {
        let Some(Msg::Data(b)) = next(&mut conv).await else { panic!("frame {i} missing") };
        let f: Frame = mesh_frame::decode(&b).unwrap();
        f.validate().unwrap();
        assert_eq!((f.seq, f.pts_us, f.width, f.height), (i as u64, i as u64 * 33_333, c as u32 * 8, w as u32 * 16));
        // The cursor cell (0,0) is inverted: white background at its corner.
        assert_eq!(f.rgba[..4], [255, 255, 255, 255]);
    }
    // The session's end passes on after the last frame, as it came.
    let Some(Msg::Data(b)) = next(&mut conv).await else { panic!("End missing") };
    assert_eq!(mesh_frame::end(&b), Some(end));
    assert_eq!(next(&mut conv).await, Some(Msg::Eof));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_message_ends_the_conversation() {
    let gpu = gpu();
    let (r, stop) = router(gpu);
    let mut conv = r.open(Addr::parse("/svc/gpu").unwrap(), vec![]);
    conv.tx.send(mesh_frame::encode(&snap(0, 2, 1))).await.unwrap();
    let Some(Msg::Data(_)) = next(&mut conv).await else { panic!("first frame missing") };
    conv.tx.send(Bytes::from_static(b"not cbor")).await.unwrap();
    // Ended with the reason, never a hang.
    match next(&mut conv).await {
        Some(Msg::Error(e)) => assert!(e.starts_with("gpu: bad message"), "{e}"),
        m => panic!("expected an error, got {m:?}"),
    }
    // A mismatched snapshot ends a fresh conversation the same way, and
    // the service still serves others.
    let mut bad = snap(0, 3, 3);
    bad.cells.truncate(2);
    let mut conv = r.open(Addr::parse("/svc/gpu").unwrap(), vec![]);
    conv.tx.send(mesh_frame::encode(&bad)).await.unwrap();
    match next(&mut conv).await {
        Some(Msg::Error(e)) => assert!(e.starts_with("gpu: bad snapshot: 3x3 snapshot with 2 cells"), "{e}"),
        m => panic!("expected an error, got {m:?}"),
    }
    let f = gpu.render(snap(5, 3, 3)).await.unwrap();
    assert_eq!((f.seq, f.width, f.height), (5, 24, 48));
    stop.cancel();
}
