//! Launches of the delta-rule WGSL kernels (`shaders/delta_rule_*.wgsl`) on `CubeTensor`s.

use burn::backend::Cube;
use burn::backend::TensorMetadata;
use burn::backend::ops::FloatTensorOps;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{Shape, Slice};

use super::backend::KernelConfig;
use crate::ops::wgsl::{WgslKernel, contiguous, empty_f32};

const DECODE_WGSL: &str = include_str!("../../../../shaders/delta_rule_decode.wgsl");
const PREP_WGSL: &str = include_str!("../../../../shaders/delta_rule_chunk_prep.wgsl");
const SCAN_WGSL: &str = include_str!("../../../../shaders/delta_rule_chunk_scan.wgsl");
const BACKWARD_WGSL: &str = include_str!("../../../../shaders/delta_rule_backward.wgsl");
const FINISH_WGSL: &str = include_str!("../../../../shaders/delta_rule_backward_finish.wgsl");
const RECURRENT_WGSL: &str = include_str!("../../../../shaders/delta_rule_recurrent.wgsl");
const BACKWARD_COLS_WGSL: &str = include_str!("../../../../shaders/delta_rule_backward_cols.wgsl");

/// Longest sequence that takes the token-by-token kernels (one invocation per value column,
/// no barriers in the forward, one or two per token in the backward) instead of the chunked
/// ones: for short sequences the chunked kernels' fixed costs (UT transform, barrier-heavy
/// 256-invocation workgroups) dominate.
const SHORT_T: usize = 64;
/// Invocations per workgroup of the token-by-token forward.
const RECURRENT_WG: u32 = 64;

/// Invocations per workgroup of the chunked kernels (WebGPU's default maximum).
const WG: u32 = 256;
/// Invocations per workgroup of the scan: one 4 × 4 tile of the chunk's new values each
/// (C/4 · BV/4 <= 64 tiles).
const SCAN_WG: u32 = 64;
/// Head-dim tile of the prep kernel's dot products.
const TD: u32 = 8;

/// The op's inputs as contiguous f32 buffers; `h0` is the initial (or carried) state.
#[derive(Debug, Clone)]
pub(crate) struct Inputs {
    pub q: CubeTensor,
    pub k: CubeTensor,
    pub v: CubeTensor,
    pub g: CubeTensor,
    pub beta: CubeTensor,
    pub h0: CubeTensor,
}

/// Sizes read off the input shapes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub b: usize,
    pub t: usize,
    pub hk: usize,
    pub hv: usize,
    pub dk: usize,
    pub dv: usize,
}

impl Inputs {
    pub(crate) fn new(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        g: CubeTensor,
        beta: CubeTensor,
        h0: CubeTensor,
    ) -> Self {
        Self {
            q: contiguous(q),
            k: contiguous(k),
            v: contiguous(v),
            g: contiguous(g),
            beta: contiguous(beta),
            h0: contiguous(h0),
        }
    }

    pub(crate) fn sizes(&self) -> Sizes {
        let qs = self.q.shape();
        let vs = self.v.shape();
        Sizes {
            b: qs[0],
            t: qs[1],
            hk: qs[2],
            dk: qs[3],
            hv: vs[2],
            dv: vs[3],
        }
    }

    fn kernel(&self, name: &'static str, src: &'static str, c: KernelConfig) -> WgslKernel {
        let s = self.sizes();
        WgslKernel::new(name, src)
            .with("hk", s.hk)
            .with("hv", s.hv)
            .with("dk", s.dk)
            .with("dv", s.dv)
            .with("dk4", s.dk.div_ceil(4))
            .with("dv4", s.dv.div_ceil(4))
            .with("l2norm", u32::from(c.l2norm))
            .with_f32("scale", c.scale)
    }
}

/// A size or offset as a kernel parameter; WGSL indexes with u32.
fn u32_param(x: usize) -> u32 {
    u32::try_from(x).expect("delta rule: buffer index exceeds u32 (input too large for WGSL)")
}

/// Packed `[o | state]` buffer for sizes `s` with `t` tokens.
fn packed_out(like: &CubeTensor, s: Sizes) -> CubeTensor {
    empty_f32(like, [s.b * s.t * s.hv * s.dv + s.b * s.hv * s.dk * s.dv])
}

