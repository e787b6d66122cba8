//! The `parser` service through a real router, with paused time: screens
//! with colours and attributes, pacing to the frame rate, timestamps.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mesh_frame::{attr, decode, Snapshot};
use ns::conv::{Conv, Msg};
use ns::{Addr, Config, Router};
use srv::parser::{xterm_color, ParserService, DEFAULT_BG, DEFAULT_FG};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct Setup {
    router: Router,
    stop: CancellationToken,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn setup(size: (u16, u16), fps: u32) -> Setup {
    let stop = CancellationToken::new();
    let router = Router::new(Config::new("a".parse().unwrap()), stop.clone());
    router.add_service("parser".parse().unwrap(), Arc::new(ParserService::new(size, fps).unwrap()));
    Setup { router, stop }
}

impl Setup {
    fn open(&self) -> Conv {
        self.router.open(Addr::parse("/svc/parser").unwrap(), vec![])
    }
}

async fn feed(conv: &Conv, bytes: &[u8]) {
    conv.tx.send(Bytes::copy_from_slice(bytes)).await.unwrap();
}

async fn recv(conv: &mut Conv) -> Option<Msg> {
    tokio::time::timeout(Duration::from_secs(30), conv.rx.recv()).await.expect("timed out")
}

/// The next snapshot, or `None` at the end: the session's `End`, checked
/// to come last, or end of file.
async fn next(conv: &mut Conv) -> Option<Snapshot> {
    match recv(conv).await {
        Some(Msg::Data(b)) if mesh_frame::end(&b).is_some() => {
            let after = recv(conv).await;
            assert!(matches!(after, Some(Msg::Eof) | None), "after End: {after:?}");
            None
        }
        Some(Msg::Data(b)) => {
            let s: Snapshot = decode(&b).unwrap();
            s.validate().unwrap();
            Some(s)
        }
        Some(Msg::Eof) | None => None,
        Some(Msg::Error(e)) => panic!("error {e}"),
    }
}

/// Every snapshot until end of file; checks seq and pts run in order.
async fn all(conv: &mut Conv) -> Vec<Snapshot> {
    let mut v: Vec<Snapshot> = Vec::new();
    while let Some(s) = next(conv).await {
        if let Some(p) = v.last() {
            assert!(s.pts_us > p.pts_us, "pts {} after {}", s.pts_us, p.pts_us);
        }
        assert_eq!(s.seq, v.len() as u64);
        v.push(s);
    }
    v
}

fn row_text(s: &Snapshot, row: u16) -> String {
    (0..s.cols).map(|c| s.cell(c, row).unwrap().ch()).collect::<String>().trim_end().to_string()
}

#[tokio::test(start_paused = true)]
async fn colours_attributes_and_cursor() {
    let m = setup((40, 5), 30);
    let mut conv = m.open();
    feed(&conv, b"\x1b[31mred\x1b[0m plain\r\n\x1b[1;44mbold on blue").await;
    conv.tx.eof().await;
    let snaps = all(&mut conv).await;
    assert_eq!(snaps.len(), 1);
    let s = &snaps[0];
    assert_eq!((s.seq, s.pts_us, s.cols, s.rows), (0, 0, 40, 5));
    assert_eq!(row_text(s, 0), "red plain");
    assert_eq!(row_text(s, 1), "bold on blue");
    let red = s.cell(0, 0).unwrap();
    assert_eq!((red.ch(), red.fg(), red.bg(), red.attrs()), ('r', [0xcd, 0, 0], DEFAULT_BG, 0));
    let plain = s.cell(4, 0).unwrap();
    assert_eq!((plain.ch(), plain.fg(), plain.bg(), plain.attrs()), ('p', DEFAULT_FG, DEFAULT_BG, 0));
    let bold = s.cell(0, 1).unwrap();
    assert_eq!((bold.ch(), bold.fg(), bold.bg(), bold.attrs()), ('b', DEFAULT_FG, xterm_color(4), attr::BOLD));
    // Cells not written keep the default colours, the cursor's too.
    assert_eq!(s.cell(12, 1).unwrap().bg(), DEFAULT_BG);
    assert_eq!(s.cursor, Some((12, 1)));
}

#[tokio::test(start_paused = true)]
async fn extended_colours_attributes_and_hidden_cursor() {
    let m = setup((20, 2), 30);
    let mut conv = m.open();
    feed(&conv, b"\x1b[38;5;196;48;5;240;3;4mA\x1b[0;38;2;1;2;3;7mB\x1b[?25l").await;
    conv.tx.eof().await;
    let s = all(&mut conv).await.pop().unwrap();
    let a = s.cell(0, 0).unwrap();
    assert_eq!((a.ch(), a.fg(), a.bg(), a.attrs()), ('A', [255, 0, 0], [88, 88, 88], attr::ITALIC | attr::UNDERLINE));
    let b = s.cell(1, 0).unwrap();
    assert_eq!((b.ch(), b.fg(), b.bg(), b.attrs()), ('B', [1, 2, 3], DEFAULT_BG, attr::INVERSE));
    assert_eq!(s.cursor, None);
}

#[tokio::test(start_paused = true)]
async fn bursts_are_paced_to_the_frame_rate() {
    let m = setup((80, 24), 30);
    let mut conv = m.open();
    let t0 = Instant::now();
    let text: Vec<u8> = (0..100u8).map(|i| b'a' + i % 26).collect();
    for ch in &text {
        feed(&conv, &[*ch]).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    conv.tx.eof().await;
    let snaps = all(&mut conv).await;
    let elapsed = t0.elapsed();
    // 100 inputs over ~100 ms at 30 a second: about one every 33 ms.
    assert!((2..=5).contains(&snaps.len()), "{} snapshots", snaps.len());
    assert!(elapsed < Duration::from_millis(250), "{elapsed:?}");
    let last = snaps.last().unwrap();
    let want = String::from_utf8(text).unwrap();
    assert_eq!(row_text(last, 0), want[..80]);
    assert_eq!(row_text(last, 1), want[80..]);
    assert_eq!(last.cursor, Some((20, 1)));
    for pair in snaps.windows(2) {
        // pts follow input arrival; consecutive snapshots are an interval apart.
        assert!(pair[1].pts_us - pair[0].pts_us >= 20_000, "{} -> {}", pair[0].pts_us, pair[1].pts_us);
    }
}

#[tokio::test(start_paused = true)]
async fn first_input_after_a_pause_comes_at_once_and_pauses_are_kept() {
    let m = setup((10, 2), 10);
    let mut conv = m.open();
    feed(&conv, b"a").await;
    let t = Instant::now();
    let s = next(&mut conv).await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(10), "{:?}", t.elapsed());
    assert_eq!((s.seq, s.pts_us, row_text(&s, 0).as_str()), (0, 0, "a"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    feed(&conv, b"b").await;
    let t = Instant::now();
    let s = next(&mut conv).await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(10), "{:?}", t.elapsed());
    assert_eq!((s.seq, row_text(&s, 0).as_str()), (1, "ab"));
    assert!((2_000_000..2_050_000).contains(&s.pts_us), "{}", s.pts_us);
}

#[tokio::test(start_paused = true)]
async fn end_of_input_is_the_end_of_the_session() {
    let m = setup((10, 2), 30);
    let mut conv = m.open();
    feed(&conv, b"a").await;
    assert_eq!(next(&mut conv).await.map(|s| s.pts_us), Some(0));
    // The screen rests for 4 s, then the session ends.
    tokio::time::sleep(Duration::from_secs(4)).await;
    conv.tx.eof().await;
    let Some(Msg::Data(b)) = recv(&mut conv).await else { panic!("no End") };
    let end = mesh_frame::end(&b).expect("an End after the last snapshot").end_us;
    assert!((4_000_000..4_050_000).contains(&end), "ended at {end} µs");
    assert!(matches!(recv(&mut conv).await, Some(Msg::Eof) | None));
}

#[tokio::test(start_paused = true)]
async fn the_end_comes_after_the_last_changes() {
    let m = setup((10, 2), 10);
    let mut conv = m.open();
    feed(&conv, b"a").await;
    assert!(next(&mut conv).await.is_some());
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Within the interval: held back to its end, and end of input with it.
    feed(&conv, b"b").await;
    conv.tx.eof().await;
    let s = next(&mut conv).await.expect("the last changes");
    assert_eq!(row_text(&s, 0), "ab");
    let Some(Msg::Data(b)) = recv(&mut conv).await else { panic!("no End") };
    let end = mesh_frame::end(&b).expect("an End").end_us;
    assert!(end >= s.pts_us, "End at {end} before the last screen at {}", s.pts_us);
    assert!(end < 50_000, "End at {end}: when end of input came, not when the last snapshot went");
}

#[tokio::test(start_paused = true)]
async fn nothing_new_nothing_sent() {
    let m = setup((10, 2), 30);
    let mut conv = m.open();
    feed(&conv, b"x").await;
    assert!(next(&mut conv).await.is_some());
    // Quiet: no snapshots.
    assert!(tokio::time::timeout(Duration::from_secs(1), conv.rx.recv()).await.is_err());
    // Input that changes nothing on the screen: no snapshot either.
    feed(&conv, b"\x1b[0m\x1b[31m").await;
    assert!(tokio::time::timeout(Duration::from_secs(1), conv.rx.recv()).await.is_err());
    conv.tx.eof().await;
    assert!(all(&mut conv).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn no_input_no_snapshots() {
    let m = setup((10, 2), 30);
    let mut conv = m.open();
    conv.tx.eof().await;
    assert!(all(&mut conv).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn sequences_split_across_messages() {
    let m = setup((10, 2), 30);
    let mut conv = m.open();
    for part in [&b"\x1b["[..], b"3", b"2m", "é".as_bytes().split_at(1).0, "é".as_bytes().split_at(1).1, b"\x1b[0m!"]
    {
        feed(&conv, part).await;
    }
    conv.tx.eof().await;
    let s = all(&mut conv).await.pop().unwrap();
    assert_eq!(row_text(&s, 0), "é!");
    assert_eq!(s.cell(0, 0).unwrap().fg(), xterm_color(2));
    assert_eq!(s.cell(1, 0).unwrap().fg(), DEFAULT_FG);
}

#[test]
fn bad_configuration() {
    assert!(ParserService::new((0, 24), 30).is_err());
    assert!(ParserService::new((80, 1001), 30).is_err());
    assert!(ParserService::new((80, 24), 0).is_err());
    assert!(ParserService::new((80, 24), 241).is_err());
    assert!(ParserService::new((1000, 1), 240).is_ok());
    assert!(ParserService::new((600, 600), 240).is_ok());
    // Snapshots of a million cells would not fit in a message.
    let e = ParserService::new((1000, 1000), 30).err().unwrap().to_string();
    assert!(e.starts_with("parser: size 1000x1000 too large"), "{e}");
}
