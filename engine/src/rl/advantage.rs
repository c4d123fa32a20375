//! Advantage estimators: per-sequence scores (or token-level rewards) → token-level advantages
//! `[B][T]`, zero where the mask is 0. Plain f64 host math (advantages are not differentiated).
//!
//! Groups are given as one id per sequence (verl's `uid`: equal ids form a group, wherever the
//! rows sit); [`consecutive_groups`] builds TRL's layout (G consecutive rows per prompt).
//!
//! | estimator | per-sequence advantage a_i (group g of n members) | source |
//! |---|---|---|
//! | `grpo` | (s_i − mean_g)/(std_g + eps), std unbiased; scale `batch`: std over the whole batch | TRL `grpo_trainer.py:2761-2788` (eps 1e-4), verl `compute_grpo_outcome_advantage` (eps 1e-6) |
//! | `dr_grpo` | s_i − mean_g | Dr.GRPO; verl `norm_adv_by_std_in_grpo=False`, TRL `scale_rewards="none"` |
//! | `rloo` | s_i − mean_{g∖i} = (s_i − mean_g)·n/(n−1); n = 1: s_i | verl `compute_rloo_outcome_advantage` |
//! | `opo` | s_i − Σ_j len_j s_j / Σ_j len_j; n = 1: s_i | verl `compute_opo_outcome_advantage` |
//! | `reinforce_pp` | token returns G_t = r_t + γ G_{t+1} over valid tokens, whitened over the batch | verl `compute_reinforce_plus_plus_outcome_advantage` |
//! | `reinforce_pp_baseline` | (s_i − mean_g) on every valid token, whitened over the batch | verl `compute_reinforce_plus_plus_baseline_outcome_advantage` |
//! | `gpg` | α·(s_i − mean_g), α = B / #{i: s_i ≠ 0} (n = 1: mean 0) | verl `compute_gpg_outcome_advantage` (f_norm 1) |
//! | `pass_at_k` | the group's best member only: (s_max − s_second)/(std_g + eps) (scale `none`: no division); others 0; n ≥ 2 | verl `compute_grpo_passk_outcome_advantage` |
//! | `remax` | s_i − b_i with b_i the reward of the greedy completion of i's prompt ([`remax_advantages`]) | verl `compute_remax_outcome_advantage` |
//!
//! A score may be NaN ("no reward function applied", TRL): it is left out of the group
//! statistics and its advantage is 0 (grpo / dr_grpo only).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::error::{RlError, check_grid};

/// Which estimator turns rewards into advantages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    /// Group-normalised (GRPO, DeepSeekMath).
    #[default]
    Grpo,
    /// Group mean only (Dr.GRPO).
    DrGrpo,
    /// Leave-one-out baseline (RLOO).
    Rloo,
    /// Discounted token returns, whitened over the batch (Reinforce++).
    ReinforcePp,
    /// Group mean baseline, then whitened over the batch (Reinforce++-baseline).
    ReinforcePpBaseline,
    /// Length-weighted group baseline (OPO).
    Opo,
    /// Group baseline scaled by the batch's share of non-zero scores (GPG).
    Gpg,
    /// Only the best member of each group learns, by its margin over the second (Pass@k).
    PassAtK,
    /// Reward minus the greedy completion's reward (ReMax); see [`remax_advantages`].
    Remax,
}

/// Which standard deviation divides the GRPO advantage (TRL `scale_rewards`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StdScale {
    /// The group's std (TRL "group", verl).
    #[default]
    Group,
    /// The whole batch's std; the baseline stays the group mean (TRL "batch").
    Batch,
    /// No division (TRL "none" = Dr.GRPO).
    None,
}

/// What a group with a single scorable member gets (grpo / dr_grpo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Singletons {
    /// Advantage 0 (TRL: its std is NaN, then `nan_to_num`).
    #[default]
    Zero,
    /// Mean 0 and std 1, i.e. s/(1 + eps) or s (verl).
    RawScore,
}

