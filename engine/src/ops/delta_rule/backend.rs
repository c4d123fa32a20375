//! Routing of the delta-rule op into Burn: a backend extension implemented for the CubeCL
//! backend (WGSL kernels on wgpu) and for `Autodiff<Cube>` (the forward kernels plus a custom
//! `Backward` that runs the backward kernels).
//!
//! Results are packed as one flat tensor `[o (B·T·Hv·dv) | final state (B·Hv·dk·dv)]` so that
//! both outputs flow through one autodiff node; the caller splits it with `narrow`.

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::wgpu::CubeTensor;
use burn::backend::{Backend, Cube, backend_extension, tensor::FloatTensor};

use super::kernels;

/// Compile-time options of the kernels (template constants).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelConfig {
    /// L2-normalise q and k inside the kernels.
    pub l2norm: bool,
    /// q multiplier after normalisation.
    pub scale: f32,
    /// Chunk length of the chunked forward.
    pub chunk: usize,
}

/// The delta-rule op on a backend. Shapes: q, k `[B,T,Hk,dk]`, v `[B,T,Hv,dv]`,
/// g, beta `[B,T,Hv]`, state `[B,Hv,dk,dv]`; all f32 and already validated.
#[backend_extension(Cube, Autodiff)]
pub trait DeltaRuleBackend: Backend {
    /// Chunked forward from `h0`; returns the packed `[o | final state]`.
    fn delta_rule_chunked(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        g: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        config: KernelConfig,
    ) -> FloatTensor<Self>;

    /// One-token step (T = 1) from `state`; returns the packed `[o | new state]`.
    fn delta_rule_decode(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        g: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        state: FloatTensor<Self>,
        config: KernelConfig,
    ) -> FloatTensor<Self>;
}

impl DeltaRuleBackend for Cube {
    fn delta_rule_chunked(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        g: CubeTensor,
        beta: CubeTensor,
        h0: CubeTensor,
        config: KernelConfig,
    ) -> CubeTensor {
        kernels::forward(&kernels::Inputs::new(q, k, v, g, beta, h0), config).packed
    }

    fn delta_rule_decode(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        g: CubeTensor,
        beta: CubeTensor,
        state: CubeTensor,
        config: KernelConfig,
    ) -> CubeTensor {
        kernels::decode(&kernels::Inputs::new(q, k, v, g, beta, state), config)
    }
}

/// Saved for backward: the inputs, the chunk-boundary states and the options.
#[derive(Debug)]
struct DeltaRuleBackward;

impl Backward<Cube, 6> for DeltaRuleBackward {
    type State = (kernels::Inputs, CubeTensor, KernelConfig);

    fn backward(self, ops: Ops<Self::State, 6>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Cube>(&ops.node);
        let (inputs, boundaries, config) = ops.state;
        let g = kernels::backward(&inputs, &boundaries, grad, config);
        let parents = ops.parents;
        for (node, grad) in parents
            .into_iter()
            .zip([g.dq, g.dk, g.dv, g.dg, g.dbeta, g.dh0])
        {
            if let Some(node) = node {
                grads.register::<Cube>(node.id, grad);
            }
        }
    }
}

impl<C: CheckpointStrategy> DeltaRuleBackend for Autodiff<Cube, C> {
    fn delta_rule_chunked(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        g: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        config: KernelConfig,
    ) -> FloatTensor<Self> {
        let nodes = [
            q.node(),
            k.node(),
            v.node(),
            g.node(),
            beta.node(),
            h0.node(),
        ];
        match DeltaRuleBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let inputs = kernels::Inputs::new(
                    q.primitive().clone(),
                    k.primitive().clone(),
                    v.primitive().clone(),
                    g.primitive().clone(),
                    beta.primitive().clone(),
                    h0.primitive().clone(),
                );
                let out = kernels::forward(&inputs, config);
                prep.finish((inputs, out.boundaries, config), out.packed)
            }
            OpsKind::UnTracked(prep) => {
                let inputs = kernels::Inputs::new(
                    q.into_primitive(),
                    k.into_primitive(),
                    v.into_primitive(),
                    g.into_primitive(),
                    beta.into_primitive(),
                    h0.into_primitive(),
                );
                prep.finish(kernels::forward(&inputs, config).packed)
            }
        }
    }

    /// Decode is the generation path: it runs the kernel and records no gradient.
    fn delta_rule_decode(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        g: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        state: FloatTensor<Self>,
        config: KernelConfig,
    ) -> FloatTensor<Self> {
        let inputs = kernels::Inputs::new(
            q.into_primitive(),
            k.into_primitive(),
            v.into_primitive(),
            g.into_primitive(),
            beta.into_primitive(),
            state.into_primitive(),
        );
        <Self as burn::backend::AutodiffBackend>::from_inner(kernels::decode(&inputs, config))
    }
}
