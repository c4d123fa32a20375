// Gated delta rule, backward. One workgroup per (value-column block vb of BV columns, head h,
// batch b); chunks in reverse order. Memory: only the chunk-boundary states saved by the
// forward (`bounds` [B,HV,N,DK,DV]) are read; inside a chunk the per-token states are
// recomputed from the boundary into the workgroup's slice of `ws` (C·DK·BV floats), then
// the per-token recurrence is differentiated backwards through the chunk.
//
// Forward step (per value head, q̂ k̂ normalised, q̂ scaled):
//   S' = a S_prev (a = exp(g)) ; kv = S'^T k̂ ; δ = β (v - kv) ; S = S' + k̂ δ^T ; o = S^T q̂
// Backward step, carrying dS (gradient w.r.t. S after the token):
//   dS += q̂ do^T ; dq̂ = S do ; dδ = dS^T k̂ ; dk̂ = dS δ ; dv = β dδ ; dβ = dδ·(v - kv)
//   dkv = -β dδ ; dS' = dS + k̂ dkv^T ; dk̂ += S' dkv ; dg = a Σ(dS' ⊙ S_prev) ; dS = a dS'
// dq̂, dk̂, dβ, dg sum over all DV columns, so each block writes partial sums (reduced by
// delta_rule_backward_finish.wgsl); dv and dh0 (= dS after the first token) are exact.
//
// Inputs: q, k [B,T,HK,DK]; v [B,T,HV,DV]; gates = g, beta [B,T,HV] back to back; bounds;
// grad = packed
// [do (B,T,HV,DV) | d final state (B,HV,DK,DV)]. `ws` regions (element offsets OFF_*):
//   HIST [B,HV,NVB,C,DK,BV] recomputed states, KV and DL [B,HV,NVB,C,BV] (kv and δ),
//   DV [B,T,HV,DV], DH0 [B,HV,DK,DV], PDQ and PDK [NVB,B,T,HV,DK], PDG and PDB [NVB,B,T,HV].
// Thread p owns state entries (d, c) = (p / BV + m·RG, p % BV), m < MPT (RG = WG / BV).
// Workgroup memory: DK·BV + RG·BV + 4·DK + 6·BV floats (DK = 128, BV = 16: 10.6 KiB).
// Template constants: HK, HV, DK, DV, C, WG, BV, NVB, L2NORM, SCALE.
// Run-time `params`: B, T, N (chunks), NT, OFF_* (see load_params), then N_LO, N_HI (read
// in main).
//
// One dispatch runs chunks N_HI - 1 down to N_LO; the host launches ranges from the last
// chunk to the first, and dS is carried between dispatches in the DH0 region (a dispatch
// with N_HI < N starts from it; the one with N_HI = N from the final-state gradient). Short
// dispatches keep every invocation under llvmpipe's cap on loop iterations per invocation
// (~65k in total; past it loops silently stop), which a whole long sequence would exceed.

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> gates: array<f32>;  // g [B,T,HV] then beta [B,T,HV]
@group(0) @binding(4) var<storage, read_write> bounds: array<f32>;
@group(0) @binding(5) var<storage, read_write> grad: array<f32>;
@group(0) @binding(6) var<storage, read_write> ws: array<f32>;
@group(0) @binding(7) var<storage, read_write> params: array<u32>;

var<private> B: u32;
var<private> T: u32;
const HK: u32 = {{ hk }}u;
const HV: u32 = {{ hv }}u;
const DK: u32 = {{ dk }}u;
const DV: u32 = {{ dv }}u;
const C: u32 = {{ c }}u;
var<private> N: u32;
const WG: u32 = {{ wg }}u;
const BV: u32 = {{ bv }}u;
const NVB: u32 = {{ nvb }}u;
const RG: u32 = WG / BV;
const MPT: u32 = (DK + RG - 1u) / RG;
const L2NORM: u32 = {{ l2norm }}u;
const SCALE: f32 = {{ scale }};
const EPS: f32 = 1e-6;
var<private> OFF_HIST: u32;
var<private> OFF_KV: u32;
var<private> OFF_DL: u32;
var<private> OFF_DV: u32;
var<private> OFF_DH0: u32;
var<private> OFF_PDQ: u32;
var<private> OFF_PDK: u32;
var<private> OFF_PDG: u32;
var<private> OFF_PDB: u32;

var<workgroup> rowred: array<f32, DK * BV>;  // reductions over columns, indexed d·BV + c
var<workgroup> colred: array<f32, WG>;       // reductions over rows, indexed rg·BV + c
var<workgroup> qs: array<f32, DK>;
var<workgroup> ks: array<f32, DK>;
var<workgroup> vs: array<f32, BV>;
var<workgroup> dos: array<f32, BV>;
var<workgroup> kvs: array<f32, BV>;
var<workgroup> dls: array<f32, BV>;
var<workgroup> dds: array<f32, BV>;
var<workgroup> scal: array<f32, 4>;          // a, β, |q|^-1, |k|^-1 of the current token

