//! Text generation: prefill, then one-token decode steps on the dedicated decode kernels.
//!
//! Prompts of different lengths are left-padded into one batch (padding is masked in the
//! attention layers and zeroed before the linear-attention layers, where with a zero initial
//! state it leaves the recurrent state untouched). Each step reads back once, with an async
//! readback, so the same loop runs in browsers ([`generate_async`]); natively [`generate`]
//! blocks on it. Greedy decoding (temperature 0, no repetition penalty) of a large
//! vocabulary (≥ [`DEVICE_GREEDY_MIN_VOCAB`]) picks tokens on the device, shard by shard:
//! only each shard's best logit, its index and a count of non-finite logits come back
//! (`[B, 3 × shards]` numbers instead of `[B, V]`: 12 bytes instead of 1 MB per row at
//! Qwen3.5's 248k). Sampling with top-k (k ≤ 512) finds each row's k best logits there
//! too (each shard's top-k, then the top-k of those) and reads back only those and their
//! ids; temperature, top-p and min-p then run on the host over the k candidates, so the
//! tokens are exactly those of the host sampler over the whole row. Sampling without top-k
//! (or with a repetition penalty), and small vocabularies (where the extra launches cost
//! more than the read-back saves), read the row of logits.
//!
//! Sampling follows transformers' processors, in order: repetition penalty over prompt and
//! generated tokens, temperature, top-k, top-p, min-p; temperature 0 is greedy (argmax).

use std::ops::ControlFlow;

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::cache::Cache;
use super::hybrid::HybridModel;
use crate::nn::attention::AttentionContext;
use crate::ops::gated_attention::KeyPadding;
use crate::ops::topk::{MAX_K, topk_rows};

/// Sampling settings (defaults: greedy).
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set with cumulative probability ≥ p (1 = off).
    pub top_p: f32,
    /// Drop tokens with probability < min_p · max probability (0 = off).
    pub min_p: f32,
    /// > 1 discourages tokens already present (1 = off).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Generation stops for a row once it produced one of these.
    pub eos_token_ids: Vec<u32>,
}

/// Bad generation requests.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerateError {
    #[error("generate: {0}")]
    Input(String),
    #[error("generate: reading logits from the device failed: {0}")]
    Device(String),
    /// The logits hold a NaN or ±Inf; `origin` is the first part of the model whose output
    /// is non-finite (`model.layers.3`, ...).
    #[error(
        "generate: the logits of step {step} are not finite; the first non-finite output is \
         {origin}'s"
    )]
    NonFinite { step: usize, origin: String },
}

/// Checks prompts against the vocabulary.
fn check_prompts(prompts: &[Vec<u32>], vocab: usize) -> Result<(), GenerateError> {
    if prompts.is_empty() {
        return Err(GenerateError::Input("no prompts".into()));
    }
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(GenerateError::Input(format!("prompt {i} is empty")));
        }
        if let Some(&t) = p.iter().find(|&&t| t as usize >= vocab) {
            return Err(GenerateError::Input(format!(
                "prompt {i} has token id {t}, outside the vocabulary of {vocab}"
            )));
        }
    }
    Ok(())
}

/// The model's input for left-padded `prompts`: ids `[B, T]` and the attention context.
pub fn left_padded(
    prompts: &[Vec<u32>],
    device: &Device,
) -> (Tensor<2, Int>, AttentionContext, Vec<usize>) {
    let b = prompts.len();
    let t = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let pads: Vec<usize> = prompts.iter().map(|p| t - p.len()).collect();
    let mut ids = vec![0i64; b * t];
    let mut pos = vec![0f32; b * t];
    let mut mask = vec![0f32; b * t];
    for (r, p) in prompts.iter().enumerate() {
        for (i, &tok) in p.iter().enumerate() {
            let at = r * t + pads[r] + i;
            ids[at] = i64::from(tok);
            pos[at] = i as f32;
            mask[at] = 1.0;
        }
    }
    let padded = pads.iter().any(|&p| p > 0);
    let ctx = AttentionContext {
        positions: Tensor::from_data(TensorData::new(pos, [b, t]), device),
        token_mask: padded.then(|| Tensor::from_data(TensorData::new(mask, [b, t]), device)),
        padding: padded.then(|| KeyPadding::left(&pads)),
    };
    (
        Tensor::from_data(TensorData::new(ids, [b, t]), device),
        ctx,
        pads,
    )
}

