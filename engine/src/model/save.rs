//! Saving the hybrid model in Hugging Face layout (the inverse of [`super::load`]), the
//! `Config` → `config.json` serialisation, and the named-parameter iteration that the
//! optimizer and checkpoints use.
//!
//! Two name spaces:
//! * **parameter names** ([`named_params`]): one per `Param` of [`HybridModel`], in the flat
//!   Qwen3.5 layout with per-expert MoE weights, e.g. `model.layers.0.linear_attn.in_proj_qkv.weight`,
//!   `model.layers.1.mlp.experts.3.gate_proj.weight`. Shapes are the in-memory ones (the conv
//!   weight is `[C, K]`). Optimizer state is saved under these names.
//! * **checkpoint names** ([`hf_tensors`]): what transformers expects for the config's family —
//!   Qwen3-Next regroups `in_proj_qkvz` / `in_proj_ba` and keeps per-expert weights,
//!   Qwen3.5-MoE fuses experts into `experts.gate_up_proj` `[E, 2I, H]` / `experts.down_proj`
//!   `[E, H, I]`, the conv weight is `[C, 1, K]`, and tied embeddings have no `lm_head.weight`.
//!
//! Everything here works on bytes; writing files is the caller's (see `train::files`).

use std::collections::HashMap;
use std::io::Write;

use burn::module::{Param, ParamId};
use burn::tensor::{Gradients, Tensor};
use serde_json::{Map, Value, json};

use super::config::{Config, Family, LayerType};
use super::hybrid::{Ffn, HybridModel, Mixer};
use super::random::FileDtype;
use super::tensor_file::TensorWriter;
use crate::nn::mlp::Mlp;

/// Errors saving a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SaveError {
    #[error("reading parameter `{name}` from the device: {msg}")]
    Device { name: String, msg: String },
    #[error("parameter `{name}` has shape {got:?}, but the config implies {want:?}")]
    Shape {
        name: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },
    #[error("the model has no parameter `{0}` that the config requires")]
    Missing(String),
    #[error("the model has parameter `{0}`, which the config does not describe")]
    Unexpected(String),
    #[error(
        "the model holds frozen 16-bit weights (loaded with a 16-bit dtype); saving those is not \
         supported: load it in f32 to save it"
    )]
    Frozen,
    #[error(
        "the model carries LoRA adapters: save them as an adapter folder, or merge them into \
         the base first"
    )]
    Adapters,
    #[error("safetensors serialisation failed: {0}")]
    Serialize(String),
    #[error("parameter `{0}` holds a non-finite value; it is not saved")]
    NonFinite(String),
    #[error("writing: {0}")]
    Io(String),
}

/// A shared reference to one parameter of the model (every parameter is 1-D or 2-D).
#[derive(Debug, Clone, Copy)]
pub enum ParamRef<'a> {
    D1(&'a Param<Tensor<1>>),
    D2(&'a Param<Tensor<2>>),
}

/// A mutable reference to one parameter of the model.
#[derive(Debug)]
pub enum ParamMut<'a> {
    D1(&'a mut Param<Tensor<1>>),
    D2(&'a mut Param<Tensor<2>>),
}

impl ParamRef<'_> {
    /// Burn's id of the parameter.
    pub fn id(&self) -> ParamId {
        match self {
            Self::D1(p) => p.id,
            Self::D2(p) => p.id,
        }
    }

    /// In-memory shape.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Self::D1(p) => p.val().dims().to_vec(),
            Self::D2(p) => p.val().dims().to_vec(),
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape().iter().product()
    }

    /// The value flattened to `[numel]` (row-major), keeping its autodiff association.
    pub fn flat(&self) -> Tensor<1> {
        match self {
            Self::D1(p) => p.val(),
            Self::D2(p) => p.val().flatten(0, 1),
        }
    }

    /// The parameter's gradient in `grads`, flattened to `[numel]` (no autodiff association);
    /// `None` when the parameter took no part in the loss or does not require gradients.
    pub fn grad(&self, grads: &Gradients) -> Option<Tensor<1>> {
        match self {
            Self::D1(p) => p.val().grad(grads),
            Self::D2(p) => p.val().grad(grads).map(|g| g.flatten(0, 1)),
        }
    }
}

/// `new` with the autodiff association and `require_grad` of `old` (so an update keeps a
/// trainable parameter trainable).
fn like<const D: usize>(old: &Tensor<D>, new: Tensor<D>) -> Tensor<D> {
    let new = new.inner();
    if old.is_autodiff() {
        let t = new.autodiff();
        if old.is_require_grad() {
            t.require_grad()
        } else {
            t
        }
    } else {
        new
    }
}

