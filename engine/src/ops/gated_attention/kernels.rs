//! Launches of the gated-attention WGSL kernels (`shaders/gated_attention_*.wgsl`) on
//! `CubeTensor`s.
//!
//! Only the head-dim class (16, 32, 64, 128, 256: the capacity of the kernels' register
//! arrays) and the tile sizes derived from it are template constants; every other size (batch,
//! lengths, heads, the head dim itself, offset, scale, key ranges) travels in the run-time
//! `params` buffer. One compiled pipeline per class serves every call, every decode step
//! included. The workgroup-tile and decode kernels keep their loops over the head dim (small
//! code, quick to compile); the subgroup kernels (long sequences) unroll every fixed-count
//! loop, which CPU drivers need to keep register arrays in registers, at the price of a
//! longer first compile.

use burn::backend::Cube;
use burn::backend::TensorMetadata;
use burn::backend::ops::FloatTensorOps;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{Shape, Slice};

use super::backend::KernelParams;
use crate::ops::wgsl::{WgslKernel, contiguous, empty_f32};

const FORWARD_WGSL: &str = include_str!("../../../../shaders/gated_attention_forward.wgsl");
const FORWARD_SG_WGSL: &str = include_str!("../../../../shaders/gated_attention_forward_sg.wgsl");
const DECODE_WGSL: &str = include_str!("../../../../shaders/gated_attention_decode.wgsl");
const PREP_WGSL: &str = include_str!("../../../../shaders/gated_attention_backward_prep.wgsl");
const DKV_WGSL: &str = include_str!("../../../../shaders/gated_attention_backward_dkv.wgsl");
const DQ_WGSL: &str = include_str!("../../../../shaders/gated_attention_backward_dq.wgsl");
const DKV_SG_WGSL: &str = include_str!("../../../../shaders/gated_attention_backward_dkv_sg.wgsl");
const DQ_SG_WGSL: &str = include_str!("../../../../shaders/gated_attention_backward_dq_sg.wgsl");

/// Invocations per workgroup of every kernel (WebGPU's default maximum).
const WG: usize = 256;
/// Invocations per row of the backward preprocessing kernel: 64 (a tree reduction in
/// workgroup memory; coalesced loads) on GPUs, 1 where a subgroup is 8 SIMD lanes of a CPU
/// driver (lavapipe), whose barriers cost far more than the loads (37 vs 3.5 ms at 8192
/// rows of 64).
fn prep_lanes(sg: Option<usize>) -> usize {
    if sg == Some(8) { 1 } else { 64 }
}
/// WebGPU's default `maxComputeWorkgroupStorageSize`.
pub(crate) const WORKGROUP_BYTES: usize = 16 * 1024;
/// WebGPU's default `maxComputeWorkgroupsPerDimension`.
const MAX_GROUPS: usize = 65_535;

/// The op's inputs as contiguous f32 buffers.
#[derive(Debug, Clone)]
pub(crate) struct Inputs {
    pub q: CubeTensor,
    pub k: CubeTensor,
    pub v: CubeTensor,
    pub gate: CubeTensor,
}

/// Sizes read off the input shapes (`tks` is the time extent of the k/v buffers).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub b: usize,
    pub tq: usize,
    pub hq: usize,
    pub tks: usize,
    pub hkv: usize,
    pub d: usize,
}

impl Inputs {
    pub(crate) fn new(q: CubeTensor, k: CubeTensor, v: CubeTensor, gate: CubeTensor) -> Self {
        Self {
            q: contiguous(q),
            k: contiguous(k),
            v: contiguous(v),
            gate: contiguous(gate),
        }
    }

    pub(crate) fn sizes(&self) -> Sizes {
        let qs = self.q.shape();
        let ks = self.k.shape();
        Sizes {
            b: qs[0],
            tq: qs[1],
            hq: qs[2],
            d: qs[3],
            tks: ks[1],
            hkv: ks[2],
        }
    }
}

