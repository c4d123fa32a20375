//! Messages between the UI thread and the engine worker.

use std::path::PathBuf;

use serde_json::Value;
use sluice::demo::DemoConfig;
use sluice::train::Stage;

/// Where a chat model comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// The trained demo model embedded in the binary.
    Demo,
    /// A Hugging Face checkpoint folder.
    Dir(PathBuf),
    /// The model of the current training run.
    Trained,
}

/// One earlier chat exchange (for chat templates).
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub user: String,
    pub assistant: String,
}

/// A generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenRequest {
    pub history: Vec<Turn>,
    pub prompt: String,
    pub max_new_tokens: usize,
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub seed: u64,
}

/// How a training run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// A fresh model: SFT, then RL.
    Scratch,
    /// RL straight from the loaded demo-vocabulary model.
    LoadedModel,
    /// A recipe file (any model folder, SFT and/or RL, LoRA or full fine-tuning, any reward).
    Recipe,
}

/// A training request.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainRequest {
    pub cfg: DemoConfig,
    pub start: StartFrom,
    /// The recipe file (with [`StartFrom::Recipe`]).
    pub recipe: Option<PathBuf>,
    /// Stop after this many steps of this session (None: run to the end).
    pub max_steps: Option<usize>,
}

/// UI → worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    LoadModel(ModelSource),
    Generate(GenRequest),
    StartTraining(TrainRequest),
    /// Pause after the current step.
    Pause,
    Resume,
    /// End the run after the current step and save it to the folder (the run stays
    /// available for saving elsewhere).
    Stop {
        checkpoint_dir: PathBuf,
    },
    SaveCheckpoint(PathBuf),
    /// Restore a run from a checkpoint folder and continue it.
    ResumeFrom {
        dir: PathBuf,
        max_steps: Option<usize>,
    },
    /// Stop after the current step, save the run (if it has unsaved steps) to the folder, exit.
    Shutdown {
        checkpoint_dir: PathBuf,
    },
}

/// What the loaded chat model is.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub summary: String,
    pub parameters: usize,
    pub vocab_size: usize,
    pub chat_template: bool,
    pub load_seconds: f64,
}

/// Why a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum EndReason {
    Finished,
    Stopped,
    StepLimit,
    Failed(String),
}

/// What a run looks like when it starts (or resumes).
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub task: String,
    pub preset: String,
    pub parameters: usize,
    pub sft_steps: usize,
    pub rl_steps: usize,
    /// Steps done before this session (non-zero when resumed).
    pub done: usize,
    pub resumed_from: Option<PathBuf>,
}

/// Worker → UI.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    ModelLoaded(ModelInfo),
    ModelFailed(String),
    /// The next piece of generated text (appended; special tokens are not shown).
    Generated(String),
    GenerationDone {
        tokens: usize,
        seconds: f64,
        /// Seconds until the first token (prefill included); None when none came.
        first_token_seconds: Option<f64>,
        stopped: bool,
    },
    GenerationFailed(String),
    TrainingStarted(RunInfo),
    /// The running step reached a part (rollout, update).
    Stage(Stage),
    /// A step's record (`StepRecord::to_json`, plus `step_seconds`).
    Step(Value),
    /// A resumed run's earlier records (steps and evaluations, oldest first, each with
    /// `kind`: `"step"` or `"eval"`), read from the checkpoint's `metrics.jsonl`.
    History(Vec<Value>),
    Eval {
        global_step: usize,
        greedy: f64,
        sampled: f64,
    },
    Paused,
    Resumed,
    TrainingEnded(EndReason),
    CheckpointSaved(PathBuf),
    CheckpointFailed(String),
    /// The worker exits after this one.
    ShutdownDone(WorkerExit),
}

/// The run's history in a checkpoint folder (JSON lines).
pub const METRICS_FILE: &str = "metrics.jsonl";

/// A history line's record, when it is one (`kind` step or eval; torn lines are not).
pub fn history_record(line: &str) -> Option<Value> {
    serde_json::from_str::<Value>(line)
        .ok()
        .filter(|r| matches!(r.get("kind").and_then(Value::as_str), Some("step" | "eval")))
}

/// What the worker did last.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkerExit {
    pub checkpoint: Option<PathBuf>,
    pub error: Option<String>,
}
