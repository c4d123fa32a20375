// Sigmoid-gated softmax attention, backward pass 2 of 3 (dk, dv), subgroup variant: the same
// maths and output as gated_attention_backward_dkv.wgsl (see there), for adapters with a
// known, fixed subgroup size S.
//
// Layout (all f32, contiguous, HF order):
//   q, da   [B, TQ, HQ, D]      da = dy * sigmoid(gate) from gated_attention_backward_prep.wgsl
//   k, v    [B, TK, HKV, D]
//   stats   [2, B, TQ, HQ]      [lse | delta] (delta = rowsum(dy * y))
//   dkv     [2, B, TK, HKV, D]  output: [dk | dv]
//
// Maths, for every visible pair (i, j) of the query heads h of kv head hk:
//   p_ij = exp(SCALE q_i . k_j - lse_i) ;  ds_ij = p_ij (da_i . v_j - delta_i)
//   dv_j = sum_{h, i} p_ij da_i ;   dk_j = SCALE sum_{h, i} ds_ij q_i
// Each workgroup owns its keys and sums over all HQ / HKV query heads itself (no atomics).
//
// Algorithm: a workgroup is one subgroup of S invocations and owns ROWS = S * RB keys of one
// (b, hk); invocation `lane` owns keys j0 + r S + lane (r < RB) with k, v, dk, dv in registers.
// Queries stream in blocks of S from the first one that sees the block (causality): lane c
// loads query i0 + c (pre-scaled q, da, lse, delta), and query c reaches every lane by
// subgroupBroadcast (a register move; no workgroup memory, no barriers in the loop). The host
// unrolls the loops over queries c < S, keys r < RB and vec4s x < D4C, as in
// gated_attention_forward_sg.wgsl (see there why).
//
// Grid: (ceil(TK / ROWS), HKV, B). Workgroup memory: 12 bytes.
// Template constants: D4C (head-dim class / 4), S, RB.
// Run-time params (u32): TQ, TK, TKS (= TK), PAST, HQ, HKV, N (unused), SCALE (f32 bits),
//   D, unused, then START_b, END_b per batch row (END_b <= TK).

@group(0) @binding(0) var<storage, read_write> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> da: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> dkv: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> params: array<u32>;

const D4C: u32 = {{ d4c }}u;
const S: u32 = {{ s }}u;
const RB: u32 = {{ rb }}u;
const ROWS: u32 = S * RB;

var<workgroup> uni_qlo: u32;
var<workgroup> uni_ntile: u32;
var<workgroup> uni_iters: u32;

@compute @workgroup_size({{ s }}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
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

    if (lane == 0u) {
        // First query that sees some key of [max(j0, start), min(j0 + ROWS, end)).
        let first_key = max(j0, start);
        var qlo = tq;
        if (first_key < min(j0 + ROWS, end)) {
            qlo = min(tq, max(first_key, past) - past);
        }
        let ntile = (tq - qlo + S - 1u) / S;
        uni_qlo = qlo;
        uni_ntile = ntile;
        uni_iters = g * ntile;
    }
    var kr: array<array<vec4<f32>, D4C>, RB>;
    var vr: array<array<vec4<f32>, D4C>, RB>;
    // Key r is seen by queries i >= first_q[r] (causality) if it lies in the valid range.
    var first_q: array<u32, RB>;
    //#unroll r
    {
        let j = j0 + {{r}}u * S + lane;
        first_q[{{r}}] = select(0xffffffffu, max(j, past) - past, j < tk && j >= start && j < end);
        let base = ((b * tk + min(j, tk - 1u)) * hkv + hk) * d4;
        //#unroll x
        kr[{{r}}][{{x}}] = k[base + min({{x}}u, d4 - 1u)] * select(0.0, 1.0, {{x}}u < d4);
        vr[{{r}}][{{x}}] = v[base + min({{x}}u, d4 - 1u)] * select(0.0, 1.0, {{x}}u < d4);
        //#end
    }
    //#end
    let qlo = workgroupUniformLoad(&uni_qlo);
    let ntile = workgroupUniformLoad(&uni_ntile);
    let iters = workgroupUniformLoad(&uni_iters);

    var dk: array<array<vec4<f32>, D4C>, RB>;
    var dv: array<array<vec4<f32>, D4C>, RB>;
    for (var it = 0u; it < iters; it++) {
        let h = hk * g + it / ntile;
        let i0 = qlo + (it % ntile) * S;
        // This lane's query of the block (clamped into range; queries past TQ are masked).
        let il = min(i0 + lane, tq - 1u);
        let row = (b * tq + il) * hq + h;
        var ql: array<vec4<f32>, D4C>;
        var dal: array<vec4<f32>, D4C>;
        //#unroll x
        ql[{{x}}] = q[row * d4 + min({{x}}u, d4 - 1u)] * select(0.0, scale, {{x}}u < d4);
        dal[{{x}}] = da[row * d4 + min({{x}}u, d4 - 1u)] * select(0.0, 1.0, {{x}}u < d4);
        //#end
        let lse_l = stats[row];
        let delta_l = stats[n_rows + row];

        //#unroll c
        {
            var qc: array<vec4<f32>, D4C>;
            var dac: array<vec4<f32>, D4C>;
            //#unroll x
            qc[{{x}}] = subgroupBroadcast(ql[{{x}}], {{c}}u);
            dac[{{x}}] = subgroupBroadcast(dal[{{x}}], {{c}}u);
            //#end
            let lse_c = subgroupBroadcast(lse_l, {{c}}u);
            let delta_c = subgroupBroadcast(delta_l, {{c}}u);
            let i = i0 + {{c}}u;
            // Scores and da . v of every key against query c, the keys innermost (RB
            // independent sums in flight).
            var s4: array<vec4<f32>, RB>;
            var dp4: array<vec4<f32>, RB>;
            //#unroll x
            //#unroll r
            s4[{{r}}] = fma(kr[{{r}}][{{x}}], qc[{{x}}], s4[{{r}}]);
            dp4[{{r}}] = fma(vr[{{r}}][{{x}}], dac[{{x}}], dp4[{{r}}]);
            //#end
            //#end
            //#unroll r
            {
                let s = s4[{{r}}].x + s4[{{r}}].y + s4[{{r}}].z + s4[{{r}}].w;
                let dp = dp4[{{r}}].x + dp4[{{r}}].y + dp4[{{r}}].z + dp4[{{r}}].w;
                let p = select(0.0, exp(s - lse_c), i >= first_q[{{r}}] && i < tq);
                let ds = p * (dp - delta_c);
                //#unroll x
                dv[{{r}}][{{x}}] = fma(vec4<f32>(p), dac[{{x}}], dv[{{r}}][{{x}}]);
                dk[{{r}}][{{x}}] = fma(vec4<f32>(ds), qc[{{x}}], dk[{{r}}][{{x}}]);
                //#end
            }
            //#end
        }
        //#end
    }

    let n_kv = nb * tk * hkv * d4;
    //#unroll r
    {
        let j = j0 + {{r}}u * S + lane;
        if (j < tk) {
            let base = ((b * tk + j) * hkv + hk) * d4;
            //#unroll x
            if ({{x}}u < d4) {
                dkv[base + {{x}}u] = dk[{{r}}][{{x}}];
                dkv[n_kv + base + {{x}}u] = dv[{{r}}][{{x}}];
            }
            //#end
        }
    }
    //#end
}
