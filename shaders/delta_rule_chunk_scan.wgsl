// Gated delta rule, chunked forward, pass 2 of 2: the scan over chunks carrying the state.
// One workgroup per (value-column block vb of BV columns, head h, batch b); chunks in order.
//
// Inputs: `work` from delta_rule_chunk_prep.wgsl, read as vec4s (QE, KD, W [B,HV,NT,DK4·4],
// U [B,HV,NT,DV4·4], M [B,HV,N,C,C], DECAY [B,HV,N]; rows zero-padded to whole vec4s);
// h0 [B,HV,DK,DV] the initial state.
// For each chunk n, with S the state at the chunk's start (saved to `bounds`):
//   Vn = U - W S                     [C,BV]   (the chunk's "new values")
//   O  = QE S + M Vn                 [C,BV]
//   S  = DECAY_n S + KD^T Vn         [DK,BV]
// Outputs: `out` packed as o [B,T,HV,DV] then the final state [B,HV,DK,DV];
//          `bounds` [B,HV,N,DK,DV], the state at the start of every chunk (for backward).
//
// Schedule, two barriers per chunk: (a) each invocation owns a tile of 4 chunk rows × 4
// columns and accumulates W S and QE S in registers (vec4 loads of W/QE rows and S rows);
// Vn goes to workgroup memory; (b) the same tile adds M Vn to O, and every invocation updates
// its 4 × 4 tiles of S (S is read only in (a), so (b) may overwrite it).
//
// Workgroup memory: S [DK4·4,BV] + Vn [C,BV] (DK = 128, C = 64, BV = 16: 12 KiB; DK = 256
// with BV = 8: 10 KiB).
// Template constants: HV, DK, DV, DK4, DV4, C, WG (>= (C/4)·(BV/4)), BV (multiple of 4).
// Run-time `params`: B, T, N, NT, OFF_*.

@group(0) @binding(0) var<storage, read_write> work: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> h0: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> bounds: array<f32>;
@group(0) @binding(4) var<storage, read_write> params: array<u32>;

var<private> B: u32;
var<private> T: u32;
const HV: u32 = {{ hv }}u;
const DK: u32 = {{ dk }}u;
const DV: u32 = {{ dv }}u;
const DK4: u32 = {{ dk4 }}u;
const DV4: u32 = {{ dv4 }}u;
const C: u32 = {{ c }}u;
var<private> N: u32;
var<private> NT: u32;
const WG: u32 = {{ wg }}u;
const BV: u32 = {{ bv }}u;
const BV4: u32 = BV / 4u;
const CQ: u32 = C / 4u;
const VT: u32 = CQ * BV4;     // (4 rows × 4 columns) tiles of Vn and O
const ST: u32 = DK4 * BV4;    // 4 × 4 tiles of S
// Offsets in vec4s.
var<private> OFF_QE: u32;
var<private> OFF_KD: u32;
var<private> OFF_W: u32;
var<private> OFF_U: u32;
var<private> OFF_M: u32;
var<private> OFF_DECAY: u32;

var<workgroup> s: array<vec4<f32>, DK4 * 4u * BV4>;   // S row d, columns 4cq.. at d·BV4 + cq
var<workgroup> vn: array<vec4<f32>, C * BV4>;

// Run-time sizes (slots of `params`), so one compiled pipeline serves every B and T.
fn load_params() {
    B = params[0u];
    T = params[1u];
    N = params[2u];
    NT = params[3u];
    OFF_QE = params[4u] / 4u;
    OFF_KD = params[5u] / 4u;
    OFF_W = params[6u] / 4u;
    OFF_U = params[7u] / 4u;
    OFF_M = params[8u] / 4u;
    OFF_DECAY = params[9u];
}

