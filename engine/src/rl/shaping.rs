//! Sampling filters, reward shaping and token weighting around the loss (host f64 math).
//!
//! * Dynamic sampling (DAPO, Yu et al. 2025): groups whose rewards are all equal carry no
//!   GRPO signal; [`dynamic_sampling`] says which to drop (the loop refills the batch).
//! * Soft overlong punishment (DAPO eq. 13): [`overlong_penalty`].
//! * Overlong filtering (DAPO) / truncated-completion masking (TRL
//!   `mask_truncated_completions`): completions that did not end with EOS get mask 0
//!   ([`ended_with_eos`], [`mask_truncated`]).
//! * GTPO conflict-token protection (Simoni et al. 2025, "GTPO: Trajectory-Based Policy
//!   Optimization"): [`conflict_token_weights`].
//! * GTPO entropy-shaped token rewards (Tan et al. 2025, "GTPO and GRPO-S"):
//!   [`gtpo_token_rewards`], [`gtpo_token_advantages`].
//! * High-entropy token mask (Wang et al. 2025 "80/20"; TRL `top_entropy_quantile`):
//!   [`high_entropy_mask`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::error::{RlError, check_grid};

/// Which shaping steps a recipe switches on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShapingConfig {
    /// Drop groups whose rewards are all equal and refill (DAPO dynamic sampling).
    pub dynamic_sampling: bool,
    /// DAPO soft overlong punishment added to the score. None: off.
    pub overlong: Option<OverlongConfig>,
    /// Mask (loss mask 0) completions that did not end with EOS (TRL
    /// `mask_truncated_completions`; DAPO overlong filtering).
    pub mask_truncated: bool,
    /// GTPO conflict-token protection; the value is the weight of a conflict token in a
    /// positive completion (1.0: no amplification). None: off.
    pub conflict_positive_weight: Option<f64>,
    /// GTPO entropy-shaped token rewards. None: off.
    pub gtpo_entropy: Option<GtpoEntropyConfig>,
    /// Keep only the top ρ fraction of tokens by entropy (TRL `top_entropy_quantile`, 1.0 = off).
    pub top_entropy_quantile: f64,
}

impl Default for ShapingConfig {
    fn default() -> Self {
        Self {
            dynamic_sampling: false,
            overlong: None,
            mask_truncated: false,
            conflict_positive_weight: None,
            gtpo_entropy: None,
            top_entropy_quantile: 1.0,
        }
    }
}

/// DAPO soft overlong punishment settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverlongConfig {
    /// L_max: the maximum completion length.
    pub max_len: usize,
    /// L_cache: the punishment interval before L_max.
    pub cache_len: usize,
    /// Scale of the penalty (verl `overlong_penalty_factor`, 1.0).
    pub factor: f64,
}

impl Default for OverlongConfig {
    /// DAPO paper: L_max = 20480, L_cache = 4096.
    fn default() -> Self {
        Self {
            max_len: 20480,
            cache_len: 4096,
            factor: 1.0,
        }
    }
}

/// GTPO entropy-shaped reward weights (α₁ on the outcome, α₂ on the entropy bonus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GtpoEntropyConfig {
    pub alpha1: f64,
    pub alpha2: f64,
}

impl Default for GtpoEntropyConfig {
    fn default() -> Self {
        Self {
            alpha1: 1.0,
            alpha2: 0.1,
        }
    }
}

/// Result of [`dynamic_sampling`].
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicSampling {
    /// Per sequence: true if its group has differing rewards (kept).
    pub keep: Vec<bool>,
    /// Group ids (as given) whose rewards are all equal, in order of first appearance.
    pub dropped_groups: Vec<usize>,
    /// Number of groups kept.
    pub kept_groups: usize,
}

