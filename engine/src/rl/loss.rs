//! The GRPO-family policy loss: one config ([`LossConfig`], every knob in one place, TRL
//! `GRPOConfig` style) and one function ([`policy_loss`]) over `[B, T]` tensors.
//!
//! Notation: m = loss mask, |y_b| = Σ_t m, lr = lp − old, A = advantage, sg = detach.
//! ```text
//! ratio  token:    w_bt = exp(lr_bt)                                   (PPO / GRPO)
//!        sequence: w_b  = exp(Σ_t m·lr / max(|y_b|,1))  (gradient through the mean; GSPO, TRL)
//!        sequence_token: w_bt = exp(min(sg(s_b) + lp_bt − sg(lp_bt), 10)), s_b the masked mean
//!                  log-ratio (GSPO-token, verl `gspo`): the value of w_b, but each token's
//!                  gradient is w_b·∇lp_bt with its own advantage
//!        geo_mean: per-token lr clipped in log space, w_b = exp(Σ_t m·lr_c / (|y_b|+1e-8)),
//!                  L = mean_b(−Ā_b·w_b), Ā_b = Σ_t m·A/(|y_b|+1e-8)   (GMPO, verl geo_mean)
//! clipped surrogate (token / sequence):
//!        L = −min(min(w, δ)·A, clamp(w, 1−ε_low, 1+ε_high)·A)          (TRL grpo/dapo; δ optional)
//!        dual clip c (A < 0): L = min(L, −c·A)                         (verl vanilla)
//! total = agg(L·token_weights·entropy_mask) + β·agg(KL) − coef_H·H̄
//! ```
//! The KL term is `kl_penalty(lp, ref)` (times the ratio w if `kl_is_correction`, TRL's
//! `use_bias_correction_kl`). Aggregation modes are verl's `agg_loss` names; `row_convention`
//! picks how fully-masked rows and per-row token means are treated (TRL and verl differ).
//!
//! CPU f64 reference path: the same code on `Device::flex().autodiff()` with inputs created as
//! `(device, DType::F64)` (e.g. [`grid_tensor`]); the dtype survives every op and the backward
//! pass (tests: ≤ 1e-15 relative to TRL / verl in float64). Two Burn 0.22.1 traps are avoided
//! here: `Tensor<_, Bool>::float()` yields the device's default float dtype (f32), so masks are
//! cast back; autodiff `div_scalar` differentiates with an f32 reciprocal, so `mul_scalar(1/x)`
//! is used.
//!
//! Everything is tensor math in the dtype of `lp` (f32 on wgpu, f64 on `Device::flex()`), with
//! no readback: [`LossMetrics`] holds detached scalar tensors; read them with
//! [`LossMetrics::read`] (async, wasm-friendly) or [`LossMetrics::read_blocking`] (native).

use burn::tensor::{Bool, DType, Tensor};
use serde::{Deserialize, Serialize};

use super::error::RlError;
use super::kl::{KlPenalty, kl_penalty};
use super::surrogate::{self, Surrogate};

/// Which importance ratio multiplies the advantage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RatioLevel {
    /// Per-token ratio π/π_old (PPO, GRPO, DAPO).
    #[default]
    Token,
    /// exp of the masked mean log-ratio of the sequence (GSPO, Zheng et al. 2025; TRL
    /// `importance_sampling_level="sequence"`, gradient through the mean: every token of a
    /// sequence gets the sequence's mean advantage).
    Sequence,
    /// GSPO-token (the GSPO paper's token form; verl `gspo`): the sequence ratio's value with a
    /// per-token gradient, so token-level advantages (Reinforce++ with γ < 1, GTPO) stay per
    /// token. With one advantage per sequence it equals [`RatioLevel::Sequence`].
    SequenceToken,
    /// Geometric mean of per-token ratios clipped in log space, loss averaged over sequences
    /// (GMPO, Zhao et al. 2025; verl `geo_mean`, which ignores the aggregation mode).
    GeoMean,
}

