//! RMS norms of Qwen3-Next / Qwen3.5.

use burn::module::Param;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

/// `x · rsqrt(mean(x², -1) + eps)` over the last dim.
fn normalise<const D: usize>(x: Tensor<D>, eps: f64) -> Tensor<D> {
    let ms = x.clone().powi_scalar(2).mean_dim(D - 1);
    x * ms.add_scalar(eps).sqrt().recip()
}

/// Zero-centred RMSNorm: `normalise(x) · (1 + w)` (input/post-attention norms, final norm,
/// q_norm and k_norm).
pub fn rms_norm<const D: usize>(x: Tensor<D>, w: &Param<Tensor<1>>, eps: f64) -> Tensor<D> {
    normalise(x, eps) * w.val().add_scalar(1.0).unsqueeze::<D>()
}

/// Gated RMSNorm of the linear-attention output: `normalise(x) · w · silu(z)` (w as-is).
pub fn gated_rms_norm<const D: usize>(
    x: Tensor<D>,
    z: Tensor<D>,
    w: &Param<Tensor<1>>,
    eps: f64,
) -> Tensor<D> {
    normalise(x, eps) * w.val().unsqueeze::<D>() * silu(z)
}