/// One-token step: `shaders/delta_rule_decode.wgsl`, one invocation per value column.
pub(crate) fn decode(x: &Inputs, c: KernelConfig) -> CubeTensor {
    let s = x.sizes();
    let wg = 64u32;
    let out = packed_out(&x.q, s);
    x.kernel("delta_rule_decode", DECODE_WGSL, c)
        .with("wg", wg)
        .launch(
            wg,
            [(s.dv as u32).div_ceil(wg), s.hv as u32, s.b as u32],
            &[&x.q, &x.k, &x.v, &x.g, &x.beta, &x.h0, &out],
            &[s.b as u32],
        );
    out
}

/// Result of the chunked forward.
pub(crate) struct Forward {
    /// `[o | final state]`.
    pub packed: CubeTensor,
    /// State at the start of every chunk, `[B, Hv, N, dk, dv]` (N = ceil(T / C)).
    pub boundaries: CubeTensor,
}

/// Layout of the prep kernel's scratch buffer (element offsets of each region). Rows of
/// QE, KD, W and U are zero-padded to whole vec4s (the kernels read the buffer as vec4s).
#[derive(Debug, Clone, Copy)]
struct Work {
    n: usize,
    nt: usize,
    off_qe: usize,
    off_kd: usize,
    off_w: usize,
    off_u: usize,
    off_m: usize,
    off_decay: usize,
    len: usize,
}

impl Work {
    fn new(s: Sizes, chunk: usize) -> Self {
        let n = s.t.div_ceil(chunk);
        let nt = n * chunk;
        let rows = s.b * s.hv * nt;
        let dk = s.dk.next_multiple_of(4);
        let dv = s.dv.next_multiple_of(4);
        let off_qe = 0;
        let off_kd = off_qe + rows * dk;
        let off_w = off_kd + rows * dk;
        let off_u = off_w + rows * dk;
        let off_m = off_u + rows * dv;
        let off_decay = off_m + s.b * s.hv * n * chunk * chunk;
        let len = (off_decay + s.b * s.hv * n).next_multiple_of(4);
        Self {
            n,
            nt,
            off_qe,
            off_kd,
            off_w,
            off_u,
            off_m,
            off_decay,
            len,
        }
    }

    /// Run-time `params` of the prep and scan kernels: B, T, N, NT, OFF_*.
    fn params(&self, s: Sizes) -> Vec<u32> {
        [
            s.b,
            s.t,
            self.n,
            self.nt,
            self.off_qe,
            self.off_kd,
            self.off_w,
            self.off_u,
            self.off_m,
            self.off_decay,
        ]
        .iter()
        .map(|&x| u32_param(x))
        .collect()
    }
}

/// Value columns per workgroup of the scan: the state tile [dk, BV] and the chunk's new
/// values [C, BV] must fit in 16 KiB of workgroup memory.
fn scan_block(dk: usize) -> usize {
    if dk <= 128 { 16 } else { 8 }
}

/// Chunked forward (UT/WY form): `delta_rule_chunk_prep.wgsl` over all chunks in parallel,
/// then `delta_rule_chunk_scan.wgsl` carrying the state across chunks; for T ≤ [`SHORT_T`]
/// the token-by-token `delta_rule_recurrent.wgsl` instead.
pub(crate) fn forward(x: &Inputs, c: KernelConfig) -> Forward {
    let s = x.sizes();
    if s.t <= SHORT_T {
        return forward_recurrent(x, c);
    }
    let w = Work::new(s, c.chunk);
    let work = empty_f32(&x.q, [w.len]);
    let params = w.params(s);
    x.kernel("delta_rule_chunk_prep", PREP_WGSL, c)
        .with("c", c.chunk)
        .with("wg", WG)
        .with("td", TD)
        .launch(
            WG,
            [w.n as u32, s.hv as u32, s.b as u32],
            &[&x.q, &x.k, &x.v, &x.g, &x.beta, &work],
            &params,
        );
    let packed = packed_out(&x.q, s);
    let boundaries = empty_f32(&x.q, [s.b, s.hv, w.n, s.dk, s.dv]);
    let bv = scan_block(s.dk);
    x.kernel("delta_rule_chunk_scan", SCAN_WGSL, c)
        .with("c", c.chunk)
        .with("wg", SCAN_WG)
        .with("bv", bv)
        .launch(
            SCAN_WG,
            [s.dv.div_ceil(bv) as u32, s.hv as u32, s.b as u32],
            &[&work, &x.h0, &packed, &boundaries],
            &params,
        );
    Forward { packed, boundaries }
}

