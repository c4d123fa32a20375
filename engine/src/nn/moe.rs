//! Sparse mixture of experts with a sigmoid-gated shared expert (Qwen3-Next / Qwen3.5-MoE).
//!
//! `p = softmax(x Wr^T)` over all experts; keep the top k (renormalised when
//! `norm_topk_prob`); `y = Σ_k p_k · expert_k(x) + sigmoid(x Ws^T) · shared(x)`.
//! Routing weights are computed on the device (no host readback, so it runs in browsers);
//! each expert runs on all tokens and is weighted by its (mostly zero) routing weight.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::{sigmoid, softmax};

use super::mlp::Mlp;
use super::{Linear, linear};

#[derive(Module, Debug)]
pub struct Moe {
    /// Router `[E, H]`.
    pub gate: Linear,
    pub experts: Vec<Mlp>,
    pub shared_expert: Option<Mlp>,
    /// `[1, H]`.
    pub shared_expert_gate: Option<Linear>,
    pub top_k: usize,
    pub norm_topk_prob: bool,
}

impl Moe {
    /// Routing weights `[B, T, E]`: the top-k probabilities, zero elsewhere.
    pub fn routing(&self, x: Tensor<3>) -> Tensor<3> {
        let probs = softmax(linear(x, &self.gate), 2);
        // The k-th largest probability per token, on the device; ties at the threshold are
        // measure-zero.
        let [b, t, e] = probs.dims();
        let (top, _) = crate::ops::topk::topk_rows(probs.clone().reshape([b * t, e]), self.top_k);
        let kth = top.narrow(1, self.top_k - 1, 1).reshape([b, t, 1]);
        let keep = probs.clone().greater_equal(kth).float();
        let w = probs * keep;
        if self.norm_topk_prob {
            let s = w.clone().sum_dim(2);
            w / s
        } else {
            w
        }
    }

    /// `x` `[B, T, H]` -> `[B, T, H]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let w = self.routing(x.clone());
        let mut out = Tensor::zeros(x.dims(), &x.device());
        for (e, expert) in self.experts.iter().enumerate() {
            out = out + expert.forward(x.clone()) * w.clone().narrow(2, e, 1);
        }
        if let (Some(shared), Some(g)) = (&self.shared_expert, &self.shared_expert_gate) {
            out = out + shared.forward(x.clone()) * sigmoid(linear(x, g));
        }
        out
    }
}
