//! NOVER: reasoning-perplexity reward (Liu et al. 2025, "NOVER: Incentive Training for
//! Language Models via Verifier-Free Reinforcement Learning").
//!
//! A completion is `<think>t</think><answer>a</answer>`; the dataset supplies a reference
//! answer g. A proxy model π_p (a lagged copy of the policy, [`ProxyModel`]) scores g after
//! the prompt p and the generated reasoning t; the reasoning perplexity is
//! ```text
//! P(p, t, g) = exp( −Σ_{i=1..|g|} log π_p(g_i | p, t, g_<i) / (|g| · N(|t|)) )
//! N(|t|)     = max(1, 1 + log_b |t|)            |t| = reasoning length in tokens
//! ```
//! with b = e as the paper writes it ([`NoverConfig::log_base`]; the authors' released code
//! uses b = 10). Lower P = reasoning that makes the reference more predictable = better.
//!
//! Rewards within one group (the G completions of a prompt; only well-formatted ones with a
//! reference are "valid", n = their number):
//! ```text
//! R_f = 1 if the completion is exactly <think>…</think><answer>…</answer>, else 0
//! R_r = (n − #{j valid: P_j < P_i}) / n              rank reward: best P → 1, worst → 1/n
//! R_e = #{j ≠ i valid: P_i < P_j and |t_i| < |t_j|} / (n − 1)   (EfficiencyRule::Pairwise)
//! R   = w_f·R_f + 1[R_f = 1]·(w_r·R_r + w_e·R_e)      (paper; weights 1, 1, 1 in its config)
//! ```
//! R_r equals the released code's `(n − rank)/n` when there are no ties (tied P share the
//! better rank); R_e is the released code's "shorter and lower perplexity than the other"
//! pairwise fraction (0 when n < 2). [`EfficiencyRule::MedianGate`] is the simpler reading
//! "shorter reasoning that still beats the group's median P":
//! `R_e = 1[P_i < median P] · #{j ≠ i valid: |t_j| > |t_i|} / (n − 1)`.
//!
//! Scored sequence: `context = prompt ++ completion-before-<answer> ++ "<answer>"`,
//! `target = g ++ "</answer>"` (see [`AnswerTemplate`]); |t| counts the tokens of the
//! reasoning between the think tags.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};

use super::likelihood::{AnswerTemplate, TargetLogProb, encode, prompt_ids, target_logprobs_async};
use super::rule::split_think_answer;
use super::{Reward, RewardError, RewardFuture, Sample, Scores};
use crate::model::hybrid::HybridModel;
use crate::model::tokenizer::Tokenizer;

/// `N(|t|) = max(1, 1 + log_b |t|)` (1 for empty reasoning).
pub fn length_norm(reasoning_len: usize, log_base: f64) -> f64 {
    if reasoning_len == 0 {
        return 1.0;
    }
    (1.0 + (reasoning_len as f64).ln() / log_base.ln()).max(1.0)
}

/// `P = exp(−Σ log π(g_i | …) / (|g| · N(|t|)))` (`None` for an empty reference).
pub fn reasoning_perplexity(lp: TargetLogProb, reasoning_len: usize, log_base: f64) -> Option<f64> {
    (lp.len > 0).then(|| (-lp.sum / (lp.len as f64 * length_norm(reasoning_len, log_base))).exp())
}

/// Rank rewards of one group: `(n − #{j: P_j < P_i}) / n` for valid entries, 0 for `None`.
pub fn rank_rewards(perplexities: &[Option<f64>]) -> Vec<f64> {
    let valid: Vec<f64> = perplexities.iter().flatten().copied().collect();
    let n = valid.len() as f64;
    perplexities
        .iter()
        .map(|p| match p {
            Some(p) => (n - valid.iter().filter(|&&q| q < *p).count() as f64) / n,
            None => 0.0,
        })
        .collect()
}

