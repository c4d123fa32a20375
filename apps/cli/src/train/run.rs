//! `sluice train --config recipe.toml [--resume]`: SFT and/or GRPO-family RL from a recipe
//! ([`super::recipe`]), with progress bars, metrics JSONL, PNG plots and atomic checkpoints.
//!
//! Every random choice is a function of `(seed, global step)` — the SFT data order (one
//! shuffle per epoch), the RL prompts and the rollout sampler — so a run resumed from its
//! checkpoint (model, AdamW moments, step, KL controller) continues exactly as an
//! uninterrupted one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde_json::{Value, json};
use sluice::demo::Task;
use sluice::demo::task::Problem;
use sluice::demo::vocab;
use sluice::model::adapter;
use sluice::model::chat::{ChatOptions, Message};
use sluice::model::load::{LoadOptions, WeightDtype};
use sluice::model::tokenizer::Tokenizer;
use sluice::model::{Config, HybridModel};
use sluice::nn::AdapterMode;
use sluice::rl::kl::KlController;
use sluice::rl::presets::KlPlacement;
use sluice::rl::step::{Policy, Prompt, Reference, preset_objective, rl_step_async};
use sluice::train::checkpoint::TrainerState;
use sluice::train::format;
use sluice::train::optim::{AdamW, Grads};
use sluice::train::seeds::{Stream, step_seed};
use sluice::train::sft::{SftExample, pack, parse_jsonl, sft_loss, tokenize};

use super::metrics::MetricsLog;
use super::plot::plot_metrics;
use super::recipe::{Recipe, RlPhase, SftPhase};
use super::rewards::RunRewards;
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

/// Problems drawn once from a built-in task for a model with a real tokenizer.
const TASK_POOL: usize = 2048;

/// Where one phase's examples come from.
enum SftData {
    Examples(Vec<SftExample>),
    Task(Task),
}

enum RlData {
    Prompts(Vec<Prompt>),
    Task(Task),
}

fn tokenizer_files(tok_dir: Option<&Path>, demo: bool) -> Vec<(String, Vec<u8>)> {
    if demo {
        return vocab::tokenizer_files();
    }
    let Some(dir) = tok_dir else { return vec![] };
    [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "generation_config.json",
    ]
    .iter()
    .filter_map(|n| {
        sluice::fs::read(&dir.join(n))
            .ok()
            .map(|b| ((*n).to_string(), b))
    })
    .collect()
}