impl ParamMut<'_> {
    /// A shared view.
    pub fn as_ref(&self) -> ParamRef<'_> {
        match self {
            Self::D1(p) => ParamRef::D1(p),
            Self::D2(p) => ParamRef::D2(p),
        }
    }

    /// Replaces the value with `flat` `[numel]` (reshaped to the parameter's shape), keeping the
    /// parameter id and, on an autodiff device, a fresh leaf that requires gradients as before.
    pub fn set_flat(&mut self, flat: Tensor<1>) {
        match self {
            Self::D1(p) => {
                let v = like(&p.val(), flat);
                **p = (*p).clone().map(|_| v);
            }
            Self::D2(p) => {
                let old = p.val();
                let v = like(&old, flat.reshape(old.dims()));
                **p = (*p).clone().map(|_| v);
            }
        }
    }
}

/// Pushes a projection weight when it is an f32 parameter (frozen 16-bit weights are not
/// parameters), then its LoRA update's `lora_A` / `lora_B` (PEFT's names) when it has one.
macro_rules! push_lin {
    ($out:ident, $R:ident, $name:expr, $lin:expr, $($m:tt)*) => {{
        let name: String = $name;
        let lin = &$($m)* $lin;
        if let Some(lora) = &$($m)* lin.lora {
            let module = name.strip_suffix(".weight").unwrap_or(&name).to_string();
            $out.push((format!("{module}.lora_A.weight"), $R::D2(&$($m)* lora.a)));
            $out.push((format!("{module}.lora_B.weight"), $R::D2(&$($m)* lora.b)));
        }
        if let Some(w) = &$($m)* lin.weight {
            $out.push((name, $R::D2(w)));
        }
    }};
}

/// Pushes the three weights of an MLP under `$q`.
macro_rules! push_mlp {
    ($out:ident, $R:ident, $q:expr, $mlp:expr, $($m:tt)*) => {{
        let q = $q;
        let m: &$($m)* Mlp = $mlp;
        push_lin!($out, $R, format!("{q}.gate_proj.weight"), m.gate_proj, $($m)*);
        push_lin!($out, $R, format!("{q}.up_proj.weight"), m.up_proj, $($m)*);
        push_lin!($out, $R, format!("{q}.down_proj.weight"), m.down_proj, $($m)*);
    }};
}

/// Walks every parameter of a model in canonical order, pushing `(name, variant(&param))`.
/// `$($m)*` is empty for shared references and `mut` for mutable ones.
macro_rules! walk_params {
    ($model:expr, $out:ident, $R:ident, $($m:tt)*) => {{
        let model = $model;
        // A vocabulary split into shards is frozen (only f32 tables that fit one binding train).
        if let [e] = &$($m)* model.embed_tokens.shards[..] {
            push_lin!($out, $R, "model.embed_tokens.weight".to_string(), *e, $($m)*);
        }
        for (i, layer) in (&$($m)* model.layers).into_iter().enumerate() {
            let p = format!("model.layers.{i}");
            $out.push((format!("{p}.input_layernorm.weight"), $R::D1(&$($m)* layer.input_layernorm)));
            match &$($m)* layer.mixer {
                Mixer::Linear(g) => {
                    let q = format!("{p}.linear_attn");
                    push_lin!($out, $R, format!("{q}.in_proj_qkv.weight"), g.in_proj_qkv, $($m)*);
                    push_lin!($out, $R, format!("{q}.in_proj_z.weight"), g.in_proj_z, $($m)*);
                    push_lin!($out, $R, format!("{q}.in_proj_b.weight"), g.in_proj_b, $($m)*);
                    push_lin!($out, $R, format!("{q}.in_proj_a.weight"), g.in_proj_a, $($m)*);
                    $out.push((format!("{q}.conv1d.weight"), $R::D2(&$($m)* g.conv1d)));
                    $out.push((format!("{q}.A_log"), $R::D1(&$($m)* g.a_log)));
                    $out.push((format!("{q}.dt_bias"), $R::D1(&$($m)* g.dt_bias)));
                    $out.push((format!("{q}.norm.weight"), $R::D1(&$($m)* g.norm)));
                    push_lin!($out, $R, format!("{q}.out_proj.weight"), g.out_proj, $($m)*);
                }
                Mixer::Full(a) => {
                    let q = format!("{p}.self_attn");
                    push_lin!($out, $R, format!("{q}.q_proj.weight"), a.q_proj, $($m)*);
                    push_lin!($out, $R, format!("{q}.k_proj.weight"), a.k_proj, $($m)*);
                    push_lin!($out, $R, format!("{q}.v_proj.weight"), a.v_proj, $($m)*);
                    push_lin!($out, $R, format!("{q}.o_proj.weight"), a.o_proj, $($m)*);
                    $out.push((format!("{q}.q_norm.weight"), $R::D1(&$($m)* a.q_norm)));
                    $out.push((format!("{q}.k_norm.weight"), $R::D1(&$($m)* a.k_norm)));
                }
            }
            $out.push((
                format!("{p}.post_attention_layernorm.weight"),
                $R::D1(&$($m)* layer.post_attention_layernorm),
            ));
            match &$($m)* layer.ffn {
                Ffn::Dense(m) => push_mlp!($out, $R, format!("{p}.mlp"), m, $($m)*),
                Ffn::Moe(m) => {
                    push_lin!($out, $R, format!("{p}.mlp.gate.weight"), m.gate, $($m)*);
                    for (e, x) in (&$($m)* m.experts).into_iter().enumerate() {
                        push_mlp!($out, $R, format!("{p}.mlp.experts.{e}"), x, $($m)*);
                    }
                    if let Some(s) = &$($m)* m.shared_expert {
                        push_mlp!($out, $R, format!("{p}.mlp.shared_expert"), s, $($m)*);
                    }
                    if let Some(g) = &$($m)* m.shared_expert_gate {
                        push_lin!($out, $R, format!("{p}.mlp.shared_expert_gate.weight"), *g, $($m)*);
                    }
                }
            }
        }
        $out.push(("model.norm.weight".to_string(), $R::D1(&$($m)* model.norm)));
        if let Some(h) = &$($m)* model.lm_head {
            if let [h] = &$($m)* h.shards[..] {
                push_lin!($out, $R, "lm_head.weight".to_string(), *h, $($m)*);
            }
        }
    }};
}

