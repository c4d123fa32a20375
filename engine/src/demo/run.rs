//! The demo run as a step-by-step state machine, so a CLI, a desktop UI or a browser worker
//! drives the same code: build a fresh model, SFT on the task's training problems, then RL
//! (a GRPO-family preset) with an exact-match verifier, evaluating held-out greedy accuracy
//! before training, at phase ends and every `eval_every` steps.
//!
//! ```text
//! Demo::new → evaluate (base) → sft step × sft_steps → evaluate (sft) → rl step × rl_steps
//!           → evaluate (rl)
//! ```
//!
//! [`Demo::from_model`] starts from a trained model instead (e.g. straight into RL, as the
//! browser demo does); [`Demo::checkpoint_files_async`] / [`Demo::restore`] save and resume a
//! run exactly (every step's random draws come from `(seed, stream, step)`, see
//! [`crate::train::seeds`], so there is no RNG state to keep).

use burn::module::Module;
use burn::tensor::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::task::{Problem, Task};
use super::vocab::{self, EOS};
use crate::model::generate::{GenerateOptions, Sampling, generate_async, generate_groups_async};
use crate::model::weights::Buffer;
use crate::model::{Config, HybridModel};
use crate::rl::kl::KlController;
use crate::rl::presets::RlObjective;
use crate::rl::rewards::rule::{ExactMatchReward, Extractor};
use crate::rl::rewards::{FnReward, Sample, WeightedRewards};
use crate::rl::step::{Policy, Prompt, Reference, RlConfig, preset_objective, rl_step_async};
use crate::train::Stage;
use crate::train::checkpoint::{
    CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, TrainerState, checkpoint_files_async,
    restore,
};
use crate::train::optim::{AdamW, AdamWConfig, Grads};
use crate::train::schedule::LrSchedule;
use crate::train::seeds::{Stream, step_seed};
use crate::train::sft::{SftExample, sft_loss};

/// Errors of the demo run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo config: {0}")]
    Config(String),
    #[error("demo: {0}")]
    Run(String),
}

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

/// Held-out accuracies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Eval {
    /// Greedy decoding.
    pub greedy: f64,
    /// pass@1 at temperature 1 (mean over `eval_samples` samples per problem); NaN when
    /// `eval_samples` is 0.
    pub sampled: f64,
}

/// The frozen RL reference model's file in a demo checkpoint (next to the policy's
/// `model.safetensors`).
pub const REFERENCE_FILE: &str = "reference.safetensors";

/// Which phase the run is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Sft,
    Rl,
    Done,
}

/// The demo's state.
pub struct Demo {
    pub cfg: DemoConfig,
    pub task: Task,
    pub config: Config,
    /// The model being trained (autodiff device).
    pub model: HybridModel,
    pub phase: Phase,
    /// Step within the current phase.
    pub step: usize,
    optimizer: AdamW,
    reference: Option<HybridModel>,
    objective: RlObjective,
    kl: KlController,
    heldout: Vec<Problem>,
    sft_pool: Vec<Problem>,
    device: Device,
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

impl Demo {
    /// A fresh model (seeded) on `device` (an autodiff device is made from it).
    pub fn new(cfg: DemoConfig, device: &Device) -> Result<Self, DemoError> {
        Self::build(cfg, device, None)
    }

    /// [`Demo::new`], or with `start` = (config, weights) as the model instead of a fresh one.
    fn build(
        mut cfg: DemoConfig,
        device: &Device,
        start: Option<(Config, HybridModel)>,
    ) -> Result<Self, DemoError> {
        cfg.validate().map_err(DemoError::Config)?;
        let task: Task = cfg.task.parse().map_err(DemoError::Config)?;
        if cfg.rl.max_new_tokens == 0 {
            cfg.rl.max_new_tokens = task.max_answer_tokens() + 2;
        }
        let objective = preset_objective(&cfg.rl).map_err(|e| DemoError::Config(e.to_string()))?;
        let device = if device.is_autodiff() {
            device.clone()
        } else {
            device.clone().autodiff()
        };
        let (config, model) = match start {
            Some(start) => start,
            None => {
                let config = vocab::model_config(cfg.hidden)
                    .map_err(|e| DemoError::Config(format!("`hidden` = {e}")))?;
                let model = crate::model::init::init_model(&config, cfg.seed, &device);
                (config, model)
            }
        };
        let heldout = task.heldout(cfg.eval_size, cfg.seed ^ 0x5EED);
        let mut pool_rng = StdRng::seed_from_u64(cfg.seed ^ 0xD47A);
        let sft_pool = (0..cfg.sft_examples)
            .map(|_| task.train_problem(&mut pool_rng))
            .collect();
        Ok(Demo {
            sft_pool,
            optimizer: AdamW::new(Self::adamw()),
            kl: objective.reward_kl.controller.clone(),
            cfg,
            task,
            config,
            model,
            phase: Phase::Sft,
            step: 0,
            reference: None,
            objective,
            heldout,
            device,
        })
    }