/// Picks the next token from one row of logits.
pub fn sample(logits: &mut [f32], seen: &[u32], s: &Sampling, rng: &mut StdRng) -> u32 {
    if s.repetition_penalty != 1.0 {
        for &t in seen {
            let l = &mut logits[t as usize];
            *l = if *l > 0.0 {
                *l / s.repetition_penalty
            } else {
                *l * s.repetition_penalty
            };
        }
    }
    let argmax = |l: &[f32]| {
        l.iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &x)| {
                if x > best.1 { (i, x) } else { best }
            })
            .0 as u32
    };
    if s.temperature <= 0.0 {
        return argmax(logits);
    }
    // Candidates sorted by logit, descending (stable: ties keep the lower id first).
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if s.top_k > 0 {
        idx.truncate(s.top_k);
    }
    let values: Vec<f32> = idx.iter().map(|&i| logits[i]).collect();
    let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    sample_candidates(&values, &ids, s, rng)
}

/// Samples among candidates sorted by descending logit (`values`, their token `ids`), the
/// row already cut to top-k: temperature, then top-p, then min-p, then one uniform draw.
fn sample_candidates(values: &[f32], ids: &[u32], s: &Sampling, rng: &mut StdRng) -> u32 {
    let max = values[0] / s.temperature;
    let mut probs: Vec<f32> = values
        .iter()
        .map(|&l| (l / s.temperature - max).exp())
        .collect();
    let total: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    let mut keep = probs.len();
    if s.top_p < 1.0 {
        let mut acc = 0.0;
        keep = probs
            .iter()
            .position(|&p| {
                acc += p;
                acc >= s.top_p
            })
            .map_or(keep, |i| i + 1);
    }
    if s.min_p > 0.0 {
        let floor = s.min_p * probs[0];
        keep = probs[..keep]
            .iter()
            .take_while(|&&p| p >= floor)
            .count()
            .max(1);
    }
    let probs = &probs[..keep];
    let total: f32 = probs.iter().sum();
    let mut u = rng.random::<f32>() * total;
    for (p, &i) in probs.iter().zip(ids) {
        if u < *p {
            return i;
        }
        u -= p;
    }
    ids[keep - 1]
}

/// The vocabulary size from which tokens (greedy) or top-k candidates (sampling) are
/// picked on the device.
pub const DEVICE_GREEDY_MIN_VOCAB: usize = 16_384;

/// Where a generation picks its tokens (decided once from the settings).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pick {
    /// Read each row of logits and sample on the host.
    Host,
    /// Greedy on the device: each shard's best logit and index.
    Greedy,
    /// Top-k (k ≤ [`MAX_K`]) on the device, the rest of sampling on the host.
    TopK(usize),
}

impl Pick {
    fn for_settings(s: &Sampling, vocab: usize) -> Self {
        if vocab < DEVICE_GREEDY_MIN_VOCAB || s.repetition_penalty != 1.0 {
            Pick::Host
        } else if s.temperature <= 0.0 {
            Pick::Greedy
        } else if (1..=MAX_K).contains(&s.top_k) {
            Pick::TopK(s.top_k)
        } else {
            Pick::Host
        }
    }
}

/// What a step hands to the sampler: tokens already chosen on the device (greedy), each
/// row's `k` best logits and their ids (descending), or the rows of logits `[B · V]`.
enum Choices {
    Ids(Vec<u32>),
    Candidates {
        k: usize,
        values: Vec<f32>,
        ids: Vec<u32>,
    },
    Logits(Vec<f32>),
}

impl Choices {
    /// Every row repeated `group` times (the cache was forked after the prompt).
    fn repeat_rows(self, group: usize, vocab: usize) -> Self {
        let rep = |v: Vec<f32>, n: usize| -> Vec<f32> {
            v.chunks(n).flat_map(|row| row.repeat(group)).collect()
        };
        match self {
            Choices::Ids(ids) => Choices::Ids(ids.iter().flat_map(|&t| vec![t; group]).collect()),
            Choices::Candidates { k, values, ids } => Choices::Candidates {
                k,
                values: rep(values, k),
                ids: ids.chunks(k).flat_map(|row| row.repeat(group)).collect(),
            },
            Choices::Logits(l) => Choices::Logits(rep(l, vocab)),
        }
    }

