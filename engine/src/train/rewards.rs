//! The recipe's rewards for a run. Rule rewards and user programs live for the whole run;
//! the model-based ones are assembled for each RL step: the reference-answer likelihood
//! (VeriFree) over a snapshot of the policy, NOVER over a lagged proxy copy of the policy
//! synced every `sync_every` steps.

use std::path::Path;

use burn::tensor::Device;

use crate::model::HybridModel;
use crate::model::tokenizer::Tokenizer;
use crate::rl::rewards::likelihood::LikelihoodReward;
use crate::rl::rewards::nover::{NoverConfig, NoverReward, ProxyModel};
use crate::rl::rewards::rule::{
    AccuracyReward, ExactMatchReward, Extractor, FormatMode, FormatReward, LengthReward,
    LengthShape, LengthUnit,
};
use crate::rl::rewards::self_score::{SelfScoreMode, SelfScoreReward};
use crate::rl::rewards::{Borrowed, Reward, WeightedRewards};

use super::recipe::RewardSpec;

type Result<T> = std::result::Result<T, String>;

/// The rewards of one run.
pub struct RunRewards {
    specs: Vec<RewardSpec>,
    /// Per spec: the reward when it lives for the whole run.
    fixed: Vec<Option<Box<dyn Reward>>>,
    /// NOVER's proxy policy, made at the first RL step.
    proxy: Option<ProxyModel>,
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
        })
    }

    /// Whether a step needs a snapshot of the policy (the likelihood reward).
    pub fn needs_snapshot(&self) -> bool {
        (self.specs.iter()).any(|s| matches!(s, RewardSpec::Likelihood { .. }))
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
    /// the likelihood reward) and `device` its device.
    pub fn for_step<'a>(
        &'a self,
        snapshot: Option<&'a HybridModel>,
        tokenizer: Option<&'a Tokenizer>,
        device: &Device,
    ) -> Result<WeightedRewards<'a>> {
        let mut w = WeightedRewards::new();
        for (spec, fixed) in self.specs.iter().zip(&self.fixed) {
            let weight = spec.weight();
            if let Some(r) = fixed {
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
                _ => unreachable!("every other reward lives for the whole run"),
            }
        }
        Ok(w)
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
        RewardSpec::Likelihood { .. } | RewardSpec::Nover { .. } => return Ok(None),
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
