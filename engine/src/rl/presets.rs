//! Named recipes: one choice per axis (advantage, loss, shaping, KL placement).
//!
//! | preset | mirrors | advantage | loss |
//! |---|---|---|---|
//! | `grpo` | TRL loss_type "grpo", β = 0.04 (DeepSeekMath) | group-normalised, eps 1e-4 | token ratio, ε 0.2, k3 KL in the loss (IS-corrected), seq-mean-token-mean |
//! | `dr_grpo` | TRL "dr_grpo", scale_rewards "none" | group mean only | seq-mean-token-sum-norm (÷ padded T or max_completion_length), no KL |
//! | `dapo` | TRL "dapo", epsilon_high 0.28, mask_truncated_completions | group-normalised | clip-higher 0.2/0.28, token-mean over the global batch; dynamic sampling, soft overlong penalty, truncation masking |
//! | `gspo` | TRL importance_sampling_level "sequence", ε 3e-4/4e-4 | group-normalised | GSPO-token ratio (verl `gspo`; equal to TRL's sequence ratio for TRL's per-sequence advantages, and per-token where advantages vary), seq-mean-token-mean |
//! | `gmpo` | verl loss_mode "geo_mean", clip 0.4 (GMPO paper) | verl grpo (eps 1e-6) | geometric-mean ratio, per-token log-space clip |
//! | `reinforce_pp` | verl adv_estimator "reinforce_plus_plus", use_kl_in_reward (k1, β 0.001) | token returns, batch whitening | verl vanilla (dual clip 3, ±20 clamp), token-mean |
//! | `reinforce_pp_baseline` | verl "reinforce_plus_plus_baseline", use_kl_loss k2 (mse) β 0.001 | group mean, batch whitening | verl vanilla + k2 KL in the loss |
//! | `rloo` | verl "rloo", KL in the reward (k1, β 0.001) | leave-one-out | verl vanilla |
//! | `gtpo` | GRPO without KL + GTPO (Simoni et al.; Tan et al.) shaping | group-normalised | token ratio, seq-mean-token-mean, conflict-token weights, entropy-shaped token rewards |
//! | `remax` | verl adv_estimator "remax" (Li et al. 2023) | reward − the greedy completion's reward | verl vanilla, no KL |
//! | `gpg` | verl adv_estimator "gpg" + loss_mode "gpg" (Chu et al. 2025) | α-scaled group mean baseline | −A·lp, token-mean, no KL |
//! | `pass_at_k` | verl adv_estimator "grpo_passk" (Chen et al. 2025) | best member's margin over the second, ÷ std | verl vanilla, no KL |

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::advantage::{AdvantageConfig, Estimator, Singletons, StdScale};
use super::error::RlError;
use super::kl::{KlController, KlEstimator, KlPenalty};
use super::loss::{Aggregation, EntropyAggregation, LossConfig, RatioLevel, RowConvention};
use super::shaping::{GtpoEntropyConfig, OverlongConfig, ShapingConfig};
use super::surrogate::Surrogate;

/// A named recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Preset {
    Grpo,
    DrGrpo,
    Dapo,
    Gspo,
    Gmpo,
    ReinforcePp,
    ReinforcePpBaseline,
    Rloo,
    Gtpo,
    Remax,
    Gpg,
    PassAtK,
}

/// Where the KL to the reference model goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KlPlacement {
    /// No KL term (no reference model needed).
    None,
    /// In the loss: `LossConfig::kl_coef`, `kl_estimator` (GRPO).
    #[default]
    Loss,
    /// Subtracted from the token rewards before the advantage (Reinforce++ style):
    /// `kl::apply_kl_in_reward` with `RlObjective::reward_kl`.
    Reward,
}

/// The KL term in the reward: estimator (verl `algorithm.kl_penalty`) and β controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardKlConfig {
    pub penalty: KlPenalty,
    pub controller: KlController,
}

impl Default for RewardKlConfig {
    /// verl defaults: kl_penalty "kl" (k1), fixed β = 0.001.
    fn default() -> Self {
        Self {
            penalty: KlPenalty::new(KlEstimator::K1),
            controller: KlController::Fixed { coef: 0.001 },
        }
    }
}

/// A full RL objective: one choice per axis. Deserialisable from a recipe (unknown fields are
/// errors; missing fields take the `grpo` preset's values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RlObjective {
    pub advantage: AdvantageConfig,
    pub loss: LossConfig,
    pub shaping: ShapingConfig,
    pub kl_placement: KlPlacement,
    /// Used when `kl_placement` is `reward`.
    pub reward_kl: RewardKlConfig,
}

