// Gated delta rule, chunked forward, pass 2 of 2: the scan over chunks carrying the state.
// One workgroup per (value-column block vb of BV columns, head h, batch b); chunks in order.
//
// Inputs: `work` from delta_rule_chunk_prep.wgsl (QE, KD, W [B,HV,NT,DK], U [B,HV,NT,DV],
// M [B,HV,N,C,C], DECAY [B,HV,N]); h0 [B,HV,DK,DV] the initial state.
// For each chunk n, with S the state at the chunk's start (saved to `bounds`):
//   Vn = U - W S                     [C,BV]   (the chunk's "new values")
//   O  = QE S + M Vn                 [C,BV]
//   S  = DECAY_n S + KD^T Vn         [DK,BV]
// Outputs: `out` packed as o [B,T,HV,DV] then the final state [B,HV,DK,DV];
//          `bounds` [B,HV,N,DK,DV], the state at the start of every chunk (for backward).
//
// Workgroup memory: S [DK,BV] + Vn [C,BV] (DK = 128, C = 64, BV = 16: 12 KiB).
// Template constants: HV, DK, DV, C, WG, BV. Run-time `params`: B, T, N, NT, OFF_*.

@group(0) @binding(0) var<storage, read_write> work: array<f32>;
@group(0) @binding(1) var<storage, read_write> h0: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> bounds: array<f32>;
@group(0) @binding(4) var<storage, read_write> params: array<u32>;

var<private> B: u32;
var<private> T: u32;
const HV: u32 = {{ hv }}u;
const DK: u32 = {{ dk }}u;
const DV: u32 = {{ dv }}u;
const C: u32 = {{ c }}u;
var<private> N: u32;
var<private> NT: u32;
const WG: u32 = {{ wg }}u;
const BV: u32 = {{ bv }}u;
var<private> OFF_QE: u32;
var<private> OFF_KD: u32;
var<private> OFF_W: u32;
var<private> OFF_U: u32;
var<private> OFF_M: u32;
var<private> OFF_DECAY: u32;

var<workgroup> s: array<f32, DK * BV>;
var<workgroup> vn: array<f32, C * BV>;

// Run-time sizes (slots of `params`), so one compiled pipeline serves every B and T.
fn load_params() {
    B = params[0u];
    T = params[1u];
    N = params[2u];
    NT = params[3u];
    OFF_QE = params[4u];
    OFF_KD = params[5u];
    OFF_W = params[6u];
    OFF_U = params[7u];
    OFF_M = params[8u];
    OFF_DECAY = params[9u];
}

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    load_params();
    let vb = wid.x;
    let h = wid.y;
    let b = wid.z;
    let tid = lid.x;
    let bh = b * HV + h;
    let c0 = vb * BV;
    let s_base = bh * DK * DV;

    for (var p = tid; p < DK * BV; p += WG) {
        let col = c0 + p % BV;
        var x = 0.0;
        if (col < DV) {
            x = h0[s_base + (p / BV) * DV + col];
        }
        s[p] = x;
    }
    workgroupBarrier();

    for (var n = 0u; n < N; n++) {
        let row0 = bh * NT + n * C;
        // Save the boundary state; Vn = U - W S.
        for (var p = tid; p < DK * BV; p += WG) {
            let col = c0 + p % BV;
            if (col < DV) {
                bounds[((bh * N + n) * DK + p / BV) * DV + col] = s[p];
            }
        }
        for (var p = tid; p < C * BV; p += WG) {
            let i = p / BV;
            let c = p % BV;
            let col = c0 + c;
            var x = 0.0;
            if (col < DV) {
                let w_row = OFF_W + (row0 + i) * DK;
                var ws = 0.0;
                for (var d = 0u; d < DK; d++) {
                    ws += work[w_row + d] * s[d * BV + c];
                }
                x = work[OFF_U + (row0 + i) * DV + col] - ws;
            }
            vn[p] = x;
        }
        workgroupBarrier();

        // O = QE S + M Vn for the chunk's real tokens.
        let m_base = OFF_M + (bh * N + n) * C * C;
        for (var p = tid; p < C * BV; p += WG) {
            let i = p / BV;
            let c = p % BV;
            let col = c0 + c;
            let tok = n * C + i;
            if (col < DV && tok < T) {
                let q_row = OFF_QE + (row0 + i) * DK;
                var o = 0.0;
                for (var d = 0u; d < DK; d++) {
                    o += work[q_row + d] * s[d * BV + c];
                }
                for (var j = 0u; j <= i; j++) {
                    o += work[m_base + i * C + j] * vn[j * BV + c];
                }
                out[((b * T + tok) * HV + h) * DV + col] = o;
            }
        }
        workgroupBarrier();

        // S = DECAY S + KD^T Vn.
        let decay = work[OFF_DECAY + bh * N + n];
        for (var p = tid; p < DK * BV; p += WG) {
            let d = p / BV;
            let c = p % BV;
            var x = decay * s[p];
            for (var i = 0u; i < C; i++) {
                x += work[OFF_KD + (row0 + i) * DK + d] * vn[i * BV + c];
            }
            s[p] = x;
        }
        workgroupBarrier();
    }

    let state_off = B * T * HV * DV;
    for (var p = tid; p < DK * BV; p += WG) {
        let col = c0 + p % BV;
        if (col < DV) {
            out[state_off + s_base + (p / BV) * DV + col] = s[p];
        }
    }
}
