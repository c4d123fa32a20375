//! Training checkpoints as file contents (no filesystem here; `train::files` writes and
//! reads directories natively). The weights and the AdamW moments are [`Contents`] that
//! write themselves tensor by tensor from the device into any `Write` — a file natively,
//! a byte vector in the browser — so host memory holds one layer, not the model.
//!
//! A checkpoint is a Hugging Face model folder plus the training state:
//! ```text
//! config.json             Config → JSON (transformers loads the folder as a model)
//! model.safetensors       every parameter, HF names and layout, F32
//! optimizer.safetensors   AdamW moments under the parameter names + step/hyper-parameters
//! trainer_state.json      TrainerState: step, RNG words, data cursor, schedule, user metadata
//! ```
//! Everything is stored exactly (F32 bits, u64 integers), so training resumed from a
//! checkpoint continues bit-identically.
//!
//! A LoRA checkpoint ([`adapter_checkpoint_files_async`]) holds only what training changes:
//! ```text
//! adapter_config.json        PEFT's LoraConfig (peft and `sluice --adapter` load the folder)
//! adapter_model.safetensors  lora_A / lora_B under PEFT's names, F32
//! optimizer.safetensors      AdamW moments of the adapter tensors
//! trainer_state.json         as above
//! ```
//! The frozen base is not copied: resuming loads it again from its own folder.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::optim::{AdamW, OptimError};
use super::schedule::LrSchedule;
use crate::model::adapter::{AdapterError, adapter_files_async};
use crate::model::random::FileDtype;
use crate::model::save::{SaveError, config_json, write_model_safetensors};
use crate::model::weights::{Buffer, WeightError, Weights};
use crate::model::{Config, ConfigError, HybridModel};

pub const CONFIG_FILE: &str = "config.json";
pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";

/// Version of the `trainer_state.json` layout.
pub const STATE_FORMAT: u32 = 1;

/// Errors building or reading a checkpoint; each names the file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckpointError {
    #[error("{MODEL_FILE}: {0}")]
    Save(#[from] SaveError),
    #[error("{OPTIMIZER_FILE}: {0}")]
    Optimizer(#[from] OptimError),
    #[error("{MODEL_FILE}: {0}")]
    Weights(#[from] WeightError),
    #[error("{CONFIG_FILE}: {0}")]
    Config(#[from] ConfigError),
    #[error("{STATE_FILE}: {0}")]
    State(String),
    #[error("{0}")]
    Adapter(Box<AdapterError>),
}

impl From<AdapterError> for CheckpointError {
    fn from(e: AdapterError) -> Self {
        Self::Adapter(Box::new(e))
    }
}

/// Where the training loop stands, saved next to the weights. Integers are stored exactly
/// (JSON integers up to 2⁶⁴ − 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Layout version ([`STATE_FORMAT`]).
    pub format: u32,
    /// Training steps completed (including skipped ones, unlike the optimizer's count).
    pub step: u64,
    /// RNG states by name, as raw u64 words or seeds (e.g. a sampler's seed and draw count).
    pub rng: BTreeMap<String, Vec<u64>>,
    /// Position in the data: epoch and index of the next example.
    pub data_epoch: u64,
    pub data_index: u64,
    /// The learning-rate schedule (a pure function of the step).
    pub schedule: Option<LrSchedule>,
    /// Anything else the caller wants back (metrics, options, data fingerprints...).
    pub metadata: serde_json::Value,
}

impl Default for TrainerState {
    fn default() -> Self {
        Self {
            format: STATE_FORMAT,
            step: 0,
            rng: BTreeMap::new(),
            data_epoch: 0,
            data_index: 0,
            schedule: None,
            metadata: serde_json::Value::Null,
        }
    }
}

impl TrainerState {
    /// Pretty JSON text.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("the trainer state serialises");
        s.push('\n');
        s
    }

    pub fn from_json(text: &str) -> Result<Self, CheckpointError> {
        let s: Self =
            serde_json::from_str(text).map_err(|e| CheckpointError::State(e.to_string()))?;
        if s.format != STATE_FORMAT {
            return Err(CheckpointError::State(format!(
                "format {} is not supported (this build reads {STATE_FORMAT})",
                s.format
            )));
        }
        Ok(s)
    }
}

/// What one file of a checkpoint or model folder holds. Large files are written tensor by
/// tensor straight from the device ([`Contents::write_to`]), so saving never holds the
/// model or its optimizer state in host memory at once.
pub enum Contents<'a> {
    Bytes(Cow<'a, [u8]>),
    /// `model.safetensors` of `model` in Hugging Face layout for `cfg`, each tensor stored as
    /// `dtype(name)`.
    Model {
        cfg: Box<Config>,
        model: &'a HybridModel,
        dtype: &'a dyn Fn(&str) -> FileDtype,
    },
    /// `optimizer.safetensors`: the AdamW moments.
    Optimizer(&'a AdamW),
}

impl Contents<'_> {
    /// Writes the file's bytes to `w`.
    pub async fn write_to(self, w: &mut dyn Write) -> Result<(), CheckpointError> {
        match self {
            Self::Bytes(b) => w
                .write_all(&b)
                .map_err(|e| SaveError::Io(e.to_string()).into()),
            Self::Model { cfg, model, dtype } => {
                Ok(write_model_safetensors(&cfg, model, dtype, w).await?)
            }
            Self::Optimizer(o) => Ok(o.write_safetensors_async(w).await?),
        }
    }

    /// The file's bytes in memory.
    pub async fn into_bytes(self) -> Result<Vec<u8>, CheckpointError> {
        match self {
            Self::Bytes(b) => Ok(b.into_owned()),
            other => {
                let mut out = Vec::new();
                other.write_to(&mut out).await?;
                Ok(out)
            }
        }
    }
}

/// Every tensor stored as F32 (checkpoints keep training values exactly).
pub fn all_f32(_: &str) -> FileDtype {
    FileDtype::F32
}

/// A model folder's `config.json` and `model.safetensors` (each tensor as `dtype(name)`);
/// the config's `tie_word_embeddings` follows the model (tied without a separate LM head).
pub fn model_contents<'a>(
    cfg: &Config,
    model: &'a HybridModel,
    dtype: &'a dyn Fn(&str) -> FileDtype,
) -> Vec<(String, Contents<'a>)> {
    let mut cfg = cfg.clone();
    cfg.tie_word_embeddings = model.lm_head.is_none();
    vec![
        (
            CONFIG_FILE.into(),
            Contents::Bytes(config_json(&cfg).into_bytes().into()),
        ),
        (
            MODEL_FILE.into(),
            Contents::Model {
                cfg: Box::new(cfg),
                model,
                dtype,
            },
        ),
    ]
}

