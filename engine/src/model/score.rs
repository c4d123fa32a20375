//! Teacher-forced scoring: per-token log-probabilities (and entropies) of given tokens under
//! the model, differentiable when the model's parameters track gradients.
//!
//! ```text
//! logp[b, j]    = log softmax(logits(seq_b[..p_b + j]) / τ)[completion_b[j]]
//! entropy[b, j] = −Σ_v π_v log π_v  of the same distribution
//! ```
//! Rows are `prompt ++ completion`, right-padded into one batch: padding comes after every
//! real token, so causal attention and the recurrent scan never let it reach a real position
//! and no mask is needed inside the model. Completion positions are gathered into a
//! completion-aligned `[B, Tc]` layout (column j = j-th completion token of each row).
//! The log-probs are computed vocabulary chunk by chunk ([`crate::nn::token_logp`]): no
//! `[B, Tc, V]` logits exist. With a trainable head (full fine-tuning) or layer
//! recomputation (gradient checkpointing, [`super::recompute`]) part of the backward pass is
//! deferred ([`Deferred`]), so a loss built from the scores is differentiated through
//! [`Loss::accumulate_into`].

use burn::tensor::{Device, Gradients, Int, Tensor, TensorData};

use super::hybrid::HybridModel;
use super::recompute::Recompute;
use crate::nn::attention::AttentionContext;
use crate::nn::token_logp::{HeadGrad, TokenLogp, token_logp, token_logp_trainable};
use crate::train::optim::Grads;

/// Largest transient logits chunk (bounds its memory; smaller when the device's binding
/// limit is).
const CHUNK_BYTES: u64 = 64 << 20;

/// The parts of a scored batch's backward pass that run after the loss's own.
#[derive(Debug, Clone, Default)]
pub struct Deferred {
    /// A trainable head's gradient ([`HeadGrad`]).
    pub head: Option<HeadGrad>,
    /// The layers to run again (gradient checkpointing).
    pub layers: Option<Recompute>,
}

/// A training loss `[1]` and what its scores deferred: differentiate it with
/// [`Loss::accumulate_into`], not `value.backward()`. The loss must reach the parameters
/// only through the scores it was built from (true of the SFT and RL losses).
#[derive(Debug, Clone)]
pub struct Loss {
    pub value: Tensor<1>,
    pub deferred: Vec<Deferred>,
}

impl Loss {
    /// The same deferred parts, another value (e.g. scaled).
    pub fn map(self, f: impl FnOnce(Tensor<1>) -> Tensor<1>) -> Self {
        Loss {
            value: f(self.value),
            deferred: self.deferred,
        }
    }

    /// The loss's gradients down to the layers: the graph's backward, then — for a trainable
    /// head — the backward of the heads' surrogates fed with the gradients in the scores
    /// ([`HeadGrad::surrogate`]). Without layer recomputation these are every gradient.
    pub fn backward(&self) -> Gradients {
        let g = self.value.backward();
        let parts: Vec<Tensor<1>> = (self.deferred.iter())
            .filter_map(|d| d.head.as_ref()?.surrogate(&g))
            .collect();
        match parts.len() {
            0 => g,
            1 => parts[0].backward(),
            _ => Tensor::cat(parts, 0).sum().backward(),
        }
    }

    /// Adds every parameter's gradient and the loss to `grads` as one micro-batch:
    /// [`Self::backward`], then the recomputed layers' backward passes.
    pub fn accumulate_into(&self, model: &HybridModel, grads: &mut Grads) {
        let g = self.backward();
        for layers in self.deferred.iter().filter_map(|d| d.layers.as_ref()) {
            layers.backward(model, &g, grads);
        }
        grads.accumulate(model, &g, Some(&self.value));
    }
}

/// Per-token scores of completions, completion-aligned `[B, Tc]` (Tc = longest completion).
#[derive(Debug, Clone)]
pub struct TokenScores {
    /// log π(token) (at temperature τ); 0 on padding.
    pub logp: Tensor<2>,
    /// Entropy of π at each position (only when asked for); 0 on padding.
    pub entropy: Option<Tensor<2>>,
    /// 1 for real completion tokens, 0 for padding.
    pub mask: Tensor<2>,
    /// The backward parts deferred past the loss's own (see [`Loss`]).
    pub deferred: Deferred,
}

