//! Charts drawn on the server as inline SVG: stacked bars, lines, and horizontal bars
//! for ranked lists. Every mark carries its series, label and value as `data-*`
//! attributes and a `<title>` (the browser's tooltip), and every chart sits beside a
//! table of the same numbers, so nothing is known only from its picture.

use std::fmt::Write;

use super::html::{Unit, esc};

/// Colours for series, told apart also in greyscale and by most colour-blind readers
/// (the table beside each chart carries the same numbers).
pub const PALETTE: [&str; 8] = ["#2563eb", "#f59e0b", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];
/// The colour of the series that gathers the rest.
pub const OTHER: &str = "#94a3b8";

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 260.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 34.0;
const LEFT: f64 = 70.0;

/// One named series of values, one per label; `None` where there is no value.
pub struct Series {
    pub name: String,
    pub colour: &'static str,
    pub values: Vec<Option<f64>>,
}

/// A time chart: `bars` stacked on the left axis, `lines` on the right axis when there
/// are bars too, else on the left.
pub struct Chart<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub labels: &'a [String],
    pub bars: Vec<Series>,
    pub bar_unit: Unit,
    pub lines: Vec<Series>,
    pub line_unit: Unit,
}

/// 0 and a round top at or above `max`, with the step between ticks (whole steps for
/// counts).
fn scale(max: f64, unit: Unit) -> (f64, f64) {
    if unit == Unit::Count && max <= 4.0 {
        return (4.0, 1.0);
    }
    if !max.is_finite() || max <= 0.0 {
        return (1.0, 0.25);
    }
    let rough = max / 4.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step =
        [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= rough).unwrap_or(10.0 * magnitude);
    let step = if unit == Unit::Count { step.ceil() } else { step };
    ((max / step).ceil().max(1.0) * step, step)
}

fn axis(out: &mut String, top: f64, step: f64, unit: Unit, x: f64, anchor: &str, grid: bool) {
    let plot_h = HEIGHT - TOP - BOTTOM;
    let mut v = 0.0;
    while v <= top + step / 2.0 {
        let y = TOP + plot_h - v / top * plot_h;
        if grid {
            let _ = write!(
                out,
                r##"<line x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#e2e8f0" stroke-width="1"/>"##,
                x2 = WIDTH - LEFT
            );
        }
        let _ = write!(
            out,
            r#"<text x="{x}" y="{ty:.1}" text-anchor="{anchor}" class="tick">{}</text>"#,
            esc(&unit.short(v)),
            ty = y + 4.0
        );
        v += step;
    }
}

/// Every `k`th label, so at most about 10 show.
fn label_every(n: usize) -> usize {
    n.div_ceil(10).max(1)
}

