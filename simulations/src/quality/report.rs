//! Turning cell results into the report: markdown tables and one SVG plot per cluster size.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::quality::sim::CellResult;

/// Policies in the order they first appear in `results`.
fn policies(results: &[CellResult]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for r in results {
        if !names.contains(&r.policy) {
            names.push(r.policy.clone());
        }
    }
    names
}

/// Loads in increasing order.
fn loads(results: &[CellResult]) -> Vec<f64> {
    let mut loads: Vec<f64> = results.iter().map(|r| r.offered_load).collect();
    loads.sort_by(f64::total_cmp);
    loads.dedup();
    loads
}

fn find<'a>(results: &'a [CellResult], policy: &str, load: f64) -> Option<&'a CellResult> {
    results.iter().find(|r| r.policy == policy && r.offered_load == load)
}

/// `12.3` ms, or `∞` when too many requests were dropped for the quantile to exist.
fn ms(value_opt: Option<f64>) -> String {
    value_opt.map_or_else(|| "∞".to_owned(), |v| format!("{v:.1}"))
}

/// One table for one cluster size: a row per policy, a column per offered load; each cell is
/// `p99 / mean` in ms, followed by the drop rate when any request was dropped.
pub fn markdown_table(results: &[CellResult]) -> String {
    let loads = loads(results);
    let mut out = String::from("| policy |");
    loads.iter().for_each(|l| write!(out, " {:.0}% load: p99 / mean ms |", l * 100.0).expect("string write"));
    out.push_str("\n|---|");
    loads.iter().for_each(|_| out.push_str("---:|"));
    for policy in policies(results) {
        write!(out, "\n| {policy} |").expect("string write");
        for &load in &loads {
            match find(results, &policy, load) {
                Some(r) => {
                    write!(out, " {} / {:.1}", ms(r.p99_ms), r.mean_ms).expect("string write");
                    if r.drop_rate() > 0.0 {
                        write!(out, " ({:.2}% dropped)", r.drop_rate() * 100.0).expect("string write");
                    }
                    out.push_str(" |");
                }
                None => out.push_str(" |"),
            }
        }
    }
    out.push('\n');
    out
}

/// Diagnostics of the cells at one load: where requests went and how old the gossip was.
pub fn diagnostics_table(results: &[CellResult]) -> String {
    let mut out = String::from(
        "| policy | load | p50 ms | p99 ms | mean ms | dropped | served locally | mean gossip age ms | publications / actor / s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|",
    );
    for r in results {
        write!(
            out,
            "\n| {} | {:.0}% | {} | {} | {:.2} | {:.3}% | {:.1}% | {} | {:.2} |",
            r.policy,
            r.offered_load * 100.0,
            ms(r.p50_ms),
            ms(r.p99_ms),
            r.mean_ms,
            r.drop_rate() * 100.0,
            r.local_share * 100.0,
            r.mean_gossip_age_ms.map_or_else(|| "-".to_owned(), |a| format!("{a:.0}")),
            r.publications_per_actor_sec,
        )
        .expect("string write");
    }
    out.push('\n');
    out
}

/// Line colours, distinguishable on white (Tableau 10, with black first for the oracle's row order).
const COLORS: [RGBColor; 10] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(188, 189, 34),
    RGBColor(31, 119, 180),
    RGBColor(148, 103, 189),
    RGBColor(0, 0, 0),
    RGBColor(23, 190, 207),
    RGBColor(44, 160, 44),
    RGBColor(127, 127, 127),
    RGBColor(227, 119, 194),
];

/// Round latencies (1, 2, 5 x 10^k ms) between `low` and `high`: the log axis's labels.
fn key_points(low: f64, high: f64) -> Vec<f64> {
    let mut points = Vec::new();
    let mut decade = 10f64.powf(low.log10().floor());
    while decade <= high {
        points.extend([1.0, 2.0, 5.0].map(|m| m * decade).into_iter().filter(|v| (low..=high).contains(v)));
        decade *= 10.0;
    }
    points
}

/// p99 latency against offered load, one line per policy (dashed when `dashed(label)`), on a
/// log-scale latency axis; points whose p99 does not exist (over 1% dropped) are left out.
pub fn write_p99_plot(
    results: &[CellResult],
    title: &str,
    dashed: &dyn Fn(&str) -> bool,
    path: &Path,
) -> std::io::Result<()> {
    let to_io = |err: &dyn std::fmt::Display| std::io::Error::other(err.to_string());
    let p99s: Vec<f64> = results.iter().filter_map(|r| r.p99_ms).collect();
    let low = p99s.iter().copied().fold(f64::INFINITY, f64::min).max(0.1) / 1.25;
    let high = p99s.iter().copied().fold(0.0, f64::max).max(low * 2.0) * 1.25;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| to_io(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(47.0f64..97.0, (low..high).log_scale().with_key_points(key_points(low, high)))
        .map_err(|e| to_io(&e))?;
    chart
        .configure_mesh()
        .x_desc("offered load (% of capacity)")
        .y_desc("p99 latency (ms, log scale)")
        .x_labels(11)
        .x_label_formatter(&|x| format!("{x:.0}%"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| to_io(&e))?;
    for (i, policy) in policies(results).iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = loads(results)
            .into_iter()
            .filter_map(|load| Some((load * 100.0, find(results, policy, load)?.p99_ms?)))
            .collect();
        let line = color.stroke_width(2);
        let series = if dashed(policy) {
            chart.draw_series(DashedLineSeries::new(points.clone(), 8, 5, line))
        } else {
            chart.draw_series(LineSeries::new(points.clone(), line))
        };
        series
            .map_err(|e| to_io(&e))?
            .label(policy.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], line));
        chart
            .draw_series(PointSeries::of_element(points, 3, color.filled(), &|c, s, st| Circle::new(c, s, st)))
            .map_err(|e| to_io(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| to_io(&e))?;
    root.present().map_err(|e| to_io(&e))?;
    Ok(())
}
