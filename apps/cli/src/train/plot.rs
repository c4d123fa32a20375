//! PNG plots of training metrics (one panel per metric, value against step), drawn with
//! `plotters`' bitmap backend. Text uses a TrueType font found on the system (DejaVu Sans or
//! Liberation Sans); without one the panels are drawn unlabelled and a note says so.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use serde_json::Value;

use crate::Result;

/// Fonts tried, in order.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers a system font as "sans-serif" once; false when none was found.
fn font_ready() -> bool {
    static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *READY.get_or_init(|| {
        FONT_PATHS.iter().any(|p| {
            std::fs::read(p).ok().is_some_and(|bytes| {
                // plotters keeps the font for the process lifetime.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}

/// One curve: `(step, value)` points of `key` in `records`, split by `phase` when present.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// The finite `(x, key)` points of records (x = `x_key`), grouped by the `phase` field.
pub fn series(records: &[Value], x_key: &str, key: &str) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for r in records {
        let (Some(x), Some(y)) = (
            r.get(x_key).and_then(Value::as_f64),
            r.get(key).and_then(Value::as_f64),
        ) else {
            continue;
        };
        if !y.is_finite() {
            continue;
        }
        let label = r
            .get("phase")
            .and_then(Value::as_str)
            .unwrap_or(key)
            .to_string();
        match out.iter_mut().find(|s| s.label == label) {
            Some(s) => s.points.push((x, y)),
            None => out.push(Series {
                label,
                points: vec![(x, y)],
            }),
        }
    }
    out
}

/// Draws `panels` (title, metric key) of `records` against `x_key` into one PNG, in a grid
/// of two columns; panels without data say "no data". Returns whether text could be drawn.
pub fn plot_metrics(
    records: &[Value],
    x_key: &str,
    panels: &[(&str, &str)],
    path: &Path,
) -> Result<bool> {
    let text = font_ready();
    let rows = panels.len().div_ceil(2).max(1);
    let root = BitMapBackend::new(path, (1200, 360 * rows as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((rows, 2));
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for ((title, key), area) in panels.iter().zip(areas.iter()) {
        let data = series(records, x_key, key);
        let pts = data.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x0 > x1 {
            if text {
                area.draw(&Text::new(
                    format!("{title}: no data"),
                    (20, 20),
                    ("sans-serif", 18).into_font(),
                ))?;
            }
            continue;
        }
        if x1 - x0 < 1e-12 {
            x1 = x0 + 1.0;
        }
        let pad = ((y1 - y0) * 0.05).max(1e-6);
        let (y0, y1) = (y0 - pad, y1 + pad);
        let mut builder = ChartBuilder::on(area);
        builder.margin(12);
        if text {
            builder
                .caption(*title, ("sans-serif", 20))
                .x_label_area_size(30)
                .y_label_area_size(60);
        }
        let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1)?;
        if text {
            chart.configure_mesh().x_desc(x_key).draw()?;
        } else {
            chart
                .configure_mesh()
                .disable_x_mesh()
                .disable_y_mesh()
                .draw()?;
        }
        for (i, s) in data.iter().enumerate() {
            let color = colors[i % colors.len()];
            let line = chart.draw_series(LineSeries::new(s.points.iter().copied(), color))?;
            if text {
                line.label(s.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            }
        }
        if text && data.len() > 1 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
    }
    root.present()?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn series_split_by_phase_and_skip_missing() {
        let recs = vec![
            json!({"step": 0, "phase": "sft", "loss": 2.0}),
            json!({"step": 1, "phase": "sft", "loss": 1.5, "accuracy": 0.1}),
            json!({"step": 2, "phase": "rl", "loss": 0.1, "reward": 0.5}),
            json!({"step": 3, "phase": "rl", "loss": null}),
        ];
        let s = series(&recs, "step", "loss");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].label, "sft");
        assert_eq!(s[0].points, vec![(0.0, 2.0), (1.0, 1.5)]);
        assert_eq!(s[1].points, vec![(2.0, 0.1)]);
        assert_eq!(
            series(&recs, "step", "accuracy")[0].points,
            vec![(1.0, 0.1)]
        );
    }

    #[test]
    fn writes_a_png() {
        let dir = std::env::temp_dir().join(format!("sluice-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.png");
        let recs: Vec<Value> = (0..20)
            .map(|i| json!({"step": i, "phase": if i < 10 {"sft"} else {"rl"}, "loss": 1.0 / (1.0 + i as f64)}))
            .collect();
        plot_metrics(
            &recs,
            "step",
            &[("loss", "loss"), ("reward", "reward")],
            &path,
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 1000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
