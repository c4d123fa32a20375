//! Routing of the gated-attention op into Burn: a backend extension implemented for the
//! CubeCL backend (WGSL kernels on wgpu) and for `Autodiff<Cube>` (the forward kernel plus a
//! custom `Backward` that runs the backward kernels from the saved output and log-sum-exp).

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::wgpu::CubeTensor;
use burn::backend::{Backend, Cube, backend_extension, tensor::FloatTensor};

use super::kernels;

/// Run-time parameters of the kernels (they travel in a small storage buffer, so changing
/// them never recompiles a pipeline).
#[derive(Debug, Clone, PartialEq)]
pub struct KernelParams {
    /// Multiplier of the scores.
    pub scale: f32,
    /// Position of the first query (causal offset): query i sees keys `0..=past_len + i`.
    pub past_len: usize,
    /// Valid time steps of k/v (the buffers may be longer: a KV cache's capacity).
    pub tk: usize,
    /// Per batch row, the visible key range `[start, end)`, `end <= tk`.
    pub ranges: Vec<[u32; 2]>,
    /// Whether subgroup kernels may run (where the adapter has a fixed subgroup size).
    pub subgroups: bool,
}

/// The gated-attention op on a backend. Shapes: q, gate `[B,Tq,Hq,d]`, k, v `[B,Tks,Hkv,d]`
/// (the first `params.tk` time steps valid); all f32 and already validated.
#[backend_extension(Cube, Autodiff)]
pub trait GatedAttentionBackend: Backend {
    /// Flash-style forward; returns the gated output `[B,Tq,Hq,d]`.
    fn gated_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        gate: FloatTensor<Self>,
        params: KernelParams,
    ) -> FloatTensor<Self>;

    /// One query token (Tq = 1) against a KV cache; returns `[B,1,Hq,d]`.
    fn gated_attention_decode(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        gate: FloatTensor<Self>,
        params: KernelParams,
    ) -> FloatTensor<Self>;
}

impl GatedAttentionBackend for Cube {
    fn gated_attention(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        gate: CubeTensor,
        params: KernelParams,
    ) -> CubeTensor {
        kernels::forward(&kernels::Inputs::new(q, k, v, gate), &params).y
    }

    fn gated_attention_decode(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        gate: CubeTensor,
        params: KernelParams,
    ) -> CubeTensor {
        kernels::decode(&kernels::Inputs::new(q, k, v, gate), &params)
    }
}

/// Saved for backward: the inputs, the gated output, the row log-sum-exp and the parameters
/// (O(T) memory: no probability matrix).
#[derive(Debug)]
struct GatedAttentionBackward;

impl Backward<Cube, 4> for GatedAttentionBackward {
    type State = (kernels::Inputs, CubeTensor, CubeTensor, KernelParams);

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Cube>(&ops.node);
        let (inputs, y, lse, params) = ops.state;
        let g = kernels::backward(&inputs, &y, &lse, dy, &params);
        for (node, grad) in ops.parents.into_iter().zip([g.dq, g.dk, g.dv, g.dgate]) {
            if let Some(node) = node {
                grads.register::<Cube>(node.id, grad);
            }
        }
    }
}

impl<C: CheckpointStrategy> GatedAttentionBackend for Autodiff<Cube, C> {
    fn gated_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        gate: FloatTensor<Self>,
        params: KernelParams,
    ) -> FloatTensor<Self> {
        let nodes = [q.node(), k.node(), v.node(), gate.node()];
        match GatedAttentionBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let inputs = kernels::Inputs::new(
                    q.primitive().clone(),
                    k.primitive().clone(),
                    v.primitive().clone(),
                    gate.primitive().clone(),
                );
                let out = kernels::forward(&inputs, &params);
                prep.finish((inputs, out.y.clone(), out.lse, params), out.y)
            }
            OpsKind::UnTracked(prep) => {
                let inputs = kernels::Inputs::new(
                    q.into_primitive(),
                    k.into_primitive(),
                    v.into_primitive(),
                    gate.into_primitive(),
                );
                prep.finish(kernels::forward(&inputs, &params).y)
            }
        }
    }

    /// Decode is the generation path: it runs the kernel and records no gradient.
    fn gated_attention_decode(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        gate: FloatTensor<Self>,
        params: KernelParams,
    ) -> FloatTensor<Self> {
        let inputs = kernels::Inputs::new(
            q.into_primitive(),
            k.into_primitive(),
            v.into_primitive(),
            gate.into_primitive(),
        );
        <Self as burn::backend::AutodiffBackend>::from_inner(kernels::decode(&inputs, &params))
    }
}
