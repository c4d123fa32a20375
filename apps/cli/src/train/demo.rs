//! `sluice demo`: trains a tiny hybrid model from scratch on an embedded task (default: digit
//! sorting) — SFT, then GRPO-family RL with an exact-match verifier — printing held-out
//! accuracy before training and after each phase, writing metrics JSONL, PNG plots and the
//! trained checkpoint. The last line of standard output is one JSON object:
//! `{"task", "base_accuracy", "sft_accuracy", "rl_accuracy", "seconds", ...}`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use sluice::demo::run::{Demo, DemoConfig, Eval, Phase};
use sluice::demo::vocab;
use sluice::train::format;

use super::metrics::MetricsLog;
use super::plot::plot_metrics;
use crate::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML file with any `DemoConfig` fields (task, hidden, seed, eval_size, eval_every,
    /// sft_steps, sft_batch, sft_lr, rl_steps, rl_lr, [rl] ...); flags below override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Task: sort, sort:N, addition, addition:N.
    #[arg(long)]
    task: Option<String>,
    /// RL preset: grpo, dr_grpo, dapo, gspo, gmpo, reinforce_pp, reinforce_pp_baseline,
    /// rloo, gtpo, remax, gpg, pass_at_k.
    #[arg(long)]
    preset: Option<sluice::rl::presets::Preset>,
    #[arg(long, value_name = "N")]
    sft_steps: Option<usize>,
    #[arg(long, value_name = "N")]
    rl_steps: Option<usize>,
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Output folder (metrics.jsonl, training.png, model/).
    #[arg(long, default_value = "sluice-demo", value_name = "DIR")]
    out: PathBuf,
    /// No progress bars (plain log lines on stderr instead).
    #[arg(long)]
    quiet: bool,
}

/// The demo config: file (if any), then flags.
pub fn demo_config(args: &Args) -> Result<DemoConfig> {
    let mut cfg = match &args.config {
        Some(p) => {
            let text = sluice::fs::read_to_string(p)
                .map_err(|e| format!("reading {}: {e}", p.display()))?;
            let cfg =
                toml::from_str::<DemoConfig>(&text).map_err(|e| format!("{}: {e}", p.display()))?;
            cfg.validate()
                .map_err(|e| format!("{}: {e}", p.display()))?;
            cfg
        }
        None => DemoConfig::default(),
    };
    if let Some(t) = &args.task {
        cfg.task = t.clone();
    }
    if let Some(p) = &args.preset {
        cfg.rl.preset = Some(*p);
    }
    if let Some(n) = args.sft_steps {
        cfg.sft_steps = n;
    }
    if let Some(n) = args.rl_steps {
        cfg.rl_steps = n;
    }
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    Ok(cfg)
}

