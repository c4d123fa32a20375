//! One GRPO-family iteration, top to bottom:
//!
//! ```text
//! prompts ──rollout──▶ G completions each (one prefill per prompt, forked cache, sampled)
//!         ──rewards──▶ scores (+ DAPO overlong shaping) ──dynamic sampling──▶ kept groups
//!         ──advantages (estimator; GTPO token rewards; KL in reward)──▶ A[B,T]
//!         ──μ passes × micro-batches: logp (+entropy) → policy_loss → backward──▶ AdamW step
//! ```
//! Old log-probs are frozen at rollout time when μ > 1 (or when the KL-in-reward or GTPO
//! entropy needs the behaviour policy); with μ = 1 the loss uses sg(logp), as TRL does. The
//! reference ([`Reference`]: a frozen model, or the policy itself with its LoRA adapters
//! switched off) is only run when the objective uses a KL term. LoRA dropout applies in the
//! loss passes only; rollouts, old and reference log-probs use the adapters without it.
//! Everything reads back asynchronously, so the same code runs in a browser.

use burn::module::Module;
use burn::tensor::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::advantage::{
    Estimator, Rewards, remax_advantages, sequence_advantages, token_advantages,
};
use super::kl::{KlController, apply_kl_in_reward};
use super::loss::{Aggregation, LossConfig, LossInputs, LossStats, grid_tensor, policy_loss};
use super::presets::{KlPlacement, Preset, RlObjective};
use super::rewards::{Sample, WeightedRewards};
use super::shaping::{
    conflict_token_weights, dynamic_sampling, gtpo_token_advantages, gtpo_token_rewards,
    high_entropy_mask, mask_truncated, overlong_penalty,
};
use crate::model::HybridModel;
use crate::model::adapter;
use crate::model::generate::{GenerateOptions, Sampling, generate_groups_async};
use crate::model::score::{Deferred, Loss, TokenScores, score_completions};
use crate::nn::AdapterMode;
use crate::train::Stage;
use crate::train::optim::{AdamW, Grads, StepReport};

/// Errors of an RL step (each names its stage).
#[derive(Debug, thiserror::Error)]
pub enum RlStepError {
    #[error("RL config: {0}")]
    Config(String),
    #[error("rollout: {0}")]
    Rollout(String),
    #[error("reward: {0}")]
    Reward(String),
    #[error("objective: {0}")]
    Objective(#[from] super::error::RlError),
    #[error("model: {0}")]
    Model(String),
    #[error("optimizer: {0}")]
    Optim(String),
}

/// Sampling and optimisation settings of the RL loop (the loss itself is `objective`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RlConfig {
    /// Named recipe the objective starts from (`grpo`, `dr_grpo`, `dapo`, `gspo`, `gmpo`,
    /// `reinforce_pp`, `reinforce_pp_baseline`, `rloo`, `gtpo`, `remax`, `gpg`, `pass_at_k`).
    pub preset: Option<Preset>,
    /// G: completions per prompt (TRL `num_generations`).
    pub group_size: usize,
    /// Prompts per step (the batch is prompts × G completions).
    pub prompts_per_step: usize,
    /// Longest completion (TRL `max_completion_length`).
    pub max_new_tokens: usize,
    /// Sampling temperature of rollouts; log-probs use the same temperature (TRL).
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    /// μ: optimisation passes over each batch (TRL `num_iterations`).
    pub num_iterations: usize,
    /// Rows per forward/backward (gradients accumulated over micro-batches; 0 = whole batch).
    pub micro_batch_rows: usize,
    /// Extra rollout rounds DAPO dynamic sampling may draw to refill dropped groups.
    pub max_refills: usize,
}

impl Default for RlConfig {
    fn default() -> Self {
        Self {
            preset: None,
            group_size: 8,
            prompts_per_step: 8,
            max_new_tokens: 64,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            num_iterations: 1,
            micro_batch_rows: 0,
            max_refills: 2,
        }
    }
}

