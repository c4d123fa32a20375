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
// Algorithm: one workgroup per block of R query rows of one (b, h): pre-scaled q, da [R, D],
// lse, delta stay in workgroup memory; tiles of C keys and values stream through it over the
// keys the block can see. Invocation (r, tc) owns row r and columns x = tc, tc + TPR, ... of
// its dq accumulator. Dot products split in PARTS pieces over D when the tile has fewer than
// WG entries.
//
// Grid: (ceil(TQ / R), HQ, B). WG = 256 = R rows x TPR.
// Workgroup memory: Q, dA [R, D] + K, V [C, D] + dS [R, C] + 2 partial buffers + lse, delta [R]
//   D <= 16: 32 x 16 -> 8.1 KiB;  D <= 32: 16 x 16 -> 11.1 KiB; D <= 64: 16 x 8 -> 14.6 KiB;
//   D <= 128: 8 x 4 -> 14.2 KiB;  D <= 256: 4 x 2 -> 14.1 KiB     (R x C)
// Template constants: D, R, C, WG, TPR (= WG / R), DPT (= ceil(D / TPR)), PARTS, DP
//   (= ceil(D / PARTS)), Q_LEN, KV_LEN, P_LEN, RED_LEN (workgroup array lengths).
// Run-time params (u32): TQ, TK, TKS (= TK), PAST, HQ, HKV, unused, SCALE (f32 bits),
//   then START_b, END_b per batch row (END_b <= TK).

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> da: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> dq: array<f32>;
@group(0) @binding(6) var<storage, read_write> params: array<u32>;

const D: u32 = {{ d }}u;
const R: u32 = {{ r }}u;
const C: u32 = {{ c }}u;
const WG: u32 = {{ wg }}u;
const TPR: u32 = {{ tpr }}u;
const DPT: u32 = {{ dpt }}u;
const PARTS: u32 = {{ parts }}u;
const DP: u32 = {{ dp }}u;
const NE: u32 = R * C;

var<workgroup> qs: array<f32, {{ q_len }}>;
var<workgroup> das: array<f32, {{ q_len }}>;
var<workgroup> ks: array<f32, {{ kv_len }}>;
var<workgroup> vs: array<f32, {{ kv_len }}>;
var<workgroup> dss: array<f32, {{ p_len }}>;
var<workgroup> red_s: array<f32, {{ red_len }}>;
var<workgroup> red_dp: array<f32, {{ red_len }}>;
var<workgroup> lse_s: array<f32, R>;
var<workgroup> delta_s: array<f32, R>;
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
    let i0 = wid.x * R;
    let h = wid.y;
    let b = wid.z;
    let hk = h / (hq / hkv);
    let start = params[8u + 2u * b];
    let end = params[9u + 2u * b];
    let n_rows = nwg.z * tq * hq;

    if (tid == 0u) {
        key_lo = start;
        key_hi = min(end, past + min(i0 + R, tq));
    }
    for (var e = tid; e < R * D; e += WG) {
        let i = i0 + e / D;
        var qx = 0.0;
        var dax = 0.0;
        if (i < tq) {
            let idx = ((b * tq + i) * hq + h) * D + e % D;
            qx = q[idx] * scale;
            dax = da[idx];
        }
        qs[e] = qx;
        das[e] = dax;
    }
    if (tid < R) {
        let i = i0 + tid;
        var lx = 0.0;
        var dx = 0.0;
        if (i < tq) {
            let row = (b * tq + i) * hq + h;
            lx = stats[row];
            dx = stats[n_rows + row];
        }
        lse_s[tid] = lx;
        delta_s[tid] = dx;
    }
    let lo = workgroupUniformLoad(&key_lo);
    let hi = workgroupUniformLoad(&key_hi);

    let r = tid / TPR;
    let tc = tid % TPR;
    var dq_acc: array<f32, DPT>;

    for (var j0 = lo; j0 < hi; j0 += C) {
        workgroupBarrier();
        for (var e = tid; e < C * D; e += WG) {
            let j = j0 + e / D;
            var kx = 0.0;
            var vx = 0.0;
            if (j < hi) {
                let idx = ((b * tk + j) * hkv + hk) * D + e % D;
                kx = k[idx];
                vx = v[idx];
            }
            ks[e] = kx;
            vs[e] = vx;
        }
        workgroupBarrier();

        // Entries (rr, c) = (e / C, e % C): ds = p (da . v - delta), p from q . k and lse.
        if (PARTS == 1u) {
            for (var e = tid; e < NE; e += WG) {
                let rr = e / C;
                let c = e % C;
                var s = 0.0;
                var dp = 0.0;
                for (var x = 0u; x < D; x++) {
                    s += qs[rr * D + x] * ks[c * D + x];
                    dp += das[rr * D + x] * vs[c * D + x];
                }
                var ds = 0.0;
                if (i0 + rr < tq && j0 + c < min(end, past + i0 + rr + 1u)) {
                    ds = exp(s - lse_s[rr]) * (dp - delta_s[rr]);
                }
                dss[e] = ds;
            }
        } else {
            let e = tid % NE;
            let p = tid / NE;
            let rr = e / C;
            let c = e % C;
            var s = 0.0;
            var dp = 0.0;
            for (var x = p * DP; x < min(p * DP + DP, D); x++) {
                s += qs[rr * D + x] * ks[c * D + x];
                dp += das[rr * D + x] * vs[c * D + x];
            }
            red_s[tid] = s;
            red_dp[tid] = dp;
            workgroupBarrier();
            if (tid < NE) {
                var st = 0.0;
                var dpt = 0.0;
                for (var pp = 0u; pp < PARTS; pp++) {
                    st += red_s[pp * NE + tid];
                    dpt += red_dp[pp * NE + tid];
                }
                var ds = 0.0;
                if (i0 + rr < tq && j0 + c < min(end, past + i0 + rr + 1u)) {
                    ds = exp(st - lse_s[rr]) * (dpt - delta_s[rr]);
                }
                dss[tid] = ds;
            }
        }
        workgroupBarrier();

        for (var c = 0u; c < C; c++) {
            let ds = dss[r * C + c];
            for (var u = 0u; u < DPT; u++) {
                let x = tc + u * TPR;
                if (x < D) {
                    dq_acc[u] += ds * ks[c * D + x];
                }
            }
        }
    }

    let i = i0 + r;
    if (i < tq) {
        let base = ((b * tq + i) * hq + h) * D;
        for (var u = 0u; u < DPT; u++) {
            let x = tc + u * TPR;
            if (x < D) {
                dq[base + x] = dq_acc[u] * scale;
            }
        }
    }
}
