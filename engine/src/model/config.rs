//! `Config`: the text-model configuration read straight from a Hugging Face `config.json`.
//!
//! Accepted `model_type`s: `qwen3_next`, `qwen3_5_text`, `qwen3_5_moe_text`, and the composite
//! `qwen3_5` / `qwen3_5_moe` (their `text_config` is used; the vision side is ignored).
//! Every key is either understood, known to be irrelevant for text inference (ignored), or an
//! error naming the field — never silently misread.

use serde_json::{Map, Value};

/// Errors reading a `config.json`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("config field `{field}`: {msg}")]
    Field { field: String, msg: String },
    #[error("config field `{0}` is missing")]
    Missing(String),
    #[error("unknown config field `{0}` (not a Qwen3-Next / Qwen3.5 text-model setting)")]
    Unknown(String),
    #[error(
        "unsupported model_type `{0}` (supported: qwen3_next, qwen3_5, qwen3_5_text, qwen3_5_moe, qwen3_5_moe_text)"
    )]
    ModelType(String),
}

/// Which family the checkpoint belongs to (decides tensor names and the MoE rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `qwen3_next`: fused grouped `in_proj_qkvz` / `in_proj_ba`; MoE per `mlp_only_layers` /
    /// `decoder_sparse_step`; top-k renormalised if `norm_topk_prob`.
    Qwen3Next,
    /// `qwen3_5_text`: flat `in_proj_qkv` / `in_proj_z` / `in_proj_b` / `in_proj_a`, dense MLP.
    Qwen35,
    /// `qwen3_5_moe_text`: Qwen3.5 projections, MoE in every layer, top-k always renormalised.
    Qwen35Moe,
}

/// Token mixer of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerType {
    /// Gated DeltaNet.
    Linear,
    /// Gated full attention.
    Full,
}

impl LayerType {
    /// `n` layers with full attention every `interval`-th layer (Qwen3.5's
    /// `full_attention_interval`; `interval` ≥ 1), Gated DeltaNet elsewhere.
    pub fn interleaved(n: usize, interval: usize) -> Vec<LayerType> {
        (0..n)
            .map(|i| {
                if (i + 1) % interval == 0 {
                    LayerType::Full
                } else {
                    LayerType::Linear
                }
            })
            .collect()
    }
}

/// Mixture-of-experts settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    pub num_experts: usize,
    pub num_experts_per_tok: usize,
    pub moe_intermediate_size: usize,
    pub shared_expert_intermediate_size: usize,
    pub norm_topk_prob: bool,
}

/// The text model's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Dense MLP width (`None` for Qwen3.5-MoE, which has no dense layers).
    pub intermediate_size: Option<usize>,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub linear_conv_kernel_dim: usize,
    pub linear_key_head_dim: usize,
    pub linear_value_head_dim: usize,
    pub linear_num_key_heads: usize,
    pub linear_num_value_heads: usize,
    pub layer_types: Vec<LayerType>,
    pub rope_theta: f64,
    pub partial_rotary_factor: f64,
    pub moe: Option<MoeConfig>,
    /// Layers that use the dense MLP even though MoE is configured (Qwen3-Next).
    pub mlp_only_layers: Vec<usize>,
    pub decoder_sparse_step: usize,
    pub eos_token_ids: Vec<u32>,
    /// The context length the model was trained for (`None` when the config does not say).
    /// Sluice does not stop at it (RoPE has no hard limit); front ends warn beyond it.
    pub max_position_embeddings: Option<usize>,
}

/// Keys that carry nothing for text inference (metadata, training-only or multimodal ids).
const IGNORED: &[&str] = &[
    "architectures",
    "auto_map",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "_name_or_path",
    "name_or_path",
    "bos_token_id",
    "pad_token_id",
    "initializer_range",
    "use_cache",
    "attention_dropout",
    "output_router_logits",
    "router_aux_loss_coef",
    "mtp_num_hidden_layers",
    "mtp_use_dedicated_embeddings",
    "mamba_ssm_dtype",
    "use_sliding_window",
    "sliding_window",
    "max_window_layers",
    "image_token_id",
    "video_token_id",
    "vision_start_token_id",
    "vision_end_token_id",
    "vision_config",
    "id2label",
    "label2id",
];

