//! LoRA adapters on a [`HybridModel`] in PEFT's file format.
//!
//! ```text
//! adapter_config.json          {"peft_type": "LORA", "r", "lora_alpha", "lora_dropout", "use_rslora",
//!                               "target_modules", "rank_pattern", "alpha_pattern", ...}
//! adapter_model.safetensors    base_model.model.<module>.lora_A.weight [r, in]
//!                              base_model.model.<module>.lora_B.weight [out, r]     (F32)
//! ```
//! Module names are transformers' (`model.layers.3.self_attn.q_proj`,
//! `model.layers.0.linear_attn.in_proj_qkv`, `model.layers.0.mlp.down_proj`); adapters written
//! for the vision-language classes (`model.language_model.layers...`) load too. Adaptable:
//! every projection inside the layers except MoE routers and routed experts, and for
//! Qwen3-Next the fused `in_proj_qkvz` / `in_proj_ba` (not supported yet: a named error).
//! Targets follow PEFT: a list matches a module whose name equals an entry or ends with
//! `.entry`; a string is a regular expression that must match the whole name; `all-linear`
//! is every adaptable projection.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::HybridModel;
use super::config::Family;
use super::save::{ReadError, named_params, read_finite, safetensors_bytes};
use super::weights::Weights;
use crate::nn::{AdapterMode, Linear, Lora};

pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
pub const ADAPTER_MODEL_FILE: &str = "adapter_model.safetensors";

/// Errors attaching, reading or writing adapters; each names the file, field, module or tensor.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdapterError {
    #[error("{file}: field `{field}`: {msg}")]
    Field {
        file: String,
        field: String,
        msg: String,
    },
    #[error("{ADAPTER_CONFIG_FILE}: {0}")]
    Json(String),
    #[error("LoRA target modules {targets} match no adaptable projection of this model")]
    NoTargets { targets: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("LoRA rank {r} on `{module}` exceeds the layer's smaller side ({max})")]
    Rank {
        module: String,
        r: usize,
        max: usize,
    },
    #[error("{ADAPTER_MODEL_FILE}: {0}")]
    Weights(#[from] super::weights::WeightError),
    #[error(
        "{ADAPTER_MODEL_FILE}: tensor `{0}` is not the lora_A/lora_B of a projection of this model"
    )]
    UnknownTensor(String),
    #[error("{ADAPTER_MODEL_FILE}: `{module}` has {have} but not {missing}")]
    Half {
        module: String,
        have: &'static str,
        missing: &'static str,
    },
    #[error("{ADAPTER_MODEL_FILE}: `{name}` has shape {got:?}, this model needs {want:?}")]
    Shape {
        name: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },
    #[error("{ADAPTER_MODEL_FILE}: `{0}` holds non-finite values")]
    NonFinite(String),
    #[error("the model has no LoRA adapters")]
    NoAdapters,
    #[error("merging into `{0}`: its base weight is frozen 16-bit; load the base in f32 to merge")]
    MergeFrozen(String),
    #[error("reading `{name}` from the device: {msg}")]
    Device { name: String, msg: String },
    #[error("{ADAPTER_MODEL_FILE}: {0}")]
    Serialize(String),
}

/// Which projections get adapters (PEFT's `target_modules`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Names or name suffixes (`"q_proj"` matches `model.layers.3.self_attn.q_proj`).
    Names(Vec<String>),
    /// A regular expression matched against the whole module name; `"all-linear"` is every
    /// adaptable projection.
    Pattern(String),
}

impl TargetModules {
    /// Whether module `name` is targeted (PEFT's rules).
    pub fn matches(&self, name: &str) -> Result<bool, AdapterError> {
        Ok(match self {
            Self::Names(list) => list
                .iter()
                .any(|t| name == t || name.ends_with(&format!(".{t}"))),
            Self::Pattern(p) if p == "all-linear" => true,
            Self::Pattern(p) => full_regex(p, "target_modules")?.is_match(name),
        })
    }

    fn describe(&self) -> String {
        match self {
            Self::Names(l) => format!("{l:?}"),
            Self::Pattern(p) => format!("{p:?}"),
        }
    }
}

fn full_regex(p: &str, field: &str) -> Result<regex::Regex, AdapterError> {
    regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| AdapterError::Field {
        file: ADAPTER_CONFIG_FILE.into(),
        field: field.into(),
        msg: e.to_string(),
    })
}

