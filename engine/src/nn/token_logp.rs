//! Log-probabilities and entropies of given tokens under a vocabulary head, computed shard by
//! shard and token chunk by token chunk: no `[tokens × vocab]` tensor exists and no buffer
//! exceeds the binding limit. Differentiable in the hidden states `h` `[N, H]`, and — for a
//! trainable head — in the head `W` `[V, H]`:
//!
//! ```text
//! z = h Wᵀ / τ      logp_t = z_t − lse(z)      H = lse − Σ_v p_v z_v
//! ∂logp_t/∂z_v = δ_vt − p_v                    ∂H/∂z_v = −p_v (z_v − lse + H)
//! ∂h = Σ_v c_v W_v / τ      ∂W_v = Σ_n c_nv h_n / τ      c = g_logp ∂logp/∂z + g_H ∂H/∂z
//! ```
//!
//! The sums over the vocabulary are accumulated outside the autodiff graph. A frozen head
//! (LoRA, 16-bit) gets `[N, H]` surrogates `f(h) = sg(f) + ⟨h − sg(h), sg(∂f/∂h)⟩`, exact in
//! value and gradient ([`token_logp`]). A trainable head's gradient `∂W` needs the loss's
//! gradient `g` in each token's score first, so [`token_logp_trainable`] returns the scores
//! as graph leaves plus a [`HeadGrad`]: after the loss's backward gives `g`, its
//! [`HeadGrad::surrogate`] recomputes the logits chunk by chunk and returns
//! `S = ⟨h, sg(∂h)⟩ + Σ_shards ⟨W_s, sg(∂W_s)⟩`, whose backward is the true one (through `h`
//! into the layers, and into the head).

use burn::tensor::{Gradients, Int, Tensor};

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
    let hs = untracked(h.clone());
    let rows = chunk_rows(head, limit_bytes);
    let mut parts: Vec<ChunkSums> = Vec::new();
    for start in (0..n).step_by(rows) {
        let x = hs.clone().narrow(0, start, rows.min(n - start));
        parts.push(chunk_sums(head, x, inv_t, with_entropy));
    }
    let lse = Tensor::cat(parts.iter().map(|p| p.lse.clone()).collect(), 0);
    let expect_w = Tensor::cat(parts.iter().map(|p| p.expect_w.clone()).collect(), 0);
    let w_t = untracked(head.embed(targets));
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

/// Token rows per chunk so that a `[rows, widest shard]` f32 tensor fits `limit_bytes`.
fn chunk_rows(head: &Vocab, limit_bytes: u64) -> usize {
    let widest = head.shards.iter().map(|s| s.dims()[0]).max().unwrap_or(1);
    ((limit_bytes / (4 * widest as u64)) as usize).clamp(1, MAX_ROWS)
}

/// [`token_logp`] for a trainable head: the scores are graph leaves (their gradients are what
/// the loss's backward gives), and the returned [`HeadGrad`] turns those gradients into the
/// true backward through `h` and `W` ([`HeadGrad::surrogate`]).
pub fn token_logp_trainable(
    head: &Vocab,
    h: Tensor<2>,
    targets: Tensor<1, Int>,
    temperature: f32,
    with_entropy: bool,
    limit_bytes: u64,
) -> (TokenLogp, HeadGrad) {
    let [n, _] = h.dims();
    let inv_t = 1.0 / temperature;
    let hs = untracked(h.clone());
    let rows = chunk_rows(head, limit_bytes);
    let (mut lse, mut ent) = (Vec::new(), Vec::new());
    for start in (0..n).step_by(rows) {
        let x = hs.clone().narrow(0, start, rows.min(n - start));
        let (l, e) = lse_entropy(head, &x, inv_t);
        lse.push(l);
        ent.push(e);
    }
    let lse = Tensor::cat(lse, 0).reshape([n]);
    let ent = Tensor::cat(ent, 0).reshape([n]);
    let w_t = untracked(head.embed(targets.clone()));
    let zt = row_dot(hs, w_t).mul_scalar(inv_t);
    // Fresh leaves (no link to any graph) that the loss is built from.
    let leaf = |t: Tensor<1>| t.inner().autodiff().require_grad();
    let logp = leaf(zt - lse.clone());
    let entropy = with_entropy.then(|| leaf(ent.clone()));
    let grad = HeadGrad {
        head: head.clone(),
        h,
        targets,
        lse,
        ent,
        logp: logp.clone(),
        entropy: entropy.clone(),
        inv_t,
        rows,
    };
    (TokenLogp { logp, entropy }, grad)
}

/// What a trainable head's backward needs once the loss's gradients in the token scores are
/// known (see the module docs).
#[derive(Debug, Clone)]
pub struct HeadGrad {
    head: Vocab,
    /// `[N, H]`, in the graph of the layers below.
    h: Tensor<2>,
    targets: Tensor<1, Int>,
    /// `[N]` each, no graph.
    lse: Tensor<1>,
    ent: Tensor<1>,
    /// The leaves handed to the loss.
    logp: Tensor<1>,
    entropy: Option<Tensor<1>>,
    inv_t: f32,
    rows: usize,
}