/// Every parameter of `model` with its parameter name, in a fixed order (embeddings, layers in
/// order, final norm, LM head).
pub fn named_params(model: &HybridModel) -> Vec<(String, ParamRef<'_>)> {
    let mut out: Vec<(String, ParamRef<'_>)> = Vec::new();
    walk_params!(model, out, ParamRef,);
    out
}

/// [`named_params`] with mutable access (same names and order).
pub fn named_params_mut(model: &mut HybridModel) -> Vec<(String, ParamMut<'_>)> {
    let mut out: Vec<(String, ParamMut<'_>)> = Vec::new();
    walk_params!(model, out, ParamMut, mut);
    out
}

/// A host tensor by name: `(name, shape, row-major f32 values)`.
pub type NamedHostTensor = (String, Vec<usize>, Vec<f32>);

/// Reads every parameter to the host under its parameter name (one readback per parameter).
pub async fn read_params(model: &HybridModel) -> Result<Vec<NamedHostTensor>, SaveError> {
    let mut out = Vec::new();
    for (name, p) in named_params(model) {
        out.push(read_param(&name, &p).await?);
    }
    Ok(out)
}

/// One parameter read to the host; a non-finite value is an error.
async fn read_param(name: &str, p: &ParamRef<'_>) -> Result<NamedHostTensor, SaveError> {
    let values = read_finite(p.flat().inner()).await.map_err(|e| match e {
        ReadError::Device(msg) => SaveError::Device {
            name: name.to_string(),
            msg,
        },
        ReadError::NonFinite => SaveError::NonFinite(name.to_string()),
    })?;
    Ok((name.to_string(), p.shape(), values))
}

/// Why [`read_finite`] failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The device read-back failed (the message says how).
    Device(String),
    /// The tensor holds a NaN or an infinity.
    NonFinite,
}

/// Host copy of a 1-D tensor whose values must all be finite (what is saved).
pub(crate) async fn read_finite(t: Tensor<1>) -> Result<Vec<f32>, ReadError> {
    let values = read_flat(t).await.map_err(ReadError::Device)?;
    if values.iter().any(|x| !x.is_finite()) {
        return Err(ReadError::NonFinite);
    }
    Ok(values)
}

/// Elements per read-back of [`read_flat`] (16 MiB of f32): each read maps a staging buffer
/// at least as large as what it reads, so pieces keep those buffers small whatever the
/// tensor's size.
const READ_PIECE: usize = 1 << 22;

/// Host copy of a 1-D tensor, read back in pieces of at most [`READ_PIECE`] elements.
pub(crate) async fn read_flat(t: Tensor<1>) -> Result<Vec<f32>, String> {
    let device = t.device();
    let [n] = t.dims();
    let mut out = Vec::with_capacity(n);
    for start in (0..n.max(1)).step_by(READ_PIECE) {
        let piece = if n <= READ_PIECE {
            t.clone()
        } else {
            t.clone().narrow(0, start, READ_PIECE.min(n - start))
        };
        let values = piece
            .into_data_async()
            .await
            .map_err(|e| crate::device::describe_error(&e.to_string(), &device))?
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| format!("{e:?}"))?;
        out.extend(values);
    }
    Ok(out)
}