    /// Row `r`'s token.
    fn pick(
        &mut self,
        r: usize,
        vocab: usize,
        seen: &[u32],
        s: &Sampling,
        rng: &mut StdRng,
    ) -> u32 {
        match self {
            Choices::Ids(ids) => ids[r],
            Choices::Candidates { k, values, ids } => {
                let at = r * *k..(r + 1) * *k;
                sample_candidates(&values[at.clone()], &ids[at], s, rng)
            }
            Choices::Logits(l) => sample(&mut l[r * vocab..(r + 1) * vocab], seen, s, rng),
        }
    }
}

/// Reads back a float tensor.
async fn read(t: Tensor<2>) -> Result<Vec<f32>, GenerateError> {
    let device = t.device();
    t.into_data_async()
        .await
        .map_err(|e| GenerateError::Device(crate::device::describe_error(&e.to_string(), &device)))?
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| GenerateError::Device(format!("{e:?}")))
}

/// Logits `[B, rows]` of each head shard for `x` `[B, 1, H]`, with each shard's first id.
fn shard_logits(model: &HybridModel, x: &Tensor<3>) -> Vec<(usize, Tensor<2>)> {
    let b = x.dims()[0];
    let mut offset = 0usize;
    model
        .head()
        .shards
        .iter()
        .map(|shard| {
            let rows = shard.dims()[0];
            let l = shard.forward(x.clone()).reshape([b, rows]);
            offset += rows;
            (offset - rows, l)
        })
        .collect()
}

/// `[B, 1]` count of non-finite values in each row of `l`.
fn non_finite(l: Tensor<2>) -> Tensor<2> {
    l.is_finite().bool_not().float().sum_dim(1)
}

/// Greedy tokens for the last position of `hidden` `[B, T, H]`, chosen on the device shard
/// by shard; None when a logit is non-finite (the caller then reads the row and names the
/// origin). Between shards a tie goes to the lower shard, as the host's argmax takes the
/// lower id; inside a shard it is the device reduction's pick.
async fn greedy_last(
    model: &HybridModel,
    hidden: Tensor<3>,
) -> Result<Option<Vec<u32>>, GenerateError> {
    let [b, t, _] = hidden.dims();
    let shards = shard_logits(model, &hidden.narrow(1, t - 1, 1));
    let s = shards.len();
    let mut parts = Vec::with_capacity(3 * s);
    for (_, l) in &shards {
        let (best, at) = l.clone().max_dim_with_indices(1);
        parts.extend([best, at.float(), non_finite(l.clone())]);
    }
    let host = read(Tensor::cat(parts, 1)).await?;
    let mut ids = Vec::with_capacity(b);
    for row in host.chunks(3 * s) {
        let mut pick: Option<(f32, u32)> = None;
        for (part, (first, _)) in row.chunks(3).zip(&shards) {
            let [best, at, bad] = [part[0], part[1], part[2]];
            if bad != 0.0 {
                return Ok(None);
            }
            if pick.is_none_or(|(v, _)| best > v) {
                pick = Some((best, *first as u32 + at as u32));
            }
        }
        ids.push(pick.map_or(0, |p| p.1));
    }
    Ok(Some(ids))
}

