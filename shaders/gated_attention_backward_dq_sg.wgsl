// Sigmoid-gated softmax attention, backward pass 3 of 3 (dq), subgroup variant: the same maths
// and output as gated_attention_backward_dq.wgsl (see there), for adapters with a known, fixed
// subgroup size S.
//
// Layout (all f32, contiguous, HF order):
//   q, da   [B, TQ, HQ, D]      da = dy * sigmoid(gate) from gated_attention_backward_prep.wgsl
//   k, v    [B, TK, HKV, D]
//   stats   [2, B, TQ, HQ]      [lse | delta]
//   dq      [B, TQ, HQ, D]      output
//
// Maths: p_ij = exp(SCALE q_i . k_j - lse_i) ; ds_ij = p_ij (da_i . v_j - delta_i) ;
//   dq_i = SCALE sum_j ds_ij k_j   over the visible j.
//
// Algorithm: a workgroup is one subgroup of S invocations and owns ROWS = S * RB query rows of
// one (b, h); invocation `lane` owns rows i0 + r S + lane (r < RB) with q, da, lse, delta and
// the dq accumulators in registers. Keys stream in blocks of S: lane c loads key j0 + c (k and
// v), and key c reaches every lane by subgroupBroadcast (a register move; no workgroup memory,
// no barriers in the loop). The host unrolls the loops over keys c < S, rows r < RB and
// vec4s x < D4C, as in gated_attention_forward_sg.wgsl (see there why).
//
// Grid: (ceil(TQ / ROWS), HQ, B). Workgroup memory: 8 bytes.
// Template constants: D4C (head-dim class / 4), S, RB.
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
// comes at run time: vec4s x >= D / 4 are zero).
const D4C: u32 = {{ d4c }}u;
const S: u32 = {{ s }}u;
const RB: u32 = {{ rb }}u;
const ROWS: u32 = S * RB;
var<workgroup> key_lo: u32;
var<workgroup> key_hi: u32;

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
    let i0 = wid.x * ROWS;
    let h = wid.y;
    let b = wid.z;
    let hk = h / (hq / hkv);
    let start = params[10u + 2u * b];
    let end = params[11u + 2u * b];
    let n_rows = nwg.z * tq * hq;

    if (lane == 0u) {
        key_lo = start;
        key_hi = min(end, past + min(i0 + ROWS, tq));
    }
    var qr: array<array<vec4<f32>, D4C>, RB>;
    var dar: array<array<vec4<f32>, D4C>, RB>;
    var lim: array<u32, RB>; // row r sees keys [start, lim[r]); 0 for rows past the end
    var lse_r: array<f32, RB>;
    var delta_r: array<f32, RB>;
    //#unroll r
    {
        let i = i0 + {{r}}u * S + lane;
        let row = (b * tq + min(i, tq - 1u)) * hq + h;
        lim[{{r}}] = select(0u, min(end, past + i + 1u), i < tq);
        lse_r[{{r}}] = stats[row];
        delta_r[{{r}}] = stats[n_rows + row];
        //#unroll x
        qr[{{r}}][{{x}}] = q[row * d4 + min({{x}}u, d4 - 1u)] * select(0.0, scale, {{x}}u < d4);
        dar[{{r}}][{{x}}] = da[row * d4 + min({{x}}u, d4 - 1u)] * select(0.0, 1.0, {{x}}u < d4);
        //#end
    }
    //#end
    let lo = workgroupUniformLoad(&key_lo);
    let hi = workgroupUniformLoad(&key_hi);

    var acc: array<array<vec4<f32>, D4C>, RB>;
    for (var j0 = lo; j0 < hi; j0 += S) {
        // This lane's key of the block (clamped into range; keys past `hi` are never visible).
        let jl = min(j0 + lane, hi - 1u);
        let base = ((b * tk + jl) * hkv + hk) * d4;
        var kl: array<vec4<f32>, D4C>;
        var vl: array<vec4<f32>, D4C>;
        //#unroll x
        kl[{{x}}] = k[base + min({{x}}u, d4 - 1u)] * select(0.0, 1.0, {{x}}u < d4);
        vl[{{x}}] = v[base + min({{x}}u, d4 - 1u)] * select(0.0, 1.0, {{x}}u < d4);
        //#end
        //#unroll c
        {
            var kc: array<vec4<f32>, D4C>;
            var vc: array<vec4<f32>, D4C>;
            //#unroll x
            kc[{{x}}] = subgroupBroadcast(kl[{{x}}], {{c}}u);
            vc[{{x}}] = subgroupBroadcast(vl[{{x}}], {{c}}u);
            //#end
            // Scores and da . v of every row against key c, the rows innermost (RB
            // independent sums in flight).
            var s4: array<vec4<f32>, RB>;
            var dp4: array<vec4<f32>, RB>;
            //#unroll x
            //#unroll r
            s4[{{r}}] = fma(qr[{{r}}][{{x}}], kc[{{x}}], s4[{{r}}]);
            dp4[{{r}}] = fma(dar[{{r}}][{{x}}], vc[{{x}}], dp4[{{r}}]);
            //#end
            //#end
            //#unroll r
            {
                let s = s4[{{r}}].x + s4[{{r}}].y + s4[{{r}}].z + s4[{{r}}].w;
                let dp = dp4[{{r}}].x + dp4[{{r}}].y + dp4[{{r}}].z + dp4[{{r}}].w;
                let p = select(0.0, exp(s - lse_r[{{r}}]), j0 + {{c}}u < lim[{{r}}]);
                let ds = p * (dp - delta_r[{{r}}]);
                //#unroll x
                acc[{{r}}][{{x}}] = fma(vec4<f32>(ds), kc[{{x}}], acc[{{r}}][{{x}}]);
                //#end
            }
            //#end
        }
        //#end
    }

    //#unroll r
    {
        let i = i0 + {{r}}u * S + lane;
        if (i < tq) {
            let row = (b * tq + i) * hq + h;
            //#unroll x
            if ({{x}}u < d4) {
                dq[row * d4 + {{x}}u] = acc[{{r}}][{{x}}] * scale;
            }
            //#end
        }
    }
    //#end
}
