//! The built-in demo: a tiny hybrid model learns an embedded task (digit sorting or
//! addition) from scratch with a character-level tokenizer and a model config embedded here
//! (nothing is downloaded) — SFT, then GRPO-family RL with a rule verifier, as a recipe of [`config::DemoConfig`].

pub mod config;
pub mod task;
pub mod vocab;

pub use config::DemoConfig;
pub use task::{Problem, Task};
