//! One training session for every front end: a recipe's SFT → RL run as a step-by-step state
//! machine that the CLI, the desktop app and the browser worker drive alike.
//!
//! ```text
//! Session::open (native: model folder, checkpoint, data files)  or  Session::new (parts)
//!   → step_async × recipe.total_steps()   (SFT steps first, then RL steps)
//!   → checkpoints (`save` natively, `checkpoint_files_async` anywhere), which front ends
//!     write every `save_every` steps and at the end
//! ```
//!
//! Every random choice is a function of `(seed, stream, global step)` — the SFT data order
//! (one shuffle per epoch), the RL prompts, the rollout sampler, device-side dropout — so a
//! session resumed from its checkpoint (model, AdamW moments, step, KL controller) continues
//! exactly as an uninterrupted one. Each step returns a typed [`StepRecord`].

mod data;
mod eval;
mod files;
#[cfg(not(target_family = "wasm"))]
mod native;

use burn::module::Module;
use burn::tensor::Device;
use rand::SeedableRng;
use rand::rngs::StdRng;

pub use data::{ReadText, RlData, SftData, Text};
pub use eval::Eval;
pub use files::REFERENCE_FILE;
#[cfg(not(target_family = "wasm"))]
pub use native::OpenOptions;

use crate::demo::vocab;
use crate::model::adapter;
use crate::model::tokenizer::Tokenizer;
use crate::model::{Config, HybridModel};
use crate::nn::AdapterMode;
use crate::rl::kl::KlController;
use crate::rl::presets::{KlPlacement, RlObjective};
use crate::rl::step::{Policy, Reference, RlConfig, preset_objective, rl_step_async};
use crate::train::Stage;
use crate::train::checkpoint::TrainerState;
use crate::train::optim::{AdamW, Grads};
use crate::train::recipe::Recipe;
use crate::train::record::{StepPhase, StepRecord};
use crate::train::rewards::RunRewards;
use crate::train::seeds::{Stream, step_seed};
use crate::train::sft::sft_loss;

/// What can stop a session; each message names the file, section or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The recipe, or a recipe that differs from the checkpoint's on resume.
    #[error("recipe: {0}")]
    Recipe(String),
    /// Loading the model, the checkpoint or the tokenizer.
    #[error("{0}")]
    Load(String),
    /// The SFT examples or the RL prompts.
    #[error("data: {0}")]
    Data(String),
    /// Starting or running a reward.
    #[error("reward: {0}")]
    Reward(String),
    /// A training step (the message names the phase and step).
    #[error("{0}")]
    Step(String),
    /// Writing a checkpoint (the last good one is untouched).
    #[error("{0}")]
    Save(String),
}

/// The model, optimizer and trainer state a session starts from: fresh, or a checkpoint's.
pub struct Trainee {
    pub config: Config,
    /// On an autodiff device.
    pub model: HybridModel,
    pub optimizer: AdamW,
    pub state: TrainerState,
    /// With `[lora]`: the base model's folder, recorded in `adapter_config.json`;
    /// checkpoints then hold the adapters only, and the RL reference is the base.
    pub lora_base: Option<String>,
}

/// Everything [`Session::new`] needs, loaded by the front end (or by [`Session::open`]).
pub struct Parts {
    pub recipe: Recipe,
    pub trainee: Trainee,
    /// The model's tokenizer (`None` for a model without one; [`Session::build`] supplies the
    /// demo vocabulary's).
    pub tokenizer: Option<Tokenizer>,
    pub sft: Option<SftData>,
    pub rl: Option<RlData>,
    /// The recipe's rewards, started (user programs run for the whole session).
    pub rewards: Option<RunRewards>,
}

/// A training run in progress.
pub struct Session {
    recipe: Recipe,
    config: Config,
    model: HybridModel,
    optimizer: AdamW,
    state: TrainerState,
    lora_base: Option<String>,
    tokenizer: Option<Tokenizer>,
    /// The demo's character vocabulary instead of a tokenizer.
    demo: bool,
    eos: Vec<u32>,
    sft: Option<SftData>,
    rl: Option<RlData>,
    rewards: Option<RunRewards>,
    objective: Option<RlObjective>,
    /// `[rl.sampling]` with `max_new_tokens` = 0 resolved to the task's answer length.
    sampling: Option<RlConfig>,
    eval: Option<eval::EvalSet>,
    kl: KlController,
    /// Full fine-tuning's frozen RL reference: the policy as RL started.
    reference: Option<HybridModel>,
    /// The folder the recipe's relative paths and user programs are resolved in (saved
    /// with checkpoints so a resumed run finds them).
    recipe_dir: Option<String>,
    /// Where the reference is kept for resumes (native); `None` keeps it in memory only.
    #[cfg(not(target_family = "wasm"))]
    reference_dir: Option<std::path::PathBuf>,
    /// Files saved next to full models (tokenizer, chat template).
    #[cfg(not(target_family = "wasm"))]
    extra_files: Vec<(String, Vec<u8>)>,
    device: Device,
}

