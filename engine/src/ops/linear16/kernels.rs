//! Launches of the 16-bit projection kernels (`shaders/linear16_*.wgsl`, `embed16_gather.wgsl`)
//! on `CubeTensor`s.

use burn::backend::TensorMetadata;
use burn::backend::wgpu::CubeTensor;

use super::Half;
use crate::ops::wgsl::{WgslKernel, contiguous, empty_f32};

const GEMV_WGSL: &str = include_str!("../../../../shaders/linear16_gemv.wgsl");
const GEMM_WGSL: &str = include_str!("../../../../shaders/linear16_gemm.wgsl");
const GATHER_WGSL: &str = include_str!("../../../../shaders/embed16_gather.wgsl");

/// Most rows of x that take the GEMV kernel (decode, batched decode); above, the tiled GEMM
/// (each weight tile is then reused across 64 rows from workgroup memory).
pub(crate) const GEMV_MAX_M: usize = 8;
/// Output rows per GEMV workgroup and lanes per row (WG = 256).
const GEMV_NR: u32 = 4;
const GEMV_TPR: u32 = 64;
/// Workgroups along the grid's x axis at most (WebGPU allows 65,535 per dimension).
const MAX_GX: u32 = 32_768;

fn u32_param(x: usize) -> u32 {
    u32::try_from(x)
        .expect("linear16: index exceeds u32 (tensors are split below the binding limit)")
}

/// `y = x W^T`: `x` `[M, K]` f32, `w` `[N, K / 2]` packed -> `[M, N]` f32.
pub(crate) fn forward(x: CubeTensor, w: &CubeTensor, half: Half) -> CubeTensor {
    let x = contiguous(x);
    let (m, k) = (x.shape()[0], x.shape()[1]);
    let n = w.shape()[0];
    let y = empty_f32(&x, [m, n]);
    if m == 0 || n == 0 {
        return y;
    }
    // CPU drivers take the GEMV for every M (16 rows of x per pass over the weights): the
    // GEMM's per-tile barriers cost more there than re-reading the weights from cache.
    if gemv_fits(m, k) || (is_cpu(&x) && k.is_multiple_of(8)) {
        let dummy = empty_f32(&x, [4]);
        gemv(&x, w, [&dummy, &dummy], &y, Fused::plain(half));
    } else {
        gemm(&x, w, &y, half, false, [m, k, n, k]);
    }
    y
}

/// Whether the device is a CPU driver or software rasterizer (lavapipe, SwiftShader).
fn is_cpu(t: &CubeTensor) -> bool {
    t.client.properties().identity.physical.is_none()
}

/// Whether `[m, k]` inputs take the GEMV kernel (and so can be fused).
pub(crate) fn gemv_fits(m: usize, k: usize) -> bool {
    m <= GEMV_MAX_M && k.is_multiple_of(8)
}

/// The fused GEMV's prologue / epilogue (template constants of `linear16_gemv.wgsl`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fused {
    pub half: Half,
    /// 0: none, 1: zero-centred RMSNorm (aux = weight), 2: SwiGLU (aux = up).
    pub pro: u32,
    /// Add the residual.
    pub residual: bool,
    pub eps: f32,
}

impl Fused {
    fn plain(half: Half) -> Self {
        Self {
            half,
            pro: 0,
            residual: false,
            eps: 0.0,
        }
    }
}

/// `y = f(x) W^T (+ res)` through the GEMV (callers check [`gemv_fits`]); unused `aux` /
/// `res` may be any small buffer.
pub(crate) fn forward_fused(
    x: CubeTensor,
    w: &CubeTensor,
    aux: CubeTensor,
    res: CubeTensor,
    spec: Fused,
) -> CubeTensor {
    let (x, aux, res) = (contiguous(x), contiguous(aux), contiguous(res));
    let m = x.shape()[0];
    let n = w.shape()[0];
    let y = empty_f32(&x, [m, n]);
    if m > 0 && n > 0 {
        gemv(&x, w, [&aux, &res], &y, spec);
    }
    y
}

