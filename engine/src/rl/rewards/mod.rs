//! Rewards: one score per sample, from rules, from the model's own likelihoods, or from
//! model-written verdicts, combined with weights.
//!
//! A [`Reward`] scores a batch of [`Sample`]s (prompt + completion, optional reference answer
//! and token ids, and the index of the prompt group the sample belongs to). It returns one
//! `Option<f64>` per sample; `None` means "not applicable" (TRL's `None` → NaN), e.g. an
//! accuracy check on a sample without a reference. Scoring returns a boxed future so that
//! model-based rewards can read values back from the GPU asynchronously (browsers) while the
//! trait stays object-safe; synchronous rules implement the simpler [`RuleReward`] and get
//! [`Reward`] for free.
//!
//! [`WeightedRewards`] combines several rewards as TRL's `sum_then_normalize` does before
//! advantages:
//! ```text
//! total_i = Σ_f w_f · r_{i,f}   over the rewards f that apply to sample i (r ≠ None)
//! total_i = NaN                 when none applies
//! ```
//!
//! Modules: [`rule`] (answer extraction, numeric equivalence, format and length rules),
//! [`likelihood`] (reference-answer likelihood, VeriFree), [`nover`] (reasoning perplexity
//! with a lagged proxy model, NOVER), [`self_score`] (parsed self-assessment scores),
//! [`self_verify`] (DeepSeekMath-V2 generate → verify → meta-verify), and native programs'
//! `command` (a user's verifier process speaking JSON lines).

#[cfg(not(target_family = "wasm"))]
pub mod command;
pub mod likelihood;
pub mod nover;
pub mod rule;
pub mod self_score;
pub mod self_verify;

use std::future::Future;
use std::pin::Pin;

/// One rollout to score.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// The prompt text the completion continues.
    pub prompt: String,
    /// The generated text.
    pub completion: String,
    /// Reference (ground-truth) answer, when the dataset has one.
    pub reference: Option<String>,
    /// Token ids of the prompt, when known (model-based rewards use them instead of
    /// re-encoding `prompt`).
    pub prompt_ids: Option<Vec<u32>>,
    /// Token ids of the completion, when known (token-length rules use them).
    pub completion_ids: Option<Vec<u32>>,
    /// Index of the prompt group (the G completions of one prompt share it); group-relative
    /// rewards (NOVER ranks) compare samples within a group only.
    pub group: usize,
}

impl Sample {
    /// A sample of `prompt` and `completion` in group 0, without reference or ids.
    pub fn new(prompt: impl Into<String>, completion: impl Into<String>) -> Self {
        Sample {
            prompt: prompt.into(),
            completion: completion.into(),
            ..Default::default()
        }
    }

    /// Sets the reference answer.
    pub fn with_reference(mut self, reference: impl Into<String>) -> Self {
        self.reference = Some(reference.into());
        self
    }

    /// Sets the group index.
    pub fn in_group(mut self, group: usize) -> Self {
        self.group = group;
        self
    }

    /// Sets the token ids of prompt and completion.
    pub fn with_ids(mut self, prompt_ids: Vec<u32>, completion_ids: Vec<u32>) -> Self {
        self.prompt_ids = Some(prompt_ids);
        self.completion_ids = Some(completion_ids);
        self
    }
}

/// Errors of scoring.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RewardError {
    /// A bad request (mismatched lengths, bad configuration).
    #[error("reward {reward}: {message}")]
    Input { reward: String, message: String },
    /// Tokenizing text failed.
    #[error("reward {reward}: tokenizer: {message}")]
    Tokenizer { reward: String, message: String },
    /// A forward pass or a readback failed.
    #[error("reward {reward}: model: {message}")]
    Model { reward: String, message: String },
    /// A policy failed to generate (self-verification).
    #[error("reward {reward}: generation: {message}")]
    Generate { reward: String, message: String },
}

/// Scores of a batch, one per sample (`None` = not applicable).
pub type Scores = Vec<Option<f64>>;

/// What [`Reward::score`] returns: a future of the batch's scores.
pub type RewardFuture<'a> = Pin<Box<dyn Future<Output = Result<Scores, RewardError>> + 'a>>;

/// A reward function over a batch of samples. Object-safe: combine `Box<dyn Reward>`s.
pub trait Reward {
    /// Name used in metrics and errors.
    fn name(&self) -> &str;
    /// One score per sample, in order.
    fn score<'a>(&'a self, samples: &'a [Sample]) -> RewardFuture<'a>;
}

/// A synchronous per-sample rule; every `RuleReward` is a [`Reward`].
pub trait RuleReward {
    fn name(&self) -> &str;
    /// The score of one sample (`None` = not applicable).
    fn score_one(&self, sample: &Sample) -> Option<f64>;
}