/// How the per-token loss matrix becomes a scalar (verl `agg_loss` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    /// Σ m·L / N, N = Σ m, or the global token count given in the inputs: with micro-batches
    /// every token of the batch weighs the same (DAPO; TRL "dapo"; verl default).
    #[default]
    TokenMean,
    /// Each micro-batch's own token mean Σ m·L / Σ m, averaged over the micro-batches (TRL
    /// "bnpo": the Trainer divides each micro-batch loss by the accumulation steps). Equals
    /// `token-mean` with one micro-batch.
    MicroTokenMean,
    /// Σ m·L (verl token-sum).
    TokenSum,
    /// mean over sequences of the per-sequence token mean (GRPO paper; TRL "grpo").
    SeqMeanTokenMean,
    /// mean over sequences of the per-sequence token sum (TRL "luspo").
    SeqMeanTokenSum,
    /// seq-mean-token-sum ÷ `norm_divisor` (default: padded T; Dr.GRPO, TRL "dr_grpo" with
    /// max_completion_length).
    SeqMeanTokenSumNorm,
}

/// TRL and verl differ in how rows count in the sequence means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RowConvention {
    /// Every row counts in the sequence mean (÷B); per-row token mean ÷ max(|y|, 1) (TRL).
    #[default]
    Trl,
    /// Fully masked rows are left out of the sequence mean; per-row token mean ÷ (|y| + 1e-8)
    /// (verl `agg_loss`).
    Verl,
}

/// How the entropy bonus is averaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum EntropyAggregation {
    /// Σ H·m_eff / max(Σ m_eff, 1) with m_eff = mask·entropy_mask (TRL, any loss type).
    #[default]
    TokenMean,
    /// The loss's own aggregation over the mask (verl `ppo_loss`).
    Loss,
}

/// Every knob of the policy loss. Defaults are TRL 1.16 `GRPOConfig`'s (loss_type "dapo" =
/// token-mean, β = 0, ε = 0.2, token-level ratio, bias-corrected KL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// Ratio level: token | sequence (GSPO) | geo_mean (GMPO). TRL `importance_sampling_level`,
    /// verl `policy_loss.loss_mode` (vanilla / gspo / geo_mean).
    pub ratio_level: RatioLevel,
    /// Lower clip ε_low: ratio ≥ 1 − ε_low (PPO, Schulman 2017; TRL `epsilon`, verl
    /// `clip_ratio_low`; 0.2). For geo_mean: log-ratio ≥ −ε_low (GMPO uses 0.4).
    pub epsilon_low: f64,
    /// Upper clip ε_high: ratio ≤ 1 + ε_high (clip-higher, DAPO uses 0.28; TRL `epsilon_high`,
    /// verl `clip_ratio_high`). For geo_mean: log-ratio ≤ ε_high.
    pub epsilon_high: f64,
    /// Dual clip c > 1 for A < 0: L = min(L, −c·A) (Ye et al. 2019; verl vanilla `clip_ratio_c`
    /// = 3). None: off (TRL).
    pub dual_clip: Option<f64>,
    /// Upper truncation δ of the unclipped ratio, min(w, δ) (INTELLECT-2; TRL `delta`). None: off.
    pub delta: Option<f64>,
    /// Clamp of the log-ratio to ±value before exp (verl vanilla uses 20). None: off (TRL).
    pub log_ratio_clamp: Option<f64>,
    /// β of the KL term in the loss (GRPO; TRL `beta`, verl `kl_loss_coef`). 0: no KL, no ref.
    pub kl_coef: f64,
    /// KL estimator (TRL: k3 unclamped; verl `kl_loss_type` default low_var_kl).
    pub kl_estimator: KlPenalty,
    /// Multiply the KL by the importance ratio w (TRL `use_bias_correction_kl`, default true).
    pub kl_is_correction: bool,
    /// Entropy bonus coefficient: loss −= coef·H̄ (TRL `entropy_coef`, verl `entropy_coeff`; 0).
    pub entropy_coef: f64,
    /// How H̄ is averaged: token-mean (TRL) or the loss's aggregation (verl).
    pub entropy_aggregation: EntropyAggregation,
    /// Aggregation of the per-token loss (and of the KL term).
    pub aggregation: Aggregation,
    /// Divisor of seq-mean-token-sum-norm (verl `loss_scale_factor`, TRL max_completion_length).
    /// None: the padded T of the batch.
    pub norm_divisor: Option<f64>,
    /// Row conventions of the sequence means: trl | verl.
    pub row_convention: RowConvention,
    /// The per-token surrogate: PPO's clipped ratio (default), or CISPO, SAPO, VESPO, GPG,
    /// DRO, DPPO ([`Surrogate`]); `dual_clip` and `delta` apply to the clipped one only.
    pub surrogate: Surrogate,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            ratio_level: RatioLevel::Token,
            epsilon_low: 0.2,
            epsilon_high: 0.2,
            dual_clip: None,
            delta: None,
            log_ratio_clamp: None,
            kl_coef: 0.0,
            kl_estimator: KlPenalty::default(),
            kl_is_correction: true,
            entropy_coef: 0.0,
            entropy_aggregation: EntropyAggregation::TokenMean,
            aggregation: Aggregation::TokenMean,
            norm_divisor: None,
            row_convention: RowConvention::Trl,
            surrogate: Surrogate::Clip,
        }
    }
}

