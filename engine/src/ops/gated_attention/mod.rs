//! Sigmoid-gated softmax attention, as in the full-attention layers of Qwen3-Next / Qwen3.5.
//!
//! Per batch b, query head h and query row i (at position `past_len + i`):
//! ```text
//! y_i = softmax_j(q_i · k_j · scale + mask_ij) v_j  ⊙  sigmoid(gate_i)
//! ```
//! where key j is visible iff `j <= past_len + i` (causal with an offset) and j lies in batch
//! row b's [`KeyPadding`] range. A row that sees no key at all (e.g. a left-padding query)
//! gives 0, not NaN. scale defaults to d^-0.5. Query head h uses kv head h / (Hq / Hkv)
//! (grouped-query attention, no repeat materialised by the kernels). Computed in f32.
//!
//! On a wgpu device the WGSL kernels in `shaders/gated_attention_*.wgsl` run: a flash-style
//! forward (K/V tiles in workgroup memory, online softmax, the gate fused in the epilogue; it
//! saves the row log-sum-exp), a backward that recomputes the probabilities from it (O(T)
//! memory), and a one-token decode kernel reading a [`KvCache`] in place. The forward and the
//! backward come in two families ([`Kernels`]): K/V (or Q) tiles shared through workgroup
//! memory, and, where the adapter has one fixed subgroup size, tiles shared through
//! `subgroupBroadcast` (`*_sg.wgsl`: every lane loads a different key, no barriers in the
//! loop; up to 2x faster on lavapipe, whose per-lane memory loads are dear). Elsewhere, and for
//! head dims that are not a multiple of 4 (the kernels move `vec4<f32>`), [`reference`]
//! (composed tensor ops, materialised softmax) runs.
//!
//! - [`gated_attention`]: prefill / training, differentiable through Burn's autodiff.
//! - [`gated_attention_decode`]: one query token against given keys/values (generation).
//! - [`KvCache`]: growable per-layer key/value buffers and [`KvCache::attend`].

mod backend;
mod kernels;
pub mod reference;

pub use backend::{GatedAttentionBackend, KernelParams};

use core::ops::Range;

use burn::backend::Dispatch;
use burn::tensor::{DType, Device, Tensor};

/// Largest head dim the kernels accept (workgroup-memory budget).
pub const MAX_HEAD_DIM: usize = 256;

/// Which key positions each batch row may attend to, on top of causality.
///
/// Batched generation of prompts of different lengths pads them on the **left** (so that
/// every row's next token is at the same position): use [`KeyPadding::left`] with the number
/// of padding tokens per row. It stays valid while a [`KvCache`] grows. Queries at padding
/// positions see no key and output 0. Right padding (training batches) needs no mask with
/// causal attention as far as real tokens are concerned, but [`KeyPadding::right`] hides the
/// padding keys from everyone. The valid keys of a row are always one contiguous range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPadding {
    ranges: Vec<Range<usize>>,
}

impl KeyPadding {
    /// Left padding: row b's first `pads[b]` key positions are padding, every later one
    /// (including keys appended to a cache later) is visible.
    pub fn left(pads: &[usize]) -> Self {
        Self {
            ranges: pads.iter().map(|&p| p..usize::MAX).collect(),
        }
    }

    /// Right padding: row b has `lens[b]` valid keys, from position 0.
    pub fn right(lens: &[usize]) -> Self {
        Self {
            ranges: lens.iter().map(|&l| 0..l).collect(),
        }
    }

    /// Any contiguous valid key range per row.
    pub fn ranges(ranges: Vec<Range<usize>>) -> Self {
        Self { ranges }
    }

    /// From transformers-style `attention_mask` rows (`true` = token, `false` = padding).
    /// The tokens of each row must be contiguous (left or right padding, or both).
    pub fn from_mask<R: AsRef<[bool]>>(rows: &[R]) -> Result<Self, AttentionError> {
        let mut ranges = Vec::with_capacity(rows.len());
        for (b, row) in rows.iter().enumerate() {
            let row = row.as_ref();
            let start = row.iter().position(|&x| x).unwrap_or(row.len());
            let end = row.iter().rposition(|&x| x).map_or(start, |e| e + 1);
            if row[start..end].iter().any(|&x| !x) {
                return Err(AttentionError::Option(format!(
                    "padding mask row {b} has a hole: the tokens of a row must be contiguous"
                )));
            }
            ranges.push(start..end);
        }
        Ok(Self { ranges })
    }

