//! `sluice bench train`: wall-clock of training steps on the demo model (the 4-layer Qwen3.5
//! hybrid of `sluice demo`, digit sorting), and optionally TRL's GRPOTrainer on the CPU on the
//! same task and weights (`scripts/bench_trl_grpo.py`).
//!
//! The model is built as `sluice demo` builds it and first SFT-trained for `--sft-steps`
//! steps (default 10, batch `--sft-batch`), so that RL rollouts end with `<eos>` at about
//! the answer's length as in a real run (`--sft-steps 0`: RL from the random init, whose
//! completions run to about `--max-new-tokens`). The SFT steps after the first
//! `min(warmup, sft_steps − 1)` are timed. Then, each `--warmup` untimed then `--steps`
//! timed times:
//!
//! 1. whole RL steps (`rl_step_async`: rollout of prompts × G completions, exact-match
//!    rewards, advantages, loss, backward, AdamW step), the figure compared with TRL; the
//!    reward reported is theirs (after warmup + steps updates, as TRL's);
//! 2. then rollouts alone (`rollout_async` on fresh prompts: completion tokens ÷ time), each
//!    followed by
//! 3. an update alone (`update_async` on that rollout: one optimiser step).
//!
//! Each call reads its results back to the host, so a timing covers the device work. With `--trl`, the SFT-trained model is saved to
//! a temporary folder and the script trains a copy of it with the same group size, prompts,
//! completion length, temperature, loss ("grpo", β = 0.04) and learning rate; the ratio is
//! TRL's seconds per step ÷ Sluice's.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use sluice::demo::DemoConfig;
use sluice::demo::vocab::{self, EOS};
use sluice::rl::rewards::WeightedRewards;
use sluice::rl::rewards::rule::{ExactMatchReward, Extractor};
use sluice::rl::step::{
    Policy, Prompt, RlConfig, preset_objective, rl_step_async, rollout_async, update_async,
};
use sluice::train::optim::{AdamW, AdamWConfig};
use sluice::train::session::Session;

use super::{Measured, Table, Timing, fmt_ms, fmt_ratio, ratio, round};
use crate::Result;

