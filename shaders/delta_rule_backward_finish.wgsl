// Gated delta rule, backward epilogue. One workgroup per (token t, key head hk, batch b).
// Sums the per-column-block partials of delta_rule_backward.wgsl over blocks and over the
// value heads that share key head hk, then maps dq̂, dk̂ back through the scale and the
// l2 normalisation:  x̂ = s·x·r with r = (Σx² + eps)^-1/2  ⇒  dx = s·(r·y - x·r³·(x·y)).
//
// Inputs: q, k [B,T,HK,DK]; ws with PDQ, PDK [NVB,B,T,HV,DK] and PDG, PDB [NVB,B,T,HV].
// Output: out packed as dq [B,T,HK,DK] | dk [B,T,HK,DK] | dg [B,T,HV] | dbeta [B,T,HV].
// Template constants: HK, HV, DK, NVB, WG, L2NORM, SCALE. Run-time `params`: B, T, OFF_*.

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> ws: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> params: array<u32>;

var<private> B: u32;
var<private> T: u32;
const HK: u32 = {{ hk }}u;
const HV: u32 = {{ hv }}u;
const DK: u32 = {{ dk }}u;
const NVB: u32 = {{ nvb }}u;
const WG: u32 = {{ wg }}u;
const R: u32 = HV / HK;
const L2NORM: u32 = {{ l2norm }}u;
const SCALE: f32 = {{ scale }};
const EPS: f32 = 1e-6;
var<private> OFF_PDQ: u32;
var<private> OFF_PDK: u32;
var<private> OFF_PDG: u32;
var<private> OFF_PDB: u32;

var<workgroup> yq: array<f32, DK>;
var<workgroup> yk: array<f32, DK>;
var<workgroup> dots: array<f32, 4>;

// Run-time sizes (slots of `params`), so one compiled pipeline serves every B and T.
fn load_params() {
    B = params[0u];
    T = params[1u];
    OFF_PDQ = params[9u];
    OFF_PDK = params[10u];
    OFF_PDG = params[11u];
    OFF_PDB = params[12u];
}

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    load_params();
    let t = wid.x;
    let hk = wid.y;
    let b = wid.z;
    let tid = lid.x;
    let base = ((b * T + t) * HK + hk) * DK;

    for (var d = tid; d < DK; d += WG) {
        var sq = 0.0;
        var sk = 0.0;
        for (var vb = 0u; vb < NVB; vb++) {
            for (var r = 0u; r < R; r++) {
                let p = (((vb * B + b) * T + t) * HV + hk * R + r) * DK + d;
                sq += ws[OFF_PDQ + p];
                sk += ws[OFF_PDK + p];
            }
        }
        yq[d] = sq;
        yk[d] = sk;
    }
    for (var r = tid; r < R; r += WG) {
        let h = hk * R + r;
        var sg = 0.0;
        var sb = 0.0;
        for (var vb = 0u; vb < NVB; vb++) {
            let p = ((vb * B + b) * T + t) * HV + h;
            sg += ws[OFF_PDG + p];
            sb += ws[OFF_PDB + p];
        }
        let off_dg = 2u * B * T * HK * DK;
        let off_db = off_dg + B * T * HV;
        out[off_dg + (b * T + t) * HV + h] = sg;
        out[off_db + (b * T + t) * HV + h] = sb;
    }
    workgroupBarrier();

    if (tid == 0u) {
        var qq = 0.0;
        var kk = 0.0;
        var qy = 0.0;
        var ky = 0.0;
        for (var d = 0u; d < DK; d++) {
            let x = q[base + d];
            let y = k[base + d];
            qq += x * x;
            kk += y * y;
            qy += x * yq[d];
            ky += y * yk[d];
        }
        dots[0] = inverseSqrt(qq + EPS);
        dots[1] = inverseSqrt(kk + EPS);
        dots[2] = qy;
        dots[3] = ky;
    }
    workgroupBarrier();

    let off_dk = B * T * HK * DK;
    for (var d = tid; d < DK; d += WG) {
        var dq = SCALE * yq[d];
        var dk = yk[d];
        if (L2NORM == 1u) {
            let rq = dots[0];
            let rk = dots[1];
            dq = SCALE * (rq * yq[d] - q[base + d] * rq * rq * rq * dots[2]);
            dk = rk * yk[d] - k[base + d] * rk * rk * rk * dots[3];
        }
        out[base + d] = dq;
        out[off_dk + base + d] = dk;
    }
}