impl LossConfig {
    /// Checks ranges (ε ≥ 0, c > 1, δ > 0, divisor > 0, finite coefficients).
    pub fn validate(&self) -> Result<(), RlError> {
        let bad = |m: String| Err(RlError::Config(m));
        if !(self.epsilon_low >= 0.0 && self.epsilon_high >= 0.0) {
            return bad(format!(
                "epsilon_low / epsilon_high must be ≥ 0, got {} / {}",
                self.epsilon_low, self.epsilon_high
            ));
        }
        if let Some(c) = self.dual_clip
            && (c.is_nan() || c <= 1.0)
        {
            return bad(format!("dual_clip must be > 1, got {c}"));
        }
        if let Some(d) = self.delta
            && (d.is_nan() || d <= 0.0)
        {
            return bad(format!("delta must be > 0, got {d}"));
        }
        if let Some(c) = self.log_ratio_clamp
            && (c.is_nan() || c <= 0.0)
        {
            return bad(format!("log_ratio_clamp must be > 0, got {c}"));
        }
        if let Some(d) = self.norm_divisor
            && (d.is_nan() || d <= 0.0)
        {
            return bad(format!("norm_divisor must be > 0, got {d}"));
        }
        if !self.kl_coef.is_finite() || !self.entropy_coef.is_finite() {
            return bad("kl_coef and entropy_coef must be finite".into());
        }
        if let Err(e) = self.surrogate.validate() {
            return bad(format!("surrogate {e}"));
        }
        if self.ratio_level == RatioLevel::GeoMean && self.surrogate != Surrogate::Clip {
            return bad(
                "the geo_mean (GMPO) ratio is defined for the clipped surrogate only".into(),
            );
        }
        Ok(())
    }
}

/// The tensors of one loss evaluation. All `[B, T]` on one device and float dtype (the dtype of
/// `logp`), except `advantages` which may be `[B, 1]`.
#[derive(Debug, Clone)]
pub struct LossInputs {
    /// Current policy log-probs of the sampled tokens (differentiable).
    pub logp: Tensor<2>,
    /// Behaviour-policy log-probs; None: sg(logp) (ratio 1, gradient A·∇logp; TRL with μ = 1).
    pub old_logp: Option<Tensor<2>>,
    /// Reference-model log-probs (needed when `kl_coef != 0`).
    pub ref_logp: Option<Tensor<2>>,
    /// Advantages `[B, T]` or `[B, 1]`.
    pub advantages: Tensor<2>,
    /// Loss mask (1 = completion token that counts).
    pub mask: Tensor<2>,
    /// Per-token entropy (needed when `entropy_coef != 0`; also feeds the metrics).
    pub entropy: Option<Tensor<2>>,
    /// 0/1 mask multiplying the policy term and the entropy bonus's mask (TRL high-entropy mask,
    /// see `shaping::high_entropy_mask`).
    pub entropy_mask: Option<Tensor<2>>,
    /// Non-negative per-token weights multiplying the policy term (GTPO conflict weights).
    pub token_weights: Option<Tensor<2>>,
    /// Token count N of token-mean in place of Σ mask (TRL "dapo": active tokens of the whole
    /// generation batch; verl `batch_num_tokens`).
    pub global_tokens: Option<f64>,
}