/// How the efficiency reward is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EfficiencyRule {
    /// Fraction of the other valid samples this one beats in both P and reasoning length
    /// (the authors' code).
    Pairwise,
    /// Below the group's median P, the fraction of other valid samples with longer
    /// reasoning; 0 otherwise.
    MedianGate,
}

/// Efficiency rewards of one group (0 for `None` entries and for groups with < 2 valid).
pub fn efficiency_rewards(
    perplexities: &[Option<f64>],
    reasoning_lens: &[usize],
    rule: EfficiencyRule,
) -> Vec<f64> {
    let valid: Vec<(f64, usize)> = perplexities
        .iter()
        .zip(reasoning_lens)
        .filter_map(|(p, &l)| p.map(|p| (p, l)))
        .collect();
    let n = valid.len();
    if n < 2 {
        return vec![0.0; perplexities.len()];
    }
    let median = {
        let mut ps: Vec<f64> = valid.iter().map(|v| v.0).collect();
        ps.sort_by(f64::total_cmp);
        if n % 2 == 1 {
            ps[n / 2]
        } else {
            0.5 * (ps[n / 2 - 1] + ps[n / 2])
        }
    };
    perplexities
        .iter()
        .zip(reasoning_lens)
        .map(|(p, &l)| {
            let Some(p) = *p else { return 0.0 };
            // `valid` includes this sample itself, which never satisfies a strict comparison.
            let wins = match rule {
                EfficiencyRule::Pairwise => valid.iter().filter(|&&(q, m)| p < q && l < m).count(),
                EfficiencyRule::MedianGate => {
                    if p < median {
                        valid.iter().filter(|&&(_, m)| m > l).count()
                    } else {
                        0
                    }
                }
            };
            wins as f64 / (n - 1) as f64
        })
        .collect()
}

/// NOVER's settings.
#[derive(Debug, Clone)]
pub struct NoverConfig {
    pub template: AnswerTemplate,
    /// The prompt already opened `<think>` (the completion starts inside the reasoning).
    pub think_open_in_prompt: bool,
    pub w_format: f64,
    pub w_reasoning: f64,
    pub w_efficiency: f64,
    /// Base b of the logarithm in N(|t|): e (paper) or 10 (released code).
    pub log_base: f64,
    pub efficiency: EfficiencyRule,
    /// Softmax temperature of the scoring pass.
    pub temperature: f32,
    /// Rows per forward pass (0 = all at once).
    pub max_batch: usize,
}

impl Default for NoverConfig {
    fn default() -> Self {
        NoverConfig {
            template: AnswerTemplate::default(),
            think_open_in_prompt: false,
            w_format: 1.0,
            w_reasoning: 1.0,
            w_efficiency: 1.0,
            log_base: std::f64::consts::E,
            efficiency: EfficiencyRule::Pairwise,
            temperature: 1.0,
            max_batch: 16,
        }
    }
}

/// Every term of one sample's NOVER reward.
#[derive(Debug, Clone, PartialEq)]
pub struct NoverDetail {
    /// R_f ∈ {0, 1}.
    pub format: f64,
    /// Reasoning length |t| in tokens (well-formatted samples).
    pub reasoning_len: Option<usize>,
    /// Σ log π(g | p, t) and |g| (valid samples).
    pub logprob: Option<TargetLogProb>,
    /// P (valid samples).
    pub perplexity: Option<f64>,
    /// R_r.
    pub reasoning: f64,
    /// R_e.
    pub efficiency: f64,
    /// R; `None` when the sample has no reference.
    pub total: Option<f64>,
}

/// The NOVER reward over a proxy model (normally [`ProxyModel::model`]).
pub struct NoverReward<'a> {
    pub model: &'a HybridModel,
    pub tokenizer: &'a Tokenizer,
    pub device: Device,
    pub config: NoverConfig,
}

impl<'a> NoverReward<'a> {
    pub fn new(
        model: &'a HybridModel,
        tokenizer: &'a Tokenizer,
        device: &Device,
        config: NoverConfig,
    ) -> Self {
        NoverReward {
            model,
            tokenizer,
            device: device.clone(),
            config,
        }
    }

