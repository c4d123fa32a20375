//! What the Training panel's four plots show, decided without any UI: series with fixed
//! colours (the line, its markers and the legend swatch share one), axis bounds computed
//! from the data (so the newest point is always inside), the SFT → RL phase marker, and
//! for an empty plot the sentence that says what it is waiting for. The summary printed
//! at exit reports the same description, so tests can check what the window shows.

use serde_json::{Value, json};

use crate::state::AppState;

/// One curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: &'static str,
    pub rgb: [u8; 3],
    pub points: Vec<[f64; 2]>,
}

/// One plot.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotSpec {
    pub id: &'static str,
    pub title: &'static str,
    pub series: Vec<Series>,
    /// `[x_min, x_max, y_min, y_max]`; None when there is nothing to draw yet.
    pub bounds: Option<[f64; 4]>,
    /// x of the SFT → RL boundary, when the run has both phases.
    pub phase_marker: Option<f64>,
    /// What an empty plot shows instead of axes.
    pub waiting: String,
}

const BLUE: [u8; 3] = [0x1a, 0x73, 0xe8];
const GREEN: [u8; 3] = [0x18, 0x80, 0x38];
const TEAL: [u8; 3] = [0x00, 0x89, 0x7b];
const GREY: [u8; 3] = [0x8a, 0x94, 0xa3];
const ORANGE: [u8; 3] = [0xe3, 0x74, 0x00];
const PURPLE: [u8; 3] = [0x8e, 0x44, 0xad];

/// y bounds around `ys` with a margin; a flat series gets a span that reads well; `unit`
/// plots (rewards, accuracies) always show 0 to 1 and grow past it when values do.
fn y_bounds(ys: impl Iterator<Item = f64>, unit: bool) -> Option<[f64; 2]> {
    let (lo, hi) = ys
        .filter(|y| y.is_finite())
        .fold(None, |acc: Option<(f64, f64)>, y| {
            Some(acc.map_or((y, y), |(a, b)| (a.min(y), b.max(y))))
        })?;
    if unit {
        return Some([lo.min(0.0) - 0.03, hi.max(1.0) + 0.03]);
    }
    let span = hi - lo;
    if span <= lo.abs().max(hi.abs()) * 1e-3 {
        // Flat: a span around the value that reads well (±1 around 0, ±50% otherwise).
        let mid = (lo + hi) / 2.0;
        let half = if mid == 0.0 { 1.0 } else { mid.abs() * 0.5 };
        return Some([mid - half, mid + half]);
    }
    Some([lo - span * 0.08, hi + span * 0.08])
}

fn spec(
    id: &'static str,
    title: &'static str,
    series: Vec<Series>,
    unit: bool,
    x_max: f64,
    waiting: String,
) -> PlotSpec {
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p[1]));
    // A margin right of the last step, so its marker is not cut by the frame.
    let right = x_max + (x_max * 0.03).max(0.15);
    let bounds = y_bounds(ys, unit).map(|[lo, hi]| [0.0, right, lo, hi]);
    PlotSpec {
        id,
        title,
        series,
        bounds,
        phase_marker: None,
        waiting,
    }
}

/// The four plots for the current state.
pub fn plots(s: &AppState) -> Vec<PlotSpec> {
    let m = &s.metrics;
    let run = s.run.as_ref();
    let sft_steps = run.map_or(0, |r| r.sft_steps);
    let rl_steps = run.map_or(0, |r| r.rl_steps);
    let last_x = [&m.sft_loss, &m.rl_loss, &m.accuracy]
        .iter()
        .filter_map(|v| v.last().map(|p| p[0]))
        .fold(0.0, f64::max);
    let x_max = ((sft_steps + rl_steps) as f64).max(last_x).max(1.0);
    let marker = (sft_steps > 0 && rl_steps > 0).then_some(sft_steps as f64 + 0.5);
    let idle = match s.saved_preview {
        Some(n) => format!("saved run at step {n}: press Resume from it, or Start"),
        None => "no run yet: press Start".to_string(),
    };
    let rl_hint = if run.is_none() {
        idle.clone()
    } else if sft_steps > 0 && s.global_step < sft_steps {
        format!("RL starts after SFT step {sft_steps}: reward and KL come from RL steps")
    } else {
        "waiting for the first RL step".to_string()
    };
    let loss_hint = if run.is_none() {
        idle.clone()
    } else {
        "waiting for the first step".to_string()
    };
    let acc_hint = if run.is_none() {
        idle
    } else {
        "waiting for the first evaluation (before step 1)".to_string()
    };
    let series = |name, rgb, points: &Vec<[f64; 2]>| Series {
        name,
        rgb,
        points: points.clone(),
    };
    let mut out = vec![
        spec(
            "reward",
            "reward (mean per RL step)",
            vec![series("reward", BLUE, &m.reward)],
            true,
            x_max,
            rl_hint.clone(),
        ),
        spec(
            "kl",
            "KL to the reference model",
            vec![series("KL", PURPLE, &m.kl)],
            false,
            x_max,
            rl_hint,
        ),
        spec(
            "loss",
            "loss",
            vec![
                series("SFT loss", GREY, &m.sft_loss),
                series("RL loss", ORANGE, &m.rl_loss),
            ],
            false,
            x_max,
            loss_hint,
        ),
        spec(
            "acc",
            "held-out accuracy",
            vec![
                series("greedy", GREEN, &m.accuracy),
                series("sampled pass@1", TEAL, &m.sampled_accuracy),
            ],
            true,
            x_max,
            acc_hint,
        ),
    ];
    for p in &mut out {
        p.phase_marker = marker;
    }
    out
}

