//! The `parser` service kind: terminal output in, screen snapshots out.
//!
//! Each conversation keeps a terminal emulator (the vt100 crate) of the
//! configured size. Messages in are the raw bytes a program wrote to its
//! terminal, split anywhere. Messages out are [`mesh_frame::Snapshot`]s in
//! CBOR: every cell with its character, RGB colours and attributes, and
//! the cursor.
//!
//! Output is paced to at most `fps` snapshots a second. The first input
//! after a quiet spell gives a snapshot at once; input arriving within
//! the next 1/fps is merged into one snapshot at the end of that interval.
//! A snapshot is only sent when the screen looks different from the last
//! one sent. At end of input the last changes go out (at the next allowed
//! moment), then a [`mesh_frame::End`] stamped with the moment end of
//! input came (the session's end: the last screen stays until then), then
//! end of input. A conversation that showed nothing sends no `End`.
//!
//! `pts_us` counts microseconds from the conversation's first input to
//! the arrival of the latest input a snapshot shows, so pauses in the
//! session are kept; it strictly increases from one snapshot to the next.
//! The session's time starts at its first output: a recording begins with
//! a picture, not with blank time.

mod screen;

use std::time::Duration;

use futures::future::BoxFuture;
use mesh_frame::{End, Snapshot};
use ns::conv::{Conv, ConvWriter, Msg, Service};
use tokio::time::Instant;
use tracing::debug;

use screen::Screen;
pub use screen::{resolve, xterm_color, DEFAULT_BG, DEFAULT_FG};

/// The largest side of a screen, as in the deployment file's `size`.
pub const MAX_SIDE: u16 = 1000;
/// The highest frame rate, as in the deployment file's `fps`.
pub const MAX_FPS: u32 = 240;
/// The most a cell takes in CBOR: a 4-tuple of a 4-byte character, two
/// colours of 3 bytes and the attributes, each byte over 23 taking 2.
const CELL_MAX_BYTES: usize = 1 + 5 + 7 + 7 + 2;
/// The most cells a screen may have, so that every snapshot fits in one
/// message (with room for its other fields).
pub const MAX_CELLS: usize = (ns::envelope::MAX_MSG - 1024) / CELL_MAX_BYTES;

/// Turns terminal output into screen snapshots, one emulator per
/// conversation.
pub struct ParserService {
    size: (u16, u16),
    interval: Duration,
}

impl ParserService {
    /// `size` is the screen's (columns, rows), each 1 to [`MAX_SIDE`];
    /// `fps` the most snapshots a second, 1 to [`MAX_FPS`].
    pub fn new(size: (u16, u16), fps: u32) -> anyhow::Result<ParserService> {
        let (c, r) = size;
        anyhow::ensure!(
            (1..=MAX_SIDE).contains(&c) && (1..=MAX_SIDE).contains(&r),
            "parser: bad size {c}x{r}: each side 1 to {MAX_SIDE}"
        );
        let cells = c as usize * r as usize;
        anyhow::ensure!(
            cells <= MAX_CELLS,
            "parser: size {c}x{r} too large: its snapshots could exceed the {} MiB message limit (at most {MAX_CELLS} cells)",
            ns::envelope::MAX_MSG >> 20
        );
        anyhow::ensure!((1..=MAX_FPS).contains(&fps), "parser: bad fps {fps}: 1 to {MAX_FPS}");
        Ok(ParserService { size, interval: Duration::from_nanos(1_000_000_000 / fps as u64) })
    }
}

impl Service for ParserService {
    fn serve(&self, conv: Conv) -> BoxFuture<'static, ()> {
        let (size, interval) = (self.size, self.interval);
        Box::pin(async move {
            let path = conv.rx.path().clone();
            if let Err(why) = run(conv, size, interval).await {
                debug!(conv = %path, %why, "parser: conversation ended");
            }
        })
    }
}

