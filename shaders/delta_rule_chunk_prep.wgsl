// Gated delta rule, chunked forward, pass 1 of 2: everything inside a chunk that does not
// depend on the carried state (the UT/WY transform). One workgroup per (chunk n, head h, batch b).
//
// Inputs (f32, contiguous, HF order): q, k [B,T,HK,DK]; v [B,T,HV,DV]; g, beta [B,T,HV].
// Value head h reads key head h / (HV / HK). Tokens past T (padding of the last chunk) act as
// q = k = v = 0, g = 0, beta = 0, exactly like transformers' zero padding.
//
// With c = cumsum(g) inside the chunk, q̂/k̂ the (optionally) l2-normalised rows, q̂ scaled:
//   A[i,j] = beta_i (k̂_i·k̂_j) exp(c_i - c_j)            j < i   (strictly lower)
//   T      = (I + A)^-1                                          (unit lower triangular)
//   W      = T (beta ⊙ exp(c) ⊙ k̂)    [C,DK]     U = T (beta ⊙ v)    [C,DV]
//   M[i,j] = (q̂_i·k̂_j) exp(c_i - c_j)  j <= i, else 0            [C,C]
//   QE     = q̂ ⊙ exp(c)                KD = k̂ ⊙ exp(c_last - c)        [C,DK]
//   DECAY  = exp(c_last)
// Output: one scratch buffer `work` (read as vec4s) holding the regions QE, KD, W
// [B,HV,NT,DK4·4], U [B,HV,NT,DV4·4], M [B,HV,N,C,C] and DECAY [B,HV,N] at the element
// offsets OFF_* (NT = N·C; DK4 = ceil(DK/4), DV4 = ceil(DV/4): rows are padded with zeros
// to whole vec4s, so every region starts on a vec4).
//
// Schedule: q·k and k·k products in 4×4 register tiles (one tile per invocation, tiles on or
// below the diagonal only) over vec4 tiles of TD dims staged in workgroup memory; T by forward
// substitution row by row (invocation j owns column j, one barrier per row); W, U as 4-row ×
// vec4 register tiles of T times the gated rows; exp(c) and exp(c_last - c) computed once per row.
//
// Workgroup memory (C = 64, TD = 8): A/T packed strictly-lower C(C-1)/2 + q/k tiles 2·C·TD
// + 6·C scalars = 3424 f32 = 13.4 KiB (WebGPU's default limit is 16 KiB), for any DK, DV.
// Template constants: HK, HV, DK, DV, DK4, DV4, C, WG (>= (C/4)², >= C), TD, L2NORM, SCALE.
// Run-time `params`: B, T, N (chunks), NT, OFF_* (see load_params).

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> work: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> params: array<u32>;

var<private> T: u32;
const HK: u32 = {{ hk }}u;
const HV: u32 = {{ hv }}u;
const DK: u32 = {{ dk }}u;
const DV: u32 = {{ dv }}u;
const DK4: u32 = {{ dk4 }}u;
const DV4: u32 = {{ dv4 }}u;
const C: u32 = {{ c }}u;
var<private> N: u32;
var<private> NT: u32;
const WG: u32 = {{ wg }}u;
const TD: u32 = {{ td }}u;
const TD4: u32 = TD / 4u;    // vec4s per staged row
const CQ: u32 = C / 4u;      // 4-row blocks per chunk
const L2NORM: u32 = {{ l2norm }}u;
const SCALE: f32 = {{ scale }};
const EPS: f32 = 1e-6;
// Offsets in vec4s.
var<private> OFF_QE: u32;
var<private> OFF_KD: u32;
var<private> OFF_W: u32;
var<private> OFF_U: u32;
var<private> OFF_M: u32;
var<private> OFF_DECAY: u32;

var<workgroup> cum: array<f32, C>;
var<workgroup> bet: array<f32, C>;
var<workgroup> qmul: array<f32, C>;
var<workgroup> kmul: array<f32, C>;
var<workgroup> ec: array<f32, C>;    // exp(c)
var<workgroup> ed: array<f32, C>;    // exp(c_last - c)
var<workgroup> qtile: array<vec4<f32>, C * TD4>;
var<workgroup> ktile: array<vec4<f32>, C * TD4>;
var<workgroup> tri: array<f32, C * (C - 1u) / 2u>;

fn tri_idx(i: u32, j: u32) -> u32 {
    return i * (i - 1u) / 2u + j;
}

