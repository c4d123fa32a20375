//! The recipe's rewards for a run. Rule rewards and user programs live for the whole run;
//! the model-based ones are assembled for each RL step: the reference-answer likelihood
//! (VeriFree) over a snapshot of the policy, NOVER over a lagged proxy copy of the policy
//! synced every `sync_every` steps.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::Device;

use crate::demo::task::partial_credit;
use crate::model::HybridModel;
use crate::model::tokenizer::Tokenizer;
use crate::rl::rewards::likelihood::LikelihoodReward;
use crate::rl::rewards::nover::{NoverConfig, NoverReward, ProxyModel};
use crate::rl::rewards::rule::{
    AccuracyReward, ExactMatchReward, Extractor, FormatMode, FormatReward, LengthReward,
    LengthShape, LengthUnit,
};
use crate::rl::rewards::self_score::{SelfScoreMode, SelfScoreReward};
use crate::rl::rewards::{Borrowed, FnReward, Reward, WeightedRewards};

use super::recipe::{RewardSpec, VerifyAggregate};
use crate::model::generate::{GenerateOptions, Sampling};
use crate::rl::rewards::self_verify::{Aggregate, ModelPolicy, SelfVerifyConfig, SelfVerifyReward};
use crate::rl::rewards::{RewardFuture, Sample};

type Result<T> = std::result::Result<T, String>;

/// The rewards of one run.
pub struct RunRewards {
    specs: Vec<RewardSpec>,
    /// Per spec: the reward when it lives for the whole run.
    fixed: Vec<Option<Box<dyn Reward>>>,
    /// NOVER's proxy policy, made at the first RL step.
    proxy: Option<ProxyModel>,
    /// Rewards the host program registered by name (`kind = "user"`).
    user: BTreeMap<String, Box<dyn Reward>>,
}

impl RunRewards {
    /// Starts the run-long rewards (user programs run in `dir`, the recipe's folder).
    pub fn new(specs: &[RewardSpec], dir: &Path) -> Result<Self> {
        let fixed = specs
            .iter()
            .map(|s| fixed_reward(s, dir))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            specs: specs.to_vec(),
            fixed,
            proxy: None,
            user: BTreeMap::new(),
        })
    }

    /// Registers the host program's reward `name` (replacing one of that name).
    pub fn register(&mut self, name: &str, reward: Box<dyn Reward>) {
        self.user.insert(name.to_string(), reward);
    }

    /// Whether a step needs a snapshot of the policy (the likelihood and self-verification
    /// rewards).
    pub fn needs_snapshot(&self) -> bool {
        (self.specs.iter()).any(|s| {
            matches!(
                s,
                RewardSpec::Likelihood { .. } | RewardSpec::SelfVerify { .. }
            )
        })
    }

    /// Before each RL step: makes or syncs NOVER's proxy from `policy` (one proxy, stepped
    /// once per RL step, whatever the number of NOVER rewards; the first one's `sync_every`).
    pub fn step(&mut self, policy: &HybridModel) {
        let sync_every = self.specs.iter().find_map(|s| match s {
            RewardSpec::Nover { sync_every, .. } => Some(*sync_every),
            _ => None,
        });
        match (&mut self.proxy, sync_every) {
            (_, None) => {}
            (Some(p), Some(_)) => {
                p.step(policy);
            }
            (None, Some(n)) => self.proxy = Some(ProxyModel::new(policy, n)),
        }
    }

    /// The step's rewards in recipe order; `snapshot` is the policy without gradients (for
    /// the likelihood and self-verification rewards) on `device`, `eos` ends its
    /// generations and `seed` seeds them.
    pub fn for_step<'a>(
        &'a self,
        snapshot: Option<&'a HybridModel>,
        tokenizer: Option<&'a Tokenizer>,
        device: &Device,
        eos: &[u32],
        seed: u64,
    ) -> Result<WeightedRewards<'a>> {
        let mut w = WeightedRewards::new();
        for (spec, fixed) in self.specs.iter().zip(&self.fixed) {
            let weight = spec.weight();
            if let Some(r) = fixed {
                w.push(Box::new(Borrowed(r.as_ref())), weight);
                continue;
            }
            if let RewardSpec::User { name, .. } = spec {
                let r = self.user.get(name).ok_or_else(|| {
                    format!(
                        "the recipe's user reward `{name}` is not registered (in the browser: \
                         setReward(\"{name}\", fn); native programs use kind = \"command\")"
                    )
                })?;
                w.push(Box::new(Borrowed(r.as_ref())), weight);
                continue;
            }
            let tok = tokenizer.ok_or("a model-based reward needs the model's tokenizer")?;
            match spec {
                RewardSpec::Likelihood { mode, .. } => {
                    let model = snapshot.ok_or("the likelihood reward needs a policy snapshot")?;
                    let r = LikelihoodReward::new(model, tok, device).with_mode(*mode);
                    w.push(Box::new(r), weight);
                }
                RewardSpec::Nover { .. } => {
                    let proxy = self
                        .proxy
                        .as_ref()
                        .ok_or("NOVER's proxy is made by step()")?;
                    let r = NoverReward::from_proxy(proxy, tok, NoverConfig::default());
                    w.push(Box::new(r), weight);
                }
                RewardSpec::SelfVerify {
                    verifier_samples,
                    meta_threshold,
                    aggregate,
                    max_new_tokens,
                    temperature,
                    ..
                } => {
                    let model = snapshot.ok_or("self-verification needs a policy snapshot")?;
                    let options = GenerateOptions {
                        max_new_tokens: *max_new_tokens,
                        sampling: Sampling {
                            temperature: *temperature as f32,
                            seed,
                            ..Sampling::default()
                        },
                        eos_token_ids: eos.to_vec(),
                    };
                    let config = SelfVerifyConfig {
                        verifier_samples: *verifier_samples,
                        meta_threshold: *meta_threshold,
                        aggregate: match aggregate {
                            VerifyAggregate::Mean => Aggregate::Mean,
                            VerifyAggregate::Min => Aggregate::Min,
                        },
                        ..SelfVerifyConfig::default()
                    };
                    let policy = ModelPolicy::new(model, tok, options, device);
                    w.push(Box::new(SelfVerifying { policy, config }), weight);
                }
                other => {
                    return Err(format!("the reward {other:?} has no per-step form"));
                }
            }
        }
        Ok(w)
    }
}

