//! `sluice train` and `sluice demo`: recipes, progress, metrics and plots.

pub mod command_reward;
pub mod demo;
pub mod metrics;
pub mod plot;
pub mod recipe;
pub mod rewards;
pub mod run;
