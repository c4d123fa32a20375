//! One decode token of a Gated DeltaNet mixer after its input projections, in one launch
//! (`shaders/gated_deltanet_step.wgsl`): conv state update + SiLU, q/k l2 norms, decay and
//! beta gating, the delta-rule update and the gated RMSNorm of the output.
//!
//! ```text
//! window = [conv[1..K] ; x]   u = silu(conv_w · window)   q = l2(u_q)/√dk   k = l2(u_k)   v = u_v
//! g = -exp(A_log) softplus(a + dt_bias)   β = σ(b)
//! S = e^g S + k β (v - e^g S^T k)^T      o = S^T q      y = rms(o) · norm_w · silu(z)
//! ```
//! The same maths as the composed path of [`crate::nn::gated_deltanet`] (conv, then the
//! delta-rule decode kernel, then the gated norm), which the tests compare it with. Decode
//! only: no gradient.

mod backend;

use burn::backend::Dispatch;
use burn::tensor::Tensor;

pub use backend::{GdnStepBackend, StepConfig};

/// Output of [`gdn_step`].
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// Gated, normalised output `[B, HV·DV]` (the input of `out_proj`).
    pub output: Tensor<2>,
    /// New conv state `[B, KC, C]`.
    pub conv: Tensor<3>,
    /// New recurrent state `[B, HV, DK, DV]`.
    pub state: Tensor<4>,
}

/// Runs one token: `mixed` `[B, C]` (pre-conv q|k|v), `z` `[B, HV·DV]`, `ba` `[B, 2·HV]`
/// (beta logits then decay logits), `consts` = conv weight `[C, KC]` | A_log | dt_bias |
/// norm weight (flat), `conv` `[B, KC, C]`, `state` `[B, HV, DK, DV]`.
pub fn gdn_step(
    mixed: Tensor<2>,
    z: Tensor<2>,
    ba: Tensor<2>,
    consts: &Tensor<1>,
    conv: Tensor<3>,
    state: Tensor<4>,
    cfg: StepConfig,
) -> StepOutput {
    let b = mixed.dims()[0];
    let c = 2 * cfg.hk * cfg.dk + cfg.hv * cfg.dv;
    let packed = <Dispatch as GdnStepBackend>::gdn_step(
        mixed.into_dispatch(),
        z.into_dispatch(),
        ba.into_dispatch(),
        consts.clone().into_dispatch(),
        conv.into_dispatch(),
        state.into_dispatch(),
        cfg,
    );
    let packed: Tensor<1> = Tensor::from_dispatch(packed);
    let n_o = b * cfg.hv * cfg.dv;
    let n_conv = b * cfg.kc * c;
    let n_s = b * cfg.hv * cfg.dk * cfg.dv;
    StepOutput {
        output: packed
            .clone()
            .narrow(0, 0, n_o)
            .reshape([b, cfg.hv * cfg.dv]),
        conv: packed
            .clone()
            .narrow(0, n_o, n_conv)
            .reshape([b, cfg.kc, c]),
        state: packed
            .narrow(0, n_o + n_conv, n_s)
            .reshape([b, cfg.hv, cfg.dk, cfg.dv]),
    }
}