// T[r, j] of the unit lower-triangular T held strictly-lower in `tri`.
fn tval(r: u32, j: u32) -> f32 {
    if (j < r) {
        return tri[tri_idx(r, j)];
    }
    return select(0.0, 1.0, j == r);
}

// Run-time sizes (slots of `params`), so one compiled pipeline serves every B and T.
fn load_params() {
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

// Four consecutive floats of `q` or `k` (which = 0 / 1) from element `base + d`, zero past DK.
fn load4_qk(which: u32, base: u32, d: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if (d + e < DK) {
            if (which == 0u) {
                x[e] = q[base + d + e];
            } else {
                x[e] = k[base + d + e];
            }
        }
    }
    return x;
}

fn load4_v(base: u32, c: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if (c + e < DV) {
            x[e] = v[base + c + e];
        }
    }
    return x;
}

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    load_params();
    let n = wid.x;
    let h = wid.y;
    let b = wid.z;
    let hk = h / (HV / HK);
    let tid = lid.x;
    let t0 = n * C;

    // 1. Gates and norms of the chunk's rows.
    if (tid < C) {
        let tok = t0 + tid;
        var gi = 0.0;
        var bi = 0.0;
        var qm = 0.0;
        var km = 0.0;
        if (tok < T) {
            gi = g[(b * T + tok) * HV + h];
            bi = beta[(b * T + tok) * HV + h];
            qm = SCALE;
            km = 1.0;
            if (L2NORM == 1u) {
                let base = ((b * T + tok) * HK + hk) * DK;
                var qq = 0.0;
                var kk = 0.0;
                for (var d = 0u; d < DK; d++) {
                    let qx = q[base + d];
                    let kx = k[base + d];
                    qq += qx * qx;
                    kk += kx * kx;
                }
                qm = SCALE * inverseSqrt(qq + EPS);
                km = inverseSqrt(kk + EPS);
            }
        }
        cum[tid] = gi;
        bet[tid] = bi;
        qmul[tid] = qm;
        kmul[tid] = km;
    }
    workgroupBarrier();
    if (tid == 0u) {
        for (var i = 1u; i < C; i++) {
            cum[i] += cum[i - 1u];
        }
    }
    workgroupBarrier();
    // exp(c), exp(c_last - c) once per row (read after the barriers of step 2).
    if (tid < C) {
        ec[tid] = exp(cum[tid]);
        ed[tid] = exp(cum[C - 1u] - cum[tid]);
    }

    // 2. Raw dot products q_i·k_j and k_i·k_j over DK: 4×4 tile (rows 4ti.., columns 4tj..)
    // per invocation, over vec4 tiles of TD dims staged in workgroup memory.
    let ti = tid / CQ;
    let tj = tid % CQ;
    let tile_on = tid < CQ * CQ && tj <= ti;
    var acc_kk: array<vec4<f32>, 4>;
    var acc_qk: array<vec4<f32>, 4>;
    for (var d0 = 0u; d0 < DK; d0 += TD) {
        for (var p = tid; p < C * TD4; p += WG) {
            let r = p / TD4;
            let d = d0 + (p % TD4) * 4u;
            let tok = t0 + r;
            var qv = vec4<f32>(0.0);
            var kv = vec4<f32>(0.0);
            if (tok < T) {
                let base = ((b * T + tok) * HK + hk) * DK;
                qv = load4_qk(0u, base, d);
                kv = load4_qk(1u, base, d);
            }
            qtile[p] = qv;
            ktile[p] = kv;
        }
        workgroupBarrier();
        if (tile_on) {
            for (var dq = 0u; dq < TD4; dq++) {
                let kj0 = ktile[(4u * tj) * TD4 + dq];
                let kj1 = ktile[(4u * tj + 1u) * TD4 + dq];
                let kj2 = ktile[(4u * tj + 2u) * TD4 + dq];
                let kj3 = ktile[(4u * tj + 3u) * TD4 + dq];
                for (var e = 0u; e < 4u; e++) {
                    let ki = ktile[(4u * ti + e) * TD4 + dq];
                    let qi = qtile[(4u * ti + e) * TD4 + dq];
                    acc_kk[e] += vec4<f32>(dot(ki, kj0), dot(ki, kj1), dot(ki, kj2), dot(ki, kj3));
                    acc_qk[e] += vec4<f32>(dot(qi, kj0), dot(qi, kj1), dot(qi, kj2), dot(qi, kj3));
                }
            }
        }
        workgroupBarrier();
    }

    // 3. Gate the products: M to global (zero above the diagonal), A to workgroup memory.
    let bh = b * HV + h;
    let m_base = OFF_M + (bh * N + n) * C * CQ;
    if (tid < CQ * CQ) {
        for (var e = 0u; e < 4u; e++) {
            let i = 4u * ti + e;
            var mrow = vec4<f32>(0.0);
            if (tile_on) {
                for (var f = 0u; f < 4u; f++) {
                    let j = 4u * tj + f;
                    if (j <= i) {
                        let ex = exp(cum[i] - cum[j]);
                        mrow[f] = qmul[i] * kmul[j] * acc_qk[e][f] * ex;
                        if (j < i) {
                            tri[tri_idx(i, j)] = bet[i] * kmul[i] * kmul[j] * acc_kk[e][f] * ex;
                        }
                    }
                }
            }
            work[m_base + i * CQ + tj] = mrow;
        }
    }
    workgroupBarrier();

    // 4. T = (I + A)^-1 by forward substitution, row by row; invocation j owns column j:
    //    T[r,j] = -(A[r,j] + Σ_{j<m<r} A[r,m] T[m,j]).
    // T[r-1, j] stays in a register until step r: everyone has read row r-1 of A by then.
    var t_prev = 0.0;
    for (var r = 1u; r < C; r++) {
        if (tid + 1u < r) {
            tri[tri_idx(r - 1u, tid)] = t_prev;
        }
        if (tid < r) {
            let j = tid;
            var s = tri[tri_idx(r, j)];
            let rb = tri_idx(r, 0u);
            for (var m = j + 1u; m + 1u < r; m++) {
                s += tri[rb + m] * tri[tri_idx(m, j)];
            }
            if (j + 1u < r) {
                s += tri[rb + r - 1u] * t_prev;
            }
            t_prev = -s;
        }
        workgroupBarrier();
    }
    if (tid + 1u < C) {
        tri[tri_idx(C - 1u, tid)] = t_prev;
    }
    workgroupBarrier();

    // 5. W and U as (4 rows) × (vec4 of columns) tiles, then QE, KD (T's unit diagonal is
    // implicit; padded rows and columns come out zero).
    let row0 = bh * NT + t0;
    for (var p = tid; p < CQ * DK4; p += WG) {
        let r0 = (p / DK4) * 4u;
        let dq = p % DK4;
        var acc: array<vec4<f32>, 4>;
        for (var j = 0u; j < r0 + 4u; j++) {
            let tok = t0 + j;
            if (tok < T) {
                let kj = load4_qk(1u, ((b * T + tok) * HK + hk) * DK, dq * 4u)
                    * (kmul[j] * bet[j] * ec[j]);
                for (var e = 0u; e < 4u; e++) {
                    acc[e] += tval(r0 + e, j) * kj;
                }
            }
        }
        for (var e = 0u; e < 4u; e++) {
            work[OFF_W + (row0 + r0 + e) * DK4 + dq] = acc[e];
        }
    }
    for (var p = tid; p < CQ * DV4; p += WG) {
        let r0 = (p / DV4) * 4u;
        let cq = p % DV4;
        var acc: array<vec4<f32>, 4>;
        for (var j = 0u; j < r0 + 4u; j++) {
            let tok = t0 + j;
            if (tok < T) {
                let vj = load4_v(((b * T + tok) * HV + h) * DV, cq * 4u) * bet[j];
                for (var e = 0u; e < 4u; e++) {
                    acc[e] += tval(r0 + e, j) * vj;
                }
            }
        }
        for (var e = 0u; e < 4u; e++) {
            work[OFF_U + (row0 + r0 + e) * DV4 + cq] = acc[e];
        }
    }
    for (var p = tid; p < C * DK4; p += WG) {
        let r = p / DK4;
        let dq = p % DK4;
        let tok = t0 + r;
        var qe = vec4<f32>(0.0);
        var kd = vec4<f32>(0.0);
        if (tok < T) {
            let base = ((b * T + tok) * HK + hk) * DK;
            qe = load4_qk(0u, base, dq * 4u) * (qmul[r] * ec[r]);
            kd = load4_qk(1u, base, dq * 4u) * (kmul[r] * ed[r]);
        }
        let o = (row0 + r) * DK4 + dq;
        work[OFF_QE + o] = qe;
        work[OFF_KD + o] = kd;
    }
    if (tid == 0u) {
        let o = OFF_DECAY + bh * N + n;
        work[o / 4u][o % 4u] = exp(cum[C - 1u]);
    }
}
