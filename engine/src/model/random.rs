//! Random-weight checkpoints made on the host, tensor by tensor, in Hugging Face layout (what
//! `sluice init` writes): no device and no whole-model buffer, so a 0.8B model costs one
//! tensor of memory at a time.
//!
//! ```text
//! embeddings, projections (incl. router, shared-expert gate, lm_head), conv1d   ~ N(0, std)
//! zero-centred RMSNorms (input/post-attention, final, q_norm, k_norm)          = 0
//! gated RMSNorm of the linear-attention output                                 = 1
//! A_log = ln(U(0.01, 16))            dt_bias = 1
//! ```
//! The same rules as [`super::init`] (transformers' `_init_weights`); each tensor draws from its
//! own `StdRng` seeded with (seed, tensor index), so tensors can be produced in any order.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::config::Config;
use super::save::{SaveError, checkpoint_shapes};
use crate::ops::linear16::Half;

/// How a tensor's values are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InitRule {
    Normal {
        std: f64,
    },
    Constant(f32),
    /// `ln(U(0.01, 16))` (the linear-attention decay rates).
    LogUniform,
}

/// One tensor of a random checkpoint; [`Self::values`] draws it.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub rule: InitRule,
    seed: u64,
}

/// The storage format of a written checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileDtype {
    F32,
    Half(Half),
}

impl RandomTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The tensor's values, row-major.
    pub fn values(&self) -> Vec<f32> {
        let n = self.numel();
        let mut rng = StdRng::seed_from_u64(self.seed);
        match self.rule {
            InitRule::Constant(c) => vec![c; n],
            InitRule::LogUniform => (0..n)
                .map(|_| rng.random_range(0.01f64..16.0).ln() as f32)
                .collect(),
            InitRule::Normal { std } => (0..n)
                .map(|_| {
                    let u1 = 1.0 - rng.random::<f64>();
                    let u2 = rng.random::<f64>();
                    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                    (z * std) as f32
                })
                .collect(),
        }
    }

    /// The values as little-endian bytes in `dtype`.
    pub fn bytes(&self, dtype: FileDtype) -> Vec<u8> {
        dtype.encode(&self.values())
    }
}

impl FileDtype {
    /// Little-endian bytes of `values` in this format (round to nearest even).
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            Self::F32 => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::Half(h) => values
                .iter()
                .flat_map(|&x| h.from_f32(x).to_le_bytes())
                .collect(),
        }
    }

    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::Half(_) => 2,
        }
    }

    /// The safetensors dtype.
    pub fn safetensors(self) -> safetensors::Dtype {
        match self {
            Self::F32 => safetensors::Dtype::F32,
            Self::Half(crate::ops::linear16::Half::Bf16) => safetensors::Dtype::BF16,
            Self::Half(crate::ops::linear16::Half::F16) => safetensors::Dtype::F16,
        }
    }
}

/// The rule transformers uses for the checkpoint tensor `name`.
fn rule(name: &str, std: f64) -> InitRule {
    if name.ends_with(".A_log") {
        InitRule::LogUniform
    } else if name.ends_with(".dt_bias") || name.ends_with("linear_attn.norm.weight") {
        InitRule::Constant(1.0)
    } else if name.ends_with("norm.weight") {
        InitRule::Constant(0.0)
    } else {
        InitRule::Normal { std }
    }
}

/// Every tensor of a random checkpoint for `cfg` in Hugging Face layout, in checkpoint order.
pub fn random_checkpoint(
    cfg: &Config,
    seed: u64,
    std: f64,
) -> Result<Vec<RandomTensor>, SaveError> {
    Ok(checkpoint_shapes(cfg)?
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| RandomTensor {
            rule: rule(&name, std),
            seed: seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(i as u64),
            name,
            shape,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_follow_the_names() {
        assert_eq!(
            rule("model.layers.0.input_layernorm.weight", 0.02),
            InitRule::Constant(0.0)
        );
        assert_eq!(
            rule("model.layers.0.linear_attn.norm.weight", 0.02),
            InitRule::Constant(1.0)
        );
        assert_eq!(
            rule("model.layers.3.self_attn.q_norm.weight", 0.02),
            InitRule::Constant(0.0)
        );
        assert_eq!(
            rule("model.layers.0.linear_attn.dt_bias", 0.02),
            InitRule::Constant(1.0)
        );
        assert_eq!(
            rule("model.layers.0.linear_attn.A_log", 0.02),
            InitRule::LogUniform
        );
        assert_eq!(rule("lm_head.weight", 0.02), InitRule::Normal { std: 0.02 });
    }
}