    /// Starts from a trained demo model (`config` must be a demo-vocabulary config, `model`
    /// its weights, built on `device.autodiff()`) instead of a fresh one; `cfg.sft_steps` may be 0 to go straight to RL.
    /// `cfg.hidden` is taken from `config`.
    pub fn from_model(
        mut cfg: DemoConfig,
        config: Config,
        model: HybridModel,
        device: &Device,
    ) -> Result<Self, DemoError> {
        if config.vocab_size != vocab::VOCAB.len() {
            return Err(DemoError::Config(format!(
                "the demo needs a model with the demo's {}-token vocabulary; this one has {}",
                vocab::VOCAB.len(),
                config.vocab_size
            )));
        }
        let on_autodiff = crate::model::save::named_params(&model)
            .first()
            .is_some_and(|(_, p)| p.flat().is_autodiff());
        if !on_autodiff {
            return Err(DemoError::Config(
                "the model must be built on an autodiff device (`device.autodiff()`)".into(),
            ));
        }
        cfg.hidden = config.hidden_size;
        Self::build(cfg, device, Some((config, model)))
    }

    /// The run as checkpoint files (HF model folder + optimizer + trainer state, and the RL
    /// reference model once RL started); [`Demo::restore`] continues it bit-identically.
    pub async fn checkpoint_files_async(&self) -> Result<Vec<(String, Vec<u8>)>, DemoError> {
        let err = |e: &dyn std::fmt::Display| DemoError::Run(format!("checkpoint: {e}"));
        let state = TrainerState {
            step: self.step as u64,
            metadata: json!({
                "demo": self.cfg,
                "phase": self.phase,
                "kl_controller": self.kl,
            }),
            ..TrainerState::default()
        };
        let mut files = checkpoint_files_async(&self.config, &self.model, &self.optimizer, &state)
            .await
            .map_err(|e| err(&e))?;
        if let Some(reference) = &self.reference {
            let bytes = crate::model::save::model_safetensors(&self.config, reference)
                .await
                .map_err(|e| err(&e))?;
            // The trainer state stays the last file written.
            files.insert(files.len() - 1, (REFERENCE_FILE.into(), bytes));
        }
        Ok(files)
    }

