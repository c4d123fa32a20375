//! The hybrid decoder: embeddings, a stack of (Gated DeltaNet | gated attention) + (MLP | MoE)
//! pre-norm residual layers, the final norm and the LM head.
//!
//! ```text
//! h = x + mixer(rms_norm(x));   y = h + ffn(rms_norm(h))      per layer
//! logits = lm_head(rms_norm(y))                                (lm_head = embed when tied)
//! ```

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor};

use super::cache::{Cache, LayerCache};
use crate::nn::Vocab;
use crate::nn::attention::{Attention, AttentionContext};
use crate::nn::gated_deltanet::GatedDeltaNet;
use crate::nn::mlp::Mlp;
use crate::nn::moe::Moe;
use crate::nn::norm::rms_norm;

/// Token mixer of a layer. Each layer holds one, so the size difference between the
/// variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Mixer {
    Linear(GatedDeltaNet),
    Full(Attention),
}

/// Feed-forward block of a layer (one per layer, like [`Mixer`]).
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Ffn {
    Dense(Mlp),
    Moe(Moe),
}

#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub input_layernorm: Param<Tensor<1>>,
    pub post_attention_layernorm: Param<Tensor<1>>,
    pub mixer: Mixer,
    pub ffn: Ffn,
}

/// Pushes `(module name, &[mut] Linear)` for every projection inside the layers of `$model`.
macro_rules! walk_linears {
    ($model:expr, $out:ident, $($m:tt)*) => {{
        for (i, layer) in (&$($m)* $model.layers).into_iter().enumerate() {
            let p = format!("model.layers.{i}");
            match &$($m)* layer.mixer {
                Mixer::Linear(g) => {
                    let q = format!("{p}.linear_attn");
                    $out.push((format!("{q}.in_proj_qkv"), &$($m)* g.in_proj_qkv));
                    $out.push((format!("{q}.in_proj_z"), &$($m)* g.in_proj_z));
                    $out.push((format!("{q}.in_proj_b"), &$($m)* g.in_proj_b));
                    $out.push((format!("{q}.in_proj_a"), &$($m)* g.in_proj_a));
                    $out.push((format!("{q}.out_proj"), &$($m)* g.out_proj));
                }
                Mixer::Full(a) => {
                    let q = format!("{p}.self_attn");
                    $out.push((format!("{q}.q_proj"), &$($m)* a.q_proj));
                    $out.push((format!("{q}.k_proj"), &$($m)* a.k_proj));
                    $out.push((format!("{q}.v_proj"), &$($m)* a.v_proj));
                    $out.push((format!("{q}.o_proj"), &$($m)* a.o_proj));
                }
            }
            let mut mlps = Vec::new();
            match &$($m)* layer.ffn {
                Ffn::Dense(m) => mlps.push((format!("{p}.mlp"), m)),
                Ffn::Moe(m) => {
                    $out.push((format!("{p}.mlp.gate"), &$($m)* m.gate));
                    for (e, x) in (&$($m)* m.experts).into_iter().enumerate() {
                        mlps.push((format!("{p}.mlp.experts.{e}"), x));
                    }
                    if let Some(s) = &$($m)* m.shared_expert {
                        mlps.push((format!("{p}.mlp.shared_expert"), s));
                    }
                    if let Some(g) = &$($m)* m.shared_expert_gate {
                        $out.push((format!("{p}.mlp.shared_expert_gate"), g));
                    }
                }
            }
            for (q, m) in mlps {
                $out.push((format!("{q}.gate_proj"), &$($m)* m.gate_proj));
                $out.push((format!("{q}.up_proj"), &$($m)* m.up_proj));
                $out.push((format!("{q}.down_proj"), &$($m)* m.down_proj));
            }
        }
    }};
}

#[derive(Module, Debug)]
pub struct HybridModel {
    /// `[V, H]`, in vocabulary shards.
    pub embed_tokens: Vocab,
    pub layers: Vec<DecoderLayer>,
    pub norm: Param<Tensor<1>>,
    /// `[V, H]`, in vocabulary shards; `None` when tied to the embeddings.
    pub lm_head: Option<Vocab>,
    pub eps: f64,
    /// The LoRA settings when adapters are attached ([`super::adapter`]).
    #[module(skip)]
    pub adapter: Option<super::adapter::LoraConfig>,
    /// Gradient checkpointing: training forwards keep only each layer's input and run the
    /// layer again during the backward pass ([`super::recompute`]).
    #[module(skip)]
    pub recompute_layers: bool,
}

