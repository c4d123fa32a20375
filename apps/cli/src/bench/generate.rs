//! `sluice bench generate`: prefill and decode throughput of a checkpoint, and memory.
//!
//! For each batch size (default 1 and 8): random prompts of `--prompt-len` tokens, a prefill
//! (one forward over the prompts, the last position's logits read back), then
//! `--new-tokens` greedy one-token decode steps (each: forward on the decode kernels, logits
//! read back, argmax on the host), exactly what `sluice generate` does per step; repeated
//! `--reps` times after one warm-up. Prefill tokens/s = B·prompt_len / median prefill time,
//! decode tokens/s = B·new_tokens / median decode time.
//!
//! Memory: the device allocator's own figures (bytes in use, reserved, and the pools'
//! peak pages), the weights, and the generation state counted from the cache: the linear
//! (Gated DeltaNet) layers' conv + recurrent state, whose size does not depend on the
//! sequence length, and the attention layers' KV cache, which grows with it. A last run
//! decodes one sequence out to `--grow-to` tokens and prints both at a few lengths.

use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde_json::{Value, json};
use sluice::model::HybridModel;
use sluice::model::cache::{Cache, LayerCache};
use sluice::nn::attention::AttentionContext;

use super::{Measured, Table, Timing, fmt_ms, round};
use crate::Result;
use crate::cmd::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,

    /// Prompt length (random token ids).
    #[arg(long, default_value_t = 64, value_parser = positive)]
    prompt_len: usize,

    /// Decode steps per measurement.
    #[arg(long, default_value_t = 32, value_parser = positive)]
    new_tokens: usize,

    /// Timed repetitions, after one warm-up run.
    #[arg(long, default_value_t = 3, value_parser = positive)]
    reps: usize,

    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8], value_parser = positive)]
    batch: Vec<usize>,

    /// Decode one sequence out to this many tokens to show how the state grows (0 = skip).
    #[arg(long, default_value_t = 512)]
    grow_to: usize,

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

const MIB: f64 = 1024.0 * 1024.0;

/// Generation state bytes counted from a cache.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StateBytes {
    /// Conv + recurrent state of the linear-attention layers (f32).
    pub linear: usize,
    /// Keys and values of the attention layers, valid part.
    pub kv: usize,
    /// Keys and values buffers as allocated (capacity).
    pub kv_allocated: usize,
}

pub fn state_bytes(cache: &Cache) -> StateBytes {
    let mut s = StateBytes::default();
    let numel = |dims: &[usize]| dims.iter().product::<usize>();
    for layer in &cache.layers {
        match layer {
            LayerCache::Linear(Some(st)) => {
                s.linear += 4 * (numel(&st.conv.dims()) + numel(&st.recurrent.dims()));
            }
            LayerCache::Full(Some(kv)) => {
                if let Some(k) = kv.keys() {
                    let [b, len, h, d] = k.dims();
                    s.kv += 2 * 4 * b * len * h * d;
                    s.kv_allocated += 2 * 4 * b * kv.capacity() * h * d;
                }
            }
            _ => {}
        }
    }
    s
}

/// The device allocator's figures, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct DeviceMemory {
    /// Bytes of live allocations.
    in_use: Option<u64>,
    /// Bytes the allocator holds from the device.
    reserved: Option<u64>,
    /// The most it held so far in this process: the larger of `reserved` and the sliced
    /// pools' peak page counts × page size (the allocator keeps pages unless cleaned up,
    /// so this is the peak footprint).
    peak_reserved: Option<u64>,
}

fn device_memory(dev: &Device) -> DeviceMemory {
    let usage = dev.memory_pool_usage();
    let pools_peak = dev.memory_pool_report().map(|pools| {
        pools
            .iter()
            .map(|p| p.pages_peak * p.page_size)
            .sum::<u64>()
    });
    let reserved = usage.map(|u| u.bytes_reserved);
    DeviceMemory {
        in_use: usage.map(|u| u.bytes_in_use),
        reserved,
        peak_reserved: match (reserved, pools_peak) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        },
    }
}

