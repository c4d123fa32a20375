//! Building the hybrid model from checkpoint tensors (by Hugging Face names), one tensor at a
//! time from the (memory-mapped) file to the device.
//!
//! Projection weights are placed as [`LoadOptions::dtype`] says: by default 16-bit tensors stay
//! 16-bit on the device (frozen, read by the `linear16` kernels) and f32 tensors become
//! trainable f32 parameters. The vocabulary matrix (embedding, untied LM head) is split into
//! row shards that each fit one storage binding; any other tensor larger than a binding is a
//! [`WeightError::TooLarge`] before anything is uploaded. Norms, conv and gate vectors are small
//! and always f32.
//!
//! Handles both projection layouts of the linear-attention layers (Qwen3-Next's grouped
//! `in_proj_qkvz` / `in_proj_ba`, regrouped here into Qwen3.5's flat `in_proj_qkv`,
//! `in_proj_z`, `in_proj_b`, `in_proj_a`), per-expert or fused expert weights, and tied or
//! untied embeddings (`tie_word_embeddings`, as transformers reads it). Every tensor of the
//! checkpoint must be used: one the configuration does not describe is an error.

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

use super::config::{Config, Family, LayerType};
use super::hybrid::{DecoderLayer, Ffn, HybridModel, Mixer};
use super::weights::{Raw, StoredDtype, WeightError, Weights};
use crate::nn::attention::Attention;
use crate::nn::gated_deltanet::GatedDeltaNet;
use crate::nn::mlp::Mlp;
use crate::nn::moe::Moe;
use crate::nn::{Linear, Vocab};
use crate::ops::linear16::{Half, Packed};

/// How projection weights are held on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    /// As stored: BF16/F16 stay 16-bit (frozen), F32 loads as trainable f32.
    #[default]
    Auto,
    /// Trainable f32 (16-bit tensors are widened; exact).
    F32,
    /// Frozen bf16 (f32 tensors are rounded to nearest even).
    Bf16,
    /// Frozen f16 (values beyond f16's range become infinite: an error at load).
    F16,
}

impl std::str::FromStr for WeightDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "f32" | "float32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "f16" | "float16" | "half" => Ok(Self::F16),
            other => Err(format!(
                "unknown dtype `{other}`: expected auto, f32, bf16 or f16"
            )),
        }
    }
}

/// Options of [`build_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    pub dtype: WeightDtype,
    /// Largest tensor one binding may hold, in bytes; `None` = the device's limit. A smaller
    /// value than the device's is used as given (tests force tiny limits with it).
    pub max_binding_bytes: Option<u64>,
}

/// The device format chosen for one projection weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    F32,
    Half(Half),
}

/// A `[rows, cols]` host matrix in its device format.
enum HostMat {
    F32(Vec<f32>),
    Bits(Vec<u16>),
}

impl HostMat {
    /// Rows `[start, start + n)` of a matrix `cols` wide.
    fn rows(&self, cols: usize, start: usize, n: usize) -> HostMat {
        let r = start * cols..(start + n) * cols;
        match self {
            Self::F32(v) => Self::F32(v[r].to_vec()),
            Self::Bits(v) => Self::Bits(v[r].to_vec()),
        }
    }

    fn extend(&mut self, other: HostMat) {
        match (self, other) {
            (Self::F32(a), Self::F32(b)) => a.extend(b),
            (Self::Bits(a), Self::Bits(b)) => a.extend(b),
            _ => unreachable!("one loader stores one format per tensor"),
        }
    }
}

struct Loader<'a> {
    w: &'a Weights,
    device: &'a Device,
    opts: LoadOptions,
    /// Bytes one binding holds.
    limit: u64,
}

fn param<const D: usize>(data: Vec<f32>, shape: [usize; D], device: &Device) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), device))
}