/// Settings of the advantage estimator. Defaults mirror TRL 1.16 (`grpo`, group scale,
/// eps 1e-4, singletons 0); verl's grpo uses eps 1e-6 and `raw_score` singletons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdvantageConfig {
    /// The estimator.
    pub estimator: Estimator,
    /// GRPO std: group | batch | none (TRL `scale_rewards`, default "group").
    pub scale: StdScale,
    /// Added to the std before dividing (TRL 1e-4, verl 1e-6).
    pub eps: f64,
    /// Groups with one scorable member (TRL: 0; verl: raw score).
    pub singletons: Singletons,
    /// Discount γ of Reinforce++ returns (verl `algorithm.gamma`, default 1.0).
    pub gamma: f64,
}

impl Default for AdvantageConfig {
    fn default() -> Self {
        Self {
            estimator: Estimator::Grpo,
            scale: StdScale::Group,
            eps: 1e-4,
            singletons: Singletons::Zero,
            gamma: 1.0,
        }
    }
}

/// The rewards an estimator starts from.
#[derive(Debug, Clone, Copy)]
pub enum Rewards<'a> {
    /// One score per sequence `[B]`. Reinforce++ puts it on the last valid token.
    Sequence(&'a [f64]),
    /// Token-level rewards `[B][T]`; outcome estimators use the row sum as the score (verl).
    Token(&'a [Vec<f64>]),
}

/// TRL's group layout: `batch / group_size` groups of `group_size` consecutive rows.
pub fn consecutive_groups(batch: usize, group_size: usize) -> Result<Vec<usize>, RlError> {
    if group_size == 0 {
        return Err(RlError::Groups("group size is 0".into()));
    }
    if batch == 0 {
        return Err(RlError::Empty("no sequences to group"));
    }
    if !batch.is_multiple_of(group_size) {
        return Err(RlError::Groups(format!(
            "batch of {batch} is not a multiple of the group size {group_size}"
        )));
    }
    Ok((0..batch).map(|i| i / group_size).collect())
}

/// TRL's `sum_then_normalize` reward (`grpo_trainer.py:2761-2764`): r_i = Σ_f w_f R[i][f] over the
/// functions that applied (NaN = did not apply); NaN when none applied.
pub fn aggregate_rewards(per_func: &[Vec<f64>], weights: &[f64]) -> Result<Vec<f64>, RlError> {
    if per_func.is_empty() {
        return Err(RlError::Empty("no rewards"));
    }
    check_grid(
        "rewards per function",
        per_func,
        per_func.len(),
        weights.len(),
    )?;
    Ok(per_func
        .iter()
        .map(|row| {
            if row.iter().all(|x| x.is_nan()) {
                f64::NAN
            } else {
                row.iter()
                    .zip(weights)
                    .filter(|(x, _)| !x.is_nan())
                    .map(|(x, w)| x * w)
                    .sum()
            }
        })
        .collect())
}

/// TRL's `normalize_then_sum` (GDPO, `grpo_trainer.py:2790-2800`): each reward function is
/// group-normalised on its own, (R_f − nanmean_g)/(nanstd_g + eps) (NaN where it did not apply or
/// its group has < 2 values), the weighted sum skips NaNs, rows where no function applied stay
/// NaN, and the sum is normalised over the batch: A = (r − nanmean(r))/(nanstd(r) + eps); NaN → 0.
/// TRL uses eps = 1e-4. Returns per-sequence advantages.
pub fn normalize_then_sum(
    per_func: &[Vec<f64>],
    weights: &[f64],
    groups: &[usize],
    eps: f64,
) -> Result<Vec<f64>, RlError> {
    let b = per_func.len();
    if b == 0 {
        return Err(RlError::Empty("no rewards"));
    }
    check_grid("rewards per function", per_func, b, weights.len())?;
    if groups.len() != b {
        return Err(RlError::Shape {
            what: "group ids",
            expected: vec![b],
            got: vec![groups.len()],
        });
    }
    let nanmean = |xs: &[f64]| {
        let v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let nanstd = |xs: &[f64]| {
        let v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
        std_unbiased(&v)
    };
    let mut summed = vec![0.0; b];
    for m in group_members(groups) {
        for (f, w) in weights.iter().enumerate() {
            let col: Vec<f64> = m.iter().map(|&i| per_func[i][f]).collect();
            let (mean, std) = (nanmean(&col), nanstd(&col));
            for &i in &m {
                let z = (per_func[i][f] - mean) / (std + eps);
                if !z.is_nan() {
                    summed[i] += z * w;
                }
            }
        }
    }
    for (i, row) in per_func.iter().enumerate() {
        if row.iter().all(|x| x.is_nan()) {
            summed[i] = f64::NAN;
        }
    }
    let (mean, std) = (nanmean(&summed), nanstd(&summed));
    Ok(summed
        .iter()
        .map(|r| {
            let a = (r - mean) / (std + eps);
            if a.is_nan() { 0.0 } else { a }
        })
        .collect())
}

/// Members of each group, in order of first appearance.
fn group_members(groups: &[usize]) -> Vec<Vec<usize>> {
    let mut slot: HashMap<usize, usize> = HashMap::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let k = *slot.entry(*g).or_insert_with(|| {
            members.push(Vec::new());
            members.len() - 1
        });
        members[k].push(i);
    }
    members
}

/// Unbiased std of `xs` (NaN for fewer than two values).
fn std_unbiased(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    if xs.len() < 2 {
        return f64::NAN;
    }
    let mean = xs.iter().sum::<f64>() / n;
    (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)).sqrt()
}

