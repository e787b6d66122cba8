//! Screens and frames: the messages of the seed's pipeline.
//!
//! `parser` turns terminal output into [`Snapshot`]s; `gpu` renders each
//! into a [`Frame`] of RGBA pixels; `encoder` turns frames into H.264 in
//! fragmented MP4. Each travels as one CBOR message. Times are
//! microseconds since the session began, stamped where the output was
//! seen, so a pause in the session is a pause in the video.
//!
//! A session's stream of snapshots, and of frames, closes with an [`End`]
//! before its end of input: when the session ended, on the same clock.
//! The last picture stays on screen until then, so a recording lasts as
//! long as its session (a shell that prints and then waits for four
//! seconds is four seconds of video, not one frame). A stage that does not
//! make pictures passes it on; [`end`] tells it from a snapshot or frame.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// An sRGB colour.
pub type Rgb = [u8; 3];

/// Cell attributes, as bits of [`Cell::attrs`].
pub mod attr {
    pub const BOLD: u8 = 1;
    pub const ITALIC: u8 = 2;
    pub const UNDERLINE: u8 = 4;
    pub const INVERSE: u8 = 8;
}

/// One character cell, colours resolved (no palette indices).
/// On the wire a tuple: `(char, fg, bg, attrs)`, to keep snapshots small.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell(pub char, pub Rgb, pub Rgb, pub u8);

impl Cell {
    pub fn ch(&self) -> char {
        self.0
    }
    pub fn fg(&self) -> Rgb {
        self.1
    }
    pub fn bg(&self) -> Rgb {
        self.2
    }
    pub fn attrs(&self) -> u8 {
        self.3
    }
}

/// The whole screen at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Counts snapshots of one session from 0.
    pub seq: u64,
    /// Microseconds since the session began.
    pub pts_us: u64,
    pub cols: u16,
    pub rows: u16,
    /// `rows * cols` cells, row by row.
    pub cells: Vec<Cell>,
    /// (column, row) of the cursor when it is shown.
    pub cursor: Option<(u16, u16)>,
}

/// A rendered picture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub seq: u64,
    pub pts_us: u64,
    pub width: u32,
    pub height: u32,
    /// `width * height * 4` bytes, RGBA, row by row from the top.
    pub rgba: Bytes,
}

/// The end of a session, sent after its last snapshot or frame: the last
/// picture is shown until `end_us` (microseconds since the session began,
/// as `pts_us`; never before the last picture's time).
///
/// On the wire a map with the one key `end_us`, which neither a snapshot
/// nor a frame can be taken for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct End {
    pub end_us: u64,
}

/// The [`End`] in `b`, if `b` is one; `None` for a snapshot, a frame or
/// anything else (whose own decoding then says what is wrong with it).
/// Cheap on a picture: decoding stops at its first key.
pub fn end(b: &[u8]) -> Option<End> {
    decode::<End>(b).ok()
}

/// Why a message is not a snapshot or frame.
#[derive(Debug)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad message: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Encodes a snapshot or frame as one message.
pub use ns::cbor::encode;

/// Decodes one message.
pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, DecodeError> {
    ns::cbor::from_bytes(b).map_err(DecodeError)
}

impl Snapshot {
    /// The cell at (column, row), if on the screen.
    pub fn cell(&self, col: u16, row: u16) -> Option<&Cell> {
        if col >= self.cols || row >= self.rows {
            return None;
        }
        self.cells.get(row as usize * self.cols as usize + col as usize)
    }

    /// Checks the cell count matches the size.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let want = self.cols as usize * self.rows as usize;
        if self.cols == 0 || self.rows == 0 || self.cells.len() != want {
            return Err(DecodeError(format!("{}x{} snapshot with {} cells", self.cols, self.rows, self.cells.len())));
        }
        Ok(())
    }
}

impl Frame {
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.rgba.len() != self.width as usize * self.height as usize * 4 {
            return Err(DecodeError(format!("{}x{} frame with {} bytes", self.width, self.height, self.rgba.len())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let s = Snapshot {
            seq: 1,
            pts_us: 5,
            cols: 2,
            rows: 1,
            cells: vec![Cell('a', [1, 2, 3], [0, 0, 0], attr::BOLD); 2],
            cursor: Some((1, 0)),
        };
        assert_eq!(decode::<Snapshot>(&encode(&s)).unwrap(), s);
        let f = Frame { seq: 1, pts_us: 5, width: 1, height: 1, rgba: Bytes::from_static(&[1, 2, 3, 4]) };
        assert_eq!(decode::<Frame>(&encode(&f)).unwrap(), f);
        assert!(decode::<Frame>(b"\x00").is_err());
    }

    #[test]
    fn an_end_is_told_from_pictures() {
        let e = End { end_us: 4_000_000 };
        assert_eq!(end(&encode(&e)), Some(e));
        let s =
            Snapshot { seq: 0, pts_us: 0, cols: 1, rows: 1, cells: vec![Cell(' ', [0; 3], [0; 3], 0)], cursor: None };
        assert_eq!(end(&encode(&s)), None);
        let f = Frame { seq: 0, pts_us: 0, width: 1, height: 1, rgba: Bytes::from_static(&[0; 4]) };
        assert_eq!(end(&encode(&f)), None);
        assert!(decode::<Snapshot>(&encode(&e)).is_err());
        assert!(decode::<Frame>(&encode(&e)).is_err());
        assert_eq!(end(b"\x00"), None);
    }
}
