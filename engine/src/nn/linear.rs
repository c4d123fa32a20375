//! Projection weights: trainable f32 parameters or frozen 16-bit device weights, and the
//! vocabulary matrix (embedding / LM head) split into row shards that each fit one storage
//! binding.
//!
//! ```text
//! Linear:  y = x W^T (+ LoRA update),  W [out, in]   f32 Param (matmul) | 16-bit Packed (linear16)
//! Vocab:   W = [W_0; W_1; ...] by rows    embed(ids) = Σ_s gather_s(ids)   logits = [x W_0^T | x W_1^T | ...]
//! ```

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor};

use super::lora::{AdapterMode, Lora};
use crate::ops::linear16::{self, Packed};

/// A projection weight `[out, in]`: exactly one of `weight` (f32) and `frozen` (16-bit, on
/// the device) is set, optionally with a LoRA update beside it.
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Option<Param<Tensor<2>>>,
    #[module(skip)]
    pub frozen: Option<Packed>,
    pub lora: Option<Lora>,
}

impl Linear {
    /// A trainable f32 weight.
    pub fn f32(weight: Param<Tensor<2>>) -> Self {
        Self {
            weight: Some(weight),
            frozen: None,
            lora: None,
        }
    }

    /// A frozen 16-bit weight.
    pub fn frozen(w: Packed) -> Self {
        Self {
            weight: None,
            frozen: Some(w),
            lora: None,
        }
    }

    /// The trainable weight, if this one is f32.
    pub fn param(&self) -> Option<&Param<Tensor<2>>> {
        self.weight.as_ref()
    }

    /// The trainable weight, mutably, if this one is f32.
    pub fn param_mut(&mut self) -> Option<&mut Param<Tensor<2>>> {
        self.weight.as_mut()
    }

    /// The 16-bit weight when it alone makes the output (no LoRA update switched on): what
    /// the fused decode kernels may read.
    pub fn plain16(&self) -> Option<&Packed> {
        match &self.lora {
            Some(l) if l.mode != AdapterMode::Off => None,
            _ => self.frozen.as_ref(),
        }
    }

    /// `[out, in]`.
    pub fn dims(&self) -> [usize; 2] {
        match (&self.weight, &self.frozen) {
            (Some(w), _) => w.val().dims(),
            (None, Some(f)) => [f.rows(), f.cols()],
            (None, None) => [0, 0],
        }
    }

    /// Bytes of the weight on the device.
    pub fn device_bytes(&self) -> usize {
        match &self.frozen {
            Some(f) => f.bytes(),
            None => 4 * self.dims().iter().product::<usize>(),
        }
    }

    /// `x W^T` (+ the LoRA update) for `x` `[B, T, in]` -> `[B, T, out]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let delta = self.lora.as_ref().and_then(|l| l.forward(x.clone()));
        let y = match (&self.weight, &self.frozen) {
            (Some(w), _) => x.matmul(w.val().transpose().unsqueeze::<3>()),
            (None, Some(f)) => linear16::linear16(x, f),
            (None, None) => unreachable!("a Linear holds one of its two weights"),
        };
        match delta {
            Some(d) => y + d,
            None => y,
        }
    }
}

/// The `[V, H]` vocabulary matrix as row shards (table rows in order; one shard when the
/// matrix fits a binding).
#[derive(Module, Debug)]
pub struct Vocab {
    pub shards: Vec<Linear>,
}

impl Vocab {
    /// Vocabulary size V.
    pub fn rows(&self) -> usize {
        self.shards.iter().map(|s| s.dims()[0]).sum()
    }

    /// Hidden size H.
    pub fn cols(&self) -> usize {
        self.shards.first().map_or(0, |s| s.dims()[1])
    }

    /// The single trainable f32 matrix, when the table is one f32 shard.
    pub fn param(&self) -> Option<&Param<Tensor<2>>> {
        match self.shards.as_slice() {
            [one] => one.param(),
            _ => None,
        }
    }

    /// [`Self::param`], mutably.
    pub fn param_mut(&mut self) -> Option<&mut Param<Tensor<2>>> {
        match self.shards.as_mut_slice() {
            [one] => one.param_mut(),
            _ => None,
        }
    }

    /// Embedding rows of `ids` `[N]` -> `[N, H]`.
    pub fn embed(&self, ids: Tensor<1, Int>) -> Tensor<2> {
        let [n] = ids.dims();
        let mut out: Option<Tensor<2>> = None;
        let mut row0 = 0;
        for shard in &self.shards {
            let rows = shard.dims()[0];
            let part = match (&shard.weight, &shard.frozen) {
                (Some(w), _) if self.shards.len() == 1 => w.val().select(0, ids.clone()),
                (Some(w), _) => {
                    // Rows of other shards read row 0 here and are masked out.
                    let local = ids.clone().sub_scalar(row0 as i64);
                    let inside = local
                        .clone()
                        .greater_equal_elem(0)
                        .bool_and(local.clone().lower_elem(rows as i64));
                    let picked = w.val().select(0, local.clamp(0, rows as i64 - 1));
                    picked * inside.float().reshape([n, 1])
                }
                (None, Some(f)) => linear16::embed16(ids.clone(), f, row0),
                (None, None) => unreachable!("a Linear holds one of its two weights"),
            };
            out = Some(match out {
                Some(acc) => acc + part,
                None => part,
            });
            row0 += rows;
        }
        out.expect("a vocabulary has at least one shard")
    }

    /// Logits `x W^T` for `x` `[B, T, H]` -> `[B, T, V]`, shard by shard.
    pub fn logits(&self, x: Tensor<3>) -> Tensor<3> {
        let parts: Vec<Tensor<3>> = self.shards.iter().map(|s| s.forward(x.clone())).collect();
        if parts.len() == 1 {
            return parts.into_iter().next().expect("one shard");
        }
        Tensor::cat(parts, 2)
    }

    /// Bytes of the matrix on the device.
    pub fn device_bytes(&self) -> usize {
        self.shards.iter().map(Linear::device_bytes).sum()
    }
}