/// Parameter-named host tensors being moved into checkpoint order.
struct Pool {
    map: HashMap<String, (Vec<usize>, Vec<f32>)>,
    out: Vec<NamedHostTensor>,
}

impl Pool {
    /// Removes `name`, checking its shape.
    fn take(&mut self, name: &str, want: &[usize]) -> Result<Vec<f32>, SaveError> {
        let (shape, v) = self
            .map
            .remove(name)
            .ok_or_else(|| SaveError::Missing(name.to_string()))?;
        if shape != want {
            return Err(SaveError::Shape {
                name: name.to_string(),
                got: shape,
                want: want.to_vec(),
            });
        }
        Ok(v)
    }

    /// Moves `name` to the output unchanged.
    fn keep(&mut self, name: String, shape: &[usize]) -> Result<(), SaveError> {
        let v = self.take(&name, shape)?;
        self.out.push((name, shape.to_vec(), v));
        Ok(())
    }

    fn put(&mut self, name: String, shape: &[usize], v: Vec<f32>) {
        self.out.push((name, shape.to_vec(), v));
    }

    fn mlp(&mut self, prefix: &str, h: usize, inter: usize) -> Result<(), SaveError> {
        self.keep(format!("{prefix}.gate_proj.weight"), &[inter, h])?;
        self.keep(format!("{prefix}.up_proj.weight"), &[inter, h])?;
        self.keep(format!("{prefix}.down_proj.weight"), &[h, inter])
    }
}

/// A group of checkpoint tensors converted together: each output tensor is made from the
/// parameters of one part only, so a writer can read, convert and write one part at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Part {
    Embed,
    Layer(usize),
    Norm,
    Head,
}

impl Part {
    /// The parts of a model for `cfg`, in checkpoint order (`untied`: with an LM head).
    pub(crate) fn all(cfg: &Config, untied: bool) -> Vec<Part> {
        let mut parts = vec![Part::Embed];
        parts.extend((0..cfg.layer_types.len()).map(Part::Layer));
        parts.push(Part::Norm);
        if untied {
            parts.push(Part::Head);
        }
        parts
    }

    /// The part a parameter name belongs to (None for a name no model has).
    pub(crate) fn of(name: &str) -> Option<Part> {
        match name {
            "model.embed_tokens.weight" => Some(Part::Embed),
            "model.norm.weight" => Some(Part::Norm),
            "lm_head.weight" => Some(Part::Head),
            _ => {
                let rest = name.strip_prefix("model.layers.")?;
                let (i, _) = rest.split_once('.')?;
                i.parse().ok().map(Part::Layer)
            }
        }
    }
}

/// Converts parameter-named host tensors into the checkpoint tensors transformers expects for
/// `cfg`'s family (see the module docs): the inverse of [`super::load::build`]'s regrouping.
/// Every parameter the config implies must be present with its shape; `lm_head.weight` is
/// written when present (untied) and omitted otherwise.
pub fn hf_tensors(
    cfg: &Config,
    params: Vec<NamedHostTensor>,
) -> Result<Vec<NamedHostTensor>, SaveError> {
    let mut pool = Pool {
        map: params.into_iter().map(|(n, s, v)| (n, (s, v))).collect(),
        out: Vec::new(),
    };
    for part in Part::all(cfg, pool.map.contains_key("lm_head.weight")) {
        convert(cfg, part, &mut pool)?;
    }
    if let Some(extra) = pool.map.keys().min() {
        return Err(SaveError::Unexpected(extra.clone()));
    }
    Ok(pool.out)
}

/// Moves `part`'s parameters from `pool.map` to checkpoint tensors in `pool.out`.
fn convert(cfg: &Config, part: Part, pool: &mut Pool) -> Result<(), SaveError> {
    let (h, v) = (cfg.hidden_size, cfg.vocab_size);
    match part {
        Part::Embed => pool.keep("model.embed_tokens.weight".into(), &[v, h]),
        Part::Layer(i) => convert_layer(cfg, i, pool),
        Part::Norm => pool.keep("model.norm.weight".into(), &[h]),
        Part::Head => pool.keep("lm_head.weight".into(), &[v, h]),
    }
}