/// The largest size (width, count, length) a config may give: 2^24.
pub const MAX_SIZE: usize = 1 << 24;

/// Reads fields from a JSON object, remembering which keys were consumed.
struct Fields {
    map: Map<String, Value>,
    used: Vec<String>,
}

impl Fields {
    fn take(&mut self, key: &str) -> Option<Value> {
        self.used.push(key.to_string());
        self.map.get(key).cloned().filter(|v| !v.is_null())
    }

    /// A non-negative integer up to [`MAX_SIZE`] (so that products of sizes cannot overflow
    /// and a hostile value cannot make a loader allocate without bound).
    fn usize_opt(&mut self, key: &str) -> Result<Option<usize>, ConfigError> {
        let Some(v) = self.take(key) else {
            return Ok(None);
        };
        let x = v
            .as_u64()
            .ok_or_else(|| field(key, format!("expected a non-negative integer, got {v}")))?;
        if x > MAX_SIZE as u64 {
            return Err(field(
                key,
                format!("{x} is beyond any supported model (at most {MAX_SIZE})"),
            ));
        }
        Ok(Some(x as usize))
    }

    fn usize(&mut self, key: &str) -> Result<usize, ConfigError> {
        self.usize_opt(key)?
            .ok_or_else(|| ConfigError::Missing(key.to_string()))
    }

    fn f64_opt(&mut self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| field(key, format!("expected a number, got {v}"))),
        }
    }

    fn bool_opt(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| field(key, format!("expected true or false, got {v}"))),
        }
    }

    fn str_opt(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(field(key, format!("expected a string, got {v}"))),
        }
    }

    /// Errors on the first key neither consumed nor known to be irrelevant.
    fn finish(&self) -> Result<(), ConfigError> {
        let mut keys: Vec<&String> = self.map.keys().collect();
        keys.sort();
        for k in keys {
            if !self.used.iter().any(|u| u == k) && !IGNORED.contains(&k.as_str()) {
                return Err(ConfigError::Unknown(k.clone()));
            }
        }
        Ok(())
    }
}

fn field(key: &str, msg: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: key.to_string(),
        msg: msg.into(),
    }
}

fn ids(v: &Value, key: &str) -> Result<Vec<u32>, ConfigError> {
    let one = |x: &Value| {
        x.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| field(key, format!("expected token ids, got {v}")))
    };
    match v {
        Value::Array(xs) => xs.iter().map(one).collect(),
        x => Ok(vec![one(x)?]),
    }
}

/// The EOS ids of a `generation_config.json` text (empty when it names none).
pub fn generation_eos_ids(text: &str) -> Result<Vec<u32>, ConfigError> {
    let v: Value = serde_json::from_str(text).map_err(|e| ConfigError::Json(e.to_string()))?;
    let Value::Object(map) = v else {
        return Err(ConfigError::Json("the top level is not an object".into()));
    };
    match map.get("eos_token_id") {
        None | Some(Value::Null) => Ok(vec![]),
        Some(v) => ids(v, "eos_token_id"),
    }
}

