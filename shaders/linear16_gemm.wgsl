// out = A B for a 16-bit weight matrix W: the prefill projection y = x W^T (TRANS = 0) and
// its input gradient dx = dy W (TRANS = 1). Tiled GEMM, f32 accumulation.
//
// Layout:
//   a    [M, KI]   f32, contiguous (x with KI = K; or dy with KI = N)
//   w    [N, K]    16-bit (bf16 or f16), two values per u32 (element 2i in the low half);
//                  any even N·K
//   out  [M, LDY]  f32; this launch writes columns [Y_OFF, Y_OFF + NC)
// TRANS = 0: B(i, c) = W[c, i], NC = N.   TRANS = 1: B(i, c) = W[i, c], NC = K.
//
// Grid: (ceil(NC / 64), ceil(M / 64)). A 256-invocation workgroup computes a 64 x 64 tile of
// `out`; each invocation a 4 x 4 block (rows ty + 16 r, columns tx + 16 c), from 64 x 16 tiles
// of A and 16 x 64 tiles of B staged in workgroup memory (8 KiB). Tile loads are coalesced
// along the contiguous dimension of each operand.
//
// Template constants: BF16 (1: bf16, 0: f16), TRANS (0/1).
// Run-time `params`: M, KI, NC, K (W's row length), LDY, Y_OFF.

@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> w: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> params: array<u32>;

const BF16: u32 = {{ bf16 }}u;
const TRANS: u32 = {{ trans }}u;
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

var<workgroup> As: array<f32, 1024>; // [BK][BM]
var<workgroup> Bs: array<f32, 1024>; // [BK][BN]

// Element `idx` of the packed 16-bit matrix as f32.
fn weight(idx: u32) -> f32 {
    let u = w[idx >> 1u];
    let bits = select(u & 0xffffu, u >> 16u, (idx & 1u) == 1u);
    if (BF16 == 1u) {
        return bitcast<f32>(bits << 16u);
    }
    return unpack2x16float(bits).x;
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let m_count = params[0];
    let ki = params[1];
    let nc = params[2];
    let ldw = params[3];
    let ldy = params[4];
    let y_off = params[5];

    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    let tx = lid % 16u;
    let ty = lid / 16u;

    var acc: array<array<f32, 4>, 4>;
    for (var r = 0u; r < 4u; r++) {
        for (var c = 0u; c < 4u; c++) {
            acc[r][c] = 0.0;
        }
    }

    let k_tiles = (ki + BK - 1u) / BK;
    for (var t = 0u; t < k_tiles; t++) {
        let k0 = t * BK;
        for (var l = 0u; l < 4u; l++) {
            let e = lid + 256u * l;
            // A tile: lanes along the contiguous inner dimension.
            let ar = e / BK;
            let ak = e % BK;
            var av = 0.0;
            if (m0 + ar < m_count && k0 + ak < ki) {
                av = a[(m0 + ar) * ki + k0 + ak];
            }
            As[ak * BM + ar] = av;
            // B tile: lanes along W's contiguous dimension.
            var bi: u32;
            var bc: u32;
            if (TRANS == 1u) {
                bc = e % BN;
                bi = e / BN;
            } else {
                bi = e % BK;
                bc = e / BK;
            }
            var bv = 0.0;
            if (k0 + bi < ki && n0 + bc < nc) {
                if (TRANS == 1u) {
                    bv = weight((k0 + bi) * ldw + n0 + bc);
                } else {
                    bv = weight((n0 + bc) * ldw + k0 + bi);
                }
            }
            Bs[bi * BN + bc] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var r = 0u; r < 4u; r++) {
                av[r] = As[kk * BM + ty + 16u * r];
                bv[r] = Bs[kk * BN + tx + 16u * r];
            }
            for (var r = 0u; r < 4u; r++) {
                for (var c = 0u; c < 4u; c++) {
                    acc[r][c] += av[r] * bv[c];
                }
            }
        }
        workgroupBarrier();
    }

    for (var r = 0u; r < 4u; r++) {
        let m = m0 + ty + 16u * r;
        for (var c = 0u; c < 4u; c++) {
            let n = n0 + tx + 16u * c;
            if (m < m_count && n < nc) {
                out[m * ldy + y_off + n] = acc[r][c];
            }
        }
    }
}
