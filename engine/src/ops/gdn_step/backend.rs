//! Routing of the fused Gated DeltaNet decode step into Burn (CubeCL backend and, running the
//! same kernel without recording, `Autodiff<Cube>`).

use burn::backend::TensorMetadata;
use burn::backend::autodiff::{Autodiff, checkpoint::strategy::CheckpointStrategy};
use burn::backend::wgpu::CubeTensor;
use burn::backend::{Backend, Cube, backend_extension, tensor::FloatTensor};

use crate::ops::wgsl::{WgslKernel, contiguous, empty_f32};

const STEP_WGSL: &str = include_str!("../../../../shaders/gated_deltanet_step.wgsl");

/// Sizes and constants of one layer's step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepConfig {
    pub hk: usize,
    pub hv: usize,
    pub dk: usize,
    pub dv: usize,
    /// Conv kernel size.
    pub kc: usize,
    /// Epsilon of the gated RMSNorm.
    pub eps: f32,
}

/// The step on a backend; returns the packed `[o | conv | state]`.
#[backend_extension(Cube, Autodiff)]
pub trait GdnStepBackend: Backend {
    fn gdn_step(
        mixed: FloatTensor<Self>,
        z: FloatTensor<Self>,
        ba: FloatTensor<Self>,
        consts: FloatTensor<Self>,
        conv: FloatTensor<Self>,
        state: FloatTensor<Self>,
        cfg: StepConfig,
    ) -> FloatTensor<Self>;
}

fn launch(t: [CubeTensor; 6], cfg: StepConfig) -> CubeTensor {
    let [mixed, z, ba, consts, conv, state] = t.map(contiguous);
    let b = mixed.shape()[0];
    let c = 2 * cfg.hk * cfg.dk + cfg.hv * cfg.dv;
    let n = b * cfg.hv * cfg.dv + b * cfg.kc * c + b * cfg.hv * cfg.dk * cfg.dv;
    let out = empty_f32(&mixed, [n]);
    let wg = cfg.dk.max(cfg.dv).next_power_of_two() as u32;
    WgslKernel::new("gated_deltanet_step", STEP_WGSL)
        .with("hk", cfg.hk)
        .with("hv", cfg.hv)
        .with("dk", cfg.dk)
        .with("dv", cfg.dv)
        .with("kc", cfg.kc)
        .with("wg", wg)
        .with_f32("eps", cfg.eps)
        .with_f32("scale", (cfg.dk as f32).powf(-0.5))
        .launch(
            wg,
            [cfg.hv as u32, b as u32, 1],
            &[&mixed, &z, &ba, &consts, &conv, &state, &out],
            &[b as u32],
        );
    out
}

impl GdnStepBackend for Cube {
    fn gdn_step(
        mixed: CubeTensor,
        z: CubeTensor,
        ba: CubeTensor,
        consts: CubeTensor,
        conv: CubeTensor,
        state: CubeTensor,
        cfg: StepConfig,
    ) -> CubeTensor {
        launch([mixed, z, ba, consts, conv, state], cfg)
    }
}

impl<C: CheckpointStrategy> GdnStepBackend for Autodiff<Cube, C> {
    fn gdn_step(
        mixed: FloatTensor<Self>,
        z: FloatTensor<Self>,
        ba: FloatTensor<Self>,
        consts: FloatTensor<Self>,
        conv: FloatTensor<Self>,
        state: FloatTensor<Self>,
        cfg: StepConfig,
    ) -> FloatTensor<Self> {
        let t = [mixed, z, ba, consts, conv, state].map(|t| t.into_primitive());
        <Self as burn::backend::AutodiffBackend>::from_inner(launch(t, cfg))
    }
}
