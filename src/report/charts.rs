//! The report's charts, drawn as inline SVG with plotters: no JavaScript,
//! no fonts fetched, nothing loaded from the network.
//!
//! Must never: fail the report (a chart that cannot be drawn is left out).

use plotters::prelude::*;

use super::evidence::{percentile, Histogram};
use super::Report;

const WIDTH: u32 = 760;
const HEIGHT: u32 = 260;
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
            .caption(format!("{route}: latency by percentile"), ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..100f64, 0f64..top)
            .ok()?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("ms")
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
                hours_since_start(report, bucket.start_ms),
                100.0 * bucket.diverged as f64 / bucket.compared as f64,
            )
        })
        .collect();
    if points.is_empty() {
        return None;
    }
    let end = span_hours(report);
    let top = points.iter().map(|(_, rate)| *rate).fold(1.0, f64::max) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let mut chart = ChartBuilder::on(&root)
            .caption("divergence rate over time", ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..end, 0f64..top)
            .ok()?;
        chart
            .configure_mesh()
            .x_desc("hours since the window began")
            .y_desc("% diverged")
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
    let bucket_hours = report.evidence.bucket_ms as f64 / 3_600_000.0;
    let end = span_hours(report);
    let top = report.timeline.iter().map(|b| b.requests).max().unwrap_or(1).max(1) as f64 * 1.15;
    let marks: Vec<f64> = report
        .evidence
        .events
        .iter()
        .filter(|(_, kind, _)| matches!(kind.as_str(), "mode_switch" | "rollback" | "config_reload"))
        .map(|(at, _, _)| hours_since_start(report, *at))
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "requests over time (marks: mode switches, rollbacks, reloads)",
                ("sans-serif", 16),
            )
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..end, 0f64..top)
            .ok()?;
        chart
            .configure_mesh()
            .x_desc("hours since the window began")
            .y_desc("requests")
            .light_line_style(RGBColor(0xee, 0xee, 0xee))
            .draw()
            .ok()?;
        chart
            .draw_series(report.timeline.iter().map(|bucket| {
                let x = hours_since_start(report, bucket.start_ms);
                Rectangle::new(
                    [(x, 0.0), (x + bucket_hours * 0.9, bucket.requests as f64)],
                    PRIMARY.mix(0.7).filled(),
                )
            }))
            .ok()?;
        chart
            .draw_series(
                marks
                    .into_iter()
                    .map(|x| PathElement::new(vec![(x, 0.0), (x, top)], MARK.stroke_width(2))),
            )
            .ok()?;
        root.present().ok()?;
    }
    Some(svg)
}

fn start_ms(report: &Report) -> i64 {
    report.timeline.first().map_or(0, |bucket| bucket.start_ms)
}

fn hours_since_start(report: &Report, at_ms: i64) -> f64 {
    (at_ms - start_ms(report)) as f64 / 3_600_000.0
}

fn span_hours(report: &Report) -> f64 {
    let last = report.timeline.last().map_or(0, |bucket| bucket.start_ms) + report.evidence.bucket_ms;
    ((last - start_ms(report)) as f64 / 3_600_000.0).max(1.0 / 60.0)
}