/// DAPO dynamic sampling: a group is dropped when all its rewards are equal (std 0: every
/// completion right or every one wrong), since its group-normalised advantages are all 0.
pub fn dynamic_sampling(scores: &[f64], groups: &[usize]) -> Result<DynamicSampling, RlError> {
    if scores.is_empty() {
        return Err(RlError::Empty("no scores"));
    }
    if groups.len() != scores.len() {
        return Err(RlError::Shape {
            what: "group ids",
            expected: vec![scores.len()],
            got: vec![groups.len()],
        });
    }
    let mut first: HashMap<usize, f64> = HashMap::new();
    let mut varied: HashMap<usize, bool> = HashMap::new();
    let mut order = Vec::new();
    for (s, g) in scores.iter().zip(groups) {
        match first.get(g) {
            None => {
                first.insert(*g, *s);
                varied.insert(*g, false);
                order.push(*g);
            }
            Some(f) => {
                if f != s {
                    varied.insert(*g, true);
                }
            }
        }
    }
    let dropped_groups: Vec<usize> = order.iter().copied().filter(|g| !varied[g]).collect();
    Ok(DynamicSampling {
        keep: groups.iter().map(|g| varied[g]).collect(),
        kept_groups: order.len() - dropped_groups.len(),
        dropped_groups,
    })
}

/// DAPO soft overlong punishment for a completion of `len` tokens:
/// 0 if len ≤ L_max − L_cache; (L_max − L_cache − len)/L_cache inside the interval; −1 beyond
/// L_max; times `factor`.
pub fn overlong_penalty(len: usize, cfg: &OverlongConfig) -> Result<f64, RlError> {
    if cfg.cache_len == 0 || cfg.cache_len > cfg.max_len {
        return Err(RlError::Config(format!(
            "overlong: need 0 < cache_len ≤ max_len, got cache_len {} and max_len {}",
            cfg.cache_len, cfg.max_len
        )));
    }
    let start = cfg.max_len - cfg.cache_len;
    let p = if len <= start {
        0.0
    } else if len <= cfg.max_len {
        (start as f64 - len as f64) / cfg.cache_len as f64
    } else {
        -1.0
    };
    Ok(p * cfg.factor)
}

/// Per completion: does its last valid token (mask 1) belong to `eos_ids`? An empty completion
/// counts as not ended.
pub fn ended_with_eos(
    ids: &[Vec<u32>],
    mask: &[Vec<f64>],
    eos_ids: &[u32],
) -> Result<Vec<bool>, RlError> {
    if ids.len() != mask.len() {
        return Err(RlError::Shape {
            what: "completion ids",
            expected: vec![mask.len()],
            got: vec![ids.len()],
        });
    }
    ids.iter()
        .zip(mask)
        .map(|(row, m)| {
            if row.len() != m.len() {
                return Err(RlError::Shape {
                    what: "completion ids row",
                    expected: vec![m.len()],
                    got: vec![row.len()],
                });
            }
            Ok(m.iter()
                .rposition(|x| *x != 0.0)
                .is_some_and(|j| eos_ids.contains(&row[j])))
        })
        .collect()
}

/// Truncated-completion masking / overlong filtering: rows with `ended[i] == false` get mask 0.
pub fn mask_truncated(mask: &[Vec<f64>], ended: &[bool]) -> Result<Vec<Vec<f64>>, RlError> {
    if ended.len() != mask.len() {
        return Err(RlError::Shape {
            what: "ended flags",
            expected: vec![mask.len()],
            got: vec![ended.len()],
        });
    }
    Ok(mask
        .iter()
        .zip(ended)
        .map(|(m, e)| if *e { m.clone() } else { vec![0.0; m.len()] })
        .collect())
}

