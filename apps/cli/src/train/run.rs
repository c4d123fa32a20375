//! `sluice train --config recipe.toml [--resume]`: the engine's training session
//! ([`sluice::train::session`]) run from a recipe ([`sluice::train::recipe`]), with progress
//! bars, metrics JSONL, PNG plots and atomic checkpoints. Every random choice is a function
//! of `(seed, global step)`, so a resumed run continues exactly as an uninterrupted one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sluice::train::format;
use sluice::train::recipe::{RECIPE_HELP, Recipe};
use sluice::train::record::StepPhase;
use sluice::train::session::{Eval, OpenOptions, Session};

use super::metrics::MetricsLog;
use super::plot::plot_metrics;
use crate::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipe (TOML; every field is documented by `sluice train --help-recipe`, i.e.
    /// recipes/reference.toml).
    #[arg(long, value_name = "FILE", required_unless_present = "help_recipe")]
    config: Option<PathBuf>,
    /// Continue from `<out>/checkpoint` (same recipe: a recipe that differs from the one
    /// stored with the checkpoint is refused, listing the differences).
    #[arg(long)]
    resume: bool,
    /// With --resume: continue even though the recipe changed since the checkpoint.
    #[arg(long, requires = "resume")]
    allow_recipe_change: bool,
    /// The model folder to train (overrides the recipe's `[model]`).
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Steps of each phase (overrides the recipe's `steps`).
    #[arg(long, value_name = "N")]
    steps: Option<u64>,
    /// The output folder (overrides the recipe's `out`).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Stop (after checkpointing) once this many steps are done, e.g. to split a run.
    #[arg(long, value_name = "N")]
    stop_after: Option<u64>,
    /// Plain log lines instead of progress bars.
    #[arg(long)]
    quiet: bool,
    /// Print the documented recipe format and exit.
    #[arg(long)]
    help_recipe: bool,
}

pub fn run(args: &Args) -> Result<()> {
    if args.help_recipe {
        println!("{RECIPE_HELP}");
        return Ok(());
    }
    let path = args.config.as_ref().ok_or("--config is required")?;
    let text =
        sluice::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    // Paths given on the command line are the working directory's; the recipe's own are
    // its folder's.
    let cwd = std::env::current_dir()?;
    let recipe = Recipe::from_toml(&text)
        .and_then(|r| {
            r.with_overrides(
                args.model.as_ref().map(|m| cwd.join(m)),
                args.steps,
                args.out.as_ref().map(|o| cwd.join(o)),
            )
        })
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // Absolute, so that the folder saved with checkpoints holds wherever they are resumed.
    let recipe_dir = std::path::absolute(path.parent().unwrap_or(Path::new(".")))?;
    let opts = OpenOptions {
        out: recipe_dir.join(&recipe.out),
        recipe_dir,
        resume: args.resume,
        allow_recipe_change: args.allow_recipe_change,
    };
    let run = drive(recipe, &opts, args.stop_after, args.quiet)?;
    eprintln!(
        "sluice train: {} of {} steps done; checkpoint {}, metrics {}, plot {}",
        run.session.step(),
        run.session.total_steps(),
        opts.out.join("checkpoint").display(),
        opts.out.join("metrics.jsonl").display(),
        run.plot.display()
    );
    Ok(())
}

/// Held-out accuracy before training and at the end of each phase (`[eval]` recipes).
#[derive(Debug, Default)]
pub struct Evals {
    pub base: Option<Eval>,
    pub sft: Option<Eval>,
    pub rl: Option<Eval>,
}

/// A finished (or stopped) run.
pub struct Driven {
    pub session: Session,
    pub evals: Evals,
    pub plot: PathBuf,
}

/// Opens the session and runs it to the end (or `stop_after` steps in all), logging each
/// step to `metrics.jsonl`, evaluating when the recipe's `[eval]` says, checkpointing every
/// `save_every` steps and at the end, and plotting the metrics.
pub fn drive(
    recipe: Recipe,
    opts: &OpenOptions,
    stop_after: Option<u64>,
    quiet: bool,
) -> Result<Driven> {
    let device = sluice::device::wgpu().autodiff();
    let (mut session, changes) = Session::open(recipe, opts, &device)?;
    report_start(&session, &changes, opts.resume);
    let out = &opts.out;
    let ckpt_dir = out.join("checkpoint");
    let total = session.total_steps();
    let mut log = if opts.resume {
        MetricsLog::resume(&out.join("metrics.jsonl"), session.step())?
    } else {
        MetricsLog::create(&out.join("metrics.jsonl"))?
    };
    let t0 = Instant::now();
    let mut evals = Evals::default();
    if session.step() == 0 && !session.heldout().is_empty() {
        let e = pollster::block_on(session.evaluate_async())?;
        report_eval("before training", &e);
        log.write(
            &json!({"phase": session.next_phase(), "step": 0, "global_step": 0,
            "accuracy": e.greedy, "sampled_accuracy": e.sampled,
            "seconds": t0.elapsed().as_secs_f64()}),
        )?;
        evals.base = Some(e);
    }
    let stop = stop_after.unwrap_or(total).min(total);
    let pb = progress_bar(total, quiet);
    pb.set_position(session.step());
    let save_every = session.recipe().save_every;
    while session.step() < stop {
        let ts = Instant::now();
        pb.set_prefix(match session.next_phase() {
            Some(StepPhase::Sft) => "SFT",
            _ => "RL",
        });
        let Some(step) = pollster::block_on(session.step_async(&mut |_| {}))? else {
            break;
        };
        let dt = ts.elapsed().as_secs_f64();
        let mut rec = step.to_json();
        rec["step_seconds"] = json!(dt);
        rec["tokens_per_s"] = json!(step.tokens as f64 / dt);
        if session.eval_due() {
            let e = pollster::block_on(session.evaluate_async())?;
            rec["accuracy"] = json!(e.greedy);
            rec["sampled_accuracy"] = json!(e.sampled);
            let ended = match step.phase {
                StepPhase::Sft if step.global_step == session.sft_steps() => Some(&mut evals.sft),
                StepPhase::Rl if step.global_step == total => Some(&mut evals.rl),
                _ => None,
            };
            if let Some(slot) = ended {
                let when = match step.phase {
                    StepPhase::Sft => "after SFT",
                    StepPhase::Rl => "after RL",
                };
                pb.suspend(|| report_eval(when, &e));
                *slot = Some(e);
            }
        }
        rec["seconds"] = json!(t0.elapsed().as_secs_f64());
        let msg = format::record_line(&rec, &["reward", "kl", "loss", "accuracy", "tokens_per_s"]);
        if quiet {
            eprintln!("step {}: {msg}", step.global_step);
        }
        pb.set_message(msg);
        pb.inc(1);
        log.write(&rec)?;
        if step.global_step.is_multiple_of(save_every) || step.global_step == stop {
            session.save(&ckpt_dir)?;
        }
    }
    pb.finish();
    let plot = out.join("training.png");
    let labelled = plot_metrics(
        log.records(),
        "global_step",
        &[
            ("reward", "reward"),
            ("KL", "kl"),
            ("loss", "loss"),
            ("response length", "response_length"),
            ("held-out accuracy (greedy)", "accuracy"),
            ("held-out pass@1 (sampled, T=1)", "sampled_accuracy"),
            ("rollout accuracy", "rollout_accuracy"),
            ("entropy", "entropy"),
        ],
        &plot,
    )?;
    if !labelled {
        eprintln!("sluice: no TrueType font found; the plot has no labels");
    }
    Ok(Driven {
        session,
        evals,
        plot,
    })
}

fn report_eval(when: &str, e: &Eval) {
    eprintln!(
        "held-out accuracy {when}: {:.3} (sampled pass@1 {:.3})",
        e.greedy, e.sampled
    );
}

/// Where the run starts: the resumed step, recipe changes allowed on resume, LoRA's size.
fn report_start(session: &Session, changes: &[String], resume: bool) {
    if resume {
        eprintln!("sluice train: resuming at step {}", session.step());
        if !changes.is_empty() {
            eprintln!(
                "sluice train: resuming with a changed recipe:\n  {}",
                changes.join("\n  ")
            );
        }
    }
    if let (Some((n, params)), Some(lora)) = (session.lora_stats(), &session.recipe().lora) {
        eprintln!(
            "sluice train: LoRA r {} on {n} projections: {params} trainable parameters over a \
             frozen base",
            lora.r
        );
    }
}

fn progress_bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix:>4} [{bar:30}] {pos}/{len} {elapsed_precise} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb
}
