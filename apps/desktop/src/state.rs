//! The app's state and its transitions, free of any UI or GPU code: UI actions become
//! [`Command`]s for the worker (or a clear error), worker [`Event`]s update the state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::{Value, json};
use sluice::demo::DemoConfig;
use sluice::demo::task::Task;
use sluice::rl::presets::Preset;
use sluice::train::{Stage, format};

use crate::protocol::{
    Command, EndReason, Event, GenRequest, METRICS_FILE, ModelInfo, ModelSource, RunInfo,
    StartFrom, TrainRequest, Turn, WorkerExit, history_record,
};

/// The RL presets the Training panel offers.
pub const PRESETS: [&str; 9] = [
    "grpo",
    "dr_grpo",
    "dapo",
    "gspo",
    "gmpo",
    "reinforce_pp",
    "reinforce_pp_baseline",
    "rloo",
    "gtpo",
];

/// Checks a preset name.
pub fn parse_preset(name: &str) -> Result<String, String> {
    let name = name.trim();
    name.parse::<Preset>()
        .map(|_| name.to_string())
        .map_err(|e| format!("unknown preset `{name}`: {e}"))
}

/// Checks a task (`sort`, `sort:N`, `addition`, `addition:N`).
pub fn parse_task(text: &str) -> Result<String, String> {
    let text = text.trim();
    text.parse::<Task>()
        .map(|_| text.to_string())
        .map_err(|e| format!("bad task `{text}`: {e}"))
}

/// The Training panel's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainForm {
    pub preset: String,
    pub task: String,
    pub hidden: usize,
    pub seed: u64,
    pub sft_steps: usize,
    pub sft_batch: usize,
    pub rl_steps: usize,
    pub prompts_per_step: usize,
    pub group_size: usize,
    pub eval_size: usize,
    pub eval_every: usize,
    pub eval_samples: usize,
    pub start: StartFrom,
    /// The recipe file's path (with [`StartFrom::Recipe`]).
    pub recipe_path: String,
    /// Stop after this many steps (0: run to the end).
    pub max_steps: usize,
}

impl Default for TrainForm {
    /// `sluice demo`'s defaults.
    fn default() -> Self {
        Self::from_config(&DemoConfig::default())
    }
}

impl TrainForm {
    fn from_config(c: &DemoConfig) -> Self {
        TrainForm {
            preset: c.rl.preset.map_or("grpo", Preset::name).to_string(),
            task: c.task.clone(),
            hidden: c.hidden,
            seed: c.seed,
            sft_steps: c.sft_steps,
            sft_batch: c.sft_batch,
            rl_steps: c.rl_steps,
            prompts_per_step: c.rl.prompts_per_step,
            group_size: c.rl.group_size,
            eval_size: c.eval_size,
            eval_every: c.eval_every,
            eval_samples: c.eval_samples,
            start: StartFrom::Scratch,
            recipe_path: String::new(),
            max_steps: 0,
        }
    }

    /// A run small enough for smoke tests: hidden 16, one SFT step then three RL steps on
    /// tiny batches, 4 held-out problems, greedy evaluation only.
    pub fn tiny() -> Self {
        TrainForm {
            hidden: 16,
            sft_steps: 1,
            sft_batch: 4,
            rl_steps: 3,
            prompts_per_step: 2,
            group_size: 2,
            eval_size: 4,
            eval_every: 0,
            eval_samples: 0,
            ..Self::default()
        }
    }

    /// The demo config these settings describe, or what is wrong with them.
    pub fn to_config(&self) -> Result<DemoConfig, String> {
        let mut c = DemoConfig {
            task: parse_task(&self.task)?,
            hidden: self.hidden,
            seed: self.seed,
            sft_steps: self.sft_steps,
            sft_batch: self.sft_batch,
            rl_steps: self.rl_steps,
            eval_size: self.eval_size,
            eval_every: self.eval_every,
            eval_samples: self.eval_samples,
            ..DemoConfig::default()
        };
        c.rl.preset = Some(
            parse_preset(&self.preset)?
                .parse()
                .map_err(|e| format!("{e}"))?,
        );
        c.rl.prompts_per_step = self.prompts_per_step;
        c.rl.group_size = self.group_size;
        if self.hidden == 0 || !self.hidden.is_multiple_of(4) {
            return Err(format!(
                "hidden size must be a positive multiple of 4, got {}",
                self.hidden
            ));
        }
        if self.group_size < 2 {
            return Err("group size must be at least 2 (advantages compare completions)".into());
        }
        if self.sft_batch == 0 || self.prompts_per_step == 0 || self.eval_size == 0 {
            return Err("batch sizes and the held-out set must be non-empty".into());
        }
        if self.start == StartFrom::LoadedModel {
            // RL straight from the loaded model.
            c.sft_steps = 0;
        }
        if c.sft_steps + c.rl_steps == 0 {
            return Err("nothing to do: SFT and RL steps are both 0".into());
        }
        Ok(c)
    }
}

