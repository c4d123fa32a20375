//! Sluice in the browser: the engine state behind a WebGPU demo page ([`engine`]), and its
//! wasm-bindgen interface (`Session`, on wasm32 only) that a module Web Worker drives.

pub mod engine;

#[cfg(target_arch = "wasm32")]
mod js_reward;
#[cfg(target_arch = "wasm32")]
mod wasm;
