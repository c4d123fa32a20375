//! A fresh model as transformers initialises it (`Qwen3NextPreTrainedModel._init_weights` /
//! `Qwen3_5PreTrainedModel._init_weights` on top of `PreTrainedModel._init_weights`), and a
//! small-config builder for training tiny models from scratch.
//!
//! ```text
//! embeddings, every linear weight (incl. router, shared-expert gate, lm_head), conv1d
//!                                   ~ N(0, initializer_range)
//! zero-centred RMSNorms (input/post-attention, final, q_norm, k_norm; used as 1 + w) = 0
//! gated RMSNorm of the linear-attention output (used as w)                          = 1
//! A_log = ln(U(0.01, 16))            dt_bias = 1
//! ```
//! Values are drawn on the host from one `StdRng` stream seeded with `seed`, parameter by
//! parameter in [`super::save::named_params`] order (row-major within a tensor), then
//! uploaded: the same seed gives bit-identical weights on every backend. Normals use the
//! Box–Muller transform in f64. transformers zeroes the `pad_token_id` row of the
//! embeddings; `Config` does not keep a pad id, so no row is zeroed here.

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::config::{Config, ConfigError, Family, LayerType};
use super::hybrid::{DecoderLayer, Ffn, HybridModel, Mixer};
use crate::nn::attention::Attention;
use crate::nn::gated_deltanet::GatedDeltaNet;
use crate::nn::mlp::Mlp;
use crate::nn::moe::Moe;
use crate::nn::{Linear, Vocab};

/// transformers' default `initializer_range` for these models.
pub const DEFAULT_INITIALIZER_RANGE: f64 = 0.02;

/// Host-side sampler of initial values.
struct Init<'a> {
    rng: StdRng,
    std: f64,
    device: &'a Device,
}

impl Init<'_> {
    /// One N(0, 1) draw (Box–Muller, f64).
    fn std_normal(&mut self) -> f64 {
        // u1 in (0, 1] so ln(u1) is finite.
        let u1 = 1.0 - self.rng.random::<f64>();
        let u2 = self.rng.random::<f64>();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn upload<const D: usize>(&self, data: Vec<f32>, shape: [usize; D]) -> Param<Tensor<D>> {
        Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), self.device))
    }

    /// `N(0, std)` trainable projection.
    fn lin(&mut self, r: usize, c: usize) -> Linear {
        Linear::f32(self.normal(r, c))
    }

    /// `N(0, std)` matrix.
    fn normal(&mut self, r: usize, c: usize) -> Param<Tensor<2>> {
        let data = (0..r * c)
            .map(|_| (self.std_normal() * self.std) as f32)
            .collect();
        self.upload(data, [r, c])
    }

    fn constant(&self, n: usize, value: f32) -> Param<Tensor<1>> {
        self.upload(vec![value; n], [n])
    }

    fn mlp(&mut self, h: usize, i: usize) -> Mlp {
        Mlp {
            gate_proj: self.lin(i, h),
            up_proj: self.lin(i, h),
            down_proj: self.lin(h, i),
        }
    }

    fn gated_deltanet(&mut self, cfg: &Config) -> GatedDeltaNet {
        let h = cfg.hidden_size;
        let (nk, nv) = (cfg.linear_num_key_heads, cfg.linear_num_value_heads);
        let (dk, dv) = (cfg.linear_key_head_dim, cfg.linear_value_head_dim);
        let in_proj_qkv = self.lin(cfg.conv_dim(), h);
        let in_proj_z = self.lin(nv * dv, h);
        let in_proj_b = self.lin(nv, h);
        let in_proj_a = self.lin(nv, h);
        let conv1d = self.normal(cfg.conv_dim(), cfg.linear_conv_kernel_dim);
        let a_log: Vec<f32> = (0..nv)
            .map(|_| (0.01 + (16.0 - 0.01) * self.rng.random::<f64>()).ln() as f32)
            .collect();
        let a_log = self.upload(a_log, [nv]);
        GatedDeltaNet {
            in_proj_qkv,
            in_proj_z,
            in_proj_b,
            in_proj_a,
            conv1d,
            a_log,
            dt_bias: self.constant(nv, 1.0),
            norm: self.constant(dv, 1.0),
            out_proj: self.lin(h, nv * dv),
            nk,
            nv,
            dk,
            dv,
            eps: cfg.rms_norm_eps,
            decode: None,
        }
    }

    fn attention(&mut self, cfg: &Config) -> Attention {
        let (h, nh, nkv, hd) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        Attention {
            q_proj: self.lin(2 * nh * hd, h),
            k_proj: self.lin(nkv * hd, h),
            v_proj: self.lin(nkv * hd, h),
            o_proj: self.lin(h, nh * hd),
            q_norm: self.constant(hd, 0.0),
            k_norm: self.constant(hd, 0.0),
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
            rotary_dim: cfg.rotary_dim(),
            rope_theta: cfg.rope_theta,
            eps: cfg.rms_norm_eps,
        }
    }

    fn moe(&mut self, cfg: &Config) -> Moe {
        let m = cfg.moe.as_ref().expect("MoE layers have an MoE config");
        let h = cfg.hidden_size;
        let gate = self.lin(m.num_experts, h);
        let experts = (0..m.num_experts)
            .map(|_| self.mlp(h, m.moe_intermediate_size))
            .collect();
        let si = m.shared_expert_intermediate_size;
        let (shared_expert, shared_expert_gate) = if si > 0 {
            (Some(self.mlp(h, si)), Some(self.lin(1, h)))
        } else {
            (None, None)
        };
        Moe {
            gate,
            experts,
            shared_expert,
            shared_expert_gate,
            top_k: m.num_experts_per_tok,
            norm_topk_prob: m.norm_topk_prob,
        }
    }
}