/// Sampling settings of the Chat panel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatSettings {
    pub max_new_tokens: usize,
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub seed: u64,
}

impl Default for ChatSettings {
    fn default() -> Self {
        ChatSettings {
            max_new_tokens: 64,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// The Chat panel.
#[derive(Debug, Default)]
pub struct ChatState {
    pub history: Vec<Turn>,
    pub prompt: String,
    /// The prompt being answered and the answer so far.
    pub pending: Option<Turn>,
    pub settings: ChatSettings,
    pub status: String,
    pub error: Option<String>,
    /// Set by Stop; the worker's token callback reads it.
    pub stop: Arc<AtomicBool>,
}

/// Training run status.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainStatus {
    Idle,
    Starting,
    Running,
    Pausing,
    Paused,
    Stopping,
    Ended(EndReason),
}

impl TrainStatus {
    /// True while the worker has a run it is stepping (or about to).
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            Self::Starting | Self::Running | Self::Pausing | Self::Paused | Self::Stopping
        )
    }

    pub fn label(&self) -> String {
        match self {
            Self::Idle => "idle".into(),
            Self::Starting => "starting…".into(),
            Self::Running => "running".into(),
            Self::Pausing => "pausing after this step…".into(),
            Self::Paused => "paused".into(),
            Self::Stopping => "stopping after this step…".into(),
            Self::Ended(EndReason::Finished) => "finished".into(),
            Self::Ended(EndReason::Stopped) => "stopped".into(),
            Self::Ended(EndReason::StepLimit) => "step limit reached".into(),
            Self::Ended(EndReason::Failed(e)) => format!("failed: {e}"),
        }
    }
}

/// Per-step curves, x = global step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub sft_loss: Vec<[f64; 2]>,
    pub rl_loss: Vec<[f64; 2]>,
    pub reward: Vec<[f64; 2]>,
    pub kl: Vec<[f64; 2]>,
    pub accuracy: Vec<[f64; 2]>,
    pub sampled_accuracy: Vec<[f64; 2]>,
    /// Seconds per step, SFT and RL apart (their costs differ by an order of magnitude).
    pub sft_seconds: Vec<f64>,
    pub rl_seconds: Vec<f64>,
}

impl Metrics {
    fn push(series: &mut Vec<[f64; 2]>, x: f64, y: Option<f64>) {
        if let Some(y) = y.filter(|y| y.is_finite()) {
            series.push([x, y]);
        }
    }

    /// Adds a step record (`phase`, `loss`, `reward`, `kl`, `step_seconds`) at `x`.
    fn add_step(&mut self, x: f64, rec: &Value) {
        let rl = rec.get("phase").and_then(Value::as_str) == Some("rl");
        let loss = if rl {
            &mut self.rl_loss
        } else {
            &mut self.sft_loss
        };
        Self::push(loss, x, field(rec, "loss"));
        Self::push(&mut self.reward, x, field(rec, "reward"));
        Self::push(&mut self.kl, x, field(rec, "kl"));
        if let Some(t) = field(rec, "step_seconds") {
            if rl {
                self.rl_seconds.push(t);
            } else {
                self.sft_seconds.push(t);
            }
        }
    }

    fn add_eval(&mut self, x: f64, greedy: f64, sampled: f64) {
        Self::push(&mut self.accuracy, x, Some(greedy));
        Self::push(&mut self.sampled_accuracy, x, Some(sampled));
    }

    /// Every loss point, SFT then RL.
    pub fn losses(&self) -> impl Iterator<Item = f64> + '_ {
        self.sft_loss.iter().chain(&self.rl_loss).map(|p| p[1])
    }

    /// Mean seconds per step of the RL phase (`rl`) or the SFT phase.
    pub fn mean_seconds(&self, rl: bool) -> Option<f64> {
        let t = if rl {
            &self.rl_seconds
        } else {
            &self.sft_seconds
        };
        (!t.is_empty()).then(|| t.iter().sum::<f64>() / t.len() as f64)
    }
}

/// Where closing the window stands.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Shutdown {
    #[default]
    NotRequested,
    /// The worker is finishing its step and saving.
    Requested,
    Done(WorkerExit),
}

/// Reads a number from a step record (NaN and absent → None).
pub fn field(rec: &Value, key: &str) -> Option<f64> {
    rec.get(key)
        .and_then(Value::as_f64)
        .filter(|v| v.is_finite())
}