    /// Resumes a run from [`Demo::checkpoint_files_async`]'s files (any order).
    pub fn restore(files: Vec<(String, Vec<u8>)>, device: &Device) -> Result<Self, DemoError> {
        let mut files: std::collections::BTreeMap<String, Vec<u8>> = files.into_iter().collect();
        let mut take = |name: &str| {
            files
                .remove(name)
                .ok_or_else(|| DemoError::Config(format!("checkpoint: `{name}` is missing")))
        };
        let text = |name: &str, b: Vec<u8>| {
            String::from_utf8(b).map_err(|_| DemoError::Config(format!("{name}: not UTF-8")))
        };
        let config_json = text(CONFIG_FILE, take(CONFIG_FILE)?)?;
        let model: Buffer = Box::new(take(MODEL_FILE)?);
        let optimizer = take(OPTIMIZER_FILE)?;
        let state_json = text(STATE_FILE, take(STATE_FILE)?)?;
        let reference = files.remove(REFERENCE_FILE);
        let device = if device.is_autodiff() {
            device.clone()
        } else {
            device.clone().autodiff()
        };
        let err = |e: &dyn std::fmt::Display| DemoError::Config(format!("checkpoint: {e}"));
        let r =
            restore(&config_json, model, &optimizer, &state_json, &device).map_err(|e| err(&e))?;
        let meta = &r.state.metadata;
        let field = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| DemoError::Config(format!("{STATE_FILE}: no `metadata.{k}`")))
        };
        let cfg: DemoConfig = serde_json::from_value(field("demo")?).map_err(|e| err(&e))?;
        let phase: Phase = serde_json::from_value(field("phase")?).map_err(|e| err(&e))?;
        let kl: KlController =
            serde_json::from_value(field("kl_controller")?).map_err(|e| err(&e))?;
        let mut demo = Self::from_model(cfg, r.config, r.model, &device)?;
        demo.optimizer = r.optimizer;
        demo.phase = phase;
        demo.step = r.state.step as usize;
        demo.kl = kl;
        if phase != Phase::Sft {
            let bytes = reference.ok_or_else(|| {
                DemoError::Config(format!(
                    "checkpoint: `{REFERENCE_FILE}` is missing (RL phase)"
                ))
            })?;
            let weights = crate::model::weights::Weights::new(vec![(
                REFERENCE_FILE.to_string(),
                Box::new(bytes) as Buffer,
            )])
            .map_err(|e| err(&e))?;
            let inner = device.clone().inner();
            let reference =
                crate::model::load::build(&demo.config, &weights, &inner).map_err(|e| err(&e))?;
            demo.reference = Some(reference);
        }
        Ok(demo)
    }

    /// The (autodiff) device the run trains on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn adamw() -> AdamWConfig {
        AdamWConfig {
            weight_decay: 0.0,
            ..AdamWConfig::default()
        }
    }

    /// The held-out problems.
    pub fn heldout(&self) -> &[Problem] {
        &self.heldout
    }

    /// Held-out accuracy (exact answer then `<eos>`): greedy, and pass@1 of the policy's own
    /// sampling (temperature 1, the mean over `eval_samples` samples per problem, fixed seed).
    pub async fn evaluate_async(&self) -> Result<Eval, DemoError> {
        let model = self.model.valid();
        let device = self.device.clone().inner();
        let prompts: Vec<Vec<u32>> = self.heldout.iter().map(Problem::prompt_ids).collect();
        let mut opts = GenerateOptions {
            max_new_tokens: self.task.max_answer_tokens() + 2,
            sampling: Default::default(),
            eos_token_ids: vec![EOS],
        };
        let err = |e: crate::model::generate::GenerateError| DemoError::Run(e.to_string());
        let out = generate_async(&model, &prompts, &opts, &device, |_, _| {})
            .await
            .map_err(err)?;
        let n = self.heldout.len() as f64;
        let greedy = self
            .heldout
            .iter()
            .zip(&out)
            .filter(|(p, o)| p.is_correct(o))
            .count() as f64
            / n;
        let k = self.cfg.eval_samples;
        let sampled = if k == 0 {
            f64::NAN
        } else {
            opts.sampling = Sampling {
                temperature: 1.0,
                seed: self.cfg.seed ^ 0xE7A1,
                ..Sampling::default()
            };
            let out = generate_groups_async(&model, &prompts, k, &opts, &device, |_, _| {})
                .await
                .map_err(err)?;
            out.iter()
                .enumerate()
                .filter(|(r, o)| self.heldout[r / k].is_correct(o))
                .count() as f64
                / (n * k as f64)
        };
        Ok(Eval { greedy, sampled })
    }

    /// True when the step just taken should be followed by an evaluation.
    pub fn eval_due(&self) -> bool {
        let end = match self.phase {
            Phase::Sft => self.step == self.cfg.sft_steps,
            Phase::Rl => self.step == self.cfg.rl_steps,
            Phase::Done => true,
        };
        end || (self.cfg.eval_every > 0 && self.step.is_multiple_of(self.cfg.eval_every))
    }

    /// Runs one step of the current phase and returns its metrics record (`phase`, `step`,
    /// `loss`, `lr`, `grad_norm`, RL: `reward`, `kl`, `entropy`, `clip_frac`,
    /// `response_length`, `rollout_tokens`, ...). Moves to the next phase when one ends;
    /// returns `None` once done.
    pub async fn step_async(&mut self) -> Result<Option<Value>, DemoError> {
        self.step_with(&mut |_| {}).await
    }

    /// [`Demo::step_async`], telling `on_stage` where the step is (rollout, update).
    pub async fn step_with(
        &mut self,
        on_stage: &mut dyn FnMut(Stage),
    ) -> Result<Option<Value>, DemoError> {
        // Phases with no steps left are skipped.
        if self.phase == Phase::Sft && self.step >= self.cfg.sft_steps {
            self.start_rl();
        }
        if self.phase == Phase::Rl && self.step >= self.cfg.rl_steps {
            self.phase = Phase::Done;
        }
        match self.phase {
            Phase::Sft => {
                on_stage(Stage::Update);
                self.sft_step().await.map(Some)
            }
            Phase::Rl => self.rl_step(on_stage).await.map(Some),
            Phase::Done => Ok(None),
        }
    }

    fn start_rl(&mut self) {
        self.phase = Phase::Rl;
        self.step = 0;
        if !self.cfg.keep_optimizer {
            self.optimizer = AdamW::new(Self::adamw());
        }
        // The reference model is the policy at the start of RL (frozen, no gradients).
        self.reference = Some(self.model.valid());
    }

    async fn sft_step(&mut self) -> Result<Value, DemoError> {
        let mut rng = StdRng::seed_from_u64(step_seed(
            self.cfg.seed,
            Stream::DemoSftData,
            self.step as u64,
        ));
        let batch: Vec<SftExample> = (0..self.cfg.sft_batch)
            .map(|_| {
                if self.sft_pool.is_empty() {
                    self.task.train_problem(&mut rng).sft_example()
                } else {
                    self.sft_pool[rng.random_range(0..self.sft_pool.len())].sft_example()
                }
            })
            .collect();
        let (loss, n) = sft_loss(&self.model, &batch, &self.device)
            .map_err(|e| DemoError::Run(e.to_string()))?;
        let schedule = LrSchedule::WarmupCosine {
            peak_lr: self.cfg.sft_lr,
            min_lr: self.cfg.sft_lr * 0.1,
            warmup_steps: (self.cfg.sft_steps as u64 / 10).max(1),
            total_steps: self.cfg.sft_steps as u64,
        };
        let lr = schedule.lr(self.step as u64);
        let mut grads = Grads::new();
        loss.accumulate_into(&self.model, &mut grads);
        let rep = self
            .optimizer
            .step_async(&mut self.model, grads, lr)
            .await
            .map_err(|e| DemoError::Run(e.to_string()))?;
        self.step += 1;
        Ok(json!({
            "phase": "sft",
            "step": self.step,
            "loss": rep.loss,
            "lr": lr,
            "grad_norm": rep.grad_norm,
            "tokens": n,
            "skipped": rep.skipped.is_some(),
        }))
    }

    async fn rl_step(&mut self, on_stage: &mut dyn FnMut(Stage)) -> Result<Value, DemoError> {
        let lr = LrSchedule::WarmupCosine {
            peak_lr: self.cfg.rl_lr,
            min_lr: self.cfg.rl_lr,
            warmup_steps: 3,
            total_steps: self.cfg.rl_steps as u64,
        }
        .lr(self.step as u64);
        let task = self.task;
        let mut rng = StdRng::seed_from_u64(step_seed(
            self.cfg.seed,
            Stream::DemoRlPrompts,
            self.step as u64,
        ));
        let mut next = |n: usize| -> Vec<Prompt> {
            (0..n)
                .map(|_| task.train_problem(&mut rng).rl_prompt())
                .collect()
        };
        let rewards = if self.cfg.reward == "partial" {
            WeightedRewards::new().with(FnReward::new("partial", partial_credit), 1.0)
        } else {
            WeightedRewards::new().with(
                ExactMatchReward {
                    extractor: Extractor::Whole,
                    normalize: false,
                },
                1.0,
            )
        };
        let seed = step_seed(self.cfg.seed, Stream::DemoRlSampling, self.step as u64);
        let uses_reference = self.objective.kl_placement != crate::rl::presets::KlPlacement::None;
        let rep = rl_step_async(
            Policy {
                model: &mut self.model,
                optimizer: &mut self.optimizer,
                reference: if uses_reference {
                    self.reference.as_ref().into()
                } else {
                    Reference::None
                },
                kl_controller: &mut self.kl,
            },
            lr,
            &self.cfg.rl,
            &self.objective,
            &rewards,
            &mut next,
            &[EOS],
            &|ids: &[u32]| vocab::decode(ids),
            seed,
            &self.device,
            on_stage,
        )
        .await
        .map_err(|e| DemoError::Run(e.to_string()))?;
        self.step += 1;
        let mut rec = rep.to_record();
        rec["phase"] = json!("rl");
        rec["step"] = json!(self.step);
        rec["lr"] = json!(lr);
        Ok(rec)
    }
}