impl HybridModel {
    /// Hidden states `[B, T, H]` after the final norm, for tokens `ids` `[B, T]` continuing
    /// `cache` (which is updated in place). `ctx` carries positions and the padding mask.
    pub fn hidden(
        &self,
        ids: Tensor<2, Int>,
        cache: &mut Cache,
        ctx: &AttentionContext,
    ) -> Tensor<3> {
        let [b, t] = ids.dims();
        let h = self.embed_tokens.cols();
        let mut x = self
            .embed_tokens
            .embed(ids.reshape([b * t]))
            .reshape([b, t, h]);
        // One token per row without gradients: the fused decode steps (16-bit layers).
        let decode = t == 1 && !x.device().is_autodiff() && ctx.token_mask.is_none();
        for (layer, lc) in self.layers.iter().zip(cache.layers.iter_mut()) {
            if decode && let Some(y) = self.decode_layer(layer, lc, x.clone(), ctx) {
                x = y;
                continue;
            }
            x = self.layer(layer, lc, x, ctx);
        }
        cache.seq_len += t;
        rms_norm(x, &self.norm, self.eps)
    }

    /// One layer on the composed path: `x` `[B, T, H]` -> the residual stream after it.
    pub(crate) fn layer(
        &self,
        layer: &DecoderLayer,
        lc: &mut LayerCache,
        x: Tensor<3>,
        ctx: &AttentionContext,
    ) -> Tensor<3> {
        let normed = rms_norm(x.clone(), &layer.input_layernorm, self.eps);
        let mixed = match (&layer.mixer, lc) {
            (Mixer::Linear(m), LayerCache::Linear(state)) => {
                // Padded positions are zeroed as transformers does; with left padding and
                // a zero initial state they leave the state untouched.
                let normed = match &ctx.token_mask {
                    Some(m) => normed * m.clone().unsqueeze_dim::<3>(2),
                    None => normed,
                };
                let (y, s) = m.forward(normed, state.take());
                *state = Some(s);
                y
            }
            (Mixer::Full(a), LayerCache::Full(kv)) => a.forward(normed, kv, ctx),
            _ => unreachable!("the cache is built from the same layer list"),
        };
        let x = x + mixed;
        let normed = rms_norm(x.clone(), &layer.post_attention_layernorm, self.eps);
        x + match &layer.ffn {
            Ffn::Dense(m) => m.forward(normed),
            Ffn::Moe(m) => m.forward(normed),
        }
    }

    /// The first part of the forward pass over `ids` `[B, T]` (from a fresh cache) whose
    /// output holds a NaN or ±Inf: `model.embed_tokens`, `model.layers.{i}`, `model.norm` or
    /// `lm_head`; `None` when every output is finite. One readback (diagnostics only).
    pub async fn first_non_finite(
        &self,
        ids: Tensor<2, Int>,
        ctx: &AttentionContext,
    ) -> Result<Option<String>, String> {
        let [b, t] = ids.dims();
        let h = self.embed_tokens.cols();
        let bad = |x: &Tensor<3>| x.clone().is_finite().bool_not().any().float();
        let mut names = vec!["model.embed_tokens".to_string()];
        let mut x = self
            .embed_tokens
            .embed(ids.reshape([b * t]))
            .reshape([b, t, h]);
        let mut flags = vec![bad(&x)];
        let mut cache = self.new_cache();
        for (i, (layer, lc)) in self.layers.iter().zip(cache.layers.iter_mut()).enumerate() {
            x = self.layer(layer, lc, x, ctx);
            names.push(format!("model.layers.{i}"));
            flags.push(bad(&x));
        }
        let x = rms_norm(x, &self.norm, self.eps);
        names.push("model.norm".into());
        flags.push(bad(&x));
        names.push("lm_head".into());
        flags.push(bad(&self.logits(x)));
        let host = super::save::read_flat(Tensor::cat(flags, 0)).await?;
        Ok(host
            .iter()
            .position(|&f| f != 0.0)
            .map(|i| names[i].clone()))
    }