impl Session {
    /// A session from loaded parts on the autodiff `device`. A checkpoint's trainer state
    /// restores the step and the KL controller.
    pub fn new(parts: Parts, device: &Device) -> Result<Self, SessionError> {
        let Parts {
            recipe,
            trainee,
            tokenizer,
            sft,
            rl,
            rewards,
        } = parts;
        let demo = recipe.model.demo_hidden.is_some();
        let eos = eos_ids(&trainee.config, tokenizer.as_ref(), demo);
        let sampling = recipe.rl.as_ref().map(resolved_sampling);
        let eval =
            eval::EvalSet::new(&recipe, tokenizer.as_ref(), demo).map_err(SessionError::Data)?;
        let objective = match &recipe.rl {
            Some(r) => Some(match &r.objective {
                Some(o) => o.clone(),
                None => preset_objective(&r.sampling)
                    .map_err(|e| SessionError::Recipe(format!("[rl.sampling]: {e}")))?,
            }),
            None => None,
        };
        let mut kl = objective
            .as_ref()
            .map(|o| o.reward_kl.controller.clone())
            .unwrap_or(KlController::Fixed { coef: 0.0 });
        if let Some(c) = trainee.state.metadata.get("kl_controller") {
            kl = serde_json::from_value(c.clone()).map_err(|e| {
                SessionError::Load(format!("trainer state `metadata.kl_controller`: {e}"))
            })?;
        }
        let recipe_dir = (trainee.state.metadata.get("recipe_dir"))
            .and_then(|d| d.as_str())
            .map(str::to_owned);
        let mut model = trainee.model;
        model.recompute_layers = recipe.gradient_checkpointing;
        Ok(Self {
            recipe,
            config: trainee.config,
            model,
            optimizer: trainee.optimizer,
            state: trainee.state,
            lora_base: trainee.lora_base,
            tokenizer,
            demo,
            eos,
            sft,
            rl,
            rewards,
            objective,
            sampling,
            eval,
            kl,
            reference: None,
            recipe_dir,
            #[cfg(not(target_family = "wasm"))]
            reference_dir: None,
            #[cfg(not(target_family = "wasm"))]
            extra_files: vec![],
            device: device.clone(),
        })
    }

    /// A session over `trainee`: loads the recipe's data (`read` reads its files) and starts
    /// its rewards (user programs run in `dir`). `tokenizer` is the model's (the demo
    /// vocabulary's is supplied for demo models).
    pub fn build(
        recipe: Recipe,
        trainee: Trainee,
        tokenizer: Option<Tokenizer>,
        read: ReadText,
        dir: &std::path::Path,
        device: &Device,
    ) -> Result<Self, SessionError> {
        let demo = recipe.model.demo_hidden.is_some();
        let tokenizer = match tokenizer {
            None if demo => {
                Some(vocab::tokenizer().map_err(|e| SessionError::Load(e.to_string()))?)
            }
            t => t,
        };
        let text = Text {
            tokenizer: tokenizer.as_ref(),
            demo,
        };
        let eos = eos_ids(&trainee.config, tokenizer.as_ref(), demo);
        let sft = (recipe.sft.as_ref())
            .map(|s| SftData::load(s, &text, &eos, recipe.seed, read))
            .transpose()
            .map_err(SessionError::Data)?;
        let rl = (recipe.rl.as_ref())
            .map(|r| RlData::load(r, &text, recipe.seed, read))
            .transpose()
            .map_err(SessionError::Data)?;
        let rewards = (recipe.rl.as_ref())
            .map(|r| RunRewards::new(&r.rewards, dir))
            .transpose()
            .map_err(SessionError::Reward)?;
        let parts = Parts {
            recipe,
            trainee,
            tokenizer,
            sft,
            rl,
            rewards,
        };
        Self::new(parts, device)
    }