pub fn run(args: &Args) -> Result<()> {
    if args.help_recipe {
        println!("{}", RECIPE_HELP);
        return Ok(());
    }
    let path = args.config.as_ref().ok_or("--config is required")?;
    let text =
        sluice::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let recipe = Recipe::from_toml(&text)
        .and_then(|r| r.with_overrides(args.model.clone(), args.steps, args.out.clone()))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base_dir.join(p)
        }
    };
    let out = match &args.out {
        Some(o) => o.clone(),
        None => resolve(&recipe.out),
    };
    std::fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let ckpt_dir = out.join("checkpoint");
    let device = sluice::device::wgpu();
    let ad = device.clone().autodiff();

    // Model, tokenizer, optimizer, trainer state: fresh or from the checkpoint.
    let demo = recipe.model.demo_hidden.is_some();
    let model_dir = match &args.model {
        Some(m) => Some(m.clone()),
        None => recipe.model.path.as_ref().map(|p| resolve(p)),
    };
    let tokenizer: Option<Tokenizer> = if demo {
        Some(vocab::tokenizer()?)
    } else {
        model_dir.as_ref().and_then(|d| Tokenizer::from_dir(d).ok())
    };
    let extra = tokenizer_files(model_dir.as_deref(), demo);
    let Trainee {
        config,
        mut model,
        mut opt,
        mut state,
        lora_base,
    } = start(
        &recipe,
        args.resume,
        model_dir.as_deref(),
        &out,
        &extra,
        &ad,
    )?;
    if args.resume {
        check_same_recipe(&recipe, &state, args.allow_recipe_change)?;
    }
    model.recompute_layers = recipe.gradient_checkpointing;
    let eos: Vec<u32> = if demo {
        vec![vocab::EOS]
    } else if !config.eos_token_ids.is_empty() {
        config.eos_token_ids.clone()
    } else {
        tokenizer
            .as_ref()
            .and_then(Tokenizer::eos_token_id)
            .into_iter()
            .collect()
    };

    let sft_steps = recipe.sft.as_ref().map_or(0, |s| s.steps);
    let total = recipe.total_steps();
    let sft_data = match &recipe.sft {
        Some(s) => Some(load_sft(
            s,
            tokenizer.as_ref(),
            demo,
            &eos,
            recipe.seed,
            &resolve,
        )?),
        None => None,
    };
    let rl_data = match &recipe.rl {
        Some(r) => Some(load_rl(r, tokenizer.as_ref(), demo, recipe.seed, &resolve)?),
        None => None,
    };
    let objective = match &recipe.rl {
        Some(r) => Some(match &r.objective {
            Some(o) => o.clone(),
            None => preset_objective(&r.sampling)?,
        }),
        None => None,
    };
    let mut kl_ctrl: KlController = objective
        .as_ref()
        .map(|o| o.reward_kl.controller.clone())
        .unwrap_or(KlController::Fixed { coef: 0.0 });
    if let Some(c) = state.metadata.get("kl_controller") {
        kl_ctrl = serde_json::from_value(c.clone())?;
    }
    let needs_ref = objective
        .as_ref()
        .is_some_and(|o| o.kl_placement != KlPlacement::None);
    let ref_dir = out.join("reference");
    // Full fine-tuning keeps a frozen copy; LoRA's reference is the base (adapters off).
    let mut reference: Option<HybridModel> = None;

    // Reward functions live for the whole run (command rewards are processes).
    let mut rl_rewards = match &recipe.rl {
        Some(r) => Some(RunRewards::new(&r.rewards, base_dir)?),
        None => None,
    };
    let mut log = if args.resume {
        MetricsLog::resume(&out.join("metrics.jsonl"), state.step)?
    } else {
        MetricsLog::create(&out.join("metrics.jsonl"))?
    };
    let stop = args.stop_after.unwrap_or(total).min(total);
    let pb = if args.quiet {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::new(total);
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix:>4} [{bar:30}] {pos}/{len} {elapsed_precise} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        pb
    };
    pb.set_position(state.step);
    let t0 = Instant::now();
    while state.step < stop {
        let step = state.step;
        let ts = Instant::now();
        // Device-side draws (LoRA dropout) are a function of (seed, step) too.
        ad.seed(step_seed(recipe.seed, Stream::Device, step));
        let mut rec = if step < sft_steps {
            pb.set_prefix("SFT");
            let sft = recipe.sft.as_ref().expect("SFT steps imply [sft]");
            let data = sft_data.as_ref().expect("loaded");
            sft_step(&mut model, &mut opt, sft, data, recipe.seed, step, &ad)?
        } else {
            pb.set_prefix("RL");
            let rl = recipe.rl.as_ref().expect("RL steps imply [rl]");
            let rl_step = step - sft_steps;
            if needs_ref && reference.is_none() && lora_base.is_none() {
                reference = Some(if rl_step == 0 {
                    // The reference is the policy as RL starts (frozen); kept for resumes.
                    let r = model.valid();
                    sluice::train::files::save_model_dir(&ref_dir, &config, &r, &extra)?;
                    r
                } else {
                    sluice::model::files::load_model(&ref_dir, &device)
                        .map_err(|e| format!("loading the reference {}: {e}", ref_dir.display()))?
                        .1
                });
            }
            let obj = objective.as_ref().expect("set with [rl]");
            let lr = rl.schedule.lr(rl_step);
            let data = rl_data.as_ref().expect("loaded");
            let mut prng = StdRng::seed_from_u64(step_seed(recipe.seed, Stream::RlPrompts, step));
            let mut next = |n: usize| -> Vec<Prompt> {
                match data {
                    RlData::Prompts(ps) => (0..n)
                        .map(|_| ps.choose(&mut prng).expect("non-empty").clone())
                        .collect(),
                    RlData::Task(t) => (0..n)
                        .map(|_| t.train_problem(&mut prng).rl_prompt())
                        .collect(),
                }
            };
            let run_rewards = rl_rewards.as_mut().expect("built with [rl]");
            run_rewards.step(&model);
            let snapshot = run_rewards.needs_snapshot().then(|| model.valid());
            let base = ad.clone().inner();
            let rewards = run_rewards.for_step(snapshot.as_ref(), tokenizer.as_ref(), &base)?;
            let decode = |ids: &[u32]| -> String {
                match &tokenizer {
                    Some(t) if !demo => t.decode(ids, true).unwrap_or_default(),
                    _ => vocab::decode(ids),
                }
            };
            let rep = pollster::block_on(rl_step_async(
                Policy {
                    model: &mut model,
                    optimizer: &mut opt,
                    reference: match (&lora_base, &reference) {
                        (Some(_), _) => Reference::AdaptersOff,
                        (None, r) => r.as_ref().into(),
                    },
                    kl_controller: &mut kl_ctrl,
                },
                lr,
                &rl.sampling,
                obj,
                &rewards,
                &mut next,
                &eos,
                &decode,
                step_seed(recipe.seed, Stream::RlSampling, step),
                &ad,
                &mut |_| {},
            ))?;
            let mut rec = rep.to_record();
            rec["phase"] = json!("rl");
            rec["lr"] = json!(lr);
            let dt = ts.elapsed().as_secs_f64();
            rec["tokens_per_s"] = json!(rep.rollout_tokens as f64 / dt);
            // Rollout accuracy: the mean of a binary verifier (exact match / numeric accuracy).
            if let Some((_, acc)) = rep
                .rewards
                .iter()
                .find(|(name, _)| name == "exact_match" || name == "accuracy")
            {
                rec["accuracy"] = json!(acc);
            }
            rec
        };
        state.step += 1;
        let dt = ts.elapsed().as_secs_f64();
        rec["global_step"] = json!(state.step);
        rec["step_seconds"] = json!(dt);
        rec["seconds"] = json!(t0.elapsed().as_secs_f64());
        if rec.get("tokens_per_s").is_none() {
            rec["tokens_per_s"] = json!(rec["tokens"].as_f64().unwrap_or(0.0) / dt);
        }
        let msg = format::record_line(&rec, &["reward", "kl", "loss", "tokens_per_s"]);
        if args.quiet {
            eprintln!("step {}: {msg}", state.step);
        }
        pb.set_message(msg);
        pb.inc(1);
        log.write(&rec)?;
        if state.step.is_multiple_of(recipe.save_every) || state.step == stop {
            state.metadata = json!({ "kl_controller": kl_ctrl, "recipe": recipe });
            match &lora_base {
                Some(base) => sluice::train::files::save_adapter_checkpoint(
                    &ckpt_dir, &model, &opt, &state, base,
                ),
                None => sluice::train::files::save_checkpoint(
                    &ckpt_dir, &config, &model, &opt, &state, &extra,
                ),
            }
            .map_err(|e| format!("saving {}: {e}", ckpt_dir.display()))?;
        }
    }
    pb.finish();
    let plot = out.join("training.png");
    plot_metrics(
        log.records(),
        "global_step",
        &[
            ("reward", "reward"),
            ("KL", "kl"),
            ("loss", "loss"),
            ("response length", "response_length"),
            ("rollout accuracy", "accuracy"),
            ("entropy", "entropy"),
        ],
        &plot,
    )?;
    eprintln!(
        "sluice train: {} of {total} steps done; checkpoint {}, metrics {}, plot {}",
        state.step,
        ckpt_dir.display(),
        out.join("metrics.jsonl").display(),
        plot.display()
    );
    Ok(())
}