impl RlConfig {
    /// Checks the settings (and that the preset, if any, exists).
    pub fn validate(&self) -> Result<(), RlStepError> {
        let bad = |m: &str| Err(RlStepError::Config(m.into()));
        if self.group_size < 2 {
            return bad("group_size must be at least 2 (advantages compare completions)");
        }
        if self.prompts_per_step == 0 || self.max_new_tokens == 0 || self.num_iterations == 0 {
            return bad("prompts_per_step, max_new_tokens and num_iterations must be positive");
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad("temperature must be positive (rollouts sample)");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(RlStepError::Config(format!(
                "top_p = {}: must be in (0, 1]",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// One prompt of the RL data.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub text: String,
    pub ids: Vec<u32>,
    /// Ground truth for verifiers (optional).
    pub reference: Option<String>,
}

/// Completions of a batch of prompts, group-major (row `g·G + j` = completion j of prompt g).
#[derive(Debug, Clone)]
pub struct Rollout {
    pub prompts: Vec<Prompt>,
    pub completions: Vec<Vec<u32>>,
    pub texts: Vec<String>,
    /// Group (prompt) index of each row.
    pub groups: Vec<usize>,
    /// The row ended with an EOS token (not truncated).
    pub ended: Vec<bool>,
    /// Reward names and `per_reward[f][row]` (None = not applicable).
    pub reward_names: Vec<String>,
    pub per_reward: Vec<Vec<Option<f64>>>,
    /// Weighted total per row (NaN when no reward applied), before shaping.
    pub scores: Vec<f64>,
    /// ReMax: per row, the reward of the greedy completion of its prompt.
    pub baselines: Option<Vec<f64>>,
}

impl Rollout {
    /// Scores with "no reward applied" (NaN) counted as 0.
    pub fn finite_scores(&self) -> Vec<f64> {
        self.scores
            .iter()
            .map(|s| if s.is_finite() { *s } else { 0.0 })
            .collect()
    }

    /// Number of completion tokens generated.
    pub fn num_tokens(&self) -> usize {
        self.completions.iter().map(Vec::len).sum()
    }

    /// Mean of a reward over rows where it applied (NaN if nowhere).
    pub fn reward_mean(&self, f: usize) -> f64 {
        let v: Vec<f64> = self.per_reward[f].iter().flatten().copied().collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    }

    /// Keeps only the rows of the listed groups (re-numbered 0..).
    fn select_groups(&self, keep: &[usize]) -> Rollout {
        let rows: Vec<usize> = (0..self.groups.len())
            .filter(|&r| keep.contains(&self.groups[r]))
            .collect();
        let pick = |v: &[f64]| rows.iter().map(|&r| v[r]).collect::<Vec<_>>();
        Rollout {
            prompts: keep.iter().map(|&g| self.prompts[g].clone()).collect(),
            completions: rows.iter().map(|&r| self.completions[r].clone()).collect(),
            texts: rows.iter().map(|&r| self.texts[r].clone()).collect(),
            groups: rows
                .iter()
                .map(|&r| {
                    keep.iter()
                        .position(|&g| g == self.groups[r])
                        .expect("kept")
                })
                .collect(),
            ended: rows.iter().map(|&r| self.ended[r]).collect(),
            reward_names: self.reward_names.clone(),
            per_reward: self
                .per_reward
                .iter()
                .map(|f| rows.iter().map(|&r| f[r]).collect())
                .collect(),
            scores: pick(&self.scores),
            baselines: self.baselines.as_deref().map(pick),
        }
    }

    /// Concatenates two rollouts (groups of `other` renumbered after ours).
    fn extend(&mut self, other: Rollout) {
        let off = self.prompts.len();
        self.prompts.extend(other.prompts);
        self.completions.extend(other.completions);
        self.texts.extend(other.texts);
        self.groups.extend(other.groups.iter().map(|g| g + off));
        self.ended.extend(other.ended);
        for (mine, theirs) in self.per_reward.iter_mut().zip(other.per_reward) {
            mine.extend(theirs);
        }
        self.scores.extend(other.scores);
        self.baselines = match (self.baselines.take(), other.baselines) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            _ => None,
        };
    }
}

/// Samples G completions per prompt with `policy` (a model without gradient tracking, e.g.
/// `model.valid()`) and scores them with `rewards`. `decode` turns completion ids into text.
#[allow(clippy::too_many_arguments)]
pub async fn rollout_async(
    policy: &HybridModel,
    prompts: Vec<Prompt>,
    cfg: &RlConfig,
    eos_token_ids: &[u32],
    rewards: &WeightedRewards<'_>,
    decode: &dyn Fn(&[u32]) -> String,
    seed: u64,
    device: &Device,
) -> Result<Rollout, RlStepError> {
    let g = cfg.group_size;
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| p.ids.clone()).collect();
    let opts = GenerateOptions {
        max_new_tokens: cfg.max_new_tokens,
        sampling: Sampling {
            temperature: cfg.temperature,
            top_k: cfg.top_k,
            top_p: cfg.top_p,
            seed,
            ..Sampling::default()
        },
        eos_token_ids: eos_token_ids.to_vec(),
    };
    let completions = generate_groups_async(policy, &ids, g, &opts, device, |_, _| {})
        .await
        .map_err(|e| RlStepError::Rollout(e.to_string()))?;
    let groups: Vec<usize> = (0..completions.len()).map(|r| r / g).collect();
    let ended: Vec<bool> = completions
        .iter()
        .map(|c| c.last().is_some_and(|t| eos_token_ids.contains(t)))
        .collect();
    let texts: Vec<String> = completions.iter().map(|c| decode(c)).collect();
    let samples = samples(&prompts, &groups, &texts, &completions);
    let breakdown = rewards
        .score_async(&samples)
        .await
        .map_err(|e| RlStepError::Reward(e.to_string()))?;
    Ok(Rollout {
        prompts,
        completions,
        texts,
        groups,
        ended,
        reward_names: breakdown.names,
        per_reward: breakdown.per_reward,
        scores: breakdown.total,
        baselines: None,
    })
}

/// The reward functions' view of completion rows (`groups[r]` = row r's prompt).
fn samples(
    prompts: &[Prompt],
    groups: &[usize],
    texts: &[String],
    completions: &[Vec<u32>],
) -> Vec<Sample> {
    (completions.iter().enumerate())
        .map(|(r, c)| {
            let p = &prompts[groups[r]];
            let s = Sample::new(p.text.clone(), texts[r].clone())
                .in_group(groups[r])
                .with_ids(p.ids.clone(), c.clone());
            match &p.reference {
                Some(reference) => s.with_reference(reference.clone()),
                None => s,
            }
        })
        .collect()
}

/// ReMax baselines: the reward (no reward applied: 0) of one greedy completion of each
/// prompt of `ro`, per row.
async fn greedy_baselines(
    sampler: &HybridModel,
    ro: &Rollout,
    cfg: &RlConfig,
    eos_token_ids: &[u32],
    rewards: &WeightedRewards<'_>,
    decode: &dyn Fn(&[u32]) -> String,
    device: &Device,
) -> Result<Vec<f64>, RlStepError> {
    let ids: Vec<Vec<u32>> = ro.prompts.iter().map(|p| p.ids.clone()).collect();
    let opts = GenerateOptions {
        max_new_tokens: cfg.max_new_tokens,
        sampling: Sampling::default(),
        eos_token_ids: eos_token_ids.to_vec(),
    };
    let greedy = generate_groups_async(sampler, &ids, 1, &opts, device, |_, _| {})
        .await
        .map_err(|e| RlStepError::Rollout(e.to_string()))?;
    let groups: Vec<usize> = (0..greedy.len()).collect();
    let texts: Vec<String> = greedy.iter().map(|c| decode(c)).collect();
    let scored = rewards
        .score_async(&samples(&ro.prompts, &groups, &texts, &greedy))
        .await
        .map_err(|e| RlStepError::Reward(e.to_string()))?;
    let finite = |s: f64| if s.is_finite() { s } else { 0.0 };
    Ok(ro.groups.iter().map(|&g| finite(scored.total[g])).collect())
}

/// What one update did (host values).
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpdateReport {
    /// Mean and std of the (shaped) scores of the rows trained on.
    pub reward_mean: f64,
    pub reward_std: f64,
    /// Loss statistics averaged over passes and micro-batches.
    pub stats: LossStats,
    /// Last optimizer step's global gradient norm.
    pub grad_norm: f64,
    /// Optimizer steps skipped (non-finite loss or gradient).
    pub skipped_steps: usize,
    /// KL-in-reward: the batch KL and β applied (0 otherwise).
    pub reward_kl: f64,
    pub reward_kl_coef: f64,
    /// Rows (completions) and loss tokens trained on.
    pub rows: usize,
    pub tokens: usize,
}

/// Completion-aligned host grids: ids (0-padded) and mask `[B][Tc]`.
fn grids(completions: &[Vec<u32>]) -> (Vec<Vec<u32>>, Vec<Vec<f64>>) {
    let tc = completions.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let ids = completions
        .iter()
        .map(|c| {
            let mut r = c.clone();
            r.resize(tc, 0);
            r
        })
        .collect();
    let mask = completions
        .iter()
        .map(|c| (0..tc).map(|j| f64::from(u8::from(j < c.len()))).collect())
        .collect();
    (ids, mask)
}

async fn host_grid(t: Tensor<2>) -> Result<Vec<Vec<f64>>, RlStepError> {
    let [b, tc] = t.dims();
    let device = t.device();
    let v = t
        .into_data_async()
        .await
        .map_err(|e| RlStepError::Model(crate::device::describe_error(&e.to_string(), &device)))?
        .convert::<f64>()
        .try_into_vec::<f64>()
        .map_err(|e| RlStepError::Model(format!("{e:?}")))?;
    Ok((0..b).map(|r| v[r * tc..(r + 1) * tc].to_vec()).collect())
}

/// Scores the rollout's completions under `model` (completion-aligned, Tc = longest).
fn score(
    model: &HybridModel,
    ro: &Rollout,
    rows: &[usize],
    temperature: f32,
    entropy: bool,
    device: &Device,
) -> Result<TokenScores, RlStepError> {
    let prompts: Vec<Vec<u32>> = rows
        .iter()
        .map(|&r| ro.prompts[ro.groups[r]].ids.clone())
        .collect();
    let comps: Vec<Vec<u32>> = rows.iter().map(|&r| ro.completions[r].clone()).collect();
    score_completions(model, &prompts, &comps, temperature, entropy, device)
        .map_err(|e| RlStepError::Model(e.to_string()))
}

/// Pads `[b, t]` on the right to `[b, tc]` with zeros.
fn pad_cols(x: Tensor<2>, tc: usize) -> Tensor<2> {
    let [b, t] = x.dims();
    if t == tc {
        x
    } else {
        let z = Tensor::<2>::zeros([b, tc - t], &x.device());
        Tensor::cat(vec![x, z], 1)
    }
}

/// Rows `rows` of a host grid as a tensor.
fn rows_tensor(
    grid: &[Vec<f64>],
    rows: &[usize],
    device: &Device,
) -> Result<Tensor<2>, RlStepError> {
    let sel: Vec<Vec<f64>> = rows.iter().map(|&r| grid[r].clone()).collect();
    Ok(grid_tensor(&sel, device, DType::F32)?)
}

/// The KL reference policy.
#[derive(Clone, Copy, Default)]
pub enum Reference<'a> {
    /// No reference (objectives without a KL term).
    #[default]
    None,
    /// A frozen model (full fine-tuning keeps the policy as RL started).
    Model(&'a HybridModel),
    /// The policy with its LoRA adapters off: the frozen base, with no second copy.
    AdaptersOff,
}

impl<'a> From<Option<&'a HybridModel>> for Reference<'a> {
    fn from(m: Option<&'a HybridModel>) -> Self {
        m.map_or(Self::None, Self::Model)
    }
}

/// Applies the objective to a scored rollout: shaping, advantages, μ passes of
/// policy-gradient updates on `policy` (autodiff device) with `opt` at learning rate `lr`.
/// `reference` is needed only when the objective uses KL.
#[allow(clippy::too_many_arguments)]
pub async fn update_async(
    policy: &mut HybridModel,
    opt: &mut AdamW,
    lr: f64,
    reference: Reference<'_>,
    ro: &Rollout,
    cfg: &RlConfig,
    objective: &RlObjective,
    kl_ctrl: &mut KlController,
    device: &Device,
) -> Result<UpdateReport, RlStepError> {
    let b = ro.completions.len();
    if b == 0 {
        return Err(RlStepError::Rollout("no completions to train on".into()));
    }
    let sh = &objective.shaping;
    let (ids, mut mask) = grids(&ro.completions);
    let tc = mask[0].len();
    // Scores: unapplicable rewards count 0; DAPO soft overlong punishment added.
    let mut scores = ro.finite_scores();
    if let Some(ol) = &sh.overlong {
        for (s, c) in scores.iter_mut().zip(&ro.completions) {
            *s += overlong_penalty(c.len(), ol)?;
        }
    }
    if sh.mask_truncated {
        mask = mask_truncated(&mask, &ro.ended)?;
    }
    let all: Vec<usize> = (0..b).collect();
    let kl_in_loss = objective.kl_placement == KlPlacement::Loss && objective.loss.kl_coef != 0.0;
    let kl_in_reward = objective.kl_placement == KlPlacement::Reward;
    let needs_old = cfg.num_iterations > 1 || kl_in_reward || sh.gtpo_entropy.is_some();
    let needs_entropy = objective.loss.entropy_coef != 0.0
        || sh.gtpo_entropy.is_some()
        || sh.top_entropy_quantile < 1.0;
    if (kl_in_loss || kl_in_reward) && matches!(reference, Reference::None) {
        return Err(RlStepError::Config(
            "the objective uses a KL term but no reference model was given".into(),
        ));
    }
    // Behaviour-policy log-probs (and entropy), frozen for all passes.
    adapter::set_mode(policy, AdapterMode::Eval);
    let old = if needs_old {
        let s = score(policy, ro, &all, cfg.temperature, needs_entropy, device)?;
        Some((s.logp.detach(), s.entropy.map(|e| e.detach())))
    } else {
        None
    };
    let base_policy;
    let ref_model = match reference {
        Reference::Model(r) => Some(r),
        Reference::AdaptersOff => {
            base_policy = adapter::switched(policy, AdapterMode::Off);
            Some(&base_policy)
        }
        Reference::None => None,
    };
    let ref_lp = match ref_model {
        Some(r) if kl_in_loss || kl_in_reward => {
            let s = score(
                &r.valid(),
                ro,
                &all,
                cfg.temperature,
                false,
                &device.clone().inner(),
            )?;
            Some(Tensor::<2>::from_inner(s.logp))
        }
        _ => None,
    };
    // Advantages [B][Tc].
    let mut report = UpdateReport::default();
    let frozen = Frozen {
        old: old.as_ref(),
        ref_lp: ref_lp.as_ref(),
    };
    let advantages =
        advantages_async(objective, ro, &scores, &mask, frozen, kl_ctrl, &mut report).await?;
    let weights = match sh.conflict_positive_weight {
        Some(w) => {
            let lens: Vec<f64> = mask.iter().map(|r| r.iter().sum()).collect();
            let seq_adv = sequence_advantages(&objective.advantage, &scores, &lens, &ro.groups)?;
            Some(conflict_token_weights(
                &ids, &mask, &seq_adv, &ro.groups, w,
            )?)
        }
        None => None,
    };
    let entropy_mask = if sh.top_entropy_quantile < 1.0 {
        let ent = match &old {
            Some((_, Some(e))) => host_grid(e.clone()).await?,
            _ => {
                let s = score(policy, ro, &all, cfg.temperature, true, device)?;
                host_grid(s.entropy.expect("asked for").detach()).await?
            }
        };
        Some(high_entropy_mask(&ent, &mask, sh.top_entropy_quantile)?)
    } else {
        None
    };

    let total_tokens: f64 = mask.iter().flatten().sum();
    report.rows = b;
    report.tokens = total_tokens as usize;
    let n = scores.len() as f64;
    report.reward_mean = scores.iter().sum::<f64>() / n;
    report.reward_std = (scores
        .iter()
        .map(|s| (s - report.reward_mean).powi(2))
        .sum::<f64>()
        / (n - 1.0).max(1.0))
    .sqrt();

    let batch = Batch {
        advantages,
        mask,
        weights,
        entropy_mask,
        old: old.map(|(o, _)| o),
        ref_lp,
        tc,
        total_tokens,
    };
    optimise_async(
        policy,
        opt,
        lr,
        ro,
        cfg,
        &objective.loss,
        &batch,
        &mut report,
        device,
    )
    .await?;
    Ok(report)
}

/// The behaviour policy's log-probs (and entropy) and the reference's, frozen for the passes.
#[derive(Clone, Copy)]
struct Frozen<'a> {
    old: Option<&'a (Tensor<2>, Option<Tensor<2>>)>,
    ref_lp: Option<&'a Tensor<2>>,
}

/// Token advantages `[B][Tc]` of the batch: GTPO's entropy-shaped rewards, KL in the reward
/// (filling the report's KL fields), ReMax's greedy baselines, or the configured estimator.
async fn advantages_async(
    objective: &RlObjective,
    ro: &Rollout,
    scores: &[f64],
    mask: &[Vec<f64>],
    frozen: Frozen<'_>,
    kl_ctrl: &mut KlController,
    report: &mut UpdateReport,
) -> Result<Vec<Vec<f64>>, RlStepError> {
    let sh = &objective.shaping;
    let kl_in_reward = objective.kl_placement == KlPlacement::Reward;
    Ok(if let Some(gcfg) = &sh.gtpo_entropy {
        let ent = match frozen.old {
            Some((_, Some(e))) => host_grid(e.clone()).await?,
            _ => unreachable!("GTPO entropy computed above"),
        };
        let rewards = gtpo_token_rewards(scores, &ent, mask, &ro.groups, gcfg)?;
        gtpo_token_advantages(&rewards, mask, &ro.groups, objective.advantage.eps)?
    } else if kl_in_reward {
        let (old_lp, _) = frozen.old.expect("computed when KL is in the reward");
        let old_h = host_grid(old_lp.clone()).await?;
        let ref_h = host_grid(frozen.ref_lp.expect("reference scored").clone()).await?;
        let token_scores = super::advantage::scores_on_last_token(scores, mask)?;
        let rk = apply_kl_in_reward(
            &token_scores,
            &old_h,
            &ref_h,
            mask,
            objective.reward_kl.penalty,
            kl_ctrl,
        )?;
        report.reward_kl = rk.current_kl;
        report.reward_kl_coef = rk.coef;
        token_advantages(
            &objective.advantage,
            Rewards::Token(&rk.rewards),
            mask,
            &ro.groups,
        )?
    } else if objective.advantage.estimator == Estimator::Remax {
        let baselines = ro.baselines.as_deref().ok_or_else(|| {
            RlStepError::Config("remax needs the rollout's greedy baselines (rl_step)".into())
        })?;
        remax_advantages(scores, baselines, mask)?
    } else {
        token_advantages(
            &objective.advantage,
            Rewards::Sequence(scores),
            mask,
            &ro.groups,
        )?
    })
}

/// Host data of a batch the passes train on, and the frozen log-probs `[B, Tc]`.
struct Batch {
    advantages: Vec<Vec<f64>>,
    mask: Vec<Vec<f64>>,
    weights: Option<Vec<Vec<f64>>>,
    entropy_mask: Option<Vec<Vec<f64>>>,
    old: Option<Tensor<2>>,
    ref_lp: Option<Tensor<2>>,
    /// Completion columns.
    tc: usize,
    /// Σ mask over the whole batch.
    total_tokens: f64,
}

/// μ passes, each one optimizer step over the batch (gradients accumulated over
/// micro-batches); fills the report's loss statistics, gradient norm and skipped steps.
#[allow(clippy::too_many_arguments)]
async fn optimise_async(
    policy: &mut HybridModel,
    opt: &mut AdamW,
    lr: f64,
    ro: &Rollout,
    cfg: &RlConfig,
    loss_cfg: &LossConfig,
    batch: &Batch,
    report: &mut UpdateReport,
    device: &Device,
) -> Result<(), RlStepError> {
    let b = ro.completions.len();
    let micro = if cfg.micro_batch_rows == 0 {
        b
    } else {
        cfg.micro_batch_rows.min(b)
    };
    let all: Vec<usize> = (0..b).collect();
    let mut stats_sum = LossStats::default();
    let mut evals = 0usize;
    adapter::set_mode(policy, AdapterMode::Train);
    for _pass in 0..cfg.num_iterations {
        let mut grads = Grads::new();
        for chunk in all.chunks(micro) {
            // Micro-batches: token-mean normalises by the whole batch's tokens (exact);
            // micro-token-mean (TRL bnpo) averages the micro-batches' own means; the
            // per-sequence modes are weighted by their share of rows (exact for the means).
            let (scale, global) = match loss_cfg.aggregation {
                _ if micro == b => (1.0, None),
                Aggregation::TokenMean => (1.0, Some(batch.total_tokens)),
                Aggregation::MicroTokenMean => (1.0 / b.div_ceil(micro) as f64, None),
                _ => (chunk.len() as f64 / b as f64, None),
            };
            let (inputs, deferred) =
                micro_batch_inputs(policy, ro, cfg, batch, chunk, global, device)?;
            let out = policy_loss(loss_cfg, inputs)?;
            let value = if scale == 1.0 {
                out.loss
            } else {
                out.loss.mul_scalar(scale)
            };
            let st = (out.metrics.read(&value).await).map_err(RlStepError::Objective)?;
            add_stats(&mut stats_sum, &st);
            evals += 1;
            let loss = Loss {
                value,
                deferred: vec![deferred],
            };
            loss.accumulate_into(policy, &mut grads);
        }
        let rep: StepReport = opt
            .step_async(policy, grads, lr)
            .await
            .map_err(|e| RlStepError::Optim(e.to_string()))?;
        report.grad_norm = rep.grad_norm;
        if rep.skipped.is_some() {
            report.skipped_steps += 1;
        }
    }
    adapter::set_mode(policy, AdapterMode::Eval);
    report.stats = scale_stats(stats_sum, 1.0 / evals.max(1) as f64);
    Ok(())
}

/// The loss inputs of the batch rows `rows`: the policy's log-probs (and entropy, always
/// computed for the metrics) with gradient, and the batch's data for those rows; with the
/// backward parts the scores deferred (see [`Loss`]).
fn micro_batch_inputs(
    policy: &HybridModel,
    ro: &Rollout,
    cfg: &RlConfig,
    batch: &Batch,
    rows: &[usize],
    global_tokens: Option<f64>,
    device: &Device,
) -> Result<(LossInputs, Deferred), RlStepError> {
    let s = score(policy, ro, rows, cfg.temperature, true, device)?;
    let logp = pad_cols(s.logp, batch.tc);
    let idx = Tensor::<1, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(
            rows.iter().map(|&r| r as i64).collect::<Vec<_>>(),
            [rows.len()],
        ),
        device,
    );
    let sel = |t: &Tensor<2>| t.clone().select(0, idx.clone());
    let grid = |g: &Option<Vec<Vec<f64>>>| -> Result<Option<Tensor<2>>, RlStepError> {
        g.as_ref().map(|g| rows_tensor(g, rows, device)).transpose()
    };
    let mut inputs = LossInputs::new(
        logp,
        rows_tensor(&batch.advantages, rows, device)?,
        rows_tensor(&batch.mask, rows, device)?,
    );
    inputs.old_logp = batch.old.as_ref().map(sel);
    inputs.ref_logp = batch.ref_lp.as_ref().map(sel);
    inputs.entropy = s.entropy.map(|e| pad_cols(e, batch.tc));
    inputs.token_weights = grid(&batch.weights)?;
    inputs.entropy_mask = grid(&batch.entropy_mask)?;
    inputs.global_tokens = global_tokens;
    Ok((inputs, s.deferred))
}

