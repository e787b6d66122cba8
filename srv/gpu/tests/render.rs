//! The renderer on a real Vulkan device (lavapipe in CI): pixels checked
//! against the font crates' own bitmaps, sizes, errors and speed.

use std::time::Instant;

use mesh_frame::{attr, Cell, Frame, Rgb, Snapshot};
use mesh_gpu::{GpuError, Renderer, CELL_H, CELL_W};
use noto_sans_mono_bitmap::{get_raster, FontWeight, RasterHeight};

const FG: Rgb = [200, 100, 50];
const BG: Rgb = [10, 20, 30];
const SCREEN: Rgb = [1, 2, 3];

fn renderer() -> Renderer {
    match Renderer::new() {
        Ok(r) => r,
        Err(e) => {
            panic!("{e}: these tests need a Vulkan device; on Debian: apt-get install mesa-vulkan-drivers libvulkan1")
        }
    }
}

fn blank(cols: u16, rows: u16) -> Snapshot {
    Snapshot {
        seq: 7,
        pts_us: 1234,
        cols,
        rows,
        cells: vec![Cell(' ', [255; 3], SCREEN, 0); cols as usize * rows as usize],
        cursor: None,
    }
}

fn px(f: &Frame, x: u32, y: u32) -> [u8; 4] {
    let i = (y * f.width + x) as usize * 4;
    f.rgba[i..i + 4].try_into().unwrap()
}

/// The shader's blend: bg + (fg - bg) * a / 255, rounded.
fn blend(fg: Rgb, bg: Rgb, a: u8) -> [u8; 4] {
    let c = |f: u8, b: u8| ((f as u32 * a as u32 + b as u32 * (255 - a as u32) + 127) / 255) as u8;
    [c(fg[0], bg[0]), c(fg[1], bg[1]), c(fg[2], bg[2]), 255]
}

/// Checks cell (col, row) shows `coverage(x, y)` in `fg` over `bg`.
fn assert_cell(f: &Frame, col: u32, row: u32, fg: Rgb, bg: Rgb, coverage: impl Fn(u32, u32) -> u8) {
    for y in 0..CELL_H {
        for x in 0..CELL_W {
            let got = px(f, col * CELL_W + x, row * CELL_H + y);
            assert_eq!(got, blend(fg, bg, coverage(x, y)), "cell ({col},{row}) pixel ({x},{y})");
        }
    }
}

/// Noto's coverage of `ch` at (x, y) of a cell: the glyph sits at the
/// left, its coverage scaled by 5/4 (the atlas's documented ink boost).
fn noto(ch: char, weight: FontWeight) -> impl Fn(u32, u32) -> u8 {
    let g = get_raster(ch, weight, RasterHeight::Size16).expect("glyph");
    move |x, y| g.pixel(x as usize, y as usize).map_or(0, |c| (c as u32 * 5 / 4).min(255) as u8)
}

#[test]
fn hi_in_colours_with_cursor() {
    let mut r = renderer();
    eprintln!("device: {}", r.device_name());
    assert!(!r.device_name().is_empty());
    let mut s = blank(4, 2);
    s.cells[0] = Cell('H', FG, BG, 0);
    s.cells[1] = Cell('i', FG, BG, 0);
    s.cursor = Some((3, 1));
    let f = r.render(&s).unwrap();
    assert_eq!((f.seq, f.pts_us, f.width, f.height), (7, 1234, 32, 32));
    f.validate().unwrap();
    // The glyphs really are there, and differ.
    let h = noto('H', FontWeight::Regular);
    assert!((0..CELL_H).any(|y| (0..CELL_W).any(|x| h(x, y) == 255)));
    assert_cell(&f, 0, 0, FG, BG, h);
    assert_cell(&f, 1, 0, FG, BG, noto('i', FontWeight::Regular));
    // Blank cells are the background; the cursor's is inverted.
    assert_cell(&f, 2, 0, [255; 3], SCREEN, |_, _| 0);
    assert_cell(&f, 3, 1, SCREEN, [255; 3], |_, _| 0);
}