impl Default for RlObjective {
    fn default() -> Self {
        Preset::Grpo.objective()
    }
}

impl RlObjective {
    /// Checks every number of the objective; errors name the sub-table and the field
    /// (`loss.kl_coef`, ...).
    pub fn validate(&self) -> crate::check::Checked {
        use crate::check::{closed, non_negative, open_closed, positive, within};
        let a = &self.advantage;
        within("advantage", non_negative("eps", a.eps))?;
        within("advantage", closed("gamma", a.gamma, 0.0, 1.0))?;
        let l = &self.loss;
        within("loss", non_negative("epsilon_low", l.epsilon_low))?;
        within("loss", non_negative("epsilon_high", l.epsilon_high))?;
        within("loss", non_negative("kl_coef", l.kl_coef))?;
        within("loss", crate::check::finite("entropy_coef", l.entropy_coef))?;
        l.validate().map_err(|e| format!("loss {e}"))?;
        let s = &self.shaping;
        within(
            "shaping",
            open_closed("top_entropy_quantile", s.top_entropy_quantile, 0.0, 1.0),
        )?;
        if let Some(w) = s.conflict_positive_weight {
            within("shaping", non_negative("conflict_positive_weight", w))?;
        }
        if let Some(o) = &s.overlong {
            within("shaping.overlong", non_negative("factor", o.factor))?;
            if o.max_len == 0 || o.cache_len > o.max_len {
                return Err(format!(
                    "shaping.overlong: need 0 < cache_len ≤ max_len, got cache_len {} and \
                     max_len {}",
                    o.cache_len, o.max_len
                ));
            }
        }
        if let Some(g) = &s.gtpo_entropy {
            within(
                "shaping.gtpo_entropy",
                crate::check::finite("alpha1", g.alpha1),
            )?;
            within(
                "shaping.gtpo_entropy",
                crate::check::finite("alpha2", g.alpha2),
            )?;
        }
        match self.reward_kl.controller {
            KlController::Fixed { coef } => {
                within("reward_kl.controller", non_negative("coef", coef))
            }
            KlController::Adaptive {
                coef,
                target_kl,
                horizon,
            } => {
                within("reward_kl.controller", non_negative("coef", coef))?;
                within("reward_kl.controller", positive("target_kl", target_kl))?;
                within("reward_kl.controller", positive("horizon", horizon))
            }
        }
    }
}

impl Preset {
    /// Every preset, in documentation order.
    pub const ALL: [Preset; 12] = [
        Preset::Grpo,
        Preset::DrGrpo,
        Preset::Dapo,
        Preset::Gspo,
        Preset::Gmpo,
        Preset::ReinforcePp,
        Preset::ReinforcePpBaseline,
        Preset::Rloo,
        Preset::Gtpo,
        Preset::Remax,
        Preset::Gpg,
        Preset::PassAtK,
    ];