    /// Batch rows described.
    pub fn batch(&self) -> usize {
        self.ranges.len()
    }

    /// Row b's visible keys among the first `tk` (possibly empty).
    pub fn range(&self, b: usize, tk: usize) -> Range<usize> {
        let r = &self.ranges[b];
        let end = r.end.min(tk);
        r.start.min(end)..end
    }
}

/// Options of the op.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AttentionOptions {
    /// Multiplier of q·k; `None` means d^-0.5 (Qwen3-Next's `head_dim**-0.5`).
    pub scale: Option<f32>,
    /// Position of the first query: query i sees keys `0..=past_len + i`. 0 for a prefill
    /// from scratch; the number of cached tokens before the queries otherwise.
    pub past_len: usize,
    /// Key padding per batch row; `None`: every key is visible (subject to causality).
    pub padding: Option<KeyPadding>,
    /// Which WGSL kernels run (both compute the same thing).
    pub kernels: Kernels,
}

/// The WGSL kernel family of a call. Both compute the same thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// The subgroup kernels for calls of at least [`SUBGROUP_MIN_ROWS`] query rows where
    /// the adapter has one fixed subgroup size (lavapipe, NVIDIA, Apple), the workgroup-tile
    /// kernels otherwise. (The subgroup kernels run up to 2x faster on lavapipe at T = 1024
    /// but take ~8 s each to compile there: worth it only for long sequences.)
    #[default]
    Auto,
    /// The workgroup-tile kernels everywhere (no subgroup operations).
    Tiled,
    /// The subgroup kernels wherever the adapter has one fixed subgroup size, whatever the
    /// length (the workgroup-tile kernels elsewhere).
    Subgroup,
}

/// Query rows from which [`Kernels::Auto`] picks the subgroup kernels.
pub const SUBGROUP_MIN_ROWS: usize = 128;

impl AttentionOptions {
    /// The score multiplier for head dim `d`.
    pub fn scale_for(&self, d: usize) -> f32 {
        self.scale.unwrap_or(1.0 / (d as f32).sqrt())
    }
}

/// Bad inputs, reported before anything is launched.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AttentionError {
    #[error("gated attention: {0}")]
    Shape(String),
    #[error("gated attention: unsupported option: {0}")]
    Option(String),
}

/// The checked dimensions of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub b: usize,
    pub tq: usize,
    pub tk: usize,
    pub hq: usize,
    pub hkv: usize,
    pub d: usize,
}

fn shape_err(msg: String) -> AttentionError {
    AttentionError::Shape(msg)
}

/// Validates shapes: q, gate `[B,Tq,Hq,d]`, k, v `[B,Tk,Hkv,d]`, Hq a multiple of Hkv,
/// no empty dimension, d ≤ 256, padding for B rows, a finite scale.
pub fn check_dims(
    q: [usize; 4],
    k: [usize; 4],
    v: [usize; 4],
    gate: [usize; 4],
    opts: &AttentionOptions,
) -> Result<Dims, AttentionError> {
    let [b, tq, hq, d] = q;
    let [kb, tk, hkv, kd] = k;
    if q.contains(&0) || k.contains(&0) {
        return Err(shape_err(format!("empty dimension in q {q:?} / k {k:?}")));
    }
    if kb != b || kd != d {
        return Err(shape_err(format!(
            "k has shape {k:?} but q has {q:?}; expected k [B={b}, Tk, Hkv, d={d}]"
        )));
    }
    if v != k {
        return Err(shape_err(format!(
            "v has shape {v:?} but k has {k:?}; they must be equal"
        )));
    }
    if gate != q {
        return Err(shape_err(format!(
            "gate has shape {gate:?} but q has {q:?}; they must be equal"
        )));
    }
    if hq % hkv != 0 {
        return Err(shape_err(format!(
            "query heads ({hq}) must be a multiple of kv heads ({hkv})"
        )));
    }
    if d > MAX_HEAD_DIM {
        return Err(shape_err(format!(
            "head dim {d} exceeds the supported maximum {MAX_HEAD_DIM}"
        )));
    }
    if let Some(p) = &opts.padding
        && p.batch() != b
    {
        return Err(AttentionError::Option(format!(
            "padding describes {} batch rows but the batch has {b}",
            p.batch()
        )));
    }
    if let Some(s) = opts.scale
        && !s.is_finite()
    {
        return Err(AttentionError::Option(format!("scale {s} is not finite")));
    }
    Ok(Dims {
        b,
        tq,
        tk,
        hq,
        hkv,
        d,
    })
}

