// Sigmoid-gated softmax attention, backward pass 3 of 3: dq, parallel over query blocks.
//
// Layout (all f32, contiguous, HF order):
//   q, da   [B, TQ, HQ, D]      da = dy * sigmoid(gate) from gated_attention_backward_prep.wgsl
//   k, v    [B, TK, HKV, D]
//   stats   [2, B, TQ, HQ]      [lse | delta]
//   dq      [B, TQ, HQ, D]      output
//
// Maths: for every visible pair (i, j) (j <= PAST + i, START_b <= j < END_b):
//   p_ij = exp(SCALE q_i . k_j - lse_i) ;  ds_ij = p_ij (da_i . v_j - delta_i)
//   dq_i = SCALE sum_j ds_ij k_j
//
// Algorithm: one workgroup per block of ROWS = WG * RB query rows of one (b, h); invocation
// tid owns rows i0 + r WG + tid (r < RB) with their pre-scaled q, da, lse, delta and dq
// accumulators in registers. Tiles of C keys and values stream through workgroup memory over
// the keys the block can see; each key is read once (the same element by all invocations) and
// used for all RB rows (register blocking). Data moves as vec4<f32> (D a multiple of 4).
//
// Grid: (ceil(TQ / ROWS), HQ, B).
// Workgroup memory: K, V tiles [C, D] = 8 KiB (C = 1024 / D, 4..64) + 8 bytes.
// Registers per invocation: q, da, dq [RB, D] (RB = 8 for D <= 64, 4 for D <= 128, 2 above).
// Template constants: D4C (head-dim class / 4), C, WG, RB.
// Run-time params (u32): TQ, TK, TKS (= TK), PAST, HQ, HKV, N (unused), SCALE (f32 bits),
//   D, unused, then START_b, END_b per batch row (END_b <= TK).

@group(0) @binding(0) var<storage, read_write> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> da: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> dq: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> params: array<u32>;

// Capacity (in vec4) of the register arrays: the head-dim class over 4 (the head dim itself
// comes at run time, so the loops over it stay loops).
const D4C: u32 = {{ d4c }}u;
const C: u32 = {{ c }}u;
const WG: u32 = {{ wg }}u;
const RB: u32 = {{ rb }}u;
const ROWS: u32 = WG * RB;

var<workgroup> ks: array<vec4<f32>, C * D4C>;
var<workgroup> vs: array<vec4<f32>, C * D4C>;
var<workgroup> key_lo: u32;
var<workgroup> key_hi: u32;

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
    let i0 = wid.x * ROWS;
    let h = wid.y;
    let b = wid.z;
    let hk = h / (hq / hkv);
    let start = params[10u + 2u * b];
    let end = params[11u + 2u * b];
    let n_rows = nwg.z * tq * hq;

    if (tid == 0u) {
        key_lo = start;
        key_hi = min(end, past + min(i0 + ROWS, tq));
    }
    // Rows i0 + r WG + tid (r < RB): loads outside any branch or run-time loop (rows clamped
    // into range, padding columns zeroed by a factor) compile to plain gathers on CPU drivers.
    var qr: array<array<vec4<f32>, D4C>, RB>;
    var dar: array<array<vec4<f32>, D4C>, RB>;
    var lim: array<u32, RB>; // row r sees keys [start, lim[r]); 0 for rows past the end
    var lse_r: array<f32, RB>;
    var delta_r: array<f32, RB>;
    for (var r = 0u; r < RB; r++) {
        let i = i0 + r * WG + tid;
        let row = (b * tq + min(i, tq - 1u)) * hq + h;
        lim[r] = select(0u, min(end, past + i + 1u), i < tq);
        lse_r[r] = stats[row];
        delta_r[r] = stats[n_rows + row];
        for (var x = 0u; x < D4C; x++) {
            let f = select(0.0, 1.0, x < d4);
            qr[r][x] = q[row * d4 + min(x, d4 - 1u)] * (f * scale);
            dar[r][x] = da[row * d4 + min(x, d4 - 1u)] * f;
        }
    }
    let lo = workgroupUniformLoad(&key_lo);
    let hi = workgroupUniformLoad(&key_hi);

    var acc: array<array<vec4<f32>, D4C>, RB>;
    for (var j0 = lo; j0 < hi; j0 += C) {
        workgroupBarrier();
        // The tile, rows padded to D4C vec4 with zeros (a constant trip count: unrolled).
        for (var u = 0u; u < C * D4C / WG; u++) {
            let e = u * WG + tid;
            let j = j0 + e / D4C;
            let x = e % D4C;
            var kx = vec4<f32>();
            var vx = vec4<f32>();
            if (j < hi && x < d4) {
                let idx = ((b * tk + j) * hkv + hk) * d4 + x;
                kx = k[idx];
                vx = v[idx];
            }
            ks[e] = kx;
            vs[e] = vx;
        }
        workgroupBarrier();

        // Keys one at a time (run-time trip count), each read once from workgroup memory and
        // used for all RB rows; the loops over rows and D4C are unrolled.
        let nc = min(C, hi - j0);
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
                var dp4 = vec4<f32>();
                for (var x = 0u; x < D4C; x++) {
                    s4 = fma(qr[r][x], kc[x], s4);
                    dp4 = fma(dar[r][x], vc[x], dp4);
                }
                let s = s4.x + s4.y + s4.z + s4.w;
                let dp = dp4.x + dp4.y + dp4.z + dp4.w;
                let p = select(0.0, exp(s - lse_r[r]), j < lim[r]);
                let ds = p * (dp - delta_r[r]);
                for (var x = 0u; x < D4C; x++) {
                    acc[r][x] = fma(vec4<f32>(ds), kc[x], acc[r][x]);
                }
            }
        }
    }

    for (var r = 0u; r < RB; r++) {
        let i = i0 + r * WG + tid;
        if (i < tq) {
            let row = (b * tq + i) * hq + h;
            for (var x = 0u; x < D4C; x++) {
                if (x < d4) {
                    dq[row * d4 + x] = acc[r][x] * scale;
                }
            }
        }
    }
}
