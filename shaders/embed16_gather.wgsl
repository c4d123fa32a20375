// Embedding rows of one vocabulary shard of a 16-bit table, gathered by token id.
//
// Layout:
//   ids  [T]      i32 token ids (any vocabulary position)
//   w    [R, H]   this shard's rows [ROW0, ROW0 + R) of the table, 16-bit, two per u32
//   out  [T, H]   f32; row t holds the embedding when ids[t] falls in this shard, zeros
//                 otherwise (the caller sums the shards' outputs)
//
// Grid: (ceil(H / 2 / 64), T); one invocation per u32 (two values) of a row.
// Template constants: BF16 (1: bf16, 0: f16). Run-time `params`: T, H, ROW0, R.

@group(0) @binding(0) var<storage, read_write> ids: array<i32>;
@group(0) @binding(1) var<storage, read_write> w: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> params: array<u32>;

const BF16: u32 = {{ bf16 }}u;

fn unpack2(u: u32) -> vec2<f32> {
    if (BF16 == 1u) {
        return vec2<f32>(bitcast<f32>(u << 16u), bitcast<f32>(u & 0xffff0000u));
    }
    return unpack2x16float(u);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let h2 = params[1] / 2u;
    let row0 = params[2];
    let rows = params[3];
    let p = gid.x;
    let t = gid.y;
    if (p >= h2 || t >= params[0]) {
        return;
    }
    let id = u32(max(ids[t], 0));
    var value = vec2<f32>(0.0, 0.0);
    if (id >= row0 && id < row0 + rows) {
        value = unpack2(w[(id - row0) * h2 + p]);
    }
    out[t * h2 + p] = value;
}