/// Validates the four inputs (see [`check_dims`]) and that they share one device.
pub fn check_shapes(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    gate: &Tensor<4>,
    opts: &AttentionOptions,
) -> Result<Dims, AttentionError> {
    let dims = check_dims(q.dims(), k.dims(), v.dims(), gate.dims(), opts)?;
    same_device(&[q, k, v, gate])?;
    Ok(dims)
}

fn same_device(xs: &[&Tensor<4>]) -> Result<(), AttentionError> {
    let device = xs[0].device();
    if xs.iter().any(|x| x.device() != device) {
        return Err(shape_err("inputs live on different devices".into()));
    }
    Ok(())
}

/// Limits of the WGSL kernels: u32 indexing and the workgroup grid.
fn check_kernel_limits(d: Dims, past_len: usize, tks: usize) -> Result<(), AttentionError> {
    let big = u32::MAX as usize;
    if d.b * d.tq * d.hq * d.d > big || d.b * tks * d.hkv * d.d > big || past_len + d.tq > big {
        return Err(shape_err(format!(
            "{d:?} (past_len {past_len}) exceeds the kernels' 32-bit indexing"
        )));
    }
    if d.tq.div_ceil(kernels::BLOCK_WG) > 65_535
        || tks.div_ceil(kernels::BLOCK_WG) > 65_535
        || d.hq > 65_535
        || d.b > 65_535
    {
        return Err(shape_err(format!(
            "{d:?} exceeds the kernels' workgroup grid (65535 per dimension)"
        )));
    }
    Ok(())
}

/// Whether the WGSL kernels serve a call on `device` with head dim `d` (they move data as
/// `vec4<f32>`; other head dims run the reference).
fn use_wgsl(device: &Device, d: usize) -> bool {
    d.is_multiple_of(4) && crate::device::supports_wgsl(device)
}

fn f32_4(x: Tensor<4>) -> Tensor<4> {
    if x.dtype() == DType::F32 {
        x
    } else {
        x.cast(DType::F32)
    }
}

fn kernel_params(d: Dims, opts: &AttentionOptions, tk: usize) -> KernelParams {
    let ranges = (0..d.b)
        .map(|b| {
            let r = opts.padding.as_ref().map_or(0..tk, |p| p.range(b, tk));
            [r.start as u32, r.end as u32]
        })
        .collect();
    KernelParams {
        scale: opts.scale_for(d.d),
        past_len: opts.past_len,
        tk,
        ranges,
        // The subgroup kernels' blocks can be as small as 8 rows (grid limit 65535 blocks).
        subgroups: d.tq.max(tk).div_ceil(8) <= 65_535
            && match opts.kernels {
                Kernels::Auto => d.tq >= SUBGROUP_MIN_ROWS,
                Kernels::Tiled => false,
                Kernels::Subgroup => true,
            },
    }
}

/// Gated attention over a block of queries (prefill and training).
///
/// q, gate `[B,Tq,Hq,d]`, k, v `[B,Tk,Hkv,d]`; queries sit at positions `past_len..past_len+Tq`
/// of the key sequence (Tq may differ from Tk). Returns `[B,Tq,Hq,d]`. Computes in f32.
/// Differentiable w.r.t. q, k, v and gate on autodiff devices.
pub fn gated_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    gate: Tensor<4>,
    opts: &AttentionOptions,
) -> Result<Tensor<4>, AttentionError> {
    let dims = check_shapes(&q, &k, &v, &gate, opts)?;
    let (q, k, v, gate) = (f32_4(q), f32_4(k), f32_4(v), f32_4(gate));
    if !use_wgsl(&q.device(), dims.d) {
        return Ok(reference::forward(q, k, v, gate, opts));
    }
    check_kernel_limits(dims, opts.past_len, dims.tk)?;
    let y = <Dispatch as GatedAttentionBackend>::gated_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        gate.into_dispatch(),
        kernel_params(dims, opts, dims.tk),
    );
    Ok(Tensor::from_dispatch(y))
}

