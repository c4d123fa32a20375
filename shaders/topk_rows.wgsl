// Top-k of each row, one pass. One workgroup per (segment g, row r): the segment's SEG
// values (and their indices) are loaded into workgroup memory, sorted descending by a
// bitonic network (ties: lower index first; padding carries the index NONE and sorts after
// everything, -inf and NaN included), and the first K are written out. The host repeats the pass on the
// candidates (G·K per row) until one segment remains: with K ≤ SEG/2 every pass at least
// halves a row.
//
// Input: src = values [R, N], then (HAS_IDX = 1: a previous pass's output) their indices
// [R, N] as f32 (exact below 2^24, so N < NONE = 2^24 - 1); with HAS_IDX = 0 the index is
// the column. Output: out =
// values [R, G, K] then indices [R, G, K] (as f32), G = ceil(N / SEG): the next pass's src.
// Rows run over grid y and z (r = z·65535 + y; rows ≥ R write nothing).
// Template constants: SEG (power of two), WG, K, HAS_IDX. Run-time `params`: R, N, G.

@group(0) @binding(0) var<storage, read_write> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read_write> params: array<u32>;

const SEG: u32 = {{ seg }}u;
const WG: u32 = {{ wg }}u;
const K: u32 = {{ k }}u;
const HAS_IDX: u32 = {{ has_idx }}u;
const NONE: u32 = 0x00ffffffu;

var<workgroup> sv: array<f32, SEG>;
var<workgroup> si: array<u32, SEG>;

// True when (va, ia) sorts before (vb, ib): padding last, then larger value first, then
// lower index. NaN sorts after every number (callers reject non-finite rows before relying
// on the order).
fn before(va: f32, ia: u32, vb: f32, ib: u32) -> bool {
    if (ia == NONE || ib == NONE) {
        return ib == NONE && ia != NONE;
    }
    let a_nan = va != va;
    let b_nan = vb != vb;
    if (a_nan != b_nan) {
        return b_nan;
    }
    if (va != vb && !a_nan) {
        return va > vb;
    }
    return ia < ib;
}

@compute @workgroup_size({{ wg }})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let rows = params[0u];
    let n = params[1u];
    let groups = params[2u];
    let g = wid.x;
    let r = wid.z * 65535u + wid.y;
    for (var e = tid; e < SEG; e += WG) {
        let col = g * SEG + e;
        if (col < n && r < rows) {
            sv[e] = src[r * n + col];
            if (HAS_IDX == 1u) {
                si[e] = u32(src[rows * n + r * n + col]);
            } else {
                si[e] = col;
            }
        } else {
            // Padding is recognised by its index (a constant -inf is not valid WGSL).
            sv[e] = 0.0;
            si[e] = NONE;
        }
    }
    workgroupBarrier();
    // Bitonic sort: blocks of `size` elements alternate direction until the last merge.
    for (var size = 2u; size <= SEG; size <<= 1u) {
        for (var stride = size >> 1u; stride > 0u; stride >>= 1u) {
            for (var p = tid; p < SEG / 2u; p += WG) {
                // The p-th pair (a, a + stride) of this stage.
                let a = (p / stride) * 2u * stride + p % stride;
                let b = a + stride;
                let down = (a & size) == 0u;  // this block sorts descending
                let va = sv[a];
                let vb = sv[b];
                let ia = si[a];
                let ib = si[b];
                if (before(vb, ib, va, ia) == down) {
                    sv[a] = vb;
                    sv[b] = va;
                    si[a] = ib;
                    si[b] = ia;
                }
            }
            workgroupBarrier();
        }
    }
    let base = (r * groups + g) * K;
    let plane = rows * groups * K;
    for (var e = tid; e < K && r < rows; e += WG) {
        out[base + e] = sv[e];
        out[plane + base + e] = f32(si[e]);
    }
}
