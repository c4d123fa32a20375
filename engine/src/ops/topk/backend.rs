//! Routing of the row top-k into Burn (CubeCL backend and, without recording, `Autodiff<Cube>`).

use burn::backend::TensorMetadata;
use burn::backend::autodiff::{Autodiff, checkpoint::strategy::CheckpointStrategy};
use burn::backend::wgpu::CubeTensor;
use burn::backend::{Backend, Cube, backend_extension, tensor::FloatTensor};

use crate::ops::wgsl::{WgslKernel, contiguous, empty_f32};

const TOPK_WGSL: &str = include_str!("../../../../shaders/topk_rows.wgsl");

/// Longest segment one workgroup sorts (values and indices: 8 KiB of workgroup memory).
const MAX_SEG: usize = 1024;

/// Workgroups per grid dimension (WebGPU's default limit).
const MAX_GRID: usize = 65_535;

/// The top-k on a backend; returns values `[R, K]` then indices `[R, K]` (as f32), flat.
#[backend_extension(Cube, Autodiff)]
pub trait TopkBackend: Backend {
    fn topk_rows(x: FloatTensor<Self>, k: usize) -> FloatTensor<Self>;
}

/// The segment length for rows of `n` candidates: the whole row when it fits one segment,
/// else [`MAX_SEG`] (k ≤ MAX_SEG / 2, so each pass at least halves a row).
fn segment(n: usize) -> usize {
    n.next_power_of_two().clamp(2, MAX_SEG)
}

fn launch(x: CubeTensor, k: usize) -> CubeTensor {
    let x = contiguous(x);
    let [r, n] = [x.shape()[0], x.shape()[1]];
    let (mut src, mut len, mut has_idx) = (x, n, 0);
    loop {
        let seg = segment(len);
        let groups = len.div_ceil(seg);
        let wg = (seg / 2).min(256);
        let out = empty_f32(&src, [2 * r * groups * k]);
        WgslKernel::new("topk_rows", TOPK_WGSL)
            .with("seg", seg)
            .with("wg", wg)
            .with("k", k)
            .with("has_idx", has_idx)
            .launch(
                wg as u32,
                [
                    groups as u32,
                    r.min(MAX_GRID) as u32,
                    r.div_ceil(MAX_GRID) as u32,
                ],
                &[&src, &out],
                &[r as u32, len as u32, groups as u32],
            );
        if groups == 1 {
            return out;
        }
        (src, len, has_idx) = (out, groups * k, 1);
    }
}

impl TopkBackend for Cube {
    fn topk_rows(x: CubeTensor, k: usize) -> CubeTensor {
        launch(x, k)
    }
}

impl<C: CheckpointStrategy> TopkBackend for Autodiff<Cube, C> {
    fn topk_rows(x: FloatTensor<Self>, k: usize) -> FloatTensor<Self> {
        <Self as burn::backend::AutodiffBackend>::from_inner(launch(x.into_primitive(), k))
    }
}