// Loads token `tok`'s q̂ (when with_q), k̂, v and gates into workgroup memory.
fn load_token(tid: u32, b: u32, h: u32, hk: u32, c0: u32, tok: u32, with_q: bool) {
    let base = ((b * T + tok) * HK + hk) * DK;
    for (var d = tid; d < DK; d += WG) {
        ks[d] = k[base + d];
        if (with_q) {
            qs[d] = q[base + d];
        }
    }
    if (tid < BV) {
        let col = c0 + tid;
        var x = 0.0;
        if (col < DV) {
            x = v[((b * T + tok) * HV + h) * DV + col];
        }
        vs[tid] = x;
    }
    workgroupBarrier();
    if (tid == 0u) {
        let gi = (b * T + tok) * HV + h;
        scal[0] = exp(gates[gi]);
        scal[1] = gates[B * T * HV + gi];
        var qm = SCALE;
        var km = 1.0;
        if (L2NORM == 1u) {
            var qq = 0.0;
            var kk = 0.0;
            for (var d = 0u; d < DK; d++) {
                kk += ks[d] * ks[d];
                if (with_q) {
                    qq += qs[d] * qs[d];
                }
            }
            qm = SCALE * inverseSqrt(qq + EPS);
            km = inverseSqrt(kk + EPS);
        }
        scal[2] = qm;
        scal[3] = km;
    }
    workgroupBarrier();
    for (var d = tid; d < DK; d += WG) {
        ks[d] *= scal[3];
        if (with_q) {
            qs[d] *= scal[2];
        }
    }
    workgroupBarrier();
}

// Run-time sizes (slots of `params`), so one compiled pipeline serves every B and T.
fn load_params() {
    B = params[0u];
    T = params[1u];
    N = params[2u];
    OFF_HIST = params[4u];
    OFF_KV = params[5u];
    OFF_DL = params[6u];
    OFF_DV = params[7u];
    OFF_DH0 = params[8u];
    OFF_PDQ = params[9u];
    OFF_PDK = params[10u];
    OFF_PDG = params[11u];
    OFF_PDB = params[12u];
}

