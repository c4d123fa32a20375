//! The built-in demo task: a tiny hybrid model learns multi-digit addition from scratch, with
//! a character-level tokenizer and a model config embedded here (nothing is downloaded).

pub mod addition;

pub use addition::{Addition, Problem};
