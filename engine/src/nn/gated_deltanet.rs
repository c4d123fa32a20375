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
}
