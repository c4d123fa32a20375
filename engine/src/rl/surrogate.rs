//! Per-token policy-gradient surrogates besides PPO's clipped ratio (which stays in
//! [`super::loss`]). Each maps (lp, the log-ratio, the advantage) to a per-token loss `[B, T]`
//! that [`super::loss::policy_loss`] then masks, weights and aggregates like the clipped one.
//!
//! Notation: w = exp(log-ratio at the configured ratio level), lr = lp − old (token level,
//! after `log_ratio_clamp`), p = e^lp, p_old = e^old, sg = stop-gradient, ε = ε_low / ε_high.
//! ```text
//! cispo (TRL)      L = −sg(min(w, ε_high))·A·lp                 ε_high an absolute cap (e.g. 5)
//! cispo (verl)     L = −sg(clamp(w, 1−ε_low, 1+ε_high))·A·lp
//! sapo             L = −σ(τ(w − 1))·(4/τ)·A,  τ = τ_pos if A > 0 else τ_neg
//! vespo (TRL)      log W = clamp(Σ_t m·clamp(lp−old, ±20), ln 1e-8, 20)   (a sum, per sequence)
//!                  φ = sg(exp(λ + k·log W − λ·e^{log W})), (k, λ) = (k_pos, λ_pos) if A ≥ 0
//!                  else (k_neg, λ_neg);   L = −φ·A·lp
//! gpg (verl)       L = −A·lp
//! dro (verl)       L = −(A·lp − ½β·lr²)
//! dppo_tv (verl)   L = −A·sg(min(w, cap))·lp·sg(valid),  valid = p − p_old ≤ ε_high if A > 0
//!                  else p − p_old ≥ −ε_low
//! dppo_kl (verl)   as dppo_tv with valid = (D ≤ ε_high ∨ p ≤ p_old) if A > 0 else
//!                  (D ≤ ε_low ∨ p ≥ p_old),  D = p_old(old − lp) + (1 − p_old)·ln((1 − p_old +
//!                  1e-8)/(1 − p + 1e-8))  (binary KL)
//! clip_cov (verl)  L = max(−A·w, −A·clamp(w, 1−ε_low, 1+ε_high)), times 0 on a random
//!                  max(1, ⌊N·ratio⌋) of the unclipped valid tokens with lb < cov < ub
//! kl_cov (verl)    L = −A·w + coef·|lr| on the top max(1, ⌊N·ratio⌋) valid tokens by the
//!                  covariance (A − Ā)(lp − l̄p), else −A·w
//! ```
//! Sources: TRL 1.16 `GRPOTrainer._compute_loss` / `get_gamma_weights`; verl 0.9.1
//! `core_algos.compute_policy_loss_{cispo,sapo,gpg,dro,dppo_tv,dppo_kl,clip_cov,kl_cov}`. verl's sapo always
//! aggregates with seq-mean-token-mean; here the configured aggregation applies.

use burn::tensor::{Tensor, activation::sigmoid};

use super::loss::{Prepared, fl};
use serde::{Deserialize, Serialize};

