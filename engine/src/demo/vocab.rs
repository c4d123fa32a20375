//! The demo's character-level vocabulary, its `tokenizer.json`, and the demo model's config.

use crate::model::tokenizer::{Tokenizer, TokenizerError};

/// Vocabulary: `<pad>` 0, `<eos>` 1, digits `0`–`9` 2–11, `+` 12, `=` 13.
pub const VOCAB: [&str; 14] = [
    "<pad>", "<eos>", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "+", "=",
];
pub const PAD: u32 = 0;
pub const EOS: u32 = 1;

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

/// `tokenizer.json` of the demo tokenizer (word-level model over single characters;
/// `<pad>`/`<eos>` are special), so saved demo checkpoints load like any other.
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

/// `tokenizer.json` and `tokenizer_config.json` as (file name, bytes), to save beside a demo
/// model so it loads like any checkpoint.
pub fn tokenizer_files() -> Vec<(String, Vec<u8>)> {
    vec![
        ("tokenizer.json".into(), tokenizer_json().into_bytes()),
        (
            "tokenizer_config.json".into(),
            TOKENIZER_CONFIG_JSON.as_bytes().to_vec(),
        ),
    ]
}

/// The demo tokenizer.
pub fn tokenizer() -> Result<Tokenizer, TokenizerError> {
    Tokenizer::from_bytes(tokenizer_json().as_bytes())?.with_config(TOKENIZER_CONFIG_JSON)
}

/// `config.json` of the demo model: a 4-layer Qwen3.5 text model (Gated DeltaNet, gated
/// attention, Gated DeltaNet, gated attention) of width `hidden` (a multiple of 4), vocabulary
/// [`VOCAB`].
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

/// The demo model's configuration for width `hidden`; an error names the width (the
/// setting a user wrote) rather than the derived config field.
pub fn model_config(hidden: usize) -> Result<crate::model::Config, String> {
    if hidden == 0 || !hidden.is_multiple_of(4) {
        return Err(format!("{hidden} is not a positive multiple of 4"));
    }
    crate::model::Config::from_json(&model_config_json(hidden))
        .map_err(|e| format!("{hidden} gives no valid model ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_matches_the_builtin_encoding() {
        let tok = tokenizer().unwrap();
        assert_eq!(tok.encode("37+45=82", false).unwrap(), encode("37+45=82"));
        assert_eq!(encode("37+45="), vec![5, 9, 12, 6, 7, 13]);
        assert_eq!(tok.eos_token_id(), Some(EOS));
        assert_eq!(tok.pad_token_id(), Some(PAD));
        assert_eq!(tok.decode(&[10, 4, EOS], true).unwrap(), "82");
        assert_eq!(decode(&[10, 4, EOS]), "82");
    }

    #[test]
    fn model_config_parses() {
        let cfg = crate::model::Config::from_json(&model_config_json(64)).unwrap();
        assert_eq!(
            (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers),
            (14, 64, 4)
        );
    }
}