/// g and beta back to back, `[2·B·T·Hv]` (one binding: WebGPU's default limit is 8 storage
/// buffers per stage).
fn gates(x: &Inputs, s: Sizes) -> CubeTensor {
    let n = s.b * s.t * s.hv;
    Cube::float_cat(
        vec![
            Cube::float_reshape(x.g.clone(), Shape::from([n])),
            Cube::float_reshape(x.beta.clone(), Shape::from([n])),
        ],
        0,
    )
}

/// Token-by-token forward for short sequences (`delta_rule_recurrent.wgsl`), saving the
/// same chunk-boundary states as the chunked forward.
fn forward_recurrent(x: &Inputs, c: KernelConfig) -> Forward {
    let s = x.sizes();
    let n = s.t.div_ceil(c.chunk);
    let packed = packed_out(&x.q, s);
    let boundaries = empty_f32(&x.q, [s.b, s.hv, n, s.dk, s.dv]);
    let gates = gates(x, s);
    x.kernel("delta_rule_recurrent", RECURRENT_WGSL, c)
        .with("c", c.chunk)
        .with("wg", RECURRENT_WG)
        .launch(
            RECURRENT_WG,
            [
                (s.hv * s.dv).div_ceil(RECURRENT_WG as usize) as u32,
                s.b as u32,
                1,
            ],
            &[&x.q, &x.k, &x.v, &gates, &x.h0, &packed, &boundaries],
            &[u32_param(s.b), u32_param(s.t), u32_param(n)],
        );
    Forward { packed, boundaries }
}

/// Value columns per workgroup of the token-by-token backward (one invocation each): its
/// column reductions [2, DK, BV] must fit in 16 KiB of workgroup memory.
fn cols_block(dk: usize, dv: usize) -> usize {
    let bv = match dk {
        0..=64 => 16,
        65..=128 => 8,
        _ => 4,
    };
    bv.min(dv.next_multiple_of(4))
}

/// Reduction buffers of the token-by-token backward: two (one barrier per token) when they
/// fit in 16 KiB of workgroup memory, else one (two barriers per token).
fn cols_buffers(dk: usize, bv: usize) -> usize {
    let floats = 2 * dk * bv + 2 * bv;
    if 2 * floats * 4 <= 16 * 1024 { 2 } else { 1 }
}

/// Gradients w.r.t. every input.
pub(crate) struct Grads {
    pub dq: CubeTensor,
    pub dk: CubeTensor,
    pub dv: CubeTensor,
    pub dg: CubeTensor,
    pub dbeta: CubeTensor,
    pub dh0: CubeTensor,
}

/// Value columns per backward block: the short-sequence column kernel or the chunk scan.
fn backward_block(s: Sizes) -> usize {
    if s.t <= SHORT_T {
        cols_block(s.dk, s.dv)
    } else {
        scan_block(s.dk)
    }
}

/// Bytes of the backward's workspace (one buffer, so it must fit a binding) for sizes `s`.
pub(crate) fn backward_workspace_bytes(s: Sizes, chunk: usize) -> u64 {
    4 * BackwardWork::new(s, chunk, backward_block(s)).len as u64
}

/// Element offsets of the backward kernel's workspace regions.
#[derive(Debug, Clone, Copy)]
struct BackwardWork {
    nvb: usize,
    off_hist: usize,
    off_kv: usize,
    off_dl: usize,
    off_dv: usize,
    off_dh0: usize,
    off_pdq: usize,
    off_pdk: usize,
    off_pdg: usize,
    off_pdb: usize,
    len: usize,
}

impl BackwardWork {
    fn new(s: Sizes, chunk: usize, bv: usize) -> Self {
        let nvb = s.dv.div_ceil(bv);
        let blocks = s.b * s.hv * nvb;
        let tokens = s.b * s.t * s.hv;
        let off_hist = 0;
        let off_kv = off_hist + blocks * chunk * s.dk * bv;
        let off_dl = off_kv + blocks * chunk * bv;
        let off_dv = off_dl + blocks * chunk * bv;
        let off_dh0 = off_dv + tokens * s.dv;
        let off_pdq = off_dh0 + s.b * s.hv * s.dk * s.dv;
        let off_pdk = off_pdq + nvb * tokens * s.dk;
        let off_pdg = off_pdk + nvb * tokens * s.dk;
        let off_pdb = off_pdg + nvb * tokens;
        let len = off_pdb + nvb * tokens;
        Self {
            nvb,
            off_hist,
            off_kv,
            off_dl,
            off_dv,
            off_dh0,
            off_pdq,
            off_pdk,
            off_pdg,
            off_pdb,
            len,
        }
    }

