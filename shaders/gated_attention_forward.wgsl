// Sigmoid-gated softmax attention, forward (flash-attention style): Qwen3-Next / Qwen3.5
// full-attention layers.
//
// Layout (all f32, contiguous, HF order):
//   q, gate [B, TQ, HQ, D]
//   k, v    [B, TKS, HKV, D]   only time steps < TK are read (TKS = TK, or a KV-cache capacity)
//   y       [B, TQ, HQ, D]     the gated output
//   lse     [B, TQ, HQ]        row log-sum-exp of the scaled scores (saved for backward)
// Query head h reads kv head h / (HQ / HKV) (grouped-query attention; nothing is repeated).
//
// Maths, per (b, h) and query row i, which sits at position PAST + i:
//   key j is visible  iff  j <= PAST + i  and  START_b <= j < END_b    (causal + key padding)
//   s_ij = SCALE q_i . k_j ;   lse_i = log sum_j exp(s_ij) ;   a_i = sum_j exp(s_ij - lse_i) v_j
//   y_i  = a_i * sigmoid(gate_i)                                       (sums over visible j)
// A row that sees no key gets y = 0 and lse = 0 (backward never reads that lse).
//
// Algorithm: one workgroup per block of BR query rows of one (b, h). The block's (pre-scaled)
// queries stay in workgroup memory; tiles of BC keys and values stream through workgroup memory;
// only the BR x BC score tile of the TQ x TK matrix ever exists. Online softmax: invocation
// (r, tc) owns row r and accumulator columns x = tc, tc + TPR, ... and tracks the row's running
// max m and sum l (the TPR invocations of a row compute identical m, l). Dot products are split
// in PARTS pieces over D when the score tile has fewer entries than invocations.
//
// Grid: (ceil(TQ / BR), HQ, B). WG = 256 invocations = BR rows x TPR.
// Workgroup memory: Q [BR, D] + K, V [BC, D] + S [BR, BC] + partial dots [WG if BR*BC < WG]:
//   D <= 16: 64 x 16 -> 10 KiB;  D <= 32: 32 x 16 -> 10 KiB;  D <= 64: 16 x 16 -> 13 KiB;
//   D <= 128: 8 x 8 -> 13.3 KiB; D <= 256: 4 x 4 -> 13.1 KiB   (BR x BC; WebGPU default: 16 KiB)
// Template constants: D, BR, BC, WG, TPR (= WG / BR), DPT (= ceil(D / TPR)), PARTS, DP
//   (= ceil(D / PARTS)), Q_LEN, KV_LEN, S_LEN, RED_LEN (workgroup array lengths).
// Run-time params (u32): TQ, TK, TKS, PAST, HQ, HKV, unused, SCALE (f32 bits),
//   then START_b, END_b per batch row (END_b <= TK).

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> gate: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<storage, read_write> params: array<u32>;

const D: u32 = {{ d }}u;
const BR: u32 = {{ br }}u;
const BC: u32 = {{ bc }}u;
const WG: u32 = {{ wg }}u;
const TPR: u32 = {{ tpr }}u;
const DPT: u32 = {{ dpt }}u;
const PARTS: u32 = {{ parts }}u;
const DP: u32 = {{ dp }}u;
const NE: u32 = BR * BC;
// Score of a key the row may not see (never produced by a real dot product).
const NEG: f32 = -3.0e38;

