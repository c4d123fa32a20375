// One decode token of a whole Gated DeltaNet mixer after its input projections: causal conv
// state update + SiLU, q/k l2-normalisation, decay and beta gating, the delta-rule update and
// the gated RMSNorm of the output — one launch per layer.
//
// Layout (f32, contiguous):
//   mixed   [B, C]          pre-conv [q (HK·DK) | k (HK·DK) | v (HV·DV)], C = 2·HK·DK + HV·DV
//   z       [B, HV·DV]      output gate (pre-SiLU)
//   ba      [B, 2·HV]       beta then decay logits per row ([x W_b^T | x W_a^T])
//   consts  conv_w [C, KC] | a_log [HV] | dt_bias [HV] | norm_w [DV]
//   conv_in [B, KC, C]      last KC pre-conv columns (the conv uses the last KC - 1 and x)
//   s_in    [B, HV, DK, DV] recurrent state
//   out     packed: o [B, HV·DV] | conv_out [B, KC, C] | s_out [B, HV, DK, DV]
//
// Maths (transformers' torch_recurrent_gated_delta_rule after its conv and gating):
//   window = [conv_in[1..KC] ; x];  u = silu(Σ_j conv_w[:, j] · window[j]);  conv_out = window
//   q = l2norm(u_q) · DK^-1/2,  k = l2norm(u_k),  v = u_v
//   g = -exp(a_log) · softplus(a + dt_bias),  beta = sigmoid(b)
//   S' = exp(g) S;  delta = beta (v - S'^T k);  S = S' + k delta^T;  o = S^T q
//   out_o = o · rsqrt(mean(o²) + EPS) · norm_w · silu(z)
//
// Grid: (HV, B). Workgroup of WG = max(DK, DV) invocations (<= 256), one value column each:
// every column of S is independent given q and k (coalesced across neighbouring columns).
// q/k conv channels are computed by every workgroup of the key head (cheap: DK each) and
// written to conv_out by the first value head of the group.
//
// Template constants: HK, HV, DK, DV, KC, WG, EPS (f32 literal), SCALE (f32 literal).
// Run-time `params`: B.

@group(0) @binding(0) var<storage, read_write> mixed: array<f32>;
@group(0) @binding(1) var<storage, read_write> z: array<f32>;
@group(0) @binding(2) var<storage, read_write> ba: array<f32>;
@group(0) @binding(3) var<storage, read_write> consts: array<f32>;
@group(0) @binding(4) var<storage, read_write> conv_in: array<f32>;
@group(0) @binding(5) var<storage, read_write> s_in: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read_write> params: array<u32>;

const HK: u32 = {{ hk }}u;
const HV: u32 = {{ hv }}u;
const DK: u32 = {{ dk }}u;
const DV: u32 = {{ dv }}u;
const KC: u32 = {{ kc }}u;
const WG: u32 = {{ wg }}u;
const EPS: f32 = {{ eps }};
const SCALE: f32 = {{ scale }};
const C: u32 = 2u * HK * DK + HV * DV;
const L2EPS: f32 = 1e-6;
const A_LOG: u32 = C * KC;
const DT_BIAS: u32 = A_LOG + HV;
const NORM_W: u32 = DT_BIAS + HV;

var<workgroup> qs: array<f32, DK>;
var<workgroup> ks: array<f32, DK>;
var<workgroup> red: array<f32, WG>;

// Conv + SiLU of channel `ch` for batch row b; writes the new window when `store`.
fn conv_channel(b: u32, ch: u32, store: bool) -> f32 {
    var acc = 0.0;
    let base = b * KC * C;
    for (var j = 0u; j < KC; j++) {
        var xin: f32;
        if (j + 1u < KC) {
            xin = conv_in[base + (j + 1u) * C + ch];
        } else {
            xin = mixed[b * C + ch];
        }
        acc += consts[ch * KC + j] * xin;
        if (store) {
            out[B_O + base + j * C + ch] = xin;
        }
    }
    return acc / (1.0 + exp(-acc));
}

var<private> B_O: u32;

// Sum of `v` over the workgroup (all invocations must call it).
fn wg_sum(v: f32, tid: u32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            red[tid] += red[tid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let nb = params[0];
    let h = wid.x;
    let b = wid.y;
    let tid = lid.x;
    let r = HV / HK;
    let j = h / r;
    let first = h % r == 0u;
    B_O = nb * HV * DV;

    // q and k of key head j: conv + SiLU, then l2 norms.
    var qv = 0.0;
    var kv = 0.0;
    if (tid < DK) {
        qv = conv_channel(b, j * DK + tid, first);
        kv = conv_channel(b, HK * DK + j * DK + tid, first);
    }
    let qn = inverseSqrt(wg_sum(qv * qv, tid) + L2EPS) * SCALE;
    let kn = inverseSqrt(wg_sum(kv * kv, tid) + L2EPS);
    if (tid < DK) {
        qs[tid] = qv * qn;
        ks[tid] = kv * kn;
    }
    workgroupBarrier();

    // Gates of value head h.
    let bh = b * HV + h;
    let beta = 1.0 / (1.0 + exp(-ba[b * 2u * HV + h]));
    let a = ba[b * 2u * HV + HV + h] + consts[DT_BIAS + h];
    let softplus = select(log(1.0 + exp(a)), a, a > 20.0);
    let decay = exp(-exp(consts[A_LOG + h]) * softplus);

    var o = 0.0;
    let c = tid;
    if (c < DV) {
        let v = conv_channel(b, 2u * HK * DK + h * DV + c, true);
        let s_base = bh * DK * DV;
        var sk = 0.0;
        for (var d = 0u; d < DK; d++) {
            sk += s_in[s_base + d * DV + c] * ks[d];
        }
        let delta = beta * (v - decay * sk);
        let s_off = B_O + nb * KC * C;
        for (var d = 0u; d < DK; d++) {
            let s = decay * s_in[s_base + d * DV + c] + ks[d] * delta;
            out[s_off + s_base + d * DV + c] = s;
            o += s * qs[d];
        }
    }
    // Gated RMSNorm over the head's DV outputs.
    let inv = inverseSqrt(wg_sum(o * o, tid) / f32(DV) + EPS);
    if (c < DV) {
        let zz = z[bh * DV + c];
        out[bh * DV + c] = o * inv * consts[NORM_W + c] * (zz / (1.0 + exp(-zz)));
    }
}