fn add_stats(acc: &mut LossStats, s: &LossStats) {
    acc.loss += s.loss;
    acc.pg_loss += s.pg_loss;
    acc.kl_loss += s.kl_loss;
    acc.entropy_loss += s.entropy_loss;
    acc.clip_low_frac += s.clip_low_frac;
    acc.clip_high_frac += s.clip_high_frac;
    acc.dual_clip_frac += s.dual_clip_frac;
    acc.ratio_mean += s.ratio_mean;
    acc.kl_mean += s.kl_mean;
    acc.entropy_mean += s.entropy_mean;
}

fn scale_stats(mut s: LossStats, k: f64) -> LossStats {
    for v in [
        &mut s.loss,
        &mut s.pg_loss,
        &mut s.kl_loss,
        &mut s.entropy_loss,
        &mut s.clip_low_frac,
        &mut s.clip_high_frac,
        &mut s.dual_clip_frac,
        &mut s.ratio_mean,
        &mut s.kl_mean,
        &mut s.entropy_mean,
    ] {
        *v *= k;
    }
    s
}

/// DAPO dynamic sampling over a rollout: keeps the groups whose scores differ. Returns the
/// kept rollout and the number of groups dropped.
pub fn keep_informative_groups(ro: &Rollout) -> Result<(Rollout, usize), RlStepError> {
    let scores = ro.finite_scores();
    let ds = dynamic_sampling(&scores, &ro.groups)?;
    let keep: Vec<usize> = (0..ro.prompts.len())
        .filter(|g| !ds.dropped_groups.contains(g))
        .collect();
    Ok((ro.select_groups(&keep), ds.dropped_groups.len()))
}