/// LoRA settings: the `[lora]` section of a recipe and what `adapter_config.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank r (≥ 1).
    pub r: usize,
    /// `lora_alpha`: the update is scaled by alpha / r (alpha / sqrt r with rsLoRA).
    pub alpha: f64,
    /// Dropout on the update's input during training passes, in [0, 1).
    pub dropout: f64,
    /// rsLoRA scaling alpha / sqrt(r).
    pub rslora: bool,
    pub target_modules: TargetModules,
    /// Per-module ranks (PEFT's `rank_pattern`: key = a regex that ends the module name).
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module alphas (PEFT's `alpha_pattern`).
    pub alpha_pattern: BTreeMap<String, f64>,
}

impl Default for LoraConfig {
    /// r = 16, alpha = 32, no dropout, every adaptable projection.
    fn default() -> Self {
        Self {
            r: 16,
            alpha: 32.0,
            dropout: 0.0,
            rslora: false,
            target_modules: TargetModules::Pattern("all-linear".into()),
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
        }
    }
}

impl LoraConfig {
    /// Checks every field; errors name `file` and the field.
    pub fn validate(&self, file: &str) -> Result<(), AdapterError> {
        let bad = |field: &str, msg: String| AdapterError::Field {
            file: file.into(),
            field: field.into(),
            msg,
        };
        if self.r == 0 || self.rank_pattern.values().any(|&r| r == 0) {
            return Err(bad("r", "the rank must be at least 1".into()));
        }
        let alphas = std::iter::once(&self.alpha).chain(self.alpha_pattern.values());
        if let Some(a) = alphas.into_iter().find(|a| !a.is_finite() || **a <= 0.0) {
            return Err(bad("alpha", format!("{a} is not a positive finite number")));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(bad(
                "dropout",
                format!("{} is outside [0, 1)", self.dropout),
            ));
        }
        match &self.target_modules {
            TargetModules::Names(l) if l.is_empty() || l.iter().any(String::is_empty) => {
                Err(bad("target_modules", "empty list or empty name".into()))
            }
            TargetModules::Pattern(p) => full_regex(p, "target_modules").map(|_| ()),
            TargetModules::Names(_) => Ok(()),
        }?;
        for key in self.rank_pattern.keys().chain(self.alpha_pattern.keys()) {
            pattern_regex(key)?;
        }
        Ok(())
    }

    /// Rank and scale of the update on module `name`.
    pub fn rank_scale(&self, name: &str) -> Result<(usize, f64), AdapterError> {
        let find =
            |keys: &mut dyn Iterator<Item = &String>| -> Result<Option<String>, AdapterError> {
                for k in keys {
                    if pattern_regex(k)?.is_match(name) {
                        return Ok(Some(k.clone()));
                    }
                }
                Ok(None)
            };
        let r = match find(&mut self.rank_pattern.keys())? {
            Some(k) => self.rank_pattern[&k],
            None => self.r,
        };
        let alpha = match find(&mut self.alpha_pattern.keys())? {
            Some(k) => self.alpha_pattern[&k],
            None => self.alpha,
        };
        let div = if self.rslora {
            (r as f64).sqrt()
        } else {
            r as f64
        };
        Ok((r, alpha / div))
    }
}

/// PEFT's pattern-key rule: the key, as a regex, ends the module name at a dot boundary.
fn pattern_regex(key: &str) -> Result<regex::Regex, AdapterError> {
    regex::Regex::new(&format!("^(?:.*\\.)?(?:{key})$")).map_err(|e| AdapterError::Field {
        file: ADAPTER_CONFIG_FILE.into(),
        field: "rank_pattern".into(),
        msg: format!("`{key}`: {e}"),
    })
}

/// Whether module `name` of a `family` model can carry an adapter (see the module docs).
pub fn adaptable(family: Family, name: &str) -> bool {
    let routed = name.contains(".mlp.experts.") || name.ends_with(".mlp.gate");
    let split_gdn = family == Family::Qwen3Next && name.contains(".linear_attn.in_proj_");
    !routed && !split_gdn
}