/// [`convert`] for decoder layer `i`.
fn convert_layer(cfg: &Config, i: usize, pool: &mut Pool) -> Result<(), SaveError> {
    let h = cfg.hidden_size;
    let (nk, nv) = (cfg.linear_num_key_heads, cfg.linear_num_value_heads);
    let (dk, dv) = (cfg.linear_key_head_dim, cfg.linear_value_head_dim);
    let r = nv / nk;
    let cdim = cfg.conv_dim();
    let kconv = cfg.linear_conv_kernel_dim;
    let (nh, nkv, hd) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
    );
    let ty = cfg.layer_types[i];
    let p = format!("model.layers.{i}");
    pool.keep(format!("{p}.input_layernorm.weight"), &[h])?;
    pool.keep(format!("{p}.post_attention_layernorm.weight"), &[h])?;
    match ty {
        LayerType::Linear => {
            let q = format!("{p}.linear_attn");
            let qkv = pool.take(&format!("{q}.in_proj_qkv.weight"), &[cdim, h])?;
            let z = pool.take(&format!("{q}.in_proj_z.weight"), &[nv * dv, h])?;
            let b = pool.take(&format!("{q}.in_proj_b.weight"), &[nv, h])?;
            let a = pool.take(&format!("{q}.in_proj_a.weight"), &[nv, h])?;
            if cfg.family == Family::Qwen3Next {
                // Per key head j: [q_j | k_j | v (r heads) | z (r heads)] and [b (r) | a (r)].
                // (Empty data stays empty: `hf_names` passes shapes only.)
                let rows = |t: &[f32], start: usize, n: usize| {
                    t.get(start * h..(start + n) * h)
                        .map(<[f32]>::to_vec)
                        .unwrap_or_default()
                };
                let mut qkvz = Vec::with_capacity((cdim + nv * dv) * h);
                let mut ba = Vec::with_capacity(2 * nv * h);
                for j in 0..nk {
                    qkvz.extend(rows(&qkv, j * dk, dk));
                    qkvz.extend(rows(&qkv, nk * dk + j * dk, dk));
                    qkvz.extend(rows(&qkv, 2 * nk * dk + j * r * dv, r * dv));
                    qkvz.extend(rows(&z, j * r * dv, r * dv));
                    ba.extend(rows(&b, j * r, r));
                    ba.extend(rows(&a, j * r, r));
                }
                let w = 2 * dk + 2 * r * dv;
                pool.put(format!("{q}.in_proj_qkvz.weight"), &[nk * w, h], qkvz);
                pool.put(format!("{q}.in_proj_ba.weight"), &[2 * nv, h], ba);
            } else {
                pool.put(format!("{q}.in_proj_qkv.weight"), &[cdim, h], qkv);
                pool.put(format!("{q}.in_proj_z.weight"), &[nv * dv, h], z);
                pool.put(format!("{q}.in_proj_b.weight"), &[nv, h], b);
                pool.put(format!("{q}.in_proj_a.weight"), &[nv, h], a);
            }
            let conv = pool.take(&format!("{q}.conv1d.weight"), &[cdim, kconv])?;
            pool.put(format!("{q}.conv1d.weight"), &[cdim, 1, kconv], conv);
            pool.keep(format!("{q}.A_log"), &[nv])?;
            pool.keep(format!("{q}.dt_bias"), &[nv])?;
            pool.keep(format!("{q}.norm.weight"), &[dv])?;
            pool.keep(format!("{q}.out_proj.weight"), &[h, nv * dv])?;
        }
        LayerType::Full => {
            let q = format!("{p}.self_attn");
            pool.keep(format!("{q}.q_proj.weight"), &[2 * nh * hd, h])?;
            pool.keep(format!("{q}.k_proj.weight"), &[nkv * hd, h])?;
            pool.keep(format!("{q}.v_proj.weight"), &[nkv * hd, h])?;
            pool.keep(format!("{q}.o_proj.weight"), &[h, nh * hd])?;
            pool.keep(format!("{q}.q_norm.weight"), &[hd])?;
            pool.keep(format!("{q}.k_norm.weight"), &[hd])?;
        }
    }
    if cfg.is_moe_layer(i) {
        let m = cfg.moe.as_ref().expect("MoE layers have an MoE config");
        let (e, mi) = (m.num_experts, m.moe_intermediate_size);
        pool.keep(format!("{p}.mlp.gate.weight"), &[e, h])?;
        if cfg.family == Family::Qwen35Moe {
            let mut gu = Vec::with_capacity(e * 2 * mi * h);
            let mut down = Vec::with_capacity(e * h * mi);
            for x in 0..e {
                let q = format!("{p}.mlp.experts.{x}");
                gu.extend(pool.take(&format!("{q}.gate_proj.weight"), &[mi, h])?);
                gu.extend(pool.take(&format!("{q}.up_proj.weight"), &[mi, h])?);
                down.extend(pool.take(&format!("{q}.down_proj.weight"), &[h, mi])?);
            }
            pool.put(format!("{p}.mlp.experts.gate_up_proj"), &[e, 2 * mi, h], gu);
            pool.put(format!("{p}.mlp.experts.down_proj"), &[e, h, mi], down);
        } else {
            for x in 0..e {
                pool.mlp(&format!("{p}.mlp.experts.{x}"), h, mi)?;
            }
        }
        let si = m.shared_expert_intermediate_size;
        if si > 0 {
            pool.mlp(&format!("{p}.mlp.shared_expert"), h, si)?;
            pool.keep(format!("{p}.mlp.shared_expert_gate.weight"), &[1, h])?;
        }
    } else {
        let inter = cfg
            .intermediate_size
            .expect("validated: dense layers have a width");
        pool.mlp(&format!("{p}.mlp"), h, inter)?;
    }
    Ok(())
}

