//! `sluice demo`: trains a tiny hybrid model from scratch on an embedded task (default: digit
//! sorting) — SFT, then GRPO-family RL with an exact-match verifier — printing held-out
//! accuracy before training and after each phase, writing metrics JSONL, PNG plots and the
//! trained checkpoint. It runs the demo's recipe (`recipes/demo.toml` with the flags applied)
//! through the same code as `sluice train`. The last line of standard output is one JSON object:
//! `{"task", "base_accuracy", "sft_accuracy", "rl_accuracy", "seconds", ...}`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use sluice::demo::DemoConfig;
use sluice::demo::vocab;
use sluice::train::session::{Eval, OpenOptions, Session};

use super::run::drive;
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

pub fn run(args: &Args) -> Result<()> {
    let cfg = demo_config(args)?;
    let task: sluice::demo::Task = cfg.task.parse()?;
    let t0 = Instant::now();
    let mut recipe = cfg.recipe()?;
    let out = std::env::current_dir()?.join(&args.out);
    recipe.out = out.clone();
    let model = vocab::model_config(cfg.hidden)?;
    eprintln!(
        "sluice demo: task {} | model {} parameters (hidden {}, layers: DeltaNet, attention, \
         DeltaNet, attention) | SFT {} steps × {} | RL {} steps, preset {}, {} prompts × {} \
         completions",
        task,
        model.num_parameters(),
        cfg.hidden,
        cfg.sft_steps,
        cfg.sft_batch,
        cfg.rl_steps,
        cfg.rl.preset.map_or("grpo", |p| p.name()),
        cfg.rl.prompts_per_step,
        cfg.rl.group_size
    );
    let opts = OpenOptions {
        recipe_dir: out.clone(),
        out: out.clone(),
        resume: false,
        allow_recipe_change: false,
    };
    let run = drive(recipe, &opts, None, args.quiet)?;
    let model_dir = out.join("model");
    save_demo_model(&run.session, &model_dir)?;
    let nan = Eval {
        greedy: f64::NAN,
        sampled: f64::NAN,
    };
    let base = run.evals.base.unwrap_or(nan);
    let sft = run.evals.sft.unwrap_or(base);
    let rl = run.evals.rl.unwrap_or(sft);
    eprintln!(
        "wrote {} , {} and {}",
        out.join("metrics.jsonl").display(),
        run.plot.display(),
        model_dir.display()
    );
    println!(
        "{}",
        json!({
            "task": task.to_string(),
            "base_accuracy": base.greedy,
            "sft_accuracy": sft.greedy,
            "rl_accuracy": rl.greedy,
            "base_sampled_accuracy": base.sampled,
            "sft_sampled_accuracy": sft.sampled,
            "rl_sampled_accuracy": rl.sampled,
            "seconds": t0.elapsed().as_secs_f64(),
            "preset": cfg.rl.preset.map_or("grpo", |p| p.name()),
            "sft_steps": cfg.sft_steps,
            "rl_steps": cfg.rl_steps,
            "heldout_size": run.session.heldout().len(),
            "parameters": model.num_parameters(),
            "metrics": out.join("metrics.jsonl"),
            "plot": run.plot,
            "model": model_dir,
        })
    );
    Ok(())
}

/// Saves the trained model with the demo tokenizer so `sluice generate` can load it.
pub fn save_demo_model(session: &Session, dir: &Path) -> Result<()> {
    use burn::module::Module;
    let extra = vocab::tokenizer_files();
    sluice::train::files::save_model_dir(dir, session.config(), &session.model().valid(), &extra)
        .map_err(|e| format!("saving the model to {}: {e}", dir.display()))?;
    Ok(())
}