/// Everything the UI shows.
#[derive(Debug)]
pub struct AppState {
    pub model: Option<ModelInfo>,
    pub model_loading: bool,
    pub model_error: Option<String>,
    /// The folder text field of the Model panel.
    pub model_path: String,
    pub chat: ChatState,
    pub form: TrainForm,
    pub run: Option<RunInfo>,
    pub status: TrainStatus,
    pub metrics: Metrics,
    /// Global step of the run (steps done, both phases).
    pub global_step: usize,
    /// Steps run in this session.
    pub steps_this_session: usize,
    pub last_record: Option<Value>,
    /// The part of the running step (rollout, update) and when it began.
    pub stage: Option<(Stage, Instant)>,
    /// Records restored from a resumed run's checkpoint.
    pub history_records: usize,
    pub checkpoint_dir: String,
    /// Whether `checkpoint_dir` (as last typed) holds a saved run: the folder text and the
    /// answer, so the file system is asked when the text changes or a save lands, not every frame.
    checkpoint_probe: Option<(String, bool)>,
    /// The global step of the saved run whose history is drawn without a run loaded (the
    /// checkpoint folder's run at startup); cleared when a run starts.
    pub saved_preview: Option<usize>,
    pub last_checkpoint: Option<PathBuf>,
    pub train_error: Option<String>,
    pub shutdown: Shutdown,
    /// Notices for the status line (newest last).
    pub log: Vec<String>,
}

impl AppState {
    pub fn new(form: TrainForm, checkpoint_dir: &Path) -> Self {
        AppState {
            model: None,
            model_loading: false,
            model_error: None,
            model_path: String::new(),
            chat: ChatState::default(),
            form,
            run: None,
            status: TrainStatus::Idle,
            metrics: Metrics::default(),
            global_step: 0,
            steps_this_session: 0,
            last_record: None,
            stage: None,
            history_records: 0,
            checkpoint_dir: checkpoint_dir.display().to_string(),
            checkpoint_probe: None,
            saved_preview: None,
            last_checkpoint: None,
            train_error: None,
            shutdown: Shutdown::NotRequested,
            log: Vec::new(),
        }
    }

    fn note(&mut self, msg: impl Into<String>) {
        self.log.push(msg.into());
        if self.log.len() > 200 {
            self.log.remove(0);
        }
    }

    // ---- Model ----

    pub fn load_demo(&mut self) -> Command {
        self.model_loading = true;
        self.model_error = None;
        Command::LoadModel(ModelSource::Demo)
    }