impl Config {
    /// Parses the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let root: Value =
            serde_json::from_str(text).map_err(|e| ConfigError::Json(e.to_string()))?;
        let Value::Object(map) = root else {
            return Err(ConfigError::Json("the top level is not an object".into()));
        };
        let model_type = map
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| ConfigError::Missing("model_type".into()))?
            .to_string();
        match model_type.as_str() {
            "qwen3_5" | "qwen3_5_moe" => {
                // Composite (vision-language) checkpoint: the text model is `text_config`.
                let mut outer = Fields { map, used: vec![] };
                outer.take("model_type");
                let text = outer
                    .take("text_config")
                    .ok_or_else(|| ConfigError::Missing("text_config".into()))?;
                // The text-only classes use only text_config.tie_word_embeddings.
                outer.take("tie_word_embeddings");
                let eos = outer.take("eos_token_id");
                outer.finish()?;
                let Value::Object(mut inner) = text else {
                    return Err(field("text_config", "expected an object"));
                };
                let expect = if model_type == "qwen3_5" {
                    "qwen3_5_text"
                } else {
                    "qwen3_5_moe_text"
                };
                inner
                    .entry("model_type")
                    .or_insert_with(|| Value::String(expect.into()));
                if let Some(e) = eos {
                    inner.entry("eos_token_id").or_insert(e);
                }
                Self::from_text_fields(Fields {
                    map: inner,
                    used: vec![],
                })
            }
            _ => Self::from_text_fields(Fields { map, used: vec![] }),
        }
    }

    fn from_text_fields(mut f: Fields) -> Result<Self, ConfigError> {
        let family = family_and_unsupported(&mut f)?;
        let num_hidden_layers = f.usize("num_hidden_layers")?;
        let head_dim_opt = f.usize_opt("head_dim")?;
        let hidden_size = f.usize("hidden_size")?;
        let num_attention_heads = f.usize("num_attention_heads")?;
        let head_dim = head_dim_opt.unwrap_or(hidden_size / num_attention_heads.max(1));

        let (rope_theta, partial) = rope(&mut f)?;

        let layer_types = layer_types(&mut f, num_hidden_layers)?;

        let moe = moe(&mut f, family)?;
        let mlp_only_layers = mlp_only_layers(&mut f)?;
        let eos_token_ids = match f.take("eos_token_id") {
            None => vec![],
            Some(v) => ids(&v, "eos_token_id")?,
        };
        let intermediate_size = f.usize_opt("intermediate_size")?;
        let cfg = Config {
            family,
            vocab_size: f.usize("vocab_size")?,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads: f.usize("num_key_value_heads")?,
            head_dim,
            rms_norm_eps: f.f64_opt("rms_norm_eps")?.unwrap_or(1e-6),
            tie_word_embeddings: f.bool_opt("tie_word_embeddings")?.unwrap_or(false),
            linear_conv_kernel_dim: f.usize_opt("linear_conv_kernel_dim")?.unwrap_or(4),
            linear_key_head_dim: f.usize("linear_key_head_dim")?,
            linear_value_head_dim: f.usize("linear_value_head_dim")?,
            linear_num_key_heads: f.usize("linear_num_key_heads")?,
            linear_num_value_heads: f.usize("linear_num_value_heads")?,
            layer_types,
            rope_theta,
            partial_rotary_factor: partial,
            moe,
            mlp_only_layers,
            decoder_sparse_step: f.usize_opt("decoder_sparse_step")?.unwrap_or(1).max(1),
            eos_token_ids,
            max_position_embeddings: f.usize_opt("max_position_embeddings")?,
        };
        f.finish()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Consistency checks between fields.
    fn validate(&self) -> Result<(), ConfigError> {
        let nonzero = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("linear_key_head_dim", self.linear_key_head_dim),
            ("linear_value_head_dim", self.linear_value_head_dim),
            ("linear_num_key_heads", self.linear_num_key_heads),
            ("linear_num_value_heads", self.linear_num_value_heads),
            ("linear_conv_kernel_dim", self.linear_conv_kernel_dim),
        ];
        for (k, v) in nonzero {
            if v == 0 {
                return Err(field(k, "must be positive"));
            }
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(field(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads {}",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            ));
        }
        if !self
            .linear_num_value_heads
            .is_multiple_of(self.linear_num_key_heads)
        {
            return Err(field(
                "linear_num_key_heads",
                format!(
                    "{} does not divide linear_num_value_heads {}",
                    self.linear_num_key_heads, self.linear_num_value_heads
                ),
            ));
        }
        if self.linear_key_head_dim > crate::ops::delta_rule::MAX_HEAD_DIM_K {
            return Err(field(
                "linear_key_head_dim",
                "larger than the delta-rule kernels support (256)",
            ));
        }
        if !self.rotary_dim().is_multiple_of(2) {
            return Err(field(
                "partial_rotary_factor",
                "gives an odd rotary dimension",
            ));
        }
        let positive = [
            ("rms_norm_eps", self.rms_norm_eps),
            ("rope_theta", self.rope_theta),
        ];
        for (k, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(field(k, format!("{v} is not a finite number > 0")));
            }
        }
        if self.rms_norm_eps >= 1.0 {
            return Err(field(
                "rms_norm_eps",
                format!("{} is not a small epsilon (< 1)", self.rms_norm_eps),
            ));
        }
        if let Some(&i) = (self.mlp_only_layers.iter()).find(|&&i| i >= self.num_hidden_layers) {
            return Err(field(
                "mlp_only_layers",
                format!(
                    "layer {i} is beyond the model's {} layers",
                    self.num_hidden_layers
                ),
            ));
        }
        self.check_eos()?;
        if self.max_position_embeddings == Some(0) {
            return Err(field("max_position_embeddings", "must be positive"));
        }
        let needs_dense = (0..self.num_hidden_layers).any(|i| !self.is_moe_layer(i));
        if needs_dense && self.intermediate_size.is_none() {
            return Err(ConfigError::Missing("intermediate_size".into()));
        }
        Ok(())
    }

    /// Every EOS id inside the vocabulary.
    pub fn check_eos(&self) -> Result<(), ConfigError> {
        match self
            .eos_token_ids
            .iter()
            .find(|&&t| t as usize >= self.vocab_size)
        {
            Some(t) => Err(field(
                "eos_token_id",
                format!("{t} is outside the vocabulary of {}", self.vocab_size),
            )),
            None => Ok(()),
        }
    }

    /// Channels of each attention head that RoPE rotates.
    pub fn rotary_dim(&self) -> usize {
        (self.head_dim as f64 * self.partial_rotary_factor) as usize
    }

    /// Whether layer `i` uses the sparse MoE block (else the dense MLP).
    pub fn is_moe_layer(&self, i: usize) -> bool {
        match (&self.moe, self.family) {
            (None, _) => false,
            (Some(_), Family::Qwen35Moe) => true,
            (Some(_), _) => {
                !self.mlp_only_layers.contains(&i)
                    && (i + 1).is_multiple_of(self.decoder_sparse_step)
            }
        }
    }

    /// Width of the causal conv input: q, k (nk·dk each) and v (nv·dv).
    pub fn conv_dim(&self) -> usize {
        2 * self.linear_num_key_heads * self.linear_key_head_dim
            + self.linear_num_value_heads * self.linear_value_head_dim
    }
}

