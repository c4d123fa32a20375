//! How a step's metrics read to a person — one place for the CLI's progress lines, the
//! desktop app's status bar and the browser page's log: counts as integers, durations in
//! seconds, tiny or huge values in scientific notation (so `loss 0.0000` never hides a
//! 4e-5), everything else to four decimals.

use serde_json::Value;

/// Metrics that count things (shown without decimals).
const COUNTS: [&str; 9] = [
    "step",
    "global_step",
    "tokens",
    "rollout_tokens",
    "rollout_rows",
    "dropped_groups",
    "refills",
    "problems",
    "micro_batches",
];

/// A display name for `key` (durations lose their unit suffix: `step_ms` → `time`).
pub fn label(key: &str) -> &str {
    match key {
        "step_ms" | "step_seconds" => "time",
        "save_ms" => "save",
        "eval_ms" => "eval",
        "response_length" => "length",
        "tokens_per_s" => "tok/s",
        k => k,
    }
}

/// `v` as a person reads metric `key`: `step 3`, `step_ms 22974.8` → `22.97 s`,
/// `loss 4.1e-5` → `4.100e-5`, `reward 0.75` → `0.7500`; non-finite → `–`.
pub fn metric(key: &str, v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    if let Some(scale) = duration_scale(key) {
        return seconds(v * scale);
    }
    if key.ends_with("_per_s") {
        return format!("{v:.1}");
    }
    let integral = v.fract() == 0.0 && v.abs() < 1e15;
    if COUNTS.contains(&key) && integral {
        return format!("{v:.0}");
    }
    if key == "response_length" {
        // A mean length: a whole number reads as one.
        return if integral {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        };
    }
    number(v)
}

/// A number in four decimals, or scientific notation when that would show no digit or
/// too many (0 stays `0`).
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

/// Seconds with a precision that suits their size: `0.042 s`, `3.21 s`, `125 s`.
pub fn seconds(s: f64) -> String {
    if !s.is_finite() {
        "–".into()
    } else if s < 1.0 {
        format!("{s:.3} s")
    } else if s < 100.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.0} s")
    }
}

fn duration_scale(key: &str) -> Option<f64> {
    if key.ends_with("_ms") {
        Some(1e-3)
    } else if key.ends_with("_seconds") || key == "seconds" {
        Some(1.0)
    } else {
        None
    }
}

/// One log line of a step record: `label value` pairs for the `keys` it holds (numbers
/// through [`metric`], strings as they are), two spaces apart.
pub fn record_line(rec: &Value, keys: &[&str]) -> String {
    keys.iter()
        .filter_map(|&k| {
            let v = rec.get(k)?;
            let text = match v {
                Value::Number(n) => metric(k, n.as_f64()?),
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some(format!("{} {text}", label(k)))
        })
        .collect::<Vec<_>>()
        .join("  ")
}

/// One log line of a held-out evaluation at `step`: greedy accuracy (and sampled pass@1
/// when measured) on `problems` problems, and its duration.
pub fn eval_line(
    step: usize,
    greedy: f64,
    sampled: Option<f64>,
    problems: usize,
    seconds: f64,
) -> String {
    let sampled = sampled
        .filter(|s| s.is_finite())
        .map(|s| format!("  sampled pass@1 {}", number(s)))
        .unwrap_or_default();
    format!(
        "eval  step {step}  held-out accuracy {}{sampled} on {problems} problems  time {}",
        number(greedy),
        self::seconds(seconds)
    )
}

/// The keys a training log shows, in order.
pub const LOG_KEYS: [&str; 10] = [
    "phase",
    "step",
    "loss",
    "reward",
    "kl",
    "entropy",
    "accuracy",
    "response_length",
    "grad_norm",
    "step_ms",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_read_as_people_expect() {
        assert_eq!(metric("step", 3.0), "3");
        assert_eq!(metric("response_length", 6.0), "6");
        assert_eq!(metric("response_length", 6.25), "6.25");
        assert_eq!(metric("step_ms", 22974.8), "22.97 s");
        assert_eq!(metric("step_seconds", 0.0421), "0.042 s");
        assert_eq!(metric("save_ms", 125_000.0), "125 s");
        assert_eq!(metric("loss", 4.1e-5), "4.100e-5");
        assert_eq!(metric("loss", -2.5e-7), "-2.500e-7");
        assert_eq!(metric("loss", 0.0), "0");
        assert_eq!(metric("reward", 0.75), "0.7500");
        assert_eq!(metric("reward", 1.0), "1.0000");
        assert_eq!(metric("grad_norm", 123456.0), "1.235e5");
        assert_eq!(metric("kl", f64::NAN), "–");
        assert_eq!(metric("tokens_per_s", 1234.56), "1234.6");
        assert_eq!(metric("step", f64::INFINITY), "–");
    }

    #[test]
    fn an_evaluation_makes_one_line() {
        assert_eq!(
            eval_line(10, 0.75, None, 40, 1.234),
            "eval  step 10  held-out accuracy 0.7500 on 40 problems  time 1.23 s"
        );
        assert_eq!(
            eval_line(0, 0.0, Some(0.125), 8, 0.5),
            "eval  step 0  held-out accuracy 0  sampled pass@1 0.1250 on 8 problems  time 0.500 s"
        );
    }

    #[test]
    fn a_record_makes_one_line() {
        let rec = json!({"phase": "rl", "step": 3.0, "loss": 4.1e-5, "reward": 0.5,
            "step_ms": 22974.8, "ignored": [1]});
        assert_eq!(
            record_line(&rec, &LOG_KEYS),
            "phase rl  step 3  loss 4.100e-5  reward 0.5000  time 22.97 s"
        );
    }
}
