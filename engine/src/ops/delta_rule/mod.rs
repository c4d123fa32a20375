//! The gated delta rule (Gated DeltaNet's recurrence), as used by Qwen3-Next / Qwen3.5.
//!
//! Per batch and value head, with state S: [dk, dv] and for each token t:
//! ```text
//! S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,     o_t = S_t^T q_t
//! ```
//! where q, k are optionally l2-normalised (`x * rsqrt(sum x^2 + 1e-6)`) and q is scaled
//! (default dk^-0.5). Value head h uses key head h / (Hv / Hk) (grouped heads, no repeat
//! materialised by the kernels).
//!
//! On a wgpu device the WGSL kernels in `shaders/delta_rule_*.wgsl` run: a chunked UT/WY
//! forward that saves only chunk-boundary states, a backward that recomputes within chunks
//! from them, and a one-token decode kernel; short sequences (T ≤ 64) take token-by-token
//! kernels with one invocation per value column instead (same boundary states, no UT
//! transform, one barrier per token in the backward). Elsewhere [`reference`] (plain tensor
//! ops) runs.
//!
//! - [`delta_rule`]: prefill / training, differentiable through Burn's autodiff.
//! - [`delta_rule_decode`]: one token against a carried state (generation).

mod backend;
mod kernels;
pub mod reference;

pub use backend::{DeltaRuleBackend, KernelConfig};

use burn::backend::Dispatch;
use burn::tensor::{DType, Tensor};

/// eps inside the rsqrt of the sum of squares (as transformers' `l2norm`).
pub const L2NORM_EPS: f32 = 1e-6;
/// Largest key head dim the kernels accept (workgroup-memory budget).
pub const MAX_HEAD_DIM_K: usize = 256;

/// Options of the op.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaRuleOptions {
    /// L2-normalise q and k inside the op (transformers' `use_qk_l2norm_in_kernel`).
    pub use_qk_l2norm: bool,
    /// Multiplier of q (after normalisation); `None` means dk^-0.5.
    pub scale: Option<f32>,
    /// Chunk length of the chunked forward: 16, 32 or 64.
    pub chunk_size: usize,
    /// Largest backward workspace (one buffer) in bytes; `None` = the device's binding
    /// limit. A batch whose workspace is larger runs as several calls over row groups.
    pub max_workspace_bytes: Option<u64>,
}

impl Default for DeltaRuleOptions {
    fn default() -> Self {
        Self {
            use_qk_l2norm: true,
            scale: None,
            chunk_size: 64,
            max_workspace_bytes: None,
        }
    }
}

impl DeltaRuleOptions {
    /// The q multiplier for key head dim `dk`.
    pub fn scale_for(&self, dk: usize) -> f32 {
        self.scale.unwrap_or(1.0 / (dk as f32).sqrt())
    }
}

/// Output `[B,T,Hv,dv]` and final state `[B,Hv,dk,dv]`.
#[derive(Debug, Clone)]
pub struct DeltaRuleOutput {
    pub output: Tensor<4>,
    pub final_state: Tensor<4>,
}

/// Bad inputs, reported before anything is launched.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeltaRuleError {
    #[error("delta rule: {0}")]
    Shape(String),
    #[error("delta rule: unsupported option: {0}")]
    Option(String),
}

/// The checked dimensions of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub b: usize,
    pub t: usize,
    pub hk: usize,
    pub hv: usize,
    pub dk: usize,
    pub dv: usize,
}

impl Dims {
    /// The kernels' sizes for `b` rows.
    fn sizes(&self, b: usize) -> kernels::Sizes {
        kernels::Sizes {
            b,
            t: self.t,
            hk: self.hk,
            hv: self.hv,
            dk: self.dk,
            dv: self.dv,
        }
    }
}

fn shape_err(msg: String) -> DeltaRuleError {
    DeltaRuleError::Shape(msg)
}

