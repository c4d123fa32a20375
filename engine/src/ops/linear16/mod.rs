//! Projections on frozen 16-bit weights: `y = x W^T` with `W` `[N, K]` held on the device in
//! bf16 or f16 (two values per `u32` word, unpacked in the kernel; f32 accumulation), and the
//! embedding gather from a 16-bit vocabulary shard.
//!
//! ```text
//! M <= 8 (decode):   shaders/linear16_gemv.wgsl   each weight byte read once, coalesced 16 B loads
//! M  > 8 (prefill):  shaders/linear16_gemm.wgsl   64 x 64 output tiles, 64 x 16 / 16 x 64 operand tiles
//! backward:          dx = dy W (the GEMM with W untransposed); W itself is frozen (no dW)
//! ```
//! bf16 → f32 is a 16-bit shift (exact); f16 uses WGSL's `unpack2x16float` (no `shader-f16`
//! needed). Weights are created only on WGSL devices; other backends load f32 weights.

mod backend;
mod kernels;
pub mod reference;

use burn::backend::Dispatch;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

pub use backend::Linear16Backend;
pub use kernels::Fused;

/// The 16-bit format of a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Half {
    /// bfloat16: f32's exponent range, 8 bits of mantissa.
    Bf16,
    /// IEEE half precision.
    F16,
}

impl Half {
    /// Name as safetensors spells the dtype.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bf16 => "BF16",
            Self::F16 => "F16",
        }
    }

    /// `x` rounded to this format (round to nearest even), as raw bits.
    pub fn from_f32(self, x: f32) -> u16 {
        match self {
            Self::Bf16 => half::bf16::from_f32(x).to_bits(),
            Self::F16 => half::f16::from_f32(x).to_bits(),
        }
    }

    /// The value of raw bits `b`.
    pub fn to_f32(self, b: u16) -> f32 {
        match self {
            Self::Bf16 => half::bf16::from_bits(b).to_f32(),
            Self::F16 => half::f16::from_bits(b).to_f32(),
        }
    }
}

/// Errors placing a 16-bit weight.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PackError {
    #[error("a 16-bit weight needs an even number of columns (got {0})")]
    OddColumns(usize),
    #[error("{got} values for a {rows} x {cols} weight")]
    Length {
        got: usize,
        rows: usize,
        cols: usize,
    },
    #[error("16-bit weights need a WGSL (wgpu) device; load in f32 on this backend")]
    Backend,
    #[error("the device stores integer tensors as {0:?}, not 32-bit words")]
    WordType(DType),
    #[error("cannot stack a {a_cols}-wide {a:?} weight on a {b_cols}-wide {b:?} one")]
    Mismatch {
        a: Half,
        a_cols: usize,
        b: Half,
        b_cols: usize,
    },
}

/// A frozen `[rows, cols]` weight in 16 bits on the device: `[rows, cols / 2]` 32-bit words,
/// element `2i` in the low half of word `i`. Device bytes = 2 · rows · cols.
#[derive(Debug, Clone)]
pub struct Packed {
    words: Tensor<2, Int>,
    rows: usize,
    cols: usize,
    half: Half,
}

impl Packed {
    /// Uploads raw 16-bit values `bits` (row-major `[rows, cols]`) to `device`.
    pub fn from_bits(
        bits: &[u16],
        rows: usize,
        cols: usize,
        half: Half,
        device: &Device,
    ) -> Result<Self, PackError> {
        if !cols.is_multiple_of(2) {
            return Err(PackError::OddColumns(cols));
        }
        if bits.len() != rows * cols {
            return Err(PackError::Length {
                got: bits.len(),
                rows,
                cols,
            });
        }
        if !crate::device::supports_wgsl(device) {
            return Err(PackError::Backend);
        }
        let words: Vec<i32> = bits
            .chunks_exact(2)
            .map(|p| (u32::from(p[0]) | (u32::from(p[1]) << 16)) as i32)
            .collect();
        let words = Tensor::<2, Int>::from_data(TensorData::new(words, [rows, cols / 2]), device);
        match words.dtype() {
            DType::I32 | DType::U32 => Ok(Self {
                words,
                rows,
                cols,
                half,
            }),
            other => Err(PackError::WordType(other)),
        }
    }

    /// Rounds f32 values to `half` and uploads them.
    pub fn from_f32(
        values: &[f32],
        rows: usize,
        cols: usize,
        half: Half,
        device: &Device,
    ) -> Result<Self, PackError> {
        let bits: Vec<u16> = values.iter().map(|&x| half.from_f32(x)).collect();
        Self::from_bits(&bits, rows, cols, half, device)
    }

