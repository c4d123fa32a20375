//! Multi-digit addition: prompt `"37+45="`, answer `"82"` then `<eos>`.
//!
//! Pairs `(a, b)` with `n`-digit operands are split once and for all into a training set and a
//! held-out set (about 1 in 8 pairs, chosen by a hash of the pair), so held-out accuracy is
//! measured on problems the model never saw in SFT or RL.

use rand::Rng;
use rand::rngs::StdRng;

use crate::model::tokenizer::{Tokenizer, TokenizerError};

/// Vocabulary: `<pad>` 0, `<eos>` 1, digits `0`–`9` 2–11, `+` 12, `=` 13.
pub const VOCAB: [&str; 14] = [
    "<pad>", "<eos>", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "+", "=",
];
pub const PAD: u32 = 0;
pub const EOS: u32 = 1;

/// `tokenizer.json` of the character-level demo tokenizer (word-level model over single
/// characters; `<pad>`/`<eos>` are special).
pub fn tokenizer_json() -> String {
    let vocab: serde_json::Map<String, serde_json::Value> = VOCAB
        .iter()
        .enumerate()
        .map(|(i, t)| ((*t).to_string(), serde_json::Value::from(i)))
        .collect();
    let added: Vec<serde_json::Value> = [(0, "<pad>"), (1, "<eos>")]
        .iter()
        .map(|(id, content)| {
            serde_json::json!({"id": id, "content": content, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "."}, "behavior": "Isolated", "invert": false},
        "post_processor": null,
        "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<pad>"}
    })
    .to_string()
}

/// `tokenizer_config.json` naming the special tokens.
pub const TOKENIZER_CONFIG_JSON: &str =
    r#"{"eos_token": "<eos>", "pad_token": "<pad>", "clean_up_tokenization_spaces": false}"#;

/// The demo tokenizer.
pub fn tokenizer() -> Result<Tokenizer, TokenizerError> {
    Tokenizer::from_bytes(tokenizer_json().as_bytes())?.with_config(TOKENIZER_CONFIG_JSON)
}

/// `config.json` of the demo model: a 4-layer Qwen3.5 text model (Gated DeltaNet, gated
/// attention, Gated DeltaNet, gated attention) of width `hidden`, vocabulary [`VOCAB`].
pub fn model_config_json(hidden: usize) -> String {
    serde_json::json!({
        "model_type": "qwen3_5_text",
        "architectures": ["Qwen3_5ForCausalLM"],
        "vocab_size": VOCAB.len(),
        "hidden_size": hidden,
        "intermediate_size": 3 * hidden,
        "num_hidden_layers": 4,
        "layer_types": ["linear_attention", "full_attention", "linear_attention", "full_attention"],
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": hidden / 4,
        "linear_conv_kernel_dim": 4,
        "linear_key_head_dim": hidden / 4,
        "linear_value_head_dim": hidden / 4,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": true,
        "initializer_range": 0.02,
        "eos_token_id": EOS,
        "pad_token_id": PAD,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        "hidden_act": "silu",
        "attn_output_gate": true,
        "attention_bias": false,
        "dtype": "float32"
    })
    .to_string()
}

/// One addition problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub a: u64,
    pub b: u64,
}

impl Problem {
    /// `"a+b="`.
    pub fn prompt(&self) -> String {
        format!("{}+{}=", self.a, self.b)
    }

    /// The correct completion text (without `<eos>`).
    pub fn answer(&self) -> String {
        (self.a + self.b).to_string()
    }

    /// Prompt token ids.
    pub fn prompt_ids(&self) -> Vec<u32> {
        encode(&self.prompt())
    }

    /// Target completion ids: the answer's digits then `<eos>`.
    pub fn completion_ids(&self) -> Vec<u32> {
        let mut ids = encode(&self.answer());
        ids.push(EOS);
        ids
    }

    /// True when `completion` (generated ids) is exactly the answer followed by `<eos>`.
    pub fn is_correct(&self, completion: &[u32]) -> bool {
        completion == self.completion_ids().as_slice()
    }
}

