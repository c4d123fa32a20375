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
// Each workgroup owns R keys and sums over all HQ / HKV query heads of its kv head itself, so
// no two workgroups write the same element (no atomics).
//
// Algorithm: one workgroup per block of R keys of one (b, hk): K, V [R, D] stay in workgroup
// memory; tiles of C queries (pre-scaled q, da, lse, delta) stream through it, starting at the
// first query that can see the block (causality). Invocation (r, tc) owns key r and columns
// x = tc, tc + TPR, ... of its dk, dv accumulators. Dot products split in PARTS pieces over D
// when the tile has fewer than WG entries.
//
// Grid: (ceil(TK / R), HKV, B). WG = 256 = R keys x TPR.
// Workgroup memory: K, V [R, D] + Q, dA [C, D] + P, dS [C, R] + 2 partial buffers + lse, delta [C]
//   D <= 16: 32 x 16 -> 10.1 KiB; D <= 32: 16 x 16 -> 12.1 KiB; D <= 64: 16 x 8 -> 15.1 KiB;
//   D <= 128: 8 x 4 -> 14.3 KiB;  D <= 256: 4 x 2 -> 14.1 KiB     (R x C)
// Template constants: D, R, C, WG, TPR (= WG / R), DPT (= ceil(D / TPR)), PARTS, DP
//   (= ceil(D / PARTS)), KV_LEN, Q_LEN, P_LEN, RED_LEN (workgroup array lengths).
// Run-time params (u32): TQ, TK, TKS (= TK), PAST, HQ, HKV, unused, SCALE (f32 bits),
//   then START_b, END_b per batch row (END_b <= TK).

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> da: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> dkv: array<f32>;
@group(0) @binding(6) var<storage, read_write> params: array<u32>;

const D: u32 = {{ d }}u;
const R: u32 = {{ r }}u;
const C: u32 = {{ c }}u;
const WG: u32 = {{ wg }}u;
const TPR: u32 = {{ tpr }}u;
const DPT: u32 = {{ dpt }}u;
const PARTS: u32 = {{ parts }}u;
const DP: u32 = {{ dp }}u;
const NE: u32 = C * R;

var<workgroup> ks: array<f32, {{ kv_len }}>;
var<workgroup> vs: array<f32, {{ kv_len }}>;
var<workgroup> qs: array<f32, {{ q_len }}>;
var<workgroup> das: array<f32, {{ q_len }}>;
var<workgroup> ps: array<f32, {{ p_len }}>;
var<workgroup> dss: array<f32, {{ p_len }}>;
var<workgroup> red_s: array<f32, {{ red_len }}>;
var<workgroup> red_dp: array<f32, {{ red_len }}>;
var<workgroup> lse_s: array<f32, C>;
var<workgroup> delta_s: array<f32, C>;
var<workgroup> uni_qlo: u32;
var<workgroup> uni_ntile: u32;
var<workgroup> uni_iters: u32;

// p and ds of query row cq of the tile against key c, from the two dot products.
fn store_entry(e: u32, s: f32, dp: f32, visible: bool) {
    let cq = e / R;
    var p = 0.0;
    if (visible) {
        p = exp(s - lse_s[cq]);
    }
    ps[e] = p;
    dss[e] = p * (dp - delta_s[cq]);
}

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
    let j0 = wid.x * R;
    let hk = wid.y;
    let b = wid.z;
    let nb = nwg.z;
    let g = hq / hkv;
    let start = params[8u + 2u * b];
    let end = params[9u + 2u * b];
    let n_rows = nb * tq * hq;

    if (tid == 0u) {
        // First query that sees some key of [max(j0, start), min(j0 + R, end)).
        let first_key = max(j0, start);
        var qlo = tq;
        if (first_key < min(j0 + R, end)) {
            qlo = min(tq, max(first_key, past) - past);
        }
        let ntile = (tq - qlo + C - 1u) / C;
        uni_qlo = qlo;
        uni_ntile = ntile;
        uni_iters = g * ntile;
    }
    for (var e = tid; e < R * D; e += WG) {
        let j = j0 + e / D;
        var kx = 0.0;
        var vx = 0.0;
        if (j < tk) {
            let idx = ((b * tk + j) * hkv + hk) * D + e % D;
            kx = k[idx];
            vx = v[idx];
        }
        ks[e] = kx;
        vs[e] = vx;
    }
    let qlo = workgroupUniformLoad(&uni_qlo);
    let ntile = workgroupUniformLoad(&uni_ntile);
    let iters = workgroupUniformLoad(&uni_iters);

    let r = tid / TPR;
    let tc = tid % TPR;
    var dk_acc: array<f32, DPT>;
    var dv_acc: array<f32, DPT>;

    for (var it = 0u; it < iters; it++) {
        let h = hk * g + it / ntile;
        let i0 = qlo + (it % ntile) * C;
        workgroupBarrier();
        for (var e = tid; e < C * D; e += WG) {
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
        if (tid < C) {
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
        workgroupBarrier();

        // Entries (cq, c) = (e / R, e % R): s = q . k and dp = da . v.
        if (PARTS == 1u) {
            for (var e = tid; e < NE; e += WG) {
                let cq = e / R;
                let c = e % R;
                var s = 0.0;
                var dp = 0.0;
                for (var x = 0u; x < D; x++) {
                    s += qs[cq * D + x] * ks[c * D + x];
                    dp += das[cq * D + x] * vs[c * D + x];
                }
                let i = i0 + cq;
                let j = j0 + c;
                store_entry(e, s, dp, i < tq && j >= start && j < end && j <= past + i);
            }
        } else {
            let e = tid % NE;
            let p = tid / NE;
            let cq = e / R;
            let c = e % R;
            var s = 0.0;
            var dp = 0.0;
            for (var x = p * DP; x < min(p * DP + DP, D); x++) {
                s += qs[cq * D + x] * ks[c * D + x];
                dp += das[cq * D + x] * vs[c * D + x];
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
                let i = i0 + cq;
                let j = j0 + c;
                store_entry(tid, st, dpt, i < tq && j >= start && j < end && j <= past + i);
            }
        }
        workgroupBarrier();

        // dv_r += sum_cq p[cq, r] da_cq ;  dk_r += sum_cq ds[cq, r] (SCALE q_cq).
        for (var cq = 0u; cq < C; cq++) {
            let p = ps[cq * R + r];
            let ds = dss[cq * R + r];
            for (var u = 0u; u < DPT; u++) {
                let x = tc + u * TPR;
                if (x < D) {
                    dv_acc[u] += p * das[cq * D + x];
                    dk_acc[u] += ds * qs[cq * D + x];
                }
            }
        }
    }

    let j = j0 + r;
    if (j < tk) {
        let n_kv = nb * tk * hkv * D;
        let base = ((b * tk + j) * hkv + hk) * D;
        for (var u = 0u; u < DPT; u++) {
            let x = tc + u * TPR;
            if (x < D) {
                dkv[base + x] = dk_acc[u];
                dkv[n_kv + base + x] = dv_acc[u];
            }
        }
    }
}