impl Loader<'_> {
    /// The device format of a projection stored as `stored`.
    fn store(&self, stored: StoredDtype) -> Store {
        if !crate::device::supports_wgsl(self.device) {
            return Store::F32;
        }
        match (self.opts.dtype, stored) {
            (WeightDtype::F32, _) | (WeightDtype::Auto, StoredDtype::F32) => Store::F32,
            (WeightDtype::Bf16, _) | (WeightDtype::Auto, StoredDtype::Bf16) => {
                Store::Half(Half::Bf16)
            }
            (WeightDtype::F16, _) | (WeightDtype::Auto, StoredDtype::F16) => Store::Half(Half::F16),
        }
    }

    /// Elements `[start, end)` of `raw` in the format `store`.
    fn convert(
        &self,
        name: &str,
        raw: &Raw,
        store: Store,
        start: usize,
        end: usize,
    ) -> Result<HostMat, WeightError> {
        let half = match store {
            Store::F32 => return Ok(HostMat::F32(raw.to_f32_range(start, end))),
            Store::Half(h) => h,
        };
        let same = matches!(
            (half, raw.dtype),
            (Half::Bf16, StoredDtype::Bf16) | (Half::F16, StoredDtype::F16)
        );
        if same {
            return Ok(HostMat::Bits(raw.bits_range(start, end)));
        }
        let values = raw.to_f32_range(start, end);
        let bits: Vec<u16> = values.iter().map(|&x| half.from_f32(x)).collect();
        let overflow = values
            .iter()
            .zip(&bits)
            .any(|(x, &b)| x.is_finite() && !half.to_f32(b).is_finite());
        if overflow {
            return Err(WeightError::Range {
                name: name.to_string(),
                dtype: half.name(),
            });
        }
        Ok(HostMat::Bits(bits))
    }

    /// Fails when `bytes` exceed one binding.
    fn check_fits(&self, name: &str, bytes: usize) -> Result<(), WeightError> {
        if bytes as u64 > self.limit {
            return Err(WeightError::TooLarge {
                name: name.to_string(),
                bytes: bytes as u64,
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// Places a `[rows, cols]` host matrix on the device.
    fn upload(
        &self,
        name: &str,
        mat: HostMat,
        store: Store,
        [rows, cols]: [usize; 2],
    ) -> Result<Linear, WeightError> {
        match (mat, store) {
            (HostMat::F32(v), _) => {
                self.check_fits(name, 4 * rows * cols)?;
                Ok(Linear::f32(param(v, [rows, cols], self.device)))
            }
            (HostMat::Bits(b), Store::Half(half)) => {
                self.check_fits(name, 2 * rows * cols)?;
                Packed::from_bits(&b, rows, cols, half, self.device)
                    .map(Linear::frozen)
                    .map_err(|e| WeightError::Place {
                        name: name.to_string(),
                        msg: e.to_string(),
                    })
            }
            (HostMat::Bits(_), Store::F32) => unreachable!("f32 storage converts to f32"),
        }
    }

    /// The whole tensor `name` of `shape` in its device format.
    fn host(&self, name: &str, shape: &[usize]) -> Result<(HostMat, Store), WeightError> {
        let raw = self.w.raw(name, shape)?;
        let store = self.store(raw.dtype);
        let n = shape.iter().product();
        Ok((self.convert(name, &raw, store, 0, n)?, store))
    }

    /// A projection weight `[r, c]`.
    fn lin(&self, name: &str, r: usize, c: usize) -> Result<Linear, WeightError> {
        let raw = self.w.raw(name, &[r, c])?;
        let store = self.store(raw.dtype);
        self.check_fits(name, r * c * store_size(store))?;
        let mat = self.convert(name, &raw, store, 0, r * c)?;
        self.upload(name, mat, store, [r, c])
    }

    /// The `[v, h]` vocabulary matrix `name`, in row shards that each fit one binding.
    fn vocab(&self, name: &str, v: usize, h: usize) -> Result<Vocab, WeightError> {
        let raw = self.w.raw(name, &[v, h])?;
        let store = self.store(raw.dtype);
        let row_bytes = h * store_size(store);
        self.check_fits(name, row_bytes)?;
        let per_shard = ((self.limit / row_bytes as u64) as usize).clamp(1, v.max(1));
        let mut shards = Vec::with_capacity(v.div_ceil(per_shard));
        let mut row = 0;
        while row < v {
            let n = per_shard.min(v - row);
            let mat = self.convert(name, &raw, store, row * h, (row + n) * h)?;
            shards.push(self.upload(name, mat, store, [n, h])?);
            row += n;
        }
        Ok(Vocab { shards })
    }

    fn p1(&self, name: &str, n: usize) -> Result<Param<Tensor<1>>, WeightError> {
        Ok(param(self.w.raw(name, &[n])?.to_f32(), [n], self.device))
    }

    fn mlp(&self, prefix: &str, h: usize, i: usize) -> Result<Mlp, WeightError> {
        Ok(Mlp {
            gate_proj: self.lin(&format!("{prefix}.gate_proj.weight"), i, h)?,
            up_proj: self.lin(&format!("{prefix}.up_proj.weight"), i, h)?,
            down_proj: self.lin(&format!("{prefix}.down_proj.weight"), h, i)?,
        })
    }

    fn gated_deltanet(&self, cfg: &Config, p: &str) -> Result<GatedDeltaNet, WeightError> {
        let h = cfg.hidden_size;
        let (nk, nv) = (cfg.linear_num_key_heads, cfg.linear_num_value_heads);
        let (dk, dv) = (cfg.linear_key_head_dim, cfg.linear_value_head_dim);
        let r = nv / nk;
        let cdim = cfg.conv_dim();
        let (qkv, z, b, a) = if cfg.family == Family::Qwen3Next {
            // Grouped per key head j: [q_j | k_j | v (r heads) | z (r heads)] and [b (r) | a (r)].
            let w = 2 * dk + 2 * r * dv;
            let qkvz_name = format!("{p}.in_proj_qkvz.weight");
            let ba_name = format!("{p}.in_proj_ba.weight");
            let (qkvz, s1) = self.host(&qkvz_name, &[nk * w, h])?;
            let (ba, s2) = self.host(&ba_name, &[nk * 2 * r, h])?;
            let gather = |t: &HostMat, width: usize, off: usize, n: usize| -> HostMat {
                let mut out = t.rows(h, off, n);
                for j in 1..nk {
                    out.extend(t.rows(h, j * width + off, n));
                }
                out
            };
            let mut qkv = gather(&qkvz, w, 0, dk);
            qkv.extend(gather(&qkvz, w, dk, dk));
            qkv.extend(gather(&qkvz, w, 2 * dk, r * dv));
            let z = gather(&qkvz, w, 2 * dk + r * dv, r * dv);
            (
                self.upload(&qkvz_name, qkv, s1, [cdim, h])?,
                self.upload(&qkvz_name, z, s1, [nv * dv, h])?,
                self.upload(&ba_name, gather(&ba, 2 * r, 0, r), s2, [nv, h])?,
                self.upload(&ba_name, gather(&ba, 2 * r, r, r), s2, [nv, h])?,
            )
        } else {
            (
                self.lin(&format!("{p}.in_proj_qkv.weight"), cdim, h)?,
                self.lin(&format!("{p}.in_proj_z.weight"), nv * dv, h)?,
                self.lin(&format!("{p}.in_proj_b.weight"), nv, h)?,
                self.lin(&format!("{p}.in_proj_a.weight"), nv, h)?,
            )
        };
        let k = cfg.linear_conv_kernel_dim;
        let conv = self.w.raw(&format!("{p}.conv1d.weight"), &[cdim, 1, k])?;
        let mut layer = GatedDeltaNet {
            in_proj_qkv: qkv,
            in_proj_z: z,
            in_proj_b: b,
            in_proj_a: a,
            conv1d: param(conv.to_f32(), [cdim, k], self.device),
            a_log: self.p1(&format!("{p}.A_log"), nv)?,
            dt_bias: self.p1(&format!("{p}.dt_bias"), nv)?,
            norm: self.p1(&format!("{p}.norm.weight"), dv)?,
            out_proj: self.lin(&format!("{p}.out_proj.weight"), h, nv * dv)?,
            nk,
            nv,
            dk,
            dv,
            eps: cfg.rms_norm_eps,
            decode: None,
        };
        layer.prepare_decode();
        Ok(layer)
    }

    fn attention(&self, cfg: &Config, p: &str) -> Result<Attention, WeightError> {
        let (h, nh, nkv, hd) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        Ok(Attention {
            q_proj: self.lin(&format!("{p}.q_proj.weight"), 2 * nh * hd, h)?,
            k_proj: self.lin(&format!("{p}.k_proj.weight"), nkv * hd, h)?,
            v_proj: self.lin(&format!("{p}.v_proj.weight"), nkv * hd, h)?,
            o_proj: self.lin(&format!("{p}.o_proj.weight"), h, nh * hd)?,
            q_norm: self.p1(&format!("{p}.q_norm.weight"), hd)?,
            k_norm: self.p1(&format!("{p}.k_norm.weight"), hd)?,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
            rotary_dim: cfg.rotary_dim(),
            rope_theta: cfg.rope_theta,
            eps: cfg.rms_norm_eps,
        })
    }

    /// Rows `[row, row + n)` of the `[rows, cols]`-shaped tensor `name` as a projection.
    fn lin_rows(
        &self,
        name: &str,
        raw: &Raw,
        [row, n, cols]: [usize; 3],
    ) -> Result<Linear, WeightError> {
        let store = self.store(raw.dtype);
        let mat = self.convert(name, raw, store, row * cols, (row + n) * cols)?;
        self.upload(name, mat, store, [n, cols])
    }

    fn moe(&self, cfg: &Config, p: &str) -> Result<Moe, WeightError> {
        let m = cfg.moe.as_ref().expect("MoE layers have an MoE config");
        let (h, i, e) = (cfg.hidden_size, m.moe_intermediate_size, m.num_experts);
        let fused = format!("{p}.experts.gate_up_proj");
        let experts = if self.w.contains(&fused) {
            // Fused layout: gate_up [E, 2I, H] (gate rows first), down [E, H, I]; each expert's
            // slice is converted and uploaded on its own.
            let down_name = format!("{p}.experts.down_proj");
            let gu = self.w.raw(&fused, &[e, 2 * i, h])?;
            let down = self.w.raw(&down_name, &[e, h, i])?;
            (0..e)
                .map(|x| {
                    Ok(Mlp {
                        gate_proj: self.lin_rows(&fused, &gu, [x * 2 * i, i, h])?,
                        up_proj: self.lin_rows(&fused, &gu, [x * 2 * i + i, i, h])?,
                        down_proj: self.lin_rows(&down_name, &down, [x * h, h, i])?,
                    })
                })
                .collect::<Result<Vec<_>, WeightError>>()?
        } else {
            (0..e)
                .map(|x| self.mlp(&format!("{p}.experts.{x}"), h, i))
                .collect::<Result<Vec<_>, _>>()?
        };
        let si = m.shared_expert_intermediate_size;
        let (shared_expert, shared_expert_gate) = if si > 0 {
            (
                Some(self.mlp(&format!("{p}.shared_expert"), h, si)?),
                Some(self.lin(&format!("{p}.shared_expert_gate.weight"), 1, h)?),
            )
        } else {
            (None, None)
        };
        Ok(Moe {
            gate: self.lin(&format!("{p}.gate.weight"), e, h)?,
            experts,
            shared_expert,
            shared_expert_gate,
            top_k: m.num_experts_per_tok,
            norm_topk_prob: m.norm_topk_prob,
        })
    }
}

fn store_size(store: Store) -> usize {
    match store {
        Store::F32 => 4,
        Store::Half(_) => 2,
    }
}

/// Builds the model described by `cfg` from `weights` on `device` with every projection a
/// trainable f32 parameter (the training path; [`build_with`] keeps 16-bit weights 16-bit).
pub fn build(cfg: &Config, weights: &Weights, device: &Device) -> Result<HybridModel, WeightError> {
    let opts = LoadOptions {
        dtype: WeightDtype::F32,
        ..LoadOptions::default()
    };
    build_with(cfg, weights, device, opts, &mut |_, _| {})
}

/// [`build`] with options; `progress(done, total)` is called as parts are placed (the
/// embeddings, each layer, the head: `total` = layers + 2).
pub fn build_with(
    cfg: &Config,
    weights: &Weights,
    device: &Device,
    opts: LoadOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<HybridModel, WeightError> {
    let device_limit = crate::device::max_binding_bytes(device).unwrap_or(u64::MAX);
    let limit = opts
        .max_binding_bytes
        .map_or(device_limit, |l| l.min(device_limit));
    let l = Loader {
        w: weights,
        device,
        opts,
        limit,
    };
    let (h, v) = (cfg.hidden_size, cfg.vocab_size);
    let total = cfg.num_hidden_layers as u64 + 2;
    let embed_tokens = l.vocab("model.embed_tokens.weight", v, h)?;
    progress(1, total);
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for (i, ty) in cfg.layer_types.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let mixer = match ty {
            LayerType::Linear => Mixer::Linear(l.gated_deltanet(cfg, &format!("{p}.linear_attn"))?),
            LayerType::Full => Mixer::Full(l.attention(cfg, &format!("{p}.self_attn"))?),
        };
        let ffn = if cfg.is_moe_layer(i) {
            Ffn::Moe(l.moe(cfg, &format!("{p}.mlp"))?)
        } else {
            let inter = cfg
                .intermediate_size
                .expect("validated: dense layers have a width");
            Ffn::Dense(l.mlp(&format!("{p}.mlp"), h, inter)?)
        };
        layers.push(DecoderLayer {
            input_layernorm: l.p1(&format!("{p}.input_layernorm.weight"), h)?,
            post_attention_layernorm: l.p1(&format!("{p}.post_attention_layernorm.weight"), h)?,
            mixer,
            ffn,
        });
        progress(i as u64 + 2, total);
    }
    // As transformers: tied means the embedding is the head (a stored `lm_head.weight` is
    // ignored); untied needs the stored head.
    let lm_head = if cfg.tie_word_embeddings {
        if weights.contains("lm_head.weight") {
            tracing::info!("tie_word_embeddings is true: the stored lm_head.weight is ignored");
            weights.skip("lm_head.weight");
        }
        None
    } else {
        Some(l.vocab("lm_head.weight", v, h)?)
    };
    let model = HybridModel {
        embed_tokens,
        layers,
        norm: l.p1("model.norm.weight", h)?,
        lm_head,
        eps: cfg.rms_norm_eps,
        adapter: None,
        recompute_layers: false,
    };
    weights.check_all_used()?;
    progress(total, total);
    Ok(model)
}