#[test]
fn attributes() {
    let mut r = renderer();
    let mut s = blank(5, 1);
    s.cells[0] = Cell('B', FG, BG, attr::BOLD);
    s.cells[1] = Cell('u', FG, BG, attr::UNDERLINE);
    s.cells[2] = Cell('v', FG, BG, attr::INVERSE);
    s.cells[3] = Cell('\u{4e00}', FG, BG, 0);
    s.cells[4] = Cell('v', FG, BG, attr::INVERSE);
    s.cursor = Some((4, 0));
    let f = r.render(&s).unwrap();
    assert_cell(&f, 0, 0, FG, BG, noto('B', FontWeight::Bold));
    let u = noto('u', FontWeight::Regular);
    assert_cell(&f, 1, 0, FG, BG, |x, y| if y == CELL_H - 2 { 255 } else { u(x, y) });
    assert_cell(&f, 2, 0, BG, FG, noto('v', FontWeight::Regular));
    // A character the fonts lack shows the replacement glyph.
    assert_cell(&f, 3, 0, FG, BG, noto('\u{fffd}', FontWeight::Regular));
    // The cursor on an inverse cell shows it plain.
    assert_cell(&f, 4, 0, FG, BG, noto('v', FontWeight::Regular));
}

#[test]
fn box_drawing_from_the_8x8_font() {
    let mut r = renderer();
    let mut s = blank(2, 1);
    s.cells[0] = Cell('┼', FG, BG, 0);
    s.cells[1] = Cell('▄', FG, BG, 0);
    let f = r.render(&s).unwrap();
    for (col, ch) in [(0, '┼'), (1, '▄')] {
        let rows = font8x8::BOX_UNICODE.iter().chain(font8x8::BLOCK_UNICODE.iter()).find(|g| g.0 == ch).unwrap().1;
        assert_cell(&f, col, 0, FG, BG, |x, y| if rows[y as usize / 2] >> x & 1 == 1 { 255 } else { 0 });
    }
}

#[test]
fn size_changes() {
    let mut r = renderer();
    for (cols, rows) in [(80, 24), (100, 30), (80, 24), (2, 1)] {
        let mut s = blank(cols, rows);
        let last = s.cells.len() - 1;
        s.cells[last] = Cell('█', FG, BG, 0);
        let f = r.render(&s).unwrap();
        assert_eq!((f.width, f.height), (cols as u32 * 8, rows as u32 * 16));
        f.validate().unwrap();
        assert_eq!(px(&f, 0, 0), blend(FG, SCREEN, 0));
        assert_eq!(px(&f, f.width - 1, f.height - 1), blend(FG, BG, 255));
    }
}

#[test]
fn invalid_snapshots_are_errors() {
    let mut r = renderer();
    let mut s = blank(3, 2);
    s.cells.pop();
    assert!(matches!(r.render(&s), Err(GpuError::BadSnapshot(_))));
    let empty = Snapshot { cols: 0, rows: 0, cells: vec![], ..blank(1, 1) };
    assert!(matches!(r.render(&empty), Err(GpuError::BadSnapshot(_))));
    let huge = blank(u16::MAX, 3);
    assert!(matches!(r.render(&huge), Err(GpuError::TooLarge(_))));
    // Still usable afterwards.
    let f = r.render(&blank(3, 2)).unwrap();
    assert_eq!((f.width, f.height), (24, 32));
}

#[test]
fn speed_80x24() {
    let mut r = renderer();
    let text = "The quick brown fox jumps over the lazy dog 0123456789 ~!@#$%^&*()_+{}|:<>?";
    let mut s = blank(80, 24);
    for (i, c) in s.cells.iter_mut().enumerate() {
        let ch = text.chars().nth(i % text.len()).unwrap_or('x');
        *c = Cell(ch, [(i * 7) as u8, 200, 100], [0, 0, (i / 80 * 10) as u8], (i % 16) as u8);
    }
    s.cursor = Some((10, 5));
    r.render(&s).unwrap(); // warm up: first use of the buffers
    let n = 30;
    let t = Instant::now();
    for i in 0..n {
        s.seq = i;
        let f = r.render(&s).unwrap();
        assert_eq!(f.seq, i);
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
    // Measured, not asserted: a speed belongs in the benchmarks (bench
    // pipeline), and a busy machine must not fail a test.
    eprintln!("gpu: {ms:.2} ms per 80x24 frame on {}", r.device_name());
}
