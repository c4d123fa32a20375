//! Training recipes: the TOML file `sluice train --config` reads. Every field is documented
//! in `recipes/reference.toml` (printed by `sluice train --help-recipe`), which is itself a
//! valid recipe (a test parses it).

use std::path::PathBuf;

use crate::check::{Checked, finite, within};
use crate::model::adapter::LoraConfig;
use crate::model::load::WeightDtype;
use crate::rl::presets::RlObjective;
use crate::rl::rewards::likelihood::LikelihoodMode;
use crate::rl::step::RlConfig;
use crate::train::optim::AdamWConfig;
use crate::train::schedule::LrSchedule;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(default)]
    pub seed: u64,
    pub out: PathBuf,
    #[serde(default = "default_save_every")]
    pub save_every: u64,
    /// Gradient checkpointing: training forwards keep each layer's input only and run the
    /// layer again during the backward pass (one layer's activations at a time, one more
    /// forward pass of compute).
    #[serde(default)]
    pub gradient_checkpointing: bool,
    pub model: ModelSource,
    #[serde(default)]
    pub optim: AdamWConfig,
    /// LoRA adapters over a frozen base; absent = full fine-tuning.
    pub lora: Option<LoraConfig>,
    pub sft: Option<SftPhase>,
    pub rl: Option<RlPhase>,
    /// Held-out evaluation on the recipe's built-in task.
    pub eval: Option<EvalSpec>,
}

/// Held-out accuracy on the recipe's built-in task (problems never drawn for training):
/// greedy exact match, and optionally pass@1 of sampling at temperature 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// Held-out problems.
    #[serde(default = "default_eval_problems")]
    pub problems: usize,
    /// Evaluate every this many steps of a phase (0: only when a phase ends).
    #[serde(default)]
    pub every: u64,
    /// Samples per problem for the sampled pass@1 (0: greedy only).
    #[serde(default)]
    pub samples: usize,
}

fn default_eval_problems() -> usize {
    200
}

fn default_save_every() -> u64 {
    50
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSource {
    pub path: Option<PathBuf>,
    pub demo_hidden: Option<usize>,
    /// How the frozen base is held with `[lora]` (auto: as stored); full fine-tuning is f32.
    pub dtype: Option<WeightDtype>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftPhase {
    pub data: Option<PathBuf>,
    pub task: Option<String>,
    /// Built-in task problems for a real tokenizer go through the chat template.
    #[serde(default)]
    pub chat: bool,
    pub steps: u64,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "one")]
    pub grad_accum: usize,
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    #[serde(default)]
    pub packing: bool,
    /// With `task`: draw this many problems once and train on them (scarce
    /// demonstrations); absent: fresh problems every step (demo vocabulary) or a pool of
    /// 2,048 (a real tokenizer).
    pub pool: Option<usize>,
    pub schedule: LrSchedule,
}