/// Validates shapes: q, k `[B,T,Hk,dk]`, v `[B,T,Hv,dv]`, g, beta `[B,T,Hv]`, state
/// `[B,Hv,dk,dv]`, Hv a multiple of Hk, T ≥ 1, dk ≤ 256, and one device for all.
pub fn check_shapes(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    g: &Tensor<3>,
    beta: &Tensor<3>,
    state: Option<&Tensor<4>>,
) -> Result<Dims, DeltaRuleError> {
    let [b, t, hk, dk] = q.dims();
    let [vb, vt, hv, dv] = v.dims();
    if k.dims() != q.dims() {
        return Err(shape_err(format!(
            "k has shape {:?} but q has {:?}; both must be [B,T,Hk,dk]",
            k.dims(),
            q.dims()
        )));
    }
    if (vb, vt) != (b, t) {
        return Err(shape_err(format!(
            "v has shape {:?}; its batch and time must match q's [B={b}, T={t}]",
            v.dims()
        )));
    }
    if t == 0 || b == 0 || hk == 0 || dk == 0 || dv == 0 {
        return Err(shape_err(format!(
            "empty dimension in q {:?} / v {:?}",
            q.dims(),
            v.dims()
        )));
    }
    if hv % hk != 0 {
        return Err(shape_err(format!(
            "value heads ({hv}) must be a multiple of key heads ({hk})"
        )));
    }
    if dk > MAX_HEAD_DIM_K {
        return Err(shape_err(format!(
            "key head dim {dk} exceeds the supported maximum {MAX_HEAD_DIM_K}"
        )));
    }
    for (name, x) in [("g", g), ("beta", beta)] {
        if x.dims() != [b, t, hv] {
            return Err(shape_err(format!(
                "{name} has shape {:?}, expected [B,T,Hv] = [{b}, {t}, {hv}]",
                x.dims()
            )));
        }
    }
    if let Some(s) = state
        && s.dims() != [b, hv, dk, dv]
    {
        return Err(shape_err(format!(
            "state has shape {:?}, expected [B,Hv,dk,dv] = [{b}, {hv}, {dk}, {dv}]",
            s.dims()
        )));
    }
    let device = q.device();
    let same = k.device() == device
        && v.device() == device
        && g.device() == device
        && beta.device() == device
        && state.is_none_or(|s| s.device() == device);
    if !same {
        return Err(shape_err("inputs live on different devices".into()));
    }
    Ok(Dims {
        b,
        t,
        hk,
        hv,
        dk,
        dv,
    })
}

fn check_options(opts: &DeltaRuleOptions) -> Result<(), DeltaRuleError> {
    if ![16, 32, 64].contains(&opts.chunk_size) {
        return Err(DeltaRuleError::Option(format!(
            "chunk_size {} (supported: 16, 32, 64)",
            opts.chunk_size
        )));
    }
    if let Some(s) = opts.scale
        && !s.is_finite()
    {
        return Err(DeltaRuleError::Option(format!("scale {s} is not finite")));
    }
    Ok(())
}

fn f32_4(x: Tensor<4>) -> Tensor<4> {
    if x.dtype() == DType::F32 {
        x
    } else {
        x.cast(DType::F32)
    }
}

fn f32_3(x: Tensor<3>) -> Tensor<3> {
    if x.dtype() == DType::F32 {
        x
    } else {
        x.cast(DType::F32)
    }
}

fn kernel_config(opts: &DeltaRuleOptions, dims: Dims) -> KernelConfig {
    KernelConfig {
        l2norm: opts.use_qk_l2norm,
        scale: opts.scale_for(dims.dk),
        chunk: opts.chunk_size,
    }
}

/// Splits a packed `[o (B·T·Hv·dv) | state (B·Hv·dk·dv)]` kernel result.
fn unpack(packed: Tensor<1>, d: Dims) -> DeltaRuleOutput {
    let n_o = d.b * d.t * d.hv * d.dv;
    let n_s = d.b * d.hv * d.dk * d.dv;
    DeltaRuleOutput {
        output: packed
            .clone()
            .narrow(0, 0, n_o)
            .reshape([d.b, d.t, d.hv, d.dv]),
        final_state: packed.narrow(0, n_o, n_s).reshape([d.b, d.hv, d.dk, d.dv]),
    }
}