fn load_sft(
    s: &SftPhase,
    tok: Option<&Tokenizer>,
    demo: bool,
    eos: &[u32],
    seed: u64,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<SftData> {
    if let Some(t) = &s.task {
        let task = t.parse::<Task>()?;
        if demo {
            return Ok(SftData::Task(task));
        }
        let tok = tok.ok_or("[sft] task = ... needs the model's tokenizer.json")?;
        let eos = *eos
            .first()
            .ok_or("[sft] task = ...: the model names no EOS token")?;
        let mut rng = StdRng::seed_from_u64(step_seed(seed, Stream::TaskPool, 0));
        let mut examples = Vec::with_capacity(TASK_POOL);
        for _ in 0..TASK_POOL {
            let p = task.train_problem(&mut rng);
            let (_, mut ids) = task_prompt(&task, &p, tok, s.chat)?;
            let np = ids.len();
            ids.extend(tok.encode(&p.answer, false)?);
            ids.push(eos);
            ids.truncate(s.max_len);
            let targets = (0..ids.len()).map(|i| i >= np).collect();
            examples.push(SftExample { ids, targets });
        }
        return Ok(SftData::Examples(examples));
    }
    let path = resolve(s.data.as_ref().expect("validated"));
    let text = sluice::fs::read_to_string(&path)
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    let tok = tok.ok_or("SFT data needs the model's tokenizer.json")?;
    let records = parse_jsonl(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut examples = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        examples.push(
            tokenize(r, tok, s.max_len)
                .map_err(|e| format!("{} record {}: {e}", path.display(), i + 1))?,
        );
    }
    if s.packing {
        examples = pack(&examples, s.max_len);
    }
    Ok(SftData::Examples(examples))
}

fn load_rl(
    r: &RlPhase,
    tok: Option<&Tokenizer>,
    demo: bool,
    seed: u64,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<RlData> {
    if let Some(t) = &r.task {
        let task = t.parse::<Task>()?;
        if demo {
            return Ok(RlData::Task(task));
        }
        let tok = tok.ok_or("[rl] task = ... needs the model's tokenizer.json")?;
        let mut rng = StdRng::seed_from_u64(step_seed(seed, Stream::TaskPool, 1));
        let mut prompts = Vec::with_capacity(TASK_POOL);
        for _ in 0..TASK_POOL {
            let p = task.train_problem(&mut rng);
            let (text, ids) = task_prompt(&task, &p, tok, r.chat)?;
            prompts.push(Prompt {
                text,
                ids,
                reference: Some(p.answer),
            });
        }
        return Ok(RlData::Prompts(prompts));
    }
    let path = resolve(r.prompts.as_ref().expect("validated"));
    let text = sluice::fs::read_to_string(&path)
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    let tok = tok.ok_or("RL prompts need the model's tokenizer.json")?;
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |m: String| format!("{} line {}: {m}", path.display(), i + 1);
        let v: Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let p = v
            .get("prompt")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("expected a string `prompt`".into()))?;
        let answer = v.get("answer").map(|a| match a {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let rendered = if r.chat {
            tok.apply_chat_template(&[Message::user(p)], &ChatOptions::generation())
                .map_err(|e| bad(e.to_string()))?
        } else {
            p.to_string()
        };
        let ids = tok
            .encode(&rendered, false)
            .map_err(|e| bad(e.to_string()))?;
        if ids.is_empty() {
            return Err(bad("the prompt encodes to no tokens".into()).into());
        }
        prompts.push(Prompt {
            text: rendered,
            ids,
            reference: answer,
        });
    }
    if prompts.is_empty() {
        return Err(format!("{}: no prompts", path.display()).into());
    }
    Ok(RlData::Prompts(prompts))
}

/// A built-in task problem for a real tokenizer: its instruction, through the chat template
/// when `chat`; returns the rendered text and its ids.
fn task_prompt(
    task: &Task,
    p: &Problem,
    tok: &Tokenizer,
    chat: bool,
) -> Result<(String, Vec<u32>)> {
    let q = task.instruction(p);
    let text = if chat {
        tok.apply_chat_template(&[Message::user(&q)], &ChatOptions::generation())?
    } else {
        q
    };
    let ids = tok.encode(&text, false)?;
    Ok((text, ids))
}

/// One SFT optimizer step: `grad_accum` micro-batches of `batch_size` rows (losses averaged).
fn sft_step(
    model: &mut HybridModel,
    opt: &mut AdamW,
    s: &SftPhase,
    data: &SftData,
    seed: u64,
    step: u64,
    device: &burn::tensor::Device,
) -> Result<Value> {
    let lr = s.schedule.lr(step);
    let mut grads = Grads::new();
    let mut tokens = 0usize;
    adapter::set_mode(model, AdapterMode::Train);
    for micro in 0..s.grad_accum {
        let batch: Vec<SftExample> = match data {
            SftData::Task(t) => {
                let mut rng = StdRng::seed_from_u64(step_seed(
                    seed,
                    Stream::SftProblems,
                    step * 1024 + micro as u64,
                ));
                (0..s.batch_size)
                    .map(|_| t.train_problem(&mut rng).sft_example())
                    .collect()
            }
            SftData::Examples(ex) => {
                // Example k of the run: epoch k / n, position in that epoch's shuffle (one
                // shuffle per epoch a batch touches, not one per example).
                let n = ex.len() as u64;
                let first = (step * s.grad_accum as u64 + micro as u64) * s.batch_size as u64;
                let mut order: Option<(u64, Vec<usize>)> = None;
                (first..first + s.batch_size as u64)
                    .map(|k| {
                        let (epoch, pos) = (k / n, k % n);
                        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
                            let mut o: Vec<usize> = (0..ex.len()).collect();
                            o.shuffle(&mut StdRng::seed_from_u64(step_seed(
                                seed,
                                Stream::SftOrder,
                                epoch,
                            )));
                            order = Some((epoch, o));
                        }
                        let (_, o) = order.as_ref().expect("set above");
                        ex[o[pos as usize]].clone()
                    })
                    .collect()
            }
        };
        let (loss, n) = sft_loss(model, &batch, device)?;
        tokens += n;
        let loss = loss.map(|l| l.div_scalar(s.grad_accum as f32));
        loss.accumulate_into(model, &mut grads);
    }
    adapter::set_mode(model, AdapterMode::Eval);
    let rep = opt.step(model, grads, lr)?;
    Ok(json!({
        "phase": "sft",
        "loss": rep.loss,
        "lr": lr,
        "grad_norm": rep.grad_norm,
        "tokens": tokens,
        "skipped": rep.skipped.is_some(),
    }))
}

/// On resume: the recipe must equal the one stored with the checkpoint (its `out` aside),
/// unless `allow` — then the differences are printed.
fn check_same_recipe(recipe: &Recipe, state: &TrainerState, allow: bool) -> Result<()> {
    let Some(stored) = state.metadata.get("recipe") else {
        eprintln!("sluice train: the checkpoint stores no recipe; it cannot be compared");
        return Ok(());
    };
    let mut now = serde_json::to_value(recipe)?;
    let mut stored = stored.clone();
    for v in [&mut now, &mut stored] {
        if let Some(o) = v.as_object_mut() {
            o.remove("out");
        }
    }
    let diff = recipe_diff("", &stored, &now);
    if diff.is_empty() {
        return Ok(());
    }
    let list = diff.join("\n  ");
    if allow {
        eprintln!("sluice train: resuming with a changed recipe:\n  {list}");
        return Ok(());
    }
    Err(format!(
        "--resume: the recipe differs from the one the checkpoint was trained with:\n  {list}\n\
         (pass --allow-recipe-change to continue anyway)"
    )
    .into())
}

/// The fields where `a` and `b` differ, as `path: a → b` (missing values print as `-`).
fn recipe_diff(path: &str, a: &Value, b: &Value) -> Vec<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            let none = Value::Null;
            keys.into_iter()
                .flat_map(|k| {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    recipe_diff(&p, x.get(k).unwrap_or(&none), y.get(k).unwrap_or(&none))
                })
                .collect()
        }
        _ if a == b => vec![],
        _ => {
            let show = |v: &Value| {
                if v.is_null() {
                    "-".to_string()
                } else {
                    v.to_string()
                }
            };
            vec![format!("{path}: {} → {}", show(a), show(b))]
        }
    }
}

