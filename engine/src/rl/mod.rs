//! The GRPO family of RL objectives as plain functions: advantage estimators over host scores
//! (`advantage`), KL estimators and the KL-in-reward controller (`kl`), the clipped policy loss
//! with its aggregation modes (`loss`), sampling filters and token weighting (`shaping`) and the
//! named recipes that pick one choice per axis (`presets`); reward functions behind one trait
//! (`rewards`). Formulas follow TRL 1.16 and verl
//! 0.9.1 (see `shared/reference/GRPO_NOTES.md`); the tests compare against both libraries.

pub mod advantage;
pub mod error;
pub mod kl;
pub mod loss;
pub mod presets;
pub mod rewards;
pub mod shaping;
pub mod step;
pub mod surrogate;
