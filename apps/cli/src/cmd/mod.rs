//! The model subcommands (`generate`, `chat`, `logits`) and what they share: the model
//! folder, the sampling flags, parsing token-id lists, loading.

pub mod chat;
pub mod generate;
pub mod init;
pub mod logits;
pub mod merge;
pub mod text;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use sluice::model::generate::Sampling;
use sluice::model::load::LoadOptions;
use sluice::model::{Config, HybridModel};

use crate::Result;

/// `--model DIR`.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Hugging Face checkpoint folder: config.json, *.safetensors (+ index), and optionally
    /// generation_config.json (EOS ids), tokenizer.json, tokenizer_config.json /
    /// chat_template.jinja.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,

    /// How projection weights are held on the device: auto (as stored: BF16/F16 stay 16-bit,
    /// F32 stays f32), f32, bf16 or f16.
    #[arg(long, default_value = "auto", value_name = "DTYPE")]
    pub dtype: sluice::model::load::WeightDtype,

    /// A LoRA adapter folder in PEFT's format (adapter_config.json +
    /// adapter_model.safetensors) applied on top of the model.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
}

/// Generation flags shared by `generate` and `chat` (defaults: greedy).
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// Most new tokens to generate (generation also stops at an EOS token from
    /// generation_config.json).
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub max_new_tokens: usize,

    /// Softmax temperature; 0 = greedy (argmax).
    #[arg(long, default_value_t = 0.0, value_name = "T", value_parser = non_negative_f32, allow_negative_numbers = true)]
    pub temperature: f32,

    /// Sample among the K most likely tokens only (0 = off). With a vocabulary of 16,384
    /// or more, K ≤ 512 and no repetition penalty, the K candidates are found on the GPU and
    /// only they are read back.
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub top_k: usize,

    /// Nucleus sampling: the smallest set of tokens with total probability ≥ P (1 = off).
    #[arg(long, default_value_t = 1.0, value_name = "P", value_parser = unit_interval_open, allow_negative_numbers = true)]
    pub top_p: f32,

    /// Drop tokens less likely than P × the most likely one (0 = off).
    #[arg(long, default_value_t = 0.0, value_name = "P", value_parser = unit_interval, allow_negative_numbers = true)]
    pub min_p: f32,

    /// > 1 discourages tokens already in the prompt or the output (1 = off).
    #[arg(long, default_value_t = 1.0, value_name = "R", value_parser = positive_f32, allow_negative_numbers = true)]
    pub repetition_penalty: f32,

    /// Seed of the sampler (with --temperature > 0).
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn sampling(&self) -> Sampling {
        Sampling {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
        }
    }
}

fn parse_f32(s: &str) -> std::result::Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(format!("`{s}` is not a finite number")),
    }
}

fn non_negative_f32(s: &str) -> std::result::Result<f32, String> {
    let x = parse_f32(s)?;
    if x < 0.0 {
        return Err(format!("{x} is negative"));
    }
    Ok(x)
}

fn positive_f32(s: &str) -> std::result::Result<f32, String> {
    let x = parse_f32(s)?;
    if x <= 0.0 {
        return Err(format!("{x} must be > 0"));
    }
    Ok(x)
}

/// A probability in [0, 1].
fn unit_interval(s: &str) -> std::result::Result<f32, String> {
    let x = parse_f32(s)?;
    if !(0.0..=1.0).contains(&x) {
        return Err(format!("{x} is not in [0, 1]"));
    }
    Ok(x)
}

/// A probability in (0, 1].
fn unit_interval_open(s: &str) -> std::result::Result<f32, String> {
    let x = unit_interval(s)?;
    if x == 0.0 {
        return Err("0 keeps no token; use a value in (0, 1]".into());
    }
    Ok(x)
}

