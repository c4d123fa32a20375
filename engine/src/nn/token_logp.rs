//! Log-probabilities and entropies of given tokens under a frozen vocabulary head, computed
//! shard by shard and token chunk by token chunk: no `[tokens × vocab]` tensor exists and no
//! buffer exceeds the binding limit. Differentiable in the hidden states `h` `[N, H]`:
//!
//! ```text
//! z = h Wᵀ / τ      logp_t = z_t − lse(z)      H = lse − Σ_v p_v z_v
//! ∂logp_t/∂h = (W_t − Σ_v p_v W_v) / τ
//! ∂H/∂h      = −Σ_v p_v (z_v − lse + H) W_v / τ
//! ```
//!
//! The sums over the vocabulary are accumulated outside the autodiff graph (two passes over
//! the shards: an online max / Σe^z / Σe^z·z, then p·W); the graph only sees `[N, H]`
//! surrogates `f(h) = sg(f) + ⟨h − sg(h), sg(∂f/∂h)⟩`, exact in value and gradient. The head
//! gets no gradient: this is the LoRA / frozen-head path (a trainable head uses the
//! materialised logits).

use burn::tensor::{Int, Tensor};

use super::Vocab;
use crate::ops::linear16;

/// Per-token results, `[N]`.
pub struct TokenLogp {
    pub logp: Tensor<1>,
    pub entropy: Option<Tensor<1>>,
}

/// Most token rows per chunk (bounds the transient `[rows, shard]` logits).
const MAX_ROWS: usize = 512;

/// `log π(targets[n] | h[n])` (and the entropy of π) at temperature `temperature`, with
/// `[rows, shard]` logits chunks of at most `limit_bytes`.
pub fn token_logp(
    head: &Vocab,
    h: Tensor<2>,
    targets: Tensor<1, Int>,
    temperature: f32,
    with_entropy: bool,
    limit_bytes: u64,
) -> TokenLogp {
    let [n, _] = h.dims();
    let inv_t = 1.0 / temperature;
    let hs = h.clone().detach();
    let widest = head.shards.iter().map(|s| s.dims()[0]).max().unwrap_or(1);
    let rows = ((limit_bytes / (4 * widest as u64)) as usize).clamp(1, MAX_ROWS);
    let mut parts: Vec<ChunkSums> = Vec::new();
    for start in (0..n).step_by(rows) {
        let x = hs.clone().narrow(0, start, rows.min(n - start));
        parts.push(chunk_sums(head, x, inv_t, with_entropy));
    }
    let lse = Tensor::cat(parts.iter().map(|p| p.lse.clone()).collect(), 0);
    let expect_w = Tensor::cat(parts.iter().map(|p| p.expect_w.clone()).collect(), 0);
    let w_t = head.embed(targets).detach();
    let zt = row_dot(hs.clone(), w_t.clone()).mul_scalar(inv_t);
    let dh = h - hs;
    let logp = zt - lse + row_dot(dh.clone(), w_t - expect_w).mul_scalar(inv_t);
    let entropy = with_entropy.then(|| {
        let ent = Tensor::cat(parts.iter().map(|p| p.entropy.clone()).collect(), 0);
        let grad = Tensor::cat(parts.into_iter().map(|p| p.entropy_w).collect(), 0);
        ent - row_dot(dh, grad).mul_scalar(inv_t)
    });
    TokenLogp { logp, entropy }
}

/// The vocabulary sums of one chunk of rows `x` `[R, H]` (no graph).
struct ChunkSums {
    /// `[R]`
    lse: Tensor<1>,
    /// Σ_v p_v W_v, `[R, H]`.
    expect_w: Tensor<2>,
    /// `[R]` (zeros when not asked for).
    entropy: Tensor<1>,
    /// Σ_v p_v (z_v − lse + H) W_v, `[R, H]` (zeros when not asked for).
    entropy_w: Tensor<2>,
}

fn chunk_sums(head: &Vocab, x: Tensor<2>, inv_t: f32, with_entropy: bool) -> ChunkSums {
    let [r, hd] = x.dims();
    let logits = |i: usize| -> Tensor<2> {
        let s = &head.shards[i];
        let v = s.dims()[0];
        s.forward(x.clone().unsqueeze::<3>())
            .reshape([r, v])
            .mul_scalar(inv_t)
    };
    // Pass 1: running max m, Σ e^(z−m), Σ e^(z−m)·z.
    let (mut m, mut s0, mut s1): (Tensor<2>, Tensor<2>, Tensor<2>) = {
        let z = logits(0);
        let m = z.clone().max_dim(1);
        let e = (z.clone() - m.clone()).exp();
        (m, e.clone().sum_dim(1), (e * z).sum_dim(1))
    };
    for i in 1..head.shards.len() {
        let z = logits(i);
        let mk = z.clone().max_dim(1);
        let mn = m.clone().max_pair(mk.clone());
        let (a, b) = ((m - mn.clone()).exp(), (mk.clone() - mn.clone()).exp());
        let e = (z.clone() - mk).exp();
        s0 = s0 * a.clone() + e.clone().sum_dim(1) * b.clone();
        s1 = s1 * a + (e * z).sum_dim(1) * b;
        m = mn;
    }
    let lse = m + s0.clone().log();
    let ent = lse.clone() - s1 / s0;
    // Pass 2: Σ p W and Σ p (z − lse + H) W.
    let mut expect_w = Tensor::<2>::zeros([r, hd], &x.device());
    let mut entropy_w = Tensor::<2>::zeros([r, hd], &x.device());
    for i in 0..head.shards.len() {
        let z = logits(i);
        let logp = z - lse.clone();
        let p = logp.clone().exp();
        if with_entropy {
            let q = p.clone() * (logp + ent.clone());
            entropy_w = entropy_w + times_w(head, i, q);
        }
        expect_w = expect_w + times_w(head, i, p);
    }
    ChunkSums {
        lse: lse.reshape([r]),
        expect_w,
        entropy: ent.reshape([r]),
        entropy_w,
    }
}

/// `y W_i` for `y` `[R, V_i]` and shard i `[V_i, H]` -> `[R, H]` (no graph).
fn times_w(head: &Vocab, i: usize, y: Tensor<2>) -> Tensor<2> {
    let s = &head.shards[i];
    match (&s.weight, &s.frozen) {
        (Some(w), _) => y.matmul(w.val().detach()),
        (None, Some(f)) => linear16::linear16_t(y, f),
        (None, None) => unreachable!("a Linear holds one of its two weights"),
    }
}

/// `Σ_k a[n, k] b[n, k]` -> `[N]`.
fn row_dot(a: Tensor<2>, b: Tensor<2>) -> Tensor<1> {
    let [n, _] = a.dims();
    (a * b).sum_dim(1).reshape([n])
}