    /// Load the folder typed in the Model panel (checked here so typos fail fast).
    pub fn load_dir(&mut self) -> Result<Command, String> {
        let res = check_model_dir(&self.model_path);
        match res {
            Ok(dir) => {
                self.model_loading = true;
                self.model_error = None;
                Ok(Command::LoadModel(ModelSource::Dir(dir)))
            }
            Err(e) => {
                self.model_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Chat with the model of the current training run.
    pub fn use_trained(&mut self) -> Result<Command, String> {
        if self.run.is_none() {
            let e = "no training run yet: start one in the Training panel".to_string();
            self.model_error = Some(e.clone());
            return Err(e);
        }
        self.model_loading = true;
        self.model_error = None;
        Ok(Command::LoadModel(ModelSource::Trained))
    }

    // ---- Chat ----

    pub fn is_generating(&self) -> bool {
        self.chat.pending.is_some()
    }

    /// Send the prompt box.
    pub fn generate(&mut self) -> Result<Command, String> {
        let err = if self.model.is_none() {
            Some("load a model first (Model panel)")
        } else if self.is_generating() {
            Some("still generating: wait or press Stop")
        } else if self.chat.prompt.trim().is_empty() {
            Some("the prompt is empty")
        } else {
            None
        };
        if let Some(e) = err {
            self.chat.error = Some(e.into());
            return Err(e.into());
        }
        let s = &self.chat.settings;
        if !(0.0..=1.0).contains(&s.top_p) || s.top_p == 0.0 || s.temperature < 0.0 {
            let e = "top-p must be in (0, 1] and temperature ≥ 0".to_string();
            self.chat.error = Some(e.clone());
            return Err(e);
        }
        self.chat.error = None;
        self.chat.stop.store(false, Ordering::SeqCst);
        let prompt = std::mem::take(&mut self.chat.prompt);
        self.chat.pending = Some(Turn {
            user: prompt.clone(),
            assistant: String::new(),
        });
        self.chat.status = "generating…".into();
        Ok(Command::Generate(GenRequest {
            history: self.chat.history.clone(),
            prompt,
            max_new_tokens: s.max_new_tokens,
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            seed: s.seed,
        }))
    }

    /// Stop generating (takes effect at the next token).
    pub fn stop_generation(&mut self) {
        if self.is_generating() {
            self.chat.stop.store(true, Ordering::SeqCst);
            self.chat.status = "stopping…".into();
        }
    }

    pub fn clear_chat(&mut self) {
        if !self.is_generating() {
            self.chat.history.clear();
            self.chat.status.clear();
        }
    }

    // ---- Training ----

    pub fn start_training(&mut self) -> Result<Command, String> {
        let res = self.start_checks().and_then(|()| self.form.to_config());
        match res {
            Ok(cfg) => {
                let recipe = (self.form.start == StartFrom::Recipe)
                    .then(|| PathBuf::from(self.form.recipe_path.trim()));
                if let Some(p) = recipe.as_ref().filter(|p| !p.is_file()) {
                    let e = format!("no recipe file at `{}`", p.display());
                    self.train_error = Some(e.clone());
                    return Err(e);
                }
                self.begin_run();
                Ok(Command::StartTraining(TrainRequest {
                    cfg,
                    start: self.form.start,
                    recipe,
                    max_steps: (self.form.max_steps > 0).then_some(self.form.max_steps),
                }))
            }
            Err(e) => {
                self.train_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Continue the run saved in the checkpoint folder field.
    pub fn resume_from_checkpoint(&mut self) -> Result<Command, String> {
        let res = self.start_checks().and_then(|()| {
            let dir = PathBuf::from(self.checkpoint_dir.trim());
            if !dir.join("trainer_state.json").is_file() {
                return Err(format!(
                    "{} holds no checkpoint (no trainer_state.json)",
                    dir.display()
                ));
            }
            Ok(dir)
        });
        match res {
            Ok(dir) => {
                self.begin_run();
                Ok(Command::ResumeFrom {
                    dir,
                    max_steps: (self.form.max_steps > 0).then_some(self.form.max_steps),
                })
            }
            Err(e) => {
                self.train_error = Some(e.clone());
                Err(e)
            }
        }
    }

    fn start_checks(&self) -> Result<(), String> {
        if self.status.is_active() {
            return Err("a run is in progress: stop it first".into());
        }
        if self.shutdown != Shutdown::NotRequested {
            return Err("closing".into());
        }
        if self.form.start == StartFrom::LoadedModel && self.model.is_none() {
            return Err("load the demo model (Model panel) to start RL from it".into());
        }
        Ok(())
    }

    fn begin_run(&mut self) {
        self.train_error = None;
        self.saved_preview = None;
        self.status = TrainStatus::Starting;
        self.metrics = Metrics::default();
        self.last_record = None;
        self.history_records = 0;
        self.global_step = 0;
    }

    pub fn pause(&mut self) -> Option<Command> {
        (self.status == TrainStatus::Running).then(|| {
            self.status = TrainStatus::Pausing;
            Command::Pause
        })
    }

    pub fn resume(&mut self) -> Option<Command> {
        matches!(self.status, TrainStatus::Paused | TrainStatus::Pausing).then(|| {
            self.status = TrainStatus::Running;
            Command::Resume
        })
    }

    pub fn stop(&mut self) -> Option<Command> {
        matches!(
            self.status,
            TrainStatus::Running | TrainStatus::Pausing | TrainStatus::Paused
        )
        .then(|| {
            self.status = TrainStatus::Stopping;
            Command::Stop {
                checkpoint_dir: PathBuf::from(self.checkpoint_dir.trim()),
            }
        })
    }

    pub fn save_checkpoint(&mut self) -> Result<Command, String> {
        if self.run.is_none() {
            let e = "no run to save".to_string();
            self.train_error = Some(e.clone());
            return Err(e);
        }
        let dir = self.checkpoint_dir.trim();
        if dir.is_empty() {
            let e = "the checkpoint folder is empty".to_string();
            self.train_error = Some(e.clone());
            return Err(e);
        }
        Ok(Command::SaveCheckpoint(PathBuf::from(dir)))
    }

    /// Total steps of the run (both phases).
    pub fn total_steps(&self) -> usize {
        self.run.as_ref().map_or(0, |r| r.sft_steps + r.rl_steps)
    }

    /// Fraction of the run done.
    pub fn progress(&self) -> f32 {
        match self.total_steps() {
            0 => 0.0,
            n => (self.global_step as f32 / n as f32).min(1.0),
        }
    }

    /// What the running step is doing, for the progress line: `step 4: rollout, sampling 8
    /// completions (3.1 s)`.
    pub fn stage_text(&self) -> Option<String> {
        let (stage, t0) = self.stage.as_ref()?;
        let what = match stage {
            Stage::Rollout { completions } => {
                format!("rollout, sampling {completions} completions")
            }
            Stage::Update => "update".to_string(),
            Stage::Evaluate { problems } => format!("evaluating on {problems} held-out problems"),
        };
        Some(format!(
            "step {}: {what} ({})",
            self.global_step + 1,
            format::seconds(t0.elapsed().as_secs_f64())
        ))
    }

    /// True when the checkpoint folder field names a saved run (what "Resume from it" needs).
    /// Asks the file system only when the field changed or a save landed since last time;
    /// while no run is loaded, a saved run's history is drawn (see [`Self::preview_saved_run`]).
    pub fn checkpoint_available(&mut self) -> bool {
        let dir = self.checkpoint_dir.trim().to_string();
        if let Some((seen, answer)) = &self.checkpoint_probe
            && *seen == dir
        {
            return *answer;
        }
        let answer = !dir.is_empty() && Path::new(&dir).join("trainer_state.json").is_file();
        self.checkpoint_probe = Some((dir, answer));
        if self.run.is_none() && !self.status.is_active() {
            self.preview_saved_run();
        }
        answer
    }

    /// Draws the history (`metrics.jsonl`) of the run saved in the checkpoint folder while no
    /// run is loaded, so a restarted app shows where the run stands before "Resume from it".
    pub fn preview_saved_run(&mut self) {
        self.metrics = Metrics::default();
        self.last_record = None;
        self.history_records = 0;
        self.global_step = 0;
        self.saved_preview = None;
        let dir = Path::new(self.checkpoint_dir.trim());
        if !dir.join("trainer_state.json").is_file() {
            return;
        }
        let text = std::fs::read_to_string(dir.join(METRICS_FILE)).unwrap_or_default();
        let records: Vec<Value> = text.lines().filter_map(history_record).collect();
        self.restore_history(&records);
        let step = records
            .iter()
            .filter_map(|r| field(r, "global_step"))
            .fold(0.0, f64::max) as usize;
        self.global_step = step;
        self.saved_preview = Some(step);
    }

    /// Window closed: the command that makes the worker save and exit (once).
    pub fn request_shutdown(&mut self) -> Option<Command> {
        (self.shutdown == Shutdown::NotRequested).then(|| {
            self.shutdown = Shutdown::Requested;
            if self.status.is_active() {
                self.status = TrainStatus::Stopping;
            }
            Command::Shutdown {
                checkpoint_dir: PathBuf::from(self.checkpoint_dir.trim()),
            }
        })
    }

    // ---- Events ----

    pub fn apply(&mut self, ev: Event) {
        match ev {
            Event::ModelLoaded(info) => {
                self.model_loading = false;
                self.model_error = None;
                self.note(format!(
                    "loaded {} ({} parameters) in {:.1} s",
                    info.name, info.parameters, info.load_seconds
                ));
                self.chat.history.clear();
                self.model = Some(info);
            }
            Event::ModelFailed(e) => {
                self.model_loading = false;
                self.note(format!("model: {e}"));
                self.model_error = Some(e);
            }
            Event::Generated(piece) => {
                if let Some(p) = &mut self.chat.pending {
                    p.assistant.push_str(&piece);
                }
            }
            Event::GenerationDone {
                tokens,
                seconds,
                first_token_seconds,
                stopped,
            } => {
                if let Some(turn) = self.chat.pending.take() {
                    self.chat.history.push(turn);
                }
                let ttft = first_token_seconds.map_or(String::new(), |t| {
                    format!("first token after {}, ", format::seconds(t))
                });
                self.chat.status = format!(
                    "{tokens} tokens in {}: {ttft}{:.1} tokens/s{}",
                    format::seconds(seconds),
                    tokens as f64 / seconds.max(1e-9),
                    if stopped { ", stopped" } else { "" }
                );
            }
            Event::GenerationFailed(e) => {
                self.chat.pending = None;
                self.chat.status.clear();
                self.chat.error = Some(e);
            }
            Event::TrainingStarted(info) => {
                self.global_step = info.done;
                if self.status == TrainStatus::Starting {
                    self.status = TrainStatus::Running;
                }
                self.note(match &info.resumed_from {
                    Some(d) => format!("resumed {} at step {}", d.display(), info.done),
                    None => format!("training {} with {}", info.task, info.preset),
                });
                self.run = Some(info);
            }
            Event::Step(rec) => {
                let x = field(&rec, "global_step").unwrap_or(self.global_step as f64 + 1.0);
                self.global_step = x as usize;
                self.steps_this_session += 1;
                self.stage = None;
                self.metrics.add_step(x, &rec);
                self.last_record = Some(rec);
            }
            Event::History(records) => self.restore_history(&records),
            Event::Stage(stage) => self.stage = Some((stage, Instant::now())),
            Event::Eval {
                global_step,
                greedy,
                sampled,
            } => self.metrics.add_eval(global_step as f64, greedy, sampled),
            Event::Paused => {
                if self.status.is_active() && self.status != TrainStatus::Stopping {
                    self.status = TrainStatus::Paused;
                }
            }
            Event::Resumed => {
                if self.status.is_active() && self.status != TrainStatus::Stopping {
                    self.status = TrainStatus::Running;
                }
            }
            Event::TrainingEnded(reason) => {
                self.stage = None;
                if let EndReason::Failed(e) = &reason {
                    self.train_error = Some(e.clone());
                }
                self.note(format!(
                    "training: {}",
                    TrainStatus::Ended(reason.clone()).label()
                ));
                self.status = TrainStatus::Ended(reason);
            }
            Event::CheckpointSaved(dir) => {
                self.checkpoint_probe = None;
                self.note(format!("checkpoint saved to {}", dir.display()));
                self.last_checkpoint = Some(dir);
            }
            Event::CheckpointFailed(e) => {
                self.note(format!("checkpoint: {e}"));
                self.train_error = Some(e);
            }
            Event::ShutdownDone(exit) => {
                self.checkpoint_probe = None;
                if let Some(c) = &exit.checkpoint {
                    self.last_checkpoint = Some(c.clone());
                }
                if let Some(e) = &exit.error {
                    self.note(format!("on exit: {e}"));
                }
                self.shutdown = Shutdown::Done(exit);
            }
        }
    }

    /// Redraws a resumed run's curves from its saved records.
    fn restore_history(&mut self, records: &[Value]) {
        self.history_records = records.len();
        for r in records {
            let x = field(r, "global_step").unwrap_or(0.0);
            match r.get("kind").and_then(Value::as_str) {
                Some("step") => {
                    self.metrics.add_step(x, r);
                    self.last_record = Some(r.clone());
                }
                Some("eval") => self.metrics.add_eval(
                    x,
                    field(r, "greedy").unwrap_or(f64::NAN),
                    field(r, "sampled").unwrap_or(f64::NAN),
                ),
                _ => {}
            }
        }
    }

    /// What the window shows on `tab`: the training status, the plots and the chat line.
    pub fn shown(&self, tab: crate::ui::Tab) -> Value {
        json!({
            "tab": format!("{tab:?}"),
            "training": self.status.label(),
            "stage": self.stage_text().filter(|_| self.status.is_active()),
            "saved_preview": self.saved_preview,
            "plots": crate::plots::describe(&crate::plots::plots(self)),
            "chat_status": self.chat.status,
            "model": self.model.as_ref().map(|m| m.name.clone()),
        })
    }

    /// The machine-readable summary printed at exit (`screenshots`: what each one showed).
    pub fn summary(&self, screenshots: &[Value], shared_device: bool) -> Value {
        let losses: Vec<f64> = self.metrics.losses().collect();
        let last = |k: &str| self.last_record.as_ref().and_then(|r| field(r, k));
        let exit = match &self.shutdown {
            Shutdown::Done(e) => e.clone(),
            _ => WorkerExit::default(),
        };
        json!({
            "steps_done": self.steps_this_session,
            "global_step": self.global_step,
            "status": self.status.label(),
            "last_loss": last("loss"),
            "last_reward": last("reward"),
            "losses": losses,
            "accuracy": self.metrics.accuracy.last().map(|p| p[1]),
            "sft_seconds_per_step": self.metrics.mean_seconds(false),
            "rl_seconds_per_step": self.metrics.mean_seconds(true),
            "history_records": self.history_records,
            "plots": crate::plots::describe(&crate::plots::plots(self)),
            "chat": {
                "turns": self.chat.history.len(),
                "last_answer": self.chat.history.last().map(|t| t.assistant.clone()),
                "status": self.chat.status,
            },
            "model": self.model.as_ref().map(|m| m.name.clone()),
            "checkpoint": self.last_checkpoint.as_ref().map(|p| p.display().to_string()),
            "checkpoint_error": exit.error,
            "screenshots": screenshots,
            "shared_device": shared_device,
            "error": self.train_error,
        })
    }
}

/// Checks that `text` names a model folder (`config.json` inside).
pub fn check_model_dir(text: &str) -> Result<PathBuf, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("type the path of a Hugging Face model folder".into());
    }
    let dir = PathBuf::from(text);
    if !dir.is_dir() {
        return Err(format!("{}: not a folder", dir.display()));
    }
    if !dir.join("config.json").is_file() {
        return Err(format!(
            "{}: no config.json (not a Hugging Face model folder)",
            dir.display()
        ));
    }
    Ok(dir)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A state with the tiny training form (shared by the other modules' tests).
    pub(crate) fn state() -> AppState {
        AppState::new(TrainForm::tiny(), Path::new("ckpt"))
    }

    /// A run of `sft` + `rl` steps with `done` of them taken.
    pub(crate) fn info(sft: usize, rl: usize, done: usize) -> RunInfo {
        RunInfo {
            task: "sort".into(),
            preset: "grpo".into(),
            parameters: 10,
            sft_steps: sft,
            rl_steps: rl,
            done,
            resumed_from: None,
        }
    }

    /// A loaded demo model.
    pub(crate) fn model() -> ModelInfo {
        ModelInfo {
            name: "demo".into(),
            summary: String::new(),
            parameters: 1,
            vocab_size: 14,
            chat_template: false,
            load_seconds: 0.0,
        }
    }

    #[test]
    fn presets_and_tasks_parse() {
        for p in PRESETS {
            assert_eq!(parse_preset(p).as_deref(), Ok(p));
        }
        assert!(parse_preset("ppo").unwrap_err().contains("ppo"));
        assert_eq!(parse_task(" sort:7 ").as_deref(), Ok("sort:7"));
        assert!(parse_task("addition:3").is_ok());
        assert!(parse_task("multiply").unwrap_err().contains("multiply"));
    }

    #[test]
    fn form_validation() {
        let mut f = TrainForm::tiny();
        let c = f.to_config().expect("tiny is valid");
        assert_eq!((c.hidden, c.sft_steps, c.rl_steps), (16, 1, 3));
        assert_eq!(c.rl.preset, Some(Preset::Grpo));
        f.hidden = 18;
        assert!(f.to_config().unwrap_err().contains("multiple of 4"));
        f.hidden = 16;
        f.preset = "nope".into();
        assert!(f.to_config().unwrap_err().contains("nope"));
        f.preset = "rloo".into();
        f.group_size = 1;
        assert!(f.to_config().is_err());
        f.group_size = 2;
        f.start = StartFrom::LoadedModel;
        assert_eq!(f.to_config().map(|c| c.sft_steps), Ok(0));
        f.rl_steps = 0;
        assert!(f.to_config().unwrap_err().contains("nothing to do"));
    }

    #[test]
    fn steps_fill_series_and_skip_missing_values() {
        let mut s = state();
        s.start_training().expect("start");
        assert_eq!(s.status, TrainStatus::Starting);
        s.apply(Event::TrainingStarted(info(1, 3, 0)));
        assert_eq!(s.status, TrainStatus::Running);
        s.apply(Event::Step(
            json!({"phase": "sft", "global_step": 1, "loss": 2.5,
            "step_seconds": 0.5}),
        ));
        s.apply(Event::Step(
            json!({"phase": "rl", "global_step": 2, "loss": 0.1,
            "reward": 0.25, "kl": null, "step_seconds": 1.5}),
        ));
        assert_eq!(s.metrics.sft_loss, vec![[1.0, 2.5]]);
        assert_eq!(s.metrics.rl_loss, vec![[2.0, 0.1]]);
        s.apply(Event::Stage(Stage::Rollout { completions: 4 }));
        let text = s.stage_text().expect("a stage");
        assert!(
            text.starts_with("step 3: rollout, sampling 4 completions ("),
            "{text}"
        );
        assert_eq!(s.metrics.reward, vec![[2.0, 0.25]]);
        assert!(s.metrics.kl.is_empty());
        assert_eq!(s.global_step, 2);
        assert_eq!(s.progress(), 0.5);
        assert_eq!(s.metrics.mean_seconds(false), Some(0.5));
        assert_eq!(s.metrics.mean_seconds(true), Some(1.5));
        s.apply(Event::Eval {
            global_step: 2,
            greedy: 0.5,
            sampled: f64::NAN,
        });
        assert_eq!(s.metrics.accuracy, vec![[2.0, 0.5]]);
        assert!(s.metrics.sampled_accuracy.is_empty());
        let sum = s.summary(&[], true);
        assert_eq!(sum["steps_done"], 2);
        assert_eq!(sum["last_reward"], 0.25);
        assert_eq!(sum["losses"], json!([2.5, 0.1]));
    }

    #[test]
    fn a_resumed_run_redraws_its_history() {
        let mut s = state();
        s.start_training().expect("start");
        s.apply(Event::TrainingStarted(info(1, 3, 2)));
        s.apply(Event::History(vec![
            json!({"kind": "eval", "global_step": 0, "greedy": 0.1, "sampled": null}),
            json!({"kind": "step", "phase": "sft", "global_step": 1, "loss": 2.5}),
            json!({"kind": "step", "phase": "rl", "global_step": 2, "loss": 0.1, "reward": 0.5}),
            json!({"kind": "other"}),
        ]));
        assert_eq!(s.history_records, 4);
        assert_eq!(s.metrics.accuracy, vec![[0.0, 0.1]]);
        assert_eq!(s.metrics.sft_loss, vec![[1.0, 2.5]]);
        assert_eq!(s.metrics.reward, vec![[2.0, 0.5]]);
        assert_eq!(s.global_step, 2, "from TrainingStarted");
        assert_eq!(s.steps_this_session, 0);
    }

    #[test]
    fn pause_resume_stop_semantics() {
        let mut s = state();
        assert_eq!(s.pause(), None, "nothing to pause when idle");
        assert_eq!(s.stop(), None);
        s.start_training().expect("start");
        s.apply(Event::TrainingStarted(info(1, 3, 0)));
        assert_eq!(s.pause(), Some(Command::Pause));
        assert_eq!(s.status, TrainStatus::Pausing);
        assert_eq!(s.pause(), None, "already pausing");
        s.apply(Event::Paused);
        assert_eq!(s.status, TrainStatus::Paused);
        assert!(s.start_training().is_err(), "one run at a time");
        assert_eq!(s.resume(), Some(Command::Resume));
        assert_eq!(s.status, TrainStatus::Running);
        assert_eq!(
            s.stop(),
            Some(Command::Stop {
                checkpoint_dir: PathBuf::from("ckpt")
            })
        );
        assert_eq!(s.status, TrainStatus::Stopping);
        // A late Paused event must not undo Stopping.
        s.apply(Event::Paused);
        assert_eq!(s.status, TrainStatus::Stopping);
        s.apply(Event::TrainingEnded(EndReason::Stopped));
        assert_eq!(s.status, TrainStatus::Ended(EndReason::Stopped));
        assert_eq!(s.resume(), None);
        assert!(s.start_training().is_ok(), "a new run after the end");
    }

    #[test]
    fn failures_show_errors() {
        let mut s = state();
        s.start_training().expect("start");
        s.apply(Event::TrainingEnded(EndReason::Failed(
            "out of memory".into(),
        )));
        assert_eq!(s.train_error.as_deref(), Some("out of memory"));
        assert!(s.status.label().contains("out of memory"));
        assert!(!s.status.is_active());
        s.apply(Event::ModelFailed("config.json: bad".into()));
        assert_eq!(s.model_error.as_deref(), Some("config.json: bad"));
        assert!(!s.model_loading);
    }

    #[test]
    fn model_folder_is_checked_before_loading() {
        let mut s = state();
        s.model_path = "/definitely/not/here".into();
        assert!(s.load_dir().unwrap_err().contains("not a folder"));
        assert!(s.model_error.is_some());
        let tmp = std::env::temp_dir().join(format!("sluice-desktop-test-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).expect("tmp");
        s.model_path = tmp.display().to_string();
        assert!(s.load_dir().unwrap_err().contains("config.json"));
        std::fs::write(tmp.join("config.json"), "{}").expect("write");
        assert_eq!(
            s.load_dir(),
            Ok(Command::LoadModel(ModelSource::Dir(tmp.clone())))
        );
        assert!(s.model_loading);
        std::fs::remove_dir_all(&tmp).ok();
        s.model_path = "  ".into();
        assert!(s.load_dir().is_err());
    }

    #[test]
    fn chat_flow_and_stop() {
        let mut s = state();
        s.chat.prompt = "31415=".into();
        assert!(s.generate().unwrap_err().contains("load a model"));
        s.apply(Event::ModelLoaded(model()));
        s.chat.settings.top_p = 0.0;
        assert!(s.generate().is_err());
        s.chat.settings.top_p = 1.0;
        let Ok(Command::Generate(req)) = s.generate() else {
            panic!("expected a generate command");
        };
        assert_eq!(req.prompt, "31415=");
        assert!(s.chat.prompt.is_empty());
        s.chat.prompt = "again".into();
        assert!(s.generate().is_err(), "one generation at a time");
        s.apply(Event::Generated("113".into()));
        s.stop_generation();
        assert!(s.chat.stop.load(Ordering::SeqCst));
        s.apply(Event::Generated("4".into()));
        s.apply(Event::GenerationDone {
            tokens: 4,
            seconds: 2.0,
            first_token_seconds: Some(0.25),
            stopped: true,
        });
        assert!(!s.is_generating());
        assert_eq!(s.chat.history[0].assistant, "1134");
        assert!(s.chat.status.contains("stopped"));
        assert!(
            s.chat.status.contains("first token after 0.250 s"),
            "{}",
            s.chat.status
        );
        // The next request carries the history and clears the stop flag.
        let Ok(Command::Generate(req)) = s.generate() else {
            panic!("expected a generate command");
        };
        assert_eq!(req.history.len(), 1);
        assert!(!s.chat.stop.load(Ordering::SeqCst));
    }

    #[test]
    fn shutdown_is_requested_once_and_records_the_checkpoint() {
        let mut s = state();
        s.start_training().expect("start");
        s.apply(Event::TrainingStarted(info(1, 3, 0)));
        let cmd = s.request_shutdown();
        assert_eq!(
            cmd,
            Some(Command::Shutdown {
                checkpoint_dir: PathBuf::from("ckpt")
            })
        );
        assert_eq!(s.status, TrainStatus::Stopping);
        assert_eq!(s.request_shutdown(), None);
        assert!(s.start_training().is_err());
        s.apply(Event::ShutdownDone(WorkerExit {
            checkpoint: Some("ckpt".into()),
            error: None,
        }));
        assert_eq!(s.summary(&[], false)["checkpoint"], "ckpt");
    }

    #[test]
    fn rl_from_loaded_model_needs_a_model_and_save_needs_a_run() {
        let mut s = state();
        s.form.start = StartFrom::LoadedModel;
        assert!(
            s.start_training()
                .unwrap_err()
                .contains("load the demo model")
        );
        assert!(s.save_checkpoint().is_err());
        assert!(s.use_trained().is_err());
        s.form.start = StartFrom::Scratch;
        s.checkpoint_dir = "/no/such/ckpt".into();
        assert!(
            s.resume_from_checkpoint()
                .unwrap_err()
                .contains("no checkpoint")
        );
    }
}