    /// Run-time `params` of the backward kernels: B, T, N, NT, OFF_*, then the chunk range
    /// `lo..hi` one dispatch of `delta_rule_backward.wgsl` covers.
    fn params(&self, s: Sizes, n: usize, chunk: usize, (lo, hi): (usize, usize)) -> Vec<u32> {
        [
            s.b,
            s.t,
            n,
            n * chunk,
            self.off_hist,
            self.off_kv,
            self.off_dl,
            self.off_dv,
            self.off_dh0,
            self.off_pdq,
            self.off_pdk,
            self.off_pdg,
            self.off_pdb,
            lo,
            hi,
        ]
        .iter()
        .map(|&x| u32_param(x))
        .collect()
    }
}

/// `len` elements of the flat buffer `t` from `offset`, reshaped to `shape` (a view).
fn region(t: &CubeTensor, offset: usize, shape: &[usize]) -> CubeTensor {
    let len: usize = shape.iter().product();
    let flat = Cube::float_slice(t.clone(), &[Slice::from(offset..offset + len)]);
    Cube::float_reshape(flat, Shape::from(shape.to_vec()))
}

/// Backward from the packed cotangent `[do | d final state]`:
/// `delta_rule_backward.wgsl` (T > [`SHORT_T`]) or `delta_rule_backward_cols.wgsl`
/// (reverse over chunks, recomputing inside each chunk from the saved boundary states),
/// then `delta_rule_backward_finish.wgsl` (reductions, l2norm).
pub(crate) fn backward(
    x: &Inputs,
    boundaries: &CubeTensor,
    grad: CubeTensor,
    c: KernelConfig,
) -> Grads {
    let s = x.sizes();
    let n = s.t.div_ceil(c.chunk);
    let short = s.t <= SHORT_T;
    let bv = backward_block(s);
    let w = BackwardWork::new(s, c.chunk, bv);
    let grad = contiguous(grad);
    let ws = empty_f32(&x.q, [w.len]);
    let params = w.params(s, n, c.chunk, (0, n));
    let gates = gates(x, s);
    let buffers = [&x.q, &x.k, &x.v, &gates, boundaries, &grad, &ws];
    let grid = [w.nvb as u32, s.hv as u32, s.b as u32];
    if short {
        x.kernel("delta_rule_backward_cols", BACKWARD_COLS_WGSL, c)
            .with("nvb", w.nvb)
            .with("c", c.chunk)
            .with("bv", bv)
            .with("nbuf", cols_buffers(s.dk, bv))
            .launch(bv as u32, grid, &buffers, &params);
    } else {
        // One dispatch per chunk, last to first (dS carried in the workspace): see the
        // shader's note on per-invocation loop caps.
        for hi in (1..=n).rev() {
            x.kernel("delta_rule_backward", BACKWARD_WGSL, c)
                .with("nvb", w.nvb)
                .with("c", c.chunk)
                .with("wg", WG)
                .with("bv", bv)
                .launch(WG, grid, &buffers, &w.params(s, n, c.chunk, (hi - 1, hi)));
        }
    }
    let qk_len = s.b * s.t * s.hk * s.dk;
    let gate_len = s.b * s.t * s.hv;
    let fin = empty_f32(&x.q, [2 * qk_len + 2 * gate_len]);
    let wg_fin = (s.dk.next_power_of_two() as u32).clamp(8, 64);
    x.kernel("delta_rule_backward_finish", FINISH_WGSL, c)
        .with("nvb", w.nvb)
        .with("wg", wg_fin)
        .launch(
            wg_fin,
            [s.t as u32, s.hk as u32, s.b as u32],
            &[&x.q, &x.k, &ws, &fin],
            &params,
        );
    let qk = [s.b, s.t, s.hk, s.dk];
    let gates = [s.b, s.t, s.hv];
    Grads {
        dq: region(&fin, 0, &qk),
        dk: region(&fin, qk_len, &qk),
        dg: region(&fin, 2 * qk_len, &gates),
        dbeta: region(&fin, 2 * qk_len + gate_len, &gates),
        dv: region(&ws, w.off_dv, &[s.b, s.t, s.hv, s.dv]),
        dh0: region(&ws, w.off_dh0, &[s.b, s.hv, s.dk, s.dv]),
    }
}