/// The `k` best logits of the last position of `hidden` `[B, T, H]` and their ids, in the
/// host sampler's order (descending, ties to the lower id), found on the device: each
/// shard's top-k, then the top-k of those. Reads back `2k + shards` numbers per row. None
/// when a logit is non-finite (as [`greedy_last`]).
async fn top_k_last(
    model: &HybridModel,
    hidden: Tensor<3>,
    k: usize,
) -> Result<Option<Choices>, GenerateError> {
    let t = hidden.dims()[1];
    let shards = shard_logits(model, &hidden.narrow(1, t - 1, 1));
    let (mut values, mut ids, mut bad) = (Vec::new(), Vec::new(), Vec::new());
    for (first, l) in shards {
        bad.push(non_finite(l.clone()));
        let (v, i) = topk_rows(l, k);
        values.push(v);
        ids.push(i.float().add_scalar(first as f64));
    }
    let (values, ids) = if values.len() == 1 {
        (values.remove(0), ids.remove(0))
    } else {
        // Candidates are in id order across shards, so ties still go to the lower id.
        let (v, at) = topk_rows(Tensor::cat(values, 1), k);
        (v, Tensor::cat(ids, 1).gather(1, at))
    };
    let k = values.dims()[1];
    let s = bad.len();
    let host = read(Tensor::cat(vec![values, ids, Tensor::cat(bad, 1)], 1)).await?;
    let (mut values, mut ids) = (Vec::new(), Vec::new());
    for row in host.chunks(2 * k + s) {
        if row[2 * k..].iter().any(|&n| n != 0.0) {
            return Ok(None);
        }
        values.extend_from_slice(&row[..k]);
        ids.extend(row[k..2 * k].iter().map(|&i| i as u32));
    }
    Ok(Some(Choices::Candidates { k, values, ids }))
}

/// The sampler's input for the last position of `hidden`: tokens or candidates picked on
/// the device, or (host sampling, or a non-finite logit to report) the logits rows.
async fn last_choices(
    model: &HybridModel,
    hidden: Tensor<3>,
    pick: Pick,
) -> Result<Choices, GenerateError> {
    match pick {
        Pick::Greedy => {
            if let Some(ids) = greedy_last(model, hidden.clone()).await? {
                return Ok(Choices::Ids(ids));
            }
        }
        Pick::TopK(k) => {
            if let Some(c) = top_k_last(model, hidden.clone(), k).await? {
                return Ok(c);
            }
        }
        Pick::Host => {}
    }
    Ok(Choices::Logits(last_logits(model, hidden).await?))
}

/// Reads the last position's logits `[B, V]` of `hidden` `[B, T, H]`.
async fn last_logits(model: &HybridModel, hidden: Tensor<3>) -> Result<Vec<f32>, GenerateError> {
    let [b, t, _] = hidden.dims();
    let logits = model
        .logits(hidden.narrow(1, t - 1, 1))
        .reshape([b, model.vocab_size()]);
    read(logits).await
}

/// Generates continuations of `prompts` (token ids); returns the new tokens of every row
/// (up to and including an EOS token). `on_token(row, token)` sees each token as it is
/// chosen.
pub async fn generate_async(
    model: &HybridModel,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    device: &Device,
    on_token: impl FnMut(usize, u32),
) -> Result<Vec<Vec<u32>>, GenerateError> {
    generate_groups_async(model, prompts, 1, opts, device, on_token).await
}

/// Generates `group` continuations of every prompt from one shared prefill (the cache is
/// forked after the prompt, as GRPO rollouts need). Row `i·group + j` of the result is the
/// j-th continuation of prompt i; `on_token` sees those row numbers.
pub async fn generate_groups_async(
    model: &HybridModel,
    prompts: &[Vec<u32>],
    group: usize,
    opts: &GenerateOptions,
    device: &Device,
    mut on_token: impl FnMut(usize, u32),
) -> Result<Vec<Vec<u32>>, GenerateError> {
    generate_streaming_async(model, prompts, group, opts, device, |r, t| {
        on_token(r, t);
        ControlFlow::Continue(())
    })
    .await
}