/// Serves one conversation; the error is why it ended early.
async fn run(conv: Conv, (cols, rows): (u16, u16), interval: Duration) -> Result<(), String> {
    let Conv { mut rx, tx } = conv;
    let mut out = Paced::new(vt100::Parser::new(rows, cols, 0), interval);
    loop {
        tokio::select! {
            // The timer first, so a flood of input cannot starve it.
            biased;
            () = tokio::time::sleep_until(out.next_at), if out.pending.is_some() => out.emit(&tx).await?,
            m = rx.recv() => match m {
                Some(Msg::Data(b)) => {
                    out.input(&b);
                    if Instant::now() >= out.next_at {
                        out.emit(&tx).await?;
                    }
                }
                Some(Msg::Eof) => {
                    // The session ended now, not after the wait below.
                    let end = out.since_start();
                    if out.pending.is_some() {
                        tokio::time::sleep_until(out.next_at).await;
                        out.emit(&tx).await?;
                    }
                    out.end(&tx, end).await?;
                    tx.eof().await;
                    return Ok(());
                }
                Some(Msg::Error(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
}

/// The emulator and the pacing of its snapshots.
struct Paced {
    vt: vt100::Parser,
    interval: Duration,
    /// When the first input came.
    start: Option<Instant>,
    /// The time (µs from start) of the latest input not yet in a snapshot.
    pending: Option<u64>,
    /// The earliest moment the next snapshot may go.
    next_at: Instant,
    /// The last snapshot sent: its screen, seq and pts.
    last: Option<(Screen, u64, u64)>,
}

impl Paced {
    fn new(vt: vt100::Parser, interval: Duration) -> Paced {
        Paced { vt, interval, start: None, pending: None, next_at: Instant::now(), last: None }
    }

    fn input(&mut self, bytes: &[u8]) {
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        self.vt.process(bytes);
        self.pending = Some(now.duration_since(start).as_micros() as u64);
    }

    /// Microseconds since the first input; 0 before it.
    fn since_start(&self) -> u64 {
        self.start.map_or(0, |s| s.elapsed().as_micros() as u64)
    }

    /// Sends the session's [`End`] at `end_us`, after the last snapshot:
    /// the last screen stays until then. Nothing when no snapshot went.
    async fn end(&self, tx: &ConvWriter, end_us: u64) -> Result<(), String> {
        let Some((_, _, pts)) = &self.last else { return Ok(()) };
        tx.send(mesh_frame::encode(&End { end_us: end_us.max(*pts) })).await
    }

    /// Sends a snapshot of the screen if it changed since the last one.
    async fn emit(&mut self, tx: &ConvWriter) -> Result<(), String> {
        let Some(at) = self.pending.take() else { return Ok(()) };
        let screen = Screen::of(self.vt.screen());
        if self.last.as_ref().is_some_and(|(s, _, _)| s.same(&screen)) {
            return Ok(());
        }
        let (seq, pts_us) = match &self.last {
            None => (0, at),
            Some((_, seq, pts)) => (seq + 1, at.max(pts + 1)),
        };
        let snap =
            Snapshot { seq, pts_us, cols: screen.cols, rows: screen.rows, cells: screen.cells, cursor: screen.cursor };
        tx.send(mesh_frame::encode(&snap)).await?;
        self.next_at = Instant::now() + self.interval;
        let Snapshot { cols, rows, cells, cursor, .. } = snap;
        self.last = Some((Screen { cols, rows, cells, cursor }, seq, pts_us));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_frame::Cell;

    #[test]
    fn the_largest_screen_fits_in_a_message() {
        let cell = Cell('\u{10ffff}', [255; 3], [255; 3], 255);
        let cols = 1000u16;
        let rows = (MAX_CELLS / cols as usize) as u16;
        let snap = Snapshot {
            seq: u64::MAX,
            pts_us: u64::MAX,
            cols,
            rows,
            cells: vec![cell; cols as usize * rows as usize],
            cursor: Some((cols - 1, rows - 1)),
        };
        let len = mesh_frame::encode(&snap).len();
        assert!(len <= ns::envelope::MAX_MSG, "{len}");
        assert!(ParserService::new((cols, rows), 30).is_ok());
        assert!(ParserService::new((cols, rows + 1), 30).is_err());
    }
}
