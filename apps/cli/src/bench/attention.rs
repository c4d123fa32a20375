//! `sluice bench attention`: the sigmoid-gated attention op's WGSL kernels against the
//! composed-ops reference (materialised softmax).
//!
//! Shape: B=1, Hq=8, Hkv=2 (GQA 4), d=64, causal, no padding, f32; q, k, v, gate ~ N(0, 1).
//! Measured per T:
//! - forward on the plain wgpu device, waiting by reading back one element of the output;
//! - forward + backward on `device.autodiff()` with loss = sum(output ⊙ c) for a fixed random
//!   cotangent c, waiting by reading back one element of dL/dq;
//!
//! each for [`gated_attention`] and [`reference::forward`]. `--probe-max` then doubles T to
//! find the largest forward+backward each can run, stopping at a failure (e.g. an allocation
//! over the device's buffer limit), at a time cap per run, or where the estimated memory
//! passes a cap (so a CPU driver does not swap the machine to death).

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use serde_json::{Value, json};
use sluice::ops::gated_attention::{AttentionOptions, Kernels, gated_attention, reference};

use super::{Measured, Table, fmt_ratio, ratio, read_back_first, round, time_it};
use crate::Result;

const B: usize = 1;
const HQ: usize = 8;
const HKV: usize = 2;
const D: usize = 64;
/// The target: WGSL at least this much faster than composed at T=1024 fwd+bwd.
const TARGET_T: usize = 1024;
const TARGET_SPEEDUP: f64 = 5.0;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Timed repetitions per figure, after one warm-up run.
    #[arg(long, default_value_t = 5, value_parser = positive)]
    reps: usize,

    /// Sequence lengths to time (Tq = Tk = T), comma-separated.
    #[arg(
        long = "t",
        value_name = "T,..",
        value_delimiter = ',',
        default_values_t = [256, 1024, 4096],
        value_parser = positive
    )]
    t: Vec<usize>,

    /// Skip the composed reference for T above this (it materialises T×T scores).
    #[arg(long, value_name = "T")]
    ref_max_t: Option<usize>,

    /// Then find the largest T each implementation's forward+backward runs at, doubling T
    /// from --probe-start.
    #[arg(long)]
    probe_max: bool,

    /// First T of the probe.
    #[arg(long, default_value_t = 1024, value_name = "T", value_parser = positive)]
    probe_start: usize,

    /// Probe: stop an implementation once one run took longer than this many seconds.
    #[arg(long, default_value_t = 60.0, value_name = "S")]
    probe_time_s: f64,

    /// Probe: do not try a T whose estimated memory exceeds this many GiB.
    #[arg(long, default_value_t = 16.0, value_name = "GIB")]
    probe_mem_gib: f64,

    /// Probe: give up on an implementation after this many seconds in total.
    #[arg(long, default_value_t = 300.0, value_name = "S")]
    probe_total_s: f64,

    /// Probe only this implementation (default: both, WGSL first).
    #[arg(long, value_enum, value_name = "IMPL")]
    probe_only: Option<Impl>,

    /// Time the workgroup-tile kernels instead of the subgroup kernels the op picks for
    /// T >= 128 where the adapter has one fixed subgroup size (lavapipe, NVIDIA, Apple).
    #[arg(long)]
    tiled: bool,

    /// Print one JSON object per line instead of tables.
    #[arg(long)]
    json: bool,
}