/// Parses a comma-separated token-id list such as `1, 2,3` (spaces allowed, no empty items).
pub fn parse_ids(s: &str) -> std::result::Result<Vec<u32>, String> {
    if s.trim().is_empty() {
        return Err("the id list is empty".into());
    }
    s.split(',')
        .enumerate()
        .map(|(i, item)| {
            let item = item.trim();
            if item.is_empty() {
                return Err(format!("id {} is empty (stray comma?)", i + 1));
            }
            item.parse::<u32>().map_err(|_| {
                format!(
                    "id {} (`{item}`) is not a token id (a non-negative integer below 2^32)",
                    i + 1
                )
            })
        })
        .collect()
}

/// Parses rows of ids separated by `;` (`"1,2,3;4,5,6"`); a trailing `;` is allowed. Errors
/// name the row (1-based).
pub fn parse_rows(s: &str) -> std::result::Result<Vec<Vec<u32>>, String> {
    let s = s.trim();
    let s = s.strip_suffix(';').unwrap_or(s);
    if s.trim().is_empty() {
        return Err("no rows of ids".into());
    }
    s.split(';')
        .enumerate()
        .map(|(r, row)| parse_ids(row).map_err(|e| format!("row {}: {e}", r + 1)))
        .collect()
}

/// Rows of equal length, or an error naming the first row that differs from row 1.
pub fn check_equal_lengths(rows: &[Vec<u32>]) -> std::result::Result<usize, String> {
    let t = rows.first().map_or(0, Vec::len);
    for (r, row) in rows.iter().enumerate().skip(1) {
        if row.len() != t {
            return Err(format!(
                "row {} has {} ids but row 1 has {t}: every row must have the same length",
                r + 1,
                row.len()
            ));
        }
    }
    Ok(t)
}

/// Every id below `vocab`, or an error naming the first one that is not.
pub fn check_vocab(rows: &[Vec<u32>], vocab: usize) -> std::result::Result<(), String> {
    for (r, row) in rows.iter().enumerate() {
        if let Some((i, &id)) = row
            .iter()
            .enumerate()
            .find(|&(_, &id)| id as usize >= vocab)
        {
            let at = if rows.len() > 1 {
                format!("row {}, position {}", r + 1, i + 1)
            } else {
                format!("position {}", i + 1)
            };
            return Err(format!(
                "token id {id} ({at}) is outside the model's vocabulary of {vocab} (ids 0..{})",
                vocab.saturating_sub(1)
            ));
        }
    }
    Ok(())
}

/// Warns on stderr when `tokens` (prompt + new) pass the context the model was trained for
/// (`max_position_embeddings`). Generation goes on — rotary positions have no hard limit and
/// transformers does not stop either — but quality usually drops past it.
pub fn warn_past_context(cfg: &Config, tokens: usize) {
    if let Some(n) = cfg.max_position_embeddings
        && tokens > n
    {
        eprintln!(
            "sluice: warning: up to {tokens} tokens (prompt + new) pass max_position_embeddings \
             = {n}, the context this model was trained for; generation goes on (rotary \
             positions have no hard limit), but quality usually drops past it"
        );
    }
}

/// Fails unless `dir` is an existing folder (before anything inside it is looked for).
pub fn check_model_dir(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("--model {}: not a folder", dir.display()).into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("--model {}: no such folder", dir.display()).into())
        }
        Err(e) => Err(format!("--model {}: {e}", dir.display()).into()),
    }
}

