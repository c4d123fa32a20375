// Gated delta rule, backward for short sequences, one invocation per value column. One
// workgroup per (value-column block vb of BV columns, head h, batch b); invocation c owns
// column vb·BV + c of the state and of its gradient as private [DK] arrays, so the products
// over DK need no workgroup traffic; only the sums over columns (dq̂, dk̂, dg, dβ) go through
// workgroup memory: one barrier per token with NBUF = 2 reduction buffers (alternating), two
// with NBUF = 1. Chunks in reverse order: the states before each
// of the chunk's tokens are recomputed from the chunk's boundary state (`bounds`, saved by
// the forward) into this invocation's column of HIST, then the per-token recurrence is
// differentiated backwards through the chunk.
//
// Forward step (per value head, q̂ k̂ normalised, q̂ scaled):
//   S' = a P (a = exp(g), P the state before the token) ; kv = S'^T k̂ ; δ = β (v - kv) ;
//   S = S' + k̂ δ^T ; o = S^T q̂
// Backward step, carrying dS (gradient w.r.t. S after the token):
//   dS += q̂ do^T ; dq̂ = S do ; dδ = dS^T k̂ ; dk̂ = dS δ ; dv = β dδ ; dβ = dδ·(v - kv)
//   dkv = -β dδ ; dS' = dS + k̂ dkv^T ; dk̂ += S' dkv ; dg = a Σ(dS' ⊙ P) ; dS = a dS'
// dq̂, dk̂, dβ, dg are written as per-block partial sums (reduced over blocks and value heads
// by delta_rule_backward_finish.wgsl); dv and dh0 (= dS before the first token) are exact.
//
// Inputs: q, k [B,T,HK,DK]; v [B,T,HV,DV]; gates = g, beta [B,T,HV] back to back; bounds
// [B,HV,N,DK,DV]; grad = packed [do (B,T,HV,DV) | d final state (B,HV,DK,DV)].
// `ws` regions (element offsets OFF_*): HIST [B,HV,NVB,C,DK,BV] states before each token,
// DV [B,T,HV,DV], DH0 [B,HV,DK,DV], PDQ and PDK [NVB,B,T,HV,DK], PDG and PDB [NVB,B,T,HV].
// Workgroup memory: NBUF·(2·DK·BV + 2·BV) floats (DK = 64, BV = 16, NBUF = 1: 8.1 KiB).
// Template constants: HK, HV, DK, DV, C, BV (= WG), NVB, NBUF, L2NORM, SCALE.
// Run-time `params`: B, T, N (chunks), NT, OFF_* (as delta_rule_backward.wgsl).

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> gates: array<f32>;
@group(0) @binding(4) var<storage, read_write> bounds: array<f32>;
@group(0) @binding(5) var<storage, read_write> grad: array<f32>;
@group(0) @binding(6) var<storage, read_write> ws: array<f32>;
@group(0) @binding(7) var<storage, read_write> params: array<u32>;

const HK: u32 = {{ hk }}u;
const HV: u32 = {{ hv }}u;
const DK: u32 = {{ dk }}u;
const DV: u32 = {{ dv }}u;
const C: u32 = {{ c }}u;
const BV: u32 = {{ bv }}u;
const NVB: u32 = {{ nvb }}u;
const NBUF: u32 = {{ nbuf }}u;
const RQ: u32 = DK * BV;      // one buffer of redq / redk

const L2NORM: u32 = {{ l2norm }}u;
const SCALE: f32 = {{ scale }};
const EPS: f32 = 1e-6;

// Per-column terms of dq̂ and dk̂ (indexed buf·RQ + d·BV + c), dg and dβ (buf·BV + c).
var<workgroup> redq: array<f32, NBUF * RQ>;
var<workgroup> redk: array<f32, NBUF * RQ>;
var<workgroup> redg: array<f32, NBUF * BV>;
var<workgroup> redb: array<f32, NBUF * BV>;

// Loop bounds that enclose barriers must be uniform for WGSL's uniformity analysis (which
// browsers enforce; naga does not): values read from a read_write storage buffer are not, so
// invocation 0 copies them to workgroup memory and everyone reads them back with
// workgroupUniformLoad. (`params` stays read_write: Burn's allocator may place it in the same
// wgpu buffer as a writable binding, and one buffer cannot be bound both ways in a dispatch.)
var<workgroup> uni: array<u32, 2>;   // T, N

