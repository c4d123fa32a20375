//! Causal depthwise conv1d + SiLU of the Gated DeltaNet block, with a carried state.
//!
//! `out[t, c] = silu(Σ_j w[c, j] · x[t - (K-1) + j, c])` with x before the sequence taken from
//! the state (zeros at the start). The state keeps the last K pre-conv columns `[B, K, C]`
//! (as transformers keeps K, of which the conv uses the last K-1).

use burn::module::Param;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

/// Runs the conv over `x` `[B, T, C]` with weight `w` `[C, K]`; returns the activations and
/// the new state `[B, K, C]`.
pub fn causal_conv(
    x: Tensor<3>,
    w: &Param<Tensor<2>>,
    state: Option<Tensor<3>>,
) -> (Tensor<3>, Tensor<3>) {
    let [b, t, c] = x.dims();
    let [_, k] = w.val().dims();
    let state = state.unwrap_or_else(|| Tensor::zeros([b, k, c], &x.device()));
    let full = Tensor::cat(vec![state, x], 1); // [B, K + T, C]
    let wt = w.val().transpose(); // [K, C]
    let mut acc: Option<Tensor<3>> = None;
    for j in 0..k {
        // Output t uses inputs t-(K-1)+j, i.e. rows 1+j .. 1+j+T of `full`.
        let term = full.clone().narrow(1, 1 + j, t) * wt.clone().narrow(0, j, 1).unsqueeze::<3>();
        acc = Some(match acc {
            Some(a) => a + term,
            None => term,
        });
    }
    let new_state = full.narrow(1, t, k);
    (silu(acc.expect("kernel size ≥ 1")), new_state)
}