/// Per-sequence advantages of the outcome estimators (all but `reinforce_pp`).
/// `lengths` (valid tokens per sequence) is used by OPO only.
pub fn sequence_advantages(
    cfg: &AdvantageConfig,
    scores: &[f64],
    lengths: &[f64],
    groups: &[usize],
) -> Result<Vec<f64>, RlError> {
    let b = scores.len();
    if b == 0 {
        return Err(RlError::Empty("no scores"));
    }
    for (what, n) in [("group ids", groups.len()), ("lengths", lengths.len())] {
        if n != b {
            return Err(RlError::Shape {
                what,
                expected: vec![b],
                got: vec![n],
            });
        }
    }
    let nan_ok = matches!(cfg.estimator, Estimator::Grpo | Estimator::DrGrpo);
    if !nan_ok && scores.iter().any(|s| s.is_nan()) {
        return Err(RlError::Config(format!(
            "NaN scores (not applicable) are only allowed with grpo / dr_grpo, not {:?}",
            cfg.estimator
        )));
    }
    let members = group_members(groups);
    let mut adv = vec![0.0; b];
    match cfg.estimator {
        Estimator::Grpo | Estimator::DrGrpo => {
            let scale = if cfg.estimator == Estimator::DrGrpo {
                StdScale::None
            } else {
                cfg.scale
            };
            let valid_all: Vec<f64> = scores.iter().copied().filter(|s| !s.is_nan()).collect();
            let batch_std = std_unbiased(&valid_all);
            for m in &members {
                let valid: Vec<f64> = m
                    .iter()
                    .map(|&i| scores[i])
                    .filter(|s| !s.is_nan())
                    .collect();
                let n = valid.len();
                if n == 0 {
                    continue; // every member unscorable: all 0
                }
                let (mean, std) = if n == 1 && cfg.singletons == Singletons::RawScore {
                    (0.0, 1.0)
                } else {
                    let mean = valid.iter().sum::<f64>() / n as f64;
                    let std = match scale {
                        StdScale::Batch => batch_std,
                        _ => std_unbiased(&valid),
                    };
                    (mean, std)
                };
                if n == 1 && cfg.singletons == Singletons::Zero {
                    continue;
                }
                for &i in m {
                    let s = scores[i];
                    let a = match scale {
                        StdScale::None => s - mean,
                        _ => (s - mean) / (std + cfg.eps),
                    };
                    adv[i] = if a.is_nan() { 0.0 } else { a };
                }
            }
        }
        Estimator::Rloo => {
            for m in &members {
                let n = m.len() as f64;
                let mean = m.iter().map(|&i| scores[i]).sum::<f64>() / n;
                for &i in m {
                    adv[i] = if m.len() > 1 {
                        scores[i] * n / (n - 1.0) - mean * n / (n - 1.0)
                    } else {
                        scores[i]
                    };
                }
            }
        }
        Estimator::Opo => {
            for m in &members {
                let baseline = if m.len() > 1 {
                    let num: f64 = m.iter().map(|&i| lengths[i] * scores[i]).sum();
                    let den: f64 = m.iter().map(|&i| lengths[i]).sum();
                    if den == 0.0 {
                        return Err(RlError::NotEnough(
                            "OPO: every sequence of a group is empty".into(),
                        ));
                    }
                    num / den
                } else {
                    0.0
                };
                for &i in m {
                    adv[i] = scores[i] - baseline;
                }
            }
        }
        Estimator::ReinforcePpBaseline => {
            for m in &members {
                let mean = group_mean_or_zero(m, scores);
                for &i in m {
                    adv[i] = scores[i] - mean;
                }
            }
        }
        Estimator::Gpg => {
            let nonzero = scores.iter().filter(|&&s| s != 0.0).count().max(1);
            let alpha = b as f64 / nonzero as f64;
            for m in &members {
                let mean = group_mean_or_zero(m, scores);
                for &i in m {
                    adv[i] = alpha * (scores[i] - mean);
                }
            }
        }
        Estimator::PassAtK => {
            for m in &members {
                if m.len() < 2 {
                    return Err(RlError::NotEnough(format!(
                        "pass_at_k needs at least 2 completions per group, got {}",
                        m.len()
                    )));
                }
                // The first member with the largest score; the runner-up among the others.
                let best = (m.iter().copied())
                    .fold(m[0], |b, i| if scores[i] > scores[b] { i } else { b });
                let second = (m.iter().copied().filter(|&i| i != best))
                    .map(|i| scores[i])
                    .fold(f64::NEG_INFINITY, f64::max);
                let margin = scores[best] - second;
                let group: Vec<f64> = m.iter().map(|&i| scores[i]).collect();
                adv[best] = match cfg.scale {
                    StdScale::None => margin,
                    _ => margin / (std_unbiased(&group) + cfg.eps),
                };
            }
        }
        Estimator::ReinforcePp => {
            return Err(RlError::Config(
                "reinforce_pp works on token returns: use token_advantages".into(),
            ));
        }
        Estimator::Remax => {
            return Err(RlError::Config(
                "remax needs the greedy completions' rewards: use remax_advantages".into(),
            ));
        }
    }
    Ok(adv)
}