/// What a run trains, and from where it resumes.
struct Trainee {
    config: Config,
    model: HybridModel,
    opt: AdamW,
    state: TrainerState,
    /// With `[lora]`: the base model's path, recorded in `adapter_config.json`; checkpoints
    /// then hold the adapters only.
    lora_base: Option<String>,
}

/// The model, optimizer and state to train: fresh, or from `<out>/checkpoint` on `resume`.
/// With `[lora]` the base is loaded frozen (16-bit where `[model] dtype` says) and gets fresh
/// adapters, or the checkpoint's; a demo base is written to `<out>/base` so that the adapters
/// have a base to resume and generate from.
fn start(
    recipe: &Recipe,
    resume: bool,
    model_dir: Option<&Path>,
    out: &Path,
    extra: &[(String, Vec<u8>)],
    ad: &burn::tensor::Device,
) -> Result<Trainee> {
    let ckpt_dir = out.join("checkpoint");
    let Some(lora) = &recipe.lora else {
        if resume {
            let r = sluice::train::files::load_checkpoint(&ckpt_dir, ad)
                .map_err(|e| format!("--resume: loading {}: {e}", ckpt_dir.display()))?;
            eprintln!("sluice train: resuming at step {}", r.state.step);
            return Ok(Trainee {
                config: r.config,
                model: r.model,
                opt: r.optimizer,
                state: r.state,
                lora_base: None,
            });
        }
        let (config, model) = fresh_model(recipe, model_dir, ad)?;
        return Ok(Trainee {
            config,
            model,
            opt: AdamW::new(recipe.optim.clone()),
            state: TrainerState::default(),
            lora_base: None,
        });
    };
    let base_dir = match model_dir {
        Some(d) => d.to_path_buf(),
        None => {
            let d = out.join("base");
            if !resume {
                let (config, model) = fresh_model(recipe, None, ad)?;
                sluice::train::files::save_model_dir(&d, &config, &model, extra)?;
            }
            d
        }
    };
    let opts = LoadOptions {
        dtype: recipe.model.dtype.unwrap_or(WeightDtype::Auto),
        ..LoadOptions::default()
    };
    let (config, base) = sluice::model::files::load_model_with(&base_dir, ad, opts, &mut |_, _| {})
        .map_err(|e| format!("loading the base {}: {e}", base_dir.display()))?;
    let base_name = base_dir.display().to_string();
    let (model, opt, state) = if resume {
        let r = sluice::train::files::load_adapter_checkpoint(&ckpt_dir, &config, base, ad)
            .map_err(|e| format!("--resume: loading {}: {e}", ckpt_dir.display()))?;
        eprintln!("sluice train: resuming at step {}", r.2.step);
        r
    } else {
        let (model, _) = adapter::attach(base, config.family, lora, recipe.seed, ad)?;
        (
            model,
            AdamW::new(recipe.optim.clone()),
            TrainerState::default(),
        )
    };
    let (n, params) = adapter::adapter_stats(&model);
    eprintln!(
        "sluice train: LoRA r {} on {n} projections: {params} trainable parameters over a \
         frozen base",
        lora.r
    );
    Ok(Trainee {
        config,
        model,
        opt,
        state,
        lora_base: Some(base_name),
    })
}

/// A fresh model: the folder's weights (f32, trainable) or a new demo model.
fn fresh_model(
    recipe: &Recipe,
    model_dir: Option<&Path>,
    ad: &burn::tensor::Device,
) -> Result<(Config, HybridModel)> {
    Ok(match (model_dir, recipe.model.demo_hidden) {
        (Some(d), _) => sluice::model::files::load_model(d, ad)
            .map_err(|e| format!("loading {}: {e}", d.display()))?,
        (None, Some(h)) => {
            let c = vocab::model_config(h).map_err(|e| format!("[model] `demo_hidden` = {e}"))?;
            let m = sluice::model::init::init_model(&c, recipe.seed, ad);
            (c, m)
        }
        (None, None) => return Err("[model]: no `path` and no `demo_hidden`".into()),
    })
}

/// The recipe format, printed by `--help-recipe`.
pub const RECIPE_HELP: &str = include_str!("../../../../recipes/reference.toml");