/// One decode step: q, gate `[B,1,Hq,d]` against k, v `[B,Tk,Hkv,d]` (the query at position
/// `past_len`, normally Tk - 1). Returns `[B,1,Hq,d]`. Not differentiable (generation path);
/// the same maths as [`gated_attention`]. See [`KvCache::attend`] to skip building k, v.
pub fn gated_attention_decode(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    gate: Tensor<4>,
    opts: &AttentionOptions,
) -> Result<Tensor<4>, AttentionError> {
    let dims = check_shapes(&q, &k, &v, &gate, opts)?;
    if dims.tq != 1 {
        return Err(shape_err(format!(
            "decode takes one query token, got Tq = {}",
            dims.tq
        )));
    }
    let (q, k, v, gate) = (
        f32_4(q).inner(),
        f32_4(k).inner(),
        f32_4(v).inner(),
        f32_4(gate).inner(),
    );
    if !use_wgsl(&q.device(), dims.d) {
        return Ok(reference::forward(q, k, v, gate, opts));
    }
    check_kernel_limits(dims, opts.past_len, dims.tk)?;
    let y = <Dispatch as GatedAttentionBackend>::gated_attention_decode(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        gate.into_dispatch(),
        kernel_params(dims, opts, dims.tk),
    );
    Ok(Tensor::from_dispatch(y))
}

/// Keys and values of one attention layer during generation: buffers `[B, capacity, Hkv, d]`
/// of which the first `len` time steps are valid.
///
/// [`append`](Self::append) writes the new time steps in place; when they do not fit, the
/// capacity at least doubles (one copy of the valid part), so appending n tokens one at a
/// time costs O(n) writes in total and O(log n) reallocations. On wgpu,
/// [`attend`](Self::attend) runs the kernels directly on the buffers, reading only the valid
/// length. The cache holds tensors without autodiff (generation is not differentiated).
#[derive(Debug, Clone)]
pub struct KvCache {
    keys: Option<Tensor<4>>,
    values: Option<Tensor<4>>,
    len: usize,
    batch: usize,
    kv_heads: usize,
    head_dim: usize,
    device: Device,
    reallocations: usize,
}

impl KvCache {
    /// An empty cache; the buffers are allocated by the first append.
    pub fn new(batch: usize, kv_heads: usize, head_dim: usize, device: &Device) -> Self {
        Self {
            keys: None,
            values: None,
            len: 0,
            batch,
            kv_heads,
            head_dim,
            device: device.clone().inner(),
            reallocations: 0,
        }
    }

    /// An empty cache with room for `capacity` time steps before the first reallocation.
    pub fn with_capacity(
        batch: usize,
        kv_heads: usize,
        head_dim: usize,
        capacity: usize,
        device: &Device,
    ) -> Self {
        let mut cache = Self::new(batch, kv_heads, head_dim, device);
        if capacity > 0 {
            let shape = [batch, capacity, kv_heads, head_dim];
            cache.keys = Some(Tensor::zeros(shape, &cache.device));
            cache.values = Some(Tensor::zeros(shape, &cache.device));
        }
        cache
    }