/// The run-time `params` buffer shared by all kernels (layout documented in each shader).
fn params(s: Sizes, p: &KernelParams) -> Vec<u32> {
    let n_rows = s.b * s.tq * s.hq;
    let mut out = vec![
        s.tq as u32,
        p.tk as u32,
        s.tks as u32,
        p.past_len as u32,
        s.hq as u32,
        s.hkv as u32,
        n_rows as u32,
        p.scale.to_bits(),
        s.d as u32,
        0,
    ];
    out.extend(p.ranges.iter().flatten().copied());
    out
}

/// Invocations per workgroup of the forward, dk/dv and dq kernels.
pub(crate) const BLOCK_WG: usize = 16;

/// Rows per invocation of the forward and dq kernels (register blocking: each key loaded from
/// workgroup memory feeds `rb` rows).
pub(crate) fn rb_rows(d: usize) -> usize {
    match class(d) {
        0..=64 => 8,
        65..=128 => 4,
        _ => 2,
    }
}

/// Keys per invocation of the dk/dv kernel (four register arrays per key, hence half).
pub(crate) fn rb_keys(d: usize) -> usize {
    match class(d) {
        0..=64 => 4,
        65..=128 => 2,
        _ => 1,
    }
}

/// The head-dim class of `d`: the capacity the kernels' arrays are compiled for.
pub(crate) fn class(d: usize) -> usize {
    d.next_power_of_two().max(16)
}

/// Rows per streamed tile (keys in forward and dq, queries in dk/dv) for head dim `d`: two
/// `[tile, class]` f32 tiles fill 8 KiB of workgroup memory.
pub(crate) fn tile(d: usize) -> usize {
    (1024 / class(d)).clamp(4, 64)
}

/// Workgroup bytes of the forward and dq kernels.
pub(crate) fn forward_bytes(d: usize) -> usize {
    8 * tile(d) * class(d) + 8
}

/// Workgroup bytes of the dk/dv kernel.
pub(crate) fn dkv_bytes(d: usize) -> usize {
    8 * tile(d) * class(d) + 8 * tile(d) + 12
}

/// Workgroup bytes of the decode kernel.
pub(crate) fn decode_bytes(d: usize) -> usize {
    4 * (class(d) + 2 * WG) + 8
}

/// Result of the forward kernel.
pub(crate) struct Forward {
    /// Gated output `[B, Tq, Hq, d]`.
    pub y: CubeTensor,
    /// Row log-sum-exp `[B, Tq, Hq]`.
    pub lse: CubeTensor,
}

/// The subgroup size the subgroup kernels are compiled for: the adapter's when it has one
/// fixed size (lavapipe 8, NVIDIA 32, Apple 32; not where it varies, as on AMD and Intel,
/// nor in the browser, where WebGPU's `subgroups` feature needs `enable subgroups;`, which
/// naga does not parse yet), if `p` allows subgroup kernels.
pub(crate) fn subgroup_size(x: &CubeTensor, p: &KernelParams) -> Option<usize> {
    if !p.subgroups || cfg!(target_family = "wasm") {
        return None;
    }
    let hw = &x.client.properties().hardware;
    let (lo, hi) = (hw.plane_size_min, hw.plane_size_max);
    (lo == hi && matches!(lo, 8 | 16 | 32 | 64)).then_some(lo as usize)
}

/// Rows per invocation of the subgroup forward for subgroup size `sg` and head dim `d`:
/// many on SIMD-lane subgroups of CPU drivers (a lane is a vector lane; rows amortise the
/// per-lane loads), few on GPUs (registers).
pub(crate) fn rb_rows_sg(sg: usize, d: usize) -> usize {
    match (sg, class(d)) {
        (8, 0..=64) => 8,
        (8, 65..=128) => 4,
        (_, 0..=64) => 2,
        _ => 1,
    }
}

/// Keys per invocation of the subgroup dk/dv kernel (four register arrays per key).
pub(crate) fn rb_keys_sg(sg: usize, d: usize) -> usize {
    match (sg, class(d)) {
        (8, 0..=64) => 4,
        (8, 65..=128) => 2,
        _ => 1,
    }
}