fn default_batch() -> usize {
    16
}
fn one() -> usize {
    1
}
fn default_max_len() -> usize {
    512
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlPhase {
    pub prompts: Option<PathBuf>,
    pub task: Option<String>,
    #[serde(default)]
    pub chat: bool,
    pub steps: u64,
    /// Start RL with fresh AdamW moments instead of SFT's (as a separate TRL run would).
    #[serde(default)]
    pub reset_optimizer: bool,
    pub schedule: LrSchedule,
    pub rewards: Vec<RewardSpec>,
    #[serde(default)]
    pub sampling: RlConfig,
    pub objective: Option<RlObjective>,
}

/// One reward function of a recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum RewardSpec {
    ExactMatch {
        #[serde(default = "unit")]
        weight: f64,
    },
    Accuracy {
        #[serde(default = "unit")]
        weight: f64,
    },
    Format {
        #[serde(default = "unit")]
        weight: f64,
    },
    /// Graded exact match on the demo vocabulary: the fraction of answer positions
    /// (`<eos>` included) the completion gets right, over the longer of the two.
    Partial {
        #[serde(default = "unit")]
        weight: f64,
    },
    Length {
        #[serde(default = "unit")]
        weight: f64,
        max_len: usize,
        cache: usize,
    },
    /// The model grades itself: the score written at the end of the completion
    /// ("Score: 0.8"), divided by `scale`; `calibrated` rewards a correct answer plus an
    /// honest score (needs reference answers).
    SelfScore {
        #[serde(default = "unit")]
        weight: f64,
        #[serde(default = "unit")]
        scale: f64,
        #[serde(default)]
        calibrated: bool,
    },
    /// VeriFree: the policy's likelihood of the reference answer after its own reasoning
    /// (needs reference answers).
    Likelihood {
        #[serde(default = "unit")]
        weight: f64,
        #[serde(default)]
        mode: LikelihoodMode,
    },
    /// DeepSeekMath-V2 self-verification: the policy, prompted as a verifier, grades each
    /// completion `verifier_samples` times; each grading is meta-verified by the policy and
    /// kept when its meta-score is ≥ `meta_threshold`; the reward is
    /// `0.76·score + 0.24·(honesty of the completion's own self-score)` (no reference needed).
    SelfVerify {
        #[serde(default = "unit")]
        weight: f64,
        #[serde(default = "default_verifier_samples")]
        verifier_samples: usize,
        #[serde(default = "half")]
        meta_threshold: f64,
        /// `mean` or `min` of the kept scores.
        #[serde(default)]
        aggregate: VerifyAggregate,
        /// Longest verifier / meta-verifier output.
        #[serde(default = "default_verify_tokens")]
        max_new_tokens: usize,
        /// Their sampling temperature.
        #[serde(default = "unit")]
        temperature: f64,
    },
    /// NOVER: reasoning rewarded by how well it lets a lagged copy of the policy (synced
    /// every `sync_every` RL steps) predict the reference answer (needs reference answers).
    Nover {
        #[serde(default = "unit")]
        weight: f64,
        #[serde(default = "default_sync")]
        sync_every: usize,
    },
    /// A reward the host program registers under `name` before the RL phase: in the browser,
    /// a JavaScript function (`session.setReward(name, fn)`); native programs use `command`.
    User {
        #[serde(default = "unit")]
        weight: f64,
        name: String,
    },
    /// A user program scoring completions over JSON lines (see `rl::rewards::command`).
    Command {
        #[serde(default = "unit")]
        weight: f64,
        /// Program and arguments, e.g. `["python3", "verify.py"]`, run in the recipe's
        /// folder.
        command: Vec<String>,
        /// The reward's name in metrics (default `command`).
        name: Option<String>,
        /// Seconds to wait for each answer.
        #[serde(default = "default_timeout")]
        timeout_s: f64,
    },
}

/// How a self-verification reward combines its kept verifier scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyAggregate {
    #[default]
    Mean,
    /// The lowest kept score (the paper's conservative labelling).
    Min,
}

fn default_verifier_samples() -> usize {
    4
}
fn half() -> f64 {
    0.5
}
fn default_verify_tokens() -> usize {
    512
}

fn default_timeout() -> f64 {
    60.0
}
fn default_sync() -> usize {
    100
}

fn unit() -> f64 {
    1.0
}

impl RewardSpec {
    /// The reward's weight in the sum.
    pub fn weight(&self) -> f64 {
        match *self {
            Self::ExactMatch { weight }
            | Self::Accuracy { weight }
            | Self::Format { weight }
            | Self::Partial { weight }
            | Self::Length { weight, .. }
            | Self::SelfScore { weight, .. }
            | Self::Likelihood { weight, .. }
            | Self::SelfVerify { weight, .. }
            | Self::Nover { weight, .. }
            | Self::User { weight, .. }
            | Self::Command { weight, .. } => weight,
        }
    }

    /// Checks the weight (finite) and each kind's own fields.
    fn validate(&self) -> Checked {
        match *self {
            Self::SelfScore { weight, scale, .. } => {
                finite("weight", weight)?;
                crate::check::positive("scale", scale)
            }
            Self::Likelihood { weight, .. } => finite("weight", weight),
            Self::User { weight, ref name } => {
                finite("weight", weight)?;
                if name.trim().is_empty() {
                    return Err("a user reward needs a `name`".into());
                }
                Ok(())
            }
            Self::SelfVerify {
                weight,
                verifier_samples,
                meta_threshold,
                max_new_tokens,
                temperature,
                ..
            } => {
                finite("weight", weight)?;
                crate::check::closed("meta_threshold", meta_threshold, 0.0, 1.0)?;
                crate::check::positive("temperature", temperature)?;
                if verifier_samples == 0 || max_new_tokens == 0 {
                    return Err("`verifier_samples` and `max_new_tokens` must be positive".into());
                }
                Ok(())
            }
            Self::Nover { weight, sync_every } => {
                finite("weight", weight)?;
                if sync_every == 0 {
                    return Err("`sync_every` = 0: must be positive".into());
                }
                Ok(())
            }
            Self::ExactMatch { weight }
            | Self::Accuracy { weight }
            | Self::Format { weight }
            | Self::Partial { weight } => finite("weight", weight),
            Self::Command {
                weight,
                ref command,
                timeout_s,
                ..
            } => {
                finite("weight", weight)?;
                crate::check::open_closed("timeout_s", timeout_s, 0.0, 86_400.0)?;
                if command.is_empty() {
                    return Err("a command reward needs `command = [\"program\", ...]`".into());
                }
                Ok(())
            }
            Self::Length {
                weight,
                max_len,
                cache,
            } => {
                finite("weight", weight)?;
                if max_len == 0 || cache > max_len {
                    return Err(format!(
                        "a length reward needs 0 < cache ≤ max_len, got cache {cache} and \
                         max_len {max_len}"
                    ));
                }
                Ok(())
            }
        }
    }
}

