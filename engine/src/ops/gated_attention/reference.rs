//! Gated attention written with plain Burn tensor ops and a materialised softmax, as
//! transformers' `eager_attention_forward` followed by Qwen3NextAttention's output gate. It is
//! the oracle in tests and the implementation on backends without WGSL (Burn's autodiff
//! differentiates it there). Memory O(B·Hq·Tq·Tk).
//!
//! Per batch, head and query row i (at position past_len + i):
//! ```text
//! s = q kᵀ · scale,  masked where a key is not visible (causal + key padding)
//! p = softmax(s) (0 on a row with no visible key),  y = (p v) ⊙ sigmoid(gate)
//! ```

use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor, TensorData};

use super::AttentionOptions;

/// Repeats kv heads so query head h sees kv head h / (hq / hkv): [B,T,hkv,d] -> [B,T,hq,d].
fn repeat_heads(x: Tensor<4>, hq: usize) -> Tensor<4> {
    let [b, t, hkv, d] = x.dims();
    if hkv == hq {
        return x;
    }
    x.unsqueeze_dim::<5>(3)
        .repeat_dim(3, hq / hkv)
        .reshape([b, t, hq, d])
}

/// Visibility `[B,1,Tq,Tk]` (1 visible, 0 masked), built on the host.
pub fn visible_mask(
    b: usize,
    tq: usize,
    tk: usize,
    opts: &AttentionOptions,
    device: &Device,
) -> Tensor<4> {
    let mut mask = vec![0f32; b * tq * tk];
    for bi in 0..b {
        let range = opts.padding.as_ref().map_or(0..tk, |p| p.range(bi, tk));
        for i in 0..tq {
            let row = &mut mask[(bi * tq + i) * tk..(bi * tq + i + 1) * tk];
            let hi = range.end.min(opts.past_len + i + 1);
            for x in row.iter_mut().take(hi).skip(range.start) {
                *x = 1.0;
            }
        }
    }
    Tensor::from_data(TensorData::new(mask, [b, 1, tq, tk]), device)
}

/// Reference forward; shapes as in [`super::gated_attention`] (validated by the caller).
pub fn forward(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    gate: Tensor<4>,
    opts: &AttentionOptions,
) -> Tensor<4> {
    let [b, tq, hq, d] = q.dims();
    let tk = k.dims()[1];
    let device = q.device();
    let qh = q.swap_dims(1, 2); // [B,Hq,Tq,d]
    let kh = repeat_heads(k, hq).swap_dims(1, 2); // [B,Hq,Tk,d]
    let vh = repeat_heads(v, hq).swap_dims(1, 2);
    let mask = visible_mask(b, tq, tk, opts, &device);
    let scores = qh.matmul(kh.swap_dims(2, 3)).mul_scalar(opts.scale_for(d));
    // Masked scores sit far below any real one; the max is a constant shift (no gradient).
    let scores = scores * mask.clone() + (mask.clone() - 1.0) * 1e30;
    let max = scores.clone().max_dim(3).detach();
    let e = (scores - max).exp() * mask;
    let sum = e.clone().sum_dim(3);
    let p = e / sum.clamp_min(1e-30);
    let a = p.matmul(vh).swap_dims(1, 2); // [B,Tq,Hq,d]
    a * sigmoid(gate)
}