/// Launches a subgroup kernel (`*_sg.wgsl`) for head dim `d`: workgroups of one subgroup of
/// `sg` lanes, each lane owning `rb` rows (queries or keys), on `grid` workgroups. The
/// kernels' fixed-count loops are unrolled in the source (`//#unroll` blocks): `c` over the
/// `sg` keys (or queries) of a block, `r` over the `rb` rows, `x` over the vec4s of a head.
fn launch_sg(
    name: &'static str,
    source: &'static str,
    (d, sg, rb, grid): (usize, usize, usize, [usize; 3]),
    buffers: &[&CubeTensor],
    params: &[u32],
) {
    WgslKernel::new(name, source)
        .with("d4c", class(d) / 4)
        .with("s", sg)
        .with("rb", rb)
        .unroll("c", sg)
        .unroll("r", rb)
        .unroll("x", class(d) / 4)
        .launch(sg as u32, grid.map(|g| g as u32), buffers, params);
}

/// Flash-style forward: `gated_attention_forward_sg.wgsl` where [`subgroup_size`] allows,
/// else `gated_attention_forward.wgsl`.
pub(crate) fn forward(x: &Inputs, p: &KernelParams) -> Forward {
    let s = x.sizes();
    let y = empty_f32(&x.q, [s.b, s.tq, s.hq, s.d]);
    let lse = empty_f32(&x.q, [s.b, s.tq, s.hq]);
    if let Some(sg) = subgroup_size(&x.q, p) {
        let rb = rb_rows_sg(sg, s.d);
        let grid = [s.tq.div_ceil(sg * rb), s.hq, s.b];
        launch_sg(
            "gated_attention_forward_sg",
            FORWARD_SG_WGSL,
            (s.d, sg, rb, grid),
            &[&x.q, &x.k, &x.v, &x.gate, &y, &lse],
            &params(s, p),
        );
        return Forward { y, lse };
    }
    debug_assert!(forward_bytes(s.d) <= WORKGROUP_BYTES);
    WgslKernel::new("gated_attention_forward", FORWARD_WGSL)
        .with("d4c", class(s.d) / 4)
        .with("bc", tile(s.d))
        .with("wg", BLOCK_WG)
        .with("rb", rb_rows(s.d))
        .launch(
            BLOCK_WG as u32,
            [
                s.tq.div_ceil(BLOCK_WG * rb_rows(s.d)) as u32,
                s.hq as u32,
                s.b as u32,
            ],
            &[&x.q, &x.k, &x.v, &x.gate, &y, &lse],
            &params(s, p),
        );
    Forward { y, lse }
}

/// One query token per (batch, head) against the first `p.tk` keys of k/v (a KV cache):
/// `gated_attention_decode.wgsl`.
pub(crate) fn decode(x: &Inputs, p: &KernelParams) -> CubeTensor {
    let s = x.sizes();
    let y = empty_f32(&x.q, [s.b, s.tq, s.hq, s.d]);
    debug_assert!(decode_bytes(s.d) <= WORKGROUP_BYTES);
    WgslKernel::new("gated_attention_decode", DECODE_WGSL)
        .with("dc", class(s.d))
        .with("wg", WG)
        .launch(
            WG as u32,
            [s.hq as u32, s.b as u32, 1],
            &[&x.q, &x.k, &x.v, &x.gate, &y],
            &params(s, p),
        );
    y
}

/// Gradients w.r.t. every input.
pub(crate) struct Grads {
    pub dq: CubeTensor,
    pub dk: CubeTensor,
    pub dv: CubeTensor,
    pub dgate: CubeTensor,
}

/// `len` elements of the flat buffer `t` from `offset`, reshaped to `shape` (a view).
fn region(t: &CubeTensor, offset: usize, shape: &[usize]) -> CubeTensor {
    let len: usize = shape.iter().product();
    let flat = Cube::float_slice(t.clone(), &[Slice::from(offset..offset + len)]);
    Cube::float_reshape(flat, Shape::from(shape.to_vec()))
}

/// A 2-D grid of at least `groups` workgroups within the per-dimension limit.
fn grid_2d(groups: usize) -> [u32; 3] {
    let x = groups.clamp(1, MAX_GROUPS);
    [x as u32, groups.div_ceil(x).max(1) as u32, 1]
}

