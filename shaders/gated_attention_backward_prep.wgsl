// Sigmoid-gated softmax attention, backward pass 1 of 3: the per-row preprocessing.
//
// Layout (all f32, contiguous): dy, y, gate, da, dgate [N, D] with N = B * TQ * HQ rows in
// [B, TQ, HQ] order; lse [N]; stats [2, N].
//
// Maths, with y = a * sigmoid(g) (a the attention output) and dy the output cotangent:
//   da    = dy * sigmoid(g)
//   dgate = dy * a * sigmoid(g) (1 - sigmoid(g)) = dy * y * sigmoid(-g)
//   delta = rowsum(da * a) = rowsum(dy * y)          (FlashAttention-2's D)
//   stats = [lse | delta] (so that the next passes bind one buffer for both)
// Nothing is divided by sigmoid(g): a is never reconstructed.
//
// Grid: (Gx, Gy) workgroups, group index wid.x + wid.y * Gx covers RPW = WG / TPRW rows;
// TPRW invocations per row stride over D and reduce delta in workgroup memory (1 KiB).
// Template constants: WG (256), TPRW (64 on GPUs; 1 on CPU drivers, where barriers are dear).
// Run-time params (u32): TQ, TK, TKS, PAST, HQ, HKV, N, SCALE (f32 bits), D, then (unused here)
//   a pad word and the key ranges.

@group(0) @binding(0) var<storage, read_write> dy: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> gate: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> da: array<f32>;
@group(0) @binding(5) var<storage, read_write> dgate: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;
@group(0) @binding(7) var<storage, read_write> params: array<u32>;

const WG: u32 = {{ wg }}u;
const TPRW: u32 = {{ tprw }}u;
const RPW: u32 = WG / TPRW;

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size({{ wg }}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let n = params[6u];
    let dd = params[8u];
    let row = (wid.x + wid.y * nwg.x) * RPW + tid / TPRW;
    let tc = tid % TPRW;
    var part = 0.0;
    if (row < n) {
        for (var x = tc; x < dd; x += TPRW) {
            let idx = row * dd + x;
            let g = gate[idx];
            let dyx = dy[idx];
            let yx = y[idx];
            da[idx] = dyx / (1.0 + exp(-g));
            dgate[idx] = dyx * yx / (1.0 + exp(g));
            part += dyx * yx;
        }
    }
    red[tid] = part;
    workgroupBarrier();
    for (var s = TPRW / 2u; s > 0u; s >>= 1u) {
        if (tc < s) {
            red[tid] += red[tid + s];
        }
        workgroupBarrier();
    }
    if (tc == 0u && row < n) {
        stats[row] = lse[row];
        stats[n + row] = red[tid];
    }
}