@compute @workgroup_size({{ bv }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    if (lid.x == 0u) {
        uni[0] = params[1u];
        uni[1] = params[2u];
    }
    let B = params[0u];
    let T = workgroupUniformLoad(&uni[0]);
    let N = workgroupUniformLoad(&uni[1]);
    let OFF_HIST = params[4u];
    let OFF_DV = params[7u];
    let OFF_DH0 = params[8u];
    let OFF_PDQ = params[9u];
    let OFF_PDK = params[10u];
    let OFF_PDG = params[11u];
    let OFF_PDB = params[12u];

    let vb = wid.x;
    let h = wid.y;
    let b = wid.z;
    let hk = h / (HV / HK);
    let c = lid.x;
    let bh = b * HV + h;
    let col = vb * BV + c;
    let col_ok = col < DV;
    // Columns past DV compute on zeros and write nothing of their own.
    let colc = min(col, DV - 1u);
    let hist0 = OFF_HIST + (bh * NVB + vb) * C * DK * BV + c;

    var ds: array<f32, DK>;   // dS, column col
    var sp: array<f32, DK>;   // state before the token
    var kh: array<f32, DK>;
    var qh: array<f32, DK>;
    let dstate0 = B * T * HV * DV;
    for (var d = 0u; d < DK; d++) {
        ds[d] = select(0.0, grad[dstate0 + (bh * DK + d) * DV + colc], col_ok);
    }

    var step = 0u;   // backward tokens so far: picks the reduction buffer
    for (var nn = 0u; nn < N; nn++) {
        let n = N - 1u - nn;
        let t0 = n * C;
        let len = min(C, T - t0);

        // Recompute the states before each of the chunk's tokens.
        let bo = (bh * N + n) * DK * DV + colc;
        for (var d = 0u; d < DK; d++) {
            sp[d] = select(0.0, bounds[bo + d * DV], col_ok);
        }
        for (var i = 0u; i < len; i++) {
            let tok = t0 + i;
            let base = ((b * T + tok) * HK + hk) * DK;
            var kk = 0.0;
            for (var d = 0u; d < DK; d++) {
                let y = k[base + d];
                kh[d] = y;
                kk += y * y;
            }
            var km = 1.0;
            if (L2NORM == 1u) {
                km = inverseSqrt(kk + EPS);
            }
            let gi = (b * T + tok) * HV + h;
            let a = exp(gates[gi]);
            let bt = gates[B * T * HV + gi];
            var kv = 0.0;
            for (var d = 0u; d < DK; d++) {
                ws[hist0 + (i * DK + d) * BV] = sp[d];
                kh[d] *= km;
                sp[d] *= a;
                kv += sp[d] * kh[d];
            }
            let vc = select(0.0, v[gi * DV + colc], col_ok);
            let delta = bt * (vc - kv);
            for (var d = 0u; d < DK; d++) {
                sp[d] += kh[d] * delta;
            }
        }

        // Backward through the chunk's tokens, last to first.
        for (var ii = 0u; ii < len; ii++) {
            let i = len - 1u - ii;
            let tok = t0 + i;
            let base = ((b * T + tok) * HK + hk) * DK;
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
            let gi = (b * T + tok) * HV + h;
            let a = exp(gates[gi]);
            let bt = gates[B * T * HV + gi];
            let vc = select(0.0, v[gi * DV + colc], col_ok);
            let buf = step % NBUF;
            step++;
            let rq = buf * RQ + c;
            let rg = buf * BV;
            let doc = select(0.0, grad[gi * DV + colc], col_ok);
            // P, kv = a P^T k̂, δ; then dS += q̂ do, dq̂ terms S do (S = a P + k̂ δ), dδ = dS^T k̂.
            var kv = 0.0;
            for (var d = 0u; d < DK; d++) {
                let p = ws[hist0 + (i * DK + d) * BV];
                sp[d] = p;
                kh[d] *= km;
                qh[d] *= qm;
                kv += p * kh[d];
            }
            kv *= a;
            let delta = bt * (vc - kv);
            var ddl = 0.0;
            for (var d = 0u; d < DK; d++) {
                ds[d] += qh[d] * doc;
                redq[rq + d * BV] = (a * sp[d] + kh[d] * delta) * doc;
                ddl += ds[d] * kh[d];
            }
            // dk̂ terms dS δ + a P dkv; dS' = dS + k̂ dkv; da = Σ dS' ⊙ P.
            let dkv = -bt * ddl;
            var da = 0.0;
            for (var d = 0u; d < DK; d++) {
                redk[rq + d * BV] = ds[d] * delta + a * sp[d] * dkv;
                ds[d] += kh[d] * dkv;
                da += ds[d] * sp[d];
                ds[d] *= a;
            }
            redg[rg + c] = a * da;
            redb[rg + c] = ddl * (vc - kv);
            if (col_ok) {
                ws[OFF_DV + gi * DV + col] = bt * ddl;
            }
            workgroupBarrier();
            let pq = ((vb * B + b) * T + tok) * HV + h;
            for (var d = c; d < DK; d += BV) {
                var xq = 0.0;
                var xk = 0.0;
                for (var cc = 0u; cc < BV; cc++) {
                    xq += redq[buf * RQ + d * BV + cc];
                    xk += redk[buf * RQ + d * BV + cc];
                }
                ws[OFF_PDQ + pq * DK + d] = xq;
                ws[OFF_PDK + pq * DK + d] = xk;
            }
            if (c == 0u) {
                var xg = 0.0;
                var xb = 0.0;
                for (var cc = 0u; cc < BV; cc++) {
                    xg += redg[rg + cc];
                    xb += redb[rg + cc];
                }
                ws[OFF_PDG + pq] = xg;
                ws[OFF_PDB + pq] = xb;
            }
            // With two buffers the next token writes the other one, and the one after that
            // comes after the next barrier, when every invocation has read this one.
            if (NBUF == 1u) {
                workgroupBarrier();
            }
        }
    }

    if (col_ok) {
        for (var d = 0u; d < DK; d++) {
            ws[OFF_DH0 + (bh * DK + d) * DV + col] = ds[d];
        }
    }
}