    /// Valid time steps.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first append (or after [`clear`](Self::clear)).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Time steps the buffers hold before the next reallocation.
    pub fn capacity(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| k.dims()[1])
    }

    /// How many times the buffers were reallocated (grown) so far.
    pub fn reallocations(&self) -> usize {
        self.reallocations
    }

    /// Forgets every time step after the first `len` (e.g. rejected draft tokens); keeps the
    /// buffers.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Forgets every time step; keeps the buffers.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The valid keys `[B, len, Hkv, d]` (a view of the buffer), `None` when empty.
    pub fn keys(&self) -> Option<Tensor<4>> {
        self.keys
            .as_ref()
            .filter(|_| self.len > 0)
            .map(|k| k.clone().narrow(1, 0, self.len))
    }

    /// The valid values `[B, len, Hkv, d]` (a view of the buffer), `None` when empty.
    pub fn values(&self) -> Option<Tensor<4>> {
        self.values
            .as_ref()
            .filter(|_| self.len > 0)
            .map(|v| v.clone().narrow(1, 0, self.len))
    }

    /// Appends k, v `[B, T, Hkv, d]` (T ≥ 1) after the valid time steps.
    pub fn append(&mut self, k: Tensor<4>, v: Tensor<4>) -> Result<(), AttentionError> {
        let want = [self.batch, k.dims()[1], self.kv_heads, self.head_dim];
        if k.dims() != want || v.dims() != want || want[1] == 0 {
            return Err(shape_err(format!(
                "cache append: k {:?} and v {:?} must both be [B={}, T>=1, Hkv={}, d={}]",
                k.dims(),
                v.dims(),
                self.batch,
                self.kv_heads,
                self.head_dim
            )));
        }
        let t = want[1];
        let end = self.len + t;
        if end > self.capacity() {
            self.grow(end.max(2 * self.capacity()));
        }
        let at = [
            0..self.batch,
            self.len..end,
            0..self.kv_heads,
            0..self.head_dim,
        ];
        let to_dev = |x: Tensor<4>| f32_4(x).inner().to_device(&self.device);
        // `take` keeps each buffer uniquely owned, so Burn assigns the slice in place.
        let keys = self.keys.take().expect("allocated by grow");
        self.keys = Some(keys.slice_assign(at.clone(), to_dev(k)));
        let values = self.values.take().expect("allocated by grow");
        self.values = Some(values.slice_assign(at, to_dev(v)));
        self.len = end;
        Ok(())
    }

    /// New buffers of `capacity` time steps holding the valid part of the old ones.
    fn grow(&mut self, capacity: usize) {
        let shape = [self.batch, capacity, self.kv_heads, self.head_dim];
        let len = self.len;
        let regrow = |old: Option<Tensor<4>>| {
            let new = Tensor::zeros(shape, &self.device);
            match old {
                Some(old) if len > 0 => new.slice_assign(
                    [0..shape[0], 0..len, 0..shape[2], 0..shape[3]],
                    old.narrow(1, 0, len),
                ),
                _ => new,
            }
        };
        self.keys = Some(regrow(self.keys.take()));
        self.values = Some(regrow(self.values.take()));
        self.reallocations += 1;
    }

    /// Attention of q, gate `[B,Tq,Hq,d]` over the cached keys and values: equal to
    /// [`gated_attention`]`(q, keys(), values(), gate, opts)` without building those views.
    /// Usually the queries are the last Tq cached positions: `opts.past_len = len() - Tq`.
    /// Tq = 1 runs the decode kernel; longer blocks (chunked prefill) the forward kernel.
    /// Not differentiable; returns a tensor without autodiff.
    pub fn attend(
        &self,
        q: Tensor<4>,
        gate: Tensor<4>,
        opts: &AttentionOptions,
    ) -> Result<Tensor<4>, AttentionError> {
        let (Some(keys), Some(values)) = (self.keys.clone(), self.values.clone()) else {
            return Err(shape_err("attend on an empty KV cache".into()));
        };
        if self.len == 0 {
            return Err(shape_err("attend on an empty KV cache".into()));
        }
        let kv = [self.batch, self.len, self.kv_heads, self.head_dim];
        let dims = check_dims(q.dims(), kv, kv, gate.dims(), opts)?;
        let q = f32_4(q).inner();
        let gate = f32_4(gate).inner();
        same_device(&[&q, &gate, &keys])?;
        if !use_wgsl(&self.device, dims.d) {
            return Ok(reference::forward(
                q,
                keys.narrow(1, 0, self.len),
                values.narrow(1, 0, self.len),
                gate,
                opts,
            ));
        }
        check_kernel_limits(dims, opts.past_len, self.capacity())?;
        let params = kernel_params(dims, opts, self.len);
        let (q, k, v, gate) = (
            q.into_dispatch(),
            keys.into_dispatch(),
            values.into_dispatch(),
            gate.into_dispatch(),
        );
        let y = if dims.tq == 1 {
            <Dispatch as GatedAttentionBackend>::gated_attention_decode(q, k, v, gate, params)
        } else {
            <Dispatch as GatedAttentionBackend>::gated_attention(q, k, v, gate, params)
        };
        Ok(Tensor::from_dispatch(y))
    }
}