/// Self-verification with the policy snapshot as verifier and meta-verifier.
struct SelfVerifying<'a> {
    policy: ModelPolicy<'a>,
    config: SelfVerifyConfig,
}

impl Reward for SelfVerifying<'_> {
    fn name(&self) -> &str {
        "self_verify"
    }

    fn score<'s>(&'s self, samples: &'s [Sample]) -> RewardFuture<'s> {
        Box::pin(async move {
            let r = SelfVerifyReward {
                verifier: &self.policy,
                meta_verifier: &self.policy,
                config: self.config.clone(),
            };
            r.score_async(samples).await
        })
    }
}

/// The reward of `spec` when it lives for the whole run (`None` for model-based ones).
fn fixed_reward(spec: &RewardSpec, dir: &Path) -> Result<Option<Box<dyn Reward>>> {
    Ok(Some(match spec {
        RewardSpec::ExactMatch { .. } => Box::new(ExactMatchReward {
            extractor: Extractor::Whole,
            normalize: false,
        }),
        RewardSpec::Accuracy { .. } => Box::new(AccuracyReward::default()),
        RewardSpec::Partial { .. } => Box::new(FnReward::new("partial", partial_credit)),
        RewardSpec::Format { .. } => Box::new(FormatReward {
            mode: FormatMode::Strict,
            think_open_in_prompt: false,
        }),
        RewardSpec::Length { max_len, cache, .. } => Box::new(LengthReward {
            unit: LengthUnit::Tokens,
            shape: LengthShape::SoftOverlong {
                max_len: *max_len,
                cache: *cache,
            },
        }),
        RewardSpec::SelfScore {
            scale, calibrated, ..
        } => Box::new(SelfScoreReward {
            mode: if *calibrated {
                SelfScoreMode::Calibrated {
                    checker: AccuracyReward::default(),
                    answer_weight: 1.0,
                    honesty_weight: 1.0,
                }
            } else {
                SelfScoreMode::Raw
            },
            scale: *scale,
            format_failure: 0.0,
        }),
        RewardSpec::Command {
            command,
            name,
            timeout_s,
            ..
        } => command_reward(command, name.as_deref(), dir, *timeout_s)?,
        RewardSpec::Likelihood { .. }
        | RewardSpec::Nover { .. }
        | RewardSpec::SelfVerify { .. }
        | RewardSpec::User { .. } => return Ok(None),
    }))
}

/// A user program as a reward, started in `dir` (the recipe's folder).
#[cfg(not(target_family = "wasm"))]
fn command_reward(
    command: &[String],
    name: Option<&str>,
    dir: &Path,
    timeout_s: f64,
) -> Result<Box<dyn Reward>> {
    let mut argv = command.to_vec();
    // A relative program path is the recipe folder's; bare names go through PATH.
    if argv[0].contains('/') && Path::new(&argv[0]).is_relative() {
        argv[0] = dir.join(&argv[0]).display().to_string();
    }
    let name = name.unwrap_or("command");
    let r = crate::rl::rewards::command::CommandReward::spawn(name, &argv, dir, timeout_s)?;
    Ok(Box::new(r))
}

/// Browsers run no processes.
#[cfg(target_family = "wasm")]
fn command_reward(
    command: &[String],
    _name: Option<&str>,
    _dir: &Path,
    _timeout_s: f64,
) -> Result<Box<dyn Reward>> {
    Err(format!(
        "the command reward `{}` needs a native program (the CLI or the desktop app); \
         a browser cannot start processes",
        command.join(" ")
    ))
}