impl LossInputs {
    /// Inputs with only the required tensors (old = sg(logp), no ref, entropy or weights).
    pub fn new(logp: Tensor<2>, advantages: Tensor<2>, mask: Tensor<2>) -> Self {
        Self {
            logp,
            old_logp: None,
            ref_logp: None,
            advantages,
            mask,
            entropy: None,
            entropy_mask: None,
            token_weights: None,
            global_tokens: None,
        }
    }
}

/// Detached scalar tensors `[1]` describing one loss evaluation.
#[derive(Debug, Clone)]
pub struct LossMetrics {
    /// The aggregated policy term (before KL and entropy).
    pub pg_loss: Tensor<1>,
    /// The aggregated KL term before β (0 without KL).
    pub kl_loss: Tensor<1>,
    /// H̄ of the entropy bonus (0 without entropy).
    pub entropy_loss: Tensor<1>,
    /// Fraction of valid tokens with ratio < 1 − ε_low and A < 0 (TRL clip_ratio/low_mean;
    /// geo_mean: log-ratio clipped with A < 0).
    pub clip_low_frac: Tensor<1>,
    /// Fraction of valid tokens with ratio > 1 + ε_high and A > 0.
    pub clip_high_frac: Tensor<1>,
    /// Fraction of valid tokens where the dual clip bound −c·A is active (A < 0).
    pub dual_clip_frac: Tensor<1>,
    /// Masked mean of the importance ratio that multiplies each token.
    pub ratio_mean: Tensor<1>,
    /// Masked mean of the per-token KL (0 without KL).
    pub kl_mean: Tensor<1>,
    /// Masked mean of the entropy (0 without entropy).
    pub entropy_mean: Tensor<1>,
}

/// Host values of [`LossMetrics`] (plus the loss).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LossStats {
    pub loss: f64,
    pub pg_loss: f64,
    pub kl_loss: f64,
    pub entropy_loss: f64,
    pub clip_low_frac: f64,
    pub clip_high_frac: f64,
    pub dual_clip_frac: f64,
    pub ratio_mean: f64,
    pub kl_mean: f64,
    pub entropy_mean: f64,
}

impl LossMetrics {
    /// All metrics in one `[9]` tensor (one readback), in field order.
    pub fn stacked(&self) -> Tensor<1> {
        Tensor::cat(
            vec![
                self.pg_loss.clone(),
                self.kl_loss.clone(),
                self.entropy_loss.clone(),
                self.clip_low_frac.clone(),
                self.clip_high_frac.clone(),
                self.dual_clip_frac.clone(),
                self.ratio_mean.clone(),
                self.kl_mean.clone(),
                self.entropy_mean.clone(),
            ],
            0,
        )
    }

    fn stats(loss: f64, v: &[f64]) -> LossStats {
        LossStats {
            loss,
            pg_loss: v[0],
            kl_loss: v[1],
            entropy_loss: v[2],
            clip_low_frac: v[3],
            clip_high_frac: v[4],
            dual_clip_frac: v[5],
            ratio_mean: v[6],
            kl_mean: v[7],
            entropy_mean: v[8],
        }
    }

    fn values(data: burn::tensor::TensorData) -> Result<Vec<f64>, RlError> {
        data.convert::<f64>()
            .try_into_vec::<f64>()
            .map_err(|e| RlError::Config(format!("reading metrics: {e:?}")))
    }

    /// Reads the metrics (and `loss`) back to the host without blocking (wasm-friendly).
    pub async fn read(&self, loss: &Tensor<1>) -> Result<LossStats, RlError> {
        let both = Tensor::cat(
            vec![
                loss.clone().detach().cast(self.pg_loss.dtype()),
                self.stacked(),
            ],
            0,
        );
        let data = both
            .into_data_async()
            .await
            .map_err(|e| RlError::Config(format!("reading metrics: {e:?}")))?;
        let v = Self::values(data)?;
        Ok(Self::stats(v[0], &v[1..]))
    }