/// Ids of a string over `0-9 + =` (other characters are skipped).
pub fn encode(text: &str) -> Vec<u32> {
    text.chars()
        .filter_map(|c| match c {
            '0'..='9' => Some(2 + c as u32 - '0' as u32),
            '+' => Some(12),
            '=' => Some(13),
            _ => None,
        })
        .collect()
}

/// Text of ids (`<eos>` and `<pad>` dropped).
pub fn decode(ids: &[u32]) -> String {
    ids.iter()
        .filter(|&&t| t > EOS)
        .filter_map(|&t| VOCAB.get(t as usize).copied())
        .collect()
}

/// The task: `digits`-digit operands (leading digit non-zero for `digits > 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addition {
    pub digits: u32,
}

/// 64-bit mix (SplitMix64 finaliser) of a pair, for the fixed train / held-out split.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_add(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Addition {
    pub fn new(digits: u32) -> Self {
        Self { digits }
    }

    fn range(&self) -> (u64, u64) {
        let hi = 10u64.pow(self.digits);
        let lo = if self.digits > 1 { hi / 10 } else { 0 };
        (lo, hi)
    }

    /// Whether a pair belongs to the held-out set (never trained on).
    pub fn is_heldout(&self, p: &Problem) -> bool {
        mix(p.a, p.b) % 8 == 0
    }

    fn random(&self, rng: &mut StdRng) -> Problem {
        let (lo, hi) = self.range();
        Problem {
            a: rng.random_range(lo..hi),
            b: rng.random_range(lo..hi),
        }
    }

    /// A random training problem (never a held-out pair).
    pub fn train_problem(&self, rng: &mut StdRng) -> Problem {
        loop {
            let p = self.random(rng);
            if !self.is_heldout(&p) {
                return p;
            }
        }
    }

    /// `n` distinct held-out problems, the same for a given seed.
    pub fn heldout(&self, n: usize, seed: u64) -> Vec<Problem> {
        use rand::SeedableRng;
        let mut rng = StdRng::seed_from_u64(seed);
        let (lo, hi) = self.range();
        let total = ((hi - lo) * (hi - lo)) as usize;
        let n = n.min(total / 8);
        let mut out: Vec<Problem> = Vec::with_capacity(n);
        while out.len() < n {
            let p = self.random(&mut rng);
            if self.is_heldout(&p) && !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn encode_decode_round_trip() {
        let p = Problem { a: 37, b: 45 };
        assert_eq!(p.prompt_ids(), vec![5, 9, 12, 6, 7, 13]);
        assert_eq!(p.completion_ids(), vec![10, 4, EOS]);
        assert_eq!(decode(&p.completion_ids()), "82");
        assert!(p.is_correct(&[10, 4, EOS]));
        assert!(!p.is_correct(&[10, 4]));
        assert!(!p.is_correct(&[10, 5, EOS]));
    }

    #[test]
    fn tokenizer_matches_the_builtin_encoding() {
        let tok = tokenizer().unwrap();
        assert_eq!(tok.encode("37+45=82", false).unwrap(), encode("37+45=82"));
        assert_eq!(tok.eos_token_id(), Some(EOS));
        assert_eq!(tok.pad_token_id(), Some(PAD));
        assert_eq!(tok.decode(&[10, 4, EOS], true).unwrap(), "82");
    }

    #[test]
    fn training_never_draws_heldout_pairs() {
        let task = Addition::new(2);
        let held = task.heldout(200, 7);
        assert_eq!(held.len(), 200);
        assert!(held.iter().all(|p| task.is_heldout(p)));
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..2000 {
            let p = task.train_problem(&mut rng);
            assert!(!task.is_heldout(&p));
            assert!((10..100).contains(&p.a) && (10..100).contains(&p.b));
        }
        // About one pair in eight is held out.
        let (mut h, n) = (0, 8100);
        for a in 10..100 {
            for b in 10..100 {
                h += usize::from(task.is_heldout(&Problem { a, b }));
            }
        }
        assert!((n / 10..n / 6).contains(&h), "{h} held out of {n}");
    }
}