/// GTPO conflict-token protection (Simoni et al. 2025). The rule implemented: within a group,
/// a token at position t of completion i is a *conflict token* if the same token id sits at
/// position t (valid in both) in at least one completion with advantage > 0 **and** at least
/// one with advantage < 0. Its weight is 0 in negative completions (the update that would push
/// it down is skipped) and `positive_weight` in positive ones (amplified when > 1); every other
/// token has weight 1, padding 0. Multiply into the policy term via `LossInputs::token_weights`.
pub fn conflict_token_weights(
    ids: &[Vec<u32>],
    mask: &[Vec<f64>],
    advantages: &[f64],
    groups: &[usize],
    positive_weight: f64,
) -> Result<Vec<Vec<f64>>, RlError> {
    let b = mask.len();
    if b == 0 {
        return Err(RlError::Empty("no completions"));
    }
    let t = mask[0].len();
    check_grid("mask", mask, b, t)?;
    if ids.len() != b || ids.iter().any(|r| r.len() != t) {
        return Err(RlError::Shape {
            what: "completion ids",
            expected: vec![b, t],
            got: vec![ids.len(), ids.first().map_or(0, Vec::len)],
        });
    }
    for (what, n) in [
        ("advantages", advantages.len()),
        ("group ids", groups.len()),
    ] {
        if n != b {
            return Err(RlError::Shape {
                what,
                expected: vec![b],
                got: vec![n],
            });
        }
    }
    // (group, position, token) -> (seen in a positive, seen in a negative)
    let mut seen: HashMap<(usize, usize, u32), (bool, bool)> = HashMap::new();
    for i in 0..b {
        for j in 0..t {
            if mask[i][j] != 0.0 {
                let e = seen.entry((groups[i], j, ids[i][j])).or_default();
                e.0 |= advantages[i] > 0.0;
                e.1 |= advantages[i] < 0.0;
            }
        }
    }
    Ok((0..b)
        .map(|i| {
            (0..t)
                .map(|j| {
                    if mask[i][j] == 0.0 {
                        return 0.0;
                    }
                    let (p, n) = seen[&(groups[i], j, ids[i][j])];
                    match (p && n, advantages[i]) {
                        (true, a) if a < 0.0 => 0.0,
                        (true, a) if a > 0.0 => positive_weight,
                        _ => 1.0,
                    }
                })
                .collect()
        })
        .collect())
}

/// GTPO entropy-shaped token rewards (Tan et al. 2025), as implemented here: in each group,
/// successful completions O⁺ (score > 0) and the others O⁻. At position t let O⁺_t / O⁻_t be
/// the members still generating (mask 1) and d⁺_t, d⁻_t their counts. Then
/// * i ∈ O⁺: r̃_it = α₁·r_i + α₂·d⁺_t·H_it / Σ_{k∈O⁺_t} H_kt (high-entropy tokens of correct
///   answers get more reward);
/// * j ∈ O⁻: r̃_jt = α₁·r_j − α₂·d⁻_t·(1/H_jt) / Σ_{k∈O⁻_t} (1/H_kt) (confident wrong tokens
///   get more penalty);
///
/// H is clamped below at 1e-6; padding gets 0. The entropy share sums to d_t at each t, so the
/// mean shaped reward over a set at a position is α₁·r̄ ± α₂.
pub fn gtpo_token_rewards(
    scores: &[f64],
    entropy: &[Vec<f64>],
    mask: &[Vec<f64>],
    groups: &[usize],
    cfg: &GtpoEntropyConfig,
) -> Result<Vec<Vec<f64>>, RlError> {
    let b = mask.len();
    if b == 0 {
        return Err(RlError::Empty("no completions"));
    }
    let t = mask[0].len();
    check_grid("mask", mask, b, t)?;
    check_grid("entropy", entropy, b, t)?;
    for (what, n) in [("scores", scores.len()), ("group ids", groups.len())] {
        if n != b {
            return Err(RlError::Shape {
                what,
                expected: vec![b],
                got: vec![n],
            });
        }
    }
    let h = |i: usize, j: usize| entropy[i][j].max(1e-6);
    // (group, successful, position) -> (count, Σ weight)
    let mut sums: HashMap<(usize, bool, usize), (f64, f64)> = HashMap::new();
    for i in 0..b {
        let pos = scores[i] > 0.0;
        for (j, m) in mask[i].iter().enumerate() {
            if *m != 0.0 {
                let w = if pos { h(i, j) } else { 1.0 / h(i, j) };
                let e = sums.entry((groups[i], pos, j)).or_default();
                e.0 += 1.0;
                e.1 += w;
            }
        }
    }
    Ok((0..b)
        .map(|i| {
            let pos = scores[i] > 0.0;
            (0..t)
                .map(|j| {
                    if mask[i][j] == 0.0 {
                        return 0.0;
                    }
                    let (d, total) = sums[&(groups[i], pos, j)];
                    if pos {
                        cfg.alpha1 * scores[i] + cfg.alpha2 * d * h(i, j) / total
                    } else {
                        cfg.alpha1 * scores[i] - cfg.alpha2 * d * (1.0 / h(i, j)) / total
                    }
                })
                .collect()
        })
        .collect())
}

