//! The demo's settings — the knobs the CLI flags, the desktop form and the browser page
//! expose — and the recipe they make ([`DemoConfig::recipe`]). The demo runs as that recipe
//! in the one training session ([`crate::train::session::Session`]); `recipes/demo.toml` is
//! the recipe of the defaults.

use serde::{Deserialize, Serialize};

use super::task::Task;
use crate::rl::step::RlConfig;
use crate::train::optim::AdamWConfig;
use crate::train::recipe::{EvalSpec, ModelSource, Recipe, RewardSpec, RlPhase, SftPhase};
use crate::train::schedule::LrSchedule;

/// Everything the demo does, with defaults that finish in minutes on a CPU Vulkan driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// `sort`, `sort:N`, `addition`, `addition:N`.
    pub task: String,
    /// Model width (multiple of 4; 4 layers: DeltaNet, attention, DeltaNet, attention).
    pub hidden: usize,
    pub seed: u64,
    /// Held-out problems evaluated (greedy decoding, exact match).
    pub eval_size: usize,
    /// Evaluate every this many steps within a phase (0: only at phase ends).
    pub eval_every: usize,
    /// Samples per held-out problem for the sampled pass@1 (0: greedy only).
    pub eval_samples: usize,
    /// Keep the SFT optimizer's moments for RL (false: a fresh AdamW, as a separate TRL run).
    pub keep_optimizer: bool,
    pub sft_steps: usize,
    pub sft_batch: usize,
    /// Size of the fixed pool of SFT demonstrations (0: a fresh problem every time). A small
    /// pool models the usual situation — demonstrations are scarce, prompts and a verifier
    /// are cheap — where RL on fresh prompts can go past what SFT on the pool reaches.
    pub sft_examples: usize,
    /// Peak SFT learning rate (warmup then cosine to 10%).
    pub sft_lr: f64,
    pub rl_steps: usize,
    /// RL learning rate (constant after a short warmup).
    pub rl_lr: f64,
    /// RL reward: `exact` (1 if the completion is exactly the answer then `<eos>`, else 0) or
    /// `partial` (the fraction of answer positions, `<eos>` included, that the completion
    /// gets right, over the longer of the two — a graded verifier; 1 only when exact).
    pub reward: String,
    /// Rollout and optimisation settings; `rl.preset` names the objective (default `grpo`).
    pub rl: RlConfig,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            task: "sort".into(),
            hidden: 64,
            seed: 0,
            eval_size: 200,
            eval_every: 20,
            eval_samples: 4,
            keep_optimizer: true,
            sft_steps: 100,
            sft_batch: 32,
            sft_examples: 0,
            sft_lr: 1e-2,
            rl_steps: 60,
            rl_lr: 5e-4,
            reward: "exact".into(),
            rl: RlConfig {
                preset: Some(crate::rl::presets::Preset::Grpo),
                group_size: 8,
                prompts_per_step: 16,
                max_new_tokens: 0,
                ..RlConfig::default()
            },
        }
    }
}

impl DemoConfig {
    /// Checks every field; errors name it (`sft_lr`, `rl.top_p`, ...).
    pub fn validate(&self) -> Result<(), String> {
        use crate::check::non_negative;
        let task: Task = self.task.parse()?;
        super::vocab::model_config(self.hidden).map_err(|e| format!("`hidden` = {e}"))?;
        if self.sft_batch == 0 || self.eval_size == 0 {
            return Err("`sft_batch` and `eval_size` must be positive".into());
        }
        if !matches!(self.reward.as_str(), "exact" | "partial") {
            return Err(format!(
                "`reward` = `{}`: must be `exact` or `partial`",
                self.reward
            ));
        }
        non_negative("sft_lr", self.sft_lr)?;
        non_negative("rl_lr", self.rl_lr)?;
        let mut rl = self.rl.clone();
        if rl.max_new_tokens == 0 {
            rl.max_new_tokens = task.max_answer_tokens() + 2;
        }
        rl.validate().map_err(|e| format!("[rl] {e}"))
    }
}

impl DemoConfig {
    /// The recipe these settings describe: SFT on the task (warmup then cosine to 10% of
    /// `sft_lr`), RL with the exact-match (or partial-credit) verifier (3 warmup steps then
    /// `rl_lr`), held-out evaluation; AdamW without weight decay. A phase with 0 steps is
    /// left out.
    pub fn recipe(&self) -> Result<Recipe, String> {
        self.validate()?;
        let sft = (self.sft_steps > 0).then(|| SftPhase {
            data: None,
            task: Some(self.task.clone()),
            chat: false,
            steps: self.sft_steps as u64,
            batch_size: self.sft_batch,
            grad_accum: 1,
            max_len: 512,
            packing: false,
            pool: (self.sft_examples > 0).then_some(self.sft_examples),
            schedule: LrSchedule::WarmupCosine {
                peak_lr: self.sft_lr,
                min_lr: self.sft_lr * 0.1,
                warmup_steps: (self.sft_steps as u64 / 10).max(1),
                total_steps: self.sft_steps as u64,
            },
        });
        let reward = if self.reward == "partial" {
            RewardSpec::Partial { weight: 1.0 }
        } else {
            RewardSpec::ExactMatch { weight: 1.0 }
        };
        let rl = (self.rl_steps > 0).then(|| RlPhase {
            prompts: None,
            task: Some(self.task.clone()),
            chat: false,
            steps: self.rl_steps as u64,
            reset_optimizer: !self.keep_optimizer,
            schedule: LrSchedule::WarmupCosine {
                peak_lr: self.rl_lr,
                min_lr: self.rl_lr,
                warmup_steps: 3,
                total_steps: self.rl_steps as u64,
            },
            rewards: vec![reward],
            sampling: self.rl.clone(),
            objective: None,
        });
        Recipe {
            seed: self.seed,
            out: "sluice-demo".into(),
            save_every: 1000,
            gradient_checkpointing: false,
            model: ModelSource {
                path: None,
                demo_hidden: Some(self.hidden),
                dtype: None,
            },
            optim: AdamWConfig {
                weight_decay: 0.0,
                ..AdamWConfig::default()
            },
            lora: None,
            sft,
            rl,
            eval: Some(EvalSpec {
                problems: self.eval_size,
                every: self.eval_every as u64,
                samples: self.eval_samples,
            }),
        }
        .checked()
    }
}
