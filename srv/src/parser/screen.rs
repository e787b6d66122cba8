//! From a vt100 screen to a [`Snapshot`]'s cells: colours resolved to RGB
//! with xterm's palette, attributes to [`attr`] bits.

use mesh_frame::{attr, Cell, Rgb};

/// The colour of text in the terminal's default colour: light grey.
pub const DEFAULT_FG: Rgb = [0xd0, 0xd0, 0xd0];
/// The background in the terminal's default colour: near black.
pub const DEFAULT_BG: Rgb = [0x10, 0x10, 0x10];

/// xterm's first 16 colours: the 8 standard and the 8 bright ones.
const BASIC: [Rgb; 16] = [
    [0x00, 0x00, 0x00],
    [0xcd, 0x00, 0x00],
    [0x00, 0xcd, 0x00],
    [0xcd, 0xcd, 0x00],
    [0x00, 0x00, 0xee],
    [0xcd, 0x00, 0xcd],
    [0x00, 0xcd, 0xcd],
    [0xe5, 0xe5, 0xe5],
    [0x7f, 0x7f, 0x7f],
    [0xff, 0x00, 0x00],
    [0x00, 0xff, 0x00],
    [0xff, 0xff, 0x00],
    [0x5c, 0x5c, 0xff],
    [0xff, 0x00, 0xff],
    [0x00, 0xff, 0xff],
    [0xff, 0xff, 0xff],
];

/// The levels of each channel in xterm's 6x6x6 colour cube.
const CUBE: [u8; 6] = [0, 95, 135, 175, 215, 255];

/// Colour `i` of xterm's 256-colour palette.
pub fn xterm_color(i: u8) -> Rgb {
    match i {
        0..=15 => BASIC[i as usize],
        16..=231 => {
            let i = i - 16;
            [CUBE[(i / 36) as usize], CUBE[(i / 6 % 6) as usize], CUBE[(i % 6) as usize]]
        }
        // 24 greys from 8 to 238.
        232..=255 => {
            let g = 8 + 10 * (i - 232);
            [g, g, g]
        }
    }
}

/// A vt100 colour as RGB; `default` stands for the terminal's default.
pub fn resolve(c: vt100::Color, default: Rgb) -> Rgb {
    match c {
        vt100::Color::Default => default,
        vt100::Color::Idx(i) => xterm_color(i),
        vt100::Color::Rgb(r, g, b) => [r, g, b],
    }
}

/// Halfway between two colours: dim (faint) text.
fn mix(a: Rgb, b: Rgb) -> Rgb {
    [0, 1, 2].map(|i| ((a[i] as u16 + b[i] as u16) / 2) as u8)
}

/// One cell. A wide character's second cell, an empty cell or one off the
/// screen is a blank. Inverse video is left to the renderer, as the
/// [`attr::INVERSE`] bit, with the colours as set.
fn cell(c: Option<&vt100::Cell>) -> Cell {
    let Some(c) = c else { return Cell(' ', DEFAULT_FG, DEFAULT_BG, 0) };
    let ch = c.contents().chars().next().unwrap_or(' ');
    let bg = resolve(c.bgcolor(), DEFAULT_BG);
    let mut fg = resolve(c.fgcolor(), DEFAULT_FG);
    if c.dim() {
        fg = mix(fg, bg);
    }
    let attrs = [
        (c.bold(), attr::BOLD),
        (c.italic(), attr::ITALIC),
        (c.underline(), attr::UNDERLINE),
        (c.inverse(), attr::INVERSE),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |a, (_, bit)| a | bit);
    Cell(ch, fg, bg, attrs)
}

/// The screen as it looks: its size (columns, rows), cells row by row,
/// and the cursor's (column, row) when it is shown.
pub struct Screen {
    pub cols: u16,
    pub rows: u16,
    pub cells: Vec<Cell>,
    pub cursor: Option<(u16, u16)>,
}

impl Screen {
    pub fn of(s: &vt100::Screen) -> Screen {
        let (rows, cols) = s.size();
        let mut cells = Vec::with_capacity(rows as usize * cols as usize);
        for r in 0..rows {
            cells.extend((0..cols).map(|c| cell(s.cell(r, c))));
        }
        let cursor = (!s.hide_cursor()).then(|| {
            let (r, c) = s.cursor_position();
            // Past the last column while a wrap is pending: show it there.
            (c.min(cols.saturating_sub(1)), r.min(rows.saturating_sub(1)))
        });
        Screen { cols, rows, cells, cursor }
    }

    /// Whether two screens look the same.
    pub fn same(&self, o: &Screen) -> bool {
        (self.cols, self.rows, self.cursor) == (o.cols, o.rows, o.cursor) && self.cells == o.cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palette() {
        assert_eq!(xterm_color(1), [0xcd, 0, 0]);
        assert_eq!(xterm_color(16), [0, 0, 0]);
        assert_eq!(xterm_color(196), [255, 0, 0]);
        assert_eq!(xterm_color(231), [255, 255, 255]);
        assert_eq!(xterm_color(232), [8, 8, 8]);
        assert_eq!(xterm_color(255), [238, 238, 238]);
    }

    #[test]
    fn wide_and_dim() {
        let mut p = vt100::Parser::new(2, 4, 0);
        p.process("漢\x1b[2mx".as_bytes());
        let s = Screen::of(p.screen());
        assert_eq!(s.cells[0].ch(), '漢');
        assert_eq!(s.cells[1].ch(), ' ');
        assert_eq!(s.cells[2].ch(), 'x');
        assert_eq!(s.cells[2].fg(), mix(DEFAULT_FG, DEFAULT_BG));
        assert_eq!(s.cursor, Some((3, 0)));
    }
}