    /// A proxy's model on the proxy's device.
    pub fn from_proxy(
        proxy: &'a ProxyModel,
        tokenizer: &'a Tokenizer,
        config: NoverConfig,
    ) -> Self {
        Self::new(proxy.model(), tokenizer, proxy.device(), config)
    }

    /// Every term of every sample (groups by `Sample::group`).
    pub async fn details_async(&self, samples: &[Sample]) -> Result<Vec<NoverDetail>, RewardError> {
        let cfg = &self.config;
        let name = "nover";
        let mut pairs = Vec::new();
        let mut slot = vec![None; samples.len()];
        let mut lens = vec![None; samples.len()];
        let mut format = vec![0.0; samples.len()];
        for (i, s) in samples.iter().enumerate() {
            let Some((reasoning, answer)) =
                split_think_answer(&s.completion, cfg.think_open_in_prompt)
            else {
                continue;
            };
            if answer.is_empty() {
                continue;
            }
            format[i] = 1.0;
            lens[i] = Some(encode(self.tokenizer, reasoning, name)?.len());
            let Some(reference) = s.reference.as_deref() else {
                continue;
            };
            let mut context = prompt_ids(s, self.tokenizer, name)?;
            context.extend(encode(
                self.tokenizer,
                &cfg.template.context_tail(&s.completion),
                name,
            )?);
            let target = encode(self.tokenizer, &cfg.template.target(reference), name)?;
            slot[i] = Some(pairs.len());
            pairs.push((context, target));
        }
        let lps = if pairs.is_empty() {
            Vec::new()
        } else {
            target_logprobs_async(
                self.model,
                &pairs,
                cfg.temperature,
                cfg.max_batch,
                &self.device,
            )
            .await
            .map_err(|message| RewardError::Model {
                reward: name.into(),
                message,
            })?
        };
        let logprob: Vec<Option<TargetLogProb>> = slot.iter().map(|s| s.map(|k| lps[k])).collect();
        let ppl: Vec<Option<f64>> = logprob
            .iter()
            .zip(&lens)
            .map(|(lp, l)| lp.and_then(|lp| reasoning_perplexity(lp, l.unwrap_or(0), cfg.log_base)))
            .collect();
        let mut reasoning = vec![0.0; samples.len()];
        let mut efficiency = vec![0.0; samples.len()];
        let mut groups: Vec<usize> = samples.iter().map(|s| s.group).collect();
        groups.sort_unstable();
        groups.dedup();
        for g in groups {
            let idx: Vec<usize> = (0..samples.len())
                .filter(|&i| samples[i].group == g)
                .collect();
            let p: Vec<Option<f64>> = idx.iter().map(|&i| ppl[i]).collect();
            let l: Vec<usize> = idx.iter().map(|&i| lens[i].unwrap_or(0)).collect();
            let r = rank_rewards(&p);
            let e = efficiency_rewards(&p, &l, cfg.efficiency);
            for (k, &i) in idx.iter().enumerate() {
                reasoning[i] = r[k];
                efficiency[i] = e[k];
            }
        }
        Ok((0..samples.len())
            .map(|i| {
                let total = samples[i].reference.as_ref().map(|_| {
                    cfg.w_format * format[i]
                        + if format[i] == 1.0 {
                            cfg.w_reasoning * reasoning[i] + cfg.w_efficiency * efficiency[i]
                        } else {
                            0.0
                        }
                });
                NoverDetail {
                    format: format[i],
                    reasoning_len: lens[i],
                    logprob: logprob[i],
                    perplexity: ppl[i],
                    reasoning: reasoning[i],
                    efficiency: efficiency[i],
                    total,
                }
            })
            .collect())
    }

    /// The total rewards R of `samples`.
    pub async fn score_async(&self, samples: &[Sample]) -> Result<Scores, RewardError> {
        Ok(self
            .details_async(samples)
            .await?
            .into_iter()
            .map(|d| d.total)
            .collect())
    }