    /// One decode token through `layer` with the fused kernels, `x` `[B, 1, H]` -> the
    /// residual stream after the layer; `None` (nothing run, cache untouched) when the layer
    /// has no fused step (f32 weights, MoE, attention, first token of a sequence).
    fn decode_layer(
        &self,
        layer: &DecoderLayer,
        lc: &mut LayerCache,
        x: Tensor<3>,
        ctx: &AttentionContext,
    ) -> Option<Tensor<3>> {
        let [b, _, h] = x.dims();
        let x2 = x.reshape([b, h]);
        let norm = &layer.input_layernorm;
        let y = match (&layer.mixer, &mut *lc) {
            (Mixer::Linear(m), LayerCache::Linear(Some(state))) => {
                let (y, new_state) = m.decode_step(x2, norm, self.eps, state)?;
                *state = new_state;
                y
            }
            (Mixer::Full(a), LayerCache::Full(kv)) => a.decode_step(x2, norm, self.eps, kv, ctx)?,
            _ => return None,
        };
        let post = &layer.post_attention_layernorm;
        let fused = match &layer.ffn {
            Ffn::Dense(mlp) => mlp.decode_step(y.clone(), post, self.eps),
            Ffn::Moe(_) => None,
        };
        Some(match fused {
            Some(out) => out.reshape([b, 1, h]),
            None => {
                let y = y.reshape([b, 1, h]);
                let normed = rms_norm(y.clone(), post, self.eps);
                y + match &layer.ffn {
                    Ffn::Dense(mlp) => mlp.forward(normed),
                    Ffn::Moe(moe) => moe.forward(normed),
                }
            }
        })
    }

    /// Logits `[B, T, V]` of `hidden` `[B, T, H]`.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.head().logits(hidden)
    }

    /// The output projection: the LM head, or the embedding when tied.
    pub fn head(&self) -> &crate::nn::Vocab {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }

    /// Whether the output projection is frozen (16-bit, or f32 without gradients): training
    /// then scores tokens vocabulary chunk by chunk ([`crate::nn::token_logp`]).
    pub fn head_frozen(&self) -> bool {
        self.head()
            .shards
            .iter()
            .all(|s| s.param().is_none_or(|p| !p.is_require_grad()))
    }

    /// A fresh cache for this model's layers.
    pub fn new_cache(&self) -> Cache {
        Cache {
            layers: self
                .layers
                .iter()
                .map(|l| match l.mixer {
                    Mixer::Linear(_) => LayerCache::Linear(None),
                    Mixer::Full(_) => LayerCache::Full(None),
                })
                .collect(),
            seq_len: 0,
        }
    }

    /// Every projection weight (embedding and LM-head shards included).
    pub fn linears(&self) -> impl Iterator<Item = &crate::nn::Linear> {
        let mut out: Vec<&crate::nn::Linear> = self.embed_tokens.shards.iter().collect();
        out.extend(self.named_linears().into_iter().map(|(_, l)| l));
        if let Some(h) = &self.lm_head {
            out.extend(h.shards.iter());
        }
        out.into_iter()
    }

    /// The projections inside the layers by module name (`model.layers.3.self_attn.q_proj`,
    /// as transformers names them; Qwen3.5's split Gated DeltaNet layout), in layer order.
    /// The embedding and LM head are not among them.
    pub fn named_linears(&self) -> Vec<(String, &crate::nn::Linear)> {
        let mut out = Vec::new();
        walk_linears!(self, out,);
        out
    }

    /// [`Self::named_linears`], mutably.
    pub fn named_linears_mut(&mut self) -> Vec<(String, &mut crate::nn::Linear)> {
        let mut out = Vec::new();
        walk_linears!(self, out, mut);
        out
    }

    /// Parameters (trainable f32 and frozen 16-bit) and the bytes they take on the device.
    pub fn weight_stats(&self) -> (usize, usize) {
        let frozen = self.linears().filter_map(|l| l.frozen.as_ref());
        let (n, bytes) = frozen.fold((0, 0), |(n, b), f| (n + f.rows() * f.cols(), b + f.bytes()));
        (self.num_params() + n, 4 * self.num_params() + bytes)
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.rows()
    }
}
