//! Training: AdamW with global-norm clipping and gradient accumulation ([`optim`]),
//! learning-rate schedules ([`schedule`]), per-step seeds ([`seeds`]), checkpoints that resume exactly ([`checkpoint`]
//! builds and parses the bytes; `files` writes directories atomically, native only), and
//! supervised fine-tuning data and loss ([`sft`]). Parameters are addressed by the names of
//! [`crate::model::save::named_params`]; models are initialised by [`crate::model::init`].

pub mod checkpoint;
#[cfg(not(target_family = "wasm"))]
pub mod files;
pub mod optim;
pub mod schedule;
pub mod seeds;
pub mod sft;
