//! `sluice bench ...`: wall-clock benchmarks of Sluice's ops.
//!
//! Shared pieces live here: timing ([`time_it`]), text tables ([`Table`]) and the PyTorch
//! baseline reader ([`torch`]). Each benchmark has its own module: `delta-rule`,
//! `attention` (the ops), `generate` (a whole checkpoint) and `train` (SFT and RL steps on the
//! demo model, optionally against TRL).

mod attention;
mod delta_rule;
mod generate;
mod torch;
mod train;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use burn::tensor::Tensor;
use clap::Subcommand;

use crate::Result;

/// What to benchmark.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The gated delta rule: WGSL kernels vs the composed-ops reference (prefill forward,
    /// forward+backward, one-token decode) and optionally PyTorch on the CPU.
    DeltaRule(delta_rule::Args),
    /// Sigmoid-gated attention: WGSL kernels vs the composed-ops reference (forward,
    /// forward+backward), and optionally the largest T each runs at.
    Attention(attention::Args),
    /// Generation with a checkpoint: prefill and decode tokens/s at batch 1 and 8, memory,
    /// and the state size as a sequence grows.
    Generate(generate::Args),
    /// Training steps on the demo model: SFT step, RL rollout tokens/s, update steps/s and
    /// whole RL step time, and optionally TRL's GRPOTrainer on the CPU (`--trl`).
    Train(train::Args),
}

/// Runs one `bench` subcommand.
pub fn run(cmd: BenchCommand) -> Result<()> {
    // A failing kernel (or an unfinished one) is reported in the results; keep its panic
    // message to one line instead of a backtrace.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    match cmd {
        BenchCommand::DeltaRule(args) => delta_rule::run(&args),
        BenchCommand::Attention(args) => attention::run(&args),
        BenchCommand::Generate(args) => generate::run(&args),
        BenchCommand::Train(args) => train::run(&args),
    }
}

/// Wall-clock statistics of one measured operation, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub median_ms: f64,
    pub min_ms: f64,
    pub reps: usize,
}

impl Timing {
    /// Median and min of wall times in ms; `None` when there are none.
    pub fn from_samples(mut times: Vec<f64>) -> Option<Self> {
        if times.is_empty() {
            return None;
        }
        times.sort_by(f64::total_cmp);
        let n = times.len();
        let median_ms = if n % 2 == 1 {
            times[n / 2]
        } else {
            0.5 * (times[n / 2 - 1] + times[n / 2])
        };
        Some(Timing {
            median_ms,
            min_ms: times[0],
            reps: n,
        })
    }
}

/// The outcome of one measurement: a timing, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum Measured {
    Done(Timing),
    Skipped(String),
    Failed(String),
}

impl Measured {
    pub fn median_ms(&self) -> Option<f64> {
        match self {
            Measured::Done(t) => Some(t.median_ms),
            _ => None,
        }
    }

    pub fn reps(&self) -> Option<usize> {
        match self {
            Measured::Done(t) => Some(t.reps),
            _ => None,
        }
    }

    /// Table cell: the median in ms, or a short reason.
    pub fn cell(&self) -> String {
        match self {
            Measured::Done(t) => fmt_ms(t.median_ms),
            Measured::Skipped(_) => "skipped".into(),
            Measured::Failed(_) => "FAILED".into(),
        }
    }

    /// JSON value: `{median_ms, min_ms, reps}` or `{skipped|error: reason}`.
    pub fn json(&self) -> serde_json::Value {
        match self {
            Measured::Done(t) => serde_json::json!({
                "median_ms": round(t.median_ms, 4),
                "min_ms": round(t.min_ms, 4),
                "reps": t.reps,
            }),
            Measured::Skipped(why) => serde_json::json!({ "skipped": why }),
            Measured::Failed(why) => serde_json::json!({ "error": why }),
        }
    }
}

/// Times `f` (which must wait for the device before it returns): `warmup` untimed calls,
/// then `reps` timed ones; median and min. An `Err` or a panic (e.g. an unfinished kernel)
/// becomes [`Measured::Failed`] so that the rest of the benchmark still runs.
pub fn time_it(warmup: usize, reps: usize, mut f: impl FnMut() -> Result<()>) -> Measured {
    let reps = reps.max(1);
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<Vec<f64>> {
        for _ in 0..warmup {
            f()?;
        }
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t0 = Instant::now();
            f()?;
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        Ok(times)
    }));
    match outcome {
        Ok(Ok(times)) => Timing::from_samples(times)
            .map_or_else(|| Measured::Failed("no timed run".into()), Measured::Done),
        Ok(Err(e)) => Measured::Failed(e.to_string()),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into());
            Measured::Failed(format!("panicked: {msg}"))
        }
    }
}

/// Waits for `t` by reading its first element back, and fails unless that element is finite.
/// A failed allocation surfaces only in a read-back: with a device sync alone the reference
/// attention "ran" T=4096 in a quarter of its T=1024 time, having computed nothing.
pub fn read_back_first(t: Tensor<4>, what: &str) -> Result<()> {
    let first: f32 = t
        .slice([0..1, 0..1, 0..1, 0..1])
        .try_into_scalar()
        .map_err(|e| format!("reading back {what}: {e:?}"))?;
    if !first.is_finite() {
        return Err(format!("{what}[0] is {first}").into());
    }
    Ok(())
}

/// `a / b` when both exist and b > 0.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

pub fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 1.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.3}")
    }
}

pub fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r >= 10.0 => format!("{r:.0}x"),
        Some(r) => format!("{r:.2}x"),
        None => "-".into(),
    }
}

pub fn fmt_opt_ms(ms: Option<f64>) -> String {
    ms.map(fmt_ms).unwrap_or_else(|| "-".into())
}

/// Rounds to `digits` decimals (for compact JSON).
pub fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// A plain-text table: right-aligned columns, a header and a rule.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let n = self.header.len();
        let mut width: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let parts: Vec<String> = (0..n)
                .map(|i| {
                    let c = cells.get(i).map(String::as_str).unwrap_or("");
                    format!("{c:>w$}", w = width[i])
                })
                .collect();
            println!("  {}", parts.join("  "));
        };
        line(&self.header);
        let total = width.iter().sum::<usize>() + 2 * (n.saturating_sub(1));
        println!("  {}", "-".repeat(total));
        for row in &self.rows {
            line(row);
        }
    }
}
