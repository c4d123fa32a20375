//! `sluice bench delta-rule`: the gated delta rule's WGSL kernels against the composed-ops
//! reference (and optionally PyTorch on the CPU).
//!
//! Shape (default): B=1, Hk=Hv=4, dk=dv=64, f32 (`--b`, `--hk`, `--hv`, `--dk`, `--dv`,
//! `--chunk` change it), q/k l2-normalised in the op, g = -softplus(x - 1.5),
//! beta = sigmoid(x) as in `scripts/bench_torch_delta_rule.py`. Measured per T:
//! - forward on the plain wgpu device, waiting by reading back one element of the output;
//! - forward + backward on `device.autodiff()` with
//!   loss = sum(output ⊙ c_o) + sum(final_state ⊙ c_s) for fixed random cotangents, waiting
//!   by reading back one element of dL/dq;
//!
//! each for the WGSL op ([`delta_rule`]) and for [`reference::forward`] (the per-token
//! recurrence in plain tensor ops, differentiated by Burn's autodiff). Then one decode step:
//! [`delta_rule_decode`] vs the reference at T=1 with a state.

use std::path::PathBuf;

use burn::tensor::activation::{sigmoid, softplus};
use burn::tensor::{Device, Distribution, Tensor};
use serde_json::{Value, json};
use sluice::ops::delta_rule::{
    DeltaRuleOptions, DeltaRuleOutput, delta_rule, delta_rule_decode, reference,
};

use super::torch::{self, TorchResults};
use super::{
    Measured, Table, fmt_ms, fmt_opt_ms, fmt_ratio, ratio, read_back_first, round, time_it,
};
use crate::Result;

/// From this T on the reference (a loop over tokens) gets at most [`LONG_REF_REPS`] reps.
const LONG_T: usize = 4096;
const LONG_REF_REPS: usize = 2;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Timed repetitions per prefill figure, after one warm-up run (the reference gets at
    /// most 2 from T=4096 on: it runs token by token).
    #[arg(long, default_value_t = 5, value_parser = positive)]
    reps: usize,

    /// Sequence lengths to time, comma-separated.
    #[arg(
        long = "t",
        value_name = "T,..",
        value_delimiter = ',',
        default_values_t = [256, 1024, 4096],
        value_parser = positive
    )]
    t: Vec<usize>,

    /// Timed repetitions of the one-token decode step (after 5 warm-up steps).
    #[arg(long, default_value_t = 100, value_parser = positive)]
    decode_reps: usize,

    /// Skip the composed reference for T above this (it is slow at long T).
    #[arg(long, value_name = "T")]
    ref_max_t: Option<usize>,

    /// Compare with PyTorch figures from FILE (JSON lines of
    /// scripts/bench_torch_delta_rule.py, or the file its --json-out writes).
    #[arg(long, value_name = "FILE", conflicts_with = "torch")]
    torch_json: Option<PathBuf>,

    /// Run scripts/bench_torch_delta_rule.py (with $SLUICE_PYTHON, default python3) first and
    /// compare with its figures; if it fails, say so and go on without them.
    #[arg(long)]
    torch: bool,

    /// Print one JSON object per line instead of tables.
    #[arg(long)]
    json: bool,

    /// Batch size.
    #[arg(long, default_value_t = 1, value_parser = positive)]
    b: usize,

    /// Key heads.
    #[arg(long, default_value_t = 4, value_parser = positive)]
    hk: usize,

    /// Value heads (a multiple of --hk).
    #[arg(long, default_value_t = 4, value_parser = positive)]
    hv: usize,

    /// Key head dim.
    #[arg(long, default_value_t = 64, value_parser = positive)]
    dk: usize,

    /// Value head dim.
    #[arg(long, default_value_t = 64, value_parser = positive)]
    dv: usize,

    /// Chunk length of the chunked forward (16, 32 or 64).
    #[arg(long, default_value_t = 64, value_parser = positive)]
    chunk: usize,
}

/// The bench shape.
#[derive(Debug, Clone, Copy)]
struct Shape {
    b: usize,
    hk: usize,
    hv: usize,
    dk: usize,
    dv: usize,
}