/// The gated delta rule over a whole sequence (prefill and training).
///
/// q, k `[B,T,Hk,dk]`, v `[B,T,Hv,dv]`, g (log-decay ≤ 0) and beta `[B,T,Hv]`, optional
/// initial state `[B,Hv,dk,dv]`. Returns the output `[B,T,Hv,dv]` and the final state.
/// Computes in f32. Differentiable w.r.t. every input on autodiff devices.
pub fn delta_rule(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    g: Tensor<3>,
    beta: Tensor<3>,
    initial_state: Option<Tensor<4>>,
    opts: &DeltaRuleOptions,
) -> Result<DeltaRuleOutput, DeltaRuleError> {
    let dims = check_shapes(&q, &k, &v, &g, &beta, initial_state.as_ref())?;
    check_options(opts)?;
    let (q, k, v, g, beta) = (f32_4(q), f32_4(k), f32_4(v), f32_3(g), f32_3(beta));
    let initial_state = initial_state.map(f32_4);
    if !crate::device::supports_wgsl(&q.device()) {
        return Ok(reference::forward(q, k, v, g, beta, initial_state, opts));
    }
    let device = q.device();
    let h0 = initial_state
        .unwrap_or_else(|| Tensor::zeros([dims.b, dims.hv, dims.dk, dims.dv], &device));
    let rows = if device.is_autodiff() {
        let limit = opts
            .max_workspace_bytes
            .or_else(|| crate::device::max_binding_bytes(&device))
            .unwrap_or(u64::MAX);
        let one = kernels::backward_workspace_bytes(dims.sizes(1), opts.chunk_size);
        ((limit / one.max(1)) as usize).clamp(1, dims.b)
    } else {
        dims.b
    };
    if rows == dims.b {
        return Ok(chunked([q, k, v, h0], [g, beta], opts, dims));
    }
    // The backward workspace grows with B: row groups whose workspace fits a binding.
    let mut parts = Vec::new();
    for start in (0..dims.b).step_by(rows) {
        let n = rows.min(dims.b - start);
        let cut4 = |x: &Tensor<4>| x.clone().narrow(0, start, n);
        let cut3 = |x: &Tensor<3>| x.clone().narrow(0, start, n);
        let d = Dims { b: n, ..dims };
        parts.push(chunked(
            [cut4(&q), cut4(&k), cut4(&v), cut4(&h0)],
            [cut3(&g), cut3(&beta)],
            opts,
            d,
        ));
    }
    let (outputs, states): (Vec<_>, Vec<_>) =
        parts.into_iter().map(|o| (o.output, o.final_state)).unzip();
    Ok(DeltaRuleOutput {
        output: Tensor::cat(outputs, 0),
        final_state: Tensor::cat(states, 0),
    })
}

/// One kernel call over the whole batch of `[q, k, v, h0]`, `[g, beta]`.
fn chunked(
    [q, k, v, h0]: [Tensor<4>; 4],
    [g, beta]: [Tensor<3>; 2],
    opts: &DeltaRuleOptions,
    dims: Dims,
) -> DeltaRuleOutput {
    let packed = <Dispatch as DeltaRuleBackend>::delta_rule_chunked(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        g.into_dispatch(),
        beta.into_dispatch(),
        h0.into_dispatch(),
        kernel_config(opts, dims),
    );
    unpack(Tensor::from_dispatch(packed), dims)
}

/// One decode step: q, k `[B,1,Hk,dk]`, v `[B,1,Hv,dv]`, g, beta `[B,1,Hv]` against `state`
/// `[B,Hv,dk,dv]`. Returns the output `[B,1,Hv,dv]` and the new state. Not differentiable
/// (generation path); the same maths as [`delta_rule`].
pub fn delta_rule_decode(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    g: Tensor<3>,
    beta: Tensor<3>,
    state: Tensor<4>,
    opts: &DeltaRuleOptions,
) -> Result<DeltaRuleOutput, DeltaRuleError> {
    let dims = check_shapes(&q, &k, &v, &g, &beta, Some(&state))?;
    check_options(opts)?;
    if dims.t != 1 {
        return Err(shape_err(format!(
            "decode takes one token, got T = {}",
            dims.t
        )));
    }
    let (q, k, v, g, beta, state) = (
        f32_4(q).inner(),
        f32_4(k).inner(),
        f32_4(v).inner(),
        f32_3(g).inner(),
        f32_3(beta).inner(),
        f32_4(state).inner(),
    );
    if !crate::device::supports_wgsl(&q.device()) {
        return Ok(reference::forward(q, k, v, g, beta, Some(state), opts));
    }
    let packed = <Dispatch as DeltaRuleBackend>::delta_rule_decode(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        g.into_dispatch(),
        beta.into_dispatch(),
        state.into_dispatch(),
        kernel_config(opts, dims),
    );
    Ok(unpack(Tensor::from_dispatch(packed), dims))
}