    /// `[a; b]`: the rows of `a` then those of `b` (same width and format) in a new weight.
    pub fn concat_rows(a: &Packed, b: &Packed) -> Result<Packed, PackError> {
        if a.cols != b.cols || a.half != b.half {
            return Err(PackError::Mismatch {
                a: a.half,
                a_cols: a.cols,
                b: b.half,
                b_cols: b.cols,
            });
        }
        Ok(Packed {
            words: Tensor::cat(vec![a.words.clone(), b.words.clone()], 0),
            rows: a.rows + b.rows,
            cols: a.cols,
            half: a.half,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn half(&self) -> Half {
        self.half
    }

    /// Bytes on the device.
    pub fn bytes(&self) -> usize {
        2 * self.rows * self.cols
    }

    /// Reads the raw 16-bit values back (row-major).
    pub async fn bits(&self) -> Result<Vec<u16>, String> {
        let data = self
            .words
            .clone()
            .into_data_async()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let words: Vec<i32> = data
            .convert::<i32>()
            .try_into_vec::<i32>()
            .map_err(|e| format!("{e:?}"))?;
        Ok(words
            .into_iter()
            .flat_map(|w| {
                let w = w as u32;
                [(w & 0xffff) as u16, (w >> 16) as u16]
            })
            .collect())
    }
}

/// `x W^T` for `x` `[B, T, K]` and a 16-bit `w` `[N, K]` -> `[B, T, N]` (differentiable in x).
pub fn linear16(x: Tensor<3>, w: &Packed) -> Tensor<3> {
    let [b, t, k] = x.dims();
    debug_assert_eq!(k, w.cols, "linear16: input width differs from the weight's");
    let y = <Dispatch as Linear16Backend>::linear16(
        x.reshape([b * t, k]).into_dispatch(),
        w.words.clone().into_dispatch(),
        w.half,
    );
    Tensor::<2>::from_dispatch(y).reshape([b, t, w.rows])
}

/// `dy W` for `dy` `[M, N]` and a 16-bit `w` `[N, K]` -> `[M, K]` (no gradient).
pub fn linear16_t(dy: Tensor<2>, w: &Packed) -> Tensor<2> {
    debug_assert_eq!(
        dy.dims()[1],
        w.rows,
        "linear16_t: dy width differs from the rows"
    );
    let y = <Dispatch as Linear16Backend>::linear16_t(
        dy.into_dispatch(),
        w.words.clone().into_dispatch(),
        w.half,
    );
    Tensor::<2>::from_dispatch(y)
}

/// The prologue of [`linear16_decode`], applied to each row of x before the product.
#[derive(Debug, Clone)]
pub enum Prologue {
    None,
    /// Zero-centred RMSNorm: `x · rsqrt(mean(x²) + eps) · (1 + weight)`, weight `[K]`.
    RmsNorm {
        weight: Tensor<1>,
        eps: f64,
    },
    /// SwiGLU: `silu(x) · up`, up `[M, K]`.
    SwiGlu {
        up: Tensor<2>,
    },
}

/// Whether [`linear16_decode`] takes `m` rows of width `k` (M <= 8, K % 8 == 0).
pub fn fits_decode(m: usize, k: usize) -> bool {
    kernels::gemv_fits(m, k)
}

/// The decode projection in one launch: `y = f(x) W^T (+ residual)` for `x` `[M, K]` (see
/// [`fits_decode`]), `f` the prologue, `residual` `[M, N]`. Not differentiable.
pub fn linear16_decode(
    x: Tensor<2>,
    w: &Packed,
    prologue: Prologue,
    residual: Option<Tensor<2>>,
) -> Tensor<2> {
    let [m, k] = x.dims();
    debug_assert!(fits_decode(m, k) && k == w.cols, "linear16_decode: shapes");
    let device = x.device();
    let dummy = || Tensor::<1>::empty([4], &device);
    let (pro, aux, eps) = match prologue {
        Prologue::None => (0, dummy(), 0.0),
        Prologue::RmsNorm { weight, eps } => (1, weight, eps as f32),
        Prologue::SwiGlu { up } => (2, up.reshape([m * k]), 0.0),
    };
    let spec = Fused {
        half: w.half,
        pro,
        residual: residual.is_some(),
        eps,
    };
    let res = residual.map_or_else(dummy, |r| r.reshape([m * w.rows]));
    let y = <Dispatch as Linear16Backend>::linear16_fused(
        x.into_dispatch(),
        w.words.clone().into_dispatch(),
        aux.into_dispatch(),
        res.into_dispatch(),
        spec,
    );
    Tensor::from_dispatch(y)
}

/// Rows of the vocabulary shard `w` (table rows `[row0, row0 + w.rows())`) for `ids` `[T]`,
/// `[T, cols]` f32; ids outside the shard give zero rows.
pub fn embed16(ids: Tensor<1, Int>, w: &Packed, row0: usize) -> Tensor<2> {
    let y = <Dispatch as Linear16Backend>::embed16(
        ids.into_dispatch(),
        w.words.clone().into_dispatch(),
        w.half,
        row0,
    );
    Tensor::from_dispatch(y)
}

#[cfg(test)]
mod tests;