impl Chart<'_> {
    pub fn render(&self) -> String {
        let n = self.labels.len().max(1);
        let plot_w = WIDTH - 2.0 * LEFT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let band = plot_w / n as f64;
        let mut out = String::with_capacity(8_192);
        let _ = write!(
            out,
            r#"<svg id="{id}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{id}-t" preserveAspectRatio="xMidYMid meet"><title id="{id}-t">{title}</title>"#,
            id = esc(self.id),
            title = esc(self.title),
        );
        let stacked: Vec<f64> = (0..self.labels.len())
            .map(|i| self.bars.iter().map(|s| s.values.get(i).copied().flatten().unwrap_or(0.0)).sum())
            .collect();
        let bar_max = stacked.iter().copied().fold(0.0, f64::max);
        let line_max = self.lines.iter().flat_map(|s| s.values.iter().flatten()).copied().fold(0.0, f64::max);
        let (bar_top, bar_step) = scale(bar_max, self.bar_unit);
        let (line_top, line_step) = scale(line_max, self.line_unit);
        if !self.bars.is_empty() {
            axis(&mut out, bar_top, bar_step, self.bar_unit, LEFT - 6.0, "end", true);
        }
        if !self.lines.is_empty() {
            let (x, anchor) = if self.bars.is_empty() { (LEFT - 6.0, "end") } else { (WIDTH - LEFT + 6.0, "start") };
            axis(&mut out, line_top, line_step, self.line_unit, x, anchor, self.bars.is_empty());
        }
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{x2}" y1="{y}" y2="{y}" stroke="#64748b" stroke-width="1"/>"##,
            x2 = WIDTH - LEFT,
            y = TOP + plot_h
        );
        let every = label_every(self.labels.len());
        for (i, label) in self.labels.iter().enumerate() {
            if i % every == 0 {
                let _ = write!(
                    out,
                    r#"<text x="{x:.1}" y="{y}" text-anchor="middle" class="tick">{}</text>"#,
                    esc(short_label(label)),
                    x = LEFT + band * (i as f64 + 0.5),
                    y = HEIGHT - BOTTOM + 16.0
                );
            }
        }
        let bar_w = (band * 0.72).max(1.0);
        for (i, label) in self.labels.iter().enumerate() {
            let mut base = 0.0;
            for s in &self.bars {
                let Some(v) = s.values.get(i).copied().flatten().filter(|v| *v > 0.0) else { continue };
                let y0 = TOP + plot_h - (base + v) / bar_top * plot_h;
                let h = v / bar_top * plot_h;
                let _ = write!(
                    out,
                    r#"<rect x="{x:.2}" y="{y0:.2}" width="{bar_w:.2}" height="{h:.2}" fill="{c}" data-series="{name}" data-label="{label}" data-value="{v}"><title>{label} · {name}: {shown}</title></rect>"#,
                    x = LEFT + band * i as f64 + (band - bar_w) / 2.0,
                    c = s.colour,
                    name = esc(&s.name),
                    label = esc(label),
                    shown = esc(&self.bar_unit.long(v)),
                );
                base += v;
            }
        }
        let line_axis_top = if self.lines.is_empty() { 1.0 } else { line_top };
        for s in &self.lines {
            let points: Vec<(f64, f64, f64, &String)> = self
                .labels
                .iter()
                .enumerate()
                .filter_map(|(i, label)| {
                    let v = s.values.get(i).copied().flatten()?;
                    let x = LEFT + band * (i as f64 + 0.5);
                    Some((x, TOP + plot_h - v / line_axis_top * plot_h, v, label))
                })
                .collect();
            let path: Vec<String> = points.iter().map(|(x, y, _, _)| format!("{x:.1},{y:.1}")).collect();
            let _ = write!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2" stroke-linejoin="round"/>"#,
                path.join(" "),
                c = s.colour
            );
            for (x, y, v, label) in points {
                let _ = write!(
                    out,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{c}" data-series="{name}" data-label="{label}" data-value="{v}"><title>{label} · {name}: {shown}</title></circle>"#,
                    c = s.colour,
                    name = esc(&s.name),
                    label = esc(label),
                    shown = esc(&self.line_unit.long(v)),
                );
            }
        }
        out.push_str("</svg>");
        out
    }

    /// The series' names and colours, for the legend under the chart.
    pub fn legend(&self) -> String {
        let mut out = String::from(r#"<ul class="legend">"#);
        for s in self.bars.iter().chain(&self.lines) {
            let _ =
                write!(out, r#"<li><span class="swatch" style="background:{}"></span>{}</li>"#, s.colour, esc(&s.name));
        }
        out.push_str("</ul>");
        out
    }
}

/// `2026-11-05T00:00:00+05:30` as `11-05`; other labels as they are.
fn short_label(label: &str) -> &str {
    if label.len() >= 10 && label.as_bytes().get(4) == Some(&b'-') { &label[5..10] } else { label }
}

/// A ranked list as horizontal bars, longest first as given.
pub fn ranked(id: &str, title: &str, items: &[(String, f64)], unit: Unit) -> String {
    // Narrower than the time charts, so its text reads larger wherever it is put.
    const RANKED_WIDTH: f64 = 460.0;
    let row = 24.0;
    let label_w = 190.0;
    let height = (items.len().max(1) as f64) * row + 8.0;
    let max = items.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    let plot_w = RANKED_WIDTH - label_w - 70.0;
    let mut out = String::with_capacity(2_048);
    let _ = write!(
        out,
        r#"<svg id="{id}" class="chart ranked" viewBox="0 0 {RANKED_WIDTH} {height}" role="img" aria-labelledby="{id}-t"><title id="{id}-t">{title}</title>"#,
        id = esc(id),
        title = esc(title)
    );
    for (i, (label, v)) in items.iter().enumerate() {
        let y = 4.0 + i as f64 * row;
        let w = if max > 0.0 { v / max * plot_w } else { 0.0 };
        let shown: String = label.chars().take(26).collect();
        let _ = write!(
            out,
            r##"<text x="{tx}" y="{ty:.1}" text-anchor="end" class="tick">{shown}</text><rect x="{label_w}" y="{y:.1}" width="{w:.2}" height="18" fill="#2563eb" data-label="{label}" data-value="{v}"><title>{label}: {long}</title></rect><text x="{vx:.1}" y="{ty:.1}" class="tick">{short}</text>"##,
            tx = label_w - 8.0,
            ty = y + 13.0,
            shown = esc(&shown),
            label = esc(label),
            long = esc(&unit.long(*v)),
            vx = label_w + w + 6.0,
            short = esc(&unit.long(*v)),
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_are_round_and_cover_the_maximum() {
        assert_eq!(scale(0.0, Unit::Usd), (1.0, 0.25));
        assert_eq!(scale(0.0, Unit::Count), (4.0, 1.0));
        assert_eq!(scale(3.0, Unit::Count), (4.0, 1.0));
        assert_eq!(scale(9.0, Unit::Usd), (10.0, 2.5));
        assert_eq!(scale(130.0, Unit::Count), (150.0, 50.0));
        let (top, step) = scale(0.0123, Unit::Usd);
        assert!(top >= 0.0123 && (top / step).round() <= 5.0, "{top} {step}");
    }

    #[test]
    fn stacked_bars_carry_their_numbers_and_escape_names() {
        let labels = vec!["2026-11-01T00:00:00+00:00".to_owned(), "2026-11-02T00:00:00+00:00".to_owned()];
        let chart = Chart {
            id: "spend",
            title: "Spend <by> model",
            labels: &labels,
            bars: vec![
                Series { name: "a&b".into(), colour: PALETTE[0], values: vec![Some(1.5), None] },
                Series { name: "c".into(), colour: PALETTE[1], values: vec![Some(0.5), Some(2.0)] },
            ],
            bar_unit: Unit::Usd,
            lines: vec![],
            line_unit: Unit::Count,
        };
        let svg = chart.render();
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains(r#"data-series="a&amp;b" data-label="2026-11-01T00:00:00+00:00" data-value="1.5""#));
        assert!(svg.contains("Spend &lt;by&gt; model"));
        assert!(!svg.contains("<by>"));
    }
}
