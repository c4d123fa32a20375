//! Building the hybrid model from checkpoint tensors (by Hugging Face names).
//!
//! Handles both projection layouts of the linear-attention layers (Qwen3-Next's grouped
//! `in_proj_qkvz` / `in_proj_ba`, regrouped here into Qwen3.5's flat `in_proj_qkv`,
//! `in_proj_z`, `in_proj_b`, `in_proj_a`), per-expert or fused expert weights, and tied or
//! untied embeddings (tied when `lm_head.weight` is absent).

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

use super::config::{Config, Family, LayerType};
use super::hybrid::{DecoderLayer, Ffn, HybridModel, Mixer};
use super::weights::{HostTensor, WeightError, Weights};
use crate::nn::attention::Attention;
use crate::nn::gated_deltanet::GatedDeltaNet;
use crate::nn::mlp::Mlp;
use crate::nn::moe::Moe;

struct Loader<'a> {
    w: &'a Weights,
    device: &'a Device,
}

fn param<const D: usize>(t: HostTensor, device: &Device) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(t.data, t.shape), device))
}

/// Rows `[start, start + n)` of a row-major host tensor seen as `[.., last dim]`.
fn rows(t: &HostTensor, start: usize, n: usize) -> &[f32] {
    let width = t.shape[t.shape.len() - 1];
    &t.data[start * width..(start + n) * width]
}