/// The checkpoint names and shapes [`hf_tensors`] produces for `model` (no data is read).
pub fn hf_names(cfg: &Config, model: &HybridModel) -> Result<Vec<(String, Vec<usize>)>, SaveError> {
    let shapes = named_params(model)
        .into_iter()
        .map(|(n, p)| (n, p.shape(), Vec::new()))
        .collect();
    Ok(hf_tensors(cfg, shapes)?
        .into_iter()
        .map(|(n, s, _)| (n, s))
        .collect())
}

/// The parameter names and shapes (as [`named_params`] lists them) of a model for `cfg`,
/// without a model: every projection trainable f32.
pub fn param_shapes(cfg: &Config) -> Vec<(String, Vec<usize>)> {
    let (h, v) = (cfg.hidden_size, cfg.vocab_size);
    let (nv, dv) = (cfg.linear_num_value_heads, cfg.linear_value_head_dim);
    let (nh, nkv, hd) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
    );
    let mut out: Vec<(String, Vec<usize>)> = vec![("model.embed_tokens.weight".into(), vec![v, h])];
    let mlp = |out: &mut Vec<(String, Vec<usize>)>, q: String, i: usize| {
        out.push((format!("{q}.gate_proj.weight"), vec![i, h]));
        out.push((format!("{q}.up_proj.weight"), vec![i, h]));
        out.push((format!("{q}.down_proj.weight"), vec![h, i]));
    };
    for (i, ty) in cfg.layer_types.iter().enumerate() {
        let p = format!("model.layers.{i}");
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        match ty {
            LayerType::Linear => {
                let q = format!("{p}.linear_attn");
                out.push((format!("{q}.in_proj_qkv.weight"), vec![cfg.conv_dim(), h]));
                out.push((format!("{q}.in_proj_z.weight"), vec![nv * dv, h]));
                out.push((format!("{q}.in_proj_b.weight"), vec![nv, h]));
                out.push((format!("{q}.in_proj_a.weight"), vec![nv, h]));
                let k = cfg.linear_conv_kernel_dim;
                out.push((format!("{q}.conv1d.weight"), vec![cfg.conv_dim(), k]));
                out.push((format!("{q}.A_log"), vec![nv]));
                out.push((format!("{q}.dt_bias"), vec![nv]));
                out.push((format!("{q}.norm.weight"), vec![dv]));
                out.push((format!("{q}.out_proj.weight"), vec![h, nv * dv]));
            }
            LayerType::Full => {
                let q = format!("{p}.self_attn");
                out.push((format!("{q}.q_proj.weight"), vec![2 * nh * hd, h]));
                out.push((format!("{q}.k_proj.weight"), vec![nkv * hd, h]));
                out.push((format!("{q}.v_proj.weight"), vec![nkv * hd, h]));
                out.push((format!("{q}.o_proj.weight"), vec![h, nh * hd]));
                out.push((format!("{q}.q_norm.weight"), vec![hd]));
                out.push((format!("{q}.k_norm.weight"), vec![hd]));
            }
        }
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        match (&cfg.moe, cfg.is_moe_layer(i)) {
            (Some(m), true) => {
                out.push((format!("{p}.mlp.gate.weight"), vec![m.num_experts, h]));
                for e in 0..m.num_experts {
                    mlp(
                        &mut out,
                        format!("{p}.mlp.experts.{e}"),
                        m.moe_intermediate_size,
                    );
                }
                let si = m.shared_expert_intermediate_size;
                if si > 0 {
                    mlp(&mut out, format!("{p}.mlp.shared_expert"), si);
                    out.push((format!("{p}.mlp.shared_expert_gate.weight"), vec![1, h]));
                }
            }
            _ => {
                let inter = cfg.intermediate_size.unwrap_or_default();
                mlp(&mut out, format!("{p}.mlp"), inter);
            }
        }
    }
    out.push(("model.norm.weight".into(), vec![h]));
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".into(), vec![v, h]));
    }
    out
}

/// The checkpoint names and shapes of a model for `cfg` in Hugging Face layout (no model, no
/// data).
pub fn checkpoint_shapes(cfg: &Config) -> Result<Vec<(String, Vec<usize>)>, SaveError> {
    let shapes = param_shapes(cfg)
        .into_iter()
        .map(|(n, s)| (n, s, Vec::new()))
        .collect();
    Ok(hf_tensors(cfg, shapes)?
        .into_iter()
        .map(|(n, s, _)| (n, s))
        .collect())
}