fn positive(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{s}` is not a positive integer")),
    }
}

/// WGSL op or composed reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Impl {
    /// The op as it runs by default (`Kernels::Auto`).
    Wgsl,
    /// The op with `Kernels::Tiled`.
    WgslTiled,
    Reference,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Wgsl => "WGSL",
            Impl::WgslTiled => "WGSL (tiled)",
            Impl::Reference => "reference",
        }
    }
}

fn randn<const N: usize>(shape: [usize; N], dev: &Device) -> Tensor<N> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), dev)
}

struct Inputs {
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    gate: Tensor<4>,
    /// Cotangent of the output.
    co: Tensor<4>,
}

impl Inputs {
    fn new(t: usize, dev: &Device) -> Self {
        Self {
            q: randn([B, t, HQ, D], dev),
            k: randn([B, t, HKV, D], dev),
            v: randn([B, t, HKV, D], dev),
            gate: randn([B, t, HQ, D], dev),
            co: randn([B, t, HQ, D], dev),
        }
    }
}

fn forward(which: Impl, [q, k, v, gate]: [&Tensor<4>; 4]) -> Result<Tensor<4>> {
    let mut opts = AttentionOptions::default();
    if which == Impl::WgslTiled {
        opts.kernels = Kernels::Tiled;
    }
    let (q, k, v, gate) = (q.clone(), k.clone(), v.clone(), gate.clone());
    Ok(match which {
        Impl::Wgsl | Impl::WgslTiled => gated_attention(q, k, v, gate, &opts)?,
        Impl::Reference => reference::forward(q, k, v, gate, &opts),
    })
}

fn time_forward(which: Impl, x: &Inputs, warmup: usize, reps: usize) -> Measured {
    time_it(warmup, reps, || {
        let y = forward(which, [&x.q, &x.k, &x.v, &x.gate])?;
        read_back_first(y, "y")
    })
}

fn time_forward_backward(
    which: Impl,
    x: &Inputs,
    dev: &Device,
    warmup: usize,
    reps: usize,
) -> Measured {
    let ad = dev.clone().autodiff();
    let leaf = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), &ad).require_grad();
    let (q, k, v, gate) = (leaf(&x.q), leaf(&x.k), leaf(&x.v), leaf(&x.gate));
    let co = Tensor::<4>::from_data(x.co.to_data(), &ad);
    time_it(warmup, reps, || {
        let y = forward(which, [&q, &k, &v, &gate])?;
        let grads = (y * co.clone()).sum().backward();
        let dq = q
            .grad(&grads)
            .ok_or("the backward produced no gradient for q")?;
        read_back_first(dq, "dL/dq")
    })
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Estimated device memory of one forward+backward, in bytes: inputs, output, cotangent
/// and gradients (O(T) for both), plus for the reference the materialised `[B,Hq,T,T]`
/// tensors its autodiff graph keeps (scores, masked scores, exp, probabilities and their
/// gradients: about 6 of them, and the `[B,1,T,T]` mask), for the WGSL op the saved
/// log-sum-exp `[B,Hq,T]` and the backward's row sums.
fn estimated_bytes(which: Impl, t: usize) -> f64 {
    let io = (B * t * D * (3 * HQ + 2 * HKV)) as f64 * 4.0 * 2.0; // tensors and grads
    match which {
        Impl::Wgsl | Impl::WgslTiled => io + (2 * B * HQ * t) as f64 * 4.0,
        Impl::Reference => io + (6 * B * HQ + B) as f64 * (t * t) as f64 * 4.0,
    }
}

/// Size of one materialised `[B,Hq,T,T]` f32 score matrix, in MiB.
fn score_matrix_mib(t: usize) -> f64 {
    (B * HQ * t * t) as f64 * 4.0 / (1024.0 * 1024.0)
}

struct Row {
    t: usize,
    wgsl_fwd: Measured,
    wgsl_fwd_bwd: Measured,
    ref_fwd: Measured,
    ref_fwd_bwd: Measured,
}

impl Row {
    fn speedups(&self) -> (Option<f64>, Option<f64>) {
        (
            ratio(self.ref_fwd.median_ms(), self.wgsl_fwd.median_ms()),
            ratio(self.ref_fwd_bwd.median_ms(), self.wgsl_fwd_bwd.median_ms()),
        )
    }

    fn json(&self) -> Value {
        let (f, fb) = self.speedups();
        let r = |x: Option<f64>| x.map(|x| round(x, 3));
        json!({
            "bench": "attention",
            "T": self.t,
            "wgsl": { "fwd": self.wgsl_fwd.json(), "fwd_bwd": self.wgsl_fwd_bwd.json() },
            "reference": { "fwd": self.ref_fwd.json(), "fwd_bwd": self.ref_fwd_bwd.json() },
            "ref_over_wgsl": { "fwd": r(f), "fwd_bwd": r(fb) },
            "estimated_fwd_bwd_mib": {
                "wgsl": round(estimated_bytes(Impl::Wgsl, self.t) / (1024.0 * 1024.0), 2),
                "reference": round(estimated_bytes(Impl::Reference, self.t) / (1024.0 * 1024.0), 2),
            },
        })
    }
}

/// How a probe ended.
#[derive(Debug, Clone, PartialEq)]
enum ProbeStop {
    /// A run failed at this T.
    Failed { t: usize, why: String },
    /// The last successful run took longer than the per-run cap.
    TimeCap { secs: f64 },
    /// The total time budget of the probe ran out.
    TotalTime,
    /// The next T's estimated memory exceeds the cap.
    MemoryCap { t: usize, gib: f64 },
    /// The op's own limit on T reached (no larger T tried).
    Limit { t: usize },
}

#[derive(Debug, Clone)]
struct Probe {
    which: Impl,
    /// Largest T that ran, with its time in ms.
    largest: Option<(usize, f64)>,
    stop: ProbeStop,
}

impl Probe {
    /// "4096" when a failure bounds it, "> 4096" (or ">= 4096") when a cap stopped it first.
    fn largest_cell(&self) -> String {
        match (&self.largest, &self.stop) {
            (None, ProbeStop::Failed { t, .. }) => format!("< {t}"),
            (None, _) => "-".into(),
            (Some((t, _)), ProbeStop::Failed { .. }) => t.to_string(),
            (Some((t, _)), _) => format!(">= {t}"),
        }
    }

    fn reason(&self) -> String {
        match &self.stop {
            ProbeStop::Failed { t, why } => format!("T={t} failed: {}", one_line(why)),
            ProbeStop::TimeCap { secs } => format!("last run took {secs:.1} s (time cap)"),
            ProbeStop::TotalTime => "probe time budget spent".into(),
            ProbeStop::MemoryCap { t, gib } => {
                format!("T={t} would need ~{gib:.1} GiB (memory cap)")
            }
            ProbeStop::Limit { t } => format!("T={t} is past the probe's maximum"),
        }
    }

    fn json(&self) -> Value {
        json!({
            "bench": "attention_probe",
            "impl": self.which.name(),
            "largest_t": self.largest.map(|(t, _)| t),
            "largest_t_ms": self.largest.map(|(_, ms)| round(ms, 2)),
            "bounded_by_failure": matches!(self.stop, ProbeStop::Failed { .. }),
            "stopped": self.reason(),
        })
    }
}

/// `s` on one line (whitespace runs collapsed), at most 300 characters.
fn one_line(s: &str) -> String {
    let line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 300 {
        format!("{}...", line.chars().take(300).collect::<String>())
    } else {
        line
    }
}

/// Largest T that fits the op's kernels (the workgroup grid), for the probe's upper bound.
const PROBE_MAX_T: usize = 1 << 18;

fn probe(which: Impl, args: &Args, dev: &Device) -> Probe {
    let started = Instant::now();
    let mut largest = None;
    let mut t = args.probe_start;
    let stop = loop {
        if t > PROBE_MAX_T {
            break ProbeStop::Limit { t };
        }
        let est = estimated_bytes(which, t) / GIB;
        if est > args.probe_mem_gib {
            break ProbeStop::MemoryCap { t, gib: est };
        }
        if started.elapsed().as_secs_f64() > args.probe_total_s {
            break ProbeStop::TotalTime;
        }
        progress(&format!(
            "probe {}: T={t} forward+backward (~{:.2} GiB estimated)",
            which.name(),
            est
        ));
        let x = Inputs::new(t, dev);
        let m = time_forward_backward(which, &x, dev, 0, 1);
        drop(x);
        dev.memory_cleanup();
        match m {
            Measured::Done(timing) => {
                largest = Some((t, timing.median_ms));
                let secs = timing.median_ms / 1e3;
                if secs > args.probe_time_s {
                    break ProbeStop::TimeCap { secs };
                }
                // Causal attention costs O(T²) work either way: the next run takes ~4x.
                if started.elapsed().as_secs_f64() + secs * 4.0 > args.probe_total_s {
                    break ProbeStop::TotalTime;
                }
            }
            Measured::Failed(why) | Measured::Skipped(why) => {
                break ProbeStop::Failed { t, why };
            }
        }
        t *= 2;
    };
    Probe {
        which,
        largest,
        stop,
    }
}

fn progress(msg: &str) {
    eprintln!("  .. {msg}");
}

pub fn run(args: &Args) -> Result<()> {
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let dev = sluice::device::wgpu();
    if !sluice::device::supports_wgsl(&dev) {
        return Err("the default device does not run WGSL kernels (wgpu runtime expected)".into());
    }
    dev.seed(0);
    if args.json {
        println!(
            "{}",
            json!({
                "bench": "attention",
                "env": {
                    "device": format!("{dev:?}"), "build": build,
                    "B": B, "Hq": HQ, "Hkv": HKV, "d": D, "dtype": "f32", "causal": true,
                    "kernels": if args.tiled { "tiled" } else { "auto" },
                }
            })
        );
    } else {
        eprintln!(
            "sluice bench attention: B={B}, Hq={HQ}, Hkv={HKV}, d={D}, causal, f32, {build} build"
        );
        progress("starting the wgpu device and compiling kernels");
    }

    let wgsl = if args.tiled {
        Impl::WgslTiled
    } else {
        Impl::Wgsl
    };
    let mut rows = Vec::new();
    for &t in &args.t {
        let x = Inputs::new(t, &dev);
        let reps = args.reps;
        progress(&format!("T={t}: WGSL forward ({reps} reps)"));
        let wgsl_fwd = time_forward(wgsl, &x, 1, reps);
        progress(&format!("T={t}: WGSL forward+backward ({reps} reps)"));
        let wgsl_fwd_bwd = time_forward_backward(wgsl, &x, &dev, 1, reps);
        let (ref_fwd, ref_fwd_bwd) = match args.ref_max_t {
            Some(max) if t > max => {
                let why = format!("T > --ref-max-t {max}");
                (Measured::Skipped(why.clone()), Measured::Skipped(why))
            }
            _ => {
                progress(&format!("T={t}: reference forward ({reps} reps)"));
                let f = time_forward(Impl::Reference, &x, 1, reps);
                progress(&format!("T={t}: reference forward+backward ({reps} reps)"));
                let fb = time_forward_backward(Impl::Reference, &x, &dev, 1, reps);
                (f, fb)
            }
        };
        drop(x);
        dev.memory_cleanup();
        let row = Row {
            t,
            wgsl_fwd,
            wgsl_fwd_bwd,
            ref_fwd,
            ref_fwd_bwd,
        };
        if args.json {
            println!("{}", row.json());
        }
        rows.push(row);
    }

    let probes: Vec<Probe> = if args.probe_max {
        // WGSL first: a reference allocation failure may leave the device unusable.
        [wgsl, Impl::Reference]
            .into_iter()
            .filter(|&which| args.probe_only.is_none_or(|only| only == which))
            .map(|which| {
                let p = probe(which, args, &dev);
                if args.json {
                    println!("{}", p.json());
                }
                p
            })
            .collect()
    } else {
        Vec::new()
    };

    if !args.json {
        print_tables(&rows, &probes, args, build);
    }
    let failed = rows
        .iter()
        .flat_map(|r| [&r.wgsl_fwd, &r.wgsl_fwd_bwd, &r.ref_fwd, &r.ref_fwd_bwd])
        .any(|m| matches!(m, Measured::Failed(_)));
    if failed {
        return Err("some measurements failed (see above)".into());
    }
    Ok(())
}

fn print_tables(rows: &[Row], probes: &[Probe], args: &Args, build: &str) {
    println!();
    println!("Gated attention, B={B}, Hq={HQ}, Hkv={HKV}, d={D}, causal, f32 ({build} build)");
    let kernels = if args.tiled {
        "workgroup-tile kernels (--tiled)"
    } else {
        "subgroup kernels (T >= 128, adapters with a fixed subgroup size), else workgroup-tile"
    };
    println!("Median wall time in ms after 1 warm-up run; WGSL = Sluice's flash-style kernels,");
    println!("  {kernels};");
    println!(
        "ref = the same maths in composed Burn tensor ops (materialised softmax), same device."
    );
    println!();
    let mut table = Table::new(&[
        "T",
        "reps",
        "WGSL fwd",
        "WGSL fwd+bwd",
        "ref fwd",
        "ref fwd+bwd",
        "ref/WGSL fwd",
        "ref/WGSL fwd+bwd",
        "T×T scores MiB",
    ]);
    for r in rows {
        let (f, fb) = r.speedups();
        table.row(vec![
            r.t.to_string(),
            r.wgsl_fwd
                .reps()
                .or(r.wgsl_fwd_bwd.reps())
                .map_or("-".into(), |n| n.to_string()),
            r.wgsl_fwd.cell(),
            r.wgsl_fwd_bwd.cell(),
            r.ref_fwd.cell(),
            r.ref_fwd_bwd.cell(),
            fmt_ratio(f),
            fmt_ratio(fb),
            format!("{:.1}", score_matrix_mib(r.t)),
        ]);
    }
    table.print();
    println!(
        "  (T×T scores: one materialised [B,Hq,T,T] f32 matrix; the reference's autodiff keeps"
    );
    println!("   several, the WGSL op none: it saves a [B,Hq,T] log-sum-exp, O(T) memory.)");
    if let Some(r) = rows.iter().find(|r| r.t == TARGET_T) {
        let (_, fb) = r.speedups();
        if let Some(s) = fb {
            println!(
                "  target: >= {TARGET_SPEEDUP}x faster than composed at T={TARGET_T} fwd+bwd: {s:.2}x, {}",
                if s >= TARGET_SPEEDUP {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
    }

    if !probes.is_empty() {
        println!();
        println!(
            "Largest T for forward+backward (T doubled from {}; caps: {} s per run, {} s per",
            args.probe_start, args.probe_time_s, args.probe_total_s
        );
        println!(
            "implementation, ~{} GiB estimated memory); \">= T\": a cap stopped the probe before a failure",
            args.probe_mem_gib
        );
        let mut table = Table::new(&["impl", "largest T", "its time ms", "stopped because"]);
        for p in probes {
            table.row(vec![
                p.which.name().into(),
                p.largest_cell(),
                p.largest.map_or("-".into(), |(_, ms)| super::fmt_ms(ms)),
                p.reason(),
            ]);
        }
        table.print();
    }

    let mut notes = Vec::new();
    for r in rows {
        for (what, m) in [
            ("WGSL fwd", &r.wgsl_fwd),
            ("WGSL fwd+bwd", &r.wgsl_fwd_bwd),
            ("ref fwd", &r.ref_fwd),
            ("ref fwd+bwd", &r.ref_fwd_bwd),
        ] {
            if let Measured::Failed(why) | Measured::Skipped(why) = m {
                notes.push(format!("T={}: {what}: {}", r.t, one_line(why)));
            }
        }
    }
    if !notes.is_empty() {
        println!();
        println!("Notes");
        for n in notes {
            println!("  {n}");
        }
    }
    if build == "debug" {
        println!();
        println!("(debug build: host overhead inflates short timings; use --release for figures)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_estimates_scale() {
        // The reference grows ~4x per doubling at long T, the WGSL op 2x.
        let r = estimated_bytes(Impl::Reference, 8192) / estimated_bytes(Impl::Reference, 4096);
        assert!(r > 3.9 && r <= 4.0, "{r}");
        let w = estimated_bytes(Impl::Wgsl, 8192) / estimated_bytes(Impl::Wgsl, 4096);
        assert!((w - 2.0).abs() < 1e-9, "{w}");
        assert_eq!(score_matrix_mib(1024), 32.0);
    }

    #[test]
    fn probe_cells() {
        let p = |largest, stop| Probe {
            which: Impl::Wgsl,
            largest,
            stop,
        };
        let failed = ProbeStop::Failed {
            t: 8192,
            why: "out of memory\nmore".into(),
        };
        assert_eq!(p(Some((4096, 1.0)), failed.clone()).largest_cell(), "4096");
        assert_eq!(p(None, failed.clone()).largest_cell(), "< 8192");
        assert_eq!(
            p(Some((4096, 1.0)), ProbeStop::TimeCap { secs: 70.0 }).largest_cell(),
            ">= 4096"
        );
        assert_eq!(
            p(None, failed).reason(),
            "T=8192 failed: out of memory more"
        );
    }
}
