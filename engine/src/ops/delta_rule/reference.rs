//! The gated delta rule written with plain Burn tensor ops: the per-token recurrence of
//! transformers' `torch_recurrent_gated_delta_rule`. It is the oracle in tests and the
//! implementation on backends without WGSL (Burn's autodiff differentiates it there).
//!
//! For t = 0..T-1, per batch and value head, with S: [dk, dv]:
//!   S = exp(g_t) S;  delta = beta_t (v_t - S^T k_t);  S = S + k_t delta^T;  o_t = S^T q_t

use burn::tensor::Tensor;

use super::{DeltaRuleOptions, DeltaRuleOutput};

/// `x * rsqrt(sum(x^2, -1) + 1e-6)` over the last dim (transformers' `l2norm`).
pub fn l2norm(x: Tensor<4>) -> Tensor<4> {
    let inv = (x.clone() * x.clone())
        .sum_dim(3)
        .add_scalar(super::L2NORM_EPS)
        .sqrt()
        .recip();
    x * inv
}

/// Repeats key heads so value head h sees key head h / (hv / hk): [B,T,hk,d] -> [B,T,hv,d].
fn repeat_heads(x: Tensor<4>, hv: usize) -> Tensor<4> {
    let [b, t, hk, d] = x.dims();
    if hk == hv {
        return x;
    }
    x.unsqueeze_dim::<5>(3)
        .repeat_dim(3, hv / hk)
        .reshape([b, t, hv, d])
}

/// Reference forward; shapes as in [`super::delta_rule`] (validated by the caller).
pub fn forward(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    g: Tensor<3>,
    beta: Tensor<3>,
    initial_state: Option<Tensor<4>>,
    opts: &DeltaRuleOptions,
) -> DeltaRuleOutput {
    let [b, t, _, dk] = q.dims();
    let [_, _, hv, dv] = v.dims();
    let (q, k) = if opts.use_qk_l2norm {
        (l2norm(q), l2norm(k))
    } else {
        (q, k)
    };
    let q = repeat_heads(q, hv).mul_scalar(opts.scale_for(dk));
    let k = repeat_heads(k, hv);
    // [B,T,H,d] -> [B,H,T,d] so each step slices one token.
    let q = q.swap_dims(1, 2);
    let k = k.swap_dims(1, 2);
    let v = v.swap_dims(1, 2);
    let decay = g.swap_dims(1, 2).exp();
    let beta = beta.swap_dims(1, 2);

    let device = v.device();
    let mut s = initial_state.unwrap_or_else(|| Tensor::zeros([b, hv, dk, dv], &device));
    let mut outs = Vec::with_capacity(t);
    for ti in 0..t {
        let qt = q.clone().narrow(2, ti, 1).reshape([b, hv, dk, 1]);
        let kt = k.clone().narrow(2, ti, 1).reshape([b, hv, dk, 1]);
        let vt = v.clone().narrow(2, ti, 1); // [b, hv, 1, dv]
        let at = decay.clone().narrow(2, ti, 1).reshape([b, hv, 1, 1]);
        let bt = beta.clone().narrow(2, ti, 1).reshape([b, hv, 1, 1]);
        s = s * at;
        let kv = (s.clone() * kt.clone()).sum_dim(2); // [b, hv, 1, dv]
        let delta = (vt - kv) * bt;
        s = s + kt * delta;
        outs.push((s.clone() * qt).sum_dim(2)); // [b, hv, 1, dv]
    }
    DeltaRuleOutput {
        output: Tensor::cat(outs, 2).swap_dims(1, 2),
        final_state: s,
    }
}