/// Serialises host tensors as an F32 safetensors file (metadata `{"format": "pt"}` only, so
/// the bytes are deterministic).
pub fn safetensors_bytes(
    tensors: &[NamedHostTensor],
    metadata: Option<(&str, String)>,
) -> Result<Vec<u8>, SaveError> {
    safetensors_bytes_as(tensors, metadata, &|_| FileDtype::F32)
}

/// [`safetensors_bytes`] with each tensor stored as `dtype(name)` (F32, BF16 or F16); the
/// tensors in the order the `safetensors` crate writes (descending dtype alignment, then
/// name), so the bytes equal its `serialize`.
pub fn safetensors_bytes_as(
    tensors: &[NamedHostTensor],
    metadata: Option<(&str, String)>,
    dtype: &dyn Fn(&str) -> FileDtype,
) -> Result<Vec<u8>, SaveError> {
    let mut order: Vec<(&NamedHostTensor, FileDtype)> =
        tensors.iter().map(|t| (t, dtype(&t.0))).collect();
    order.sort_by(|(a, da), (b, db)| {
        db.safetensors()
            .cmp(&da.safetensors())
            .then_with(|| a.0.cmp(&b.0))
    });
    let entries = order
        .iter()
        .map(|((n, s, _), d)| (n.clone(), s.clone(), *d))
        .collect();
    let mut out = Vec::new();
    let mut w = TensorWriter::start(
        &mut out,
        entries,
        metadata.unwrap_or(("format", "pt".to_string())),
    )?;
    for ((name, _, values), _) in &order {
        w.tensor(name, values)?;
    }
    w.finish()?;
    Ok(out)
}

/// `model.safetensors` bytes of `model` in Hugging Face layout for `cfg`'s family.
pub async fn model_safetensors(cfg: &Config, model: &HybridModel) -> Result<Vec<u8>, SaveError> {
    model_safetensors_as(cfg, model, &|_| FileDtype::F32).await
}

/// [`model_safetensors`] with each checkpoint tensor stored as `dtype(name)`.
pub async fn model_safetensors_as(
    cfg: &Config,
    model: &HybridModel,
    dtype: &dyn Fn(&str) -> FileDtype,
) -> Result<Vec<u8>, SaveError> {
    let mut out = Vec::new();
    write_model_safetensors(cfg, model, dtype, &mut out).await?;
    Ok(out)
}

/// Writes `model.safetensors` of `model` (Hugging Face layout for `cfg`'s family, each
/// tensor as `dtype(name)`) to `w`, one part at a time: the parameters of one layer (or the
/// embedding, or the head) are read from the device, converted and written before the next
/// are read, so host memory holds one layer, not the model. A non-finite value stops the
/// write with [`SaveError::NonFinite`] (the caller discards the partial file).
pub async fn write_model_safetensors(
    cfg: &Config,
    model: &HybridModel,
    dtype: &dyn Fn(&str) -> FileDtype,
    w: &mut dyn Write,
) -> Result<(), SaveError> {
    if model.linears().any(|l| l.frozen.is_some()) {
        return Err(SaveError::Frozen);
    }
    if model.adapter.is_some() {
        return Err(SaveError::Adapters);
    }
    // Every name, shape and the conversion checked before any data is read.
    let entries = hf_names(cfg, model)?
        .into_iter()
        .map(|(n, s)| {
            let d = dtype(&n);
            (n, s, d)
        })
        .collect();
    let mut file = TensorWriter::start(w, entries, ("format", "pt".to_string()))?;
    let params = named_params(model);
    // Untied exactly when `hf_names` (through `hf_tensors`) saw a head parameter.
    let untied = params.iter().any(|(n, _)| n == "lm_head.weight");
    for part in Part::all(cfg, untied) {
        let mut pool = Pool {
            map: HashMap::new(),
            out: Vec::new(),
        };
        for (name, p) in params.iter().filter(|(n, _)| Part::of(n) == Some(part)) {
            let (name, shape, values) = read_param(name, p).await?;
            pool.map.insert(name, (shape, values));
        }
        convert(cfg, part, &mut pool)?;
        for (name, _, values) in pool.out {
            file.tensor(&name, &values)?;
        }
    }
    file.finish()
}

/// A saved model: `config.json` text and `model.safetensors` bytes.
#[derive(Debug, Clone)]
pub struct SavedModel {
    pub config_json: String,
    pub safetensors: Vec<u8>,
}

