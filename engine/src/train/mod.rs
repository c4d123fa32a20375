//! Training: one [`session::Session`] that runs a [`recipe::Recipe`] (SFT then RL, typed
//! [`record::StepRecord`] per step, the recipe's [`rewards`]) for every front end; AdamW with global-norm clipping and gradient accumulation ([`optim`]),
//! learning-rate schedules ([`schedule`]), per-step seeds ([`seeds`]), checkpoints that resume exactly ([`checkpoint`]
//! builds and parses the bytes; `files` writes directories atomically, native only), and
//! supervised fine-tuning data and loss ([`sft`]), how metrics read to people ([`format`]) and
//! where a step is ([`Stage`], for progress displays). Parameters are addressed by the names of
//! [`crate::model::save::named_params`]; models are initialised by [`crate::model::init`].

pub mod checkpoint;
#[cfg(not(target_family = "wasm"))]
pub mod files;
pub mod format;
pub mod optim;
pub mod recipe;
pub mod record;
pub mod rewards;
pub mod schedule;
pub mod seeds;
pub mod session;
pub mod sft;

/// Where a training step is, reported to progress displays while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Sampling `completions` completions (RL; refills of dynamic sampling report again).
    Rollout { completions: usize },
    /// Scoring, the backward pass and the optimizer step.
    Update,
    /// Held-out evaluation on `problems` problems (after the step, when one is due).
    Evaluate { problems: usize },
}

impl Stage {
    /// A short name: `rollout`, `update` or `evaluate`.
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Rollout { .. } => "rollout",
            Stage::Update => "update",
            Stage::Evaluate { .. } => "evaluate",
        }
    }
}
