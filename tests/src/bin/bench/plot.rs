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
/// The plot spans the width: each row's label sits on a line of its own
/// above its dots, so no label is cut however long (they were right-aligned
/// before a 300 px margin, and the long ones ran off the left edge).
const LEFT: f64 = 40.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 64.0;
const ROW: f64 = 48.0;
const MARGIN: f64 = 10.0;
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
    let height = TOP + ROW * rows.len() as f64 + 64.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN}" y="22" font-size="14">Failover per trial, log time scale</text>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN}" y="40">filled: takeover (the old active's last advert to the new one's first gratuitous ARP); hollow: the AP's longest probe gap</text>"#
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
        let y = TOP + ROW * index as f64 + ROW / 2.0 + 6.0;
        let colour = if row.ours { "#1f5fbf" } else { "#777" };
        let _ = writeln!(
            out,
            r#"<text x="{MARGIN}" y="{:.1}" fill="{colour}">{}</text>"#,
            y - 20.0,
            escape(&row.label)
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
        r##"<text x="{MARGIN}" y="{:.1}">blue: wimark-ha; grey: keepalived; bar: median takeover</text>"##,
        bottom + 40.0
    );
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every text's extent, estimated from its length (sans-serif text
    /// averages about 0.5 em per character; 0.55 for margin), lies inside
    /// the picture.
    #[test]
    fn every_label_and_the_title_fit_inside_the_picture() {
        let rows: Vec<Row> = (0..10)
            .map(|n| Row {
                label: format!(
                    "wimark-ha (VRRPv3 10 ms, fast detection 1 ms x auto: the packaged default), both cores saturated / node loss (link cut + SIGKILL) {n}"
                ),
                ours: n % 2 == 0,
                takeover_ms: vec![3.0, 4.0],
                gap_ms: vec![5.0],
            })
            .collect();
        let svg = svg(&rows);
        let mut texts = 0;
        for element in svg.split("<text ").skip(1) {
            let attribute = |name: &str| -> Option<String> {
                let start = element.find(&format!("{name}=\""))? + name.len() + 2;
                Some(element[start..].split('"').next()?.to_string())
            };
            let x: f64 = attribute("x").expect("x").parse().expect("number");
            let size: f64 = attribute("font-size").map_or(12.0, |s| s.parse().expect("size"));
            let content = &element[element.find('>').expect(">") + 1..element.find("</text>").expect("end")];
            let width = content.chars().count() as f64 * 0.55 * size;
            let (left, right) = match attribute("text-anchor").as_deref() {
                Some("end") => (x - width, x),
                Some("middle") => (x - width / 2.0, x + width / 2.0),
                _ => (x, x + width),
            };
            assert!(left >= 0.0 && right <= WIDTH, "clipped: `{content}` spans {left:.0}..{right:.0}");
            texts += 1;
        }
        assert!(texts > 10);
    }
}