/// `dx = dy W`: `dy` `[M, N]` f32, `w` `[N, K / 2]` packed -> `[M, K]` f32.
pub(crate) fn backward_x(dy: CubeTensor, w: &CubeTensor, half: Half) -> CubeTensor {
    let dy = contiguous(dy);
    let (m, n) = (dy.shape()[0], dy.shape()[1]);
    let k = 2 * w.shape()[1];
    let dx = empty_f32(&dy, [m, k]);
    if m > 0 && k > 0 {
        gemm(&dy, w, &dx, half, true, [m, n, k, k]);
    }
    dx
}

/// The GEMV launch: `x` `[m, k]`, `w` `[n, k / 2]`, `y` `[m, n]`.
fn gemv(x: &CubeTensor, w: &CubeTensor, [aux, res]: [&CubeTensor; 2], y: &CubeTensor, f: Fused) {
    let (m, k) = (x.shape()[0], x.shape()[1]);
    let n = w.shape()[0];
    // GPUs: TPR lanes share a row (coalesced loads, a tree reduction); CPU drivers: one lane
    // per row (no barriers), 64 rows per workgroup.
    let cpu = is_cpu(x);
    let mb = m.next_power_of_two().min(if cpu { 16 } else { GEMV_MAX_M });
    let (nr, tpr) = if cpu { (64, 1) } else { (GEMV_NR, GEMV_TPR) };
    let groups = u32_param(n.div_ceil(nr as usize));
    let gx = groups.min(MAX_GX);
    WgslKernel::new("linear16_gemv", GEMV_WGSL)
        .unroll("m", mb)
        .with("nr", nr)
        .with("tpr", tpr)
        .with("wg", nr * tpr)
        .with("mb", mb)
        .with("bf16", u32::from(f.half == Half::Bf16))
        .with("gx", gx)
        .with("pro", f.pro)
        .with("epi", u32::from(f.residual))
        .with_f32("eps", f.eps)
        .launch(
            nr * tpr,
            [gx, groups.div_ceil(gx), u32_param(m.div_ceil(mb))],
            &[x, w, aux, res, y],
            &[m, n, k, n, 0].map(u32_param),
        );
}

/// The tiled GEMM launch: `a` `[m, ki]`, output columns `nc`, `w` rows of `ldw` values.
fn gemm(
    a: &CubeTensor,
    w: &CubeTensor,
    out: &CubeTensor,
    half: Half,
    trans: bool,
    [m, ki, nc, ldw]: [usize; 4],
) {
    WgslKernel::new("linear16_gemm", GEMM_WGSL)
        .with("bf16", u32::from(half == Half::Bf16))
        .with("trans", u32::from(trans))
        .launch(
            256,
            [u32_param(nc.div_ceil(64)), u32_param(m.div_ceil(64)), 1],
            &[a, w, out],
            &[m, ki, nc, ldw, nc, 0].map(u32_param),
        );
}

/// Rows of the shard `w` (`[R, H / 2]` packed, table rows `[row0, row0 + R)`) selected by
/// `ids` `[T]` (i32), as `[T, H]` f32; rows whose id lies outside the shard are zero.
pub(crate) fn gather(ids: CubeTensor, w: &CubeTensor, half: Half, row0: usize) -> CubeTensor {
    let ids = contiguous(ids);
    let t = ids.shape()[0];
    let (rows, h) = (w.shape()[0], 2 * w.shape()[1]);
    let out = empty_f32(&ids, [t, h]);
    if t == 0 || h == 0 {
        return out;
    }
    WgslKernel::new("embed16_gather", GATHER_WGSL)
        .with("bf16", u32::from(half == Half::Bf16))
        .launch(
            64,
            [u32_param((h / 2).div_ceil(64)), u32_param(t), 1],
            &[&ids, w, &out],
            &[t, h, row0, rows].map(u32_param),
        );
    out
}