    /// The recipe name (`grpo`, `dr_grpo`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Preset::Grpo => "grpo",
            Preset::DrGrpo => "dr_grpo",
            Preset::Dapo => "dapo",
            Preset::Gspo => "gspo",
            Preset::Gmpo => "gmpo",
            Preset::ReinforcePp => "reinforce_pp",
            Preset::ReinforcePpBaseline => "reinforce_pp_baseline",
            Preset::Rloo => "rloo",
            Preset::Gtpo => "gtpo",
            Preset::Remax => "remax",
            Preset::Gpg => "gpg",
            Preset::PassAtK => "pass_at_k",
        }
    }

    /// The full objective of this recipe.
    pub fn objective(self) -> RlObjective {
        let trl_adv = AdvantageConfig::default();
        let verl_adv = |estimator| AdvantageConfig {
            estimator,
            scale: StdScale::Group,
            eps: 1e-6,
            singletons: Singletons::RawScore,
            gamma: 1.0,
        };
        let trl_grpo_loss = LossConfig {
            aggregation: Aggregation::SeqMeanTokenMean,
            ..LossConfig::default()
        };
        let verl_vanilla = LossConfig {
            ratio_level: RatioLevel::Token,
            epsilon_low: 0.2,
            epsilon_high: 0.2,
            dual_clip: Some(3.0),
            delta: None,
            log_ratio_clamp: Some(20.0),
            kl_coef: 0.0,
            kl_estimator: KlPenalty::new(KlEstimator::LowVarKl),
            kl_is_correction: false,
            entropy_coef: 0.0,
            entropy_aggregation: EntropyAggregation::Loss,
            aggregation: Aggregation::TokenMean,
            norm_divisor: None,
            row_convention: RowConvention::Verl,
            surrogate: Surrogate::Clip,
        };
        let base = RlObjective {
            advantage: trl_adv.clone(),
            loss: trl_grpo_loss.clone(),
            shaping: ShapingConfig::default(),
            kl_placement: KlPlacement::None,
            reward_kl: RewardKlConfig::default(),
        };
        match self {
            Preset::Grpo => RlObjective {
                loss: LossConfig {
                    kl_coef: 0.04,
                    ..trl_grpo_loss
                },
                kl_placement: KlPlacement::Loss,
                ..base
            },
            Preset::DrGrpo => RlObjective {
                advantage: AdvantageConfig {
                    estimator: Estimator::DrGrpo,
                    scale: StdScale::None,
                    ..trl_adv
                },
                loss: LossConfig {
                    aggregation: Aggregation::SeqMeanTokenSumNorm,
                    ..LossConfig::default()
                },
                ..base
            },
            Preset::Dapo => RlObjective {
                loss: LossConfig {
                    epsilon_high: 0.28,
                    aggregation: Aggregation::TokenMean,
                    ..LossConfig::default()
                },
                shaping: ShapingConfig {
                    dynamic_sampling: true,
                    overlong: Some(OverlongConfig::default()),
                    mask_truncated: true,
                    ..ShapingConfig::default()
                },
                ..base
            },
            Preset::Gspo => RlObjective {
                loss: LossConfig {
                    ratio_level: RatioLevel::SequenceToken,
                    epsilon_low: 3e-4,
                    epsilon_high: 4e-4,
                    ..trl_grpo_loss
                },
                ..base
            },
            Preset::Gmpo => RlObjective {
                advantage: verl_adv(Estimator::Grpo),
                loss: LossConfig {
                    ratio_level: RatioLevel::GeoMean,
                    epsilon_low: 0.4,
                    epsilon_high: 0.4,
                    dual_clip: None,
                    log_ratio_clamp: None,
                    ..verl_vanilla
                },
                ..base
            },
            Preset::ReinforcePp => RlObjective {
                advantage: verl_adv(Estimator::ReinforcePp),
                loss: verl_vanilla,
                kl_placement: KlPlacement::Reward,
                ..base
            },
            Preset::ReinforcePpBaseline => RlObjective {
                advantage: verl_adv(Estimator::ReinforcePpBaseline),
                loss: LossConfig {
                    kl_coef: 0.001,
                    kl_estimator: KlPenalty::new(KlEstimator::K2),
                    ..verl_vanilla
                },
                kl_placement: KlPlacement::Loss,
                ..base
            },
            Preset::Rloo => RlObjective {
                advantage: verl_adv(Estimator::Rloo),
                loss: verl_vanilla,
                kl_placement: KlPlacement::Reward,
                ..base
            },
            Preset::Gtpo => RlObjective {
                shaping: ShapingConfig {
                    conflict_positive_weight: Some(1.0),
                    gtpo_entropy: Some(GtpoEntropyConfig::default()),
                    ..ShapingConfig::default()
                },
                ..base
            },
            Preset::Remax => RlObjective {
                advantage: verl_adv(Estimator::Remax),
                loss: verl_vanilla.clone(),
                kl_placement: KlPlacement::None,
                ..base
            },
            Preset::Gpg => RlObjective {
                advantage: verl_adv(Estimator::Gpg),
                loss: LossConfig {
                    surrogate: Surrogate::Gpg,
                    log_ratio_clamp: None,
                    dual_clip: None,
                    ..verl_vanilla.clone()
                },
                kl_placement: KlPlacement::None,
                ..base
            },
            Preset::PassAtK => RlObjective {
                advantage: verl_adv(Estimator::PassAtK),
                loss: verl_vanilla,
                kl_placement: KlPlacement::None,
                ..base
            },
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = RlError;
    fn from_str(s: &str) -> Result<Self, RlError> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| RlError::Unknown {
                kind: "RL preset",
                name: s.to_string(),
                valid: Preset::ALL.map(Preset::name).join(", "),
            })
    }
}

impl TryFrom<String> for Preset {
    type Error = RlError;
    fn try_from(s: String) -> Result<Self, RlError> {
        s.parse()
    }
}

impl From<Preset> for String {
    fn from(p: Preset) -> String {
        p.name().to_string()
    }
}
