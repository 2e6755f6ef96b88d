//! The failover benchmark's plot: one row per scenario, every trial's
//! takeover (filled) and the AP's longest probe gap (hollow) on a log time
//! axis, wimark-ha rows beside keepalived rows. Plain SVG, no dependencies.

use std::fmt::Write as _;

pub struct Row {
    pub label: String,
    /// A wimark-ha row (drawn in blue; keepalived in grey).
    pub ours: bool,
    pub takeover_ms: Vec<f64>,
    pub gap_ms: Vec<f64>,
}

const WIDTH: f64 = 960.0;
const LEFT: f64 = 300.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 40.0;
const ROW: f64 = 34.0;
/// The axis: 0.1 ms to 10 s.
const MIN_MS: f64 = 0.1;
const MAX_MS: f64 = 10_000.0;

fn x(ms: f64) -> f64 {
    let clamped = ms.clamp(MIN_MS, MAX_MS);
    LEFT + (clamped.log10() - MIN_MS.log10()) / (MAX_MS.log10() - MIN_MS.log10())
        * (WIDTH - LEFT - RIGHT)
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted.get(sorted.len() / 2).copied()
}

pub fn svg(rows: &[Row]) -> String {
    let height = TOP + ROW * rows.len() as f64 + 60.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="20" font-size="14">Failover per trial: takeover (last advert → first GARP, filled) and AP probe gap (hollow), log scale</text>"#
    );
    let bottom = TOP + ROW * rows.len() as f64;
    for (ms, label) in [
        (0.1, "0.1 ms"),
        (1.0, "1 ms"),
        (10.0, "10 ms"),
        (100.0, "100 ms"),
        (1000.0, "1 s"),
        (10_000.0, "10 s"),
    ] {
        let at = x(ms);
        let _ = writeln!(
            out,
            r##"<line x1="{at:.1}" y1="{TOP}" x2="{at:.1}" y2="{bottom}" stroke="#ddd"/><text x="{at:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            bottom + 16.0
        );
    }
    for (index, row) in rows.iter().enumerate() {
        let y = TOP + ROW * index as f64 + ROW / 2.0;
        let colour = if row.ours { "#1f5fbf" } else { "#777" };
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 10.0,
            y + 4.0,
            row.label
        );
        for ms in row.gap_ms.iter().filter(|v| v.is_finite()) {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="none" stroke="{colour}" stroke-opacity="0.6"/>"#,
                x(*ms),
                y + 7.0
            );
        }
        for ms in row.takeover_ms.iter().filter(|v| v.is_finite()) {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{colour}" fill-opacity="0.6"/>"#,
                x(*ms),
                y - 5.0
            );
        }
        if let Some(ms) = median(&row.takeover_ms) {
            let at = x(ms);
            let _ = writeln!(
                out,
                r#"<line x1="{at:.1}" y1="{:.1}" x2="{at:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}" fill="{colour}">{ms:.1} ms</text>"#,
                y - 13.0,
                y + 3.0,
                at + 6.0,
                y - 8.0
            );
        }
    }
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="{:.1}">blue: wimark-ha (VRRPv3 10 ms, fast detection 1 ms × 3); grey: keepalived; bar: median takeover</text>"##,
        bottom + 40.0
    );
    out.push_str("</svg>\n");
    out
}
