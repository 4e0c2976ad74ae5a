//! The report's charts, drawn as inline SVG with plotters: no JavaScript,
//! no fonts fetched, nothing loaded from the network.
//!
//! Must never: fail the report (a chart that cannot be drawn is left out).

use plotters::prelude::*;

use super::evidence::{percentile, Histogram};
use super::Report;

/// The report's column (1,200 px less its padding): the charts fill it and
/// scale down with it (`max-width: 100%`).
const WIDTH: u32 = 1168;
const HEIGHT: u32 = 300;
/// Text sizes, in the chart's own pixels.
const CAPTION: u32 = 22;
const LABELS: u32 = 15;
const PRIMARY: RGBColor = RGBColor(0x55, 0x6b, 0x8d);
const SHADOW: RGBColor = RGBColor(0xd9, 0x77, 0x06);
const DIVERGED: RGBColor = RGBColor(0xc0, 0x39, 0x2b);
const MARK: RGBColor = RGBColor(0x6d, 0x28, 0xd9);

/// Latency by percentile, primary against shadow, for one route.
pub fn latency(route: &str, primary: &Histogram, shadow: &Histogram) -> Option<String> {
    let points = |histogram: &Histogram| -> Vec<(f64, f64)> {
        (1..=99)
            .filter_map(|p| percentile(histogram, f64::from(p) / 100.0).map(|ms| (f64::from(p), ms)))
            .collect()
    };
    let (primary, shadow) = (points(primary), points(shadow));
    if primary.is_empty() && shadow.is_empty() {
        return None;
    }
    let top = primary.iter().chain(&shadow).map(|(_, ms)| *ms).fold(1.0, f64::max) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{route}: latency by percentile"), ("sans-serif", CAPTION))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(56)
            .y_label_area_size(72)
            .build_cartesian_2d(0f64..100f64, 0f64..top)
            .ok()?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("ms")
            .x_label_formatter(&|p| format!("p{p:.0}"))
            .y_label_formatter(&|ms| tick(*ms))
            .label_style(("sans-serif", LABELS))
            .axis_desc_style(("sans-serif", LABELS))
            .light_line_style(RGBColor(0xee, 0xee, 0xee))
            .draw()
            .ok()?;
        chart
            .draw_series(LineSeries::new(primary, PRIMARY.stroke_width(2)))
            .ok()?
            .label("primary")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], PRIMARY.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(shadow, SHADOW.stroke_width(2)))
            .ok()?
            .label("shadow")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], SHADOW.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", LABELS))
            .border_style(BLACK.mix(0.3))
            .background_style(WHITE.mix(0.9))
            .draw()
            .ok()?;
        root.present().ok()?;
    }
    Some(svg)
}

/// The share of compared requests that diverged, per time bucket.
pub fn divergence_rate(report: &Report) -> Option<String> {
    let points: Vec<(f64, f64)> = report
        .timeline
        .iter()
        .filter(|bucket| bucket.compared > 0)
        .map(|bucket| {
            (
                bucket_middle(report, bucket.start_ms),
                100.0 * bucket.diverged as f64 / bucket.compared as f64,
            )
        })
        .collect();
    if points.is_empty() {
        return None;
    }
    let (start, end) = span(report);
    let top = points.iter().map(|(_, rate)| *rate).fold(1.0, f64::max) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let mut chart = ChartBuilder::on(&root)
            .caption("divergence rate over time", ("sans-serif", CAPTION))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(56)
            .y_label_area_size(72)
            .build_cartesian_2d(start..end, 0f64..top)
            .ok()?;
        let clock = clock_labels(start, end);
        chart
            .configure_mesh()
            .x_desc(clock.description)
            .y_desc("% diverged")
            .x_labels(8)
            .x_label_formatter(&|at| clock.format(*at))
            .y_label_formatter(&|rate| format!("{}%", tick(*rate)))
            .label_style(("sans-serif", LABELS))
            .axis_desc_style(("sans-serif", LABELS))
            .light_line_style(RGBColor(0xee, 0xee, 0xee))
            .draw()
            .ok()?;
        chart
            .draw_series(LineSeries::new(points.clone(), DIVERGED.stroke_width(2)))
            .ok()?;
        chart
            .draw_series(points.into_iter().map(|point| Circle::new(point, 2, DIVERGED.filled())))
            .ok()?;
        root.present().ok()?;
    }
    Some(svg)
}

