//! Plots of a report: throughput against the swept parameter (offered and
//! delivered medians, min-max bars, RFC 2544 results) above, latency CDFs below.
//! SVG or PNG, chosen by the file's extension.
//!
//! Text is drawn with a TrueType font read at run time (`$VSWITCH_BENCH_FONT`, or
//! DejaVu Sans / Liberation Sans from the usual places; Debian: fonts-dejavu-core).

use crate::report::Report;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

const FONT_PATHS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
];

static FONT: OnceLock<Result<(), String>> = OnceLock::new();

fn register_font() -> Result<(), String> {
    FONT.get_or_init(|| {
        let mut paths: Vec<String> = vec![];
        if let Some(p) = std::env::var_os("VSWITCH_BENCH_FONT") {
            paths.push(p.to_string_lossy().into_owned());
        }
        paths.extend(FONT_PATHS.iter().map(|s| s.to_string()));
        for p in &paths {
            if let Ok(bytes) = std::fs::read(p) {
                // plotters keeps fonts for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(format!(
            "no TrueType font for plot labels (looked at {}); install fonts-dejavu-core or set VSWITCH_BENCH_FONT",
            paths.join(", ")
        ))
    })
    .clone()
}

/// Checks that `path` names a plot format we write (before a long run, not after).
pub fn check_path(path: &Path) -> Result<(), String> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("svg") | Some("png") => Ok(()),
        _ => Err(format!(
            "{}: plot files must end in .svg or .png",
            path.display()
        )),
    }
}

/// Writes the report's plots to `path` (`.svg` or `.png`).
pub fn plot(r: &Report, path: &Path) -> Result<(), String> {
    register_font()?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    let size = (1000, 900);
    match ext.as_deref() {
        Some("svg") => {
            let root = SVGBackend::new(path, size).into_drawing_area();
            draw(r, &root)?;
            root.present()
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        Some("png") => {
            let root = BitMapBackend::new(path, size).into_drawing_area();
            draw(r, &root)?;
            root.present()
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        _ => Err(format!(
            "{}: plot files must end in .svg or .png",
            path.display()
        )),
    }
}

fn err<E: std::fmt::Display>(e: E) -> String {
    format!("drawing the plot: {e}")
}

fn draw<DB: DrawingBackend>(r: &Report, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(450);
    throughput(r, &top)?;
    latency(r, &bottom)
}

fn point_label(r: &Report, i: usize) -> String {
    let Some(s) = r.summary.get(i) else {
        return String::new();
    };
    match r.swept.as_deref() {
        Some("size") => s.point.size.clone(),
        Some("rate") => s
            .point
            .rate
            .map(|x| format!("{:.0}k", x / 1e3))
            .unwrap_or_else(|| "max".into()),
        _ => s.point.flows.to_string(),
    }
}

fn throughput<DB: DrawingBackend>(r: &Report, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
    let n = r.summary.len().max(r.search.len()).max(1);
    let mut ymax: f64 = 0.0;
    for s in &r.summary {
        ymax = ymax.max(s.offered_pps).max(s.delivered_max_pps);
    }
    for s in &r.search {
        ymax = ymax.max(s.throughput_pps);
    }
    let ymax = (ymax / 1e6 * 1.15).max(0.001);
    let swept = r.swept.clone().unwrap_or_else(|| "point".into());
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{}: throughput vs {swept}", r.scenario),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..ymax)
        .map_err(err)?;
    let labels: Vec<String> = (0..n)
        .map(|i| {
            if r.summary.is_empty() {
                r.search
                    .get(i)
                    .map(|s| s.point.flows.to_string())
                    .unwrap_or_default()
            } else {
                point_label(r, i)
            }
        })
        .collect();
    chart
        .configure_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc(swept)
        .y_desc("Mpps")
        .draw()
        .map_err(err)?;
    if !r.summary.is_empty() {
        let off: Vec<(f64, f64)> = r
            .summary
            .iter()
            .enumerate()
            .map(|(i, s)| (i as f64, s.offered_pps / 1e6))
            .collect();
        let del: Vec<(f64, f64)> = r
            .summary
            .iter()
            .enumerate()
            .map(|(i, s)| (i as f64, s.delivered_pps / 1e6))
            .collect();
        chart
            .draw_series(LineSeries::new(off.clone(), BLUE.stroke_width(2)))
            .map_err(err)?
            .label("offered (median)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        chart
            .draw_series(off.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(del.clone(), RED.stroke_width(2)))
            .map_err(err)?
            .label("delivered (median, min-max)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart
            .draw_series(del.iter().map(|&p| Circle::new(p, 4, RED.filled())))
            .map_err(err)?;
        chart
            .draw_series(r.summary.iter().enumerate().map(|(i, s)| {
                PathElement::new(
                    vec![
                        (i as f64, s.delivered_min_pps / 1e6),
                        (i as f64, s.delivered_max_pps / 1e6),
                    ],
                    RED.stroke_width(1),
                )
            }))
            .map_err(err)?;
    }
    if !r.search.is_empty() {
        let pts: Vec<(f64, f64)> = r
            .search
            .iter()
            .enumerate()
            .map(|(i, s)| (i as f64, s.throughput_pps / 1e6))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), GREEN.stroke_width(2)))
            .map_err(err)?
            .label("RFC 2544 throughput")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN.stroke_width(2)));
        chart
            .draw_series(
                pts.iter()
                    .map(|&p| TriangleMarker::new(p, 6, GREEN.filled())),
            )
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(err)?;
    Ok(())
}

fn latency<DB: DrawingBackend>(r: &Report, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
    // One CDF per point: its first trial that has latencies.
    let mut curves: Vec<(String, Vec<(f64, f64)>)> = vec![];
    for (i, s) in r.summary.iter().enumerate() {
        if let Some(l) = r
            .trials
            .iter()
            .filter(|t| t.point == s.point)
            .find_map(|t| t.latency.as_ref())
        {
            let label = match &r.swept {
                Some(w) => format!("{w}={}", point_label(r, i)),
                None => "latency".into(),
            };
            curves.push((
                label,
                l.cdf.iter().map(|&(us, q)| (us.max(0.1), q)).collect(),
            ));
        }
    }
    let (lo, hi) = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.0))
        .fold((f64::MAX, 0f64), |(a, b), x| (a.min(x), b.max(x)));
    let (lo, hi) = if curves.is_empty() {
        (1.0, 1000.0)
    } else {
        ((lo / 1.5).max(0.1), (hi * 1.5).max(lo * 10.0))
    };
    let mut chart = ChartBuilder::on(area)
        .caption("one-way latency CDF", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency (us, log scale)")
        .y_desc("fraction of frames")
        .draw()
        .map_err(err)?;
    for (k, (label, pts)) in curves.into_iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(err)?;
    Ok(())
}