/// `config.json` and `model.safetensors` of `model` (the config's `tie_word_embeddings`
/// follows the model: tied when it has no separate LM head).
pub async fn save_model_async(cfg: &Config, model: &HybridModel) -> Result<SavedModel, SaveError> {
    let mut cfg = cfg.clone();
    cfg.tie_word_embeddings = model.lm_head.is_none();
    Ok(SavedModel {
        config_json: config_json(&cfg),
        safetensors: model_safetensors(&cfg, model).await?,
    })
}

/// Blocking [`save_model_async`] (native only).
#[cfg(not(target_family = "wasm"))]
pub fn save_model(cfg: &Config, model: &HybridModel) -> Result<SavedModel, SaveError> {
    pollster::block_on(save_model_async(cfg, model))
}

/// The `model_type` and `architectures` transformers uses for a family (text-only classes).
fn model_type(family: Family) -> (&'static str, &'static str) {
    match family {
        Family::Qwen3Next => ("qwen3_next", "Qwen3NextForCausalLM"),
        Family::Qwen35 => ("qwen3_5_text", "Qwen3_5ForCausalLM"),
        Family::Qwen35Moe => ("qwen3_5_moe_text", "Qwen3_5MoeForCausalLM"),
    }
}

/// `config.json` text for `cfg` (text-only model classes; pretty-printed with 2-space indent).
/// [`Config::from_json`] reads it back to an equal `Config`, and transformers loads it.
/// Keys `Config` does not keep are written with transformers' defaults
/// (`initializer_range` 0.02...).
pub fn config_json(cfg: &Config) -> String {
    let (mt, arch) = model_type(cfg.family);
    let mut m = Map::new();
    let mut set = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    set("architectures", json!([arch]));
    set("model_type", json!(mt));
    set("dtype", json!("float32"));
    set("vocab_size", json!(cfg.vocab_size));
    set("hidden_size", json!(cfg.hidden_size));
    if let Some(i) = cfg.intermediate_size {
        set("intermediate_size", json!(i));
    }
    set("num_hidden_layers", json!(cfg.num_hidden_layers));
    set("num_attention_heads", json!(cfg.num_attention_heads));
    set("num_key_value_heads", json!(cfg.num_key_value_heads));
    set("head_dim", json!(cfg.head_dim));
    set("hidden_act", json!("silu"));
    set("attention_bias", json!(false));
    set("rms_norm_eps", json!(cfg.rms_norm_eps));
    set("tie_word_embeddings", json!(cfg.tie_word_embeddings));
    set(
        "initializer_range",
        json!(super::init::DEFAULT_INITIALIZER_RANGE),
    );
    if let Some(n) = cfg.max_position_embeddings {
        set("max_position_embeddings", json!(n));
    }
    set("linear_conv_kernel_dim", json!(cfg.linear_conv_kernel_dim));
    set("linear_key_head_dim", json!(cfg.linear_key_head_dim));
    set("linear_value_head_dim", json!(cfg.linear_value_head_dim));
    set("linear_num_key_heads", json!(cfg.linear_num_key_heads));
    set("linear_num_value_heads", json!(cfg.linear_num_value_heads));
    let types: Vec<&str> = cfg
        .layer_types
        .iter()
        .map(|t| match t {
            LayerType::Linear => "linear_attention",
            LayerType::Full => "full_attention",
        })
        .collect();
    set("layer_types", json!(types));
    set(
        "rope_parameters",
        json!({
            "rope_type": "default",
            "rope_theta": cfg.rope_theta,
            "partial_rotary_factor": cfg.partial_rotary_factor,
        }),
    );
    if cfg.family != Family::Qwen3Next {
        set("attn_output_gate", json!(true));
    }
    if let Some(moe) = &cfg.moe {
        set("num_experts", json!(moe.num_experts));
        set("num_experts_per_tok", json!(moe.num_experts_per_tok));
        set("moe_intermediate_size", json!(moe.moe_intermediate_size));
        set(
            "shared_expert_intermediate_size",
            json!(moe.shared_expert_intermediate_size),
        );
        if cfg.family == Family::Qwen3Next {
            set("norm_topk_prob", json!(moe.norm_topk_prob));
        }
    } else if cfg.family == Family::Qwen3Next {
        set("num_experts", json!(0));
    }
    if cfg.family == Family::Qwen3Next {
        set("decoder_sparse_step", json!(cfg.decoder_sparse_step));
        set("mlp_only_layers", json!(cfg.mlp_only_layers));
    }
    match cfg.eos_token_ids.as_slice() {
        [] => {}
        [one] => set("eos_token_id", json!(one)),
        many => set("eos_token_id", json!(many)),
    }
    let mut text = serde_json::to_string_pretty(&Value::Object(m)).expect("JSON values serialise");
    text.push('\n');
    text
}
