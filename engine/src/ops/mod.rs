//! Custom ops: one folder per op, each with its WGSL launches, autodiff backward and a
//! plain-tensor reference used as oracle and as the fallback on backends without WGSL.

pub mod delta_rule;
pub mod gated_attention;
pub mod gdn_step;
pub mod linear16;
pub mod topk;
pub(crate) mod wgsl;

pub use wgsl::launch_count;
