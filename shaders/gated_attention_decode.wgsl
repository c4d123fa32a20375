// Sigmoid-gated softmax attention, one-token decode against a KV cache.
//
// Layout (all f32, contiguous, HF order):
//   q, gate [B, 1, HQ, D]
//   k, v    [B, TKS, HKV, D]   the cache buffers (TKS = capacity); only keys < TK are read
//   y       [B, 1, HQ, D]
// Query head h reads kv head h / (HQ / HKV).
//
// Maths (the forward's, for one query at position PAST, normally TK - 1):
//   visible keys j: START_b <= j < min(END_b, PAST + 1) ;  s_j = SCALE q . k_j
//   y = (sum_j exp(s_j - m) v_j / sum_j exp(s_j - m)) * sigmoid(gate) ;  0 if no key is visible
//
// Algorithm: one workgroup per (h, b) walks the visible keys in chunks of WG: invocation c
// scores key j0 + c (one dot product over D), a reduction tree gives the chunk's max, the
// running online softmax is rescaled, then invocation x < D accumulates its column of P V
// (reads of v rows coalesced) and every invocation the sum of the chunk's probabilities.
//
// Grid: (HQ, B, 1). Workgroup memory: q [D] + scores [WG] + probabilities [WG] (3 KiB at D = 256).
// Template constants: DC (head-dim class, >= D), WG (>= DC).
// Run-time params (u32): TQ (= 1), TK, TKS, PAST, HQ, HKV, N (unused), SCALE (f32 bits),
//   D, unused, then START_b, END_b per batch row (END_b <= TK).

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> gate: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> params: array<u32>;

// Capacity of the query array: the head-dim class (the head dim comes at run time).
const DC: u32 = {{ dc }}u;
const WG: u32 = {{ wg }}u;
const NEG: f32 = -3.0e38;

var<workgroup> qs: array<f32, DC>;
var<workgroup> ss: array<f32, WG>;
var<workgroup> ps: array<f32, WG>;
var<workgroup> key_lo: u32;
var<workgroup> key_hi: u32;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let tks = params[2u];
    let past = params[3u];
    let hq = params[4u];
    let hkv = params[5u];
    let scale = bitcast<f32>(params[7u]);
    let dd = params[8u];
    let h = wid.x;
    let b = wid.y;
    let hk = h / (hq / hkv);
    let row = b * hq + h;

    if (tid == 0u) {
        key_lo = params[10u + 2u * b];
        key_hi = min(params[11u + 2u * b], past + 1u);
    }
    for (var x = tid; x < dd; x += WG) {
        qs[x] = q[row * dd + x] * scale;
    }
    let lo = workgroupUniformLoad(&key_lo);
    let hi = workgroupUniformLoad(&key_hi);

    var m = NEG;
    var l = 0.0;
    var acc = 0.0;
    for (var j0 = lo; j0 < hi; j0 += WG) {
        let j = j0 + tid;
        var s = NEG;
        if (j < hi) {
            let base = ((b * tks + j) * hkv + hk) * dd;
            s = 0.0;
            for (var x = 0u; x < dd; x++) {
                s += qs[x] * k[base + x];
            }
        }
        ss[tid] = s;
        // Chunk max by a tree (a constant trip count: unrolled, no per-key loop iterations).
        for (var w = WG / 2u; w > 0u; w >>= 1u) {
            workgroupBarrier();
            if (tid < w) {
                ss[tid] = max(ss[tid], ss[tid + w]);
            }
        }
        let mt = max(m, workgroupUniformLoad(&ss[0]));
        ps[tid] = select(0.0, exp(s - mt), j < hi);
        workgroupBarrier();
        let alpha = exp(m - mt);
        l *= alpha;
        acc *= alpha;
        let n = min(WG, hi - j0);
        for (var c = 0u; c < n; c++) {
            let p = ps[c];
            l += p;
            if (tid < dd) {
                acc += p * v[((b * tks + j0 + c) * hkv + hk) * dd + tid];
            }
        }
        m = mt;
    }

    if (tid < dd) {
        var out = 0.0;
        if (l > 0.0) {
            let g = gate[row * dd + tid];
            out = acc / l / (1.0 + exp(-g));
        }
        y[row * dd + tid] = out;
    }
}
