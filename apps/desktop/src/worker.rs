//! The engine worker: one thread owns the models and the training run, runs the UI's
//! [`Command`]s and reports [`Event`]s. Training advances one step at a time, with the
//! command queue checked between steps (pause, stop, save, chat all interleave).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use serde_json::json;
use sluice::demo::DemoConfig;
use sluice::model::chat::{ChatOptions, Message};
use sluice::model::generate::{GenerateOptions, Sampling, generate_streaming_async};
use sluice::model::tokenizer::Tokenizer;
use sluice::model::weights::{Buffer, Weights};
use sluice::model::{Config, HybridModel};
use sluice::train::Stage;
use sluice::train::session::Session;

use crate::protocol::{
    Command, EndReason, Event, GenRequest, METRICS_FILE, ModelInfo, ModelSource, RunInfo,
    StartFrom, TrainRequest, WorkerExit, history_record as record,
};

/// The built-in demo model (sorts digits: `31415=` → `11345<eos>`).
pub mod demo_model {
    pub const CONFIG: &str = include_str!("../../../assets/demo-model/config.json");
    pub const WEIGHTS: &[u8] = include_bytes!("../../../assets/demo-model/model.safetensors");
    pub const TOKENIZER: &[u8] = include_bytes!("../../../assets/demo-model/tokenizer.json");
    pub const TOKENIZER_CONFIG: &str =
        include_str!("../../../assets/demo-model/tokenizer_config.json");
}

/// Something the UI can be told about (the UI's `request_repaint` goes here).
pub trait Notify: Send + 'static {
    fn notify(&self);
}

impl<F: Fn() + Send + 'static> Notify for F {
    fn notify(&self) {
        self()
    }
}

struct ChatModel {
    model: HybridModel,
    tokenizer: Tokenizer,
    eos: Vec<u32>,
    source: ModelSource,
}

struct Run {
    session: Session,
    /// Stop after this global step.
    stop_at: Option<usize>,
    paused: bool,
    active: bool,
    /// Folder and global step of the last save.
    saved: Option<(PathBuf, usize)>,
    /// Step records and evaluations so far (`kind`: `"step"` | `"eval"`) as JSON lines, saved
    /// beside the checkpoint as [`METRICS_FILE`] so a resumed run redraws its curves. Lines
    /// read back are kept byte for byte (a float re-serialised after parsing can differ in
    /// its last digit).
    history: Vec<String>,
}

/// The history's lines as the file's bytes.
fn metrics_bytes(history: &[String]) -> Vec<u8> {
    history
        .iter()
        .flat_map(|l| [l.as_str(), "\n"])
        .collect::<String>()
        .into_bytes()
}

