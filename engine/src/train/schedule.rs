//! Learning-rate schedules: constant, and linear warmup then cosine decay to a floor.
//!
//! ```text
//! warmup:  lr(s) = peak · (s + 1) / warmup                       for s < warmup
//! cosine:  lr(s) = min + (peak − min) · ½(1 + cos(π · p)),  p = (s − warmup) / (total − warmup)
//!          (p clamped to [0, 1], so lr = min from `total` on)
//! ```
//! `s` is the 0-based index of the optimizer step about to run. The warmup reaches `peak` at
//! its last step (as Hugging Face's `get_cosine_schedule_with_warmup` evaluated one step
//! later, which avoids a zero learning rate at step 0). A schedule is a pure function of the
//! step, so resuming needs only the step count; it is serialisable for checkpoints.

use serde::{Deserialize, Serialize};

/// A learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// `lr` at every step.
    Constant { lr: f64 },
    /// Linear warmup over `warmup_steps` to `peak_lr`, then cosine decay to `min_lr` at
    /// `total_steps`, constant after.
    WarmupCosine {
        peak_lr: f64,
        min_lr: f64,
        warmup_steps: u64,
        total_steps: u64,
    },
}

impl LrSchedule {
    /// Checks the rates: finite and ≥ 0.
    pub fn validate(&self) -> crate::check::Checked {
        use crate::check::non_negative;
        match *self {
            Self::Constant { lr } => non_negative("lr", lr),
            Self::WarmupCosine {
                peak_lr, min_lr, ..
            } => {
                non_negative("peak_lr", peak_lr)?;
                non_negative("min_lr", min_lr)
            }
        }
    }

    /// Learning rate of (0-based) step `step`.
    pub fn lr(&self, step: u64) -> f64 {
        match *self {
            Self::Constant { lr } => lr,
            Self::WarmupCosine {
                peak_lr,
                min_lr,
                warmup_steps,
                total_steps,
            } => {
                if step < warmup_steps {
                    return peak_lr * (step + 1) as f64 / warmup_steps as f64;
                }
                let span = total_steps.saturating_sub(warmup_steps);
                if span == 0 {
                    return min_lr;
                }
                let p = ((step - warmup_steps) as f64 / span as f64).min(1.0);
                min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LrSchedule;

    fn cosine() -> LrSchedule {
        LrSchedule::WarmupCosine {
            peak_lr: 1e-3,
            min_lr: 1e-4,
            warmup_steps: 10,
            total_steps: 110,
        }
    }

    #[test]
    fn constant_is_constant() {
        let s = LrSchedule::Constant { lr: 3e-4 };
        assert!((0..1000).step_by(37).all(|i| s.lr(i) == 3e-4));
    }

    #[test]
    fn warmup_is_linear_and_reaches_peak() {
        let s = cosine();
        assert!((s.lr(0) - 1e-4).abs() < 1e-15);
        assert!((s.lr(4) - 5e-4).abs() < 1e-15);
        assert_eq!(s.lr(9), 1e-3);
        for i in 0..9 {
            assert!(s.lr(i) < s.lr(i + 1));
        }
    }

    #[test]
    fn cosine_decays_to_the_floor() {
        let s = cosine();
        assert_eq!(s.lr(10), 1e-3);
        // Halfway through the decay the rate is the mean of peak and floor.
        assert!((s.lr(60) - 5.5e-4).abs() < 1e-12);
        assert!((s.lr(110) - 1e-4).abs() < 1e-15);
        assert!((s.lr(10_000) - 1e-4).abs() < 1e-15);
        for i in 10..110 {
            assert!(s.lr(i + 1) < s.lr(i), "not decreasing at {i}");
        }
        // Symmetry of the cosine around the midpoint.
        let mid = 5.5e-4;
        assert!(((s.lr(35) - mid) + (s.lr(85) - mid)).abs() < 1e-12);
    }

    #[test]
    fn degenerate_spans() {
        let s = LrSchedule::WarmupCosine {
            peak_lr: 1.0,
            min_lr: 0.0,
            warmup_steps: 0,
            total_steps: 0,
        };
        assert_eq!(s.lr(0), 0.0);
        let s = LrSchedule::WarmupCosine {
            peak_lr: 1.0,
            min_lr: 0.5,
            warmup_steps: 0,
            total_steps: 2,
        };
        assert_eq!(s.lr(0), 1.0);
        assert!((s.lr(1) - 0.75).abs() < 1e-15);
        assert_eq!(s.lr(2), 0.5);
    }

    #[test]
    fn serialises_round_trip() {
        let s = cosine();
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains("\"kind\":\"warmup_cosine\""), "{text}");
        assert_eq!(serde_json::from_str::<LrSchedule>(&text).unwrap(), s);
    }
}