/// Refuses targets naming Qwen3-Next's fused input projections.
fn check_fused(family: Family, targets: &TargetModules) -> Result<(), AdapterError> {
    if family != Family::Qwen3Next {
        return Ok(());
    }
    for fused in ["in_proj_qkvz", "in_proj_ba"] {
        if targets.matches(&format!("model.layers.0.linear_attn.{fused}"))?
            && targets != &TargetModules::Pattern("all-linear".into())
        {
            return Err(AdapterError::Unsupported(format!(
                "LoRA on Qwen3-Next's fused `{fused}` is not supported yet (Qwen3.5's split \
                 in_proj_qkv/z/b/a are); target the other projections"
            )));
        }
    }
    Ok(())
}

/// Freezes every base parameter of `model` and attaches fresh adapters (A Kaiming-uniform from
/// `seed`, B zero) to the projections `cfg` targets. Returns the model and the adapted names.
pub fn attach(
    model: HybridModel,
    family: Family,
    cfg: &LoraConfig,
    seed: u64,
    device: &Device,
) -> Result<(HybridModel, Vec<String>), AdapterError> {
    cfg.validate("[lora]")?;
    check_fused(family, &cfg.target_modules)?;
    let all_linear = cfg.target_modules == TargetModules::Pattern("all-linear".into());
    let mut model = model.no_grad();
    let mut names = Vec::new();
    for (i, (name, lin)) in model.named_linears_mut().into_iter().enumerate() {
        if !adaptable(family, &name) || !cfg.target_modules.matches(&name)? {
            continue;
        }
        let (r, scale) = cfg.rank_scale(&name)?;
        let [out, inp] = lin.dims();
        if r > out.min(inp) && all_linear {
            // e.g. Qwen3-Next's [1, H] shared-expert gate under `all-linear`.
            tracing::info!("LoRA: skipping {name} ({out}×{inp}), narrower than rank {r}");
            continue;
        }
        if r > out.min(inp) {
            return Err(AdapterError::Rank {
                module: name,
                r,
                max: out.min(inp),
            });
        }
        let s =
            crate::train::seeds::step_seed(seed, crate::train::seeds::Stream::LoraInit, i as u64);
        let mut lora = Lora::init(out, inp, r, scale, s, device);
        lora.dropout = cfg.dropout;
        lin.lora = Some(lora);
        names.push(name);
    }
    if names.is_empty() {
        return Err(AdapterError::NoTargets {
            targets: cfg.target_modules.describe(),
        });
    }
    model.adapter = Some(cfg.clone());
    Ok((model, names))
}

/// Sets how every adapter of `model` takes part in forward passes.
pub fn set_mode(model: &mut HybridModel, mode: AdapterMode) {
    for (_, lin) in model.named_linears_mut() {
        if let Some(l) = &mut lin.lora {
            l.mode = mode;
        }
    }
}

/// A copy of `model` (parameters shared, not duplicated) whose adapters run in `mode`.
pub fn switched(model: &HybridModel, mode: AdapterMode) -> HybridModel {
    let mut m = model.clone();
    set_mode(&mut m, mode);
    m
}

/// Number of adapted projections and adapter parameters.
pub fn adapter_stats(model: &HybridModel) -> (usize, usize) {
    let loras = model
        .named_linears()
        .into_iter()
        .filter_map(|(_, l)| l.lora.as_ref());
    loras.fold((0, 0), |(n, p), l| {
        let ([r, i], [o, _]) = (l.a.val().dims(), l.b.val().dims());
        (n + 1, p + r * (i + o))
    })
}

/// Names of `model`'s tensors that belong to adapters, with their references.
fn adapter_params(model: &HybridModel) -> Vec<(String, super::save::ParamRef<'_>)> {
    named_params(model)
        .into_iter()
        .filter(|(n, _)| n.ends_with(".lora_A.weight") || n.ends_with(".lora_B.weight"))
        .collect()
}

/// `adapter_config.json` for `model`'s adapters; `target_modules` lists the adapted modules
/// by full name, so PEFT adapts exactly those. `base`: `base_model_name_or_path`.
pub fn adapter_config_json(model: &HybridModel, base: &str) -> Result<String, AdapterError> {
    let cfg = model.adapter.as_ref().ok_or(AdapterError::NoAdapters)?;
    let targets: Vec<String> = model
        .named_linears()
        .into_iter()
        .filter(|(_, l)| l.lora.is_some())
        .map(|(n, _)| n)
        .collect();
    let v = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": cfg.r,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "use_rslora": cfg.rslora,
        "target_modules": targets,
        "rank_pattern": cfg.rank_pattern,
        "alpha_pattern": cfg.alpha_pattern,
        "bias": "none",
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "use_dora": false,
    });
    serde_json::to_string_pretty(&v).map_err(|e| AdapterError::Json(e.to_string()))
}

