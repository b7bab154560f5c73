//! The charts, drawn with plotters into PNGs: the demo's speed-up over
//! serial per workload (one bar per back-end) and the transfer suite's MB/s
//! against payload size (one line per peer). Text is rasterised by ab_glyph
//! from DejaVu Sans embedded in the binary (`assets/`), so the charts look
//! the same on a machine without fonts.

use std::path::Path;

use anyhow::anyhow;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

use crate::bench::seeds::Backend;

static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FONT: &str = "sans-serif";

/// One bar: a workload (or workload variant), a back-end and its speed-up.
#[derive(Debug, Clone)]
pub(crate) struct Bar {
    pub(crate) category: String,
    pub(crate) backend: Backend,
    pub(crate) speedup: f64,
}

fn color(backend: Backend) -> RGBColor {
    match backend {
        Backend::Serial => RGBColor(150, 150, 150),
        Backend::Threads => RGBColor(31, 119, 180),
        Backend::Processes => RGBColor(44, 160, 44),
        Backend::Rayon => RGBColor(255, 127, 14),
        Backend::Bare => RGBColor(214, 39, 40),
    }
}

/// Draws `bars` into a PNG at `path`, with a dashed line at 1× (serial)
/// and a dotted one at `cpus`× (the ideal for CPU-bound work).
pub(crate) fn speedup_png(
    path: &Path,
    title: &str,
    bars: &[Bar],
    cpus: usize,
) -> anyhow::Result<()> {
    register_font(FONT, FontStyle::Normal, DEJAVU_SANS)
        .map_err(|_| anyhow!("the embedded font does not parse"))?;
    let mut categories: Vec<&str> = Vec::new();
    let mut backends: Vec<Backend> = Vec::new();
    for b in bars {
        if !categories.contains(&b.category.as_str()) {
            categories.push(&b.category);
        }
        if !backends.contains(&b.backend) {
            backends.push(b.backend);
        }
    }
    anyhow::ensure!(!categories.is_empty(), "nothing to draw");
    let top = bars.iter().map(|b| b.speedup).fold(cpus as f64, f64::max) * 1.2;
    let n = categories.len();

    let root = BitMapBackend::new(path, (1100, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 26))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        // A segmented 0..k range has k + 1 segments.
        .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..top)
        .map_err(|e| anyhow!("{e}"))?;
    let names: Vec<String> = categories.iter().map(|c| c.to_string()).collect();
    let x_label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&x_label)
        .y_desc("speed-up over serial (x)")
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;

    // Bars of one category share 70% of its width, side by side; plotters
    // places rectangles by category, so each bar is narrowed by pixel margins.
    let (width_px, _) = chart.plotting_area().dim_in_pixel();
    let segment = width_px as f64 / n as f64;
    let bar_px = segment * 0.7 / backends.len() as f64;
    for (k, &backend) in backends.iter().enumerate() {
        let left = segment * 0.15 + k as f64 * bar_px;
        let right = (segment - left - bar_px).max(0.0);
        let mine: Vec<(usize, f64)> = bars
            .iter()
            .filter(|b| b.backend == backend)
            .map(|b| {
                (
                    categories
                        .iter()
                        .position(|c| *c == b.category)
                        .unwrap_or(0),
                    b.speedup,
                )
            })
            .collect();
        let fill = color(backend);
        chart
            .draw_series(mine.iter().map(|&(i, y)| {
                let mut r = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), y),
                    ],
                    fill.filled(),
                );
                r.set_margin(0, 0, left as u32, right as u32);
                r
            }))
            .map_err(|e| anyhow!("{e}"))?
            .label(backend.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], fill.filled()));
        let value_style =
            TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        chart
            .draw_series(mine.iter().map(|&(i, y)| {
                EmptyElement::at((SegmentValue::Exact(i), y))
                    + Text::new(
                        format!("{y:.2}x"),
                        ((left + bar_px / 2.0) as i32, -3),
                        value_style.clone(),
                    )
            }))
            .map_err(|e| anyhow!("{e}"))?;
    }
    let across = |y: f64| vec![(SegmentValue::Exact(0), y), (SegmentValue::Exact(n), y)];
    chart
        .draw_series(DashedLineSeries::new(
            across(1.0),
            8,
            6,
            BLACK.stroke_width(1),
        ))
        .map_err(|e| anyhow!("{e}"))?
        .label("serial (1x)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
    chart
        .draw_series(DashedLineSeries::new(
            across(cpus as f64),
            2,
            4,
            RED.stroke_width(2),
        ))
        .map_err(|e| anyhow!("{e}"))?
        .label(format!("{cpus} CPUs (ideal for CPU-bound work)"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// One line of a rate chart: a name for the legend and its points
/// (payload bytes, MB/s).
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
}

/// Line colours of the rate chart, one per series in order.
const PALETTE: [RGBColor; 8] = [
    RGBColor(44, 160, 44),
    RGBColor(31, 119, 180),
    RGBColor(23, 190, 207),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
];

/// A payload size on the x axis: `1 KB`, `10 MB`.
fn size_tick(bytes: f64) -> String {
    let (v, unit) = if bytes >= 1e6 {
        (bytes / 1e6, "MB")
    } else if bytes >= 1e3 {
        (bytes / 1e3, "KB")
    } else {
        (bytes, "B")
    };
    format!("{v:.0} {unit}")
}

/// Draws MB/s against payload size, both axes logarithmic, one line with
/// dots per series, into a PNG at `path`.
pub(crate) fn rates_png(path: &Path, title: &str, lines: &[Line]) -> anyhow::Result<()> {
    register_font(FONT, FontStyle::Normal, DEJAVU_SANS)
        .map_err(|_| anyhow!("the embedded font does not parse"))?;
    let points = || lines.iter().flat_map(|l| l.points.iter().copied());
    anyhow::ensure!(points().next().is_some(), "nothing to draw");
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in points().filter(|&(x, y)| x > 0.0 && y > 0.0) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    anyhow::ensure!(x0 <= x1, "no positive point to draw");
    let root = BitMapBackend::new(path, (1100, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 24))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (x0 / 1.5..x1 * 1.5).log_scale(),
            (y0 / 2.0..y1 * 2.0).log_scale(),
        )
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("payload size")
        .y_desc("MB/s (payload in + out)")
        .x_label_formatter(&|x| size_tick(*x))
        .y_label_formatter(&|y| {
            if *y >= 1.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        })
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (k, line) in lines.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let mut pts = line.points.clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(line.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