fn mib_cell(b: Option<u64>) -> String {
    b.map_or("-".into(), |b| format!("{:.2}", b as f64 / MIB))
}

/// Deterministic pseudo-random prompt ids in `0..vocab` (a 64-bit LCG).
fn random_prompts(b: usize, t: usize, vocab: usize, seed: u64) -> Vec<i64> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..b * t)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % vocab as u64) as i64
        })
        .collect()
}

/// Last-position logits of `hidden` `[B,T,H]`, read back: `[B·V]`.
fn read_last_logits(model: &HybridModel, hidden: Tensor<3>) -> Result<Vec<f32>> {
    let [b, t, _] = hidden.dims();
    let logits = model
        .logits(hidden.narrow(1, t - 1, 1))
        .reshape([b, model.vocab_size()]);
    let device = logits.device();
    logits
        .try_into_data()
        .map_err(|e| {
            let e = sluice::device::describe_error(&e.to_string(), &device);
            format!("reading logits back: {e}")
        })?
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| format!("reading logits back: {e:?}").into())
}

fn argmax_rows(logits: &[f32], vocab: usize) -> Vec<i64> {
    logits
        .chunks_exact(vocab)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |best, (i, &x)| {
                    if x > best.1 { (i, x) } else { best }
                })
                .0 as i64
        })
        .collect()
}

/// Prefill of `ids` `[B,T]`: the cache and the next (greedy) tokens.
fn prefill(model: &HybridModel, ids: &[i64], b: usize, dev: &Device) -> Result<(Cache, Vec<i64>)> {
    let t = ids.len() / b;
    let x = Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), [b, t]), dev);
    let mut cache = model.new_cache();
    let hidden = model.hidden(x, &mut cache, &AttentionContext::contiguous(b, t, 0, dev));
    let logits = read_last_logits(model, hidden)?;
    Ok((cache, argmax_rows(&logits, model.vocab_size())))
}

/// One decode step: feeds `next` `[B]`, returns the following greedy tokens.
fn decode_step(
    model: &HybridModel,
    cache: &mut Cache,
    next: Vec<i64>,
    dev: &Device,
) -> Result<Vec<i64>> {
    let b = next.len();
    let past = cache.seq_len;
    let x = Tensor::<2, Int>::from_data(TensorData::new(next, [b, 1]), dev);
    let hidden = model.hidden(x, cache, &AttentionContext::contiguous(b, 1, past, dev));
    let logits = read_last_logits(model, hidden)?;
    Ok(argmax_rows(&logits, model.vocab_size()))
}

/// Figures of one batch size.
struct BatchRow {
    batch: usize,
    prefill: Measured,
    decode: Measured,
    prompt_len: usize,
    new_tokens: usize,
    state: StateBytes,
    /// Sampled after the last decode step, with the cache alive.
    memory: DeviceMemory,
    /// Sluice kernel launches per decode step (Burn's generic ops not counted).
    launches_per_step: Option<f64>,
}

impl BatchRow {
    fn prefill_tps(&self) -> Option<f64> {
        self.prefill
            .median_ms()
            .map(|ms| (self.batch * self.prompt_len) as f64 / (ms / 1e3))
    }

    fn decode_tps(&self) -> Option<f64> {
        self.decode
            .median_ms()
            .map(|ms| (self.batch * self.new_tokens) as f64 / (ms / 1e3))
    }

    fn json(&self) -> Value {
        let r = |x: Option<f64>| x.map(|x| round(x, 2));
        json!({
            "bench": "generate",
            "batch": self.batch,
            "prompt_len": self.prompt_len,
            "new_tokens": self.new_tokens,
            "prefill": self.prefill.json(),
            "decode": self.decode.json(),
            "prefill_tokens_per_s": r(self.prefill_tps()),
            "decode_tokens_per_s": r(self.decode_tps()),
            "sluice_launches_per_step": r(self.launches_per_step),
            "state_bytes": {
                "linear": self.state.linear,
                "kv": self.state.kv,
                "kv_allocated": self.state.kv_allocated,
            },
            "device_memory_bytes": {
                "in_use": self.memory.in_use,
                "reserved": self.memory.reserved,
                "peak_reserved": self.memory.peak_reserved,
            },
        })
    }
}

