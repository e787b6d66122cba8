//! The cell grid as the shader reads it: a header, then one `uvec4` per
//! cell with every attribute already resolved on the host, where it is
//! cheap (a few thousand cells), so the shader only samples and blends.
//!
//! Layout, in 32-bit words (see `shaders/render.wgsl`):
//! header `[cols, width, height, 0]`, then per cell
//! `[atlas glyph, fg, bg, flags]`, colours as `0xBBGGRR`.

use mesh_frame::{attr, Rgb, Snapshot};

use crate::font::{Atlas, CELL_H, CELL_W};

pub const FLAG_UNDERLINE: u32 = 1;
pub const FLAG_ITALIC: u32 = 2;

const HEADER_WORDS: usize = 4;
const CELL_WORDS: usize = 4;

/// Words of the grid buffer for a `cols` x `rows` screen.
pub fn words(cols: u16, rows: u16) -> usize {
    HEADER_WORDS + CELL_WORDS * cols as usize * rows as usize
}

/// Frame size in pixels of a `cols` x `rows` screen.
pub fn frame_size(cols: u16, rows: u16) -> (u32, u32) {
    (cols as u32 * CELL_W, rows as u32 * CELL_H)
}

fn rgb(c: Rgb) -> u32 {
    c[0] as u32 | (c[1] as u32) << 8 | (c[2] as u32) << 16
}

/// Writes `snap` into `out`, which holds [`words`] words. The snapshot
/// must be valid (its cell count matches its size).
pub fn pack(snap: &Snapshot, atlas: &Atlas, out: &mut [u32]) {
    let (width, height) = frame_size(snap.cols, snap.rows);
    out[..HEADER_WORDS].copy_from_slice(&[snap.cols as u32, width, height, 0]);
    // A cursor off the screen is not drawn.
    let cursor = snap
        .cursor
        .filter(|&(c, r)| c < snap.cols && r < snap.rows)
        .map(|(c, r)| r as usize * snap.cols as usize + c as usize);
    let cells = out[HEADER_WORDS..].chunks_exact_mut(CELL_WORDS);
    for (i, (cell, w)) in snap.cells.iter().zip(cells).enumerate() {
        let a = cell.attrs();
        let (mut fg, mut bg) = (rgb(cell.fg()), rgb(cell.bg()));
        // The cursor is an inverse block: it inverts an inverse cell back.
        if (a & attr::INVERSE != 0) != (cursor == Some(i)) {
            std::mem::swap(&mut fg, &mut bg);
        }
        let mut flags = 0;
        if a & attr::UNDERLINE != 0 {
            flags |= FLAG_UNDERLINE;
        }
        if a & attr::ITALIC != 0 {
            flags |= FLAG_ITALIC;
        }
        w.copy_from_slice(&[atlas.glyph(cell.ch(), a & attr::BOLD != 0), fg, bg, flags]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_frame::Cell;

    #[test]
    fn resolves_attributes_and_cursor() {
        let atlas = Atlas::new();
        let (f, b) = ([1, 2, 3], [4, 5, 6]);
        let snap = Snapshot {
            seq: 0,
            pts_us: 0,
            cols: 3,
            rows: 1,
            cells: vec![
                Cell('a', f, b, attr::BOLD | attr::UNDERLINE),
                Cell('b', f, b, attr::INVERSE),
                Cell('c', f, b, attr::INVERSE | attr::ITALIC),
            ],
            cursor: Some((2, 0)),
        };
        let mut out = vec![0; words(3, 1)];
        pack(&snap, &atlas, &mut out);
        assert_eq!(out[..4], [3, 24, 16, 0]);
        assert_eq!(out[4..8], [atlas.glyph('a', true), 0x030201, 0x060504, FLAG_UNDERLINE]);
        assert_eq!(out[8..12], [atlas.glyph('b', false), 0x060504, 0x030201, 0]);
        // Inverse under the cursor shows the plain colours.
        assert_eq!(out[12..16], [atlas.glyph('c', false), 0x030201, 0x060504, FLAG_ITALIC]);
    }

    #[test]
    fn cursor_off_screen_is_ignored() {
        let atlas = Atlas::new();
        let snap = Snapshot {
            seq: 0,
            pts_us: 0,
            cols: 2,
            rows: 1,
            cells: vec![Cell('x', [9; 3], [0; 3], 0); 2],
            cursor: Some((2, 0)),
        };
        let mut out = vec![0; words(2, 1)];
        pack(&snap, &atlas, &mut out);
        assert!(out[4..].chunks(4).all(|c| c[1] == 0x090909 && c[2] == 0));
    }
}
