//! Dense SwiGLU MLP: `down(silu(gate(x)) · up(x))`.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use super::{Linear, linear};

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
}
