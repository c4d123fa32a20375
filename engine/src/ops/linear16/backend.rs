//! Routing of the 16-bit projection into Burn: a backend extension implemented for the CubeCL
//! backend (WGSL kernels on wgpu) and for `Autodiff<Cube>` (the forward kernel plus a custom
//! `Backward` giving the input gradient `dx = dy W`; the 16-bit weight itself is frozen).

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::wgpu::CubeTensor;
use burn::backend::{
    Backend, Cube, backend_extension,
    tensor::{FloatTensor, IntTensor},
};

use super::Half;
use super::kernels;
use super::kernels::Fused;

/// The 16-bit projection on a backend: `x` `[M, K]` f32, `w` `[N, K / 2]` packed words.
#[backend_extension(Cube, Autodiff)]
pub trait Linear16Backend: Backend {
    /// `y = x W^T`, `[M, N]`.
    fn linear16(x: FloatTensor<Self>, w: IntTensor<Self>, half: Half) -> FloatTensor<Self>;

    /// `dy W` for `dy` `[M, N]` -> `[M, K]` (the input-gradient product, as a forward op).
    /// No gradient.
    fn linear16_t(dy: FloatTensor<Self>, w: IntTensor<Self>, half: Half) -> FloatTensor<Self>;

    /// Rows of the vocabulary shard `w` (table rows from `row0`) picked by `ids` `[T]`, as
    /// `[T, H]` f32 with zero rows for ids outside the shard. No gradient (frozen table).
    fn embed16(
        ids: IntTensor<Self>,
        w: IntTensor<Self>,
        half: Half,
        row0: usize,
    ) -> FloatTensor<Self>;

    /// The decode GEMV with a fused prologue / residual (see `linear16_gemv.wgsl`): `x`
    /// `[M, K]`, M <= 8, K % 8 == 0. No gradient (generation path).
    fn linear16_fused(
        x: FloatTensor<Self>,
        w: IntTensor<Self>,
        aux: FloatTensor<Self>,
        res: FloatTensor<Self>,
        spec: Fused,
    ) -> FloatTensor<Self>;
}

impl Linear16Backend for Cube {
    fn linear16(x: CubeTensor, w: CubeTensor, half: Half) -> CubeTensor {
        kernels::forward(x, &w, half)
    }

    fn linear16_t(dy: CubeTensor, w: CubeTensor, half: Half) -> CubeTensor {
        kernels::backward_x(dy, &w, half)
    }

    fn embed16(ids: CubeTensor, w: CubeTensor, half: Half, row0: usize) -> CubeTensor {
        kernels::gather(ids, &w, half, row0)
    }

    fn linear16_fused(
        x: CubeTensor,
        w: CubeTensor,
        aux: CubeTensor,
        res: CubeTensor,
        spec: Fused,
    ) -> CubeTensor {
        kernels::forward_fused(x, &w, aux, res, spec)
    }
}

/// Saved for backward: the weight (shared, not copied) and its format.
#[derive(Debug)]
struct Linear16Backward;

impl Backward<Cube, 1> for Linear16Backward {
    type State = (CubeTensor, Half);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Cube>(&ops.node);
        let (w, half) = ops.state;
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<Cube>(node.id, kernels::backward_x(dy, &w, half));
        }
    }
}

impl<C: CheckpointStrategy> Linear16Backend for Autodiff<Cube, C> {
    fn linear16(x: FloatTensor<Self>, w: IntTensor<Self>, half: Half) -> FloatTensor<Self> {
        match Linear16Backward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = kernels::forward(x.primitive().clone(), &w, half);
                prep.finish((w, half), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(kernels::forward(x.into_primitive(), &w, half)),
        }
    }

    fn linear16_t(dy: FloatTensor<Self>, w: IntTensor<Self>, half: Half) -> FloatTensor<Self> {
        let y = kernels::backward_x(dy.into_primitive(), &w, half);
        <Self as burn::backend::AutodiffBackend>::from_inner(y)
    }

    fn embed16(
        ids: IntTensor<Self>,
        w: IntTensor<Self>,
        half: Half,
        row0: usize,
    ) -> FloatTensor<Self> {
        <Self as burn::backend::AutodiffBackend>::from_inner(kernels::gather(ids, &w, half, row0))
    }

    fn linear16_fused(
        x: FloatTensor<Self>,
        w: IntTensor<Self>,
        aux: FloatTensor<Self>,
        res: FloatTensor<Self>,
        spec: Fused,
    ) -> FloatTensor<Self> {
        let y = kernels::forward_fused(
            x.into_primitive(),
            &w,
            aux.into_primitive(),
            res.into_primitive(),
            spec,
        );
        <Self as burn::backend::AutodiffBackend>::from_inner(y)
    }
}