/// Which surrogate turns ratios and advantages into a per-token loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Surrogate {
    /// PPO's clipped ratio (GRPO, DAPO, GSPO, ...; with `dual_clip` and `delta`).
    #[default]
    Clip,
    /// CISPO (MiniMax-M1): the clipped ratio as a detached weight on A·lp.
    Cispo {
        #[serde(default)]
        clip: CispoClip,
    },
    /// SAPO: a sigmoid gate instead of hard clipping.
    Sapo {
        #[serde(default = "one")]
        tau_pos: f64,
        #[serde(default = "tau_neg")]
        tau_neg: f64,
    },
    /// VESPO: a detached Gamma weight of the sequence ratio on A·lp (TRL).
    Vespo {
        #[serde(default = "two")]
        k_pos: f64,
        #[serde(default = "three")]
        lambda_pos: f64,
        #[serde(default = "three")]
        k_neg: f64,
        #[serde(default = "two")]
        lambda_neg: f64,
    },
    /// GPG: the plain policy gradient −A·lp (no ratio).
    Gpg,
    /// DRO: −(A·lp − ½β·lr²).
    Dro { beta: f64 },
    /// DPPO with the total-variation trust region (verl `dppo_tv`).
    DppoTv {
        /// Cap of the detached ratio (verl `clip_ratio_c`, 3).
        #[serde(default = "three")]
        ratio_cap: f64,
    },
    /// DPPO with the binary-KL trust region (verl `dppo_kl`).
    DppoKl {
        #[serde(default = "three")]
        ratio_cap: f64,
    },
    /// Clip-Cov (verl `clip_cov`): PPO's max(−A·w, −A·clamp(w)) with the gradient cut on a
    /// random max(1, ⌊N·ratio⌋) of the unclipped valid tokens whose covariance lies in
    /// (lb, ub) (all of them when fewer). The random choice uses the device RNG (seeded per
    /// step by the trainer), so it is reproducible here but not verl's `torch.randperm` draw.
    ClipCov {
        #[serde(default = "kl_cov_ratio")]
        ratio: f64,
        #[serde(default = "one")]
        lb: f64,
        #[serde(default = "five")]
        ub: f64,
    },
    /// KL-Cov (verl `kl_cov`): −A·w, plus coef·|lr| on the top `ratio` share of the valid
    /// tokens by the covariance (A − Ā)(lp − l̄p) (at least one token).
    KlCov {
        #[serde(default = "kl_cov_ratio")]
        ratio: f64,
        #[serde(default = "kl_cov_coef")]
        coef: f64,
    },
}

/// How CISPO clips its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CispoClip {
    /// min(w, ε_high), ε_high an absolute value (TRL `loss_type="cispo"`).
    #[default]
    TruncateAbove,
    /// clamp(w, 1 − ε_low, 1 + ε_high) (verl `cispo`).
    Relative,
}

fn one() -> f64 {
    1.0
}
fn two() -> f64 {
    2.0
}
fn three() -> f64 {
    3.0
}
fn five() -> f64 {
    5.0
}
fn tau_neg() -> f64 {
    1.05
}
fn kl_cov_ratio() -> f64 {
    2e-4
}
fn kl_cov_coef() -> f64 {
    0.1
}

impl Surrogate {
    /// Checks the parameters (errors name the field).
    pub fn validate(&self) -> crate::check::Checked {
        use crate::check::{finite, positive};
        match *self {
            Self::Clip | Self::Cispo { .. } | Self::Gpg => Ok(()),
            Self::Sapo { tau_pos, tau_neg } => {
                positive("tau_pos", tau_pos)?;
                positive("tau_neg", tau_neg)
            }
            Self::Vespo {
                k_pos,
                lambda_pos,
                k_neg,
                lambda_neg,
            } => {
                finite("k_pos", k_pos)?;
                finite("k_neg", k_neg)?;
                positive("lambda_pos", lambda_pos)?;
                positive("lambda_neg", lambda_neg)
            }
            Self::Dro { beta } => positive("beta", beta),
            Self::DppoTv { ratio_cap } | Self::DppoKl { ratio_cap } => {
                positive("ratio_cap", ratio_cap)
            }
            Self::ClipCov { ratio, lb, ub } => {
                crate::check::open_closed("ratio", ratio, 0.0, 1.0)?;
                if lb.partial_cmp(&ub) != Some(std::cmp::Ordering::Less) {
                    return Err(format!("`lb` = {lb}, `ub` = {ub}: need lb < ub"));
                }
                Ok(())
            }
            Self::KlCov { ratio, coef } => {
                crate::check::open_closed("ratio", ratio, 0.0, 1.0)?;
                crate::check::non_negative("coef", coef)
            }
        }
    }
}