impl Recipe {
    /// Parses and checks a recipe (errors name the field).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let r: Recipe = toml::from_str(text).map_err(|e| e.to_string())?;
        r.validate()?;
        Ok(r)
    }

    /// The recipe, checked as [`Recipe::from_toml`] checks it (e.g. one read back from a
    /// checkpoint).
    pub fn checked(self) -> Result<Self, String> {
        self.validate()?;
        Ok(self)
    }

    /// Checks what serde's types cannot (errors name the section and field).
    fn validate(&self) -> Result<(), String> {
        let r = self;
        match (&r.model.path, r.model.demo_hidden) {
            (Some(_), None) => {}
            (None, Some(h)) => {
                crate::demo::vocab::model_config(h)
                    .map_err(|e| format!("[model] `demo_hidden` = {e}"))?;
            }
            _ => return Err("[model]: give exactly one of `path` or `demo_hidden`".into()),
        }
        if let Some(l) = &r.lora {
            l.validate("[lora]").map_err(|e| e.to_string())?;
            if r.gradient_checkpointing && l.dropout > 0.0 {
                return Err(
                    "gradient_checkpointing with [lora] dropout > 0: the layers run \
                            again in the backward pass and would draw other dropout masks; \
                            set dropout = 0 or gradient_checkpointing = false"
                        .into(),
                );
            }
        } else if r.model.dtype.is_some_and(|d| d != WeightDtype::F32) {
            return Err(
                "[model] dtype: full fine-tuning trains f32 weights; a 16-bit base needs [lora]"
                    .into(),
            );
        }
        within("[optim]", r.optim.validate())?;
        if r.sft.is_none() && r.rl.is_none() {
            return Err("the recipe has neither an [sft] nor an [rl] phase".into());
        }
        if let Some(s) = &r.sft {
            if s.data.is_some() == s.task.is_some() {
                return Err("[sft]: give exactly one of `data` or `task`".into());
            }
            if s.grad_accum > 1024 {
                return Err(format!(
                    "[sft] `grad_accum` = {}: at most 1024",
                    s.grad_accum
                ));
            }
            if s.steps == 0 || s.batch_size == 0 || s.grad_accum == 0 || s.max_len < 2 {
                return Err(
                    "[sft]: steps, batch_size and grad_accum must be positive, max_len ≥ 2".into(),
                );
            }
            within("[sft] schedule:", s.schedule.validate())?;
        }
        if let Some(p) = &r.rl {
            if p.prompts.is_some() == p.task.is_some() {
                return Err("[rl]: give exactly one of `prompts` or `task`".into());
            }
            if p.steps == 0 {
                return Err("[rl]: steps must be positive".into());
            }
            if p.rewards.is_empty() {
                return Err("[rl]: at least one reward is needed".into());
            }
            // 0 new tokens means the task's answer length (checked in validate_task_parts).
            let mut sampling = p.sampling.clone();
            sampling.max_new_tokens = sampling.max_new_tokens.max(1);
            sampling
                .validate()
                .map_err(|e| format!("[rl.sampling]: {e}"))?;
            within("[rl] schedule:", p.schedule.validate())?;
            if let Some(o) = &p.objective {
                within("[rl.objective]", o.validate())?;
            }
            for (i, reward) in p.rewards.iter().enumerate() {
                within(&format!("[rl] rewards[{i}]:"), reward.validate())?;
            }
        }
        r.validate_task_parts()?;
        if r.save_every == 0 {
            return Err("save_every must be positive".into());
        }
        Ok(())
    }

    /// The built-in task named by `[sft]` or `[rl]` (RL's when both name one).
    pub fn task(&self) -> Option<&str> {
        let rl = self.rl.as_ref().and_then(|r| r.task.as_deref());
        rl.or_else(|| self.sft.as_ref().and_then(|s| s.task.as_deref()))
    }

    /// Tasks parse; `[eval]` needs a task; the `partial` reward and a zero
    /// `max_new_tokens` (the task's answer length) need the demo vocabulary's task.
    fn validate_task_parts(&self) -> Result<(), String> {
        for (section, t) in [
            ("[sft]", self.sft.as_ref().and_then(|s| s.task.as_ref())),
            ("[rl]", self.rl.as_ref().and_then(|r| r.task.as_ref())),
        ] {
            if let Some(t) = t {
                t.parse::<crate::demo::Task>()
                    .map_err(|e| format!("{section} `task` = {e}"))?;
            }
        }
        if let Some(s) = &self.sft {
            if s.pool.is_some() && s.task.is_none() {
                return Err("[sft] `pool` draws problems of a `task`; this phase has none".into());
            }
            if let Some(n) = s.pool.filter(|n| !(1..=1_000_000).contains(n)) {
                return Err(format!("[sft] `pool` = {n}: must be 1 to 1,000,000"));
            }
        }
        if let Some(e) = &self.eval {
            if self.task().is_none() {
                return Err("[eval]: held-out evaluation needs a `task` in [sft] or [rl]".into());
            }
            if e.problems == 0 {
                return Err("[eval] `problems` = 0: must be positive".into());
            }
        }
        let demo_task = self.model.demo_hidden.is_some() && self.task().is_some();
        if let Some(rl) = &self.rl {
            let partial = rl
                .rewards
                .iter()
                .any(|r| matches!(r, RewardSpec::Partial { .. }));
            if partial && !demo_task {
                return Err(
                    "[rl] rewards: `partial` grades the demo vocabulary's answer \
                            positions; it needs [model] `demo_hidden` and a `task`"
                        .into(),
                );
            }
            if rl.sampling.max_new_tokens == 0 && !(demo_task && rl.task.is_some()) {
                return Err(
                    "[rl.sampling] `max_new_tokens` = 0 (the task's answer length) \
                            needs [model] `demo_hidden` and an [rl] `task`"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// Applies the command line's overrides: the model folder, each phase's step count and
    /// the output folder (then re-validates).
    pub fn with_overrides(
        mut self,
        model: Option<PathBuf>,
        steps: Option<u64>,
        out: Option<PathBuf>,
    ) -> Result<Self, String> {
        if let Some(m) = model {
            self.model.path = Some(m);
            self.model.demo_hidden = None;
        }
        if let Some(n) = steps {
            if let Some(s) = &mut self.sft {
                s.steps = n;
            }
            if let Some(r) = &mut self.rl {
                r.steps = n;
            }
        }
        if let Some(o) = out {
            self.out = o;
        }
        self.validate()?;
        Ok(self)
    }

    /// Total steps over both phases.
    pub fn total_steps(&self) -> u64 {
        self.sft.as_ref().map_or(0, |s| s.steps) + self.rl.as_ref().map_or(0, |r| r.steps)
    }

    /// The fields where `stored` (a recipe as saved with a checkpoint) and this recipe
    /// differ, as `field: stored → now`; `out` is not compared.
    pub fn differences(&self, stored: &Value) -> Vec<String> {
        let mut now = serde_json::to_value(self).unwrap_or(Value::Null);
        let mut stored = stored.clone();
        for v in [&mut now, &mut stored] {
            if let Some(o) = v.as_object_mut() {
                o.remove("out");
            }
        }
        value_diff("", &stored, &now)
    }
}

/// The recipe format, every field documented: `recipes/reference.toml` (itself a valid
/// recipe).
pub const RECIPE_HELP: &str = include_str!("../../../recipes/reference.toml");

/// The fields where `a` and `b` differ, as `path: a → b` (missing values print as `-`).
fn value_diff(path: &str, a: &Value, b: &Value) -> Vec<String> {
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
                    value_diff(&p, x.get(k).unwrap_or(&none), y.get(k).unwrap_or(&none))
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

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
seed = 3
out = "runs/x"
save_every = 5
[model]
demo_hidden = 32
[optim]
weight_decay = 0.0
[lora]
r = 4
alpha = 8.0
target_modules = ["q_proj", "v_proj"]
[sft]
task = "sort"
steps = 10
schedule = { kind = "warmup_cosine", peak_lr = 1e-2, min_lr = 1e-3, warmup_steps = 2, total_steps = 10 }
[rl]
task = "sort"
steps = 4
schedule = { kind = "constant", lr = 5e-4 }
rewards = [{ kind = "exact_match" }, { kind = "length", weight = 0.5, max_len = 8, cache = 2 }]
[rl.sampling]
preset = "dapo"
group_size = 4
[rl.objective.loss]
epsilon_high = 0.3
"#;

    #[test]
    fn reference_recipe_parses() {
        let r = Recipe::from_toml(RECIPE_HELP).unwrap();
        assert_eq!(r.total_steps(), 120);
        assert_eq!(
            r.rl.unwrap().sampling.preset,
            Some(crate::rl::presets::Preset::Grpo)
        );
    }

    #[test]
    fn full_recipe_parses() {
        let r = Recipe::from_toml(FULL).unwrap();
        assert_eq!(r.seed, 3);
        assert_eq!(r.total_steps(), 14);
        let rl = r.rl.unwrap();
        assert_eq!(rl.sampling.group_size, 4);
        assert_eq!(rl.sampling.preset, Some(crate::rl::presets::Preset::Dapo));
        assert_eq!(rl.objective.unwrap().loss.epsilon_high, 0.3);
        assert_eq!(rl.rewards.len(), 2);
        assert_eq!(r.optim.weight_decay, 0.0);
        assert_eq!(r.lora.unwrap().r, 4);
    }

    #[test]
    fn overrides_replace_model_steps_and_out() {
        let r = Recipe::from_toml(FULL)
            .unwrap()
            .with_overrides(Some("m".into()), Some(5), Some("o".into()))
            .unwrap();
        assert_eq!(r.model.path, Some(PathBuf::from("m")));
        assert_eq!(r.model.demo_hidden, None);
        assert_eq!(r.total_steps(), 10);
        assert_eq!(r.out, PathBuf::from("o"));
    }

    #[test]
    fn checkpointing_is_refused_with_lora_dropout() {
        let on = FULL.replacen("seed = 3", "seed = 3\ngradient_checkpointing = true", 1);
        assert!(Recipe::from_toml(&on).unwrap().gradient_checkpointing);
        let e = Recipe::from_toml(&on.replacen("r = 4", "r = 4\ndropout = 0.1", 1)).unwrap_err();
        assert!(
            e.contains("gradient_checkpointing") && e.contains("dropout"),
            "{e}"
        );
    }

    #[test]
    fn shipped_recipes_parse() {
        for text in [
            include_str!("../../../recipes/lora-sft.toml"),
            include_str!("../../../recipes/lora-grpo.toml"),
        ] {
            let r = Recipe::from_toml(text).unwrap();
            assert!(r.lora.is_some() && r.model.path.is_some());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 256,
            rng_seed: proptest::test_runner::RngSeed::Fixed(17),
            failure_persistence: None,
            ..Default::default()
        })]

        /// Fuzzing: a recipe with a few characters replaced (or cut short) parses or is an
        /// error, never a panic.
        #[test]
        fn mangled_recipes_never_panic(
            edits in proptest::collection::vec(
                (proptest::sample::select((0..FULL.len()).collect::<Vec<_>>()), 0x20u8..0x7f),
                1..6,
            ),
            cut in 0..FULL.len(),
            truncate in proptest::bool::ANY,
        ) {
            let mut bytes = FULL.as_bytes().to_vec();
            for (at, b) in edits {
                bytes[at] = b;
            }
            if truncate {
                bytes.truncate(cut);
            }
            let text = String::from_utf8(bytes).expect("ASCII edits of an ASCII recipe");
            if let Ok(r) = Recipe::from_toml(&text) {
                let _ = r.total_steps();
            }
        }
    }

    #[test]
    fn bad_recipes_name_the_problem() {
        for (patch, want) in [
            ("demo_hidden = 32", "demo_hidden = 32\npath = \"x\""),
            ("group_size = 4", "group_size = 1"),
            ("steps = 4", "steps = 0"),
            ("seed = 3", "seed = 3\nbogus = 1"),
            ("preset = \"dapo\"", "preset = \"ppo\""),
            ("r = 4", "r = 0"),
            ("alpha = 8.0", "alpha = -1.0"),
            ("r = 4", "r = 4\nbogus = 1"),
            ("demo_hidden = 32", "demo_hidden = 32\ndtype = \"int4\""),
            ("demo_hidden = 32", "demo_hidden = 30"),
            ("demo_hidden = 32", "demo_hidden = 0"),
            ("weight_decay = 0.0", "weight_decay = nan"),
            ("weight_decay = 0.0", "weight_decay = 0.0\nbeta1 = 1.0"),
            ("weight_decay = 0.0", "weight_decay = 0.0\neps = -1e-8"),
            (
                "weight_decay = 0.0",
                "weight_decay = 0.0\nmax_grad_norm = -1.0",
            ),
            ("peak_lr = 1e-2", "peak_lr = nan"),
            ("peak_lr = 1e-2", "peak_lr = inf"),
            ("lr = 5e-4", "lr = -5e-4"),
            ("epsilon_high = 0.3", "epsilon_high = 0.3\nkl_coef = -0.1"),
            ("epsilon_high = 0.3", "epsilon_high = nan"),
            ("group_size = 4", "group_size = 4\ntop_p = 0.0"),
            ("group_size = 4", "group_size = 4\ntop_p = 1.5"),
            ("weight = 0.5, max_len = 8", "weight = nan, max_len = 8"),
            ("max_len = 8, cache = 2", "max_len = 0, cache = 0"),
            ("steps = 10", "steps = 10\ngrad_accum = 2000"),
            ("steps = 10", "steps = 10\npool = 2000000"),
        ] {
            let text = FULL.replacen(patch, want, 1);
            let e = Recipe::from_toml(&text).expect_err(want);
            // The message names the field that was set wrong.
            let last = want.lines().last().unwrap_or(want);
            let key = last.split([' ', '=']).next().unwrap_or(last);
            assert!(e.contains(key), "{want}: {e}");
        }
        let e =
            Recipe::from_toml(&FULL.replacen("seed = 3", "seed = 3\nbogus = 1", 1)).unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = Recipe::from_toml(&FULL.replacen("preset = \"dapo\"", "preset = \"ppo\"", 1))
            .unwrap_err();
        assert!(e.contains("ppo"), "{e}");
    }

    #[test]
    fn the_demo_recipe_is_the_demo_defaults() {
        let file = Recipe::from_toml(include_str!("../../../recipes/demo.toml")).unwrap();
        let made = crate::demo::DemoConfig::default().recipe().unwrap();
        assert_eq!(file, made);
    }

    #[test]
    fn task_parts_are_checked() {
        let with_model_path = FULL.replacen("demo_hidden = 32", "path = \"m\"", 1);
        for (text, want) in [
            (
                FULL.replacen("{ kind = \"exact_match\" }", "{ kind = \"partial\" }", 1),
                None,
            ),
            (
                with_model_path.replacen("{ kind = \"exact_match\" }", "{ kind = \"partial\" }", 1),
                Some("partial"),
            ),
            (format!("{FULL}\n[eval]\nproblems = 0\n"), Some("problems")),
            (
                FULL.replacen(
                    "task = \"sort\"\nsteps = 10",
                    "task = \"sort\"\npool = 0\nsteps = 10",
                    1,
                ),
                Some("pool"),
            ),
            (
                FULL.replacen("group_size = 4", "group_size = 4\nmax_new_tokens = 0", 1),
                None,
            ),
            (
                with_model_path.replacen("group_size = 4", "group_size = 4\nmax_new_tokens = 0", 1),
                Some("max_new_tokens"),
            ),
            (
                FULL.replacen("task = \"sort\"", "task = \"juggle\"", 1),
                Some("[sft] `task`"),
            ),
        ] {
            match (Recipe::from_toml(&text), want) {
                (Ok(_), None) => {}
                (Err(e), Some(w)) => assert!(e.contains(w), "{w}: {e}"),
                (r, w) => panic!("{w:?}: {r:?}"),
            }
        }
        let no_task = FULL
            .replacen("task = \"sort\"", "data = \"d.jsonl\"", 1)
            .replacen("task = \"sort\"", "prompts = \"p.jsonl\"", 1);
        let e = Recipe::from_toml(&format!("{no_task}\n[eval]\n")).unwrap_err();
        assert!(e.contains("[eval]"), "{e}");
    }
}
