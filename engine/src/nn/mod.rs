//! Layers of the hybrid model. Activations are `[batch, time, features]` (HF order); weights
//! keep Hugging Face's `[out, in]` layout so checkpoints load and save without transposes.

pub mod attention;
pub mod conv;
pub mod gated_deltanet;
pub mod linear;
pub mod lora;
pub mod mlp;
pub mod moe;
pub mod norm;
pub mod rope;
pub mod token_logp;

pub use linear::{Linear, Vocab};
pub use lora::{AdapterMode, Lora};

use burn::tensor::Tensor;

/// `x @ w^T` for `x` `[B, T, in]` and `w` `[out, in]`.
pub fn linear(x: Tensor<3>, w: &Linear) -> Tensor<3> {
    w.forward(x)
}