impl Loader<'_> {
    fn host(&self, name: &str, shape: &[usize]) -> Result<HostTensor, WeightError> {
        self.w.get(name, shape)
    }

    fn p1(&self, name: &str, n: usize) -> Result<Param<Tensor<1>>, WeightError> {
        Ok(param(self.host(name, &[n])?, self.device))
    }

    fn p2(&self, name: &str, r: usize, c: usize) -> Result<Param<Tensor<2>>, WeightError> {
        Ok(param(self.host(name, &[r, c])?, self.device))
    }

    fn param_rows(&self, data: Vec<f32>, r: usize, c: usize) -> Param<Tensor<2>> {
        param(
            HostTensor {
                shape: vec![r, c],
                data,
            },
            self.device,
        )
    }

    fn mlp(&self, prefix: &str, h: usize, i: usize) -> Result<Mlp, WeightError> {
        Ok(Mlp {
            gate_proj: self.p2(&format!("{prefix}.gate_proj.weight"), i, h)?,
            up_proj: self.p2(&format!("{prefix}.up_proj.weight"), i, h)?,
            down_proj: self.p2(&format!("{prefix}.down_proj.weight"), h, i)?,
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
            let qkvz = self.host(&format!("{p}.in_proj_qkvz.weight"), &[nk * w, h])?;
            let ba = self.host(&format!("{p}.in_proj_ba.weight"), &[nk * 2 * r, h])?;
            let gather = |t: &HostTensor, width: usize, off: usize, n: usize| -> Vec<f32> {
                (0..nk)
                    .flat_map(|j| rows(t, j * width + off, n).to_vec())
                    .collect()
            };
            let mut qkv = gather(&qkvz, w, 0, dk);
            qkv.extend(gather(&qkvz, w, dk, dk));
            qkv.extend(gather(&qkvz, w, 2 * dk, r * dv));
            (
                self.param_rows(qkv, cdim, h),
                self.param_rows(gather(&qkvz, w, 2 * dk + r * dv, r * dv), nv * dv, h),
                self.param_rows(gather(&ba, 2 * r, 0, r), nv, h),
                self.param_rows(gather(&ba, 2 * r, r, r), nv, h),
            )
        } else {
            (
                self.p2(&format!("{p}.in_proj_qkv.weight"), cdim, h)?,
                self.p2(&format!("{p}.in_proj_z.weight"), nv * dv, h)?,
                self.p2(&format!("{p}.in_proj_b.weight"), nv, h)?,
                self.p2(&format!("{p}.in_proj_a.weight"), nv, h)?,
            )
        };
        let k = cfg.linear_conv_kernel_dim;
        let conv = self.host(&format!("{p}.conv1d.weight"), &[cdim, 1, k])?;
        Ok(GatedDeltaNet {
            in_proj_qkv: qkv,
            in_proj_z: z,
            in_proj_b: b,
            in_proj_a: a,
            conv1d: self.param_rows(conv.data, cdim, k),
            a_log: self.p1(&format!("{p}.A_log"), nv)?,
            dt_bias: self.p1(&format!("{p}.dt_bias"), nv)?,
            norm: self.p1(&format!("{p}.norm.weight"), dv)?,
            out_proj: self.p2(&format!("{p}.out_proj.weight"), h, nv * dv)?,
            nk,
            nv,
            dk,
            dv,
            eps: cfg.rms_norm_eps,
        })
    }

    fn attention(&self, cfg: &Config, p: &str) -> Result<Attention, WeightError> {
        let (h, nh, nkv, hd) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        Ok(Attention {
            q_proj: self.p2(&format!("{p}.q_proj.weight"), 2 * nh * hd, h)?,
            k_proj: self.p2(&format!("{p}.k_proj.weight"), nkv * hd, h)?,
            v_proj: self.p2(&format!("{p}.v_proj.weight"), nkv * hd, h)?,
            o_proj: self.p2(&format!("{p}.o_proj.weight"), h, nh * hd)?,
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

    fn moe(&self, cfg: &Config, p: &str) -> Result<Moe, WeightError> {
        let m = cfg.moe.as_ref().expect("MoE layers have an MoE config");
        let (h, i, e) = (cfg.hidden_size, m.moe_intermediate_size, m.num_experts);
        let fused = format!("{p}.experts.gate_up_proj");
        let experts = if self.w.contains(&fused) {
            // Fused layout: gate_up [E, 2I, H] (gate rows first), down [E, H, I].
            let gu = self.host(&fused, &[e, 2 * i, h])?;
            let down = self.host(&format!("{p}.experts.down_proj"), &[e, h, i])?;
            (0..e)
                .map(|x| Mlp {
                    gate_proj: self.param_rows(rows(&gu, x * 2 * i, i).to_vec(), i, h),
                    up_proj: self.param_rows(rows(&gu, x * 2 * i + i, i).to_vec(), i, h),
                    down_proj: self.param_rows(rows(&down, x * h, h).to_vec(), h, i),
                })
                .collect()
        } else {
            (0..e)
                .map(|x| self.mlp(&format!("{p}.experts.{x}"), h, i))
                .collect::<Result<Vec<_>, _>>()?
        };
        let si = m.shared_expert_intermediate_size;
        let (shared_expert, shared_expert_gate) = if si > 0 {
            (
                Some(self.mlp(&format!("{p}.shared_expert"), h, si)?),
                Some(self.p2(&format!("{p}.shared_expert_gate.weight"), 1, h)?),
            )
        } else {
            (None, None)
        };
        Ok(Moe {
            gate: self.p2(&format!("{p}.gate.weight"), e, h)?,
            experts,
            shared_expert,
            shared_expert_gate,
            top_k: m.num_experts_per_tok,
            norm_topk_prob: m.norm_topk_prob,
        })
    }
}

/// Builds the model described by `cfg` from `weights` on `device`.
pub fn build(cfg: &Config, weights: &Weights, device: &Device) -> Result<HybridModel, WeightError> {
    let l = Loader { w: weights, device };
    let (h, v) = (cfg.hidden_size, cfg.vocab_size);
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
    }
    let lm_head = if weights.contains("lm_head.weight") {
        Some(l.p2("lm_head.weight", v, h)?)
    } else {
        None
    };
    Ok(HybridModel {
        embed_tokens: l.p2("model.embed_tokens.weight", v, h)?,
        layers,
        norm: l.p1("model.norm.weight", h)?,
        lm_head,
        eps: cfg.rms_norm_eps,
    })
}
