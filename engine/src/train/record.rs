//! A training step's metrics as a typed value: what front ends show, plot and log.

use serde::Serialize;
use serde_json::{Value, json};

use crate::rl::step::RlStepReport;

/// Which phase a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepPhase {
    Sft,
    Rl,
}

/// One optimizer step.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub phase: StepPhase,
    /// Steps done over both phases, this one included.
    pub global_step: u64,
    /// Step within its phase, this one included (1-based).
    pub phase_step: u64,
    pub lr: f64,
    /// SFT: mean token cross-entropy; RL: the objective's loss.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// SFT: target tokens; RL: completion tokens sampled.
    pub tokens: usize,
    /// The optimizer step was skipped (a non-finite loss or gradient, or nothing to learn).
    pub skipped: bool,
    /// RL: the whole report (rewards, KL, entropy, clip fractions, lengths).
    pub rl: Option<RlStepReport>,
}

impl StepRecord {
    /// Rollout accuracy: the mean of a binary verifier (exact match or numeric accuracy)
    /// over the step's first rollout round.
    pub fn accuracy(&self) -> Option<f64> {
        let rl = self.rl.as_ref()?;
        rl.rewards
            .iter()
            .find(|(name, _)| name == "exact_match" || name == "accuracy")
            .map(|(_, acc)| *acc)
    }

    /// The flat metrics object written to `metrics.jsonl`: `phase`, `global_step`, `step`,
    /// `lr`, `loss`, `grad_norm`, `tokens`, `skipped`, and for RL every key of
    /// [`RlStepReport::to_record`] plus `rollout_accuracy` when a binary verifier ran
    /// (held-out evaluations are `accuracy` and `sampled_accuracy`, added by front ends).
    pub fn to_json(&self) -> Value {
        let mut rec = match &self.rl {
            Some(rl) => rl.to_record(),
            None => json!({ "loss": self.loss, "grad_norm": self.grad_norm }),
        };
        rec["phase"] = json!(self.phase);
        rec["global_step"] = json!(self.global_step);
        rec["step"] = json!(self.phase_step);
        rec["lr"] = json!(self.lr);
        rec["tokens"] = json!(self.tokens);
        rec["skipped"] = json!(self.skipped);
        if let Some(acc) = self.accuracy() {
            rec["rollout_accuracy"] = json!(acc);
        }
        rec
    }
}