    /// Blocking readback of the metrics (and `loss`), native only.
    #[cfg(not(target_family = "wasm"))]
    pub fn read_blocking(&self, loss: &Tensor<1>) -> Result<LossStats, RlError> {
        pollster::block_on(self.read(loss))
    }
}

/// The scalar loss `[1]` (differentiable w.r.t. `logp`) and its metrics.
#[derive(Debug, Clone)]
pub struct LossOutput {
    pub loss: Tensor<1>,
    pub metrics: LossMetrics,
}

/// Bool → float in the dtype of the computation.
pub(crate) fn fl(b: Tensor<2, Bool>, dtype: DType) -> Tensor<2> {
    b.float().cast(dtype)
}

/// Aggregates a per-token matrix `x` `[B, T]` with mask `m` to a scalar `[1]`.
pub fn aggregate(
    x: Tensor<2>,
    m: Tensor<2>,
    mode: Aggregation,
    rows: RowConvention,
    norm_divisor: Option<f64>,
    global_tokens: Option<f64>,
) -> Tensor<1> {
    let [_, t] = x.dims();
    // Scalar divisions are written as `mul_scalar(1/x)`: Burn 0.22.1's autodiff `div_scalar`
    // backward computes 1/x in f32 (burn-autodiff ops/tensor.rs:508), which would cap the f64
    // path's gradient at ~1e-8 relative accuracy.
    let masked = x * m.clone();
    let row_len = m.clone().sum_dim(1); // [B, 1]
    let keep = fl(row_len.clone().greater_elem(0.0), row_len.dtype());
    let seq_mean = |per_row: Tensor<2>| -> Tensor<1> {
        match rows {
            RowConvention::Trl => per_row.mean(),
            RowConvention::Verl => {
                (per_row * keep.clone()).sum() / keep.clone().sum().clamp_min(1.0)
            }
        }
    };
    match mode {
        Aggregation::TokenMean => match global_tokens {
            Some(n) => masked.sum().mul_scalar(1.0 / n.max(1.0)),
            None => masked.sum() / m.sum().clamp_min(1.0),
        },
        Aggregation::MicroTokenMean => masked.sum() / m.sum().clamp_min(1.0),
        Aggregation::TokenSum => masked.sum(),
        Aggregation::SeqMeanTokenMean => {
            let den = match rows {
                RowConvention::Trl => row_len.clamp_min(1.0),
                RowConvention::Verl => row_len.add_scalar(1e-8),
            };
            seq_mean(masked.sum_dim(1) / den)
        }
        Aggregation::SeqMeanTokenSum => seq_mean(masked.sum_dim(1)),
        Aggregation::SeqMeanTokenSumNorm => {
            seq_mean(masked.sum_dim(1)).mul_scalar(1.0 / norm_divisor.unwrap_or(t as f64))
        }
    }
}

fn masked_mean(x: Tensor<2>, m: Tensor<2>) -> Tensor<1> {
    (x * m.clone()).sum() / m.sum().clamp_min(1.0)
}

fn check_same(what: &'static str, x: &Tensor<2>, dims: [usize; 2]) -> Result<(), RlError> {
    if x.dims() != dims {
        return Err(RlError::Shape {
            what,
            expected: dims.to_vec(),
            got: x.dims().to_vec(),
        });
    }
    Ok(())
}