/// A freshly initialised model for `cfg` on `device` (see the module docs), with
/// `initializer_range` 0.02. On an autodiff device the parameters require gradients.
pub fn init_model(cfg: &Config, seed: u64, device: &Device) -> HybridModel {
    init_model_with_std(cfg, seed, DEFAULT_INITIALIZER_RANGE, device)
}

/// [`init_model`] with an explicit `initializer_range` (standard deviation of the normals).
pub fn init_model_with_std(cfg: &Config, seed: u64, std: f64, device: &Device) -> HybridModel {
    let mut init = Init {
        rng: StdRng::seed_from_u64(seed),
        std,
        device,
    };
    let (h, v) = (cfg.hidden_size, cfg.vocab_size);
    // Draw order = named_params order, so a parameter's values depend only on those before it.
    let embed_tokens = Vocab {
        shards: vec![init.lin(v, h)],
    };
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for (i, ty) in cfg.layer_types.iter().enumerate() {
        let input_layernorm = init.constant(h, 0.0);
        let mixer = match ty {
            LayerType::Linear => Mixer::Linear(init.gated_deltanet(cfg)),
            LayerType::Full => Mixer::Full(init.attention(cfg)),
        };
        let post_attention_layernorm = init.constant(h, 0.0);
        let ffn = if cfg.is_moe_layer(i) {
            Ffn::Moe(init.moe(cfg))
        } else {
            let inter = cfg
                .intermediate_size
                .expect("validated: dense layers have a width");
            Ffn::Dense(init.mlp(h, inter))
        };
        layers.push(DecoderLayer {
            input_layernorm,
            post_attention_layernorm,
            mixer,
            ffn,
        });
    }
    let norm = init.constant(h, 0.0);
    let lm_head = (!cfg.tie_word_embeddings).then(|| Vocab {
        shards: vec![init.lin(v, h)],
    });
    HybridModel {
        embed_tokens,
        layers,
        norm,
        lm_head,
        eps: cfg.rms_norm_eps,
        adapter: None,
        recompute_layers: false,
    }
}