fn measure_batch(model: &HybridModel, dev: &Device, args: &Args, b: usize) -> BatchRow {
    let vocab = model.vocab_size();
    let mut prefill_ms = Vec::new();
    let mut decode_ms = Vec::new();
    let mut state = StateBytes::default();
    let mut memory = DeviceMemory::default();
    let mut failure: Option<String> = None;
    let mut launches = None;
    for rep in 0..=args.reps {
        let ids = random_prompts(b, args.prompt_len, vocab, rep as u64);
        let run = || -> Result<(f64, f64, StateBytes, DeviceMemory)> {
            let t0 = Instant::now();
            let (mut cache, mut next) = prefill(model, &ids, b, dev)?;
            let t1 = Instant::now();
            let l0 = sluice::ops::launch_count();
            for _ in 0..args.new_tokens {
                next = decode_step(model, &mut cache, next, dev)?;
            }
            let t2 = Instant::now();
            launches =
                Some((sluice::ops::launch_count() - l0) as f64 / args.new_tokens.max(1) as f64);
            Ok((
                (t1 - t0).as_secs_f64() * 1e3,
                (t2 - t1).as_secs_f64() * 1e3,
                state_bytes(&cache),
                device_memory(dev),
            ))
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
            Ok(Ok((p, d, s, m))) => {
                // Rep 0 is the warm-up (kernel compilation).
                if rep > 0 {
                    prefill_ms.push(p);
                    decode_ms.push(d);
                }
                state = s;
                memory = m;
            }
            Ok(Err(e)) => {
                failure = Some(e.to_string());
                break;
            }
            Err(_) => {
                failure = Some("panicked (see above)".into());
                break;
            }
        }
    }
    let measured = |times: Vec<f64>| match (&failure, Timing::from_samples(times)) {
        (Some(why), _) => Measured::Failed(why.clone()),
        (None, Some(t)) => Measured::Done(t),
        (None, None) => Measured::Failed("no timed run".into()),
    };
    BatchRow {
        batch: b,
        prefill: measured(prefill_ms),
        decode: measured(decode_ms),
        prompt_len: args.prompt_len,
        new_tokens: args.new_tokens,
        state,
        memory,
        launches_per_step: launches,
    }
}

/// State size and device memory as one sequence grows by decoding.
struct GrowPoint {
    len: usize,
    state: StateBytes,
    in_use: Option<u64>,
    /// The last decode step before this length (`None` at the prompt).
    step_ms: Option<f64>,
}

fn grow(model: &HybridModel, dev: &Device, args: &Args) -> Result<Vec<GrowPoint>> {
    let start = args.prompt_len.min(args.grow_to);
    let ids = random_prompts(1, start, model.vocab_size(), 99);
    let (mut cache, mut next) = prefill(model, &ids, 1, dev)?;
    // Checkpoints: the prompt length, then doublings, then grow_to.
    let mut marks = vec![start];
    let mut m = start.next_power_of_two().max(2);
    if m == start {
        m *= 2;
    }
    while m < args.grow_to {
        marks.push(m);
        m *= 2;
    }
    if args.grow_to > start {
        marks.push(args.grow_to);
    }
    let mut points = Vec::new();
    let mut last_step_ms = None;
    for &mark in &marks {
        while cache.seq_len < mark {
            let t0 = Instant::now();
            next = decode_step(model, &mut cache, next, dev)?;
            last_step_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
        }
        points.push(GrowPoint {
            len: cache.seq_len,
            state: state_bytes(&cache),
            in_use: dev.memory_pool_usage().map(|u| u.bytes_in_use),
            step_ms: last_step_ms,
        });
    }
    Ok(points)
}

