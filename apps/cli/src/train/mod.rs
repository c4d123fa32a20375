//! `sluice train` and `sluice demo`: recipes, progress, metrics and plots.

pub mod demo;
pub mod metrics;
pub mod plot;
pub mod run;