/// What one full RL step did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RlStepReport {
    pub update: UpdateReport,
    /// Completion tokens sampled (all rounds) and completions kept for the update.
    pub rollout_tokens: usize,
    pub rollout_rows: usize,
    /// Groups dropped by dynamic sampling and extra rollout rounds drawn.
    pub dropped_groups: usize,
    pub refills: usize,
    /// Per reward (name, mean over the first round's rows where it applied).
    pub rewards: Vec<(String, f64)>,
    /// Mean raw score of the first round (before dynamic sampling; NaN-free).
    pub score_mean: f64,
    /// Mean completion length and fraction truncated (first round).
    pub response_len: f64,
    pub truncated_frac: f64,
    /// No update was possible (every group dropped).
    pub no_update: bool,
}

impl RlStepReport {
    /// The step's metrics as a flat JSON object (`loss`, `reward`, `reward_std`, `kl`,
    /// `entropy`, `clip_frac`, `grad_norm`, `response_length`, `truncated_frac`,
    /// `rollout_tokens`, `dropped_groups`, `skipped`, and `reward/<name>` per reward).
    pub fn to_record(&self) -> serde_json::Value {
        let u = &self.update;
        let mut rec = serde_json::json!({
            "loss": u.stats.loss,
            "pg_loss": u.stats.pg_loss,
            "reward": self.score_mean,
            "reward_std": u.reward_std,
            "kl": if u.reward_kl_coef > 0.0 { u.reward_kl } else { u.stats.kl_mean },
            "entropy": u.stats.entropy_mean,
            "clip_frac": u.stats.clip_low_frac + u.stats.clip_high_frac,
            "ratio_mean": u.stats.ratio_mean,
            "grad_norm": u.grad_norm,
            "response_length": self.response_len,
            "truncated_frac": self.truncated_frac,
            "rollout_tokens": self.rollout_tokens,
            "dropped_groups": self.dropped_groups,
            "skipped": u.skipped_steps > 0 || self.no_update,
        });
        for (name, mean) in &self.rewards {
            rec[format!("reward/{name}")] = serde_json::json!(mean);
        }
        rec
    }
}