    /// A demo-vocabulary recipe (`[model] demo_hidden`) on a fresh model seeded by the
    /// recipe, or on `start` = (config, weights on `device.autodiff()`) when given (e.g. a
    /// trained model going straight into RL). Needs no files.
    pub fn demo(
        recipe: Recipe,
        start: Option<(Config, HybridModel)>,
        device: &Device,
    ) -> Result<Self, SessionError> {
        let hidden = recipe.model.demo_hidden.ok_or_else(|| {
            SessionError::Recipe("[model]: a demo session needs `demo_hidden`".into())
        })?;
        if recipe.lora.is_some() {
            return Err(SessionError::Recipe(
                "[lora] over a fresh demo model: a demo session trains every weight; run the \
                 recipe with `sluice train` (which writes the base first)"
                    .into(),
            ));
        }
        let device = &if device.is_autodiff() {
            device.clone()
        } else {
            device.clone().autodiff()
        };
        let (config, model) = match start {
            Some((config, model)) => {
                let on_autodiff = crate::model::save::named_params(&model)
                    .first()
                    .is_some_and(|(_, p)| p.flat().is_autodiff());
                if !on_autodiff {
                    return Err(SessionError::Load(
                        "the model must be built on an autodiff device (`device.autodiff()`)"
                            .into(),
                    ));
                }
                if config.vocab_size != vocab::VOCAB.len() {
                    return Err(SessionError::Load(format!(
                        "the demo needs a model with the demo's {}-token vocabulary; this one \
                         has {}",
                        vocab::VOCAB.len(),
                        config.vocab_size
                    )));
                }
                (config, model)
            }
            None => {
                let config = vocab::model_config(hidden)
                    .map_err(|e| SessionError::Recipe(format!("[model] `demo_hidden` = {e}")))?;
                let model = crate::model::init::init_model(&config, recipe.seed, device);
                (config, model)
            }
        };
        let trainee = Trainee {
            config,
            model,
            optimizer: AdamW::new(recipe.optim.clone()),
            state: TrainerState::default(),
            lora_base: None,
        };
        let no_files = |p: &std::path::Path| -> Result<String, String> {
            Err(format!("{}: a demo session reads no files", p.display()))
        };
        Self::build(
            recipe,
            trainee,
            None,
            &no_files,
            std::path::Path::new("."),
            device,
        )
    }

    /// Registers the host program's reward for the recipe's `kind = "user"` entries named
    /// `name` (e.g. a JavaScript function in the browser). An error without an RL phase.
    pub fn register_reward(
        &mut self,
        name: &str,
        reward: Box<dyn crate::rl::rewards::Reward>,
    ) -> Result<(), SessionError> {
        let rewards = (self.rewards.as_mut())
            .ok_or_else(|| SessionError::Reward("the recipe has no [rl] phase".into()))?;
        rewards.register(name, reward);
        Ok(())
    }

    /// The recipe being run.
    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    /// Steps done (both phases).
    pub fn step(&self) -> u64 {
        self.state.step
    }

    /// Steps of the whole run.
    pub fn total_steps(&self) -> u64 {
        self.recipe.total_steps()
    }

    /// The phase the next step belongs to (`None` once every step is done).
    pub fn next_phase(&self) -> Option<StepPhase> {
        match self.state.step {
            s if s >= self.total_steps() => None,
            s if s < self.sft_steps() => Some(StepPhase::Sft),
            _ => Some(StepPhase::Rl),
        }
    }

    /// SFT steps of the run (0 without `[sft]`).
    pub fn sft_steps(&self) -> u64 {
        self.recipe.sft.as_ref().map_or(0, |s| s.steps)
    }

    /// RL steps of the run (0 without `[rl]`).
    pub fn rl_steps(&self) -> u64 {
        self.recipe.rl.as_ref().map_or(0, |r| r.steps)
    }

    /// The phase of the last step taken (the next one's before any) and the steps done
    /// within it.
    pub fn phase_progress(&self) -> (StepPhase, u64) {
        let (step, sft) = (self.state.step, self.sft_steps());
        if sft > 0 && step <= sft {
            (StepPhase::Sft, step)
        } else {
            (StepPhase::Rl, step - sft)
        }
    }