pub fn run(args: &Args) -> Result<()> {
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let (dev, cfg, model) = crate::cmd::load(&args.model, !args.json)?;
    let (params, weights_bytes) = model.weight_stats();
    let n_linear = cache_kinds(&model.new_cache()).0;
    let n_full = cfg.num_hidden_layers - n_linear;
    if args.json {
        println!(
            "{}",
            json!({
                "bench": "generate",
                "env": {
                    "device": format!("{dev:?}"), "build": build,
                    "model": args.model.model.display().to_string(),
                    "family": format!("{:?}", cfg.family),
                    "layers": cfg.num_hidden_layers, "linear_layers": n_linear,
                    "attention_layers": n_full, "vocab": cfg.vocab_size,
                    "params": params, "weights_bytes": weights_bytes,
                }
            })
        );
    }
    let before = device_memory(&dev);
    let mut rows = Vec::new();
    for &b in &args.batch {
        eprintln!(
            "  .. batch {b}: prefill {} tokens + {} decode steps, 1 warm-up + {} reps",
            args.prompt_len, args.new_tokens, args.reps
        );
        let row = measure_batch(&model, &dev, args, b);
        if args.json {
            println!("{}", row.json());
        }
        rows.push(row);
    }
    let growth = if args.grow_to > 0 {
        eprintln!("  .. decoding one sequence to {} tokens", args.grow_to);
        match grow(&model, &dev, args) {
            Ok(points) => Some(points),
            Err(e) => {
                eprintln!("warning: the growth run failed: {e}");
                None
            }
        }
    } else {
        None
    };
    if args.json {
        if let Some(points) = &growth {
            for p in points {
                println!(
                    "{}",
                    json!({
                        "bench": "generate_state_growth",
                        "seq_len": p.len,
                        "linear_state_bytes": p.state.linear,
                        "kv_bytes": p.state.kv,
                        "kv_allocated_bytes": p.state.kv_allocated,
                        "device_in_use_bytes": p.in_use,
                        "decode_step_ms": p.step_ms.map(|ms| round(ms, 3)),
                    })
                );
            }
        }
    } else {
        print_tables(args, &cfg, &model, &rows, growth.as_deref(), before, build);
    }
    if rows.iter().any(|r| {
        matches!(r.prefill, Measured::Failed(_)) || matches!(r.decode, Measured::Failed(_))
    }) {
        return Err("some measurements failed (see above)".into());
    }
    Ok(())
}

/// (linear layers, attention layers) of a cache.
fn cache_kinds(cache: &Cache) -> (usize, usize) {
    let linear = cache
        .layers
        .iter()
        .filter(|l| matches!(l, LayerCache::Linear(_)))
        .count();
    (linear, cache.layers.len() - linear)
}

