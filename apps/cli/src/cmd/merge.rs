//! `sluice merge`: folds a LoRA adapter into its base (W ← W + s·B A) and writes a Hugging
//! Face checkpoint that needs no adapter: `config.json` (text-only class), `model.safetensors`
//! with every tensor in the dtype the base stored it in (written tensor by tensor), and the
//! base's tokenizer and generation files. The folder is written atomically.

use std::path::PathBuf;

use sluice::model::files::{load_adapter_dir, load_model, open_weights};
use sluice::model::random::FileDtype;
use sluice::model::weights::StoredDtype;
use sluice::ops::linear16::Half;
use sluice::train::checkpoint::{Contents, model_contents};

use crate::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The base model folder the adapter was trained on.
    #[arg(long, value_name = "DIR")]
    pub base: PathBuf,
    /// The adapter folder (adapter_config.json + adapter_model.safetensors).
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// Output folder (replaced atomically).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Files copied from the base when present.
const COPIED: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
    "special_tokens_map.json",
];

pub fn run(args: &Args) -> Result<()> {
    let device = sluice::device::try_wgpu()?;
    let base = &args.base;
    let (cfg, model) =
        load_model(base, &device).map_err(|e| format!("--base {}: {e}", base.display()))?;
    let (model, names) = load_adapter_dir(model, &cfg, &args.adapter, &device)
        .map_err(|e| format!("--adapter: {e}"))?;
    let merged = sluice::model::adapter::merge(model)?;
    let stored = open_weights(base).map_err(|e| format!("--base {}: {e}", base.display()))?;
    let dtype = |name: &str| match stored.dtype(name) {
        Some(StoredDtype::Bf16) => FileDtype::Half(Half::Bf16),
        Some(StoredDtype::F16) => FileDtype::Half(Half::F16),
        _ => FileDtype::F32,
    };
    let mut files = model_contents(&cfg, &merged, &dtype);
    for name in COPIED {
        let path = base.join(name);
        if path.is_file() {
            let bytes = sluice::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            files.push((name.to_string(), Contents::Bytes(bytes.into())));
        }
    }
    sluice::train::files::write_contents_atomic(&args.out, files)?;
    eprintln!(
        "sluice: merged {} adapted projections of {} into {}",
        names.len(),
        args.adapter.display(),
        args.out.display()
    );
    Ok(())
}