/// Splits a checkpoint's files into the run's and its history lines.
fn take_history(files: Vec<(String, Vec<u8>)>) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let (metrics, files): (Vec<_>, Vec<_>) =
        files.into_iter().partition(|(n, _)| n == METRICS_FILE);
    let history = metrics
        .iter()
        .flat_map(|(_, b)| {
            String::from_utf8_lossy(b)
                .lines()
                .filter(|l| record(l).is_some())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    (files, history)
}

fn eval_line(global_step: usize, greedy: f64, sampled: f64) -> String {
    json!({"kind": "eval", "global_step": global_step, "greedy": greedy, "sampled": sampled})
        .to_string()
}

/// Steps done by `session` over both phases.
pub fn global_step(session: &Session) -> usize {
    session.step() as usize
}

/// A session of the recipe file at `path`: its relative paths are its folder's, its output
/// folder (`out`) holds what the run writes besides the app's checkpoints.
pub fn open_recipe(path: Option<&Path>, device: &Device) -> Result<Session, String> {
    let path = path.ok_or("no recipe file given")?;
    let text =
        sluice::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let recipe = sluice::train::recipe::Recipe::from_toml(&text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = std::path::absolute(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let opts = sluice::train::session::OpenOptions {
        out: dir.join(&recipe.out),
        recipe_dir: dir,
        resume: false,
        allow_recipe_change: false,
    };
    let (session, _) = Session::open(recipe, &opts, &device.clone().autodiff())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(session)
}

/// The run's task as its recipe names it (`sort`, `addition:3`, ...).
fn task_name(session: &Session) -> String {
    session
        .task()
        .map_or_else(|| "custom data".into(), |t| t.to_string())
}

/// Reads every file of a checkpoint folder (plain names → bytes).
pub fn read_dir_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let bytes = sluice::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        files.push((name.to_string(), bytes));
    }
    Ok(files)
}

/// A one-line description of a model config.
pub fn config_summary(c: &Config) -> String {
    let linear = c
        .layer_types
        .iter()
        .filter(|t| format!("{t:?}").to_lowercase().contains("linear"))
        .count();
    let moe = c
        .moe
        .as_ref()
        .map(|m| {
            format!(
                ", MoE {} experts (top {})",
                m.num_experts, m.num_experts_per_tok
            )
        })
        .unwrap_or_default();
    format!(
        "{:?}: {} layers ({} Gated DeltaNet, {} gated attention), hidden {}, {} attention heads \
         ({} KV) × {}, {} linear heads (k {} / v {}), vocab {}{moe}",
        c.family,
        c.num_hidden_layers,
        linear,
        c.num_hidden_layers - linear,
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
        c.linear_num_value_heads,
        c.linear_key_head_dim,
        c.linear_value_head_dim,
        c.vocab_size,
    )
}

/// The embedded demo model on `device`.
pub fn demo_model(device: &Device) -> Result<(Config, HybridModel), String> {
    let config = Config::from_json(demo_model::CONFIG).map_err(|e| format!("config: {e}"))?;
    let weights = Weights::new(vec![(
        "model.safetensors".into(),
        Box::new(demo_model::WEIGHTS) as Buffer,
    )])
    .map_err(|e| e.to_string())?;
    let model = sluice::model::load::build(&config, &weights, device).map_err(|e| e.to_string())?;
    Ok((config, model))
}

fn demo_tokenizer() -> Result<Tokenizer, String> {
    Tokenizer::from_bytes(demo_model::TOKENIZER)
        .and_then(|t| t.with_config(demo_model::TOKENIZER_CONFIG))
        .map_err(|e| format!("tokenizer: {e}"))
}

/// The worker's state.
pub struct Worker<N: Notify> {
    device: Device,
    events: Sender<Event>,
    notify: N,
    stop_generation: Arc<AtomicBool>,
    chat: Option<ChatModel>,
    run: Option<Run>,
}

impl<N: Notify> Worker<N> {
    pub fn new(
        device: Device,
        events: Sender<Event>,
        notify: N,
        stop_generation: Arc<AtomicBool>,
    ) -> Self {
        Worker {
            device,
            events,
            notify,
            stop_generation,
            chat: None,
            run: None,
        }
    }

    fn send(&self, ev: Event) {
        // The UI may be gone (closing); nothing to do then.
        let _ = self.events.send(ev);
        self.notify.notify();
    }

    /// Runs until a `Shutdown` command or until the UI hangs up; returns what shutdown did.
    pub fn run(mut self, commands: Receiver<Command>) -> WorkerExit {
        loop {
            let stepping = self.run.as_ref().is_some_and(|r| r.active && !r.paused);
            let cmd = if stepping {
                match commands.try_recv() {
                    Ok(c) => Some(c),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => return WorkerExit::default(),
                }
            } else {
                match commands.recv() {
                    Ok(c) => Some(c),
                    Err(_) => return WorkerExit::default(),
                }
            };
            match cmd {
                Some(Command::Shutdown { checkpoint_dir }) => {
                    let exit = self.shutdown(&checkpoint_dir);
                    self.send(Event::ShutdownDone(exit.clone()));
                    return exit;
                }
                Some(c) => self.handle(c),
                None => self.train_step(),
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::LoadModel(src) => {
                let t0 = Instant::now();
                match self.load(&src) {
                    Ok(mut info) => {
                        info.load_seconds = t0.elapsed().as_secs_f64();
                        self.send(Event::ModelLoaded(info));
                    }
                    Err(e) => self.send(Event::ModelFailed(e)),
                }
            }
            Command::Generate(req) => self.generate(&req),
            Command::StartTraining(req) => self.start(req),
            Command::ResumeFrom { dir, max_steps } => self.resume_from(&dir, max_steps),
            Command::Pause => {
                if let Some(r) = self.run.as_mut().filter(|r| r.active) {
                    r.paused = true;
                    self.send(Event::Paused);
                }
            }
            Command::Resume => {
                if let Some(r) = self.run.as_mut().filter(|r| r.active) {
                    r.paused = false;
                    self.send(Event::Resumed);
                }
            }
            Command::Stop { checkpoint_dir } => {
                if let Some(r) = self.run.as_mut().filter(|r| r.active) {
                    r.active = false;
                    match self.save_unsaved(&checkpoint_dir) {
                        Ok(Some(dir)) => self.send(Event::CheckpointSaved(dir)),
                        Ok(None) => {}
                        Err(e) => self.send(Event::CheckpointFailed(e)),
                    }
                    self.send(Event::TrainingEnded(EndReason::Stopped));
                }
            }
            Command::SaveCheckpoint(dir) => match self.save(&dir) {
                Ok(()) => self.send(Event::CheckpointSaved(dir)),
                Err(e) => self.send(Event::CheckpointFailed(e)),
            },
            Command::Shutdown { .. } => unreachable!("handled by run"),
        }
    }

    fn load(&mut self, src: &ModelSource) -> Result<ModelInfo, String> {
        let device = self.device.clone();
        let (name, config, model, tokenizer) = match src {
            ModelSource::Demo => {
                let (config, model) = demo_model(&device)?;
                (
                    "built-in demo model (sorts digits)".to_string(),
                    config,
                    model,
                    demo_tokenizer()?,
                )
            }
            ModelSource::Dir(dir) => {
                // Chat: 16-bit checkpoints stay 16-bit on the device (fused decode path).
                let opts = sluice::model::load::LoadOptions::default();
                let (config, model) =
                    sluice::model::files::load_model_with(dir, &device, opts, &mut |_, _| {})
                        .map_err(|e| format!("loading {}: {e}", dir.display()))?;
                let tokenizer = Tokenizer::from_dir(dir)
                    .map_err(|e| format!("tokenizer in {}: {e}", dir.display()))?;
                (dir.display().to_string(), config, model, tokenizer)
            }
            ModelSource::Trained => {
                let run = self.run.as_ref().ok_or("no training run")?;
                let tokenizer = sluice::demo::vocab::tokenizer().map_err(|e| e.to_string())?;
                (
                    format!("the training run's model ({})", task_name(&run.session)),
                    run.session.config().clone(),
                    run.session.model().valid(),
                    tokenizer,
                )
            }
        };
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(format!(
                "the tokenizer has {} tokens, the model only {}",
                tokenizer.vocab_size(),
                config.vocab_size
            ));
        }
        let mut eos = config.eos_token_ids.clone();
        eos.extend(tokenizer.eos_token_id());
        let info = ModelInfo {
            name,
            summary: config_summary(&config),
            parameters: model.num_params(),
            vocab_size: config.vocab_size,
            chat_template: tokenizer.chat_template_names().next().is_some(),
            load_seconds: 0.0,
        };
        self.chat = Some(ChatModel {
            model,
            tokenizer,
            eos,
            source: src.clone(),
        });
        Ok(info)
    }

    fn generate(&mut self, req: &GenRequest) {
        let t0 = Instant::now();
        let mut count = 0usize;
        let mut first = None;
        let mut stopped = false;
        let res = self.generate_inner(req, &mut count, &mut first, &mut stopped);
        match res {
            Ok(()) => self.send(Event::GenerationDone {
                tokens: count,
                seconds: t0.elapsed().as_secs_f64(),
                first_token_seconds: first.map(|t: Instant| (t - t0).as_secs_f64()),
                stopped,
            }),
            Err(e) => self.send(Event::GenerationFailed(e)),
        }
    }

    fn generate_inner(
        &self,
        req: &GenRequest,
        count: &mut usize,
        first: &mut Option<Instant>,
        stopped: &mut bool,
    ) -> Result<(), String> {
        let chat = self.chat.as_ref().ok_or("no model loaded")?;
        let tok = &chat.tokenizer;
        let ids = if tok.chat_template_names().next().is_some() {
            let mut messages = Vec::new();
            for t in &req.history {
                messages.push(Message::user(t.user.clone()));
                messages.push(Message::assistant(t.assistant.clone()));
            }
            messages.push(Message::user(req.prompt.clone()));
            tok.encode_chat(&messages, &ChatOptions::generation())
        } else {
            tok.encode(&req.prompt, true)
        }
        .map_err(|e| e.to_string())?;
        if ids.is_empty() {
            return Err("the prompt encodes to no tokens".into());
        }
        let opts = GenerateOptions {
            max_new_tokens: req.max_new_tokens.max(1),
            sampling: Sampling {
                temperature: req.temperature,
                top_k: req.top_k,
                top_p: req.top_p,
                seed: req.seed,
                ..Sampling::default()
            },
            eos_token_ids: chat.eos.clone(),
        };
        let mut decoder = sluice::model::detok::StreamDecoder::new(tok);
        let device = self.device.clone();
        let stop = self.stop_generation.clone();
        let prompts = [ids];
        let fut = generate_streaming_async(&chat.model, &prompts, 1, &opts, &device, |_, t| {
            *count += 1;
            first.get_or_insert_with(Instant::now);
            let piece = decoder.push(t);
            if !piece.is_empty() {
                let _ = self.events.send(Event::Generated(piece));
                self.notify.notify();
            }
            if stop.load(Ordering::SeqCst) {
                *stopped = true;
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        pollster::block_on(fut).map_err(|e| e.to_string())?;
        let rest = decoder.finish();
        if !rest.is_empty() {
            let _ = self.events.send(Event::Generated(rest));
            self.notify.notify();
        }
        Ok(())
    }

    fn start(&mut self, req: TrainRequest) {
        let demo = match req.start {
            StartFrom::Scratch => req
                .cfg
                .recipe()
                .and_then(|r| Session::demo(r, None, &self.device).map_err(|e| e.to_string())),
            StartFrom::LoadedModel => self.demo_from_loaded(req.cfg),
            StartFrom::Recipe => open_recipe(req.recipe.as_deref(), &self.device),
        };
        match demo {
            Ok(demo) => self.begin(demo, req.max_steps, None, Vec::new()),
            Err(e) => self.send(Event::TrainingEnded(EndReason::Failed(e))),
        }
    }

    /// RL from the chat model: rebuilt on the autodiff device from its source.
    fn demo_from_loaded(&self, mut cfg: DemoConfig) -> Result<Session, String> {
        let chat = self.chat.as_ref().ok_or("load a model first")?;
        let ad = self.device.clone().autodiff();
        let (config, model) = match &chat.source {
            ModelSource::Demo => demo_model(&ad)?,
            ModelSource::Dir(dir) => {
                sluice::model::files::load_model(dir, &ad).map_err(|e| e.to_string())?
            }
            ModelSource::Trained => {
                let r = self.run.as_ref().ok_or("no training run")?;
                (r.session.config().clone(), r.session.model().clone())
            }
        };
        cfg.hidden = config.hidden_size;
        let recipe = cfg.recipe()?;
        Session::demo(recipe, Some((config, model)), &self.device).map_err(|e| e.to_string())
    }

    fn resume_from(&mut self, dir: &Path, max_steps: Option<usize>) {
        let res = read_dir_files(dir).and_then(|files| {
            let (files, history) = take_history(files);
            let ad = self.device.clone().autodiff();
            let demo =
                Session::resume_from_dir(dir, Path::new("."), &ad).map_err(|e| e.to_string())?;
            drop(files);
            Ok((demo, history))
        });
        match res {
            Ok((demo, history)) => self.begin(demo, max_steps, Some(dir.to_path_buf()), history),
            Err(e) => self.send(Event::TrainingEnded(EndReason::Failed(format!(
                "resuming from {}: {e}",
                dir.display()
            )))),
        }
    }

    fn begin(
        &mut self,
        demo: Session,
        max_steps: Option<usize>,
        resumed_from: Option<PathBuf>,
        mut history: Vec<String>,
    ) {
        let done = global_step(&demo);
        let info = RunInfo {
            task: task_name(&demo),
            preset: (demo.sampling().and_then(|s| s.preset))
                .map_or("grpo", sluice::rl::presets::Preset::name)
                .to_string(),
            parameters: demo.model().num_params(),
            sft_steps: demo.sft_steps() as usize,
            rl_steps: demo.rl_steps() as usize,
            done,
            resumed_from: resumed_from.clone(),
        };
        self.send(Event::TrainingStarted(info));
        if !history.is_empty() {
            self.send(Event::History(
                history.iter().filter_map(|l| record(l)).collect(),
            ));
        }
        // Accuracy before training (fresh runs with an evaluation set only: a resumed run has
        // its curve already).
        if done == 0 && !demo.heldout().is_empty() {
            match pollster::block_on(demo.evaluate_async()) {
                Ok(e) => {
                    history.push(eval_line(0, e.greedy, e.sampled));
                    self.send(Event::Eval {
                        global_step: 0,
                        greedy: e.greedy,
                        sampled: e.sampled,
                    })
                }
                Err(e) => {
                    self.send(Event::TrainingEnded(EndReason::Failed(e.to_string())));
                    return;
                }
            }
        }
        self.run = Some(Run {
            session: demo,
            stop_at: max_steps.map(|n| done + n),
            paused: false,
            active: true,
            saved: resumed_from.map(|d| (d, done)),
            history,
        });
    }

    fn train_step(&mut self) {
        let Some(run) = self.run.as_mut() else {
            return;
        };
        let t0 = Instant::now();
        let (events, notify) = (&self.events, &self.notify);
        let res = pollster::block_on(run.session.step_async(&mut |stage| {
            let _ = events.send(Event::Stage(stage));
            notify.notify();
        }));
        let ev = match res {
            Ok(Some(step)) => {
                let mut rec = step.to_json();
                let g = global_step(&run.session);
                rec["global_step"] = json!(g);
                rec["step_seconds"] = json!(t0.elapsed().as_secs_f64());
                let mut kept = rec.clone();
                kept["kind"] = json!("step");
                run.history.push(kept.to_string());
                let mut evs = vec![Event::Step(rec)];
                if run.session.eval_due() {
                    let problems = run.session.heldout().len();
                    let _ = events.send(Event::Stage(Stage::Evaluate { problems }));
                    notify.notify();
                    match pollster::block_on(run.session.evaluate_async()) {
                        Ok(e) => {
                            run.history.push(eval_line(g, e.greedy, e.sampled));
                            evs.push(Event::Eval {
                                global_step: g,
                                greedy: e.greedy,
                                sampled: e.sampled,
                            })
                        }
                        Err(e) => evs.push(Event::TrainingEnded(EndReason::Failed(e.to_string()))),
                    }
                }
                let total = run.session.total_steps() as usize;
                if g >= total {
                    evs.push(Event::TrainingEnded(EndReason::Finished));
                } else if run.stop_at.is_some_and(|s| g >= s) {
                    evs.push(Event::TrainingEnded(EndReason::StepLimit));
                }
                evs
            }
            Ok(None) => vec![Event::TrainingEnded(EndReason::Finished)],
            Err(e) => vec![Event::TrainingEnded(EndReason::Failed(e.to_string()))],
        };
        if ev.iter().any(|e| matches!(e, Event::TrainingEnded(_))) {
            run.active = false;
        }
        for e in ev {
            self.send(e);
        }
    }

    fn save(&mut self, dir: &Path) -> Result<(), String> {
        let run = self.run.as_mut().ok_or("no run to save")?;
        let mut files =
            pollster::block_on(run.session.checkpoint_files_async()).map_err(|e| e.to_string())?;
        files.push((METRICS_FILE.to_string(), metrics_bytes(&run.history)));
        sluice::train::files::write_dir_atomic(dir, &files)
            .map_err(|e| format!("writing {}: {e}", dir.display()))?;
        run.saved = Some((dir.to_path_buf(), global_step(&run.session)));
        Ok(())
    }

    /// Saves the run to `dir` unless it is saved there as it is (the current step already
    /// finished: the worker only reads commands between steps) → the folder holding it, or
    /// None when there is nothing to save (no run, or no step taken).
    fn save_unsaved(&mut self, dir: &Path) -> Result<Option<PathBuf>, String> {
        let Some(r) = self.run.as_ref() else {
            return Ok(None);
        };
        let g = global_step(&r.session);
        if g == 0 {
            return Ok(None);
        }
        if r.saved.as_ref() != Some(&(dir.to_path_buf(), g)) {
            self.save(dir)?;
        }
        Ok(Some(dir.to_path_buf()))
    }

    fn shutdown(&mut self, dir: &Path) -> WorkerExit {
        match self.save_unsaved(dir) {
            Ok(checkpoint) => WorkerExit {
                checkpoint,
                error: None,
            },
            Err(e) => WorkerExit {
                checkpoint: None,
                error: Some(e),
            },
        }
    }
}

/// Starts the worker thread.
pub fn spawn<N: Notify>(
    device: Device,
    commands: Receiver<Command>,
    events: Sender<Event>,
    notify: N,
    stop_generation: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<WorkerExit>> {
    std::thread::Builder::new()
        .name("sluice-worker".into())
        .spawn(move || Worker::new(device, events, notify, stop_generation).run(commands))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::TrainForm;
    use std::sync::mpsc::channel;

    fn start() -> (
        Sender<Command>,
        Receiver<Event>,
        std::thread::JoinHandle<WorkerExit>,
    ) {
        let (ctx, crx) = channel();
        let (etx, erx) = channel();
        let h = spawn(
            sluice::device::wgpu(),
            crx,
            etx,
            || {},
            Arc::new(AtomicBool::new(false)),
        )
        .expect("thread");
        (ctx, erx, h)
    }

    /// Collects events until `stop` matches one.
    fn until(rx: &Receiver<Event>, stop: impl Fn(&Event) -> bool) -> Vec<Event> {
        let mut out = Vec::new();
        loop {
            let ev = rx
                .recv_timeout(std::time::Duration::from_secs(300))
                .expect("worker event");
            let done = stop(&ev);
            out.push(ev);
            if done {
                return out;
            }
        }
    }

    #[test]
    fn demo_config_summary_and_checkpoint_reading() {
        let c = Config::from_json(demo_model::CONFIG).expect("demo config");
        let s = config_summary(&c);
        assert!(
            s.contains("4 layers (2 Gated DeltaNet, 2 gated attention)"),
            "{s}"
        );
        assert!(s.contains("vocab 14"), "{s}");
        let dir = std::env::temp_dir().join(format!("sluice-desktop-read-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).expect("dirs");
        std::fs::write(dir.join("a.json"), b"{}").expect("write");
        let files = read_dir_files(&dir).expect("read");
        assert_eq!(files, vec![("a.json".to_string(), b"{}".to_vec())]);
        std::fs::remove_dir_all(&dir).ok();
        assert!(read_dir_files(Path::new("/no/such/dir")).is_err());
    }

    #[test]
    fn demo_model_streams_the_sorted_digits_and_training_saves_on_shutdown() {
        let (tx, rx, handle) = start();
        tx.send(Command::LoadModel(ModelSource::Demo))
            .expect("send");
        let evs = until(&rx, |e| {
            matches!(e, Event::ModelLoaded(_) | Event::ModelFailed(_))
        });
        let Some(Event::ModelLoaded(info)) = evs.last() else {
            panic!("demo model failed to load: {evs:?}");
        };
        assert_eq!(info.parameters, 216_624);
        assert!(!info.chat_template);

        tx.send(Command::Generate(GenRequest {
            history: vec![],
            prompt: "31415=".into(),
            max_new_tokens: 8,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }))
        .expect("send");
        let evs = until(&rx, |e| {
            matches!(e, Event::GenerationDone { .. } | Event::GenerationFailed(_))
        });
        let Some(Event::GenerationDone {
            first_token_seconds: Some(ttft),
            seconds,
            ..
        }) = evs.last()
        else {
            panic!("generation ends with its time to first token: {evs:?}");
        };
        assert!(*ttft > 0.0 && ttft <= seconds, "{ttft} {seconds}");
        let texts: Vec<&String> = evs
            .iter()
            .filter_map(|e| match e {
                Event::Generated(t) => Some(t),
                _ => None,
            })
            .collect();
        assert!(texts.len() > 1, "tokens stream one by one: {evs:?}");
        // The same tokens as the engine's own generation from the demo vocabulary's ids.
        let (_, model) = demo_model(&sluice::device::wgpu()).expect("demo model");
        let opts = GenerateOptions {
            max_new_tokens: 8,
            sampling: Sampling::default(),
            eos_token_ids: vec![sluice::demo::vocab::EOS],
        };
        let ids = sluice::demo::vocab::encode("31415=");
        let want = sluice::model::generate::generate(
            &model,
            &[ids],
            &opts,
            &sluice::device::wgpu(),
            |_, _| {},
        )
        .expect("generate");
        assert_eq!(want[0].last(), Some(&sluice::demo::vocab::EOS));
        // The pieces add up to the text without special tokens (no `<eos>` in the chat).
        let want = sluice::demo::vocab::decode(&want[0]);
        let got: String = texts.iter().map(|t| t.as_str()).collect();
        assert_eq!(got, want);
        assert_eq!(want.len(), "11345".len(), "five digits: {want}");

        let dir =
            std::env::temp_dir().join(format!("sluice-desktop-worker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = TrainForm::tiny().to_config().expect("tiny");
        tx.send(Command::StartTraining(TrainRequest {
            cfg,
            start: StartFrom::Scratch,
            recipe: None,
            max_steps: Some(1),
        }))
        .expect("send");
        let evs = until(&rx, |e| matches!(e, Event::TrainingEnded(_)));
        assert_eq!(
            evs.last(),
            Some(&Event::TrainingEnded(EndReason::StepLimit)),
            "{evs:?}"
        );
        let steps = evs.iter().filter(|e| matches!(e, Event::Step(_))).count();
        assert_eq!(steps, 1);
        tx.send(Command::Shutdown {
            checkpoint_dir: dir.clone(),
        })
        .expect("send");
        let exit = handle.join().expect("worker");
        assert_eq!(exit.checkpoint.as_deref(), Some(dir.as_path()), "{exit:?}");
        let ad = sluice::device::wgpu().autodiff();
        let demo = Session::resume_from_dir(&dir, Path::new("."), &ad).expect("restore");
        assert_eq!(global_step(&demo), 1);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Stop saves the run with its history; resuming from the folder sends that history back.
    #[test]
    fn stop_saves_and_resuming_restores_the_history() {
        let (tx, rx, handle) = start();
        let dir = std::env::temp_dir().join(format!("sluice-desktop-stop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = TrainForm::tiny().to_config().expect("tiny");
        tx.send(Command::StartTraining(TrainRequest {
            cfg,
            start: StartFrom::Scratch,
            recipe: None,
            max_steps: None,
        }))
        .expect("send");
        until(&rx, |e| matches!(e, Event::Step(_)));
        tx.send(Command::Stop {
            checkpoint_dir: dir.clone(),
        })
        .expect("send");
        let evs = until(&rx, |e| matches!(e, Event::TrainingEnded(_)));
        assert_eq!(evs.last(), Some(&Event::TrainingEnded(EndReason::Stopped)));
        assert!(
            evs.contains(&Event::CheckpointSaved(dir.clone())),
            "Stop saves: {evs:?}"
        );
        let files = read_dir_files(&dir).expect("files");
        let (_, history) = take_history(files);
        let records: Vec<serde_json::Value> = history.iter().filter_map(|l| record(l)).collect();
        assert_eq!(records.len(), history.len());
        let steps = records.iter().filter(|r| r["kind"] == "step").count();
        assert!(steps >= 1, "{history:?}");
        assert_eq!(
            (&records[0]["kind"], &records[0]["global_step"]),
            (&json!("eval"), &json!(0))
        );

        tx.send(Command::ResumeFrom {
            dir: dir.clone(),
            max_steps: Some(1),
        })
        .expect("send");
        let evs = until(&rx, |e| matches!(e, Event::TrainingEnded(_)));
        assert!(evs.contains(&Event::History(records)), "{evs:?}");
        tx.send(Command::Shutdown {
            checkpoint_dir: dir.clone(),
        })
        .expect("send");
        handle.join().expect("worker");
        let (_, after) = take_history(read_dir_files(&dir).expect("files"));
        // One more step (and its evaluation when it ended a phase) after the saved records.
        let steps_in = |h: &[String]| {
            h.iter()
                .filter_map(|l| record(l))
                .filter(|r| r["kind"] == "step")
                .count()
        };
        assert_eq!(
            steps_in(&after),
            steps_in(&history) + 1,
            "one more step: {after:?}"
        );
        assert_eq!(after[..history.len()], history[..]);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A recipe file runs end to end in the worker — SFT then RL with a model-based reward
    /// (the reference-answer likelihood) next to the rule one — and resumes from the folder
    /// the app saved it to.
    #[test]
    fn a_recipe_file_runs_with_a_model_based_reward_and_resumes() {
        let dir =
            std::env::temp_dir().join(format!("sluice-desktop-recipe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let recipe = dir.join("r.toml");
        std::fs::write(
            &recipe,
            r#"
seed = 2
out = "run"
[model]
demo_hidden = 16
[sft]
task = "sort:3"
steps = 1
batch_size = 4
schedule = { kind = "constant", lr = 1e-2 }
[rl]
task = "sort:3"
steps = 2
schedule = { kind = "constant", lr = 1e-3 }
rewards = [{ kind = "exact_match" }, { kind = "likelihood", weight = 0.5 }]
[rl.sampling]
group_size = 2
prompts_per_step = 2
max_new_tokens = 0
[eval]
problems = 4
"#,
        )
        .expect("recipe");
        let (tx, rx, handle) = start();
        tx.send(Command::StartTraining(TrainRequest {
            cfg: TrainForm::tiny().to_config().expect("tiny"),
            start: StartFrom::Recipe,
            recipe: Some(recipe.clone()),
            max_steps: Some(2),
        }))
        .expect("send");
        let evs = until(&rx, |e| matches!(e, Event::TrainingEnded(_)));
        assert_eq!(
            evs.last(),
            Some(&Event::TrainingEnded(EndReason::StepLimit)),
            "{evs:?}"
        );
        let steps: Vec<&serde_json::Value> = evs
            .iter()
            .filter_map(|e| match e {
                Event::Step(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(steps.len(), 2, "{evs:?}");
        assert_eq!(
            (&steps[0]["phase"], &steps[1]["phase"]),
            (&json!("sft"), &json!("rl"))
        );
        let lik = steps[1]["reward/reference_likelihood"]
            .as_f64()
            .expect("likelihood reward");
        assert!(lik > 0.0 && lik <= 1.0, "{}", steps[1]);
        assert!(
            evs.iter()
                .any(|e| matches!(e, Event::Eval { global_step: 0, .. }))
        );
        let ckpt = dir.join("ckpt");
        tx.send(Command::SaveCheckpoint(ckpt.clone()))
            .expect("send");
        until(&rx, |e| matches!(e, Event::CheckpointSaved(_)));
        tx.send(Command::ResumeFrom {
            dir: ckpt.clone(),
            max_steps: None,
        })
        .expect("send");
        let evs = until(&rx, |e| matches!(e, Event::TrainingEnded(_)));
        assert_eq!(
            evs.last(),
            Some(&Event::TrainingEnded(EndReason::Finished)),
            "{evs:?}"
        );
        let started = evs.iter().find_map(|e| match e {
            Event::TrainingStarted(info) => Some(info.done),
            _ => None,
        });
        assert_eq!(started, Some(2), "resumed at step 2: {evs:?}");
        tx.send(Command::Shutdown {
            checkpoint_dir: ckpt,
        })
        .expect("send");
        handle.join().expect("worker");
        std::fs::remove_dir_all(&dir).ok();
    }
}