fn positive(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{s}` is not a positive integer")),
    }
}

/// Bench inputs for one T (plain wgpu tensors).
struct Inputs {
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    g: Tensor<3>,
    beta: Tensor<3>,
    /// Cotangent of the output.
    co: Tensor<4>,
    /// Cotangent of the final state.
    cs: Tensor<4>,
}

fn randn<const D: usize>(shape: [usize; D], dev: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), dev)
}

impl Inputs {
    fn new(s: Shape, t: usize, dev: &Device) -> Self {
        let Shape { b, hk, hv, dk, dv } = s;
        Self {
            q: randn([b, t, hk, dk], dev),
            k: randn([b, t, hk, dk], dev),
            v: randn([b, t, hv, dv], dev),
            // Model-like gates: log-decay ≤ 0, mostly near 0; beta in (0, 1).
            g: softplus(randn([b, t, hv], dev).sub_scalar(1.5), 1.0).neg(),
            beta: sigmoid(randn([b, t, hv], dev)),
            co: randn([b, t, hv, dv], dev),
            cs: randn([b, hv, dk, dv], dev),
        }
    }
}

/// WGSL op or composed reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impl {
    Wgsl,
    Reference,
}

fn forward(
    which: Impl,
    [q, k, v]: [&Tensor<4>; 3],
    [g, beta]: [&Tensor<3>; 2],
    state: Option<&Tensor<4>>,
    opts: &DeltaRuleOptions,
) -> Result<DeltaRuleOutput> {
    let (q, k, v, g, beta) = (q.clone(), k.clone(), v.clone(), g.clone(), beta.clone());
    let state = state.cloned();
    Ok(match which {
        Impl::Wgsl => delta_rule(q, k, v, g, beta, state, opts)?,
        Impl::Reference => reference::forward(q, k, v, g, beta, state, opts),
    })
}

fn sync(dev: &Device) -> Result<()> {
    dev.sync().map_err(|e| format!("device error: {e}").into())
}

/// Median forward time.
fn time_forward(which: Impl, x: &Inputs, reps: usize, opts: &DeltaRuleOptions) -> Measured {
    time_it(1, reps, || {
        let out = forward(which, [&x.q, &x.k, &x.v], [&x.g, &x.beta], None, opts)?;
        read_back_first(out.output, "output")
    })
}

/// Median forward + backward time on the autodiff device.
fn time_forward_backward(
    which: Impl,
    x: &Inputs,
    dev: &Device,
    reps: usize,
    opts: &DeltaRuleOptions,
) -> Measured {
    let ad = dev.clone().autodiff();
    let leaf4 = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), &ad).require_grad();
    let leaf3 = |t: &Tensor<3>| Tensor::<3>::from_data(t.to_data(), &ad).require_grad();
    let (q, k, v) = (leaf4(&x.q), leaf4(&x.k), leaf4(&x.v));
    let (g, beta) = (leaf3(&x.g), leaf3(&x.beta));
    let co = Tensor::<4>::from_data(x.co.to_data(), &ad);
    let cs = Tensor::<4>::from_data(x.cs.to_data(), &ad);
    time_it(1, reps, || {
        let out = forward(which, [&q, &k, &v], [&g, &beta], None, opts)?;
        let loss = (out.output * co.clone()).sum() + (out.final_state * cs.clone()).sum();
        let grads = loss.backward();
        let dq = q
            .grad(&grads)
            .ok_or("the backward produced no gradient for q")?;
        read_back_first(dq, "dL/dq")
    })
}

/// Median one-token decode step against a carried state.
fn time_decode(
    which: Impl,
    s: Shape,
    dev: &Device,
    reps: usize,
    opts: &DeltaRuleOptions,
) -> Measured {
    let x = Inputs::new(s, 1, dev);
    let state = randn([s.b, s.hv, s.dk, s.dv], dev).mul_scalar(0.1);
    time_it(5, reps, || {
        let (q, k, v, g, beta) = (&x.q, &x.k, &x.v, &x.g, &x.beta);
        let out = match which {
            Impl::Wgsl => delta_rule_decode(
                q.clone(),
                k.clone(),
                v.clone(),
                g.clone(),
                beta.clone(),
                state.clone(),
                opts,
            )?,
            Impl::Reference => forward(which, [q, k, v], [g, beta], Some(&state), opts)?,
        };
        sync(dev)?;
        drop(out);
        Ok(())
    })
}

/// Bytes → MiB.
fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Saved-for-backward state memory: (chunk-boundary states of the WGSL op, what a per-token
/// recurrence keeps), in MiB.
fn state_memory_mib(s: Shape, t: usize, chunk: usize) -> (f64, f64) {
    let per_state = s.b * s.hv * s.dk * s.dv * 4;
    (mib(t.div_ceil(chunk) * per_state), mib(t * per_state))
}

/// All figures for one T.
struct Row {
    t: usize,
    wgsl_fwd: Measured,
    wgsl_fwd_bwd: Measured,
    ref_fwd: Measured,
    ref_fwd_bwd: Measured,
    torch: Option<torch::ChunkTiming>,
    mem_chunk_mib: f64,
    mem_token_mib: f64,
}

impl Row {
    fn ref_over_wgsl(&self) -> (Option<f64>, Option<f64>) {
        (
            ratio(self.ref_fwd.median_ms(), self.wgsl_fwd.median_ms()),
            ratio(self.ref_fwd_bwd.median_ms(), self.wgsl_fwd_bwd.median_ms()),
        )
    }

    fn wgsl_over_torch(&self) -> (Option<f64>, Option<f64>) {
        let t = self.torch.clone().unwrap_or_default();
        (
            ratio(self.wgsl_fwd.median_ms(), t.fwd_ms),
            ratio(self.wgsl_fwd_bwd.median_ms(), t.fwd_bwd_ms),
        )
    }

    fn json(&self) -> Value {
        let (rf, rfb) = self.ref_over_wgsl();
        let (tf, tfb) = self.wgsl_over_torch();
        let r = |x: Option<f64>| x.map(|x| round(x, 3));
        json!({
            "bench": "delta_rule",
            "T": self.t,
            "wgsl": { "fwd": self.wgsl_fwd.json(), "fwd_bwd": self.wgsl_fwd_bwd.json() },
            "reference": { "fwd": self.ref_fwd.json(), "fwd_bwd": self.ref_fwd_bwd.json() },
            "ref_over_wgsl": { "fwd": r(rf), "fwd_bwd": r(rfb) },
            "torch": self.torch.as_ref().map(|t| json!({ "fwd_ms": t.fwd_ms, "fwd_bwd_ms": t.fwd_bwd_ms })),
            "wgsl_over_torch": { "fwd": r(tf), "fwd_bwd": r(tfb) },
            "saved_state_mib": {
                "chunk_boundary": round(self.mem_chunk_mib, 3),
                "per_token": round(self.mem_token_mib, 3),
            },
        })
    }
}

/// The decode figures.
struct DecodeRow {
    wgsl: Measured,
    reference: Measured,
    torch_ms: Option<f64>,
}

impl DecodeRow {
    fn json(&self) -> Value {
        let r = |x: Option<f64>| x.map(|x| round(x, 3));
        json!({
            "bench": "delta_rule_decode",
            "wgsl": self.wgsl.json(),
            "reference": self.reference.json(),
            "ref_over_wgsl": r(ratio(self.reference.median_ms(), self.wgsl.median_ms())),
            "torch_ms": self.torch_ms,
            "wgsl_over_torch": r(ratio(self.wgsl.median_ms(), self.torch_ms)),
        })
    }
}

/// Progress on stderr (stdout stays a clean table or JSON stream).
fn progress(msg: &str) {
    eprintln!("  .. {msg}");
}

pub fn run(args: &Args) -> Result<()> {
    let opts = DeltaRuleOptions {
        chunk_size: args.chunk,
        ..DeltaRuleOptions::default()
    };
    let shape = Shape {
        b: args.b,
        hk: args.hk,
        hv: args.hv,
        dk: args.dk,
        dv: args.dv,
    };
    if !shape.hv.is_multiple_of(shape.hk) {
        return Err(format!("--hv {} is not a multiple of --hk {}", shape.hv, shape.hk).into());
    }
    let Shape { b, hk, hv, dk, dv } = shape;
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };

    // The PyTorch baseline first, so that it does not compete with the GPU runs.
    let torch: Option<TorchResults> = if let Some(path) = &args.torch_json {
        Some(torch::from_file(path)?)
    } else if args.torch {
        match torch::run_script() {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("warning: PyTorch baseline unavailable: {e}; continuing without it");
                None
            }
        }
    } else {
        None
    };

    let dev = sluice::device::wgpu();
    if !sluice::device::supports_wgsl(&dev) {
        return Err("the default device does not run WGSL kernels (wgpu runtime expected)".into());
    }
    dev.seed(0);

    let env = json!({
        "bench": "delta_rule",
        "env": {
            "device": format!("{dev:?}"),
            "build": build,
            "B": b, "Hk": hk, "Hv": hv, "dk": dk, "dv": dv,
            "dtype": "f32",
            "chunk_size": opts.chunk_size,
            "use_qk_l2norm": opts.use_qk_l2norm,
            "torch_source": torch.as_ref().map(|t| t.source.clone()),
            "torch_env": torch.as_ref().and_then(|t| t.env.clone()),
        }
    });
    if args.json {
        println!("{env}");
    } else {
        eprintln!(
            "sluice bench delta-rule: B={b}, Hk={hk}, Hv={hv}, dk={dk}, dv={dv}, chunk {}, f32, {build} build",
            opts.chunk_size
        );
        progress("starting the wgpu device and compiling kernels");
    }

    let mut rows = Vec::new();
    for &t in &args.t {
        let x = Inputs::new(shape, t, &dev);
        let ref_reps = if t >= LONG_T {
            args.reps.min(LONG_REF_REPS)
        } else {
            args.reps
        };
        let skip_ref = args.ref_max_t.is_some_and(|max| t > max);

        progress(&format!("T={t}: WGSL forward ({} reps)", args.reps));
        let wgsl_fwd = time_forward(Impl::Wgsl, &x, args.reps, &opts);
        progress(&format!(
            "T={t}: WGSL forward+backward ({} reps)",
            args.reps
        ));
        let wgsl_fwd_bwd = time_forward_backward(Impl::Wgsl, &x, &dev, args.reps, &opts);
        let (ref_fwd, ref_fwd_bwd) = if skip_ref {
            let why = format!("T > --ref-max-t {}", args.ref_max_t.unwrap_or_default());
            (Measured::Skipped(why.clone()), Measured::Skipped(why))
        } else {
            progress(&format!("T={t}: reference forward ({ref_reps} reps)"));
            let f = time_forward(Impl::Reference, &x, ref_reps, &opts);
            progress(&format!(
                "T={t}: reference forward+backward ({ref_reps} reps)"
            ));
            let fb = time_forward_backward(Impl::Reference, &x, &dev, ref_reps, &opts);
            (f, fb)
        };
        let (mem_chunk_mib, mem_token_mib) = state_memory_mib(shape, t, opts.chunk_size);
        let row = Row {
            t,
            wgsl_fwd,
            wgsl_fwd_bwd,
            ref_fwd,
            ref_fwd_bwd,
            torch: torch.as_ref().and_then(|r| r.chunk.get(&t).cloned()),
            mem_chunk_mib,
            mem_token_mib,
        };
        if args.json {
            println!("{}", row.json());
        }
        rows.push(row);
    }

    progress(&format!("decode step ({} reps)", args.decode_reps));
    let decode = DecodeRow {
        wgsl: time_decode(Impl::Wgsl, shape, &dev, args.decode_reps, &opts),
        reference: time_decode(Impl::Reference, shape, &dev, args.decode_reps, &opts),
        torch_ms: torch.as_ref().and_then(|t| t.decode_step_ms),
    };
    if args.json {
        println!("{}", decode.json());
    } else {
        print_tables(shape, &rows, &decode, torch.as_ref(), &opts, build);
    }

    let failed = rows
        .iter()
        .flat_map(|r| [&r.wgsl_fwd, &r.wgsl_fwd_bwd, &r.ref_fwd, &r.ref_fwd_bwd])
        .chain([&decode.wgsl, &decode.reference])
        .any(|m| matches!(m, Measured::Failed(_)));
    if failed {
        return Err("some measurements failed (see above)".into());
    }
    Ok(())
}

fn print_tables(
    shape: Shape,
    rows: &[Row],
    decode: &DecodeRow,
    torch: Option<&TorchResults>,
    opts: &DeltaRuleOptions,
    build: &str,
) {
    println!();
    let Shape { b, hk, hv, dk, dv } = shape;
    println!("Gated delta rule, B={b}, Hk={hk}, Hv={hv}, dk={dk}, dv={dv}, f32 ({build} build)");
    println!("Median wall time in ms after 1 warm-up run; WGSL = Sluice's kernels,");
    println!("ref = the same maths in composed Burn tensor ops (per-token loop), same device.");
    println!();
    println!("Prefill");
    let mut table = Table::new(&[
        "T",
        "reps",
        "WGSL fwd",
        "WGSL fwd+bwd",
        "ref reps",
        "ref fwd",
        "ref fwd+bwd",
        "ref/WGSL fwd",
        "ref/WGSL fwd+bwd",
    ]);
    for r in rows {
        let (rf, rfb) = r.ref_over_wgsl();
        let reps = r
            .wgsl_fwd
            .reps()
            .or(r.wgsl_fwd_bwd.reps())
            .map_or("-".into(), |n| n.to_string());
        let ref_reps = r
            .ref_fwd
            .reps()
            .or(r.ref_fwd_bwd.reps())
            .map_or("-".into(), |n| n.to_string());
        table.row(vec![
            r.t.to_string(),
            reps,
            r.wgsl_fwd.cell(),
            r.wgsl_fwd_bwd.cell(),
            ref_reps,
            r.ref_fwd.cell(),
            r.ref_fwd_bwd.cell(),
            fmt_ratio(rf),
            fmt_ratio(rfb),
        ]);
    }
    table.print();

    println!();
    println!("Decode (one token against a [B,H,dk,dv] state)");
    let mut table = Table::new(&["reps", "WGSL step", "ref step", "ref/WGSL"]);
    table.row(vec![
        decode
            .wgsl
            .reps()
            .or(decode.reference.reps())
            .map_or("-".into(), |n| n.to_string()),
        decode.wgsl.cell(),
        decode.reference.cell(),
        fmt_ratio(ratio(decode.reference.median_ms(), decode.wgsl.median_ms())),
    ]);
    table.print();

    println!();
    println!(
        "State saved for the backward (f32): chunk-boundary states of the WGSL op (chunk {}) vs",
        opts.chunk_size
    );
    println!("a state per token as a per-token recurrence keeps");
    let mut table = Table::new(&["T", "chunk states MiB", "per-token MiB", "saving"]);
    for r in rows {
        table.row(vec![
            r.t.to_string(),
            format!("{:.2}", r.mem_chunk_mib),
            format!("{:.2}", r.mem_token_mib),
            fmt_ratio(ratio(Some(r.mem_token_mib), Some(r.mem_chunk_mib))),
        ]);
    }
    table.print();

    if let Some(tr) = torch {
        println!();
        let env = tr.env_summary();
        println!(
            "PyTorch on the CPU (transformers' torch_chunk / torch_recurrent_gated_delta_rule{}{})",
            if env.is_empty() { "" } else { "; " },
            env
        );
        println!("from {}; WGSL/torch < 1 means Sluice is faster.", tr.source);
        println!("(torch's fwd+bwd loss has no final-state term.)");
        let mut table = Table::new(&[
            "T",
            "torch fwd",
            "torch fwd+bwd",
            "WGSL fwd",
            "WGSL fwd+bwd",
            "WGSL/torch fwd",
            "WGSL/torch fwd+bwd",
        ]);
        for r in rows {
            let t = r.torch.clone().unwrap_or_default();
            let (tf, tfb) = r.wgsl_over_torch();
            table.row(vec![
                r.t.to_string(),
                fmt_opt_ms(t.fwd_ms),
                fmt_opt_ms(t.fwd_bwd_ms),
                r.wgsl_fwd.cell(),
                r.wgsl_fwd_bwd.cell(),
                fmt_ratio(tf),
                fmt_ratio(tfb),
            ]);
        }
        table.print();
        println!(
            "  decode step: torch {} ms, WGSL {} ms, WGSL/torch {}",
            fmt_opt_ms(decode.torch_ms),
            decode.wgsl.median_ms().map_or("-".into(), fmt_ms),
            fmt_ratio(ratio(decode.wgsl.median_ms(), decode.torch_ms)),
        );
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
                notes.push(format!("T={}: {what}: {why}", r.t));
            }
        }
    }
    for (what, m) in [
        ("WGSL decode", &decode.wgsl),
        ("ref decode", &decode.reference),
    ] {
        if let Measured::Failed(why) | Measured::Skipped(why) = m {
            notes.push(format!("{what}: {why}"));
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
    fn state_memory() {
        // One [4, 64, 64] f32 state is 64 KiB.
        let s = Shape {
            b: 1,
            hk: 4,
            hv: 4,
            dk: 64,
            dv: 64,
        };
        let (chunk, token) = state_memory_mib(s, 4096, 64);
        assert_eq!(chunk, 64.0 * 64.0 / 1024.0);
        assert_eq!(token, 4096.0 * 64.0 / 1024.0);
        let (chunk, _) = state_memory_mib(s, 65, 64);
        assert_eq!(chunk, 2.0 * 64.0 / 1024.0);
    }

    #[test]
    fn parses_positive() {
        assert_eq!(positive("12"), Ok(12));
        assert!(positive("0").is_err());
        assert!(positive("x").is_err());
    }
}
