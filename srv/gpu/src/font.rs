//! The font atlas: every glyph rasterised once, on the host, as
//! [`CELL_W`] x [`CELL_H`] coverage bytes (0 = background, 255 = ink),
//! then uploaded to the device once by the renderer.
//!
//! Text comes from Noto Sans Mono (regular and bold, anti-aliased, 7x16
//! placed at the left of the 8-wide cell, coverage boosted by [`ink`]). Box drawing, block elements
//! and Greek, which those bitmaps lack, come from the public-domain 8x8
//! font with each row doubled; they reach the cell edges, so lines join
//! across cells. Its bold is the classic one-pixel smear, except for box
//! and block glyphs, which keep their shape so they still join.

use std::collections::HashMap;

use noto_sans_mono_bitmap::{get_raster, FontWeight, RasterHeight};

/// Width of a character cell in pixels.
pub const CELL_W: u32 = 8;
/// Height of a character cell in pixels.
pub const CELL_H: u32 = 16;
/// Bytes of one glyph in the atlas.
pub const GLYPH_BYTES: usize = (CELL_W * CELL_H) as usize;

/// Glyph number of the blank glyph (spaces, controls).
const BLANK: u32 = 0;
/// Glyph number of the replacement glyph (characters the font lacks).
const REPLACEMENT: u32 = 1;

/// All glyphs, and where each character's is. Glyph `n` is stored twice:
/// regular at atlas index `2n`, bold at `2n + 1`.
pub struct Atlas {
    bytes: Vec<u8>,
    index: HashMap<char, u32>,
}

impl Atlas {
    pub fn new() -> Atlas {
        let mut a = Atlas { bytes: Vec::new(), index: HashMap::new() };
        let blank = [0u8; GLYPH_BYTES];
        a.push(&blank, &blank);
        let (r, b) = noto('\u{fffd}').expect("Noto has U+FFFD with the unicode-specials feature");
        a.push(&r, &b);
        for ch in '\u{21}'..='\u{17f}' {
            if let Some((r, b)) = noto(ch) {
                a.add(ch, &r, &b);
            }
        }
        let line_art = font8x8::BOX_UNICODE.iter().chain(font8x8::BLOCK_UNICODE.iter());
        for g in line_art {
            let r = doubled(g.1);
            a.add(g.0, &r, &r);
        }
        for g in font8x8::GREEK_UNICODE.iter() {
            let smeared = g.1.map(|row| row | (row << 1));
            a.add(g.0, &doubled(g.1), &doubled(smeared));
        }
        a
    }

    /// The atlas index of `ch`'s glyph.
    pub fn glyph(&self, ch: char, bold: bool) -> u32 {
        let n = if ch.is_whitespace() || ch.is_control() {
            BLANK
        } else {
            self.index.get(&ch).copied().unwrap_or(REPLACEMENT)
        };
        n * 2 + bold as u32
    }

    /// Coverage bytes of every glyph, glyph after glyph, row by row.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Number of distinct characters with a glyph of their own.
    #[cfg(test)]
    pub fn chars(&self) -> usize {
        self.index.len()
    }

    /// Adds `ch` unless an earlier source already drew it.
    fn add(&mut self, ch: char, regular: &[u8; GLYPH_BYTES], bold: &[u8; GLYPH_BYTES]) {
        if !self.index.contains_key(&ch) {
            let n = self.push(regular, bold);
            self.index.insert(ch, n);
        }
    }

    fn push(&mut self, regular: &[u8; GLYPH_BYTES], bold: &[u8; GLYPH_BYTES]) -> u32 {
        let n = (self.bytes.len() / GLYPH_BYTES / 2) as u32;
        self.bytes.extend_from_slice(regular);
        self.bytes.extend_from_slice(bold);
        n
    }
}

impl Default for Atlas {
    fn default() -> Self {
        Atlas::new()
    }
}

/// Noto's regular and bold glyphs of `ch`, placed in a cell.
fn noto(ch: char) -> Option<([u8; GLYPH_BYTES], [u8; GLYPH_BYTES])> {
    let place = |w| {
        let r = get_raster(ch, w, RasterHeight::Size16)?;
        let mut g = [0u8; GLYPH_BYTES];
        for (y, row) in r.rows().enumerate().take(CELL_H as usize) {
            for (p, &c) in g[y * CELL_W as usize..][..CELL_W as usize].iter_mut().zip(row) {
                *p = ink(c);
            }
        }
        Some(g)
    };
    Some((place(FontWeight::Regular)?, place(FontWeight::Bold)?))
}

/// Noto's coverage made darker: at 16 pixels its one-pixel stems peak
/// near 220 of 255, which reads grey and blurs further in H.264, so
/// coverage is scaled by 5/4 (stems reach full ink; edges stay soft).
pub fn ink(coverage: u8) -> u8 {
    (coverage as u32 * 5 / 4).min(255) as u8
}

/// An 8x8 glyph (bit 0 is the leftmost pixel) with each row doubled.
fn doubled(rows: [u8; 8]) -> [u8; GLYPH_BYTES] {
    let mut g = [0u8; GLYPH_BYTES];
    for (y, px) in g.chunks_exact_mut(CELL_W as usize).enumerate() {
        let bits = rows[y / 2];
        for (x, p) in px.iter_mut().enumerate() {
            *p = if bits >> x & 1 == 1 { 255 } else { 0 };
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_ascii_and_replaces_the_rest() {
        let a = Atlas::new();
        assert_eq!(a.bytes().len() % (2 * GLYPH_BYTES), 0);
        for ch in '!'..='~' {
            assert!(a.glyph(ch, false) >= 4, "{ch:?} has no glyph");
        }
        assert_eq!(a.glyph(' ', false), 0);
        assert_eq!(a.glyph('\0', true), 1);
        assert_eq!(a.glyph('\u{4e00}', false), 2, "CJK falls back to U+FFFD");
        assert_ne!(a.glyph('─', false), 2);
        assert_ne!(a.glyph('█', false), 2);
        assert_eq!(a.glyph('A', true), a.glyph('A', false) + 1);
        assert!(a.chars() > 400, "{} chars", a.chars());
    }

    #[test]
    fn full_block_fills_the_cell() {
        let a = Atlas::new();
        let g = a.glyph('█', false) as usize;
        assert!(a.bytes()[g * GLYPH_BYTES..][..GLYPH_BYTES].iter().all(|&c| c == 255));
    }
}
