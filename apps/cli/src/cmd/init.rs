//! `sluice init`: writes a random-weight checkpoint of any supported configuration in the
//! Hugging Face layout (`config.json` as given, `model.safetensors`), drawing and writing one
//! tensor at a time (host memory ≈ the largest tensor, not the model).

use std::path::PathBuf;

use sluice::model::Config;
use sluice::model::files::write_random_checkpoint;
use sluice::model::random::FileDtype;
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

pub fn run(args: &Args) -> Result<()> {
    let text = sluice::fs::read_to_string(&args.config)
        .map_err(|e| format!("--config {}: {e}", args.config.display()))?;
    let cfg = Config::from_json(&text).map_err(|e| format!("{}: {e}", args.config.display()))?;
    if !(args.std.is_finite() && args.std > 0.0) {
        return Err(format!("--std {}: must be a positive number", args.std).into());
    }
    let params = write_random_checkpoint(&args.out, &text, args.dtype, args.seed, args.std)
        .map_err(|e| format!("sluice init: {e}"))?;
    eprintln!(
        "sluice: wrote {} ({:.1} M parameters, config {:?})",
        args.out.join("model.safetensors").display(),
        params as f64 / 1e6,
        cfg.family
    );
    Ok(())
}
