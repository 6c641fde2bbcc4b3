//! The dashboard's charts, drawn by `plotters` into SVG on the server. Pages embed them as
//! `data:image/svg+xml` images: an SVG shown through `<img>` never runs script, so a view name or
//! anything else drawn as a label stays a picture whatever it holds.

use super::stats::{Stats, CLASSES};
use base64::Engine as _;
use plotters::prelude::*;

const WIDTH: u32 = 860;
const HEIGHT: u32 = 300;

const CLASS_COLOURS: [RGBColor; 6] = [
    RGBColor(120, 120, 200),
    RGBColor(46, 139, 87),
    RGBColor(70, 130, 180),
    RGBColor(218, 165, 32),
    RGBColor(200, 50, 50),
    RGBColor(128, 128, 128),
];

/// An SVG document as a `data:` URL for an `<img src>`.
pub(crate) fn data_url(svg: &str) -> String {
    format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg)
    )
}

fn fmt_ms(ms: i64, step: i64) -> String {
    let t = bson::DateTime::from_millis(ms).to_chrono();
    if step >= 86_400_000 {
        t.format("%m-%d").to_string()
    } else {
        t.format("%m-%d %H:%M").to_string()
    }
}

type ChartResult = Result<(), Box<dyn std::error::Error>>;

/// Requests per bucket, one line per status class that occurs.
pub(crate) fn requests_over_time(stats: &Stats) -> Result<String, String> {
    let mut svg = String::new();
    let step = stats.params.bucket.millis();
    let draw = |svg: &mut String| -> ChartResult {
        let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let x0 = stats.buckets.first().map_or(0, |b| b.0);
        let x1 = stats.buckets.last().map_or(step, |b| b.0 + step);
        let ymax = stats
            .buckets
            .iter()
            .flat_map(|b| b.1.iter().copied())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption("Requests over time, by status class", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(48)
            .build_cartesian_2d(x0..x1, 0u64..ymax + ymax / 10 + 1)?;
        chart
            .configure_mesh()
            .x_labels(6)
            .y_labels(5)
            .x_label_formatter(&|x| fmt_ms(*x, step))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (i, name) in CLASSES.iter().enumerate() {
            if stats.classes[i] == 0 {
                continue;
            }
            let colour = CLASS_COLOURS[i];
            chart
                .draw_series(LineSeries::new(
                    stats.buckets.iter().map(|b| (b.0 + step / 2, b.1[i])),
                    colour.stroke_width(2),
                ))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        if stats.total > 0 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK.mix(0.3))
                .draw()?;
        }
        root.present()?;
        Ok(())
    };
    draw(&mut svg).map_err(|e| e.to_string())?;
    Ok(svg)
}

/// Bars of labelled counts (status classes, top views).
pub(crate) fn bars(
    title: &str,
    items: &[(String, u64)],
    colours: &[RGBColor],
) -> Result<String, String> {
    let mut svg = String::new();
    let draw = |svg: &mut String| -> ChartResult {
        let root = SVGBackend::with_string(svg, (WIDTH / 2 - 10, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let n = items.len().max(1) as u32;
        let ymax = items.iter().map(|i| i.1).max().unwrap_or(0).max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(48)
            .build_cartesian_2d((0..n).into_segmented(), 0u64..ymax + ymax / 10 + 1)?;
        let labels: Vec<String> = items.iter().map(|(l, _)| l.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_labels(5)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .x_label_style(("sans-serif", 11))
            .draw()?;
        chart.draw_series(
            Histogram::vertical(&chart)
                .margin(6)
                .style_func(|x, _| {
                    let i = match x {
                        SegmentValue::Exact(i) | SegmentValue::CenterOf(i) => *i as usize,
                        SegmentValue::Last => 0,
                    };
                    colours[i % colours.len()].filled()
                })
                .data(items.iter().enumerate().map(|(i, (_, v))| (i as u32, *v))),
        )?;
        root.present()?;
        Ok(())
    };
    draw(&mut svg).map_err(|e| e.to_string())?;
    Ok(svg)
}

/// The status classes as bars, in their colours.
pub(crate) fn status_classes(stats: &Stats) -> Result<String, String> {
    let items: Vec<(String, u64)> = CLASSES
        .iter()
        .zip(stats.classes)
        .map(|(c, n)| (c.to_string(), n))
        .collect();
    bars("Status classes", &items, &CLASS_COLOURS)
}

/// The most requested views, each bar labelled with its view's own name (the last part of the
/// full name, shortened to fit under a bar; the table beside the chart gives the full names in
/// the same order).
pub(crate) fn top_views(stats: &Stats) -> Result<String, String> {
    let items: Vec<(String, u64)> = stats
        .top_views
        .iter()
        .map(|(view, n)| (bar_label(view), *n))
        .collect();
    bars("Top views", &items, &[RGBColor(70, 130, 180)])
}

/// The label of a view under its bar: the name after the last `::` (or `/`), at most 14
/// characters.
fn bar_label(view: &str) -> String {
    let name = view
        .rsplit("::")
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or(view);
    let name = name
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or(name);
    if name.chars().count() <= 14 {
        name.to_owned()
    } else {
        format!("{}…", name.chars().take(13).collect::<String>())
    }
}

#[cfg(test)]
mod label_tests {
    use super::bar_label;

    #[test]
    fn bars_are_labelled_with_the_views_name() {
        assert_eq!(bar_label("clinic::patients::show"), "show");
        assert_eq!(bar_label("demo::/access/function/"), "function");
        assert_eq!(
            bar_label("app::a_rather_long_handler_name"),
            "a_rather_long…"
        );
    }
}
