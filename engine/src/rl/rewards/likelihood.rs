//! Reference-answer likelihood reward (verifier-free, VeriFree: "Reinforcing General
//! Reasoning without Verifiers", Zhou et al. 2025).
//!
//! The policy writes reasoning z for prompt x; instead of checking its own answer, the
//! reference answer y* is appended after the reasoning and its likelihood under the model
//! is the reward. VeriFree's reward is the sequence probability
//! ```text
//! R(x, z) = π(y* | x, z) = exp(Σ_j log π(y*_j | x, z, y*_<j))          (LikelihoodMode::SeqProb)
//! ```
//! which equals the expected 0/1 verifier reward when y* is the only correct answer. The
//! default here is the length-normalised form (geometric mean of the token probabilities),
//! which keeps long references from vanishing:
//! ```text
//! R(x, z) = exp((1/|y*|) Σ_j log π(y*_j | x, z, y*_<j))                 (LikelihoodMode::MeanProb)
//! ```
//! and the raw log forms are offered too. (VeriFree also trains the answer tokens with a
//! supervised term weighted by R; that belongs to the loss, not to the reward.)
//!
//! Text layout of the scored sequence (a [`AnswerTemplate`] with `open = "<answer>"`,
//! `close = "</answer>"` by default):
//! ```text
//! context = prompt ++ reasoning ++ open      reasoning = the completion before its first `open`
//! target  = reference ++ close                (the whole completion when there is no `open`)
//! ```
//! The prompt's ids are the sample's `prompt_ids` when present, else the tokenizer's
//! encoding of the prompt; `reasoning ++ open` and `target` are encoded separately (no
//! special tokens) and concatenated.

use burn::tensor::Device;

use super::{Reward, RewardError, RewardFuture, Sample, Scores};
use crate::model::hybrid::HybridModel;
use crate::model::score::score_completions;
use crate::model::tokenizer::Tokenizer;

/// Where the answer starts and ends in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerTemplate {
    /// Text that opens the answer (the reasoning is what precedes it).
    pub open: String,
    /// Text appended after the reference answer ("" for none).
    pub close: String,
}

impl Default for AnswerTemplate {
    fn default() -> Self {
        AnswerTemplate {
            open: "<answer>".into(),
            close: "</answer>".into(),
        }
    }
}

impl AnswerTemplate {
    /// The reasoning part of a completion: everything before the first `open` (the whole
    /// completion when `open` is absent or empty).
    pub fn reasoning<'c>(&self, completion: &'c str) -> &'c str {
        if self.open.is_empty() {
            return completion;
        }
        completion
            .find(&self.open)
            .map_or(completion, |at| &completion[..at])
    }

    /// The text that follows the prompt in the scored sequence: `reasoning ++ open`.
    pub fn context_tail(&self, completion: &str) -> String {
        format!("{}{}", self.reasoning(completion), self.open)
    }

    /// The scored target text: `reference ++ close`.
    pub fn target(&self, reference: &str) -> String {
        format!("{reference}{}", self.close)
    }
}

/// A `(context, target)` pair of token ids.
pub type TokenPair = (Vec<u32>, Vec<u32>);

/// Sum of log-probabilities and token count of one target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetLogProb {
    /// `Σ_j log π(target_j | context, target_<j)`.
    pub sum: f64,
    /// Number of target tokens.
    pub len: usize,
}

impl TargetLogProb {
    /// `sum / len` (`None` for an empty target).
    pub fn mean(self) -> Option<f64> {
        (self.len > 0).then(|| self.sum / self.len as f64)
    }
}

/// Teacher-forced `Σ_j log π(target_j | context, target_<j)` of every `(context, target)`
/// pair (contexts non-empty), `max_batch` rows per forward pass (0 = all at once), at
/// `temperature`. Values are read back asynchronously.
pub async fn target_logprobs_async(
    model: &HybridModel,
    pairs: &[TokenPair],
    temperature: f32,
    max_batch: usize,
    device: &Device,
) -> Result<Vec<TargetLogProb>, String> {
    let chunk = if max_batch == 0 {
        pairs.len().max(1)
    } else {
        max_batch
    };
    let mut out = Vec::with_capacity(pairs.len());
    for part in pairs.chunks(chunk) {
        let contexts: Vec<Vec<u32>> = part.iter().map(|(c, _)| c.clone()).collect();
        let targets: Vec<Vec<u32>> = part.iter().map(|(_, t)| t.clone()).collect();
        let scores = score_completions(model, &contexts, &targets, temperature, false, device)
            .map_err(|e| e.to_string())?;
        let b = part.len();
        let sums = scores
            .logp
            .sum_dim(1)
            .reshape([b])
            .into_data_async()
            .await
            .map_err(|e| format!("reading log-probabilities back: {e:?}"))?
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| format!("reading log-probabilities back: {e:?}"))?;
        out.extend(sums.iter().zip(&targets).map(|(&s, t)| TargetLogProb {
            sum: f64::from(s),
            len: t.len(),
        }));
    }
    Ok(out)
}

/// Blocking [`target_logprobs_async`] (native only).
#[cfg(not(target_family = "wasm"))]
pub fn target_logprobs(
    model: &HybridModel,
    pairs: &[TokenPair],
    temperature: f32,
    max_batch: usize,
    device: &Device,
) -> Result<Vec<TargetLogProb>, String> {
    pollster::block_on(target_logprobs_async(
        model,
        pairs,
        temperature,
        max_batch,
        device,
    ))
}