// Loop bounds that enclose barriers must be uniform for WGSL's uniformity analysis (which
// browsers enforce; naga does not): values read from a read_write storage buffer are not, so
// invocation 0 copies them to workgroup memory and everyone reads them back with
// workgroupUniformLoad. (`params` stays read_write: Burn's allocator may place it in the same
// wgpu buffer as a writable binding, and one buffer cannot be bound both ways in a dispatch.)
var<workgroup> uni_n: u32;   // N

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

    for (var p = tid; p < DK4 * 4u * BV4; p += WG) {
        let d = p / BV4;
        let col = c0 + (p % BV4) * 4u;
        var x = vec4<f32>(0.0);
        if (d < DK) {
            for (var f = 0u; f < 4u; f++) {
                if (col + f < DV) {
                    x[f] = h0[s_base + d * DV + col + f];
                }
            }
        }
        s[p] = x;
    }
    workgroupBarrier();

    // This invocation's Vn / O tile: rows 4·iq.., columns c0 + 4·cq.. (when tid < VT).
    let iq = tid / BV4;
    let cq = tid % BV4;
    let i0 = iq * 4u;
    let c4 = vb * BV4 + cq;   // vec4 column of U
    let col = c4 * 4u;
    // Uniform loop bound (see the note above `uni_n`).
    if (tid == 0u) {
        uni_n = params[2u];
    }
    let n_chunks = workgroupUniformLoad(&uni_n);
    for (var n = 0u; n < n_chunks; n++) {
        let row0 = bh * NT + n * C;
        // (a) Save the boundary state; Vn = U - W S, O = QE S.
        for (var p = tid; p < DK * BV4; p += WG) {
            let d = p / BV4;
            let cb = c0 + (p % BV4) * 4u;
            let x = s[p];
            for (var f = 0u; f < 4u; f++) {
                if (cb + f < DV) {
                    bounds[((bh * N + n) * DK + d) * DV + cb + f] = x[f];
                }
            }
        }
        var o: array<vec4<f32>, 4>;
        if (tid < VT) {
            var ws: array<vec4<f32>, 4>;
            for (var dq = 0u; dq < DK4; dq++) {
                let s0 = s[(dq * 4u) * BV4 + cq];
                let s1 = s[(dq * 4u + 1u) * BV4 + cq];
                let s2 = s[(dq * 4u + 2u) * BV4 + cq];
                let s3 = s[(dq * 4u + 3u) * BV4 + cq];
                for (var e = 0u; e < 4u; e++) {
                    let w = work[OFF_W + (row0 + i0 + e) * DK4 + dq];
                    let qe = work[OFF_QE + (row0 + i0 + e) * DK4 + dq];
                    ws[e] += w.x * s0 + w.y * s1 + w.z * s2 + w.w * s3;
                    o[e] += qe.x * s0 + qe.y * s1 + qe.z * s2 + qe.w * s3;
                }
            }
            for (var e = 0u; e < 4u; e++) {
                var u = vec4<f32>(0.0);
                if (c4 < DV4) {
                    u = work[OFF_U + (row0 + i0 + e) * DV4 + c4];
                }
                vn[(i0 + e) * BV4 + cq] = u - ws[e];
            }
        }
        workgroupBarrier();

        // (b) O += M Vn for the chunk's real tokens (M is zero above the diagonal).
        if (tid < VT) {
            let m_base = OFF_M + (bh * N + n) * C * CQ;
            for (var jq = 0u; jq <= iq; jq++) {
                let v0 = vn[(jq * 4u) * BV4 + cq];
                let v1 = vn[(jq * 4u + 1u) * BV4 + cq];
                let v2 = vn[(jq * 4u + 2u) * BV4 + cq];
                let v3 = vn[(jq * 4u + 3u) * BV4 + cq];
                for (var e = 0u; e < 4u; e++) {
                    let m = work[m_base + (i0 + e) * CQ + jq];
                    o[e] += m.x * v0 + m.y * v1 + m.z * v2 + m.w * v3;
                }
            }
            for (var e = 0u; e < 4u; e++) {
                let tok = n * C + i0 + e;
                if (tok < T) {
                    for (var f = 0u; f < 4u; f++) {
                        if (col + f < DV) {
                            out[((b * T + tok) * HV + h) * DV + col + f] = o[e][f];
                        }
                    }
                }
            }
        }
        // S = DECAY S + KD^T Vn, by 4 × 4 tiles (rows 4·dq.., columns 4·sc..).
        let di = OFF_DECAY + bh * N + n;
        let decay = work[di / 4u][di % 4u];
        for (var p = tid; p < ST; p += WG) {
            let dq = p / BV4;
            let sc = p % BV4;
            var x: array<vec4<f32>, 4>;
            for (var e = 0u; e < 4u; e++) {
                x[e] = decay * s[(dq * 4u + e) * BV4 + sc];
            }
            for (var i = 0u; i < C; i++) {
                let kd = work[OFF_KD + (row0 + i) * DK4 + dq];
                let vi = vn[i * BV4 + sc];
                x[0] += kd.x * vi;
                x[1] += kd.y * vi;
                x[2] += kd.z * vi;
                x[3] += kd.w * vi;
            }
            for (var e = 0u; e < 4u; e++) {
                s[(dq * 4u + e) * BV4 + sc] = x[e];
            }
        }
        workgroupBarrier();
    }

    let state_off = B * T * HV * DV;
    for (var p = tid; p < DK * BV4; p += WG) {
        let d = p / BV4;
        let cb = c0 + (p % BV4) * 4u;
        let x = s[p];
        for (var f = 0u; f < 4u; f++) {
            if (cb + f < DV) {
                out[state_off + s_base + d * DV + cb + f] = x[f];
            }
        }
    }
}