/// The family of `model_type`, after refusing settings Sluice does not implement.
fn family_and_unsupported(f: &mut Fields) -> Result<Family, ConfigError> {
    let model_type = f.str_opt("model_type")?.unwrap_or_default();
    let family = match model_type.as_str() {
        "qwen3_next" => Family::Qwen3Next,
        "qwen3_5_text" => Family::Qwen35,
        "qwen3_5_moe_text" => Family::Qwen35Moe,
        other => return Err(ConfigError::ModelType(other.to_string())),
    };
    let act = f.str_opt("hidden_act")?.unwrap_or_else(|| "silu".into());
    if act != "silu" {
        return Err(field(
            "hidden_act",
            format!("`{act}` is not supported (only silu)"),
        ));
    }
    if f.bool_opt("attention_bias")?.unwrap_or(false) {
        return Err(field(
            "attention_bias",
            "true is not supported (Qwen3-Next has no attention bias)",
        ));
    }
    if f.bool_opt("attn_output_gate")? == Some(false) {
        return Err(field(
            "attn_output_gate",
            "false is not supported (the gate is always on)",
        ));
    }
    if let Some(q) = f.take("quantization_config") {
        return Err(field(
            "quantization_config",
            format!("quantised checkpoints are not supported ({q})"),
        ));
    }
    Ok(family)
}

/// `(rope_theta, partial_rotary_factor)` from `rope_parameters` (transformers 5) or the
/// legacy top-level keys.
fn rope(f: &mut Fields) -> Result<(f64, f64), ConfigError> {
    let mut rope_theta = f.f64_opt("rope_theta")?.unwrap_or(10000.0);
    let mut partial = f.f64_opt("partial_rotary_factor")?.unwrap_or(0.25);
    if let Some(scaling) = f.take("rope_scaling") {
        return Err(field(
            "rope_scaling",
            format!("rope scaling is not supported ({scaling})"),
        ));
    }
    if let Some(p) = f.take("rope_parameters") {
        let Value::Object(p) = p else {
            return Err(field("rope_parameters", "expected an object"));
        };
        for (k, v) in &p {
            let key = format!("rope_parameters.{k}");
            match k.as_str() {
                "rope_type" | "type" => {
                    if v.as_str() != Some("default") {
                        return Err(field(
                            &key,
                            format!("{v} is not supported (only \"default\")"),
                        ));
                    }
                }
                "rope_theta" => {
                    rope_theta = v.as_f64().ok_or_else(|| field(&key, "expected a number"))?
                }
                "partial_rotary_factor" => {
                    partial = v.as_f64().ok_or_else(|| field(&key, "expected a number"))?
                }
                // Multimodal RoPE sections reduce to 1-D partial RoPE for text.
                "mrope_section" | "mrope_interleaved" => {}
                _ => return Err(ConfigError::Unknown(key)),
            }
        }
    }
    if !(0.0..=1.0).contains(&partial) || partial == 0.0 {
        return Err(field(
            "partial_rotary_factor",
            format!("{partial} is outside (0, 1]"),
        ));
    }
    Ok((rope_theta, partial))
}

