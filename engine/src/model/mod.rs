//! The hybrid model: configuration, weights, layers assembled, cache and generation.

pub mod adapter;
pub mod cache;
pub mod chat;
pub mod config;
pub mod detok;
#[cfg(not(target_family = "wasm"))]
pub mod files;
pub mod generate;
pub mod hybrid;
pub mod init;
pub mod load;
pub mod random;
pub mod recompute;
pub mod save;
pub mod score;
pub mod tensor_file;
pub mod tokenizer;
pub mod weights;

pub use cache::Cache;
pub use config::{Config, ConfigError};
pub use hybrid::HybridModel;
pub use weights::{WeightError, Weights};
