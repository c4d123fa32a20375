//! `sluice init`: writes a random-weight checkpoint of any supported configuration in the
//! Hugging Face layout (`config.json` as given, `model.safetensors`), drawing and writing one
//! tensor at a time (host memory ≈ the largest tensor, not the model).

use std::path::PathBuf;

use safetensors::tensor::{Dtype, View};
use sluice::model::Config;
use sluice::model::random::{FileDtype, RandomTensor, random_checkpoint};
use sluice::ops::linear16::Half;

use crate::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A Hugging Face `config.json` (Qwen3-Next, Qwen3.5 dense or MoE, composite or text-only).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Output folder (created; existing config.json / model.safetensors are replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Storage dtype of every tensor: bf16, f16 or f32.
    #[arg(long, default_value = "bf16", value_parser = parse_dtype, value_name = "DTYPE")]
    pub dtype: FileDtype,
    /// Seed of the weights.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed: u64,
    /// Standard deviation of the normal initialisation (transformers' `initializer_range`).
    #[arg(long, default_value_t = 0.02, value_name = "STD")]
    pub std: f64,
}

fn parse_dtype(s: &str) -> std::result::Result<FileDtype, String> {
    match s.to_ascii_lowercase().as_str() {
        "bf16" | "bfloat16" => Ok(FileDtype::Half(Half::Bf16)),
        "f16" | "float16" => Ok(FileDtype::Half(Half::F16)),
        "f32" | "float32" => Ok(FileDtype::F32),
        other => Err(format!(
            "unknown dtype `{other}`: expected bf16, f16 or f32"
        )),
    }
}

/// A tensor drawn only when the writer asks for its bytes.
struct Lazy<'a> {
    tensor: &'a RandomTensor,
    dtype: FileDtype,
}

impl View for Lazy<'_> {
    fn dtype(&self) -> Dtype {
        match self.dtype {
            FileDtype::F32 => Dtype::F32,
            FileDtype::Half(Half::Bf16) => Dtype::BF16,
            FileDtype::Half(Half::F16) => Dtype::F16,
        }
    }

    fn shape(&self) -> &[usize] {
        &self.tensor.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        self.tensor.bytes(self.dtype).into()
    }

    fn data_len(&self) -> usize {
        let size = match self.dtype {
            FileDtype::F32 => 4,
            FileDtype::Half(_) => 2,
        };
        self.tensor.numel() * size
    }
}

pub fn run(args: &Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| format!("--config {}: {e}", args.config.display()))?;
    let cfg = Config::from_json(&text).map_err(|e| format!("{}: {e}", args.config.display()))?;
    if !(args.std.is_finite() && args.std > 0.0) {
        return Err(format!("--std {}: must be a positive number", args.std).into());
    }
    let tensors = random_checkpoint(&cfg, args.seed, args.std)?;
    std::fs::create_dir_all(&args.out).map_err(|e| format!("--out {}: {e}", args.out.display()))?;
    let views = tensors.iter().map(|t| {
        (
            t.name.clone(),
            Lazy {
                tensor: t,
                dtype: args.dtype,
            },
        )
    });
    // Written under a temporary name and renamed, so an interrupted run leaves no file that
    // looks complete.
    let path = args.out.join("model.safetensors");
    let tmp = args.out.join("model.safetensors.partial");
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(meta), &tmp)
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let cfg_path = args.out.join("config.json");
    std::fs::write(&cfg_path, text).map_err(|e| format!("writing {}: {e}", cfg_path.display()))?;
    let params: usize = tensors.iter().map(RandomTensor::numel).sum();
    eprintln!(
        "sluice: wrote {} ({} tensors, {:.1} M parameters)",
        path.display(),
        tensors.len(),
        params as f64 / 1e6
    );
    Ok(())
}
