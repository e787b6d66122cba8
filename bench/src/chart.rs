//! `chart.svg`: the ratios as a bar chart, written by hand.
//!
//! One bar per row, on a log2 axis around 1x (mesh as good as its
//! baseline), so that 2x slower and half the throughput look equally far
//! from parity. A tick marks each row's target; colour says met (green),
//! missed (red) or no target (grey).

use std::fmt::Write as _;

use crate::report::{Row, Status};

const LABEL_W: f64 = 480.0;
const PLOT_W: f64 = 480.0;
const ROW_H: f64 = 22.0;
const TOP: f64 = 48.0;
const RIGHT: f64 = 70.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The axis: powers of two from `lo` to `hi`, wide enough for every
/// ratio and target.
fn axis(rows: &[Row]) -> (i32, i32) {
    let vals = rows
        .iter()
        .flat_map(|r| [r.ratio(), r.target.map(|t| t.value())])
        .flatten()
        .filter(|v| *v > 0.0 && v.is_finite());
    let (mut lo, mut hi) = (-2i32, 2i32);
    for v in vals {
        let e = v.log2();
        lo = lo.min(e.floor() as i32);
        hi = hi.max(e.ceil() as i32);
    }
    (lo.max(-10), hi.min(10))
}

pub fn svg(rows: &[Row]) -> String {
    let (lo, hi) = axis(rows);
    let x = |v: f64| {
        let e = v.max(f64::MIN_POSITIVE).log2().clamp(lo as f64, hi as f64);
        LABEL_W + (e - lo as f64) / (hi - lo) as f64 * PLOT_W
    };
    let height = TOP + ROW_H * rows.len() as f64 + 40.0;
    let width = LABEL_W + PLOT_W + RIGHT;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="8" y="18" font-size="14" font-weight="bold">mesh / baseline (log scale; latency: lower is better, throughput: higher is better)</text>"##
    );
    let bottom = TOP + ROW_H * rows.len() as f64;
    for e in lo..=hi {
        let v = 2f64.powi(e);
        let gx = x(v);
        let stroke = if e == 0 { "#000" } else { "#ddd" };
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{:.1}" x2="{gx:.1}" y2="{bottom:.1}" stroke="{stroke}"/>"##,
            TOP - 6.0
        );
        let label = if e >= 0 { format!("{}x", 1u64 << e) } else { format!("1/{}x", 1u64 << -e) };
        let _ = writeln!(
            s,
            r##"<text x="{gx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{label}</text>"##,
            bottom + 16.0
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let y = TOP + ROW_H * i as f64;
        let _ = writeln!(
            s,
            r##"<text x="8" y="{:.1}">{}</text>"##,
            y + 15.0,
            esc(&format!("{} - {} vs {}", r.workload, r.case, r.baseline_name))
        );
        let colour = match r.status() {
            Status::Met => "#2e9e44",
            Status::Missed => "#d43c3c",
            _ => "#8a8a8a",
        };
        match r.ratio() {
            Some(ratio) => {
                let (a, b) = (x(1.0), x(ratio));
                let _ = writeln!(
                    s,
                    r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"/>"##,
                    a.min(b),
                    y + 4.0,
                    (a - b).abs().max(1.0),
                    ROW_H - 8.0
                );
                let _ =
                    writeln!(s, r##"<text x="{:.1}" y="{:.1}">{ratio:.2}x</text>"##, LABEL_W + PLOT_W + 6.0, y + 15.0);
            }
            None => {
                let _ = writeln!(s, r##"<text x="{:.1}" y="{:.1}" fill="#8a8a8a">n/a</text>"##, x(1.0) + 4.0, y + 15.0);
            }
        }
        if let Some(t) = r.target {
            let tx = x(t.value());
            let _ = writeln!(
                s,
                r##"<line x1="{tx:.1}" y1="{:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#000" stroke-width="2" stroke-dasharray="3,2"/>"##,
                y + 1.0,
                y + ROW_H - 1.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Target, Unit};

    #[test]
    fn escapes_and_draws_every_row() {
        let rows = vec![
            Row::new("rpc <64 B>", "tcp", Unit::Micros, Some(40.0), Some(20.0), "raw").target(Target::AtMost(1.5)),
            Row::new("bulk", "encrypted", Unit::MBps, None, Some(1000.0), "raw"),
        ];
        let s = svg(&rows);
        assert!(s.contains("rpc &lt;64 B&gt;"));
        assert!(s.contains("2.00x"));
        assert!(s.contains("n/a"));
        assert!(s.trim_end().ends_with("</svg>"));
    }
}
