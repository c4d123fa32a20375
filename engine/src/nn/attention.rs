//! Gated full attention (Qwen3-Next `self_attn`, identical in Qwen3.5).
//!
//! ```text
//! [q_h | gate_h] = (x Wq^T) per head          (per-head interleaved query and gate)
//! q = rope(rms_norm(q)), k = rope(rms_norm(x Wk^T)), v = x Wv^T        (partial NeoX RoPE)
//! y = o_proj( softmax(q kᵀ / √d + causal/padding mask) v ⊙ sigmoid(gate) )   (WGSL op)
//! ```

use burn::module::{Module, Param};
use burn::tensor::Tensor;

use super::{Linear, linear, norm, rope};
use crate::ops::gated_attention::{self, AttentionOptions, KeyPadding, KvCache};
use crate::ops::linear16::{self, Prologue, linear16_decode};

/// Per-call context shared by the layers of one forward.
#[derive(Debug, Clone)]
pub struct AttentionContext {
    /// Position of every token `[B, T]` (left-padded rows start later).
    pub positions: Tensor<2>,
    /// 1 for real tokens, 0 for padding `[B, T]`; `None` when nothing is padded.
    pub token_mask: Option<Tensor<2>>,
    /// Visible key range per row (left padding), over the whole cached sequence.
    pub padding: Option<KeyPadding>,
}

impl AttentionContext {
    /// Unpadded rows at positions `past..past+T`.
    pub fn contiguous(b: usize, t: usize, past: usize, device: &burn::tensor::Device) -> Self {
        let pos: Vec<f32> = (0..b)
            .flat_map(|_| (past..past + t).map(|p| p as f32))
            .collect();
        Self {
            positions: Tensor::<1>::from_floats(pos.as_slice(), device).reshape([b, t]),
            token_mask: None,
            padding: None,
        }
    }
}

#[derive(Module, Debug)]
pub struct Attention {
    /// `[2·nh·hd, H]`: per head `[query (hd) | gate (hd)]`.
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub q_norm: Param<Tensor<1>>,
    pub k_norm: Param<Tensor<1>>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rotary_dim: usize,
    pub rope_theta: f64,
    pub eps: f64,
}

impl Attention {
    /// `x` `[B, T, H]` -> `[B, T, H]`. Without autodiff the keys/values are appended to `kv`
    /// (created on first use) and attention reads the whole cache; with autodiff (training)
    /// the op runs on this call's keys only and is differentiated.
    pub fn forward(
        &self,
        x: Tensor<3>,
        kv: &mut Option<KvCache>,
        ctx: &AttentionContext,
    ) -> Tensor<3> {
        let qg = linear(x.clone(), &self.q_proj);
        let k = linear(x.clone(), &self.k_proj);
        let v = linear(x, &self.v_proj);
        linear(self.attend(qg, k, v, kv, ctx), &self.o_proj)
    }

    /// One decode token for `x` `[B, H]` (the residual stream before this layer's input
    /// norm `norm_w`, zero-centred): the q/k/v projections with the norm fused, attention, and
    /// `o_proj` with the residual added. `None` unless the projections are frozen 16-bit and
    /// the widths suit the decode GEMV.
    pub fn decode_step(
        &self,
        x: Tensor<2>,
        norm_w: &Param<Tensor<1>>,
        norm_eps: f64,
        kv: &mut Option<KvCache>,
        ctx: &AttentionContext,
    ) -> Option<Tensor<2>> {
        let (qw, kw, vw, ow) = (
            self.q_proj.plain16()?,
            self.k_proj.plain16()?,
            self.v_proj.plain16()?,
            self.o_proj.plain16()?,
        );
        let [b, h] = x.dims();
        if kv.is_none() || !linear16::fits_decode(b, h) || !linear16::fits_decode(b, ow.cols()) {
            return None;
        }
        let norm = Prologue::RmsNorm {
            weight: norm_w.val(),
            eps: norm_eps,
        };
        let proj = |w| linear16_decode(x.clone(), w, norm.clone(), None).unsqueeze_dim::<3>(1);
        let y = self.attend(proj(qw), proj(kw), proj(vw), kv, ctx);
        Some(linear16_decode(
            y.reshape([b, ow.cols()]),
            ow,
            Prologue::None,
            Some(x),
        ))
    }

    /// Attention of projected `qg` `[B, T, 2·nh·hd]` (queries and gates), `k`, `v`
    /// `[B, T, nkv·hd]` -> gated output `[B, T, nh·hd]` (before `o_proj`).
    fn attend(
        &self,
        qg: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
        kv: &mut Option<KvCache>,
        ctx: &AttentionContext,
    ) -> Tensor<3> {
        let [b, t, _] = qg.dims();
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let qg = qg.reshape([b, t, nh, 2 * hd]);
        let q = norm::rms_norm(qg.clone().narrow(3, 0, hd), &self.q_norm, self.eps);
        let gate = qg.narrow(3, hd, hd);
        let k = norm::rms_norm(k.reshape([b, t, nkv, hd]), &self.k_norm, self.eps);
        let v = v.reshape([b, t, nkv, hd]);
        let q = rope::apply(q, &ctx.positions, self.rotary_dim, self.rope_theta);
        let k = rope::apply(k, &ctx.positions, self.rotary_dim, self.rope_theta);

        let y = if q.device().is_autodiff() {
            let opts = AttentionOptions {
                past_len: 0,
                padding: ctx.padding.clone(),
                ..Default::default()
            };
            gated_attention::gated_attention(q, k, v, gate, &opts)
        } else {
            let cache = kv.get_or_insert_with(|| KvCache::new(b, nkv, hd, &q.device()));
            cache
                .append(k, v)
                .expect("keys and values follow the validated config");
            let opts = AttentionOptions {
                past_len: cache.len() - t,
                padding: ctx.padding.clone(),
                ..Default::default()
            };
            cache.attend(q, gate, &opts)
        }
        .expect("shapes follow the validated config");
        y.reshape([b, t, nh * hd])
    }
}