/// Computes the loss of `cfg` on `inp`. No readback happens here.
pub fn policy_loss(cfg: &LossConfig, inp: LossInputs) -> Result<LossOutput, RlError> {
    cfg.validate()?;
    check_inputs(cfg, &inp)?;
    let dtype = inp.logp.dtype();
    let dims = inp.logp.dims();
    let m = inp.mask.clone().detach().cast(dtype);
    let adv = inp.advantages.clone().detach().cast(dtype).expand(dims);
    let old = match &inp.old_logp {
        Some(o) => o.clone().detach().cast(dtype),
        None => inp.logp.clone().detach(),
    };
    let mut lr = inp.logp.clone() - old.clone();
    if let Some(c) = cfg.log_ratio_clamp {
        lr = lr.clamp(-c, c);
    }
    let p = Prepared {
        a_neg: fl(adv.clone().lower_elem(0.0), dtype),
        a_pos: fl(adv.clone().greater_elem(0.0), dtype),
        lp: inp.logp.clone(),
        old,
        lr,
        adv,
        m,
    };
    let term = match cfg.ratio_level {
        RatioLevel::GeoMean => geo_mean_term(cfg, &p),
        _ if cfg.surrogate == Surrogate::Clip => clipped_term(cfg, &p, &inp),
        _ => surrogate_term(cfg, &p, &inp),
    };
    let mut loss = term.pg.clone();
    let (kl_loss, kl_mean) = match kl_term(cfg, &p, &inp, &term.ratio) {
        Some((weighted, kl_loss, kl_mean)) => {
            loss = loss + weighted;
            (kl_loss, kl_mean)
        }
        None => (p.zero(), p.zero()),
    };
    let (entropy_loss, entropy_mean) = match entropy_term(cfg, &p, &inp) {
        Some((h_bar, entropy_mean)) => {
            if cfg.entropy_coef != 0.0 {
                loss = loss - h_bar.clone().mul_scalar(cfg.entropy_coef);
            }
            (h_bar.detach(), entropy_mean)
        }
        None => (p.zero(), p.zero()),
    };
    let m = &p.m;
    let metrics = LossMetrics {
        pg_loss: term.pg.detach(),
        kl_loss,
        entropy_loss,
        clip_low_frac: masked_mean(term.clip_low.detach(), m.clone()),
        clip_high_frac: masked_mean(term.clip_high.detach(), m.clone()),
        dual_clip_frac: term.dual,
        ratio_mean: masked_mean(term.ratio.detach(), m.clone()),
        kl_mean,
        entropy_mean,
    };
    Ok(LossOutput { loss, metrics })
}

/// Shapes and the inputs each option needs.
fn check_inputs(cfg: &LossConfig, inp: &LossInputs) -> Result<(), RlError> {
    let dims = inp.logp.dims();
    let [b, t] = dims;
    if b == 0 || t == 0 {
        return Err(RlError::Empty("log-probs have no rows or no positions"));
    }
    check_same("mask", &inp.mask, dims)?;
    for (what, x) in [
        ("old log-probs", &inp.old_logp),
        ("reference log-probs", &inp.ref_logp),
        ("entropy", &inp.entropy),
        ("entropy mask", &inp.entropy_mask),
        ("token weights", &inp.token_weights),
    ] {
        if let Some(x) = x {
            check_same(what, x, dims)?;
        }
    }
    let ad = inp.advantages.dims();
    if ad != dims && ad != [b, 1] {
        return Err(RlError::Shape {
            what: "advantages ([B, T] or [B, 1])",
            expected: dims.to_vec(),
            got: ad.to_vec(),
        });
    }
    if cfg.kl_coef != 0.0 && inp.ref_logp.is_none() {
        return Err(RlError::Config(
            "kl_coef != 0 needs reference log-probs".into(),
        ));
    }
    if cfg.entropy_coef != 0.0 && inp.entropy.is_none() {
        return Err(RlError::Config(
            "entropy_coef != 0 needs per-token entropy".into(),
        ));
    }
    if cfg.ratio_level == RatioLevel::GeoMean
        && (inp.token_weights.is_some() || inp.entropy_mask.is_some())
    {
        return Err(RlError::Config(
            "token weights / entropy masks are not defined for the geo_mean (GMPO) ratio".into(),
        ));
    }
    Ok(())
}

/// The loss's `[B, T]` inputs in one dtype: lp (with gradient), old (detached), the token
/// log-ratio lr (clamped as configured), advantages, mask, and A < 0 / A > 0 indicators.
pub(crate) struct Prepared {
    pub(crate) lp: Tensor<2>,
    pub(crate) old: Tensor<2>,
    pub(crate) lr: Tensor<2>,
    pub(crate) adv: Tensor<2>,
    pub(crate) m: Tensor<2>,
    pub(crate) a_neg: Tensor<2>,
    pub(crate) a_pos: Tensor<2>,
}

impl Prepared {
    /// A detached scalar 0 `[1]`.
    fn zero(&self) -> Tensor<1> {
        self.m.clone().sum().mul_scalar(0.0).detach()
    }