/// The layer types: `layer_types`, or every `full_attention_interval`-th layer full.
fn layer_types(f: &mut Fields, num_hidden_layers: usize) -> Result<Vec<LayerType>, ConfigError> {
    let interval = f.usize_opt("full_attention_interval")?.unwrap_or(4).max(1);
    let layer_types: Vec<LayerType> = match f.take("layer_types") {
        None => LayerType::interleaved(num_hidden_layers, interval),
        Some(Value::Array(xs)) => xs
            .iter()
            .enumerate()
            .map(|(i, x)| match x.as_str() {
                Some("linear_attention") => Ok(LayerType::Linear),
                Some("full_attention") => Ok(LayerType::Full),
                _ => Err(field(
                    &format!("layer_types[{i}]"),
                    format!("unknown layer type {x}"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(v) => return Err(field("layer_types", format!("expected a list, got {v}"))),
    };
    if layer_types.len() != num_hidden_layers {
        return Err(field(
            "layer_types",
            format!(
                "{} entries for {num_hidden_layers} layers",
                layer_types.len()
            ),
        ));
    }
    Ok(layer_types)
}

/// The sparse-MoE settings (`None` for dense models).
fn moe(f: &mut Fields, family: Family) -> Result<Option<MoeConfig>, ConfigError> {
    let num_experts = f.usize_opt("num_experts")?.unwrap_or(0);
    let moe_fields = (
        f.usize_opt("num_experts_per_tok")?,
        f.usize_opt("moe_intermediate_size")?,
        f.usize_opt("shared_expert_intermediate_size")?,
        f.bool_opt("norm_topk_prob")?,
    );
    let moe = match (family, num_experts) {
        (Family::Qwen35, _) => None,
        (_, 0) if family == Family::Qwen3Next => None,
        (_, 0) => return Err(ConfigError::Missing("num_experts".into())),
        (_, e) => Some(MoeConfig {
            num_experts: e,
            num_experts_per_tok: moe_fields
                .0
                .ok_or_else(|| ConfigError::Missing("num_experts_per_tok".into()))?,
            moe_intermediate_size: moe_fields
                .1
                .ok_or_else(|| ConfigError::Missing("moe_intermediate_size".into()))?,
            shared_expert_intermediate_size: moe_fields.2.unwrap_or(0),
            norm_topk_prob: family == Family::Qwen35Moe || moe_fields.3.unwrap_or(true),
        }),
    };
    if let Some(m) = &moe
        && (m.num_experts_per_tok == 0 || m.num_experts_per_tok > m.num_experts)
    {
        return Err(field(
            "num_experts_per_tok",
            format!("{} with {} experts", m.num_experts_per_tok, m.num_experts),
        ));
    }
    Ok(moe)
}

/// `mlp_only_layers`: layer indices that keep a dense MLP.
fn mlp_only_layers(f: &mut Fields) -> Result<Vec<usize>, ConfigError> {
    let mlp_only_layers = match f.take("mlp_only_layers") {
        None => vec![],
        Some(Value::Array(xs)) => xs
            .iter()
            .map(|x| {
                x.as_u64().map(|x| x as usize).ok_or_else(|| {
                    field(
                        "mlp_only_layers",
                        format!("expected layer indices, got {x}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(field(
                "mlp_only_layers",
                format!("expected a list, got {v}"),
            ));
        }
    };
    Ok(mlp_only_layers)
}