/// Script path relative to the repository root.
pub const TRL_SCRIPT: &str = "scripts/bench_trl_grpo.py";

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Model width (multiple of 4).
    #[arg(long, default_value_t = 64, value_parser = positive)]
    hidden: usize,
    /// G: completions per prompt (at least 2).
    #[arg(long, default_value_t = 8, value_parser = positive)]
    group: usize,
    /// Prompts per RL step.
    #[arg(long, default_value_t = 8, value_parser = positive)]
    prompts: usize,
    /// Longest completion.
    #[arg(long, default_value_t = 8, value_parser = positive)]
    max_new_tokens: usize,
    /// Timed RL iterations.
    #[arg(long, default_value_t = 10, value_parser = positive)]
    steps: usize,
    /// Untimed RL iterations first (and SFT steps not timed).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// RL preset: grpo, dr_grpo, dapo, gspo, gmpo, reinforce_pp, reinforce_pp_baseline,
    /// rloo, gtpo.
    #[arg(long, default_value = "grpo")]
    preset: String,
    /// SFT steps before RL (0: RL from the random init).
    #[arg(long, default_value_t = 10)]
    sft_steps: usize,
    /// SFT batch (sequences per step).
    #[arg(long, default_value_t = 32, value_parser = positive)]
    sft_batch: usize,
    /// RL learning rate (as `sluice demo`).
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Device: `wgpu` (Sluice's kernels; lavapipe on a machine without a GPU) or `flex`
    /// (Burn's CPU backend; the reference implementations of Sluice's ops).
    #[arg(long, default_value = "wgpu", value_parser = ["wgpu", "flex"])]
    device: String,
    /// Also run TRL's GRPOTrainer on the CPU (`scripts/bench_trl_grpo.py` with
    /// `$SLUICE_PYTHON`, default `python3`; needs torch, transformers, trl, datasets).
    #[arg(long)]
    trl: bool,
    /// TRL figures from a file the script wrote (its stdout) instead of running it.
    #[arg(long, value_name = "FILE", conflicts_with = "trl")]
    trl_json: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

fn positive(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{s}` is not a positive integer")),
    }
}

/// Sluice's figures.
#[derive(Debug, Clone)]
pub struct SluiceTimes {
    pub sft: Measured,
    pub step: Measured,
    pub rollout: Measured,
    pub update: Measured,
    /// Completion tokens ÷ seconds over the timed rollouts.
    pub rollout_tokens_per_s: Option<f64>,
    /// Mean completion length of the timed whole steps' rollouts.
    pub completion_len: f64,
    /// Mean reward of the first and the last whole RL step, and of the last ≤ 5.
    pub reward_first: f64,
    pub reward_last: f64,
    pub reward_last5: f64,
    pub parameters: usize,
}

/// TRL's figures, as the script prints them.
#[derive(Debug, Clone, PartialEq)]
pub struct TrlTimes {
    pub source: String,
    pub step_s: f64,
    pub step_reps: usize,
    pub generate_s: Option<f64>,
    pub rollout_tokens_per_s: Option<f64>,
    pub completion_len: Option<f64>,
    pub reward_last: Option<f64>,
    pub reward_last5: Option<f64>,
    pub env: Value,
}

/// Reads the script's output: the last line that is a JSON object with `"impl": "trl_grpo"`.
pub fn parse_trl(text: &str, source: &str) -> Result<TrlTimes> {
    let v = text
        .lines()
        .rev()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("impl").and_then(Value::as_str) == Some("trl_grpo"))
        .ok_or_else(|| format!("{source}: no TRL GRPO result line found"))?;
    let f = |path: &[&str]| {
        path.iter()
            .try_fold(&v, |v, k| v.get(*k))
            .and_then(Value::as_f64)
    };
    let step_s = f(&["step_s", "median"])
        .filter(|s| *s > 0.0)
        .ok_or_else(|| format!("{source}: no step_s.median in {v}"))?;
    Ok(TrlTimes {
        source: source.to_string(),
        step_s,
        step_reps: f(&["step_s", "reps"]).unwrap_or(0.0) as usize,
        generate_s: f(&["generate_s", "median"]),
        rollout_tokens_per_s: f(&["rollout_tokens_per_s"]),
        completion_len: f(&["completion_length_mean"]),
        reward_last: f(&["reward_last"]),
        reward_last5: f(&["reward_last5_mean"]),
        env: v.get("env").cloned().unwrap_or(Value::Null),
    })
}

/// The table's rows: what, median ms, min ms, reps, rate, TRL median ms, TRL ÷ Sluice.
pub fn table_rows(args: &Args, s: &SluiceTimes, trl: Option<&TrlTimes>) -> Vec<Vec<String>> {
    let min = |m: &Measured| match m {
        Measured::Done(t) => fmt_ms(t.min_ms),
        _ => "-".into(),
    };
    let reps = |m: &Measured| m.reps().map_or("-".into(), |r| r.to_string());
    let per_s = |m: &Measured, unit: &str| {
        m.median_ms()
            .filter(|ms| *ms > 0.0)
            .map_or("-".into(), |ms| format!("{:.2} {unit}/s", 1e3 / ms))
    };
    let rows = args.prompts * args.group;
    let trl_step_ms = trl.map(|t| t.step_s * 1e3);
    vec![
        vec![
            format!("SFT step ({} seqs)", args.sft_batch),
            s.sft.cell(),
            min(&s.sft),
            reps(&s.sft),
            per_s(&s.sft, "steps"),
            "-".into(),
            "-".into(),
        ],
        vec![
            format!("rollout ({rows} completions)"),
            s.rollout.cell(),
            min(&s.rollout),
            reps(&s.rollout),
            s.rollout_tokens_per_s
                .map_or("-".into(), |r| format!("{r:.0} tok/s")),
            trl.and_then(|t| t.generate_s)
                .map_or("-".into(), |g| fmt_ms(g * 1e3)),
            fmt_ratio(ratio(
                trl.and_then(|t| t.generate_s).map(|g| g * 1e3),
                s.rollout.median_ms(),
            )),
        ],
        vec![
            "update (1 optimiser step)".into(),
            s.update.cell(),
            min(&s.update),
            reps(&s.update),
            per_s(&s.update, "steps"),
            "-".into(),
            "-".into(),
        ],
        vec![
            format!("RL step ({})", args.preset),
            s.step.cell(),
            min(&s.step),
            reps(&s.step),
            per_s(&s.step, "steps"),
            trl_step_ms.map_or("-".into(), fmt_ms),
            fmt_ratio(ratio(trl_step_ms, s.step.median_ms())),
        ],
    ]
}

pub fn run(args: &Args) -> Result<()> {
    if args.group < 2 {
        return Err("--group must be at least 2".into());
    }
    let device = match args.device.as_str() {
        "flex" => Device::flex(),
        _ => sluice::device::wgpu(),
    };
    let load = loadavg();
    let mut model_dir = None;
    let s = measure(args, &device, |demo| {
        if args.trl {
            let dir =
                std::env::temp_dir().join(format!("sluice-bench-train-{}", std::process::id()));
            crate::train::demo::save_demo_model(demo, &dir)?;
            model_dir = Some(dir);
        }
        Ok(())
    })?;
    let trl = if let Some(p) = &args.trl_json {
        let text = sluice::fs::read_to_string(p)
            .map_err(|e| format!("cannot read --trl-json file {}: {e}", p.display()))?;
        Some(parse_trl(&text, &p.display().to_string())?)
    } else if args.trl {
        let dir = model_dir.as_deref().expect("saved above");
        let out = run_trl(args, dir);
        let _ = std::fs::remove_dir_all(dir);
        Some(out?)
    } else {
        None
    };
    let rows = table_rows(args, &s, trl.as_ref());
    if args.json {
        let mut v = json!({
            "bench": "train",
            "config": {"hidden": args.hidden, "group": args.group, "prompts": args.prompts,
                "max_new_tokens": args.max_new_tokens, "steps": args.steps,
                "warmup": args.warmup, "preset": args.preset, "sft_steps": args.sft_steps,
                "sft_batch": args.sft_batch, "lr": args.lr, "seed": args.seed, "device": args.device,
                "parameters": s.parameters},
            "loadavg_before": load,
            "loadavg_after": loadavg(),
            "sft_step": s.sft.json(),
            "rl_step": s.step.json(),
            "rollout": s.rollout.json(),
            "update": s.update.json(),
            "rollout_tokens_per_s": s.rollout_tokens_per_s.map(|r| round(r, 1)),
            "update_steps_per_s": s.update.median_ms().map(|ms| round(1e3 / ms, 3)),
            "rl_steps_per_s": s.step.median_ms().map(|ms| round(1e3 / ms, 3)),
            "completion_length_mean": round(s.completion_len, 3),
            "reward_first": s.reward_first,
            "reward_last": s.reward_last,
            "reward_last5_mean": round(s.reward_last5, 4),
        });
        if let Some(t) = &trl {
            v["trl"] = json!({
                "source": t.source, "step_s": t.step_s, "reps": t.step_reps,
                "generate_s": t.generate_s, "rollout_tokens_per_s": t.rollout_tokens_per_s,
                "completion_length_mean": t.completion_len, "reward_last": t.reward_last,
                "reward_last5_mean": t.reward_last5, "env": t.env,
            });
            v["trl_over_sluice"] = json!(ratio(Some(t.step_s * 1e3), s.step.median_ms()));
        }
        println!("{v}");
        return Ok(());
    }
    println!(
        "sluice bench train: demo model (hidden {}, {} parameters; DeltaNet, attention, \
         DeltaNet, attention), sort:5, preset {}, {} prompts × {} completions, ≤ {} new tokens, \
         {} SFT steps first; {} timed iterations after {} warm-up",
        args.hidden,
        s.parameters,
        args.preset,
        args.prompts,
        args.group,
        args.max_new_tokens,
        args.sft_steps,
        args.steps,
        args.warmup
    );
    println!(
        "device: {} ({device:?}); load average before {} after {}",
        args.device,
        fmt_load(load),
        fmt_load(loadavg())
    );
    let mut table = Table::new(&[
        "measurement",
        "median ms",
        "min ms",
        "reps",
        "rate",
        "TRL ms",
        "TRL÷Sluice",
    ]);
    for r in rows {
        table.row(r);
    }
    table.print();
    println!(
        "Sluice: reward (exact match) first step {:.3}, last {:.3}, mean of last ≤5 {:.3}; \
         mean completion length {:.2}",
        s.reward_first, s.reward_last, s.reward_last5, s.completion_len
    );
    if let Some(t) = &trl {
        let o = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.3}"));
        println!(
            "TRL ({}): reward last step {}, mean of last ≤5 {}; mean completion length {}; \
             generation {} tok/s; {}",
            t.source,
            o(t.reward_last),
            o(t.reward_last5),
            o(t.completion_len),
            t.rollout_tokens_per_s
                .map_or("-".into(), |r| format!("{r:.0}")),
            t.env
        );
    }
    Ok(())
}

fn loadavg() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|s| s.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

fn fmt_load(l: Option<[f64; 3]>) -> String {
    l.map_or("-".into(), |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"))
}

/// SFT steps (timed), then the RL iterations (module docs). `after_sft` sees the model
/// once SFT is done (to save it for TRL).
fn measure(
    args: &Args,
    device: &Device,
    mut after_sft: impl FnMut(&Session) -> Result<()>,
) -> Result<SluiceTimes> {
    let rl = RlConfig {
        preset: Some(args.preset.parse().map_err(|e| format!("--preset: {e}"))?),
        group_size: args.group,
        prompts_per_step: args.prompts,
        max_new_tokens: args.max_new_tokens,
        ..RlConfig::default()
    };
    let cfg = DemoConfig {
        hidden: args.hidden,
        seed: args.seed,
        sft_steps: args.sft_steps,
        sft_batch: args.sft_batch,
        rl_steps: 0,
        rl_lr: args.lr,
        eval_size: 1,
        rl: rl.clone(),
        ..DemoConfig::default()
    };
    let mut demo = Session::demo(cfg.recipe()?, None, device)?;
    let sft_warm = args.warmup.min(args.sft_steps.saturating_sub(1));
    let mut sft_times = Vec::new();
    for i in 0..args.sft_steps {
        let t0 = Instant::now();
        pollster::block_on(demo.step_async(&mut |_| {}))?;
        if i >= sft_warm {
            sft_times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let sft = Timing::from_samples(sft_times)
        .map_or_else(|| Measured::Skipped("--sft-steps 0".into()), Measured::Done);
    after_sft(&demo)?;

    let task = demo.task().ok_or("the demo recipe names a task")?;
    let objective = preset_objective(&rl)?;
    let mut model = demo.model().clone();
    let reference = model.valid();
    let uses_reference = objective.kl_placement != sluice::rl::presets::KlPlacement::None;
    let mut optimizer = AdamW::new(AdamWConfig {
        weight_decay: 0.0,
        ..AdamWConfig::default()
    });
    let mut kl = objective.reward_kl.controller.clone();
    let rewards = WeightedRewards::new().with(
        ExactMatchReward {
            extractor: Extractor::Whole,
            normalize: false,
        },
        1.0,
    );
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0xBE4C);
    let mut next = |n: usize| -> Vec<Prompt> {
        (0..n)
            .map(|_| task.train_problem(&mut rng).rl_prompt())
            .collect()
    };
    let decode = |ids: &[u32]| vocab::decode(ids);
    // The autodiff device the model lives on (as `Session::demo` makes it) and its inner one.
    let ad = if device.is_autodiff() {
        device.clone()
    } else {
        device.clone().autodiff()
    };
    let base = ad.clone().inner();

    let (mut step_t, mut roll_t, mut upd_t) = (Vec::new(), Vec::new(), Vec::new());
    let (mut roll_tokens, mut roll_secs) = (0usize, 0.0f64);
    let (mut rewards_seen, mut lens) = (Vec::new(), Vec::new());
    let n = args.warmup + args.steps;
    let seed_of = |it: usize| args.seed.wrapping_mul(1_000_003) + it as u64;
    // 1. Whole steps (their rewards are the "reward after N steps": N updates, as TRL's).
    for it in 0..n {
        let t0 = Instant::now();
        let rep = pollster::block_on(rl_step_async(
            Policy {
                model: &mut model,
                optimizer: &mut optimizer,
                reference: uses_reference.then_some(&reference).into(),
                kl_controller: &mut kl,
            },
            args.lr,
            &rl,
            &objective,
            &rewards,
            &mut next,
            &[EOS],
            &decode,
            seed_of(it),
            &ad,
            &mut |_| {},
        ))?;
        let dt = t0.elapsed().as_secs_f64();
        rewards_seen.push(rep.score_mean);
        if it >= args.warmup {
            step_t.push(dt * 1e3);
            lens.push(rep.response_len);
        }
    }
    // 2. and 3. Rollouts alone, each followed by an update alone on it.
    for it in 0..n {
        let timed = it >= args.warmup;
        let sampler = model.valid();
        let prompts = next(args.prompts);
        let t0 = Instant::now();
        let ro = pollster::block_on(rollout_async(
            &sampler,
            prompts,
            &rl,
            &[EOS],
            &rewards,
            &decode,
            seed_of(n + it),
            &base,
        ))?;
        let dt = t0.elapsed().as_secs_f64();
        if timed {
            roll_t.push(dt * 1e3);
            roll_tokens += ro.num_tokens();
            roll_secs += dt;
        }
        let t0 = Instant::now();
        pollster::block_on(update_async(
            &mut model,
            &mut optimizer,
            args.lr,
            uses_reference.then_some(&reference).into(),
            &ro,
            &rl,
            &objective,
            &mut kl,
            &ad,
        ))?;
        if timed {
            upd_t.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let done = |v: Vec<f64>| {
        Timing::from_samples(v)
            .map_or_else(|| Measured::Failed("no timed run".into()), Measured::Done)
    };
    let last5 = &rewards_seen[rewards_seen.len().saturating_sub(5)..];
    Ok(SluiceTimes {
        sft,
        step: done(step_t),
        rollout: done(roll_t),
        update: done(upd_t),
        rollout_tokens_per_s: (roll_secs > 0.0).then(|| roll_tokens as f64 / roll_secs),
        completion_len: lens.iter().sum::<f64>() / lens.len().max(1) as f64,
        reward_first: rewards_seen.first().copied().unwrap_or(f64::NAN),
        reward_last: rewards_seen.last().copied().unwrap_or(f64::NAN),
        reward_last5: last5.iter().sum::<f64>() / last5.len().max(1) as f64,
        parameters: demo.config().num_parameters(),
    })
}

/// Runs the TRL script on the saved model with `$SLUICE_PYTHON` (default `python3`).
fn run_trl(args: &Args, model_dir: &Path) -> Result<TrlTimes> {
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = find_script()
        .ok_or_else(|| format!("cannot find {TRL_SCRIPT} (run sluice from the repository root)"))?;
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .args(["--hidden", &args.hidden.to_string()])
        .args(["--group", &args.group.to_string()])
        .args(["--prompts", &args.prompts.to_string()])
        .args(["--max-new-tokens", &args.max_new_tokens.to_string()])
        .args(["--steps", &args.steps.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--lr", &args.lr.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .arg("--model")
        .arg(model_dir);
    let shown = format!("{python} {} ...", script.display());
    eprintln!("running `{shown}` (TRL GRPOTrainer on the CPU; this takes a while) ...");
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start `{shown}` (is python with trl installed?): {e}"))?;
    if !out.status.success() {
        return Err(format!("`{shown}` failed ({})", out.status).into());
    }
    parse_trl(
        &String::from_utf8_lossy(&out.stdout),
        &format!("{python} {TRL_SCRIPT}"),
    )
}

/// The script in the current directory's `scripts/`, else in this source tree's.
fn find_script() -> Option<PathBuf> {
    let here = PathBuf::from(TRL_SCRIPT);
    if here.is_file() {
        return Some(here);
    }
    let tree = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(TRL_SCRIPT);
    tree.is_file().then_some(tree)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> std::result::Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench-train").chain(argv.iter().copied()))
            .map(|c| c.args)
    }

    #[test]
    fn parses_defaults_and_flags() {
        let a = parse(&[]).unwrap();
        assert_eq!(
            (
                a.hidden,
                a.group,
                a.prompts,
                a.max_new_tokens,
                a.steps,
                a.warmup
            ),
            (64, 8, 8, 8, 10, 2)
        );
        assert_eq!(
            (a.preset.as_str(), a.sft_steps, a.trl, a.json),
            ("grpo", 10, false, false)
        );
        let a = parse(&[
            "--hidden",
            "32",
            "--group",
            "4",
            "--prompts",
            "2",
            "--max-new-tokens",
            "6",
            "--steps",
            "3",
            "--warmup",
            "0",
            "--preset",
            "dapo",
            "--sft-steps",
            "0",
            "--json",
            "--trl",
        ])
        .unwrap();
        assert_eq!(
            (a.hidden, a.group, a.prompts, a.max_new_tokens),
            (32, 4, 2, 6)
        );
        assert_eq!((a.steps, a.warmup, a.sft_steps), (3, 0, 0));
        assert_eq!((a.preset.as_str(), a.json, a.trl), ("dapo", true, true));
        assert!(parse(&["--steps", "0"]).is_err());
        assert!(parse(&["--group", "x"]).is_err());
        assert!(parse(&["--trl", "--trl-json", "f.json"]).is_err());
    }

    fn timing(ms: f64) -> Measured {
        Measured::Done(Timing {
            median_ms: ms,
            min_ms: ms * 0.9,
            reps: 10,
        })
    }

    #[test]
    fn table_rows_and_ratio() {
        let args = parse(&[]).unwrap();
        let s = SluiceTimes {
            sft: Measured::Skipped("--sft-steps 0".into()),
            step: timing(500.0),
            rollout: timing(200.0),
            update: timing(250.0),
            rollout_tokens_per_s: Some(1920.0),
            completion_len: 6.0,
            reward_first: 0.0,
            reward_last: 0.5,
            reward_last5: 0.25,
            parameters: 1000,
        };
        let text = r#"{'loss': '0', 'reward': '0'}
{"impl": "trl_grpo", "env": {"threads": 2}, "step_s": {"median": 2.0, "min": 1.5, "reps": 10}, "generate_s": {"median": 0.3}, "rollout_tokens_per_s": 1300.0, "completion_length_mean": 6.3, "reward_last": 0.125, "reward_last5_mean": 0.1}
"#;
        let trl = parse_trl(text, "test").unwrap();
        assert_eq!(trl.step_s, 2.0);
        assert_eq!(trl.step_reps, 10);
        assert_eq!(trl.generate_s, Some(0.3));
        assert_eq!(trl.reward_last, Some(0.125));
        let rows = table_rows(&args, &s, Some(&trl));
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|r| r.len() == 7));
        assert_eq!(rows[0][1], "skipped");
        assert_eq!(rows[1][0], "rollout (64 completions)");
        assert_eq!(rows[1][4], "1920 tok/s");
        assert_eq!(rows[1][6], "1.50x");
        assert_eq!(rows[2][4], "4.00 steps/s");
        assert_eq!(rows[3][0], "RL step (grpo)");
        assert_eq!(rows[3][1], "500");
        assert_eq!(rows[3][5], "2000");
        assert_eq!(rows[3][6], "4.00x");
        let rows = table_rows(&args, &s, None);
        assert_eq!(rows[3][5..], ["-".to_string(), "-".to_string()]);
        assert!(parse_trl("{\"impl\": \"other\"}\n", "test").is_err());
        assert!(parse_trl("no json\n", "test").is_err());
    }
}