/// The files of a checkpoint in write order (the trainer state last).
pub fn checkpoint_contents<'a>(
    cfg: &Config,
    model: &'a HybridModel,
    optimizer: &'a AdamW,
    state: &TrainerState,
) -> Result<Vec<(String, Contents<'a>)>, CheckpointError> {
    optimizer.check_against(model)?;
    let mut files = model_contents(cfg, model, &all_f32);
    files.push((OPTIMIZER_FILE.into(), Contents::Optimizer(optimizer)));
    files.push((
        STATE_FILE.into(),
        Contents::Bytes(state.to_json().into_bytes().into()),
    ));
    Ok(files)
}

/// The files of a checkpoint (name, bytes), in write order: the trainer state comes last.
pub async fn checkpoint_files_async(
    cfg: &Config,
    model: &HybridModel,
    optimizer: &AdamW,
    state: &TrainerState,
) -> Result<Vec<(String, Vec<u8>)>, CheckpointError> {
    let mut out = Vec::new();
    for (name, contents) in checkpoint_contents(cfg, model, optimizer, state)? {
        out.push((name, contents.into_bytes().await?));
    }
    Ok(out)
}

/// The files of a LoRA checkpoint (adapters, optimizer, trainer state; the state last).
/// `base`: the base model's name or path, recorded as `base_model_name_or_path`.
pub async fn adapter_checkpoint_files_async(
    model: &HybridModel,
    optimizer: &AdamW,
    state: &TrainerState,
    base: &str,
) -> Result<Vec<(String, Vec<u8>)>, CheckpointError> {
    optimizer.check_against(model)?;
    let mut files = adapter_files_async(model, base).await?;
    files.push((
        OPTIMIZER_FILE.into(),
        optimizer.to_safetensors_async().await?,
    ));
    files.push((STATE_FILE.into(), state.to_json().into_bytes()));
    Ok(files)
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Restored {
    pub config: Config,
    pub model: HybridModel,
    pub optimizer: AdamW,
    pub state: TrainerState,
}

/// Rebuilds a checkpoint from its files' contents onto `device` (use an autodiff device to
/// keep training). Every tensor of `model.safetensors` must be a parameter of the model (the
/// loader refuses unused tensors) and every moment must match a parameter's name and shape.
pub fn restore(
    config_json: &str,
    model: Buffer,
    optimizer: &[u8],
    trainer_state: &str,
    device: &Device,
) -> Result<Restored, CheckpointError> {
    let config = Config::from_json(config_json)?;
    let weights = Weights::new(vec![(MODEL_FILE.to_string(), model)])?;
    let model = crate::model::load::build(&config, &weights, device)?;
    let optimizer = AdamW::from_safetensors(optimizer, device)?;
    optimizer.check_against(&model)?;
    let state = TrainerState::from_json(trainer_state)?;
    Ok(Restored {
        config,
        model,
        optimizer,
        state,
    })
}