/// The per-token loss of `s` (not [`Surrogate::Clip`]) on the loss's prepared tensors `prep`
/// with importance ratio `w` `[B, T]`, and a 0/1 indicator of tokens whose weight was
/// clipped or that fell outside the trust region (for the clip-fraction metric).
pub(crate) fn per_token(
    s: &Surrogate,
    prep: &Prepared,
    w: Tensor<2>,
    eps_low: f64,
    eps_high: f64,
) -> (Tensor<2>, Tensor<2>) {
    let (lp, old, lr, adv, mask) = (
        prep.lp.clone(),
        prep.old.clone(),
        prep.lr.clone(),
        prep.adv.clone(),
        prep.m.clone(),
    );
    let dtype = lp.dtype();
    let zero = lp.clone().detach().mul_scalar(0.0);
    let pos = prep.a_pos.clone();
    let select =
        |a: Tensor<2>, b: Tensor<2>| pos.clone() * a + (pos.clone().neg().add_scalar(1.0)) * b;
    match *s {
        Surrogate::Clip => unreachable!("the clipped surrogate lives in loss::policy_loss"),
        Surrogate::Cispo { clip } => {
            let w = w.detach();
            let c = match clip {
                CispoClip::TruncateAbove => w.clone().clamp_max(eps_high),
                CispoClip::Relative => w.clone().clamp(1.0 - eps_low, 1.0 + eps_high),
            };
            let clipped = fl(w.not_equal(c.clone()), dtype);
            ((c * adv * lp).neg(), clipped)
        }
        Surrogate::Sapo { tau_pos, tau_neg } => {
            let tau = select(
                zero.clone().add_scalar(tau_pos),
                zero.clone().add_scalar(tau_neg),
            );
            let gate = sigmoid(tau.clone() * w.add_scalar(-1.0)) * tau.recip().mul_scalar(4.0);
            ((gate * adv).neg(), zero)
        }
        Surrogate::Vespo {
            k_pos,
            lambda_pos,
            k_neg,
            lambda_neg,
        } => {
            let raw = (lp.clone() - old).detach().clamp(-20.0, 20.0);
            let log_w = (raw * mask).sum_dim(1).clamp((1e-8f64).ln(), 20.0); // [B, 1]
            let [b, tt] = lp.dims();
            let log_w = log_w.expand([b, tt]);
            let nonneg = fl(adv.clone().greater_equal_elem(0.0), dtype);
            let pick = |a: f64, c: f64| nonneg.clone().mul_scalar(a - c).add_scalar(c);
            let (k, lambda) = (
                pick(k_pos, k_neg),
                pick(lambda_pos, lambda_neg).clamp_min(1e-4),
            );
            let log_phi = lambda.clone() + k * log_w.clone() - lambda * log_w.exp();
            let phi = log_phi.exp().detach();
            ((phi * adv * lp).neg(), zero)
        }
        Surrogate::Gpg => ((adv * lp).neg(), zero),
        Surrogate::Dro { beta } => {
            let pen = lr.powi_scalar(2).mul_scalar(0.5 * beta);
            ((adv * lp - pen).neg(), zero)
        }
        Surrogate::ClipCov { ratio, lb, ub } => {
            let a = adv.clone();
            let l1 = (a.clone() * w.clone()).neg();
            let l2 = (a * w.clone().clamp(1.0 - eps_low, 1.0 + eps_high)).neg();
            let clipped = fl(l2.clone().greater(l1.clone()), dtype) * mask.clone();
            let cov = covariance(&adv, &lp, &mask);
            let in_band = fl(cov.clone().greater_elem(lb), dtype) * fl(cov.lower_elem(ub), dtype);
            let candidates = in_band * mask.clone() * clipped.clone().neg().add_scalar(1.0);
            let cut = random_subset(candidates, &mask, ratio);
            let keep = cut.neg().add_scalar(1.0);
            (l1.max_pair(l2) * keep, clipped)
        }
        Surrogate::KlCov { ratio, coef } => {
            let sel = top_covariance(&adv, &lp, &mask, ratio);
            let out = (adv * w).neg() + sel.clone() * lr.abs().mul_scalar(coef);
            (out, sel)
        }
        Surrogate::DppoTv { ratio_cap } | Surrogate::DppoKl { ratio_cap } => {
            let tr = w.detach().clamp_max(ratio_cap);
            let (p, p_old) = (lp.clone().detach().exp(), old.clone().exp());
            let valid = match *s {
                Surrogate::DppoTv { .. } => {
                    let d = p - p_old;
                    select(
                        fl(d.clone().lower_equal_elem(eps_high), dtype),
                        fl(d.greater_equal_elem(-eps_low), dtype),
                    )
                }
                _ => {
                    let one_minus = |x: Tensor<2>| x.neg().add_scalar(1.0 + 1e-8);
                    let bkl = p_old.clone() * (old.clone() - lp.clone().detach())
                        + one_minus(p_old.clone()).add_scalar(-1e-8)
                            * (one_minus(p_old.clone()).log() - one_minus(p.clone()).log());
                    let or = |a: Tensor<2>, b: Tensor<2>| (a + b).clamp_max(1.0);
                    select(
                        or(
                            fl(bkl.clone().lower_equal_elem(eps_high), dtype),
                            fl(p.clone().lower_equal(p_old.clone()), dtype),
                        ),
                        or(
                            fl(bkl.lower_equal_elem(eps_low), dtype),
                            fl(p.greater_equal(p_old), dtype),
                        ),
                    )
                }
            };
            let out = (adv * tr * lp * valid.clone()).neg();
            (out, valid.neg().add_scalar(1.0))
        }
    }
}