/// Shape of a small dense Qwen3.5 text model (`qwen3_5_text`) for training from scratch.
///
/// Attention heads: `head_dim` 16 (RoPE on the first 4 channels), `max(1, H / 32)` query heads
/// and one KV head. Gated DeltaNet: key/value head dim 16, `max(1, H / 64)` key heads and
/// twice as many value heads. Tied embeddings, conv kernel 4, `rms_norm_eps` 1e-6,
/// `rope_theta` 1e7. Adjust the returned `Config`'s public fields for anything else.
#[derive(Debug, Clone, PartialEq)]
pub struct TinySpec {
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Dense MLP width.
    pub intermediate_size: usize,
    /// Mixer of every layer (`layer_types`, so its length is the number of layers).
    pub layer_types: Vec<LayerType>,
}

impl TinySpec {
    /// `layers` layers with full attention every `interval`-th layer (as Qwen3.5's
    /// `full_attention_interval`), MLP width `2 · hidden`.
    pub fn new(vocab_size: usize, hidden_size: usize, layers: usize, interval: usize) -> Self {
        let interval = interval.max(1);
        Self {
            vocab_size,
            hidden_size,
            intermediate_size: 2 * hidden_size,
            layer_types: LayerType::interleaved(layers, interval),
        }
    }
}

impl Config {
    /// A small `qwen3_5_text` configuration (see [`TinySpec`]), validated like a
    /// `config.json` (it is serialised and parsed back).
    pub fn tiny_qwen3_5(spec: &TinySpec) -> Result<Config, ConfigError> {
        let h = spec.hidden_size;
        let nk = (h / 64).max(1);
        let cfg = Config {
            family: Family::Qwen35,
            vocab_size: spec.vocab_size,
            hidden_size: h,
            intermediate_size: Some(spec.intermediate_size),
            num_hidden_layers: spec.layer_types.len(),
            num_attention_heads: (h / 32).max(1),
            num_key_value_heads: 1,
            head_dim: 16,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            linear_conv_kernel_dim: 4,
            linear_key_head_dim: 16,
            linear_value_head_dim: 16,
            linear_num_key_heads: nk,
            linear_num_value_heads: 2 * nk,
            layer_types: spec.layer_types.clone(),
            rope_theta: 1e7,
            partial_rotary_factor: 0.25,
            moe: None,
            mlp_only_layers: vec![],
            decoder_sparse_step: 1,
            eos_token_ids: vec![],
            max_position_embeddings: None,
        };
        Config::from_json(&super::save::config_json(&cfg))
    }

    /// Number of parameters of a model with this configuration (tied embeddings counted once).
    pub fn num_parameters(&self) -> usize {
        let (h, v) = (self.hidden_size, self.vocab_size);
        let (nv, dv) = (self.linear_num_value_heads, self.linear_value_head_dim);
        let (nh, nkv, hd) = (
            self.num_attention_heads,
            self.num_key_value_heads,
            self.head_dim,
        );
        let mlp = |i: usize| 3 * h * i;
        let mut n = v * h + h + if self.tie_word_embeddings { 0 } else { v * h };
        for (i, ty) in self.layer_types.iter().enumerate() {
            n += 2 * h;
            n += match ty {
                LayerType::Linear => {
                    self.conv_dim() * (h + self.linear_conv_kernel_dim)
                        + nv * dv * h
                        + 2 * nv * h
                        + 2 * nv
                        + dv
                        + h * nv * dv
                }
                LayerType::Full => 2 * nh * hd * h + 2 * nkv * hd * h + h * nh * hd + 2 * hd,
            };
            n += if self.is_moe_layer(i) {
                let m = self.moe.as_ref().expect("MoE layers have an MoE config");
                let si = m.shared_expert_intermediate_size;
                m.num_experts * (h + mlp(m.moe_intermediate_size))
                    + if si > 0 { mlp(si) + h } else { 0 }
            } else {
                mlp(self.intermediate_size.unwrap_or(0))
            };
        }
        n
    }
}