/// Graded verifier: matching positions of completion and answer (`<eos>` included) over the
/// longer of the two; 1 exactly when the completion is the answer then `<eos>`.
pub fn partial_credit(s: &Sample) -> Option<f64> {
    let got = s.completion_ids.as_ref()?;
    let mut want = vocab::encode(s.reference.as_deref()?);
    want.push(EOS);
    let right = got.iter().zip(&want).filter(|(a, b)| a == b).count();
    Some(right as f64 / got.len().max(want.len()) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_credit_grades_positions() {
        let s = |c: &str, eos: bool| {
            let mut ids = vocab::encode(c);
            if eos {
                ids.push(EOS);
            }
            Sample::new("31415=", c)
                .with_reference("11345")
                .with_ids(vocab::encode("31415="), ids)
        };
        assert_eq!(partial_credit(&s("11345", true)), Some(1.0));
        assert_eq!(partial_credit(&s("11345", false)), Some(5.0 / 6.0));
        assert_eq!(partial_credit(&s("11346", true)), Some(5.0 / 6.0));
        assert_eq!(partial_credit(&s("113455", true)), Some(5.0 / 7.0));
        assert_eq!(partial_credit(&s("", true)), Some(0.0));
        assert_eq!(partial_credit(&Sample::new("a", "b")), None);
    }
}
