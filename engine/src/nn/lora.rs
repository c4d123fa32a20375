//! LoRA: a trainable low-rank update beside a frozen projection (PEFT's `lora.Linear`).
//!
//! ```text
//! y = x W^T + s · (drop(x) A^T) B^T      A [r, in]  B [out, r]   (W frozen)
//! s = alpha / r          (alpha / sqrt(r) with rsLoRA)
//! init: A ~ U(-1/sqrt(in), 1/sqrt(in))  (kaiming_uniform_(a = sqrt 5), PEFT's default), B = 0
//! ```
//! `A` and `B` are f32 parameters; the update is zero at initialisation, so a freshly adapted
//! model computes exactly what its base does.

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// When the update takes part in a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdapterMode {
    /// The base alone (the KL reference of RL: same weights, no copy).
    Off,
    /// Base + update, no dropout (generation, scoring, evaluation).
    #[default]
    Eval,
    /// Base + update with dropout on the update's input (loss passes of training).
    Train,
}

/// One LoRA update of a `[out, in]` projection.
#[derive(Module, Debug)]
pub struct Lora {
    /// `lora_A` `[r, in]`.
    pub a: Param<Tensor<2>>,
    /// `lora_B` `[out, r]`.
    pub b: Param<Tensor<2>>,
    /// `s` of the module docs.
    #[module(skip)]
    pub scale: f64,
    /// Dropout probability on the update's input (training passes only).
    #[module(skip)]
    pub dropout: f64,
    #[module(skip)]
    pub mode: AdapterMode,
}

impl Lora {
    /// A fresh update of rank `r` for a `[out, in]` projection: `A` drawn from PEFT's
    /// Kaiming-uniform bound with `seed`, `B` zero.
    pub fn init(out: usize, inp: usize, r: usize, scale: f64, seed: u64, device: &Device) -> Self {
        let bound = 1.0 / (inp as f64).sqrt();
        let mut rng = StdRng::seed_from_u64(seed);
        let a: Vec<f32> = (0..r * inp)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        Self::from_values(a, vec![0.0; out * r], [out, inp], r, scale, device)
    }

    /// An update from host values (`a` `[r, in]`, `b` `[out, r]`, row-major).
    pub fn from_values(
        a: Vec<f32>,
        b: Vec<f32>,
        [out, inp]: [usize; 2],
        r: usize,
        scale: f64,
        device: &Device,
    ) -> Self {
        let p = |v: Vec<f32>, shape: [usize; 2]| {
            Param::from_tensor(Tensor::from_data(TensorData::new(v, shape), device))
        };
        Self {
            a: p(a, [r, inp]),
            b: p(b, [out, r]),
            scale,
            dropout: 0.0,
            mode: AdapterMode::Eval,
        }
    }

    /// Rank r.
    pub fn rank(&self) -> usize {
        self.a.val().dims()[0]
    }

    /// The update `s · (drop(x) A^T) B^T` for `x` `[B, T, in]` -> `[B, T, out]`; `None` when
    /// the adapter is switched off.
    pub fn forward(&self, x: Tensor<3>) -> Option<Tensor<3>> {
        let x = match self.mode {
            AdapterMode::Off => return None,
            AdapterMode::Train if self.dropout > 0.0 => {
                let keep = 1.0 - self.dropout;
                let mask = x.random_like(Distribution::Bernoulli(keep));
                x * mask.div_scalar(keep)
            }
            _ => x,
        };
        let h = x.matmul(self.a.val().transpose().unsqueeze::<3>());
        Some(
            h.matmul(self.b.val().transpose().unsqueeze::<3>())
                .mul_scalar(self.scale),
        )
    }

    /// `s · B A` `[out, in]`, the update as a dense matrix (for merging).
    pub fn delta(&self) -> Tensor<2> {
        self.b
            .val()
            .matmul(self.a.val())
            .mul_scalar(self.scale)
            .inner()
    }
}
