//! `sluice`: the command-line front end of the Sluice engine.
//!
//! Subcommands: `generate`, `chat`, `logits`, `init`, `merge` (in [`cmd`]) and `bench delta-rule`,
//! `bench attention`, `bench generate` (in [`bench`]). Later ones (`train`, `demo`, ...) slot
//! in as new variants of [`Command`] / [`bench::BenchCommand`], each in its own module.

mod bench;
mod cmd;
mod train;

use clap::{Parser, Subcommand};

/// Errors reported to the user (message, exit status 1).
pub type Error = Box<dyn std::error::Error>;
/// Result of a subcommand.
pub type Result<T> = std::result::Result<T, Error>;

/// Gated hybrid language models (Gated DeltaNet + gated attention) on any WebGPU device.
#[derive(Debug, Parser)]
#[command(name = "sluice", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Continue a prompt (text or token ids) with a Hugging Face checkpoint, streaming the
    /// text (or printing JSON with the token ids).
    Generate(cmd::generate::Args),
    /// Talk with a checkpoint through its chat template (interactive, streaming).
    Chat(cmd::chat::Args),
    /// Write a random-weight checkpoint of a config.json in the Hugging Face layout (for tests,
    /// benchmarks and pre-training).
    Init(cmd::init::Args),
    /// Fold a LoRA adapter (PEFT format) into its base and write a Hugging Face checkpoint.
    Merge(cmd::merge::Args),
    /// Write the logits of token-id rows to a safetensors file (to compare implementations).
    Logits(cmd::logits::Args),
    /// Train a tiny hybrid model from scratch on an embedded task (SFT, then GRPO-family RL)
    /// and report held-out accuracy before and after each phase; the last stdout line is JSON.
    Demo(train::demo::Args),
    /// SFT and/or GRPO-family RL from a TOML recipe, with checkpoints, metrics and plots.
    Train(train::run::Args),
    /// Time Sluice's kernels against the composed-ops reference (and PyTorch, if asked).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() {
    let cli = Cli::parse();
    // A pinned graphics API is brought up first, so a bad value or a missing driver is
    // reported here rather than as a panic inside a command.
    if std::env::var_os(sluice::device::BACKEND_ENV).is_some()
        && let Err(e) = sluice::device::try_wgpu()
    {
        eprintln!("sluice: error: {e}");
        std::process::exit(1);
    }
    let result = match cli.command {
        Command::Generate(args) => cmd::generate::run(&args),
        Command::Chat(args) => cmd::chat::run(&args),
        Command::Logits(args) => cmd::logits::run(&args),
        Command::Init(args) => cmd::init::run(&args),
        Command::Merge(args) => cmd::merge::run(&args),
        Command::Demo(args) => train::demo::run(&args),
        Command::Train(args) => train::run::run(&args),
        Command::Bench(cmd) => bench::run(cmd),
    };
    if let Err(e) = result {
        eprintln!("sluice: error: {e}");
        std::process::exit(1);
    }
}
