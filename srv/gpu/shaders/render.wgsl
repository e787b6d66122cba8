// Renders a grid of character cells into RGBA pixels: one invocation per
// pixel. The host (src/grid.rs) has already resolved the glyph, colours
// and attributes of every cell, so this only samples and blends.
//
// Keep the layouts in step with src/grid.rs and src/font.rs.

const CELL_W: u32 = 8u;
const CELL_H: u32 = 16u;
// Bytes of one glyph in the atlas: one coverage byte per pixel.
const GLYPH_BYTES: u32 = 128u; // CELL_W * CELL_H

const FLAG_UNDERLINE: u32 = 1u;
const FLAG_ITALIC: u32 = 2u;

struct Grid {
    cols: u32,
    width: u32,
    height: u32,
    _pad: u32,
    // Per cell: (atlas glyph, fg 0xBBGGRR, bg 0xBBGGRR, flags).
    cells: array<vec4<u32>>,
}

@group(0) @binding(0) var<storage, read> grid: Grid;
// Glyph coverage bytes, four to a word, little end first.
@group(0) @binding(1) var<storage, read> atlas: array<u32>;
// One RGBA8 pixel a word: R in the low byte, so the bytes read R, G, B, A.
@group(0) @binding(2) var<storage, read_write> frame: array<u32>;

fn coverage(glyph: u32, x: i32, y: u32) -> u32 {
    if x < 0 || x >= i32(CELL_W) {
        return 0u;
    }
    let byte = glyph * GLYPH_BYTES + y * CELL_W + u32(x);
    return (atlas[byte >> 2u] >> ((byte & 3u) * 8u)) & 0xffu;
}

// bg + (fg - bg) * a / 255 per channel, rounded: the same integer formula
// the tests use, so results are exact on every device.
fn blend(fg: u32, bg: u32, a: u32) -> u32 {
    var out = 0xff000000u;
    for (var shift = 0u; shift < 24u; shift += 8u) {
        let f = (fg >> shift) & 0xffu;
        let b = (bg >> shift) & 0xffu;
        out |= ((f * a + b * (255u - a) + 127u) / 255u) << shift;
    }
    return out;
}

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x >= grid.width || id.y >= grid.height {
        return;
    }
    let x = id.x % CELL_W;
    let y = id.y % CELL_H;
    let cell = grid.cells[(id.y / CELL_H) * grid.cols + id.x / CELL_W];
    // Italic: slant by sampling further left the higher the row.
    var shift = 0u;
    if (cell.w & FLAG_ITALIC) != 0u {
        shift = (CELL_H - 1u - y) / 6u;
    }
    var a = coverage(cell.x, i32(x) - i32(shift), y);
    if (cell.w & FLAG_UNDERLINE) != 0u && y == CELL_H - 2u {
        a = 255u;
    }
    frame[id.y * grid.width + id.x] = blend(cell.y, cell.z, a);
}