/// Bad scoring requests.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoreError {
    #[error("score: {0}")]
    Input(String),
}

/// Scores `completions[b]` after `prompts[b]` (token ids; every prompt non-empty). Logits are
/// divided by `temperature` (1 = the model's distribution) before the softmax, as TRL does.
pub fn score_completions(
    model: &HybridModel,
    prompts: &[Vec<u32>],
    completions: &[Vec<u32>],
    temperature: f32,
    with_entropy: bool,
    device: &Device,
) -> Result<TokenScores, ScoreError> {
    if prompts.len() != completions.len() || prompts.is_empty() {
        return Err(ScoreError::Input(format!(
            "{} prompts for {} completions (need the same number, at least one)",
            prompts.len(),
            completions.len()
        )));
    }
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(ScoreError::Input(format!(
            "temperature must be positive, got {temperature}"
        )));
    }
    let vocab = model.vocab_size();
    for (i, (p, c)) in prompts.iter().zip(completions).enumerate() {
        if p.is_empty() {
            return Err(ScoreError::Input(format!("prompt {i} is empty")));
        }
        if let Some(&t) = p.iter().chain(c).find(|&&t| t as usize >= vocab) {
            return Err(ScoreError::Input(format!(
                "row {i} has token id {t}, outside the vocabulary of {vocab}"
            )));
        }
    }
    let b = prompts.len();
    let tc = completions.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let t = prompts
        .iter()
        .zip(completions)
        .map(|(p, c)| p.len() + c.len())
        .max()
        .unwrap_or(1);
    // Inputs: the sequence minus its last token (the last token is only a target).
    let t_in = (t - 1).max(1);
    let mut ids = vec![0i64; b * t_in];
    let mut gather = vec![0i64; b * tc];
    let mut targets = vec![0i64; b * tc];
    let mut mask = vec![0f32; b * tc];
    for (r, (p, c)) in prompts.iter().zip(completions).enumerate() {
        for (i, &tok) in p.iter().chain(c).take(t_in).enumerate() {
            ids[r * t_in + i] = i64::from(tok);
        }
        for (j, &tok) in c.iter().enumerate() {
            // The logits at input position p + j − 1 predict completion token j.
            gather[r * tc + j] = (p.len() + j - 1) as i64;
            targets[r * tc + j] = i64::from(tok);
            mask[r * tc + j] = 1.0;
        }
    }
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t_in]), device);
    let ctx = AttentionContext::contiguous(b, t_in, 0, device);
    let (hidden, layers) = if model.recompute_layers && device.is_autodiff() {
        let (hidden, kept) = model.hidden_recomputed(ids, &ctx);
        (hidden, Some(kept))
    } else {
        (model.hidden(ids, &mut model.new_cache(), &ctx), None)
    };
    let h = hidden.dims()[2];
    let gather = Tensor::<2, Int>::from_data(TensorData::new(gather, [b, tc]), device);
    let hidden = hidden.gather(1, gather.unsqueeze_dim::<3>(2).repeat_dim(2, h));
    let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [b, tc]), device);
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, tc]), device);
    let limit =
        crate::device::max_binding_bytes(device).map_or(CHUNK_BYTES, |l| l.min(CHUNK_BYTES));
    let (hidden, targets) = (hidden.reshape([b * tc, h]), targets.reshape([b * tc]));
    let head = model.head();
    let trainable = !model.head_frozen() && head.shards.iter().all(|s| s.weight.is_some());
    let (r, head_grad): (TokenLogp, Option<HeadGrad>) = if trainable {
        let (r, g) = token_logp_trainable(head, hidden, targets, temperature, with_entropy, limit);
        (r, Some(g))
    } else {
        let r = token_logp(head, hidden, targets, temperature, with_entropy, limit);
        (r, None)
    };
    let grid = |t: Tensor<1>| t.reshape([b, tc]) * mask.clone();
    Ok(TokenScores {
        logp: grid(r.logp),
        entropy: r.entropy.map(grid),
        mask,
        deferred: Deferred {
            head: head_grad,
            layers,
        },
    })
}