/// `adapter_model.safetensors` bytes (F32, PEFT's names); refuses non-finite values.
pub async fn adapter_safetensors(model: &HybridModel) -> Result<Vec<u8>, AdapterError> {
    let mut tensors = Vec::new();
    for (name, p) in adapter_params(model) {
        let shape = p.shape();
        let values = read_finite(p.flat().inner()).await.map_err(|e| match e {
            ReadError::Device(msg) => AdapterError::Device {
                name: name.clone(),
                msg,
            },
            ReadError::NonFinite => AdapterError::NonFinite(name.clone()),
        })?;
        tensors.push((format!("base_model.model.{name}"), shape, values));
    }
    if tensors.is_empty() {
        return Err(AdapterError::NoAdapters);
    }
    safetensors_bytes(&tensors, None).map_err(|e| AdapterError::Serialize(e.to_string()))
}

/// Both adapter files, `(name, bytes)`.
pub async fn adapter_files_async(
    model: &HybridModel,
    base: &str,
) -> Result<Vec<(String, Vec<u8>)>, AdapterError> {
    Ok(vec![
        (
            ADAPTER_CONFIG_FILE.into(),
            adapter_config_json(model, base)?.into_bytes(),
        ),
        (ADAPTER_MODEL_FILE.into(), adapter_safetensors(model).await?),
    ])
}

/// The fields of PEFT's `LoraConfig` that Sluice reads (unknown fields are ignored, as PEFT's
/// own versions add them often).
#[derive(Deserialize)]
struct PeftFile {
    peft_type: Option<String>,
    r: Option<usize>,
    lora_alpha: Option<f64>,
    #[serde(default)]
    lora_dropout: f64,
    #[serde(default)]
    use_rslora: bool,
    target_modules: Option<TargetModules>,
    #[serde(default)]
    rank_pattern: BTreeMap<String, usize>,
    #[serde(default)]
    alpha_pattern: BTreeMap<String, f64>,
    #[serde(default)]
    use_dora: bool,
    bias: Option<String>,
    modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    fan_in_fan_out: bool,
    layers_to_transform: Option<serde_json::Value>,
    target_parameters: Option<Vec<String>>,
}

/// Parses PEFT's `adapter_config.json` into [`LoraConfig`]; features Sluice does not
/// implement (DoRA, biases, `modules_to_save`, ...) are named errors, never ignored.
pub fn parse_adapter_config(text: &str) -> Result<LoraConfig, AdapterError> {
    let f: PeftFile = serde_json::from_str(text).map_err(|e| AdapterError::Json(e.to_string()))?;
    let field = |field: &str, msg: &str| AdapterError::Field {
        file: ADAPTER_CONFIG_FILE.into(),
        field: field.into(),
        msg: msg.into(),
    };
    if f.peft_type.as_deref() != Some("LORA") {
        return Err(field("peft_type", "expected \"LORA\""));
    }
    let unsupported = [
        (f.use_dora, "use_dora", "DoRA"),
        (
            f.bias.as_deref().is_some_and(|b| b != "none"),
            "bias",
            "LoRA biases",
        ),
        (
            f.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()),
            "modules_to_save",
            "fully trained extra modules",
        ),
        (
            f.fan_in_fan_out,
            "fan_in_fan_out",
            "transposed (Conv1D) weights",
        ),
        (
            f.layers_to_transform.as_ref().is_some_and(|v| !v.is_null()),
            "layers_to_transform",
            "layer subsets",
        ),
        (
            f.target_parameters.as_ref().is_some_and(|v| !v.is_empty()),
            "target_parameters",
            "LoRA on raw parameters",
        ),
    ];
    if let Some((_, name, what)) = unsupported.iter().find(|(on, _, _)| *on) {
        return Err(AdapterError::Unsupported(format!(
            "{ADAPTER_CONFIG_FILE}: field `{name}`: {what} are not supported"
        )));
    }
    let cfg = LoraConfig {
        r: f.r.ok_or_else(|| field("r", "missing"))?,
        alpha: f.lora_alpha.ok_or_else(|| field("lora_alpha", "missing"))?,
        dropout: f.lora_dropout,
        rslora: f.use_rslora,
        target_modules: f
            .target_modules
            .ok_or_else(|| field("target_modules", "missing"))?,
        rank_pattern: f.rank_pattern,
        alpha_pattern: f.alpha_pattern,
    };
    cfg.validate(ADAPTER_CONFIG_FILE)?;
    Ok(cfg)
}