/// Loads the checkpoint `args.model` on the default wgpu device as `args.dtype` says; shows a
/// progress bar and says how long it took on stderr when `verbose`.
pub fn load(args: &ModelArgs, verbose: bool) -> Result<(Device, Config, HybridModel)> {
    let dir: &Path = &args.model;
    check_model_dir(dir)?;
    let device = sluice::device::try_wgpu()?;
    let t0 = Instant::now();
    let bar = if verbose {
        indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template("loading {bar:30} {pos}/{len} layers")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    let opts = LoadOptions {
        dtype: args.dtype,
        ..LoadOptions::default()
    };
    let (cfg, model) = sluice::model::files::load_model_with(dir, &device, opts, &mut |d, t| {
        bar.set_length(t);
        bar.set_position(d);
    })
    .map_err(|e| format!("loading the model from {}: {e}", dir.display()))?;
    bar.finish_and_clear();
    let model = match &args.adapter {
        Some(a) => {
            let (model, names) = sluice::model::files::load_adapter_dir(model, &cfg, a, &device)
                .map_err(|e| format!("--adapter: {e}"))?;
            if verbose {
                eprintln!(
                    "sluice: LoRA adapter {} on {} projections",
                    a.display(),
                    names.len()
                );
            }
            model
        }
        None => model,
    };
    if verbose {
        let bytes: usize = model.linears().map(|l| l.device_bytes()).sum();
        eprintln!(
            "sluice: loaded {} ({} layers, hidden {}, vocab {}; projections {:.1} MB on the \
             device) in {:.2} s",
            dir.display(),
            cfg.num_hidden_layers,
            cfg.hidden_size,
            cfg.vocab_size,
            bytes as f64 / 1e6,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok((device, cfg, model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(parse_ids("1,2,3"), Ok(vec![1, 2, 3]));
        assert_eq!(parse_ids(" 7 , 0,42 "), Ok(vec![7, 0, 42]));
        assert_eq!(parse_ids("5"), Ok(vec![5]));
        let e = parse_ids("1,,2").unwrap_err();
        assert!(e.contains("id 2 is empty"), "{e}");
        let e = parse_ids("1,x").unwrap_err();
        assert!(e.contains("id 2 (`x`)"), "{e}");
        assert!(parse_ids("1,-3").unwrap_err().contains("`-3`"));
        assert!(parse_ids("4294967296").is_err());
        assert!(parse_ids("1,2,").unwrap_err().contains("id 3 is empty"));
        assert!(parse_ids("").unwrap_err().contains("empty"));
        assert!(parse_ids("  ").is_err());
    }

    #[test]
    fn rows() {
        assert_eq!(
            parse_rows("1,2,3;4,5,6"),
            Ok(vec![vec![1, 2, 3], vec![4, 5, 6]])
        );
        assert_eq!(parse_rows("1,2;"), Ok(vec![vec![1, 2]]));
        assert_eq!(parse_rows(" 1 ; 2 "), Ok(vec![vec![1], vec![2]]));
        let e = parse_rows("1,2;3,y").unwrap_err();
        assert!(e.starts_with("row 2: id 2 (`y`)"), "{e}");
        let e = parse_rows("1,2;;3,4").unwrap_err();
        assert!(e.starts_with("row 2:"), "{e}");
        assert!(parse_rows(";").is_err());
        assert!(parse_rows("").is_err());
    }

    #[test]
    fn equal_lengths() {
        assert_eq!(check_equal_lengths(&[vec![1, 2], vec![3, 4]]), Ok(2));
        let e = check_equal_lengths(&[vec![1, 2], vec![3, 4], vec![5]]).unwrap_err();
        assert!(e.starts_with("row 3 has 1 ids but row 1 has 2"), "{e}");
    }

    #[test]
    fn vocab() {
        assert!(check_vocab(&[vec![0, 255]], 256).is_ok());
        let e = check_vocab(&[vec![0, 256]], 256).unwrap_err();
        assert!(e.contains("token id 256 (position 2)"), "{e}");
        let e = check_vocab(&[vec![1], vec![300]], 256).unwrap_err();
        assert!(e.contains("row 2, position 1"), "{e}");
    }

    #[test]
    fn sampling_values() {
        assert_eq!(non_negative_f32("0"), Ok(0.0));
        assert!(non_negative_f32("-1").is_err());
        assert!(non_negative_f32("nan").is_err());
        assert!(unit_interval_open("0").is_err());
        assert_eq!(unit_interval_open("1"), Ok(1.0));
        assert!(unit_interval("1.5").is_err());
        assert!(positive_f32("0").is_err());
    }
}