fn bar(len: usize, label: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{label:>4} [{{bar:30}}] {{pos}}/{{len}} {{elapsed_precise}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb
}

fn f(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

pub fn run(args: &Args) -> Result<()> {
    let cfg = demo_config(args)?;
    let t0 = Instant::now();
    let device = sluice::device::wgpu();
    let mut demo = Demo::new(cfg.clone(), &device)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("creating {}: {e}", args.out.display()))?;
    let mut log = MetricsLog::create(&args.out.join("metrics.jsonl"))?;
    eprintln!(
        "sluice demo: task {} | model {} parameters (hidden {}, layers: DeltaNet, attention, \
         DeltaNet, attention) | SFT {} steps × {} | RL {} steps, preset {}, {} prompts × {} \
         completions",
        demo.task,
        demo.config.num_parameters(),
        cfg.hidden,
        cfg.sft_steps,
        cfg.sft_batch,
        cfg.rl_steps,
        cfg.rl.preset.map_or("grpo", |p| p.name()),
        cfg.rl.prompts_per_step,
        cfg.rl.group_size
    );
    let eval = |demo: &Demo| pollster::block_on(demo.evaluate_async());
    let base = eval(&demo)?;
    eprintln!(
        "held-out accuracy before training: {:.3} (sampled pass@1 {:.3})",
        base.greedy, base.sampled
    );
    let mut global = 0usize;
    log.write(
        &json!({"phase": "sft", "step": 0, "global_step": 0, "accuracy": base.greedy,
        "sampled_accuracy": base.sampled, "seconds": t0.elapsed().as_secs_f64()}),
    )?;
    let mut sft_acc = base;
    let mut rl_acc = Eval {
        greedy: f64::NAN,
        sampled: f64::NAN,
    };
    let mut pb = bar(cfg.sft_steps, "SFT", args.quiet);
    let mut phase = Phase::Sft;
    let mut phase_t0 = Instant::now();
    loop {
        let ts = Instant::now();
        let Some(mut rec) = pollster::block_on(demo.step_async())? else {
            break;
        };
        if demo.phase != phase {
            // The first RL step just ran: close the SFT bar.
            pb.finish();
            eprintln!(
                "held-out accuracy after SFT: {:.3} (sampled pass@1 {:.3})",
                sft_acc.greedy, sft_acc.sampled
            );
            pb = bar(cfg.rl_steps, "RL", args.quiet);
            phase = demo.phase;
            phase_t0 = Instant::now();
        }
        global += 1;
        let dt = ts.elapsed().as_secs_f64();
        rec["global_step"] = json!(global);
        rec["step_seconds"] = json!(dt);
        rec["seconds"] = json!(t0.elapsed().as_secs_f64());
        let toks = f(&rec, "rollout_tokens");
        if toks.is_finite() {
            rec["rollout_tokens_per_s"] = json!(toks / dt);
        }
        if demo.eval_due() {
            let acc = eval(&demo)?;
            rec["accuracy"] = json!(acc.greedy);
            rec["sampled_accuracy"] = json!(acc.sampled);
            match demo.phase {
                Phase::Sft => sft_acc = acc,
                _ => rl_acc = acc,
            }
        }
        let keys: &[&str] = match demo.phase {
            Phase::Sft => &["loss", "accuracy"],
            _ => &["reward", "kl", "response_length", "accuracy"],
        };
        let msg = format::record_line(&rec, keys);
        pb.set_message(msg.clone());
        pb.inc(1);
        if args.quiet {
            eprintln!("{:?} step {}: {msg}", demo.phase, demo.step);
        }
        log.write(&rec)?;
    }
    pb.finish();
    if phase == Phase::Sft {
        eprintln!(
            "held-out accuracy after SFT: {:.3} (sampled pass@1 {:.3})",
            sft_acc.greedy, sft_acc.sampled
        );
    }
    if cfg.rl_steps == 0 {
        rl_acc = sft_acc;
    }
    eprintln!(
        "held-out accuracy after RL: {:.3} (sampled pass@1 {:.3}; RL phase {:.0} s)",
        rl_acc.greedy,
        rl_acc.sampled,
        phase_t0.elapsed().as_secs_f64()
    );
    let plot = args.out.join("training.png");
    let records = log.records();
    let labelled = plot_metrics(
        records,
        "global_step",
        &[
            ("reward (RL)", "reward"),
            ("KL to reference (RL)", "kl"),
            ("loss", "loss"),
            ("response length (RL)", "response_length"),
            ("held-out accuracy (greedy)", "accuracy"),
            ("held-out pass@1 (sampled, T=1)", "sampled_accuracy"),
        ],
        &plot,
    )?;
    if !labelled {
        eprintln!("sluice demo: no TrueType font found; the plot has no labels");
    }
    let model_dir = args.out.join("model");
    save_demo_model(&demo, &model_dir)?;
    let seconds = t0.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} , {} and {}",
        args.out.join("metrics.jsonl").display(),
        plot.display(),
        model_dir.display()
    );
    println!(
        "{}",
        json!({
            "task": demo.task.to_string(),
            "base_accuracy": base.greedy,
            "sft_accuracy": sft_acc.greedy,
            "rl_accuracy": rl_acc.greedy,
            "base_sampled_accuracy": base.sampled,
            "sft_sampled_accuracy": sft_acc.sampled,
            "rl_sampled_accuracy": rl_acc.sampled,
            "seconds": seconds,
            "preset": cfg.rl.preset.map_or("grpo", |p| p.name()),
            "sft_steps": cfg.sft_steps,
            "rl_steps": cfg.rl_steps,
            "heldout_size": demo.heldout().len(),
            "parameters": demo.config.num_parameters(),
            "metrics": args.out.join("metrics.jsonl"),
            "plot": plot,
            "model": model_dir,
        })
    );
    Ok(())
}

/// Saves the trained model with the demo tokenizer so `sluice generate` can load it.
pub fn save_demo_model(demo: &Demo, dir: &Path) -> Result<()> {
    use burn::module::Module;
    let extra = vocab::tokenizer_files();
    sluice::train::files::save_model_dir(dir, &demo.config, &demo.model.valid(), &extra)
        .map_err(|e| format!("saving the model to {}: {e}", dir.display()))?;
    Ok(())
}
