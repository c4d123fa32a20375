//! Training: supervised fine-tuning (more modules arrive with the optimizer and checkpoints).

pub mod sft;