/// [`generate_groups_async`] whose callback can stop generation: after `on_token` returns
/// `ControlFlow::Break`, no further step runs and the tokens chosen so far are returned
/// (a UI's "stop" button, a streaming client that went away).
pub async fn generate_streaming_async(
    model: &HybridModel,
    prompts: &[Vec<u32>],
    group: usize,
    opts: &GenerateOptions,
    device: &Device,
    mut on_token: impl FnMut(usize, u32) -> ControlFlow<()>,
) -> Result<Vec<Vec<u32>>, GenerateError> {
    check_prompts(prompts, model.vocab_size())?;
    if group == 0 {
        return Err(GenerateError::Input("group size must be at least 1".into()));
    }
    let mut rng = StdRng::seed_from_u64(opts.sampling.seed);
    let (ids, ctx, pads) = left_padded(prompts, device);
    let mut cache: Cache = model.new_cache();
    let hidden = model.hidden(ids, &mut cache, &ctx);
    let vocab = model.vocab_size();
    let pick = Pick::for_settings(&opts.sampling, vocab);
    let mut choices = last_choices(model, hidden, pick).await?;
    check_finite(model, &choices, prompts, &[], 0, device).await?;
    let (prompts, pads) = if group > 1 {
        cache = cache.fork(group);
        choices = choices.repeat_rows(group, vocab);
        let rep = |i: usize| i / group;
        let n = prompts.len() * group;
        (
            (0..n).map(|i| prompts[rep(i)].clone()).collect::<Vec<_>>(),
            (0..n).map(|i| pads[rep(i)]).collect::<Vec<_>>(),
        )
    } else {
        (prompts.to_vec(), pads)
    };
    let b = prompts.len();
    let mut seen: Vec<Vec<u32>> = prompts.clone();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut done = vec![false; b];
    let padding = pads.iter().any(|&p| p > 0).then(|| KeyPadding::left(&pads));
    for step in 0..opts.max_new_tokens {
        let mut next = vec![0i64; b];
        let mut stop = false;
        for r in 0..b {
            let tok = choices.pick(r, vocab, &seen[r], &opts.sampling, &mut rng);
            next[r] = i64::from(tok);
            if !done[r] {
                out[r].push(tok);
                seen[r].push(tok);
                stop |= on_token(r, tok).is_break();
                done[r] = opts.eos_token_ids.contains(&tok);
            }
        }
        if stop || done.iter().all(|&d| d) || step + 1 == opts.max_new_tokens {
            break;
        }
        let pos: Vec<f32> = (0..b).map(|r| (prompts[r].len() + step) as f32).collect();
        let ctx = AttentionContext {
            positions: Tensor::from_data(TensorData::new(pos, [b, 1]), device),
            token_mask: None,
            padding: padding.clone(),
        };
        let ids = Tensor::from_data(TensorData::new(next, [b, 1]), device);
        let hidden = model.hidden(ids, &mut cache, &ctx);
        choices = last_choices(model, hidden, pick).await?;
        check_finite(model, &choices, &prompts, &out, step + 1, device).await?;
    }
    Ok(out)
}

/// Fails when the step's logits hold a NaN or ±Inf (device-picked tokens come only from
/// finite logits), naming the first part of the model whose output is non-finite (found by
/// re-running the sequences so far, `prompts` + `out`, on the composed path).
async fn check_finite(
    model: &HybridModel,
    choices: &Choices,
    prompts: &[Vec<u32>],
    out: &[Vec<u32>],
    step: usize,
    device: &Device,
) -> Result<(), GenerateError> {
    let Choices::Logits(logits) = choices else {
        return Ok(());
    };
    if logits.iter().all(|x| x.is_finite()) {
        return Ok(());
    }
    let seqs: Vec<Vec<u32>> = (0..prompts.len())
        .map(|r| [&prompts[r][..], out.get(r).map_or(&[][..], |o| &o[..])].concat())
        .collect();
    let (ids, ctx, _) = left_padded(&seqs, device);
    let origin = match model.first_non_finite(ids, &ctx).await {
        Ok(Some(name)) => name,
        Ok(None) => "the fused decode path (the composed path is finite)".into(),
        Err(e) => format!("unknown (locating it failed: {e})"),
    };
    Err(GenerateError::NonFinite { step, origin })
}

/// Blocking [`generate_async`] (native only).
#[cfg(not(target_family = "wasm"))]
pub fn generate(
    model: &HybridModel,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    device: &Device,
    on_token: impl FnMut(usize, u32),
) -> Result<Vec<Vec<u32>>, GenerateError> {
    pollster::block_on(generate_async(model, prompts, opts, device, on_token))
}

/// Blocking [`generate_groups_async`] (native only).
#[cfg(not(target_family = "wasm"))]
pub fn generate_groups(
    model: &HybridModel,
    prompts: &[Vec<u32>],
    group: usize,
    opts: &GenerateOptions,
    device: &Device,
    on_token: impl FnMut(usize, u32),
) -> Result<Vec<Vec<u32>>, GenerateError> {
    pollster::block_on(generate_groups_async(
        model, prompts, group, opts, device, on_token,
    ))
}