impl<T: RuleReward> Reward for T {
    fn name(&self) -> &str {
        RuleReward::name(self)
    }
    fn score<'a>(&'a self, samples: &'a [Sample]) -> RewardFuture<'a> {
        let scores = samples.iter().map(|s| self.score_one(s)).collect();
        Box::pin(std::future::ready(Ok(scores)))
    }
}

/// A borrowed reward: one that lives for a whole run (a process, a rule) joins a
/// [`WeightedRewards`] built for one step.
pub struct Borrowed<'r>(pub &'r dyn Reward);

impl Reward for Borrowed<'_> {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn score<'a>(&'a self, samples: &'a [Sample]) -> RewardFuture<'a> {
        self.0.score(samples)
    }
}

/// A rule from a closure: `FnReward::new("has_answer", |s| Some(...))`.
pub struct FnReward<F> {
    name: String,
    f: F,
}

impl<F: Fn(&Sample) -> Option<f64>> FnReward<F> {
    pub fn new(name: impl Into<String>, f: F) -> Self {
        FnReward {
            name: name.into(),
            f,
        }
    }
}

impl<F: Fn(&Sample) -> Option<f64>> RuleReward for FnReward<F> {
    fn name(&self) -> &str {
        &self.name
    }
    fn score_one(&self, sample: &Sample) -> Option<f64> {
        (self.f)(sample)
    }
}

/// Scores of every reward and their weighted total.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardBreakdown {
    /// Reward names, in the order they were added.
    pub names: Vec<String>,
    /// `per_reward[f][i]`: reward f of sample i.
    pub per_reward: Vec<Scores>,
    /// `Σ_f w_f r_{i,f}` over applicable rewards; NaN when none applies.
    pub total: Vec<f64>,
}

/// Several rewards with weights (TRL's `reward_funcs` + `reward_weights`).
#[derive(Default)]
pub struct WeightedRewards<'a> {
    items: Vec<(Box<dyn Reward + 'a>, f64)>,
}

impl<'a> WeightedRewards<'a> {
    pub fn new() -> Self {
        WeightedRewards { items: Vec::new() }
    }

    /// Adds a reward with its weight.
    pub fn with(mut self, reward: impl Reward + 'a, weight: f64) -> Self {
        self.items.push((Box::new(reward), weight));
        self
    }

    /// Adds a boxed reward with its weight.
    pub fn push(&mut self, reward: Box<dyn Reward + 'a>, weight: f64) {
        self.items.push((reward, weight));
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Scores `samples` with every reward (in order) and combines them.
    pub async fn score_async(&self, samples: &[Sample]) -> Result<RewardBreakdown, RewardError> {
        let mut names = Vec::with_capacity(self.items.len());
        let mut per_reward = Vec::with_capacity(self.items.len());
        for (reward, _) in &self.items {
            let scores = reward.score(samples).await?;
            if scores.len() != samples.len() {
                return Err(RewardError::Input {
                    reward: reward.name().to_string(),
                    message: format!(
                        "returned {} scores for {} samples",
                        scores.len(),
                        samples.len()
                    ),
                });
            }
            names.push(reward.name().to_string());
            per_reward.push(scores);
        }
        let weights: Vec<f64> = self.items.iter().map(|(_, w)| *w).collect();
        let total = combine(&per_reward, &weights);
        Ok(RewardBreakdown {
            names,
            per_reward,
            total,
        })
    }

    /// Blocking [`Self::score_async`] (native only).
    #[cfg(not(target_family = "wasm"))]
    pub fn score(&self, samples: &[Sample]) -> Result<RewardBreakdown, RewardError> {
        pollster::block_on(self.score_async(samples))
    }
}

/// `total_i = Σ_f w_f r_{f,i}` over the `Some` scores; NaN when every score of sample i is
/// `None` (or there are no rewards). `per_reward[f]` must all have the same length.
pub fn combine(per_reward: &[Scores], weights: &[f64]) -> Vec<f64> {
    let n = per_reward.first().map_or(0, Vec::len);
    (0..n)
        .map(|i| {
            let mut total = 0.0;
            let mut any = false;
            for (scores, w) in per_reward.iter().zip(weights) {
                if let Some(r) = scores[i] {
                    total += w * r;
                    any = true;
                }
            }
            if any { total } else { f64::NAN }
        })
        .collect()
}

/// Blocking [`Reward::score`] (native only).
#[cfg(not(target_family = "wasm"))]
pub fn score_blocking(reward: &dyn Reward, samples: &[Sample]) -> Result<Scores, RewardError> {
    pollster::block_on(reward.score(samples))
}