/// Requests per time bucket, with mode switches, rollbacks and reloads marked.
pub fn requests(report: &Report) -> Option<String> {
    if report.timeline.is_empty() {
        return None;
    }
    let bucket_ms = report.evidence.bucket_ms as f64;
    let (start, end) = span(report);
    // Counts are whole numbers: an integer axis, so no tick reads "2.5".
    let top = (report.timeline.iter().map(|b| b.requests).max().unwrap_or(1).max(1) as f64 * 1.15).ceil() as u64;
    let marks: Vec<f64> = report
        .evidence
        .events
        .iter()
        .filter(|(_, kind, _)| matches!(kind.as_str(), "mode_switch" | "rollback" | "config_reload"))
        .map(|(at, _, _)| *at as f64)
        .filter(|at| (start..=end).contains(at))
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "requests over time (marks: mode switches, rollbacks, reloads)",
                ("sans-serif", CAPTION),
            )
            .margin(12)
            .margin_right(28)
            .x_label_area_size(56)
            .y_label_area_size(72)
            .build_cartesian_2d(start..end, 0u64..top)
            .ok()?;
        let clock = clock_labels(start, end);
        chart
            .configure_mesh()
            .x_desc(clock.description)
            .y_desc(format!("requests per {}", super::human(report.evidence.bucket_ms)))
            .x_labels(8)
            .y_labels(usize::try_from(top.min(8)).unwrap_or(8))
            .x_label_formatter(&|at| clock.format(*at))
            .label_style(("sans-serif", LABELS))
            .axis_desc_style(("sans-serif", LABELS))
            .light_line_style(RGBColor(0xee, 0xee, 0xee))
            .draw()
            .ok()?;
        chart
            .draw_series(report.timeline.iter().map(|bucket| {
                let x = bucket.start_ms as f64;
                Rectangle::new(
                    [(x, 0), (x + bucket_ms * 0.9, bucket.requests)],
                    PRIMARY.mix(0.7).filled(),
                )
            }))
            .ok()?;
        chart
            .draw_series(
                marks
                    .into_iter()
                    .map(|x| PathElement::new(vec![(x, 0), (x, top)], MARK.stroke_width(2))),
            )
            .ok()?;
        root.present().ok()?;
    }
    Some(svg)
}

/// The timeline's wall-clock span, in Unix milliseconds: from its first
/// bucket to the end of its last.
fn span(report: &Report) -> (f64, f64) {
    let start = report.timeline.first().map_or(0, |bucket| bucket.start_ms);
    let last = report.timeline.last().map_or(0, |bucket| bucket.start_ms) + report.evidence.bucket_ms;
    (start as f64, (last.max(start + 1000)) as f64)
}

fn bucket_middle(report: &Report, start_ms: i64) -> f64 {
    (start_ms + report.evidence.bucket_ms / 2) as f64
}

/// How a time axis is labelled: UTC wall-clock, as precise as its span needs.
struct ClockLabels {
    description: &'static str,
    pattern: &'static str,
}

impl ClockLabels {
    fn format(&self, millis: f64) -> String {
        chrono::DateTime::from_timestamp_millis(millis as i64)
            .map(|time| time.format(self.pattern).to_string())
            .unwrap_or_default()
    }
}

fn clock_labels(start: f64, end: f64) -> ClockLabels {
    let span_ms = end - start;
    let (description, pattern) = if span_ms <= 600_000.0 {
        ("time (UTC)", "%H:%M:%S")
    } else if span_ms <= 36.0 * 3_600_000.0 {
        ("time (UTC)", "%H:%M")
    } else {
        ("date and time (UTC)", "%m-%d %H:%M")
    };
    ClockLabels { description, pattern }
}

/// A tick value without trailing zeros: 2, 2.5, 0.25.
fn tick(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_and_clock_labels_read_as_people_write_them() {
        assert_eq!(tick(2.0), "2");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(0.0), "0");
        let start = 1_795_132_800_000.0 + 20.0 * 3_600_000.0; // 2026-11-20T20:00:00Z
        assert_eq!(
            clock_labels(start, start + 30_000.0).format(start + 5_000.0),
            "20:00:05"
        );
        assert_eq!(clock_labels(start, start + 3_600_000.0).format(start), "20:00");
        assert_eq!(
            clock_labels(start, start + 48.0 * 3_600_000.0).format(start),
            "11-20 20:00"
        );
    }
}