fn print_tables(
    args: &Args,
    cfg: &sluice::model::Config,
    model: &HybridModel,
    rows: &[BatchRow],
    growth: Option<&[GrowPoint]>,
    before: DeviceMemory,
    build: &str,
) {
    let (n_linear, n_full) = cache_kinds(&model.new_cache());
    let f = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.1}"));
    println!();
    println!(
        "Generation, {} ({:?}: {} layers = {n_linear} Gated DeltaNet + {n_full} gated attention, \
         vocab {}, {} params, {:.1} MB of weights; {build} build)",
        args.model.model.display(),
        cfg.family,
        cfg.num_hidden_layers,
        cfg.vocab_size,
        model.weight_stats().0,
        model.weight_stats().1 as f64 / 1e6,
    );
    println!(
        "Prompt {} random tokens, {} greedy decode steps; medians of {} reps after 1 warm-up.",
        args.prompt_len, args.new_tokens, args.reps
    );
    println!("Each step reads the logits back to the host, as `sluice generate` does.");
    println!(
        "weights GB/s: all weight bytes / time per step (each step reads every projection once); \
         own launches: Sluice's kernels per step (Burn's generic ops not counted)."
    );
    println!();
    let mut table = Table::new(&[
        "batch",
        "prefill ms",
        "prefill tok/s",
        "decode ms",
        "ms/step",
        "decode tok/s",
        "weights GB/s",
        "own launches/step",
        "linear state KiB",
        "KV KiB",
    ]);
    for r in rows {
        table.row(vec![
            r.batch.to_string(),
            r.prefill.cell(),
            f(r.prefill_tps()),
            r.decode.cell(),
            r.decode
                .median_ms()
                .map_or("-".into(), |ms| fmt_ms(ms / r.new_tokens as f64)),
            f(r.decode_tps()),
            r.decode.median_ms().map_or("-".into(), |ms| {
                let per_step_s = ms / r.new_tokens as f64 / 1e3;
                format!("{:.1}", model.weight_stats().1 as f64 / per_step_s / 1e9)
            }),
            f(r.launches_per_step),
            format!("{:.1}", r.state.linear as f64 / 1024.0),
            format!("{:.1}", r.state.kv as f64 / 1024.0),
        ]);
    }
    table.print();
    println!(
        "  (state after prompt + decode = {} tokens; KV buffers allocated: {})",
        args.prompt_len + args.new_tokens,
        rows.iter()
            .map(|r| format!(
                "batch {} {:.1} KiB",
                r.batch,
                r.state.kv_allocated as f64 / 1024.0
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    println!();
    println!(
        "Device memory (the allocator's figures, MiB; weights {:.2} MiB)",
        model.weight_stats().1 as f64 / MIB
    );
    let mut table = Table::new(&["when", "in use", "reserved", "peak reserved so far"]);
    table.row(vec![
        "after loading".into(),
        mib_cell(before.in_use),
        mib_cell(before.reserved),
        mib_cell(before.peak_reserved),
    ]);
    for r in rows {
        table.row(vec![
            format!("batch {}, end of decode", r.batch),
            mib_cell(r.memory.in_use),
            mib_cell(r.memory.reserved),
            mib_cell(r.memory.peak_reserved),
        ]);
    }
    table.print();
    println!("  (in use: live buffers = weights + generation state + what the step still holds;");
    println!(
        "   peak reserved: the most the allocator held from the device so far, the peak footprint)"
    );

    if let Some(points) = growth {
        println!();
        println!(
            "State as one sequence grows (batch 1): linear layers' state is constant, the KV cache grows"
        );
        let mut table = Table::new(&[
            "seq len",
            "linear state B",
            "KV B",
            "KV allocated B",
            "device in use MiB",
            "last step ms",
        ]);
        for p in points {
            table.row(vec![
                p.len.to_string(),
                p.state.linear.to_string(),
                p.state.kv.to_string(),
                p.state.kv_allocated.to_string(),
                mib_cell(p.in_use),
                p.step_ms.map_or("-".into(), fmt_ms),
            ]);
        }
        table.print();
        if let (Some(a), Some(b)) = (points.first(), points.last()) {
            println!(
                "  linear state {} from {} to {} tokens; KV grows {:.1}x",
                if a.state.linear == b.state.linear {
                    "unchanged"
                } else {
                    "CHANGED"
                },
                a.len,
                b.len,
                b.state.kv as f64 / a.state.kv.max(1) as f64
            );
        }
    }
    let notes: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            [("prefill", &r.prefill), ("decode", &r.decode)]
                .into_iter()
                .filter_map(move |(what, m)| match m {
                    Measured::Failed(why) | Measured::Skipped(why) => {
                        Some(format!("batch {}: {what}: {why}", r.batch))
                    }
                    _ => None,
                })
        })
        .collect();
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
    fn prompts_in_vocab_and_deterministic() {
        let a = random_prompts(2, 50, 17, 3);
        assert_eq!(a.len(), 100);
        assert!(a.iter().all(|&x| (0..17).contains(&x)));
        assert_eq!(a, random_prompts(2, 50, 17, 3));
        assert_ne!(a, random_prompts(2, 50, 17, 4));
    }

    #[test]
    fn argmax() {
        assert_eq!(argmax_rows(&[0.0, 2.0, 1.0, 5.0, -1.0, 4.0], 3), vec![1, 0]);
    }
}
