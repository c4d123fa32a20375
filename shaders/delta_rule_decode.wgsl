// Gated delta rule, one-token decode step against a carried state.
//
// Layout (all f32, contiguous, HF order):
//   q, k  [B, 1, HK, DK]   raw (l2-normalised here when L2NORM = 1; q is then scaled by SCALE)
//   v     [B, 1, HV, DV]
//   g     [B, 1, HV]       log-decay (<= 0)
//   beta  [B, 1, HV]
//   s_in  [B, HV, DK, DV]  state before the token
//   out   packed: o [B, 1, HV, DV] followed by the new state [B, HV, DK, DV]
// Value head h reads key head h / (HV / HK).
//
// Maths (the per-token recurrence of transformers' torch_recurrent_gated_delta_rule):
//   S' = exp(g) S ;  delta = beta (v - S'^T k) ;  S = S' + k delta^T ;  o = S^T q
//
// Grid: (ceil(DV / WG), HV, B). One invocation per value column: every column of S is
// independent given q and k, and neighbouring invocations read neighbouring columns (coalesced).
//
// Template constants: HK, HV, DK, DV, WG (workgroup size), L2NORM (0/1), SCALE (f32 literal).
// Run-time `params`: B.

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> s_in: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read_write> params: array<u32>;

var<private> B: u32;
const HK: u32 = {{ hk }}u;
const HV: u32 = {{ hv }}u;
const DK: u32 = {{ dk }}u;
const DV: u32 = {{ dv }}u;
const WG: u32 = {{ wg }}u;
const L2NORM: u32 = {{ l2norm }}u;
const SCALE: f32 = {{ scale }};
const EPS: f32 = 1e-6;

var<workgroup> qs: array<f32, DK>;
var<workgroup> ks: array<f32, DK>;

// Run-time sizes (slots of `params`), so one compiled pipeline serves every B and T.
fn load_params() {
    B = params[0u];
}

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    load_params();
    let h = wid.y;
    let b = wid.z;
    let hk = h / (HV / HK);
    let tid = lid.x;
    let qk_base = (b * HK + hk) * DK;
    for (var d = tid; d < DK; d += WG) {
        qs[d] = q[qk_base + d];
        ks[d] = k[qk_base + d];
    }
    workgroupBarrier();

    // Every invocation reduces the (short) norms itself: DK <= 256, no extra barriers.
    var q_mul = SCALE;
    var k_mul = 1.0;
    if (L2NORM == 1u) {
        var qq = 0.0;
        var kk = 0.0;
        for (var d = 0u; d < DK; d++) {
            qq += qs[d] * qs[d];
            kk += ks[d] * ks[d];
        }
        q_mul = SCALE * inverseSqrt(qq + EPS);
        k_mul = inverseSqrt(kk + EPS);
    }

    let c = wid.x * WG + tid;
    if (c >= DV) {
        return;
    }
    let bh = b * HV + h;
    let decay = exp(g[bh]);
    let bt = beta[bh];
    let s_base = bh * DK * DV;

    var kv = 0.0;
    for (var d = 0u; d < DK; d++) {
        kv += s_in[s_base + d * DV + c] * ks[d];
    }
    kv *= decay * k_mul;
    let delta = bt * (v[bh * DV + c] - kv);

    let state_off = B * HV * DV;
    var o = 0.0;
    for (var d = 0u; d < DK; d++) {
        let s = decay * s_in[s_base + d * DV + c] + ks[d] * k_mul * delta;
        out[state_off + s_base + d * DV + c] = s;
        o += s * qs[d];
    }
    out[bh * DV + c] = o * q_mul;
}
