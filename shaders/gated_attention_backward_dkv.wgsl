// Sigmoid-gated softmax attention, backward pass 2 of 3: dk and dv, parallel over key blocks.
//
// Layout (all f32, contiguous, HF order):
//   q, da   [B, TQ, HQ, D]      da = dy * sigmoid(gate) from gated_attention_backward_prep.wgsl
//   k, v    [B, TK, HKV, D]
//   stats   [2, B, TQ, HQ]      [lse | delta] (delta = rowsum(dy * y))
//   dkv     [2, B, TK, HKV, D]  output: [dk | dv]
//
// Maths (FlashAttention-2 backward; probabilities recomputed from the saved lse), for every
// visible pair (i, j) (j <= PAST + i, START_b <= j < END_b) of the query heads h of kv head hk:
//   p_ij = exp(SCALE q_i . k_j - lse_i) ;  ds_ij = p_ij (da_i . v_j - delta_i)
//   dv_j = sum_{h, i} p_ij da_i ;   dk_j = SCALE sum_{h, i} ds_ij q_i
// Each workgroup owns its keys and sums over all HQ / HKV query heads of its kv head itself,
// so no two workgroups write the same element (no atomics).
//
// Algorithm: one workgroup per block of ROWS = WG * RB keys of one (b, hk); invocation tid owns
// keys j0 + r WG + tid (r < RB) with their k, v and dk, dv accumulators in registers. Tiles of
// C queries (pre-scaled q, da, lse, delta) stream through workgroup memory, starting at the
// first query that can see the block (causality); each query of the tile is read once (the
// same element by all invocations) and used for all RB keys (register blocking).
// Data moves as vec4<f32> (D is a multiple of 4).
//
// Grid: (ceil(TK / ROWS), HKV, B).
// Workgroup memory: q, da tiles [C, D] = 8 KiB (C = 1024 / D, 4..64) + lse, delta [C] + 12 bytes.
// Registers per invocation: k, v, dk, dv [RB, D] (RB = 4 for D <= 64, 2 for D <= 128, 1 above).
// Template constants: D4C (head-dim class / 4), C, WG, RB.
// Run-time params (u32): TQ, TK, TKS (= TK), PAST, HQ, HKV, N (unused), SCALE (f32 bits),
//   D, unused, then START_b, END_b per batch row (END_b <= TK).

@group(0) @binding(0) var<storage, read_write> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> da: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> dkv: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> params: array<u32>;

// Capacity (in vec4) of the register arrays: the head-dim class over 4 (the head dim itself
// comes at run time, so the loops over it stay loops).
const D4C: u32 = {{ d4c }}u;
const C: u32 = {{ c }}u;
const WG: u32 = {{ wg }}u;
const RB: u32 = {{ rb }}u;
const ROWS: u32 = WG * RB;