    /// Blocking [`Self::details_async`] (native only).
    #[cfg(not(target_family = "wasm"))]
    pub fn details(&self, samples: &[Sample]) -> Result<Vec<NoverDetail>, RewardError> {
        pollster::block_on(self.details_async(samples))
    }
}

impl Reward for NoverReward<'_> {
    fn name(&self) -> &str {
        "nover"
    }
    fn score<'s>(&'s self, samples: &'s [Sample]) -> RewardFuture<'s> {
        Box::pin(self.score_async(samples))
    }
}

// ---------------------------------------------------------------------------------------
// Proxy model

/// A lagged copy of the policy used to compute rewards (NOVER's proxy π_p): a detached
/// snapshot (no autodiff) refreshed every `sync_every` training steps. With mixup α < 1 a
/// sync moves the proxy part of the way, `θ_p ← α·θ_policy + (1 − α)·θ_p` (the released
/// code syncs every 100 steps with α = 0.6, TRL's `ref_model_mixup_alpha`); α = 1 copies.
#[derive(Debug, Clone)]
pub struct ProxyModel {
    model: HybridModel,
    device: Device,
    sync_every: usize,
    alpha: f64,
    steps: usize,
    syncs: usize,
}

impl ProxyModel {
    /// A snapshot of `policy`, re-synced every `sync_every` steps (0 = never after this).
    pub fn new(policy: &HybridModel, sync_every: usize) -> Self {
        let model = policy.valid();
        let device = model.norm.val().device();
        ProxyModel {
            model,
            device,
            sync_every,
            alpha: 1.0,
            steps: 0,
            syncs: 0,
        }
    }

    /// Sets the mixup α ∈ (0, 1] used by later syncs.
    pub fn with_mixup(mut self, alpha: f64) -> Self {
        self.alpha = alpha.clamp(f64::MIN_POSITIVE, 1.0);
        self
    }

    /// The proxy's weights.
    pub fn model(&self) -> &HybridModel {
        &self.model
    }

    /// The device the proxy's weights live on (the policy's, without autodiff).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Training steps counted so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Syncs done so far (the initial snapshot excluded).
    pub fn syncs(&self) -> usize {
        self.syncs
    }

    /// Syncs with `policy` now (copy, or mixup when α < 1).
    pub fn sync(&mut self, policy: &HybridModel) {
        let snapshot = policy.valid();
        self.model = if self.alpha >= 1.0 {
            snapshot
        } else {
            let mut collect = CollectParams(Vec::new());
            snapshot.visit(&mut collect);
            let mut mix = MixParams {
                source: collect.0.into_iter(),
                alpha: self.alpha,
            };
            self.model.clone().map(&mut mix)
        };
        self.syncs += 1;
    }

    /// Counts one training step (call after the optimizer step); syncs when the count
    /// reaches a multiple of `sync_every`. Returns whether it synced.
    pub fn step(&mut self, policy: &HybridModel) -> bool {
        self.steps += 1;
        let due = self.sync_every > 0 && self.steps.is_multiple_of(self.sync_every);
        if due {
            self.sync(policy);
        }
        due
    }
}

/// Flattened float parameters, in visiting order.
struct CollectParams(Vec<Tensor<1>>);

impl ModuleVisitor for CollectParams {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let v = param.val();
        let n = v.shape().num_elements();
        self.0.push(v.reshape([n]));
    }
}

/// `p ← α·source + (1 − α)·p`, parameters taken in visiting order.
struct MixParams {
    source: std::vec::IntoIter<Tensor<1>>,
    alpha: f64,
}

impl ModuleMapper for MixParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(src) = self.source.next() else {
            return param;
        };
        let alpha = self.alpha;
        param.map(|t| {
            let dims = t.dims();
            t.mul_scalar(1.0 - alpha) + src.reshape(dims).mul_scalar(alpha)
        })
    }
}
