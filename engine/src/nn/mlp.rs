//! Dense SwiGLU MLP: `down(silu(gate(x)) · up(x))`.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use super::{Linear, linear};
use crate::ops::linear16::{self, Prologue, linear16_decode};
use burn::module::Param;

#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    /// `x` `[B, T, H]` -> `[B, T, H]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = silu(linear(x.clone(), &self.gate_proj)) * linear(x, &self.up_proj);
        linear(h, &self.down_proj)
    }

    /// One decode step for `x` `[B, H]` (the residual stream): `x + down(swiglu(gate, up))` of
    /// the zero-centred RMSNorm of x (`norm_w`) in three launches. `None` unless every weight
    /// is frozen 16-bit and the widths suit the decode GEMV.
    pub fn decode_step(
        &self,
        x: Tensor<2>,
        norm_w: &Param<Tensor<1>>,
        eps: f64,
    ) -> Option<Tensor<2>> {
        let (gate, up, down) = (
            self.gate_proj.plain16()?,
            self.up_proj.plain16()?,
            self.down_proj.plain16()?,
        );
        let [b, h] = x.dims();
        if !linear16::fits_decode(b, h) || !linear16::fits_decode(b, down.cols()) {
            return None;
        }
        let norm = Prologue::RmsNorm {
            weight: norm_w.val(),
            eps,
        };
        let g = linear16_decode(x.clone(), gate, norm.clone(), None);
        let u = linear16_decode(x.clone(), up, norm, None);
        Some(linear16_decode(
            g,
            down,
            Prologue::SwiGlu { up: u },
            Some(x),
        ))
    }
}