    /// `agg(x)` with the config's aggregation over the mask.
    fn aggregate(&self, cfg: &LossConfig, x: Tensor<2>, global_tokens: Option<f64>) -> Tensor<1> {
        aggregate(
            x,
            self.m.clone(),
            cfg.aggregation,
            cfg.row_convention,
            cfg.norm_divisor,
            global_tokens,
        )
    }

    /// The importance ratio w `[B, T]` at the token, sequence or GSPO-token level.
    fn ratio(&self, level: RatioLevel) -> Tensor<2> {
        let dims = self.lp.dims();
        let m = &self.m;
        let seq_mean =
            |lr: Tensor<2>| (lr * m.clone()).sum_dim(1) / m.clone().sum_dim(1).clamp_min(1.0);
        let log_w = match level {
            RatioLevel::Token => self.lr.clone(),
            RatioLevel::Sequence => seq_mean(self.lr.clone()).expand(dims),
            _ => (seq_mean(self.lr.clone()).detach().expand(dims) + self.lp.clone()
                - self.lp.clone().detach())
            .clamp_max(10.0),
        };
        log_w.exp()
    }
}

/// The policy term: aggregated loss, the ratio w (for the KL correction and the metrics), the
/// clipped-low / clipped-high token indicators and the dual-clip fraction.
struct PolicyTerm {
    pg: Tensor<1>,
    ratio: Tensor<2>,
    clip_low: Tensor<2>,
    clip_high: Tensor<2>,
    dual: Tensor<1>,
}

/// `ptl` times the entropy mask and the token weights, aggregated.
fn weighted_pg(cfg: &LossConfig, p: &Prepared, inp: &LossInputs, ptl: Tensor<2>) -> Tensor<1> {
    let dtype = ptl.dtype();
    let mut ptl = ptl;
    for w in [&inp.entropy_mask, &inp.token_weights]
        .into_iter()
        .flatten()
    {
        ptl = ptl * w.clone().detach().cast(dtype);
    }
    p.aggregate(cfg, ptl, inp.global_tokens)
}

/// PPO's clipped surrogate, with the optional δ truncation and dual clip.
fn clipped_term(cfg: &LossConfig, p: &Prepared, inp: &LossInputs) -> PolicyTerm {
    let dtype = p.lp.dtype();
    let coef1 = p.ratio(cfg.ratio_level);
    let coef2 = coef1
        .clone()
        .clamp(1.0 - cfg.epsilon_low, 1.0 + cfg.epsilon_high);
    let unclipped = match cfg.delta {
        Some(d) => coef1.clone().clamp_max(d),
        None => coef1.clone(),
    };
    let adv = &p.adv;
    let mut ptl = (unclipped * adv.clone())
        .min_pair(coef2 * adv.clone())
        .neg();
    let mut dual = p.zero();
    if let Some(c) = cfg.dual_clip {
        let bound = adv.clone().mul_scalar(-c);
        let active = fl(ptl.clone().greater(bound.clone()), dtype) * p.a_neg.clone();
        dual = masked_mean(active, p.m.clone()).detach();
        ptl = ptl
            .clone()
            .min_pair(bound)
            .mask_where(adv.clone().greater_equal_elem(0.0), ptl);
    }
    let clip_low = fl(coef1.clone().lower_elem(1.0 - cfg.epsilon_low), dtype) * p.a_neg.clone();
    let clip_high = fl(coef1.clone().greater_elem(1.0 + cfg.epsilon_high), dtype) * p.a_pos.clone();
    PolicyTerm {
        pg: weighted_pg(cfg, p, inp, ptl),
        ratio: coef1,
        clip_low,
        clip_high,
        dual,
    }
}

/// A non-clip surrogate ([`Surrogate`]); its clip indicator split by the advantage's sign.
fn surrogate_term(cfg: &LossConfig, p: &Prepared, inp: &LossInputs) -> PolicyTerm {
    let w = p.ratio(cfg.ratio_level);
    let (ptl, clipped) = surrogate::per_token(
        &cfg.surrogate,
        p,
        w.clone(),
        cfg.epsilon_low,
        cfg.epsilon_high,
    );
    PolicyTerm {
        pg: weighted_pg(cfg, p, inp, ptl),
        ratio: w,
        clip_low: clipped.clone() * p.a_neg.clone(),
        clip_high: clipped * p.a_pos.clone(),
        dual: p.zero(),
    }
}

