//! KL estimators between the policy and a reference model, as differentiable tensor functions
//! (for the KL term in the loss) and as host f64 functions (for the KL term in the reward), plus
//! verl's fixed and adaptive KL controllers.
//!
//! With `d = lp − ref` (log-probs of the sampled token under the policy and the reference):
//! | name | value | source |
//! |---|---|---|
//! | `k1` (`kl`) | d | verl `kl_penalty_forward` |
//! | `k2` (`mse`) | ½d² | verl |
//! | `k3_unclamped` | e^{ref−lp} − (ref−lp) − 1, no clamp | TRL `grpo_trainer.py:3098-3105` |
//! | `low_var_kl` | x = clamp(ref−lp, ±20); clamp(eˣ − x − 1, ±10) | verl (which also calls it `k3`) |
//! | `abs` | \|d\| | verl |
//! | `<name>+` | value of `<name>`, gradient of ½d² (straight-through `b − sg(b) + sg(f)`) | verl `kl_penalty` |
//!
//! verl's names (`kl`, `mse`, `low_var_kl`, with `+`) are accepted with verl's meaning. `k3` is
//! refused as ambiguous: verl's `k3` is the clamped `low_var_kl`, while the k3 of TRL's GRPO
//! loss (TRL has no name for it) is the unclamped form, here `k3_unclamped`; the error says so.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::error::{RlError, check_grid};

/// The base estimator of a [`KlPenalty`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KlEstimator {
    /// d (unbiased value, high variance).
    K1,
    /// ½d².
    K2,
    /// e^{−d} + d − 1 (TRL's form, no clamp; `k3_unclamped`).
    K3,
    /// verl's clamped k3 (`low_var_kl`): log-ratio clamped to ±20, value to ±10.
    LowVarKl,
    /// |d|.
    Abs,
}

/// A KL estimator, optionally straight-through (the `+` suffix): the value of the estimator with
/// the gradient of ½d². Parsed from verl's names (`k1`/`kl`, `k2`/`mse`, `low_var_kl`, `abs`)
/// and `k3_unclamped`, each with an optional `+`; the ambiguous `k3` is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KlPenalty {
    pub estimator: KlEstimator,
    pub straight_through: bool,
}

impl KlPenalty {
    /// The plain (not straight-through) estimator.
    pub const fn new(estimator: KlEstimator) -> Self {
        Self {
            estimator,
            straight_through: false,
        }
    }
}

impl Default for KlPenalty {
    /// TRL's k3.
    fn default() -> Self {
        Self::new(KlEstimator::K3)
    }
}

const KL_NAMES: &str = "k1, kl, k2, mse, k3 (= low_var_kl), low_var_kl, k3_unclamped, abs (each optionally with a `+` suffix)";

impl FromStr for KlPenalty {
    type Err = RlError;
    fn from_str(s: &str) -> Result<Self, RlError> {
        let (base, straight_through) = match s.strip_suffix('+') {
            Some(b) => (b, true),
            None => (s, false),
        };
        let estimator = match base {
            "k1" | "kl" => KlEstimator::K1,
            "k2" | "mse" => KlEstimator::K2,
            "k3_unclamped" => KlEstimator::K3,
            "low_var_kl" => KlEstimator::LowVarKl,
            "k3" => {
                return Err(RlError::Config(format!(
                    "KL estimator `{s}` is ambiguous: verl's `k3` is the clamped estimator, \
                     written here `low_var_kl{plus}`; the k3 of TRL's GRPO loss is unclamped, \
                     written here `k3_unclamped{plus}`",
                    plus = if straight_through { "+" } else { "" }
                )));
            }
            "abs" => KlEstimator::Abs,
            _ => {
                return Err(RlError::Unknown {
                    kind: "KL estimator",
                    name: s.to_string(),
                    valid: KL_NAMES.to_string(),
                });
            }
        };
        Ok(Self {
            estimator,
            straight_through,
        })
    }
}

impl fmt::Display for KlPenalty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = match self.estimator {
            KlEstimator::K1 => "k1",
            KlEstimator::K2 => "k2",
            KlEstimator::K3 => "k3_unclamped",
            KlEstimator::LowVarKl => "low_var_kl",
            KlEstimator::Abs => "abs",
        };
        write!(f, "{base}{}", if self.straight_through { "+" } else { "" })
    }
}

impl TryFrom<String> for KlPenalty {
    type Error = RlError;
    fn try_from(s: String) -> Result<Self, RlError> {
        s.parse()
    }
}

impl From<KlPenalty> for String {
    fn from(p: KlPenalty) -> String {
        p.to_string()
    }
}

