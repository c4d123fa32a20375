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
// Output: one scratch buffer `work` holding the regions QE, KD, W [B,HV,NT,DK], U [B,HV,NT,DV],
// M [B,HV,N,C,C] and DECAY [B,HV,N] at the offsets OFF_* (NT = N·C).
//
// Workgroup memory (C = 64, TD = 8): A/T packed strictly-lower C(C-1)/2 + q/k tiles 2·C·TD
// + 4·C scalars = 3296 f32 = 13 KiB (WebGPU's default limit is 16 KiB).
// Template constants: HK, HV, DK, DV, C, WG, TD, L2NORM, SCALE.
// Run-time `params`: B, T, N (chunks), NT, OFF_* (see load_params).

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> work: array<f32>;
@group(0) @binding(6) var<storage, read_write> params: array<u32>;

var<private> T: u32;
const HK: u32 = {{ hk }}u;
const HV: u32 = {{ hv }}u;
const DK: u32 = {{ dk }}u;
const DV: u32 = {{ dv }}u;
const C: u32 = {{ c }}u;
var<private> N: u32;
var<private> NT: u32;
const WG: u32 = {{ wg }}u;
const TD: u32 = {{ td }}u;
const JG: u32 = WG / C;      // threads per row when forming A and M
const JPT: u32 = C / JG;     // columns per thread
const L2NORM: u32 = {{ l2norm }}u;
const SCALE: f32 = {{ scale }};
const EPS: f32 = 1e-6;
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
var<workgroup> qtile: array<f32, C * TD>;
var<workgroup> ktile: array<f32, C * TD>;
var<workgroup> tri: array<f32, C * (C - 1u) / 2u>;

fn tri_idx(i: u32, j: u32) -> u32 {
    return i * (i - 1u) / 2u + j;
}

// Run-time sizes (slots of `params`), so one compiled pipeline serves every B and T.
fn load_params() {
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
                    qq += q[base + d] * q[base + d];
                    kk += k[base + d] * k[base + d];
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

    // 2. Raw dot products q_i·k_j and k_i·k_j over DK in tiles of TD dims.
    let i = tid / JG;
    let jg = tid % JG;
    var acc_kk: array<f32, JPT>;
    var acc_qk: array<f32, JPT>;
    for (var d0 = 0u; d0 < DK; d0 += TD) {
        for (var p = tid; p < C * TD; p += WG) {
            let r = p / TD;
            let d = d0 + p % TD;
            let tok = t0 + r;
            var qv = 0.0;
            var kv = 0.0;
            if (tok < T && d < DK) {
                let idx = ((b * T + tok) * HK + hk) * DK + d;
                qv = q[idx];
                kv = k[idx];
            }
            qtile[p] = qv;
            ktile[p] = kv;
        }
        workgroupBarrier();
        for (var m = 0u; m < JPT; m++) {
            let j = jg + m * JG;
            var skk = 0.0;
            var sqk = 0.0;
            for (var dd = 0u; dd < TD; dd++) {
                let kj = ktile[j * TD + dd];
                skk += ktile[i * TD + dd] * kj;
                sqk += qtile[i * TD + dd] * kj;
            }
            acc_kk[m] += skk;
            acc_qk[m] += sqk;
        }
        workgroupBarrier();
    }

    // 3. Gate the products: M to global, A (strictly lower) to workgroup memory.
    let bh = b * HV + h;
    let m_base = OFF_M + (bh * N + n) * C * C;
    for (var m = 0u; m < JPT; m++) {
        let j = jg + m * JG;
        var mij = 0.0;
        if (j <= i) {
            let e = exp(cum[i] - cum[j]);
            mij = qmul[i] * kmul[j] * acc_qk[m] * e;
            if (j < i) {
                tri[tri_idx(i, j)] = bet[i] * kmul[i] * kmul[j] * acc_kk[m] * e;
            }
        }
        work[m_base + i * C + j] = mij;
    }
    workgroupBarrier();

    // 4. T = (I + A)^-1 by forward substitution, one column per invocation.
    var col: array<f32, C>;
    if (tid < C) {
        let j = tid;
        col[j] = 1.0;
        for (var r = j + 1u; r < C; r++) {
            var s = 0.0;
            for (var m = j; m < r; m++) {
                s += tri[tri_idx(r, m)] * col[m];
            }
            col[r] = -s;
        }
    }
    workgroupBarrier();
    if (tid < C) {
        let j = tid;
        for (var r = j + 1u; r < C; r++) {
            tri[tri_idx(r, j)] = col[r];
        }
    }
    workgroupBarrier();

    // 5. W, QE, KD rows over DK, then U over DV (T's unit diagonal is implicit).
    let row0 = bh * NT + t0;
    let c_last = cum[C - 1u];
    for (var p = tid; p < C * DK; p += WG) {
        let r = p / DK;
        let d = p % DK;
        var w = 0.0;
        for (var j = 0u; j <= r; j++) {
            let tok = t0 + j;
            if (tok < T) {
                var tr = 1.0;
                if (j < r) {
                    tr = tri[tri_idx(r, j)];
                }
                let kj = k[((b * T + tok) * HK + hk) * DK + d] * kmul[j];
                w += tr * bet[j] * exp(cum[j]) * kj;
            }
        }
        let tok = t0 + r;
        var qe = 0.0;
        var kd = 0.0;
        if (tok < T) {
            let idx = ((b * T + tok) * HK + hk) * DK + d;
            qe = q[idx] * qmul[r] * exp(cum[r]);
            kd = k[idx] * kmul[r] * exp(c_last - cum[r]);
        }
        let o = (row0 + r) * DK + d;
        work[OFF_W + o] = w;
        work[OFF_QE + o] = qe;
        work[OFF_KD + o] = kd;
    }
    for (var p = tid; p < C * DV; p += WG) {
        let r = p / DV;
        let c = p % DV;
        var u = 0.0;
        for (var j = 0u; j <= r; j++) {
            let tok = t0 + j;
            if (tok < T) {
                var tr = 1.0;
                if (j < r) {
                    tr = tri[tri_idx(r, j)];
                }
                u += tr * bet[j] * v[((b * T + tok) * HV + h) * DV + c];
            }
        }
        work[OFF_U + (row0 + r) * DV + c] = u;
    }
    if (tid == 0u) {
        work[OFF_DECAY + bh * N + n] = exp(c_last);
    }
}
