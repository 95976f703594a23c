//! `--plot FILE.svg`: pictures of a run, so a person can look rather than
//! read. `route` draws its delivery latency histogram (log-spaced buckets on
//! a log axis, with p50 and p99 marked), `hold` the number of users logged
//! in over time. Drawn with `plotters` into an SVG file (its naive font
//! metrics: no font files are read).

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use plotters::prelude::*;

use super::stats::Percentiles;

/// Size of every picture, in pixels.
const SIZE: (u32, u32) = (900, 520);

/// Buckets of the latency histogram.
const BUCKETS: usize = 60;

/// Checks that `path` names an SVG file (the only format drawn).
pub fn check_path(path: &Path) -> Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("svg") => Ok(()),
        _ => bail!("--plot: only .svg files are drawn, not {}", path.display()),
    }
}

/// Log-spaced buckets over `samples_us`: (low, high, count).
fn log_buckets(samples_us: &[f64]) -> Vec<(f64, f64, u64)> {
    let lo = samples_us
        .iter()
        .cloned()
        .fold(f64::INFINITY, f64::min)
        .max(1.0);
    let hi = samples_us
        .iter()
        .cloned()
        .fold(0.0, f64::max)
        .max(lo * 1.01);
    let step = (hi / lo).ln() / BUCKETS as f64;
    let mut counts = vec![0u64; BUCKETS];
    for &s in samples_us {
        let at = ((s.max(lo) / lo).ln() / step) as usize;
        counts[at.min(BUCKETS - 1)] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let low = lo * (step * i as f64).exp();
            (low, lo * (step * (i + 1) as f64).exp(), c)
        })
        .collect()
}

/// The delivery latency histogram of a `route` run.
pub fn latency_histogram(path: &Path, title: &str, latencies_ns: &[u64]) -> Result<()> {
    if latencies_ns.is_empty() {
        bail!("--plot: no latencies to draw");
    }
    let samples_us: Vec<f64> = latencies_ns.iter().map(|&ns| ns as f64 / 1000.0).collect();
    let buckets = log_buckets(&samples_us);
    let top = buckets.iter().map(|b| b.2).max().unwrap_or(1).max(1);
    let (x_lo, x_hi) = (buckets[0].0, buckets[BUCKETS - 1].1);
    let p = Percentiles::of(&mut latencies_ns.to_vec());
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), 0u64..top + top / 10 + 1)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("delivery latency (log scale)")
        .x_label_formatter(&|us| latency_label(*us))
        .y_desc("messages")
        .draw()
        .map_err(draw_error)?;
    chart
        .draw_series(
            buckets
                .iter()
                .filter(|b| b.2 > 0)
                .map(|&(low, high, count)| {
                    Rectangle::new([(low, 0), (high, count)], BLUE.mix(0.6).filled())
                }),
        )
        .map_err(draw_error)?;
    for (label, at, color) in [("p50", p.p50_us, GREEN), ("p99", p.p99_us, RED)] {
        let at = at.clamp(x_lo, x_hi);
        chart
            .draw_series(LineSeries::new([(at, 0), (at, top)], color.stroke_width(2)))
            .map_err(draw_error)?
            .label(format!("{label} {:.3} ms", at / 1000.0))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(draw_error)?;
    root.present().map_err(draw_error)
}

/// Users logged in over time in a `hold` run: `done_secs` holds the time of
/// each completed login, in seconds since the logins started.
pub fn logins_over_time(path: &Path, title: &str, done_secs: &[f64]) -> Result<()> {
    if done_secs.is_empty() {
        bail!("--plot: no logins to draw");
    }
    let mut times = done_secs.to_vec();
    times.sort_by(f64::total_cmp);
    let end = times[times.len() - 1].max(0.001);
    let count = times.len() as u64;
    let mut points = vec![(0.0, 0u64)];
    points.extend(times.iter().enumerate().map(|(i, &t)| (t, i as u64 + 1)));
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..end * 1.05, 0u64..count + count / 10 + 1)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the first login started")
        .y_desc("users logged in")
        .draw()
        .map_err(draw_error)?;
    chart
        .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))
        .map_err(draw_error)?
        .label(format!("{count} logins in {end:.2} s"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(draw_error)?;
    root.present().map_err(draw_error)
}

/// `250 µs`, `12 ms`, `1.5 s`.
fn latency_label(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{} ms", trim(us / 1_000.0))
    } else {
        format!("{} s", trim(us / 1_000_000.0))
    }
}

/// One decimal at most, none when it is zero.
fn trim(x: f64) -> String {
    let text = format!("{x:.1}");
    text.strip_suffix(".0").map(str::to_owned).unwrap_or(text)
}

fn draw_error(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("--plot: drawing failed: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_buckets_cover_every_sample() {
        let samples: Vec<f64> = (1..=1000).map(f64::from).collect();
        let buckets = log_buckets(&samples);
        assert_eq!(buckets.len(), BUCKETS);
        assert_eq!(buckets.iter().map(|b| b.2).sum::<u64>(), 1000);
        assert!((buckets[0].0 - 1.0).abs() < 1e-9);
        assert!(buckets.windows(2).all(|w| (w[0].1 - w[1].0).abs() < 1e-6));
        // One distinct value still makes a drawable range.
        assert_eq!(log_buckets(&[5.0, 5.0]).iter().map(|b| b.2).sum::<u64>(), 2);
    }

    #[test]
    fn latency_labels_read_like_a_person_writes_them() {
        assert_eq!(latency_label(250.0), "250 µs");
        assert_eq!(latency_label(12_000.0), "12 ms");
        assert_eq!(latency_label(1_500.0), "1.5 ms");
        assert_eq!(latency_label(2_000_000.0), "2 s");
    }

    #[test]
    fn only_svg_is_drawn() {
        assert!(check_path(Path::new("a/b.svg")).is_ok());
        assert!(check_path(Path::new("b.SVG")).is_ok());
        assert!(check_path(Path::new("b.png")).is_err());
        assert!(check_path(Path::new("b")).is_err());
    }
}
