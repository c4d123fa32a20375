//! Gated DeltaNet token mixer (Qwen3-Next `linear_attn`, Qwen3.5 the same maths).
//!
//! ```text
//! [q|k|v] = conv_silu(x Wqkv^T)   z = x Wz^T   b = x Wb^T   a = x Wa^T
//! beta = sigmoid(b)               g = -exp(A_log) · softplus(a + dt_bias)
//! o = delta_rule(q, k, v, g, beta; l2norm q/k, scale dk^-0.5)      (WGSL kernels)
//! y = out_proj(gated_rms_norm(o, z))
//! ```
//! Weights are held in Qwen3.5's flat layout (`in_proj_qkv` = [Q | K | V] head-major, `in_proj_z`,
//! `in_proj_b`, `in_proj_a`); Qwen3-Next's grouped `in_proj_qkvz` / `in_proj_ba` are regrouped
//! into it at load time.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::activation::{sigmoid, softplus};

use super::{Linear, conv, linear, norm};
use crate::ops::delta_rule::{self, DeltaRuleOptions};
use crate::ops::gdn_step::{StepConfig, gdn_step};
use crate::ops::linear16::{self, Packed, Prologue, linear16_decode};

/// Carried state of one linear-attention layer.
#[derive(Debug, Clone)]
pub struct LinearState {
    /// Last K pre-conv columns `[B, K, C]`.
    pub conv: Tensor<3>,
    /// Delta-rule state `[B, nv, dk, dv]` (f32).
    pub recurrent: Tensor<4>,
}

impl LinearState {
    /// Copies of every batch row `i` repeated `n` times (row-major), for forking rollouts.
    pub fn repeat_rows(&self, n: usize) -> Self {
        Self {
            conv: repeat_batch(self.conv.clone(), n),
            recurrent: repeat_batch(self.recurrent.clone(), n),
        }
    }
}

/// `[B, ...]` -> `[B·n, ...]`, each row repeated n times consecutively.
pub fn repeat_batch<const D: usize>(x: Tensor<D>, n: usize) -> Tensor<D> {
    let dims = x.dims();
    let rest: usize = dims[1..].iter().product();
    let mut out = dims;
    out[0] *= n;
    x.reshape([dims[0], 1, rest]).repeat_dim(1, n).reshape(out)
}

#[derive(Module, Debug)]
pub struct GatedDeltaNet {
    /// `[2·nk·dk + nv·dv, H]`.
    pub in_proj_qkv: Linear,
    /// `[nv·dv, H]`.
    pub in_proj_z: Linear,
    /// `[nv, H]`.
    pub in_proj_b: Linear,
    /// `[nv, H]`.
    pub in_proj_a: Linear,
    /// Depthwise conv weight `[C, K]`.
    pub conv1d: Param<Tensor<2>>,
    pub a_log: Param<Tensor<1>>,
    pub dt_bias: Param<Tensor<1>>,
    /// Gated norm weight `[dv]` (used as-is).
    pub norm: Param<Tensor<1>>,
    /// `[H, nv·dv]`.
    pub out_proj: Linear,
    pub nk: usize,
    pub nv: usize,
    pub dk: usize,
    pub dv: usize,
    pub eps: f64,
    /// What the fused decode step needs beyond the weights above (see [`Self::prepare_decode`]).
    #[module(skip)]
    pub decode: Option<DecodeWeights>,
}

/// Derived buffers of the fused decode step: `[W_b; W_a]` as one 16-bit matrix (one GEMV for
/// both gates) and the small f32 parameters in one flat buffer (conv weight | A_log | dt_bias |
/// norm weight). Costs `2·nv·H·2 + (C·K + 2·nv + dv)·4` bytes per layer.
#[derive(Debug, Clone)]
pub struct DecodeWeights {
    pub ba: Packed,
    pub consts: Tensor<1>,
}

