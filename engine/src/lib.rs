//! Sluice: gated hybrid language models (Gated DeltaNet + gated attention) that run and
//! train on any GPU WebGPU reaches, through hand-written WGSL kernels bound into Burn.
//!
//! The crate is platform-neutral: no filesystem or threads in core paths, no blocking
//! readbacks on wasm.

pub mod check;
pub mod demo;
pub mod device;
#[cfg(not(target_family = "wasm"))]
pub mod fs;
pub mod model;
pub mod nn;
pub mod ops;
pub mod rl;
pub mod train;