/// The plots as the exit summary reports them: per plot its series sizes, bounds (null
/// when empty), the phase marker and the waiting text.
pub fn describe(plots: &[PlotSpec]) -> Value {
    plots
        .iter()
        .map(|p| {
            let series: serde_json::Map<String, Value> = p
                .series
                .iter()
                .map(|s| (s.name.to_string(), json!(s.points.len())))
                .collect();
            (
                p.id.to_string(),
                json!({
                    "title": p.title,
                    "series": series,
                    "bounds": p.bounds,
                    "phase_marker": p.phase_marker,
                    "waiting": p.bounds.is_none().then_some(&p.waiting),
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Event;
    use crate::state::tests::{info, state};

    #[test]
    fn empty_plots_wait_instead_of_drawing_axes() {
        let s = state();
        let p = plots(&s);
        assert_eq!(p.len(), 4);
        assert!(
            p.iter()
                .all(|p| p.bounds.is_none() && p.waiting.contains("Start"))
        );
        let d = describe(&p);
        assert_eq!(d["loss"]["bounds"], Value::Null);
    }

    #[test]
    fn bounds_follow_the_data_and_phases_are_marked() {
        let mut s = state();
        s.start_training().expect("start");
        s.apply(Event::TrainingStarted(info(2, 3, 0)));
        s.apply(Event::Step(
            json!({"phase": "sft", "global_step": 1, "loss": 2.0}),
        ));
        let p = plots(&s);
        assert!(p[0].waiting.contains("RL starts after SFT step 2"), "{p:?}");
        assert_eq!(p[0].bounds, None);
        let [x0, x1, lo, hi] = p[2].bounds.expect("loss bounds");
        assert!(
            x0 == 0.0 && (5.0..5.5).contains(&x1),
            "the run's 5 steps and a margin: {x1}"
        );
        assert!(lo < 2.0 && hi > 2.0 && hi - lo <= 2.0, "{lo} {hi}");
        assert_eq!(p[2].phase_marker, Some(2.5));
        // Tiny values keep a readable span and stay inside the bounds.
        for (g, loss) in [(2, 1.0), (3, 4e-5), (4, -3e-5), (5, 9.0)] {
            let phase = if g > 2 { "rl" } else { "sft" };
            s.apply(Event::Step(
                json!({"phase": phase, "global_step": g, "loss": loss, "reward": 0.5, "kl": 1e-7}),
            ));
        }
        let p = plots(&s);
        let [_, x1, lo, hi] = p[2].bounds.expect("loss");
        assert!(
            x1 > 5.0,
            "the newest step's marker is inside the frame: {x1}"
        );
        assert!(
            lo < -3e-5 && hi > 9.0,
            "the newest point is inside: {lo} {hi}"
        );
        let [_, _, klo, khi] = p[1].bounds.expect("kl");
        assert!(klo < 1e-7 && khi > 1e-7 && khi - klo >= 1e-8, "{klo} {khi}");
        assert_eq!(p[2].series[0].points.len(), 2, "SFT loss");
        assert_eq!(p[2].series[1].points.len(), 3, "RL loss");
        let d = describe(&p);
        assert_eq!(d["loss"]["series"]["RL loss"], 3);
        assert_eq!(d["reward"]["waiting"], Value::Null);
    }
}