/// The mean score of group `m`, or 0 for a single-member group (verl's baseline rule for
/// Reinforce++-baseline and GPG).
fn group_mean_or_zero(m: &[usize], scores: &[f64]) -> f64 {
    if m.len() > 1 {
        m.iter().map(|&i| scores[i]).sum::<f64>() / m.len() as f64
    } else {
        0.0
    }
}

/// ReMax: `scores[i] − baselines[i]` on every valid token of row i, the baseline being the
/// reward of the greedy completion of row i's prompt (verl `compute_remax_outcome_advantage`
/// with one outcome reward per sequence). No whitening.
pub fn remax_advantages(
    scores: &[f64],
    baselines: &[f64],
    mask: &[Vec<f64>],
) -> Result<Vec<Vec<f64>>, RlError> {
    for (what, n) in [("scores", scores.len()), ("baselines", baselines.len())] {
        if n != mask.len() {
            return Err(RlError::Shape {
                what,
                expected: vec![mask.len()],
                got: vec![n],
            });
        }
    }
    Ok((mask.iter().enumerate())
        .map(|(i, row)| row.iter().map(|m| (scores[i] - baselines[i]) * m).collect())
        .collect())
}

/// verl's `masked_whiten`: (x − mean)/√(var + 1e-8) with the masked mean (÷(Σm + 1e-8)) and the
/// unbiased masked variance; needs at least two valid tokens.
fn masked_whiten(x: &mut [Vec<f64>], mask: &[Vec<f64>]) -> Result<(), RlError> {
    let count: f64 = mask.iter().flatten().sum();
    if count < 2.0 {
        return Err(RlError::NotEnough(format!(
            "batch whitening needs at least 2 valid tokens, got {count}"
        )));
    }
    let msum = |v: &dyn Fn(usize, usize) -> f64| -> f64 {
        let mut s = 0.0;
        for (i, row) in mask.iter().enumerate() {
            for (j, m) in row.iter().enumerate() {
                if *m != 0.0 {
                    s += v(i, j) * m;
                }
            }
        }
        s
    };
    let mean = msum(&|i, j| x[i][j]) / (count + 1e-8);
    let var =
        msum(&|i, j| (x[i][j] - mean) * (x[i][j] - mean)) / (count + 1e-8) * count / (count - 1.0);
    let inv = 1.0 / (var + 1e-8).sqrt();
    for row in x.iter_mut() {
        for v in row.iter_mut() {
            *v = (*v - mean) * inv;
        }
    }
    Ok(())
}

