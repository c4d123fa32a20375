//! Opening a Hugging Face checkpoint folder (native only): `config.json`,
//! `generation_config.json` (EOS ids), and `model.safetensors` or the shards listed in
//! `model.safetensors.index.json`, memory-mapped.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::config::{Config, ConfigError};
use super::hybrid::HybridModel;
use super::weights::{Buffer, WeightError, Weights};

/// Errors opening a checkpoint folder.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Config { path: PathBuf, source: ConfigError },
    #[error("{0}")]
    Weights(#[from] WeightError),
    #[error("{path}: {msg}")]
    Index { path: PathBuf, msg: String },
    #[error("{path}: {source}")]
    Adapter {
        path: PathBuf,
        source: super::adapter::AdapterError,
    },
}

fn read(path: &Path) -> Result<String, LoadError> {
    crate::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads `config.json` (and EOS ids from `generation_config.json` when present); errors
/// name the file and the field.
pub fn read_config(dir: &Path) -> Result<Config, LoadError> {
    let path = dir.join("config.json");
    let mut cfg = Config::from_json(&read(&path)?).map_err(|source| LoadError::Config {
        path: path.clone(),
        source,
    })?;
    let gen_path = dir.join("generation_config.json");
    if gen_path.exists() {
        let bad = |source| LoadError::Config {
            path: gen_path.clone(),
            source,
        };
        let ids = super::config::generation_eos_ids(&read(&gen_path)?).map_err(bad)?;
        if !ids.is_empty() {
            cfg.eos_token_ids = ids;
        }
        cfg.check_eos().map_err(bad)?;
    }
    Ok(cfg)
}

/// The safetensors files of the checkpoint, in index order.
fn shard_paths(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let index = dir.join("model.safetensors.index.json");
    if !index.exists() {
        return Ok(vec![dir.join("model.safetensors")]);
    }
    let v: serde_json::Value =
        serde_json::from_str(&read(&index)?).map_err(|e| LoadError::Index {
            path: index.clone(),
            msg: e.to_string(),
        })?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| LoadError::Index {
            path: index.clone(),
            msg: "no `weight_map` object".into(),
        })?;
    if map.is_empty() {
        return Err(LoadError::Index {
            path: index.clone(),
            msg: "`weight_map` lists no tensors".into(),
        });
    }
    let mut files: Vec<String> = Vec::new();
    for (name, f) in map {
        let bad = |msg: String| LoadError::Index {
            path: index.clone(),
            msg: format!("`weight_map.{name}`: {msg}"),
        };
        let f = f
            .as_str()
            .ok_or_else(|| bad(format!("{f} is not a file name")))?;
        // Shards live in the model folder: no paths, so an index cannot reach other files.
        let plain = Path::new(f).file_name().is_some_and(|n| n == f) && f != "..";
        if !plain {
            return Err(bad(format!(
                "`{f}` is not a file name inside the model folder"
            )));
        }
        if !files.iter().any(|x| x == f) {
            files.push(f.to_string());
        }
    }
    files.sort();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// Memory-maps every safetensors file of the checkpoint in `dir`.
pub fn open_weights(dir: &Path) -> Result<Weights, LoadError> {
    let mut files: Vec<(String, Buffer)> = Vec::new();
    for path in shard_paths(dir)? {
        let io = |source| LoadError::Io {
            path: path.clone(),
            source,
        };
        let file = crate::fs::open(&path).map_err(io)?;
        // SAFETY: the map is read-only; the checkpoint is not expected to change while loaded
        // (as every safetensors loader assumes).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        files.push((path.display().to_string(), Box::new(map)));
    }
    Ok(Weights::new(files)?)
}

/// Freezes `model` and attaches the PEFT LoRA adapter in `dir` (`adapter_config.json` +
/// `adapter_model.safetensors`); returns the model and the adapted module names.
pub fn load_adapter_dir(
    model: HybridModel,
    cfg: &Config,
    dir: &Path,
    device: &Device,
) -> Result<(HybridModel, Vec<String>), LoadError> {
    use super::adapter::{ADAPTER_CONFIG_FILE, ADAPTER_MODEL_FILE};
    let config = read(&dir.join(ADAPTER_CONFIG_FILE))?;
    let path = dir.join(ADAPTER_MODEL_FILE);
    let bytes = crate::fs::read(&path).map_err(|source| LoadError::Io {
        path: path.clone(),
        source,
    })?;
    let weights = Weights::new(vec![(ADAPTER_MODEL_FILE.to_string(), Box::new(bytes))])?;
    super::adapter::load(model, cfg.family, &config, &weights, device).map_err(|source| {
        LoadError::Adapter {
            path: dir.to_path_buf(),
            source,
        }
    })
}

/// Loads the model in `dir` onto `device` with trainable f32 projections (see
/// [`super::load::build`]).
pub fn load_model(dir: &Path, device: &Device) -> Result<(Config, HybridModel), LoadError> {
    let cfg = read_config(dir)?;
    let weights = open_weights(dir)?;
    let model = super::load::build(&cfg, &weights, device)?;
    Ok((cfg, model))
}

/// Loads the model in `dir` onto `device` as `opts` say, streaming one tensor at a time from
/// the memory map; `progress(done, total)` as in [`super::load::build_with`].
pub fn load_model_with(
    dir: &Path,
    device: &Device,
    opts: super::load::LoadOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Config, HybridModel), LoadError> {
    let cfg = read_config(dir)?;
    let weights = open_weights(dir)?;
    let model = super::load::build_with(&cfg, &weights, device, opts, progress)?;
    Ok((cfg, model))
}

/// A tensor of a random checkpoint, drawn only when the writer asks for its bytes.
struct LazyTensor<'a> {
    tensor: &'a super::random::RandomTensor,
    dtype: super::random::FileDtype,
}

impl safetensors::tensor::View for LazyTensor<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype.safetensors()
    }

    fn shape(&self) -> &[usize] {
        &self.tensor.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        self.tensor.bytes(self.dtype).into()
    }

    fn data_len(&self) -> usize {
        let size = match self.dtype {
            super::random::FileDtype::F32 => 4,
            super::random::FileDtype::Half(_) => 2,
        };
        self.tensor.numel() * size
    }
}

/// Writes a random-weight checkpoint for `config_json` into `dir` (created): `config.json`
/// as given and `model.safetensors`, drawn and written one tensor at a time (under a temporary
/// name, renamed when complete). Returns the number of parameters.
pub fn write_random_checkpoint(
    dir: &Path,
    config_json: &str,
    dtype: super::random::FileDtype,
    seed: u64,
    std: f64,
) -> Result<usize, LoadError> {
    let cfg_path = dir.join("config.json");
    let cfg = Config::from_json(config_json).map_err(|source| LoadError::Config {
        path: cfg_path.clone(),
        source,
    })?;
    let tensors =
        super::random::random_checkpoint(&cfg, seed, std).map_err(|e| LoadError::Index {
            path: cfg_path.clone(),
            msg: e.to_string(),
        })?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LoadError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join("model.safetensors");
    let tmp = dir.join("model.safetensors.partial");
    let views = tensors
        .iter()
        .map(|t| (t.name.clone(), LazyTensor { tensor: t, dtype }));
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(meta), &tmp).map_err(|e| LoadError::Index {
        path: tmp.clone(),
        msg: e.to_string(),
    })?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::write(&cfg_path, config_json).map_err(io(&cfg_path))?;
    Ok(tensors.iter().map(super::random::RandomTensor::numel).sum())
}
