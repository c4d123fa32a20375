//! Partial rotary position embedding (NeoX halves) on the first `rot` channels of each head.
//!
//! `inv_freq = theta^(-2i/rot)`, `emb = [pos·inv_freq, pos·inv_freq]`; channels `[x1 | x2]` of
//! the rotated slice become `x·cos + [-x2 | x1]·sin`; the rest pass through unchanged.

use burn::tensor::Tensor;

/// Applies RoPE to `x` `[B, T, H, hd]` at `positions` `[B, T]` (float token positions).
pub fn apply(x: Tensor<4>, positions: &Tensor<2>, rot: usize, theta: f64) -> Tensor<4> {
    let [b, t, h, hd] = x.dims();
    let half = rot / 2;
    let device = x.device();
    let inv: Vec<f32> = (0..half)
        .map(|i| (theta.powf(-(2.0 * i as f64) / rot as f64)) as f32)
        .collect();
    let inv = Tensor::<1>::from_floats(inv.as_slice(), &device).reshape([1, 1, half]);
    let freqs = positions.clone().reshape([b, t, 1]) * inv; // [B, T, half]
    let emb = Tensor::cat(vec![freqs.clone(), freqs], 2).reshape([b, t, 1, rot]);
    let (cos, sin) = (emb.clone().cos(), emb.sin());
    let xr = x.clone().narrow(3, 0, rot);
    let x1 = xr.clone().narrow(3, 0, half);
    let x2 = xr.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    let out = xr * cos + rotated * sin;
    if rot == hd {
        out
    } else {
        Tensor::cat(vec![out, x.narrow(3, rot, hd - rot)], 3)
    }
    .reshape([b, t, h, hd])
}