/// The policy's pieces an RL step changes.
pub struct Policy<'a> {
    /// The model being trained (on an autodiff device).
    pub model: &'a mut HybridModel,
    pub optimizer: &'a mut AdamW,
    /// The reference for KL terms.
    pub reference: Reference<'a>,
    pub kl_controller: &'a mut KlController,
}

/// A full RL step: rollouts of `next_prompts(cfg.prompts_per_step)` (refilled by dynamic
/// sampling when the objective asks), then [`update_async`]; `on_stage` hears each part
/// begin (for progress displays).
#[allow(clippy::too_many_arguments)]
pub async fn rl_step_async(
    policy: Policy<'_>,
    lr: f64,
    cfg: &RlConfig,
    objective: &RlObjective,
    rewards: &WeightedRewards<'_>,
    next_prompts: &mut dyn FnMut(usize) -> Vec<Prompt>,
    eos_token_ids: &[u32],
    decode: &dyn Fn(&[u32]) -> String,
    seed: u64,
    device: &Device,
    on_stage: &mut dyn FnMut(Stage),
) -> Result<RlStepReport, RlStepError> {
    cfg.validate()?;
    let sampler = adapter::switched(&policy.model.valid(), AdapterMode::Eval);
    let base = device.clone().inner();
    let completions = |prompts: usize| prompts * cfg.group_size;
    on_stage(Stage::Rollout {
        completions: completions(cfg.prompts_per_step),
    });
    let first = rollout_async(
        &sampler,
        next_prompts(cfg.prompts_per_step),
        cfg,
        eos_token_ids,
        rewards,
        decode,
        seed,
        &base,
    )
    .await?;
    let mut report = RlStepReport {
        rollout_tokens: first.num_tokens(),
        rewards: (0..first.reward_names.len())
            .map(|f| (first.reward_names[f].clone(), first.reward_mean(f)))
            .collect(),
        score_mean: first.finite_scores().iter().sum::<f64>() / first.scores.len() as f64,
        response_len: first.num_tokens() as f64 / first.completions.len() as f64,
        truncated_frac: first.ended.iter().filter(|e| !**e).count() as f64
            / first.ended.len() as f64,
        ..RlStepReport::default()
    };
    let batch = if objective.shaping.dynamic_sampling {
        let (mut kept, dropped) = keep_informative_groups(&first)?;
        report.dropped_groups = dropped;
        let mut round = 0;
        while kept.prompts.len() < cfg.prompts_per_step && round < cfg.max_refills {
            round += 1;
            let need = cfg.prompts_per_step - kept.prompts.len();
            on_stage(Stage::Rollout {
                completions: completions(need),
            });
            let more = rollout_async(
                &sampler,
                next_prompts(need),
                cfg,
                eos_token_ids,
                rewards,
                decode,
                seed.wrapping_add(round as u64 * 0x9E37_79B9),
                &base,
            )
            .await?;
            report.rollout_tokens += more.num_tokens();
            let (k, d) = keep_informative_groups(&more)?;
            report.dropped_groups += d;
            kept.extend(k);
        }
        report.refills = round;
        kept
    } else {
        first
    };
    report.rollout_rows = batch.completions.len();
    if batch.completions.is_empty() {
        report.no_update = true;
        return Ok(report);
    }
    let mut batch = batch;
    if objective.advantage.estimator == Estimator::Remax {
        let b = greedy_baselines(&sampler, &batch, cfg, eos_token_ids, rewards, decode, &base);
        batch.baselines = Some(b.await?);
    }
    on_stage(Stage::Update);
    report.update = update_async(
        policy.model,
        policy.optimizer,
        lr,
        policy.reference,
        &batch,
        cfg,
        objective,
        policy.kl_controller,
        device,
    )
    .await?;
    Ok(report)
}

/// The objective a config names: its preset (default `grpo`).
pub fn preset_objective(cfg: &RlConfig) -> Result<RlObjective, RlStepError> {
    Ok(cfg
        .preset
        .map_or_else(RlObjective::default, Preset::objective))
}