/// Token-level advantages `[B][T]` (zero where `mask` is 0) for any estimator.
pub fn token_advantages(
    cfg: &AdvantageConfig,
    rewards: Rewards<'_>,
    mask: &[Vec<f64>],
    groups: &[usize],
) -> Result<Vec<Vec<f64>>, RlError> {
    let b = mask.len();
    if b == 0 {
        return Err(RlError::Empty("no sequences"));
    }
    let t = mask[0].len();
    check_grid("mask", mask, b, t)?;
    if let Rewards::Token(r) = rewards {
        check_grid("token rewards", r, b, t)?;
    }
    if cfg.estimator == Estimator::ReinforcePp {
        let token_rewards = match rewards {
            Rewards::Token(r) => r.to_vec(),
            Rewards::Sequence(s) => scores_on_last_token(s, mask)?,
        };
        let mut returns = vec![vec![0.0; t]; b];
        for i in 0..b {
            let mut running = 0.0;
            for j in (0..t).rev() {
                let m = mask[i][j];
                let next = token_rewards[i][j] + cfg.gamma * running;
                returns[i][j] = next * m;
                running = next * m + running * (1.0 - m);
            }
        }
        masked_whiten(&mut returns, mask)?;
        for (row, mrow) in returns.iter_mut().zip(mask) {
            for (v, m) in row.iter_mut().zip(mrow) {
                *v *= m;
            }
        }
        return Ok(returns);
    }
    let scores: Vec<f64> = match rewards {
        Rewards::Sequence(s) => {
            if s.len() != b {
                return Err(RlError::Shape {
                    what: "scores",
                    expected: vec![b],
                    got: vec![s.len()],
                });
            }
            s.to_vec()
        }
        Rewards::Token(r) => r.iter().map(|row| row.iter().sum()).collect(),
    };
    let lengths: Vec<f64> = mask.iter().map(|r| r.iter().sum()).collect();
    let adv = sequence_advantages(cfg, &scores, &lengths, groups)?;
    let mut out: Vec<Vec<f64>> = adv
        .iter()
        .zip(mask)
        .map(|(a, mrow)| mrow.iter().map(|m| a * m).collect())
        .collect();
    if cfg.estimator == Estimator::ReinforcePpBaseline {
        masked_whiten(&mut out, mask)?;
        for (row, mrow) in out.iter_mut().zip(mask) {
            for (v, m) in row.iter_mut().zip(mrow) {
                *v *= m;
            }
        }
    }
    Ok(out)
}

/// Token rewards `[B][T]` with each sequence's score on its last valid token (0 elsewhere).
/// A sequence with no valid token cannot carry a score.
pub fn scores_on_last_token(scores: &[f64], mask: &[Vec<f64>]) -> Result<Vec<Vec<f64>>, RlError> {
    if scores.len() != mask.len() {
        return Err(RlError::Shape {
            what: "scores",
            expected: vec![mask.len()],
            got: vec![scores.len()],
        });
    }
    let mut out: Vec<Vec<f64>> = mask.iter().map(|r| vec![0.0; r.len()]).collect();
    for (i, (s, mrow)) in scores.iter().zip(mask).enumerate() {
        if let Some(j) = mrow.iter().rposition(|m| *m != 0.0) {
            out[i][j] = *s;
        } else if *s != 0.0 {
            return Err(RlError::NotEnough(format!(
                "sequence {i} has a score but no valid token"
            )));
        }
    }
    Ok(out)
}