/// Backward from the output cotangent `dy`: `gated_attention_backward_prep.wgsl` (da, dgate,
/// delta), then `gated_attention_backward_dkv.wgsl` and `gated_attention_backward_dq.wgsl`,
/// which recompute the probabilities from the saved `lse` tile by tile.
pub(crate) fn backward(
    x: &Inputs,
    y: &CubeTensor,
    lse: &CubeTensor,
    dy: CubeTensor,
    p: &KernelParams,
) -> Grads {
    let s = x.sizes();
    let prm = params(s, p);
    let dy = contiguous(dy);
    let n_rows = s.b * s.tq * s.hq;
    let da = empty_f32(&x.q, [s.b, s.tq, s.hq, s.d]);
    let dgate = empty_f32(&x.q, [s.b, s.tq, s.hq, s.d]);
    let stats = empty_f32(&x.q, [2 * n_rows]);
    let sg = subgroup_size(&x.q, p);
    let lanes = prep_lanes(sg);
    WgslKernel::new("gated_attention_backward_prep", PREP_WGSL)
        .with("wg", WG)
        .with("tprw", lanes)
        .launch(
            WG as u32,
            grid_2d(n_rows.div_ceil(WG / lanes)),
            &[&dy, y, &x.gate, lse, &da, &dgate, &stats],
            &prm,
        );

    let kv_shape = [s.b, s.tks, s.hkv, s.d];
    let n_kv = kv_shape.iter().product::<usize>();
    let dkv = empty_f32(&x.q, [2 * n_kv]);
    let dq = empty_f32(&x.q, [s.b, s.tq, s.hq, s.d]);
    if let Some(sg) = sg {
        let (rk, rq) = (rb_keys_sg(sg, s.d), rb_rows_sg(sg, s.d));
        launch_sg(
            "gated_attention_backward_dkv_sg",
            DKV_SG_WGSL,
            (s.d, sg, rk, [s.tks.div_ceil(sg * rk), s.hkv, s.b]),
            &[&x.q, &x.k, &x.v, &da, &stats, &dkv],
            &prm,
        );
        launch_sg(
            "gated_attention_backward_dq_sg",
            DQ_SG_WGSL,
            (s.d, sg, rq, [s.tq.div_ceil(sg * rq), s.hq, s.b]),
            &[&x.q, &x.k, &x.v, &da, &stats, &dq],
            &prm,
        );
    } else {
        debug_assert!(dkv_bytes(s.d) <= WORKGROUP_BYTES && forward_bytes(s.d) <= WORKGROUP_BYTES);
        WgslKernel::new("gated_attention_backward_dkv", DKV_WGSL)
            .with("d4c", class(s.d) / 4)
            .with("c", tile(s.d))
            .with("wg", BLOCK_WG)
            .with("rb", rb_keys(s.d))
            .launch(
                BLOCK_WG as u32,
                [
                    s.tks.div_ceil(BLOCK_WG * rb_keys(s.d)) as u32,
                    s.hkv as u32,
                    s.b as u32,
                ],
                &[&x.q, &x.k, &x.v, &da, &stats, &dkv],
                &prm,
            );
        WgslKernel::new("gated_attention_backward_dq", DQ_WGSL)
            .with("d4c", class(s.d) / 4)
            .with("c", tile(s.d))
            .with("wg", BLOCK_WG)
            .with("rb", rb_rows(s.d))
            .launch(
                BLOCK_WG as u32,
                [
                    s.tq.div_ceil(BLOCK_WG * rb_rows(s.d)) as u32,
                    s.hq as u32,
                    s.b as u32,
                ],
                &[&x.q, &x.k, &x.v, &da, &stats, &dq],
                &prm,
            );
    }

    Grads {
        dq,
        dk: region(&dkv, 0, &kv_shape),
        dv: region(&dkv, n_kv, &kv_shape),
        dgate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_head_dim_fits_webgpu_default_workgroup_memory() {
        for d in 1..=super::super::MAX_HEAD_DIM {
            assert!(forward_bytes(d) <= WORKGROUP_BYTES, "forward/dq d={d}");
            assert!(dkv_bytes(d) <= WORKGROUP_BYTES, "dkv d={d}");
            assert!(decode_bytes(d) <= WORKGROUP_BYTES, "decode d={d}");
        }
        assert_eq!([16, 32, 64, 128, 256].map(tile), [64, 32, 16, 8, 4]);
    }
}