/// Token-level advantages from shaped token rewards: within each group, (r̃ − mean)/(std + eps)
/// over all valid tokens of the group (unbiased std); groups with fewer than two valid tokens
/// get 0.
pub fn gtpo_token_advantages(
    token_rewards: &[Vec<f64>],
    mask: &[Vec<f64>],
    groups: &[usize],
    eps: f64,
) -> Result<Vec<Vec<f64>>, RlError> {
    let b = mask.len();
    if b == 0 {
        return Err(RlError::Empty("no completions"));
    }
    let t = mask[0].len();
    check_grid("mask", mask, b, t)?;
    check_grid("token rewards", token_rewards, b, t)?;
    if groups.len() != b {
        return Err(RlError::Shape {
            what: "group ids",
            expected: vec![b],
            got: vec![groups.len()],
        });
    }
    let mut vals: HashMap<usize, Vec<f64>> = HashMap::new();
    for i in 0..b {
        for j in 0..t {
            if mask[i][j] != 0.0 {
                vals.entry(groups[i]).or_default().push(token_rewards[i][j]);
            }
        }
    }
    let stats: HashMap<usize, (f64, f64)> = vals
        .into_iter()
        .filter(|(_, v)| v.len() >= 2)
        .map(|(g, v)| {
            let n = v.len() as f64;
            let mean = v.iter().sum::<f64>() / n;
            let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
            (g, (mean, var.sqrt()))
        })
        .collect();
    Ok((0..b)
        .map(|i| {
            (0..t)
                .map(|j| match stats.get(&groups[i]) {
                    Some((mean, std)) if mask[i][j] != 0.0 => {
                        (token_rewards[i][j] - mean) / (std + eps)
                    }
                    _ => 0.0,
                })
                .collect()
        })
        .collect())
}

/// TRL's high-entropy mask (`get_high_entropy_mask`, `grpo_trainer.py:1380-1416`): the
/// threshold is the (1 − ρ) quantile (linear interpolation, like `torch.quantile`) of the
/// entropies of valid tokens; keep valid tokens with H ≥ threshold. No valid token: all 0.
pub fn high_entropy_mask(
    entropy: &[Vec<f64>],
    mask: &[Vec<f64>],
    top_quantile: f64,
) -> Result<Vec<Vec<f64>>, RlError> {
    if !(top_quantile > 0.0 && top_quantile <= 1.0) {
        return Err(RlError::Config(format!(
            "top_entropy_quantile must be in (0, 1], got {top_quantile}"
        )));
    }
    let b = mask.len();
    if b == 0 {
        return Err(RlError::Empty("no completions"));
    }
    let t = mask[0].len();
    check_grid("mask", mask, b, t)?;
    check_grid("entropy", entropy, b, t)?;
    let mut valid: Vec<f64> = entropy
        .iter()
        .flatten()
        .zip(mask.iter().flatten())
        .filter(|(_, m)| **m != 0.0)
        .map(|(h, _)| *h)
        .collect();
    if valid.is_empty() {
        return Ok(vec![vec![0.0; t]; b]);
    }
    valid.sort_by(f64::total_cmp);
    let q = 1.0 - top_quantile;
    let pos = q * (valid.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(valid.len() - 1);
    let w = pos - lo as f64;
    // torch.lerp: start + w·(end − start) for w < 0.5, end − (end − start)·(1 − w) otherwise
    let thr = if w < 0.5 {
        valid[lo] + w * (valid[hi] - valid[lo])
    } else {
        valid[hi] - (valid[hi] - valid[lo]) * (1.0 - w)
    };
    Ok(entropy
        .iter()
        .zip(mask)
        .map(|(hr, mr)| {
            hr.iter()
                .zip(mr)
                .map(|(h, m)| if *m != 0.0 && h * m >= thr { 1.0 } else { 0.0 })
                .collect()
        })
        .collect())
}
