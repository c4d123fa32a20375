//! `sluice`: the command-line front end of the Sluice engine.
//!
//! Subcommands (this milestone): `bench delta-rule`. Later ones (`bench attention`,
//! `generate`, `chat`, `train`, `demo`, ...) slot in as new variants of [`Command`] /
//! [`bench::BenchCommand`], each in its own module.

mod bench;

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
    /// Time Sluice's kernels against the composed-ops reference (and PyTorch, if asked).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(cmd) => bench::run(cmd),
    };
    if let Err(e) = result {
        eprintln!("sluice: error: {e}");
        std::process::exit(1);
    }
}
