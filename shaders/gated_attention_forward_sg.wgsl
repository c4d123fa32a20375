// Sigmoid-gated softmax attention, forward, subgroup variant: the same maths and outputs as
// gated_attention_forward.wgsl (see there), for adapters with a known, fixed subgroup size S.
//
// Layout (all f32, contiguous, HF order):
//   q, gate [B, TQ, HQ, D]
//   k, v    [B, TKS, HKV, D]   only time steps < TK are read
//   y       [B, TQ, HQ, D]     the gated output
//   lse     [B, TQ, HQ]        row log-sum-exp of the scaled scores
//
// Algorithm: a workgroup is one subgroup of S invocations and owns ROWS = S * RB query rows
// of one (b, h); invocation `lane` owns rows i0 + r S + lane (r < RB), their pre-scaled
// queries and output accumulators in registers. Keys stream in blocks of S: lane c loads key
// j0 + c (every lane a different key: each load is useful, none is a broadcast from memory),
// then key c reaches all lanes by subgroupBroadcast (a register move). No workgroup memory,
// no barriers in the loop. Per block and row the online softmax rescales once:
//   s_c = q . k_c (c < S) ;  m' = max(m, max_c s_c) ;  p_c = e^(s_c - m')
//   l = l e^(m - m') + sum_c p_c ;  acc = acc e^(m - m') + sum_c p_c v_c
// The host unrolls all fixed-count loops (`//#unroll name` .. `//#end`, copies with
// `{{name}}` = 0, 1, ..): c over the S keys of a block (subgroupBroadcast takes a constant
// lane), r over the RB rows, x over the D4C vec4s of a head. Every register array is then
// indexed by literals only: a CPU driver keeps such arrays in registers (or plain spill
// slots), while one indexed by a loop variable lives in scratch memory that llvmpipe reads
// and writes lane by lane (3.4x slower forward on lavapipe).
//
// Grid: (ceil(TQ / ROWS), HQ, B). Workgroup memory: 8 bytes.
// Registers per invocation: q, acc [RB, D], k, v [D], scores [RB, S].
// Template constants: D4C (head-dim class / 4), S, RB.
// Run-time params (u32): TQ, TK, TKS, PAST, HQ, HKV, N (unused), SCALE (f32 bits), D,
//   unused, then START_b, END_b per batch row (END_b <= TK).

@group(0) @binding(0) var<storage, read_write> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> gate: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<storage, read_write> params: array<u32>;

const D4C: u32 = {{ d4c }}u;
const S: u32 = {{ s }}u;
const RB: u32 = {{ rb }}u;
const ROWS: u32 = S * RB;
const NEG: f32 = -3.0e38;

var<workgroup> key_lo: u32;
var<workgroup> key_hi: u32;

@compute @workgroup_size({{ s }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
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

    if (lane == 0u) {
        key_lo = start;
        key_hi = min(end, past + min(i0 + ROWS, tq));
    }
    var qr: array<array<vec4<f32>, D4C>, RB>;
    var lim: array<u32, RB>;
    //#unroll r
    {
        let i = i0 + {{r}}u * S + lane;
        lim[{{r}}] = select(0u, min(end, past + i + 1u), i < tq);
        let row = (b * tq + min(i, tq - 1u)) * hq + h;
        //#unroll x
        qr[{{r}}][{{x}}] = q[row * d4 + min({{x}}u, d4 - 1u)] * select(0.0, scale, {{x}}u < d4);
        //#end
    }
    //#end
    // Uniform bounds (read through workgroup memory, as WGSL's uniformity analysis wants).
    let lo = workgroupUniformLoad(&key_lo);
    let hi = workgroupUniformLoad(&key_hi);

    var acc: array<array<vec4<f32>, D4C>, RB>;
    var m: array<f32, RB>;
    var l: array<f32, RB>;
    //#unroll r
    m[{{r}}] = NEG;
    //#end
    for (var j0 = lo; j0 < hi; j0 += S) {
        // This lane's key of the block (clamped into range; keys past `hi` are never visible).
        let jl = min(j0 + lane, hi - 1u);
        let base = ((b * tks + jl) * hkv + hk) * d4;
        var kl: array<vec4<f32>, D4C>;
        var vl: array<vec4<f32>, D4C>;
        //#unroll x
        kl[{{x}}] = k[base + min({{x}}u, d4 - 1u)] * select(0.0, 1.0, {{x}}u < d4);
        vl[{{x}}] = v[base + min({{x}}u, d4 - 1u)] * select(0.0, 1.0, {{x}}u < d4);
        //#end

        // Scores of every row against the S keys: key c's components reach the lanes one
        // vec4 at a time and feed all RB rows at once.
        var s: array<array<f32, S>, RB>;
        //#unroll c
        {
            var s4: array<vec4<f32>, RB>;
            //#unroll x
            {
                let kx = subgroupBroadcast(kl[{{x}}], {{c}}u);
                //#unroll r
                s4[{{r}}] = fma(qr[{{r}}][{{x}}], kx, s4[{{r}}]);
                //#end
            }
            //#end
            //#unroll r
            s[{{r}}][{{c}}] = select(NEG, s4[{{r}}].x + s4[{{r}}].y + s4[{{r}}].z + s4[{{r}}].w, j0 + {{c}}u < lim[{{r}}]);
            //#end
        }
        //#end

        // One rescale per row and block.
        var p: array<array<f32, S>, RB>;
        //#unroll r
        {
            var mx = m[{{r}}];
            //#unroll c
            mx = max(mx, s[{{r}}][{{c}}]);
            //#end
            let alpha = exp(m[{{r}}] - mx);
            var sum = 0.0;
            //#unroll c
            p[{{r}}][{{c}}] = select(0.0, exp(s[{{r}}][{{c}}] - mx), s[{{r}}][{{c}}] > NEG);
            sum += p[{{r}}][{{c}}];
            //#end
            l[{{r}}] = fma(l[{{r}}], alpha, sum);
            m[{{r}}] = mx;
            //#unroll x
            acc[{{r}}][{{x}}] *= alpha;
            //#end
        }
        //#end

        //#unroll c
        //#unroll x
        {
            let vx = subgroupBroadcast(vl[{{x}}], {{c}}u);
            //#unroll r
            acc[{{r}}][{{x}}] = fma(vec4<f32>(p[{{r}}][{{c}}]), vx, acc[{{r}}][{{x}}]);
            //#end
        }
        //#end
        //#end
    }

    //#unroll r
    {
        let i = i0 + {{r}}u * S + lane;
        let row = (b * tq + min(i, tq - 1u)) * hq + h;
        var inv = 0.0;
        var row_lse = 0.0;
        if (l[{{r}}] > 0.0) {
            inv = 1.0 / l[{{r}}];
            row_lse = m[{{r}}] + log(l[{{r}}]);
        }
        var out: array<vec4<f32>, D4C>;
        //#unroll x
        out[{{x}}] = acc[{{r}}][{{x}}] * inv / (1.0 + exp(-gate[row * d4 + min({{x}}u, d4 - 1u)]));
        //#end
        if (i < tq) {
            //#unroll x
            if ({{x}}u < d4) {
                y[row * d4 + {{x}}u] = out[{{x}}];
            }
            //#end
            lse[row] = row_lse;
        }
    }
    //#end
}