var<workgroup> qs: array<vec4<f32>, C * D4C>;
var<workgroup> das: array<vec4<f32>, C * D4C>;
var<workgroup> lse_s: array<f32, C>;
var<workgroup> delta_s: array<f32, C>;
var<workgroup> uni_qlo: u32;
var<workgroup> uni_ntile: u32;
var<workgroup> uni_iters: u32;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let tq = params[0u];
    let tk = params[1u];
    let past = params[3u];
    let hq = params[4u];
    let hkv = params[5u];
    let scale = bitcast<f32>(params[7u]);
    let d4 = params[8u] / 4u;
    let j0 = wid.x * ROWS;
    let hk = wid.y;
    let b = wid.z;
    let nb = nwg.z;
    let g = hq / hkv;
    let start = params[10u + 2u * b];
    let end = params[11u + 2u * b];
    let n_rows = nb * tq * hq;

    if (tid == 0u) {
        // First query that sees some key of [max(j0, start), min(j0 + ROWS, end)).
        let first_key = max(j0, start);
        var qlo = tq;
        if (first_key < min(j0 + ROWS, end)) {
            qlo = min(tq, max(first_key, past) - past);
        }
        let ntile = (tq - qlo + C - 1u) / C;
        uni_qlo = qlo;
        uni_ntile = ntile;
        uni_iters = g * ntile;
    }
    // Keys j0 + r WG + tid (r < RB): loads outside any branch or run-time loop (rows clamped
    // into range, padding columns zeroed by a factor) compile to plain gathers on CPU drivers.
    var kr: array<array<vec4<f32>, D4C>, RB>;
    var vr: array<array<vec4<f32>, D4C>, RB>;
    // Key r is seen by queries i >= first_q[r] (causality) if it lies in the valid range.
    var first_q: array<u32, RB>;
    for (var r = 0u; r < RB; r++) {
        let j = j0 + r * WG + tid;
        first_q[r] = select(0xffffffffu, max(j, past) - past, j < tk && j >= start && j < end);
        let base = ((b * tk + min(j, tk - 1u)) * hkv + hk) * d4;
        for (var x = 0u; x < D4C; x++) {
            let f = select(0.0, 1.0, x < d4);
            kr[r][x] = k[base + min(x, d4 - 1u)] * f;
            vr[r][x] = v[base + min(x, d4 - 1u)] * f;
        }
    }
    let qlo = workgroupUniformLoad(&uni_qlo);
    let ntile = workgroupUniformLoad(&uni_ntile);
    let iters = workgroupUniformLoad(&uni_iters);

    var dk: array<array<vec4<f32>, D4C>, RB>;
    var dv: array<array<vec4<f32>, D4C>, RB>;
    for (var it = 0u; it < iters; it++) {
        let h = hk * g + it / ntile;
        let i0 = qlo + (it % ntile) * C;
        workgroupBarrier();
        // The tile, rows padded to D4C vec4 with zeros (a constant trip count: unrolled).
        for (var u = 0u; u < C * D4C / WG; u++) {
            let e = u * WG + tid;
            let i = i0 + e / D4C;
            let x = e % D4C;
            var qx = vec4<f32>();
            var dax = vec4<f32>();
            if (i < tq && x < d4) {
                let idx = ((b * tq + i) * hq + h) * d4 + x;
                qx = q[idx] * scale;
                dax = da[idx];
            }
            qs[e] = qx;
            das[e] = dax;
        }
        for (var u = 0u; u < (C + WG - 1u) / WG; u++) {
            let c = u * WG + tid;
            let i = i0 + c;
            if (c < C) {
                var lx = 0.0;
                var dx = 0.0;
                if (i < tq) {
                    let row = (b * tq + i) * hq + h;
                    lx = stats[row];
                    dx = stats[n_rows + row];
                }
                lse_s[c] = lx;
                delta_s[c] = dx;
            }
        }
        workgroupBarrier();

        // Queries one at a time (run-time trip count), each read once from workgroup memory
        // and used for all RB keys; the loops over keys and D4C are unrolled (register arrays
        // indexed by constants only).
        let nc = min(C, tq - i0);
        for (var c = 0u; c < nc; c++) {
            let i = i0 + c;
            var qc: array<vec4<f32>, D4C>;
            var dac: array<vec4<f32>, D4C>;
            for (var x = 0u; x < D4C; x++) {
                qc[x] = qs[c * D4C + x];
                dac[x] = das[c * D4C + x];
            }
            let lse_c = lse_s[c];
            let delta_c = delta_s[c];
            for (var r = 0u; r < RB; r++) {
                var s4 = vec4<f32>();
                var dp4 = vec4<f32>();
                for (var x = 0u; x < D4C; x++) {
                    s4 = fma(kr[r][x], qc[x], s4);
                    dp4 = fma(vr[r][x], dac[x], dp4);
                }
                let s = s4.x + s4.y + s4.z + s4.w;
                let dp = dp4.x + dp4.y + dp4.z + dp4.w;
                let p = select(0.0, exp(s - lse_c), i >= first_q[r]);
                let ds = p * (dp - delta_c);
                for (var x = 0u; x < D4C; x++) {
                    dv[r][x] = fma(vec4<f32>(p), dac[x], dv[r][x]);
                    dk[r][x] = fma(vec4<f32>(ds), qc[x], dk[r][x]);
                }
            }
        }
    }

    let n_kv = nb * tk * hkv * d4;
    for (var r = 0u; r < RB; r++) {
        let j = j0 + r * WG + tid;
        if (j < tk) {
            let base = ((b * tk + j) * hkv + hk) * d4;
            for (var x = 0u; x < D4C; x++) {
                if (x < d4) {
                    dkv[base + x] = dk[r][x];
                    dkv[n_kv + base + x] = dv[r][x];
                }
            }
        }
    }
}