/// The prompt ids of a sample: its `prompt_ids`, else the tokenizer's encoding.
pub(crate) fn prompt_ids(
    sample: &Sample,
    tokenizer: &Tokenizer,
    reward: &str,
) -> Result<Vec<u32>, RewardError> {
    match &sample.prompt_ids {
        Some(ids) => Ok(ids.clone()),
        None => encode(tokenizer, &sample.prompt, reward),
    }
}

/// Encodes text without special tokens, mapping errors to [`RewardError::Tokenizer`].
pub(crate) fn encode(
    tokenizer: &Tokenizer,
    text: &str,
    reward: &str,
) -> Result<Vec<u32>, RewardError> {
    tokenizer
        .encode(text, false)
        .map_err(|e| RewardError::Tokenizer {
            reward: reward.to_string(),
            message: e.to_string(),
        })
}

/// How the reference's log-likelihood becomes a reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LikelihoodMode {
    /// `exp(mean_j log π(y*_j | …))`: geometric-mean token probability, in (0, 1].
    #[default]
    MeanProb,
    /// `exp(Σ_j log π(y*_j | …)) = π(y* | x, z)`: VeriFree's reward, in (0, 1].
    SeqProb,
    /// `mean_j log π(y*_j | …)`.
    MeanLogProb,
    /// `Σ_j log π(y*_j | …)`.
    SumLogProb,
}

impl LikelihoodMode {
    /// The reward of one target's log-probabilities (`None` for an empty target).
    pub fn reward(self, lp: TargetLogProb) -> Option<f64> {
        Some(match self {
            LikelihoodMode::MeanProb => lp.mean()?.exp(),
            LikelihoodMode::SeqProb => {
                if lp.len == 0 {
                    return None;
                }
                lp.sum.exp()
            }
            LikelihoodMode::MeanLogProb => lp.mean()?,
            LikelihoodMode::SumLogProb => {
                if lp.len == 0 {
                    return None;
                }
                lp.sum
            }
        })
    }
}

/// The reference-answer likelihood reward over a model (the policy itself, or a frozen /
/// lagged copy). Samples without a reference score `None`.
pub struct LikelihoodReward<'a> {
    pub model: &'a HybridModel,
    pub tokenizer: &'a Tokenizer,
    pub device: Device,
    pub template: AnswerTemplate,
    pub mode: LikelihoodMode,
    /// Softmax temperature of the scoring pass (1 = the model's distribution).
    pub temperature: f32,
    /// Rows per forward pass (0 = all at once).
    pub max_batch: usize,
}

impl<'a> LikelihoodReward<'a> {
    /// `MeanProb` mode, `<answer>`/`</answer>` template, temperature 1, batches of 16.
    pub fn new(model: &'a HybridModel, tokenizer: &'a Tokenizer, device: &Device) -> Self {
        LikelihoodReward {
            model,
            tokenizer,
            device: device.clone(),
            template: AnswerTemplate::default(),
            mode: LikelihoodMode::MeanProb,
            temperature: 1.0,
            max_batch: 16,
        }
    }

    /// Sets the mode.
    pub fn with_mode(mut self, mode: LikelihoodMode) -> Self {
        self.mode = mode;
        self
    }

    /// The `(context, target)` token ids of a sample (`None` without a reference).
    pub fn pair(&self, sample: &Sample) -> Result<Option<TokenPair>, RewardError> {
        let Some(reference) = sample.reference.as_deref() else {
            return Ok(None);
        };
        let mut context = prompt_ids(sample, self.tokenizer, "likelihood")?;
        context.extend(encode(
            self.tokenizer,
            &self.template.context_tail(&sample.completion),
            "likelihood",
        )?);
        let target = encode(
            self.tokenizer,
            &self.template.target(reference),
            "likelihood",
        )?;
        Ok((!context.is_empty()).then_some((context, target)))
    }

    /// The log-probabilities of every sample's reference (`None` without one).
    pub async fn logprobs_async(
        &self,
        samples: &[Sample],
    ) -> Result<Vec<Option<TargetLogProb>>, RewardError> {
        let mut pairs = Vec::new();
        let mut at = Vec::with_capacity(samples.len());
        for s in samples {
            match self.pair(s)? {
                Some(p) => {
                    at.push(Some(pairs.len()));
                    pairs.push(p);
                }
                None => at.push(None),
            }
        }
        let lps = if pairs.is_empty() {
            Vec::new()
        } else {
            target_logprobs_async(
                self.model,
                &pairs,
                self.temperature,
                self.max_batch,
                &self.device,
            )
            .await
            .map_err(|message| RewardError::Model {
                reward: "likelihood".into(),
                message,
            })?
        };
        Ok(at.into_iter().map(|i| i.map(|i| lps[i])).collect())
    }

    /// The rewards of `samples`.
    pub async fn score_async(&self, samples: &[Sample]) -> Result<Scores, RewardError> {
        let lps = self.logprobs_async(samples).await?;
        Ok(lps
            .into_iter()
            .map(|lp| lp.and_then(|lp| self.mode.reward(lp)))
            .collect())
    }
}

impl Reward for LikelihoodReward<'_> {
    fn name(&self) -> &str {
        "reference_likelihood"
    }
    fn score<'s>(&'s self, samples: &'s [Sample]) -> RewardFuture<'s> {
        Box::pin(self.score_async(samples))
    }
}
