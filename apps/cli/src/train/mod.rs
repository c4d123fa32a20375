//! `sluice train` and `sluice demo`: recipes, progress, metrics and plots.

pub mod plot;