impl HeadGrad {
    /// `S = ⟨h, sg(∂h)⟩ + Σ_s ⟨W_s, sg(∂W_s)⟩` `[1]` from the gradients `grads` of a loss in
    /// the scores (`None` when the loss does not depend on them): `S.backward()` is the loss's
    /// backward through the head and the layers.
    pub fn surrogate(&self, grads: &Gradients) -> Option<Tensor<1>> {
        let gl = self.logp.grad(grads);
        let ge = self.entropy.as_ref().and_then(|e| e.grad(grads));
        if gl.is_none() && ge.is_none() {
            return None;
        }
        let hs = self.h.clone().inner();
        let [n, hd] = hs.dims();
        let dev = hs.device();
        let gl = gl.unwrap_or_else(|| Tensor::zeros([n], &dev));
        let (lse, ent) = (self.lse.clone().inner(), self.ent.clone().inner());
        let targets = self.targets.clone().inner();
        let weights: Vec<Option<Tensor<2>>> = (self.head.shards.iter())
            .map(|s| s.weight.as_ref().map(|w| w.val().inner()))
            .collect();
        let mut dw: Vec<Option<Tensor<2>>> = vec![None; weights.len()];
        let mut dh = Vec::new();
        for start in (0..n).step_by(self.rows) {
            let r = self.rows.min(n - start);
            let col = |t: &Tensor<1>| t.clone().narrow(0, start, r).reshape([r, 1]);
            let x = hs.clone().narrow(0, start, r);
            let (g, l, e) = (col(&gl), col(&lse), col(&ent));
            let ge = ge.as_ref().map(col);
            let t = targets.clone().narrow(0, start, r).reshape([r, 1]);
            let mut dx = Tensor::<2>::zeros([r, hd], &dev);
            let mut row0 = 0;
            for (i, (shard, w)) in self.head.shards.iter().zip(&weights).enumerate() {
                let v = shard.dims()[0];
                let Some(w) = w else {
                    // Not reached: a head with a 16-bit shard is scored by `token_logp`.
                    row0 += v;
                    continue;
                };
                let z = x
                    .clone()
                    .matmul(w.clone().transpose())
                    .mul_scalar(self.inv_t);
                let p = (z.clone() - l.clone()).exp();
                // c = g (onehot − p) − g_H p (z − lse + H)
                let ids = Tensor::<1, Int>::arange(row0 as i64..(row0 + v) as i64, &dev);
                let hit = (t.clone().expand([r, v]))
                    .equal(ids.reshape([1, v]).expand([r, v]))
                    .float();
                let mut c = (hit - p.clone()) * g.clone();
                if let Some(ge) = &ge {
                    c = c - p * (z - l.clone() + e.clone()) * ge.clone();
                }
                dx = dx + c.clone().matmul(w.clone());
                let d = c.transpose().matmul(x.clone());
                dw[i] = Some(match dw[i].take() {
                    Some(acc) => acc + d,
                    None => d,
                });
                row0 += v;
            }
            dh.push(dx.mul_scalar(self.inv_t));
        }
        let dh = Tensor::cat(dh, 0).autodiff();
        let mut s = (self.h.clone() * dh).sum();
        for (shard, d) in self.head.shards.iter().zip(dw) {
            if let (Some(w), Some(d)) = (&shard.weight, d) {
                s = s + (w.val() * d.mul_scalar(self.inv_t).autodiff()).sum();
            }
        }
        Some(s)
    }
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

/// Logits of shard `i` for rows `x` `[R, H]` at `1/τ = inv_t` -> `[R, V_i]`, outside the
/// graph (a trainable shard's weight is read detached).
fn shard_logits(head: &Vocab, i: usize, x: &Tensor<2>, inv_t: f32) -> Tensor<2> {
    let s = &head.shards[i];
    let [r, _] = x.dims();
    let v = s.dims()[0];
    let z = match &s.weight {
        Some(w) => x.clone().matmul(untracked(w.val()).transpose()),
        None => s.forward(x.clone().unsqueeze::<3>()).reshape([r, v]),
    };
    z.mul_scalar(inv_t)
}

/// Per row of `x` `[R, H]`: `lse` and the entropy `H` of softmax(x Wᵀ / τ) over every shard
/// (an online max / Σe^(z−m) / Σe^(z−m)·z), each `[R, 1]`, no graph.
fn lse_entropy(head: &Vocab, x: &Tensor<2>, inv_t: f32) -> (Tensor<2>, Tensor<2>) {
    let (mut m, mut s0, mut s1): (Tensor<2>, Tensor<2>, Tensor<2>) = {
        let z = shard_logits(head, 0, x, inv_t);
        let m = z.clone().max_dim(1);
        let e = (z.clone() - m.clone()).exp();
        (m, e.clone().sum_dim(1), (e * z).sum_dim(1))
    };
    for i in 1..head.shards.len() {
        let z = shard_logits(head, i, x, inv_t);
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
    (lse, ent)
}

fn chunk_sums(head: &Vocab, x: Tensor<2>, inv_t: f32, with_entropy: bool) -> ChunkSums {
    let [r, hd] = x.dims();
    let (lse, ent) = lse_entropy(head, &x, inv_t);
    // Pass 2: Σ p W and Σ p (z − lse + H) W.
    let mut expect_w = Tensor::<2>::zeros([r, hd], &x.device());
    let mut entropy_w = Tensor::<2>::zeros([r, hd], &x.device());
    for i in 0..head.shards.len() {
        let z = shard_logits(head, i, &x, inv_t);
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
        (Some(w), _) => y.matmul(untracked(w.val())),
        (None, Some(f)) => linear16::linear16_t(y, f),
        (None, None) => unreachable!("a Linear holds one of its two weights"),
    }
}

/// `t`'s values outside any graph. (Burn's `detach` keeps a leaf's `require_grad`: ops on a
/// detached trainable weight would still be recorded, with their activations.)
fn untracked<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    t.set_require_grad(false)
}

/// `Σ_k a[n, k] b[n, k]` -> `[N]`.
fn row_dot(a: Tensor<2>, b: Tensor<2>) -> Tensor<1> {
    let [n, _] = a.dims();
    (a * b).sum_dim(1).reshape([n])
}
