// Gated delta rule, token-by-token forward for short sequences (the chunked pair
// delta_rule_chunk_prep / delta_rule_chunk_scan serves long ones). One invocation per
// (value column, value head, batch): every column of the state S [DK, DV] evolves on its own
// given q and k, so the whole recurrence runs without barriers or workgroup memory.
//
// Per token (q̂, k̂ optionally l2-normalised, q̂ scaled; a = exp(g)):
//   S' = a S ;  δ = β (v - S'^T k̂) ;  S = S' + k̂ δ^T ;  o = S^T q̂
//
// Inputs (f32, contiguous, HF order): q, k [B,T,HK,DK]; v [B,T,HV,DV]; gates = g [B,T,HV]
// then beta [B,T,HV] back to back; h0 [B,HV,DK,DV] the initial state.
// Outputs: `out` packed as o [B,T,HV,DV] then the final state [B,HV,DK,DV]; `bounds`
// [B,HV,N,DK,DV], the state before tokens 0, C, 2C, ... (what the backward recomputes from).
// Grid: (ceil(HV·DV / WG), B, 1); invocation i of the row covers head i / DV, column i % DV.
// Template constants: HK, HV, DK, DV, C, WG, L2NORM, SCALE. Run-time `params`: B, T, N.

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> gates: array<f32>;
@group(0) @binding(4) var<storage, read_write> h0: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> bounds: array<f32>;
@group(0) @binding(7) var<storage, read_write> params: array<u32>;

const HK: u32 = {{ hk }}u;
const HV: u32 = {{ hv }}u;
const DK: u32 = {{ dk }}u;
const DV: u32 = {{ dv }}u;
const C: u32 = {{ c }}u;
const WG: u32 = {{ wg }}u;
const L2NORM: u32 = {{ l2norm }}u;
const SCALE: f32 = {{ scale }};
const EPS: f32 = 1e-6;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let B = params[0u];
    let T = params[1u];
    let N = params[2u];
    let i = wid.x * WG + lid.x;
    if (i >= HV * DV) {
        return;
    }
    let b = wid.y;
    let h = i / DV;
    let col = i % DV;
    let hk = h / (HV / HK);
    let bh = b * HV + h;
    let s_base = bh * DK * DV + col;

    var s: array<f32, DK>;
    var kh: array<f32, DK>;
    var qh: array<f32, DK>;
    for (var d = 0u; d < DK; d++) {
        s[d] = h0[s_base + d * DV];
    }
    for (var t = 0u; t < T; t++) {
        if (t % C == 0u) {
            let o = (bh * N + t / C) * DK * DV + col;
            for (var d = 0u; d < DK; d++) {
                bounds[o + d * DV] = s[d];
            }
        }
        let base = ((b * T + t) * HK + hk) * DK;
        var qq = 0.0;
        var kk = 0.0;
        for (var d = 0u; d < DK; d++) {
            let x = q[base + d];
            let y = k[base + d];
            qh[d] = x;
            kh[d] = y;
            qq += x * x;
            kk += y * y;
        }
        var qm = SCALE;
        var km = 1.0;
        if (L2NORM == 1u) {
            qm = SCALE * inverseSqrt(qq + EPS);
            km = inverseSqrt(kk + EPS);
        }
        let gi = (b * T + t) * HV + h;
        let a = exp(gates[gi]);
        let bt = gates[B * T * HV + gi];
        var kv = 0.0;
        for (var d = 0u; d < DK; d++) {
            kh[d] *= km;
            s[d] *= a;
            kv += s[d] * kh[d];
        }
        let delta = bt * (v[gi * DV + col] - kv);
        var o = 0.0;
        for (var d = 0u; d < DK; d++) {
            s[d] += kh[d] * delta;
            o += s[d] * qh[d];
        }
        out[gi * DV + col] = o * qm;
    }
    let state_off = B * T * HV * DV;
    for (var d = 0u; d < DK; d++) {
        out[state_off + s_base + d * DV] = s[d];
    }
}