    /// The built-in task the recipe trains on, if any.
    pub fn task(&self) -> Option<crate::demo::Task> {
        self.recipe.task().and_then(|t| t.parse().ok())
    }

    /// The RL rollout settings in force (`max_new_tokens` resolved).
    pub fn sampling(&self) -> Option<&RlConfig> {
        self.sampling.as_ref()
    }

    /// The model being trained (autodiff device).
    pub fn model(&self) -> &HybridModel {
        &self.model
    }

    /// The model's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// With LoRA: (adapted projections, trainable parameters).
    pub fn lora_stats(&self) -> Option<(usize, usize)> {
        self.lora_base
            .as_ref()
            .map(|_| adapter::adapter_stats(&self.model))
    }

    /// Runs the next step (SFT while SFT steps remain, then RL), telling `on_stage` where it
    /// is; `None` once the run is complete.
    pub async fn step_async(
        &mut self,
        on_stage: &mut dyn FnMut(Stage),
    ) -> Result<Option<StepRecord>, SessionError> {
        let Some(phase) = self.next_phase() else {
            return Ok(None);
        };
        let step = self.state.step;
        // Device-side draws (LoRA dropout) are a function of (seed, step) too.
        self.device
            .seed(step_seed(self.recipe.seed, Stream::Device, step));
        let mut rec = match phase {
            StepPhase::Sft => {
                on_stage(Stage::Update);
                self.sft_step(step).await
            }
            StepPhase::Rl => self.rl_step(on_stage).await,
        }
        .map_err(|e| SessionError::Step(format!("step {} ({phase:?}): {e}", step + 1)))?;
        self.state.step += 1;
        rec.global_step = self.state.step;
        Ok(Some(rec))
    }

    /// One SFT optimizer step: `grad_accum` micro-batches of `batch_size` rows (losses
    /// averaged).
    async fn sft_step(&mut self, step: u64) -> Result<StepRecord, String> {
        let s = self.recipe.sft.as_ref().ok_or("no [sft] phase")?;
        let data = self.sft.as_ref().ok_or("the SFT data is not loaded")?;
        let lr = s.schedule.lr(step);
        let mut grads = Grads::new();
        let mut tokens = 0usize;
        adapter::set_mode(&mut self.model, AdapterMode::Train);
        for micro in 0..s.grad_accum {
            let batch = data.batch(s, self.recipe.seed, step, micro);
            let (loss, n) =
                sft_loss(&self.model, &batch, &self.device).map_err(|e| e.to_string())?;
            tokens += n;
            let loss = loss.map(|l| l.div_scalar(s.grad_accum as f32));
            loss.accumulate_into(&self.model, &mut grads);
        }
        adapter::set_mode(&mut self.model, AdapterMode::Eval);
        let rep = self
            .optimizer
            .step_async(&mut self.model, grads, lr)
            .await
            .map_err(|e| e.to_string())?;
        Ok(StepRecord {
            phase: StepPhase::Sft,
            global_step: step + 1,
            phase_step: step + 1,
            lr,
            loss: rep.loss,
            grad_norm: rep.grad_norm,
            tokens,
            skipped: rep.skipped.is_some(),
            rl: None,
        })
    }

