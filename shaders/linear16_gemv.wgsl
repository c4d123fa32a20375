// y = x W^T for a few rows of x against a 16-bit weight: the decode projection (GEMV).
//
// Layout:
//   x  [M, K]  f32, contiguous
//   w  [N, K]  16-bit (bf16 or f16), two values per u32 (element 2i in the low half), read
//              as vec4<u32>: eight weights per load. Needs K % 8 == 0.
//   y  [M, LDY] f32; this launch writes columns [Y_OFF, Y_OFF + N) (a vocabulary shard writes
//              its slice of the full logits row).
//
// Grid: (GX, GY, ceil(M / MB)); workgroup row group r = wid.y * GX + wid.x covers output
// rows [r * NR, r * NR + NR). Each of the WG = NR * TPR invocations owns one output row and
// strides over its K / 8 vec4 loads with TPR lanes: neighbouring lanes read neighbouring 16
// bytes, so every weight byte is read once per launch, coalesced. Each lane keeps MB partial
// sums (one per row of x), reduced across the TPR lanes in workgroup memory. f32 accumulation.
//
// Template constants: NR (rows per workgroup), TPR (lanes per row, a power of two), WG = NR *
// TPR, MB (rows of x per workgroup), BF16 (1: bf16, 0: f16), GX.
// Run-time `params`: M, N, K, LDY, Y_OFF.

@group(0) @binding(0) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> w: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> params: array<u32>;

const NR: u32 = {{ nr }}u;
const TPR: u32 = {{ tpr }}u;
const MB: u32 = {{ mb }}u;
const BF16: u32 = {{ bf16 }}u;
const GX: u32 = {{ gx }}u;
const WG: u32 = NR * TPR;

var<workgroup> partial: array<f32, WG * MB>;

// Two 16-bit values of one u32 as f32 (bf16: a shift, exact; f16: the WGSL builtin).
fn unpack2(u: u32) -> vec2<f32> {
    if (BF16 == 1u) {
        return vec2<f32>(bitcast<f32>(u << 16u), bitcast<f32>(u & 0xffff0000u));
    }
    return unpack2x16float(u);
}

@compute @workgroup_size({{ wg }})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let m_count = params[0];
    let n_count = params[1];
    let k8 = params[2] / 8u;
    let ldy = params[3];
    let y_off = params[4];

    let lane = lid % TPR;
    let row = (wid.y * GX + wid.x) * NR + lid / TPR;
    let m0 = wid.z * MB;
    let valid = row < n_count;

    var acc: array<f32, MB>;
    //#unroll m
    acc[{{m}}] = 0.0;
    //#end
    if (valid) {
        let wbase = row * k8;
        for (var j = lane; j < k8; j += TPR) {
            let p = w[wbase + j];
            let w0 = vec4<f32>(unpack2(p.x), unpack2(p.y));
            let w1 = vec4<f32>(unpack2(p.z), unpack2(p.w));
            //#unroll m
            if (m0 + {{m}}u < m_count) {
                let xb = (m0 + {{m}}u) * k8 * 2u + 2u * j;
                acc[{{m}}] += dot(x[xb], w0) + dot(x[xb + 1u], w1);
            }
            //#end
        }
    }
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
    if (valid && lane == 0u) {
        //#unroll m
        if (m0 + {{m}}u < m_count) {
            y[(m0 + {{m}}u) * ldy + y_off + row] = partial[{{m}}u * WG + lid];
        }
        //#end
    }
}