/// Per-token KL estimate `[B, T]` between the policy (`lp`, differentiable) and the reference
/// (`ref_lp`, treated as a constant). Works in the dtype of `lp` (f32 on wgpu, f64 on flex).
pub fn kl_penalty(lp: Tensor<2>, ref_lp: Tensor<2>, penalty: KlPenalty) -> Tensor<2> {
    let d = lp - ref_lp.detach();
    let forward = match penalty.estimator {
        KlEstimator::K1 => d.clone(),
        KlEstimator::K2 => d.clone().square().mul_scalar(0.5),
        KlEstimator::Abs => d.clone().abs(),
        KlEstimator::K3 => {
            let x = d.clone().neg();
            x.clone().exp() - x - 1.0
        }
        KlEstimator::LowVarKl => {
            let x = d.clone().neg().clamp(-20.0, 20.0);
            (x.clone().exp() - x - 1.0).clamp(-10.0, 10.0)
        }
    };
    if !penalty.straight_through || penalty.estimator == KlEstimator::K2 {
        return forward;
    }
    let backward = d.square().mul_scalar(0.5);
    backward.clone() - backward.detach() + forward.detach()
}

/// Host value of the estimator for one token (the straight-through flag does not change values).
pub fn kl_value(lp: f64, ref_lp: f64, penalty: KlPenalty) -> f64 {
    let d = lp - ref_lp;
    match penalty.estimator {
        KlEstimator::K1 => d,
        KlEstimator::K2 => 0.5 * d * d,
        KlEstimator::Abs => d.abs(),
        KlEstimator::K3 => (-d).exp() + d - 1.0,
        KlEstimator::LowVarKl => {
            let x = (-d).clamp(-20.0, 20.0);
            (x.exp() - x - 1.0).clamp(-10.0, 10.0)
        }
    }
}

/// The coefficient β of the KL term in the reward (verl `FixedKLController` /
/// `AdaptiveKLController`, `core_algos.py:140-180`; adaptive: Ziegler et al. 2019).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum KlController {
    /// β stays `coef` (verl default `kl_coef` 0.001).
    Fixed { coef: f64 },
    /// β ← β·(1 + clip(kl/target − 1, ±0.2)·n_steps/horizon) after each batch
    /// (verl defaults: target_kl 0.1, horizon 10000).
    Adaptive {
        coef: f64,
        target_kl: f64,
        horizon: f64,
    },
}

impl Default for KlController {
    fn default() -> Self {
        Self::Fixed { coef: 0.001 }
    }
}

impl KlController {
    /// The current β.
    pub fn coef(&self) -> f64 {
        match self {
            Self::Fixed { coef } | Self::Adaptive { coef, .. } => *coef,
        }
    }

    /// Updates β from the batch's mean KL; `n_steps` is the batch size (as verl passes it).
    pub fn update(&mut self, current_kl: f64, n_steps: usize) {
        if let Self::Adaptive {
            coef,
            target_kl,
            horizon,
        } = self
        {
            let err = (current_kl / *target_kl - 1.0).clamp(-0.2, 0.2);
            *coef *= 1.0 + err * n_steps as f64 / *horizon;
        }
    }
}

/// Result of [`apply_kl_in_reward`].
#[derive(Debug, Clone, PartialEq)]
pub struct RewardKl {
    /// Token-level rewards after the penalty `[B][T]`: `scores − β·kl·mask`.
    pub rewards: Vec<Vec<f64>>,
    /// The masked per-token KL `[B][T]`.
    pub kl: Vec<Vec<f64>>,
    /// mean over sequences of the masked token-mean KL (what the controller sees).
    pub current_kl: f64,
    /// The β that was applied (before the controller update).
    pub coef: f64,
}

/// KL in the reward (verl `ray_trainer.apply_kl_penalty`, Reinforce++ style): the per-token KL
/// between the behaviour policy (`old`) and the reference is subtracted from the token-level
/// scores, then the controller is updated with the batch's mean KL.
pub fn apply_kl_in_reward(
    token_scores: &[Vec<f64>],
    old: &[Vec<f64>],
    ref_lp: &[Vec<f64>],
    mask: &[Vec<f64>],
    penalty: KlPenalty,
    controller: &mut KlController,
) -> Result<RewardKl, RlError> {
    let b = token_scores.len();
    if b == 0 {
        return Err(RlError::Empty("token scores"));
    }
    let t = token_scores[0].len();
    check_grid("token scores", token_scores, b, t)?;
    check_grid("old log-probs", old, b, t)?;
    check_grid("reference log-probs", ref_lp, b, t)?;
    check_grid("mask", mask, b, t)?;
    let beta = controller.coef();
    let mut kl = vec![vec![0.0; t]; b];
    let mut rewards = vec![vec![0.0; t]; b];
    let mut seq_sum = 0.0;
    for i in 0..b {
        let (mut s, mut n) = (0.0, 0.0);
        for j in 0..t {
            let k = kl_value(old[i][j], ref_lp[i][j], penalty) * mask[i][j];
            kl[i][j] = k;
            rewards[i][j] = token_scores[i][j] - beta * k;
            if mask[i][j] != 0.0 {
                s += k * mask[i][j];
            }
            n += mask[i][j];
        }
        seq_sum += s / (n + 1e-8);
    }
    let current_kl = seq_sum / b as f64;
    controller.update(current_kl, b);
    Ok(RewardKl {
        rewards,
        kl,
        current_kl,
        coef: beta,
    })
}
