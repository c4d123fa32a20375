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
// Algorithm: one workgroup per block of ROWS = WG * RB query rows of one (b, h); invocation
// tid owns rows i0 + r WG + tid (r < RB) and keeps their pre-scaled queries and output
// accumulators in registers. Tiles of BC keys and values stream through workgroup memory;
// then every key of the tile is read once (the same element by all invocations: a broadcast)
// and used for all RB rows (register blocking: CPU drivers such as lavapipe load per lane, so
// the loads must be amortised over many multiply-adds). Online softmax per row and key:
// m' = max(m, s), acc = acc e^(m - m') + e^(s - m') v, l likewise. The TQ x TK matrix never
// exists; only the keys the block can see are visited (causal bound, padding range).
// Data moves as vec4<f32> (D is a multiple of 4).
//
// Grid: (ceil(TQ / ROWS), HQ, B).
// Workgroup memory: K, V tiles [BC, D] = 8 KiB (BC = 1024 / D, 4..64) + 8 bytes.
// Registers per invocation: q, acc [RB, D] (RB = 8 for D <= 64, 4 for D <= 128, 2 above).
// Template constants: D4C (head-dim class / 4), BC, WG, RB.
// Run-time params (u32): TQ, TK, TKS, PAST, HQ, HKV, N (unused), SCALE (f32 bits), D,
//   unused, then START_b, END_b per batch row (END_b <= TK).

@group(0) @binding(0) var<storage, read_write> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> gate: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<storage, read_write> params: array<u32>;

// Capacity (in vec4) of the per-row register arrays: the head-dim class (16, 32, 64, 128, 256)
// over 4. The actual head dim comes at run time, so the loops over it stay loops: small code
// that compiles fast, and one pipeline per class.
const D4C: u32 = {{ d4c }}u;
const BC: u32 = {{ bc }}u;
const WG: u32 = {{ wg }}u;
const RB: u32 = {{ rb }}u;
const ROWS: u32 = WG * RB;
// Score of a key the row may not see (never produced by a real dot product).
const NEG: f32 = -3.0e38;

var<workgroup> ks: array<vec4<f32>, BC * D4C>;
var<workgroup> vs: array<vec4<f32>, BC * D4C>;
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
    let d4 = params[8u] / 4u;
    let i0 = wid.x * ROWS;
    let h = wid.y;
    let b = wid.z;
    let hk = h / (hq / hkv);
    let start = params[10u + 2u * b];
    let end = params[11u + 2u * b];

    // Keys any row of the block may see: [start, min(end, PAST + last row + 1)).
    if (tid == 0u) {
        key_lo = start;
        key_hi = min(end, past + min(i0 + ROWS, tq));
    }
    // Invocation tid owns rows i0 + r * WG + tid, r < RB. Loads outside any branch or run-time
    // loop (rows clamped into range, padding columns zeroed by a factor) compile to plain
    // gathers on CPU drivers.
    var qr: array<array<vec4<f32>, D4C>, RB>;
    var lim: array<u32, RB>; // row r sees keys [start, lim[r]); 0 for rows past the end
    for (var r = 0u; r < RB; r++) {
        let i = i0 + r * WG + tid;
        lim[r] = select(0u, min(end, past + i + 1u), i < tq);
        let row = (b * tq + min(i, tq - 1u)) * hq + h;
        for (var x = 0u; x < D4C; x++) {
            let f = select(0.0, scale, x < d4);
            qr[r][x] = q[row * d4 + min(x, d4 - 1u)] * f;
        }
    }
    let lo = workgroupUniformLoad(&key_lo);
    let hi = workgroupUniformLoad(&key_hi);

    var acc: array<array<vec4<f32>, D4C>, RB>;
    var m: array<f32, RB>;
    var l: array<f32, RB>;
    for (var r = 0u; r < RB; r++) {
        m[r] = NEG;
    }
    for (var j0 = lo; j0 < hi; j0 += BC) {
        workgroupBarrier();
        // The tile, rows padded to D4C vec4 with zeros (a constant trip count: unrolled).
        for (var u = 0u; u < BC * D4C / WG; u++) {
            let e = u * WG + tid;
            let j = j0 + e / D4C;
            let x = e % D4C;
            var kx = vec4<f32>();
            var vx = vec4<f32>();
            if (j < hi && x < d4) {
                let idx = ((b * tks + j) * hkv + hk) * d4 + x;
                kx = k[idx];
                vx = v[idx];
            }
            ks[e] = kx;
            vs[e] = vx;
        }
        workgroupBarrier();

        // Keys one at a time (run-time trip count), each read once from workgroup memory and
        // used for all RB rows. The loops over rows and over D4C are unrolled: register
        // arrays are indexed by constants only.
        let nc = min(BC, hi - j0);
        for (var c = 0u; c < nc; c++) {
            let j = j0 + c;
            var kc: array<vec4<f32>, D4C>;
            var vc: array<vec4<f32>, D4C>;
            for (var x = 0u; x < D4C; x++) {
                kc[x] = ks[c * D4C + x];
                vc[x] = vs[c * D4C + x];
            }
            for (var r = 0u; r < RB; r++) {
                var s4 = vec4<f32>();
                for (var x = 0u; x < D4C; x++) {
                    s4 = fma(qr[r][x], kc[x], s4);
                }
                let visible = j < lim[r];
                let sc = s4.x + s4.y + s4.z + s4.w;
                let mn = select(m[r], max(m[r], sc), visible);
                let alpha = exp(m[r] - mn);
                let p = select(0.0, exp(sc - mn), visible);
                l[r] = fma(l[r], alpha, p);
                for (var x = 0u; x < D4C; x++) {
                    acc[r][x] = fma(vec4<f32>(p), vc[x], acc[r][x] * alpha);
                }
                m[r] = mn;
            }
        }
    }

    // Epilogue: normalise, gate, save the log-sum-exp (gate loads outside any branch, as the
    // query loads; only the stores are guarded).
    for (var r = 0u; r < RB; r++) {
        let i = i0 + r * WG + tid;
        let row = (b * tq + min(i, tq - 1u)) * hq + h;
        var inv = 0.0;
        var row_lse = 0.0;
        if (l[r] > 0.0) {
            inv = 1.0 / l[r];
            row_lse = m[r] + log(l[r]);
        }
        var out: array<vec4<f32>, D4C>;
        for (var x = 0u; x < D4C; x++) {
            let g = gate[row * d4 + min(x, d4 - 1u)];
            out[x] = acc[r][x] * inv / (1.0 + exp(-g));
        }
        if (i < tq) {
            for (var x = 0u; x < D4C; x++) {
                if (x < d4) {
                    y[row * d4 + x] = out[x];
                }
            }
            lse[row] = row_lse;
        }
    }
}
