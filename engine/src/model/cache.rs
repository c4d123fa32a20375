//! Per-layer generation state: conv + recurrent state for linear-attention layers (constant
//! size, whatever the sequence length) and a growable KV cache for attention layers.

use crate::nn::gated_deltanet::{LinearState, repeat_batch};
use crate::ops::gated_attention::KvCache;

/// The state of one layer.
#[derive(Debug, Clone)]
pub enum LayerCache {
    Linear(Option<LinearState>),
    Full(Option<KvCache>),
}

/// The state of the whole model after `seq_len` tokens.
#[derive(Debug, Clone)]
pub struct Cache {
    pub layers: Vec<LayerCache>,
    pub seq_len: usize,
}

impl Cache {
    /// Every batch row repeated `n` times consecutively (row i becomes rows i·n..i·n+n): a
    /// prefilled prompt forked into n independent continuations (GRPO groups).
    pub fn fork(&self, n: usize) -> Cache {
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                LayerCache::Linear(s) => LayerCache::Linear(s.as_ref().map(|s| s.repeat_rows(n))),
                LayerCache::Full(kv) => LayerCache::Full(kv.as_ref().map(|kv| kv.repeat_rows(n))),
            })
            .collect();
        Cache {
            layers,
            seq_len: self.seq_len,
        }
    }
}

/// Repeats rows of a KV cache (used by [`Cache::fork`]).
pub trait RepeatRows {
    fn repeat_rows(&self, n: usize) -> Self;
}

impl RepeatRows for KvCache {
    fn repeat_rows(&self, n: usize) -> Self {
        let (Some(k), Some(v)) = (self.keys(), self.values()) else {
            return self.clone();
        };
        let [b, _, h, d] = k.dims();
        let mut out = KvCache::new(b * n, h, d, &k.device());
        out.append(repeat_batch(k, n), repeat_batch(v, n))
            .expect("repeated keys keep their shape");
        out
    }
}