var<workgroup> qs: array<f32, {{ q_len }}>;
var<workgroup> ks: array<f32, {{ kv_len }}>;
var<workgroup> vs: array<f32, {{ kv_len }}>;
var<workgroup> ss: array<f32, {{ s_len }}>;
var<workgroup> red: array<f32, {{ red_len }}>;
var<workgroup> key_lo: u32;
var<workgroup> key_hi: u32;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let tq = params[0u];
    let tks = params[2u];
    let past = params[3u];
    let hq = params[4u];
    let hkv = params[5u];
    let scale = bitcast<f32>(params[7u]);
    let i0 = wid.x * BR;
    let h = wid.y;
    let b = wid.z;
    let hk = h / (hq / hkv);
    let start = params[8u + 2u * b];
    let end = params[9u + 2u * b];

    // Keys any row of the block may see: [start, min(end, PAST + last row + 1)).
    if (tid == 0u) {
        key_lo = start;
        key_hi = min(end, past + min(i0 + BR, tq));
    }
    for (var e = tid; e < BR * D; e += WG) {
        let i = i0 + e / D;
        var x = 0.0;
        if (i < tq) {
            x = q[((b * tq + i) * hq + h) * D + e % D] * scale;
        }
        qs[e] = x;
    }
    // (A barrier: the queries are visible to every invocation from here on.)
    let lo = workgroupUniformLoad(&key_lo);
    let hi = workgroupUniformLoad(&key_hi);

    let r = tid / TPR;
    let tc = tid % TPR;
    let i = i0 + r;
    var m = NEG;
    var l = 0.0;
    var acc: array<f32, DPT>;

    for (var j0 = lo; j0 < hi; j0 += BC) {
        workgroupBarrier();
        for (var e = tid; e < BC * D; e += WG) {
            let j = j0 + e / D;
            var kx = 0.0;
            var vx = 0.0;
            if (j < hi) {
                let idx = ((b * tks + j) * hkv + hk) * D + e % D;
                kx = k[idx];
                vx = v[idx];
            }
            ks[e] = kx;
            vs[e] = vx;
        }
        workgroupBarrier();

        // Score tile S[rr, c] = q_rr . k_c, NEG where not visible.
        if (PARTS == 1u) {
            for (var e = tid; e < NE; e += WG) {
                let rr = e / BC;
                let c = e % BC;
                var s = 0.0;
                for (var x = 0u; x < D; x++) {
                    s += qs[rr * D + x] * ks[c * D + x];
                }
                let row_hi = min(end, past + i0 + rr + 1u);
                ss[e] = select(NEG, s, i0 + rr < tq && j0 + c < row_hi);
            }
        } else {
            let e = tid % NE;
            let p = tid / NE;
            let rr = e / BC;
            let c = e % BC;
            var s = 0.0;
            for (var x = p * DP; x < min(p * DP + DP, D); x++) {
                s += qs[rr * D + x] * ks[c * D + x];
            }
            red[tid] = s;
            workgroupBarrier();
            if (tid < NE) {
                var t = 0.0;
                for (var pp = 0u; pp < PARTS; pp++) {
                    t += red[pp * NE + tid];
                }
                let row_hi = min(end, past + i0 + rr + 1u);
                ss[tid] = select(NEG, t, i0 + rr < tq && j0 + c < row_hi);
            }
        }
        workgroupBarrier();

        // Online softmax update of row r, then acc += P V over the tile.
        var mt = m;
        for (var c = 0u; c < BC; c++) {
            mt = max(mt, ss[r * BC + c]);
        }
        let alpha = exp(m - mt);
        l *= alpha;
        for (var u = 0u; u < DPT; u++) {
            acc[u] *= alpha;
        }
        for (var c = 0u; c < BC; c++) {
            let s = ss[r * BC + c];
            if (s != NEG) {
                let p = exp(s - mt);
                l += p;
                for (var u = 0u; u < DPT; u++) {
                    let x = tc + u * TPR;
                    if (x < D) {
                        acc[u] += p * vs[c * D + x];
                    }
                }
            }
        }
        m = mt;
    }

    // Epilogue: normalise, gate, save the log-sum-exp.
    if (i < tq) {
        var inv = 0.0;
        var row_lse = 0.0;
        if (l > 0.0) {
            inv = 1.0 / l;
            row_lse = m + log(l);
        }
        let row = (b * tq + i) * hq + h;
        for (var u = 0u; u < DPT; u++) {
            let x = tc + u * TPR;
            if (x < D) {
                let g = gate[row * D + x];
                y[row * D + x] = acc[u] * inv / (1.0 + exp(-g));
            }
        }
        if (tc == 0u) {
            lse[row] = row_lse;
        }
    }
}