/// 0/1 `[B, T]`: the valid tokens whose covariance (A − Ā)(lp − l̄p) (means over the valid
/// tokens, detached) is among the largest max(1, ⌊N·ratio⌋), N = Σ mask — on the device, by
/// reading the threshold at that rank from the row's top values (no read-back).
fn top_covariance(adv: &Tensor<2>, lp: &Tensor<2>, mask: &Tensor<2>, ratio: f64) -> Tensor<2> {
    let cov = covariance(adv, lp, mask);
    let invalid = mask.clone().lower_equal_elem(0.0);
    let ranked = cov.mask_fill(invalid, f64::NEG_INFINITY);
    let threshold = kth_largest(ranked.clone(), mask, ratio);
    let dtype = lp.dtype();
    ranked.greater_equal(threshold).float().cast(dtype) * mask.clone()
}

/// (A − Ā)(lp − l̄p) with both means over the valid tokens, detached.
fn covariance(adv: &Tensor<2>, lp: &Tensor<2>, mask: &Tensor<2>) -> Tensor<2> {
    let n = mask.clone().sum().clamp_min(1.0);
    let mean = |x: Tensor<2>| ((x * mask.clone()).sum() / n.clone()).reshape([1, 1]);
    let (a, l) = (adv.clone().detach(), lp.clone().detach());
    (a.clone() - mean(a)) * (l.clone() - mean(l))
}

/// `[1, 1]`: the value of rank max(1, ⌊N·ratio⌋) (1 = largest) among `x` `[B, T]`, N = Σ mask
/// (on the device). The rank is at most max(1, ⌊B·T·ratio⌋), so only that many of the
/// largest values (rounded up to a power of two) are found.
fn kth_largest(x: Tensor<2>, mask: &Tensor<2>, ratio: f64) -> Tensor<2> {
    let [b, t] = x.dims();
    // Rounded up to a power of two so that batch shapes share a few compiled kernels.
    let most = (((b * t) as f64 * ratio).floor() as usize)
        .max(1)
        .next_power_of_two()
        .min(b * t);
    let (top, _) = crate::ops::topk::topk_rows(x.reshape([1, b * t]), most);
    let rank = mask
        .clone()
        .sum()
        .mul_scalar(ratio)
        .floor()
        .clamp(1.0, most as f64)
        .add_scalar(-1.0)
        .int()
        .reshape([1, 1]);
    top.gather(1, rank)
}

/// 0/1 `[B, T]`: a uniformly random subset of the `candidates` (0/1) of size
/// max(1, ⌊N·ratio⌋) (N = Σ mask), or all of them when there are fewer: the candidates with
/// the smallest uniform keys.
fn random_subset(candidates: Tensor<2>, mask: &Tensor<2>, ratio: f64) -> Tensor<2> {
    let [b, t] = candidates.dims();
    let dtype = candidates.dtype();
    let keys = Tensor::<2>::random(
        [b, t],
        burn::tensor::Distribution::Uniform(0.0, 1.0),
        &candidates.device(),
    )
    .cast(dtype);
    let keys = keys.mask_fill(candidates.clone().lower_equal_elem(0.0), f64::INFINITY);
    // The key of that rank from the smallest: the same rank of the negated keys.
    let threshold = kth_largest(keys.clone().neg(), mask, ratio).neg();
    keys.lower_equal(threshold).float().cast(dtype) * candidates
}