    /// One RL step of the recipe's objective.
    async fn rl_step(&mut self, on_stage: &mut dyn FnMut(Stage)) -> Result<StepRecord, String> {
        let step = self.state.step;
        let rl_step = step - self.sft_steps();
        self.ensure_reference(rl_step)?;
        let seed = self.recipe.seed;
        let rl = self.recipe.rl.as_ref().ok_or("no [rl] phase")?;
        if rl_step == 0 && rl.reset_optimizer {
            self.optimizer = AdamW::new(self.recipe.optim.clone());
        }
        let sampling = self.sampling.as_ref().ok_or("no [rl.sampling]")?;
        let objective = self.objective.as_ref().ok_or("no RL objective")?;
        let data = self.rl.as_ref().ok_or("the RL prompts are not loaded")?;
        let rewards = self.rewards.as_mut().ok_or("the rewards are not started")?;
        let lr = rl.schedule.lr(rl_step);
        let mut prng = StdRng::seed_from_u64(step_seed(seed, Stream::RlPrompts, step));
        let mut next = |n: usize| data.draw(n, &mut prng);
        rewards.step(&self.model);
        let snapshot = rewards.needs_snapshot().then(|| self.model.valid());
        let base = self.device.clone().inner();
        let verify_seed = step_seed(seed, Stream::RewardSampling, step);
        let rewards = rewards.for_step(
            snapshot.as_ref(),
            self.tokenizer.as_ref(),
            &base,
            &self.eos,
            verify_seed,
        )?;
        let (tokenizer, demo) = (self.tokenizer.as_ref(), self.demo);
        let decode = |ids: &[u32]| -> String {
            match tokenizer {
                Some(t) if !demo => t.decode(ids, true).unwrap_or_default(),
                _ => vocab::decode(ids),
            }
        };
        let reference = match (&self.lora_base, &self.reference) {
            (Some(_), _) => Reference::AdaptersOff,
            (None, r) => r.as_ref().into(),
        };
        let rep = rl_step_async(
            Policy {
                model: &mut self.model,
                optimizer: &mut self.optimizer,
                reference,
                kl_controller: &mut self.kl,
            },
            lr,
            sampling,
            objective,
            &rewards,
            &mut next,
            &self.eos,
            &decode,
            step_seed(seed, Stream::RlSampling, step),
            &self.device,
            on_stage,
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(StepRecord {
            phase: StepPhase::Rl,
            global_step: step + 1,
            phase_step: rl_step + 1,
            lr,
            loss: rep.update.stats.loss,
            grad_norm: rep.update.grad_norm,
            tokens: rep.rollout_tokens,
            skipped: rep.update.skipped_steps > 0 || rep.no_update,
            rl: Some(rep),
        })
    }

    /// Full fine-tuning with a KL term: the frozen reference, the policy as RL starts (kept
    /// in `reference_dir` for resumes). LoRA's reference is the base with adapters off.
    fn ensure_reference(&mut self, rl_step: u64) -> Result<(), String> {
        if !self.needs_reference() || self.reference.is_some() {
            return Ok(());
        }
        if rl_step == 0 {
            let r = self.model.valid();
            self.store_reference(&r)?;
            self.reference = Some(r);
        } else {
            self.reference = Some(self.load_reference()?);
        }
        Ok(())
    }

    /// Full fine-tuning with a KL term keeps a frozen copy of the policy as RL started.
    fn needs_reference(&self) -> bool {
        let kl = (self.objective.as_ref()).is_some_and(|o| o.kl_placement != KlPlacement::None);
        kl && self.lora_base.is_none()
    }

    /// The RL phase has started and keeps a frozen reference: a restored run needs it.
    fn reference_due(&self) -> bool {
        self.needs_reference() && self.step() > self.sft_steps()
    }

    /// The state written with a checkpoint: the step, the KL controller and the recipe.
    fn checkpoint_state(&self) -> TrainerState {
        let mut metadata = serde_json::json!({ "kl_controller": self.kl, "recipe": self.recipe });
        if let Some(dir) = &self.recipe_dir {
            metadata["recipe_dir"] = serde_json::json!(dir);
        }
        TrainerState {
            metadata,
            ..self.state.clone()
        }
    }
}

/// `[rl.sampling]`, its `max_new_tokens` = 0 made the task's answer length + 2.
fn resolved_sampling(r: &crate::train::recipe::RlPhase) -> RlConfig {
    let mut s = r.sampling.clone();
    if s.max_new_tokens == 0 {
        let task = r
            .task
            .as_deref()
            .and_then(|t| t.parse::<crate::demo::Task>().ok());
        s.max_new_tokens = task.map_or(64, |t| t.max_answer_tokens() + 2);
    }
    s
}

/// The ids that end a completion: the demo's `<eos>`, the config's, or the tokenizer's.
fn eos_ids(config: &Config, tokenizer: Option<&Tokenizer>, demo: bool) -> Vec<u32> {
    if demo {
        vec![vocab::EOS]
    } else if !config.eos_token_ids.is_empty() {
        config.eos_token_ids.clone()
    } else {
        tokenizer
            .and_then(Tokenizer::eos_token_id)
            .into_iter()
            .collect()
    }
}

#[cfg(target_family = "wasm")]
impl Session {
    fn store_reference(&mut self, _r: &HybridModel) -> Result<(), String> {
        Ok(())
    }

    fn load_reference(&self) -> Result<HybridModel, String> {
        Err(
            "the RL reference model of a resumed full fine-tuning run is not stored in the browser"
                .into(),
        )
    }
}