impl GatedDeltaNet {
    /// `x` `[B, T, H]` from `state` (None at the start of a sequence) -> output `[B, T, H]`
    /// and the new state. One token with a state runs the decode kernel (unless gradients are
    /// being recorded).
    pub fn forward(&self, x: Tensor<3>, state: Option<LinearState>) -> (Tensor<3>, LinearState) {
        let [b, t, _] = x.dims();
        let (nk, nv, dk, dv) = (self.nk, self.nv, self.dk, self.dv);
        let mixed = linear(x.clone(), &self.in_proj_qkv);
        let z = linear(x.clone(), &self.in_proj_z).reshape([b, t, nv, dv]);
        let beta = sigmoid(linear(x.clone(), &self.in_proj_b));
        let a = linear(x, &self.in_proj_a);
        let g = softplus(a + self.dt_bias.val().unsqueeze::<3>(), 1.0)
            * self.a_log.val().exp().neg().unsqueeze::<3>();

        let (conv_state, rec) = match state {
            Some(s) => (Some(s.conv), Some(s.recurrent)),
            None => (None, None),
        };
        let (mixed, conv) = conv::causal_conv(mixed, &self.conv1d, conv_state);
        let q = mixed.clone().narrow(2, 0, nk * dk).reshape([b, t, nk, dk]);
        let k = mixed
            .clone()
            .narrow(2, nk * dk, nk * dk)
            .reshape([b, t, nk, dk]);
        let v = mixed
            .narrow(2, 2 * nk * dk, nv * dv)
            .reshape([b, t, nv, dv]);

        // The smallest chunk that holds a short sequence: same result, less padded work.
        let opts = DeltaRuleOptions {
            chunk_size: match t {
                0..=16 => 16,
                17..=32 => 32,
                _ => 64,
            },
            ..DeltaRuleOptions::default()
        };
        let decode = t == 1 && rec.is_some() && !v.device().is_autodiff();
        let out = match rec {
            Some(s) if decode => delta_rule::delta_rule_decode(q, k, v, g, beta, s, &opts),
            rec => delta_rule::delta_rule(q, k, v, g, beta, rec, &opts),
        }
        .expect("shapes follow the validated config");
        let o = norm::gated_rms_norm(out.output, z, &self.norm, self.eps).reshape([b, t, nv * dv]);
        (
            linear(o, &self.out_proj),
            LinearState {
                conv,
                recurrent: out.final_state,
            },
        )
    }

    /// Builds [`DecodeWeights`] when every projection is frozen in one 16-bit format and the
    /// widths suit the decode GEMV; otherwise decoding keeps the composed path.
    pub fn prepare_decode(&mut self) {
        let frozen = |l: &Linear| l.frozen.clone();
        let (Some(qkv), Some(z), Some(b), Some(a), Some(out)) = (
            frozen(&self.in_proj_qkv),
            frozen(&self.in_proj_z),
            frozen(&self.in_proj_b),
            frozen(&self.in_proj_a),
            frozen(&self.out_proj),
        ) else {
            return;
        };
        let same = [&z, &b, &a, &out].iter().all(|p| p.half() == qkv.half());
        let wg = self.dk.max(self.dv);
        if !same
            || !linear16::fits_decode(1, qkv.cols())
            || !linear16::fits_decode(1, out.cols())
            || wg > 256
        {
            return;
        }
        let Ok(ba) = Packed::concat_rows(&b, &a) else {
            return;
        };
        let consts = Tensor::cat(
            vec![
                self.conv1d.val().flatten(0, 1),
                self.a_log.val(),
                self.dt_bias.val(),
                self.norm.val(),
            ],
            0,
        );
        self.decode = Some(DecodeWeights { ba, consts });
    }

    /// One decode token for `x` `[B, H]` (the residual stream before this layer's input
    /// norm): the input RMSNorm (`norm_w`, zero-centred), the projections, the fused step and
    /// `out_proj` with the residual added — five launches. `None` when the layer is not
    /// prepared ([`Self::prepare_decode`]) or the batch is too large for the GEMV.
    pub fn decode_step(
        &self,
        x: Tensor<2>,
        norm_w: &Param<Tensor<1>>,
        norm_eps: f64,
        state: &LinearState,
    ) -> Option<(Tensor<2>, LinearState)> {
        let d = self.decode.as_ref()?;
        // `d.ba` holds the base b/a rows: no update may be switched on beside them.
        self.in_proj_b.plain16()?;
        self.in_proj_a.plain16()?;
        let [b, h] = x.dims();
        if !linear16::fits_decode(b, h) {
            return None;
        }
        let (qkv, z, out) = (
            self.in_proj_qkv.plain16()?,
            self.in_proj_z.plain16()?,
            self.out_proj.plain16()?,
        );
        let norm = Prologue::RmsNorm {
            weight: norm_w.val(),
            eps: norm_eps,
        };
        let mixed = linear16_decode(x.clone(), qkv, norm.clone(), None);
        let zz = linear16_decode(x.clone(), z, norm.clone(), None);
        let ba = linear16_decode(x.clone(), &d.ba, norm, None);
        let cfg = StepConfig {
            hk: self.nk,
            hv: self.nv,
            dk: self.dk,
            dv: self.dv,
            kc: self.conv1d.val().dims()[1],
            eps: self.eps as f32,
        };
        let step = gdn_step(
            mixed,
            zz,
            ba,
            &d.consts,
            state.conv.clone(),
            state.recurrent.clone(),
            cfg,
        );
        let y = linear16_decode(step.output, out, Prologue::None, Some(x));
        Some((
            y,
            LinearState {
                conv: step.conv,
                recurrent: step.state,
            },
        ))
    }
}
