// y = f(x) W^T (+ r) for a few rows of x against a 16-bit weight: the decode projection
// (GEMV), with an optional fused prologue on x and residual epilogue.
//
// Layout:
//   x    [M, K]  f32, contiguous
//   w    [N, K]  16-bit (bf16 or f16), two values per u32 (element 2i in the low half), read
//                as vec4<u32>: eight weights per load. Needs K % 8 == 0.
//   aux  PRO = 1: the RMSNorm weight [K];  PRO = 2: the up projection [M, K];  else unused
//   res  EPI = 1: the residual [M, LDY];  else unused
//   y    [M, LDY] f32; this launch writes columns [Y_OFF, Y_OFF + N)
// Prologue (PRO): 0: f(x) = x;  1: zero-centred RMSNorm f(x) = x · rsqrt(mean(x²) + EPS) · (1 + aux);
//   2: SwiGLU f(x) = silu(x) · aux.   Epilogue (EPI): 0: y = f(x) W^T;  1: y = res + f(x) W^T.
//
// Grid: (GX, GY, ceil(M / MB)); workgroup row group r = wid.y * GX + wid.x covers output
// rows [r * NR, r * NR + NR). Each of the WG = NR * TPR invocations owns one output row and
// strides over its K / 8 vec4 loads with TPR lanes: neighbouring lanes read neighbouring 16
// bytes, so every weight byte is read once per launch, coalesced. Each lane keeps MB partial
// sums (one per row of x), reduced across the TPR lanes in workgroup memory. f32 accumulation.
// With PRO = 1 each workgroup first reduces the mean square of its MB rows of x (K floats
// each, from cache) so the norm costs no extra launch. On CPU drivers (lavapipe) TPR = 1:
// one lane per output row walking the whole row, no workgroup barriers (llvmpipe runs a
// barrier by switching between the invocations' coroutines, which costs more than the loads).
//
// Template constants: NR (rows per workgroup), TPR (lanes per row, a power of two), WG = NR *
// TPR, MB (rows of x per workgroup), BF16 (1: bf16, 0: f16), GX, PRO, EPI, EPS (f32 literal).
// Run-time `params`: M, N, K, LDY, Y_OFF.

@group(0) @binding(0) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> w: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> aux: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> res: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> params: array<u32>;

const NR: u32 = {{ nr }}u;
const TPR: u32 = {{ tpr }}u;
const MB: u32 = {{ mb }}u;
const BF16: u32 = {{ bf16 }}u;
const GX: u32 = {{ gx }}u;
const PRO: u32 = {{ pro }}u;
const EPI: u32 = {{ epi }}u;
const EPS: f32 = {{ eps }};
const WG: u32 = NR * TPR;

var<workgroup> partial: array<f32, WG * MB>;
var<workgroup> inv_rms: array<f32, MB>;

// Two 16-bit values of one u32 as f32 (bf16: a shift, exact; f16: the WGSL builtin).
fn unpack2(u: u32) -> vec2<f32> {
    if (BF16 == 1u) {
        return vec2<f32>(bitcast<f32>(u << 16u), bitcast<f32>(u & 0xffff0000u));
    }
    return unpack2x16float(u);
}

// f(x) for row m, vec4 q of the row (k4 = K / 4 vec4s per row).
fn xin(m: u32, q: u32, k4: u32, inv: f32) -> vec4<f32> {
    let v = x[m * k4 + q];
    if (PRO == 1u) {
        return v * inv * (1.0 + aux[q]);
    }
    if (PRO == 2u) {
        return v / (1.0 + exp(-v)) * aux[m * k4 + q];
    }
    return v;
}

@compute @workgroup_size({{ wg }})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let m_count = params[0];
    let n_count = params[1];
    let k8 = params[2] / 8u;
    let k4 = 2u * k8;
    let ldy = params[3];
    let y_off = params[4];

    let lane = lid % TPR;
    let row = (wid.y * GX + wid.x) * NR + lid / TPR;
    let m0 = wid.z * MB;
    let valid = row < n_count;

    if (PRO == 1u && TPR > 1u) {
        // Mean square of each of the MB rows: all WG invocations stride over the row.
        //#unroll m
        {
            var ss = 0.0;
            if (m0 + {{m}}u < m_count) {
                for (var q = lid; q < k4; q += WG) {
                    let v = x[(m0 + {{m}}u) * k4 + q];
                    ss += dot(v, v);
                }
            }
            partial[{{m}}u * WG + lid] = ss;
        }
        //#end
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if (lid < s) {
                //#unroll m
                partial[{{m}}u * WG + lid] += partial[{{m}}u * WG + lid + s];
                //#end
            }
            workgroupBarrier();
        }
        if (lid == 0u) {
            //#unroll m
            inv_rms[{{m}}] = inverseSqrt(partial[{{m}}u * WG] / f32(params[2]) + EPS);
            //#end
        }
        workgroupBarrier();
    }

    var acc: array<f32, MB>;
    var inv: array<f32, MB>;
    //#unroll m
    acc[{{m}}] = 0.0;
    inv[{{m}}] = 1.0;
    if (PRO == 1u && TPR > 1u) {
        inv[{{m}}] = inv_rms[{{m}}];
    }
    if (PRO == 1u && TPR == 1u && m0 + {{m}}u < m_count) {
        // One lane per row (CPU drivers): each lane reduces the row itself, no barriers.
        var ss = 0.0;
        for (var q = 0u; q < k4; q++) {
            let v = x[(m0 + {{m}}u) * k4 + q];
            ss += dot(v, v);
        }
        inv[{{m}}] = inverseSqrt(ss / f32(params[2]) + EPS);
    }
    //#end
    if (valid) {
        let wbase = row * k8;
        for (var j = lane; j < k8; j += TPR) {
            let p = w[wbase + j];
            let w0 = vec4<f32>(unpack2(p.x), unpack2(p.y));
            let w1 = vec4<f32>(unpack2(p.z), unpack2(p.w));
            //#unroll m
            if (m0 + {{m}}u < m_count) {
                let mm = m0 + {{m}}u;
                acc[{{m}}] += dot(xin(mm, 2u * j, k4, inv[{{m}}]), w0)
                    + dot(xin(mm, 2u * j + 1u, k4, inv[{{m}}]), w1);
            }
            //#end
        }
    }
    if (TPR > 1u) {
        workgroupBarrier();
        //#unroll m
        partial[{{m}}u * WG + lid] = acc[{{m}}];
        //#end
        workgroupBarrier();
        for (var s = TPR / 2u; s > 0u; s >>= 1u) {
            if (lane < s) {
                //#unroll m
                partial[{{m}}u * WG + lid] += partial[{{m}}u * WG + lid + s];
                //#end
            }
            workgroupBarrier();
        }
        //#unroll m
        acc[{{m}}] = partial[{{m}}u * WG + lid];
        //#end
    }
    if (valid && lane == 0u) {
        //#unroll m
        if (m0 + {{m}}u < m_count) {
            let at = (m0 + {{m}}u) * ldy + y_off + row;
            var out = acc[{{m}}];
            if (EPI == 1u) {
                out += res[at];
            }
            y[at] = out;
        }
        //#end
    }
}