// Loop bounds that enclose barriers must be uniform for WGSL's uniformity analysis (which
// browsers enforce; naga does not): values read from a read_write storage buffer are not, so
// invocation 0 copies them to workgroup memory and everyone reads them back with
// workgroupUniformLoad. (`params` stays read_write: Burn's allocator may place it in the same
// wgpu buffer as a writable binding, and one buffer cannot be bound both ways in a dispatch.)
var<workgroup> uni: array<u32, 3>;   // T, N_LO, N_HI

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    load_params();
    let vb = wid.x;
    let h = wid.y;
    let b = wid.z;
    let hk = h / (HV / HK);
    let tid = lid.x;
    let bh = b * HV + h;
    let c = tid % BV;
    let rg = tid / BV;
    let c0 = vb * BV;
    let col = c0 + c;
    let col_ok = col < DV;
    let hist0 = OFF_HIST + (bh * NVB + vb) * C * DK * BV;
    let kv0 = (bh * NVB + vb) * C * BV;

    // Uniform loop bounds (see the note above `uni`).
    if (tid == 0u) {
        uni[0] = params[1u];
        uni[1] = params[13u];
        uni[2] = params[14u];
    }
    let t_all = workgroupUniformLoad(&uni[0]);
    let n_lo = workgroupUniformLoad(&uni[1]);
    let n_hi = workgroupUniformLoad(&uni[2]);

    // dS starts as the gradient of the final state, or where the previous dispatch left it.
    var ds: array<f32, MPT>;
    var st: array<f32, MPT>;
    var sp: array<f32, MPT>;
    let dstate0 = B * T * HV * DV;
    for (var m = 0u; m < MPT; m++) {
        let d = rg + m * RG;
        if (d < DK && col_ok) {
            if (n_hi == N) {
                ds[m] = grad[dstate0 + (bh * DK + d) * DV + col];
            } else {
                ds[m] = ws[OFF_DH0 + (bh * DK + d) * DV + col];
            }
        }
    }

    for (var n1 = n_hi; n1 > n_lo; n1--) {
        let n = n1 - 1u;
        let t0 = n * C;
        let len = min(C, t_all - t0);

        // Recompute the chunk's per-token states from its boundary state.
        for (var m = 0u; m < MPT; m++) {
            let d = rg + m * RG;
            var x = 0.0;
            if (d < DK && col_ok) {
                x = bounds[((bh * N + n) * DK + d) * DV + col];
            }
            st[m] = x;
        }
        for (var i = 0u; i < len; i++) {
            load_token(tid, b, h, hk, c0, t0 + i, false);
            let a = scal[0];
            var part = 0.0;
            for (var m = 0u; m < MPT; m++) {
                let d = rg + m * RG;
                if (d < DK) {
                    st[m] *= a;
                    part += st[m] * ks[d];
                }
            }
            colred[tid] = part;
            workgroupBarrier();
            if (tid < BV) {
                var kv = 0.0;
                for (var r = 0u; r < RG; r++) {
                    kv += colred[r * BV + tid];
                }
                let dl = scal[1] * (vs[tid] - kv);
                kvs[tid] = kv;
                dls[tid] = dl;
                ws[OFF_KV + kv0 + i * BV + tid] = kv;
                ws[OFF_DL + kv0 + i * BV + tid] = dl;
            }
            workgroupBarrier();
            for (var m = 0u; m < MPT; m++) {
                let d = rg + m * RG;
                if (d < DK) {
                    st[m] += ks[d] * dls[c];
                    ws[hist0 + (i * DK + d) * BV + c] = st[m];
                }
            }
            workgroupBarrier();
        }

        // Backward through the chunk's tokens, last to first.
        for (var ii = 0u; ii < len; ii++) {
            let i = len - 1u - ii;
            let tok = t0 + i;
            load_token(tid, b, h, hk, c0, tok, true);
            let a = scal[0];
            let bt = scal[1];
            if (tid < BV) {
                var x = 0.0;
                if (col_ok) {
                    x = grad[((b * T + tok) * HV + h) * DV + col];
                }
                dos[tid] = x;
                kvs[tid] = ws[OFF_KV + kv0 + i * BV + tid];
                dls[tid] = ws[OFF_DL + kv0 + i * BV + tid];
            }
            workgroupBarrier();
            // S_t and S_{t-1} (the boundary state before the chunk's first token).
            for (var m = 0u; m < MPT; m++) {
                let d = rg + m * RG;
                if (d < DK) {
                    st[m] = ws[hist0 + (i * DK + d) * BV + c];
                    if (i > 0u) {
                        sp[m] = ws[hist0 + ((i - 1u) * DK + d) * BV + c];
                    } else if (col_ok) {
                        sp[m] = bounds[((bh * N + n) * DK + d) * DV + col];
                    } else {
                        sp[m] = 0.0;
                    }
                    ds[m] += qs[d] * dos[c];
                    rowred[d * BV + c] = st[m] * dos[c];
                }
            }
            // dδ = dS^T k̂ (over rows).
            var part = 0.0;
            for (var m = 0u; m < MPT; m++) {
                let d = rg + m * RG;
                if (d < DK) {
                    part += ds[m] * ks[d];
                }
            }
            colred[tid] = part;
            workgroupBarrier();
            let pq = ((vb * B + b) * T + tok) * HV + h;
            for (var d = tid; d < DK; d += WG) {
                var x = 0.0;
                for (var cc = 0u; cc < BV; cc++) {
                    x += rowred[d * BV + cc];
                }
                ws[OFF_PDQ + pq * DK + d] = x;
            }
            if (tid < BV) {
                var x = 0.0;
                for (var r = 0u; r < RG; r++) {
                    x += colred[r * BV + tid];
                }
                dds[tid] = x;
            }
            workgroupBarrier();
            // dk̂ = dS δ + S' dkv ; dS' = dS + k̂ dkv^T ; da = Σ dS' ⊙ S_prev.
            let dkv = -bt * dds[c];
            var da = 0.0;
            for (var m = 0u; m < MPT; m++) {
                let d = rg + m * RG;
                if (d < DK) {
                    rowred[d * BV + c] = ds[m] * dls[c] + a * sp[m] * dkv;
                    ds[m] += ks[d] * dkv;
                    da += ds[m] * sp[m];
                }
            }
            colred[tid] = da;
            workgroupBarrier();
            for (var d = tid; d < DK; d += WG) {
                var x = 0.0;
                for (var cc = 0u; cc < BV; cc++) {
                    x += rowred[d * BV + cc];
                }
                ws[OFF_PDK + pq * DK + d] = x;
            }
            if (tid < BV && col_ok) {
                ws[OFF_DV + ((b * T + tok) * HV + h) * DV + col] = bt * dds[tid];
            }
            if (tid == 0u) {
                var x = 0.0;
                for (var r = 0u; r < WG; r++) {
                    x += colred[r];
                }
                var y = 0.0;
                for (var cc = 0u; cc < BV; cc++) {
                    y += dds[cc] * (vs[cc] - kvs[cc]);
                }
                ws[OFF_PDG + pq] = a * x;
                ws[OFF_PDB + pq] = y;
            }
            for (var m = 0u; m < MPT; m++) {
                ds[m] *= a;
            }
            workgroupBarrier();
        }
    }

    // dS after the range's first token: carried to the next dispatch, dh0 after the last.
    for (var m = 0u; m < MPT; m++) {
        let d = rg + m * RG;
        if (d < DK && col_ok) {
            ws[OFF_DH0 + (bh * DK + d) * DV + col] = ds[m];
        }
    }
}