/// One `lora_A`/`lora_B` host matrix, checked finite.
fn host(weights: &Weights, name: &str, shape: [usize; 2]) -> Result<Vec<f32>, AdapterError> {
    let data = weights.get(name, &shape)?.data;
    if data.iter().any(|x| !x.is_finite()) {
        return Err(AdapterError::NonFinite(name.into()));
    }
    Ok(data)
}

/// Freezes `model` and attaches the adapters of a PEFT folder: `config` is
/// `adapter_config.json`'s text, `weights` the parsed `adapter_model.safetensors`. Every tensor
/// must be the `lora_A`/`lora_B` of an adaptable projection, in pairs, with the rank the
/// config gives that module.
pub fn load(
    model: HybridModel,
    family: Family,
    config: &str,
    weights: &Weights,
    device: &Device,
) -> Result<(HybridModel, Vec<String>), AdapterError> {
    let cfg = parse_adapter_config(config)?;
    let mut model = model.no_grad();
    let mut left: std::collections::BTreeSet<String> = weights.names().into_iter().collect();
    let mut names = Vec::new();
    for (module, lin) in model.named_linears_mut() {
        let (a_name, b_name) = (
            format!("{module}.lora_A.weight"),
            format!("{module}.lora_B.weight"),
        );
        let (has_a, has_b) = (left.remove(&a_name), left.remove(&b_name));
        if !has_a && !has_b {
            continue;
        }
        if !adaptable(family, &module) {
            return Err(AdapterError::UnknownTensor(a_name));
        }
        if has_a != has_b {
            let (have, missing) = if has_a {
                ("lora_A", "lora_B")
            } else {
                ("lora_B", "lora_A")
            };
            return Err(AdapterError::Half {
                module,
                have,
                missing,
            });
        }
        let (r, scale) = cfg.rank_scale(&module)?;
        let [out, inp] = lin.dims();
        let a = host(weights, &a_name, [r, inp])?;
        let b = host(weights, &b_name, [out, r])?;
        let mut lora = Lora::from_values(a, b, [out, inp], r, scale, device);
        lora.dropout = cfg.dropout;
        lin.lora = Some(lora);
        names.push(module);
    }
    if let Some(extra) = left.into_iter().next() {
        if family == Family::Qwen3Next && extra.contains(".linear_attn.in_proj_") {
            check_fused(family, &TargetModules::Names(vec![extra.clone()]))?;
        }
        return Err(AdapterError::UnknownTensor(extra));
    }
    if names.is_empty() {
        return Err(AdapterError::NoTargets {
            targets: cfg.target_modules.describe(),
        });
    }
    model.adapter = Some(cfg);
    Ok((model, names))
}

/// Folds every adapter into its base weight (W ← W + s·B A) and drops the adapters; the
/// bases must be f32 (load the base with `build`, not 16-bit).
pub fn merge(mut model: HybridModel) -> Result<HybridModel, AdapterError> {
    if model.adapter.is_none() {
        return Err(AdapterError::NoAdapters);
    }
    for (name, lin) in model.named_linears_mut() {
        merge_one(&name, lin)?;
    }
    model.adapter = None;
    Ok(model)
}

fn merge_one(name: &str, lin: &mut Linear) -> Result<(), AdapterError> {
    let Some(lora) = lin.lora.take() else {
        return Ok(());
    };
    let Some(w) = &mut lin.weight else {
        return Err(AdapterError::MergeFrozen(name.into()));
    };
    let merged = w.val().inner() + lora.delta();
    *w = w.clone().map(|_| merged);
    Ok(())
}

/// Switches `model`'s adapters to `mode` for the duration of `f` (then back to `Eval`).
pub fn with_mode<R>(
    model: &mut HybridModel,
    mode: AdapterMode,
    f: impl FnOnce(&HybridModel) -> R,
) -> R {
    set_mode(model, mode);
    let r = f(model);
    set_mode(model, AdapterMode::Eval);
    r
}
