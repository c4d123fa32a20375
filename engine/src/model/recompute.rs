//! Gradient checkpointing, layer by layer: a training forward keeps only the input of each
//! decoder layer (`[B, T, H]`, no graph) and the backward pass runs each layer again, last
//! first, with its graph:
//!
//! ```text
//! forward:   e = embed(ids);  x₀ = sg(e);  x_{l+1} = layer_l(x_l) untracked;  top = leaf(x_L)
//! backward:  g_L = ∂loss/∂top;  for l = L−1 … 0:  S = ⟨layer_l(leaf(x_l)), g_{l+1}⟩,
//!            ∂params_l += ∂S,  g_l = ∂S/∂x_l;   then ∂embed += ∂⟨e, g₀⟩
//! ```
//!
//! Activation memory is one layer's graph plus L layer inputs, for one extra forward pass.
//! A layer must compute the same function twice: LoRA dropout (a fresh random mask per call)
//! is refused with checkpointing by the recipe check.

use burn::module::Module;
use burn::tensor::{Gradients, Int, Tensor};

use super::hybrid::HybridModel;
use crate::nn::attention::AttentionContext;
use crate::nn::norm::rms_norm;
use crate::train::optim::Grads;

/// What a checkpointed forward kept for its backward pass.
#[derive(Debug, Clone)]
pub struct Recompute {
    /// The embedding output `[B, T, H]`, with its graph (the embedding's own gradient).
    embedded: Tensor<3>,
    /// The input of each layer, no graph.
    inputs: Vec<Tensor<3>>,
    /// The last layer's output as a graph leaf: the final norm and the head start from it.
    top: Tensor<3>,
    ctx: AttentionContext,
}

impl HybridModel {
    /// [`HybridModel::hidden`] from a fresh cache, keeping only each layer's input: the
    /// hidden states `[B, T, H]` after the final norm, and what [`Recompute::backward`] needs.
    pub fn hidden_recomputed(
        &self,
        ids: Tensor<2, Int>,
        ctx: &AttentionContext,
    ) -> (Tensor<3>, Recompute) {
        let [b, t] = ids.dims();
        let h = self.embed_tokens.cols();
        let embedded = self
            .embed_tokens
            .embed(ids.reshape([b * t]))
            .reshape([b, t, h]);
        let mut cache = self.new_cache();
        let mut x = embedded.clone().detach();
        let mut inputs = Vec::with_capacity(self.layers.len());
        for (layer, lc) in self.layers.iter().zip(cache.layers.iter_mut()) {
            inputs.push(x.clone());
            // No graph at all: Burn frees a graph's saved activations only at a backward
            // pass, so the layer runs on an untracked view of its parameters (the same
            // device buffers) and an untracked input.
            let untracked = layer.clone().no_grad();
            x = self.layer(&untracked, lc, x, ctx);
        }
        let top = x.require_grad();
        let hidden = rms_norm(top.clone(), &self.norm, self.eps);
        let kept = Recompute {
            embedded,
            inputs,
            top,
            ctx: ctx.clone(),
        };
        (hidden, kept)
    }
}

impl Recompute {
    /// The layers' and the embedding's gradients, given `grads` from the backward of the part
    /// above the layers (final norm, head, loss); added to `out`. Nothing when the loss does
    /// not reach the layers.
    pub fn backward(&self, model: &HybridModel, grads: &Gradients, out: &mut Grads) {
        let Some(mut g) = self.top.grad(grads) else {
            return;
        };
        let mut cache = model.new_cache();
        let layers = model.layers.iter().zip(cache.layers.iter_mut());
        for ((layer, lc), x) in layers.zip(&self.inputs).rev() {
            let x = x.clone().require_grad();
            let y = model.layer(layer, lc, x.clone(), &self.ctx);
            let step = (y * g.autodiff()).sum().backward();
            out.add_params(model, &step);
            match x.grad(&step) {
                Some(gx) => g = gx,
                None => return, // a layer that ignores its input: nothing flows below it
            }
        }
        let step = (self.embedded.clone() * g.autodiff()).sum().backward();
        out.add_params(model, &step);
    }
}