/// GMPO: the geometric mean of per-token ratios clipped in log space, averaged over
/// sequences (verl `geo_mean`, which ignores the aggregation mode).
fn geo_mean_term(cfg: &LossConfig, p: &Prepared) -> PolicyTerm {
    let dims = p.lp.dims();
    let dtype = p.lp.dtype();
    let (lr, m, adv) = (&p.lr, &p.m, &p.adv);
    let sgn = adv.clone().sign();
    let lr_c = lr.clone().clamp(-cfg.epsilon_low, cfg.epsilon_high);
    let lr_min = (sgn.clone() * lr.clone()).min_pair(sgn.clone() * lr_c.clone()) * sgn;
    let len = m.clone().sum_dim(1).add_scalar(1e-8);
    let ratio_b = ((lr_min * m.clone()).sum_dim(1) / len.clone()).exp(); // [B, 1]
    let adv_b = (adv.clone() * m.clone()).sum_dim(1) / len;
    let clipped = fl(lr.clone().not_equal(lr_c), dtype);
    PolicyTerm {
        pg: (adv_b * ratio_b.clone()).neg().mean(),
        ratio: ratio_b.expand(dims),
        clip_low: clipped.clone() * p.a_neg.clone(),
        clip_high: clipped * p.a_pos.clone(),
        dual: p.zero(),
    }
}

/// The KL term when configured: (β·agg(KL) with gradient, agg(KL) detached, masked mean KL).
fn kl_term(
    cfg: &LossConfig,
    p: &Prepared,
    inp: &LossInputs,
    ratio: &Tensor<2>,
) -> Option<(Tensor<1>, Tensor<1>, Tensor<1>)> {
    let ref_lp = inp.ref_logp.as_ref().filter(|_| cfg.kl_coef != 0.0)?;
    let dtype = p.lp.dtype();
    let mut kl = kl_penalty(p.lp.clone(), ref_lp.clone().cast(dtype), cfg.kl_estimator);
    if cfg.kl_is_correction {
        kl = kl * ratio.clone();
    }
    let kl_mean = masked_mean(kl.clone().detach(), p.m.clone());
    let kl_loss = p.aggregate(cfg, kl, inp.global_tokens);
    Some((
        kl_loss.clone().mul_scalar(cfg.kl_coef),
        kl_loss.detach(),
        kl_mean,
    ))
}

/// The entropy bonus's H̄ (with gradient) and the masked mean entropy, when entropy is given.
fn entropy_term(
    cfg: &LossConfig,
    p: &Prepared,
    inp: &LossInputs,
) -> Option<(Tensor<1>, Tensor<1>)> {
    let dtype = p.lp.dtype();
    let h = inp.entropy.as_ref()?.clone().cast(dtype);
    let entropy_mean = masked_mean(h.clone().detach(), p.m.clone());
    let h_bar = match cfg.entropy_aggregation {
        EntropyAggregation::TokenMean => {
            let m_eff = match &inp.entropy_mask {
                Some(w) => p.m.clone() * w.clone().detach().cast(dtype),
                None => p.m.clone(),
            };
            masked_mean(h, m_eff)
        }
        EntropyAggregation::Loss => p.aggregate(cfg, h, inp.global_tokens),
    };
    Some((h_bar, entropy_mean))
}

/// A `[B, T]` host grid as a tensor on `device` in `dtype` (e.g. advantages from
/// `advantage::token_advantages`, masks from `shaping`).
pub fn grid_tensor(
    rows: &[Vec<f64>],
    device: &burn::tensor::Device,
    dtype: DType,
) -> Result<Tensor<2>, RlError> {
    let b = rows.len();
    if b == 0 {
        return Err(RlError::Empty("grid has no rows"));
    }
    let t = rows[0].len();
    super::error::check_grid("grid", rows, b, t)?;
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_data(
        burn::tensor::TensorData::new(flat, [b, t]),
        (device, dtype),
    ))
}
