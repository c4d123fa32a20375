//! The hybrid model against transformers: tiny random Qwen3-Next / Qwen3.5 checkpoints made
//! by `tests/fixtures/make_model_fixtures.py` with their reference logits and generations.

use std::path::PathBuf;

use burn::tensor::{Int, Tensor, TensorData};
use sluice::model::files::load_model;
use sluice::model::generate::{GenerateOptions, generate};
use sluice::nn::attention::AttentionContext;
use sluice_tests::{
    assert_close, fixture_tensor, fixtures_dir, read_fixture, read_fixture_ids, wgpu,
};

fn model_dir(name: &str) -> PathBuf {
    fixtures_dir().join("models").join(name)
}

/// Logits of `ids` `[B, T]` in one forward from an empty cache.
fn logits(model: &sluice::model::HybridModel, ids: &[i64], shape: &[usize]) -> Tensor<3> {
    let dev = wgpu();
    let (b, t) = (shape[0], shape[1]);
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), [b, t]), &dev);
    let mut cache = model.new_cache();
    let ctx = AttentionContext::contiguous(b, t, 0, &dev);
    model.logits(model.hidden(ids, &mut cache, &ctx))
}

fn check_logits(name: &str, which: &str) {
    let dev = wgpu();
    let dir = model_dir(name);
    let (_, model) = load_model(&dir, &dev).unwrap();
    let reference = dir.join("reference.safetensors");
    let f = read_fixture(&reference);
    let (shape, ids) = read_fixture_ids(&reference, &format!("input_ids_{which}"));
    let got = logits(&model, &ids, &shape);
    let want: Tensor<3> = fixture_tensor(&f, &format!("logits_{which}"), &dev);
    assert_close(got, want, 1e-3, 1e-3, &format!("{name} logits_{which}"));
}

fn check_greedy(name: &str) {
    let dev = wgpu();
    let dir = model_dir(name);
    let (cfg, model) = load_model(&dir, &dev).unwrap();
    let reference = dir.join("reference.safetensors");
    let (_, prompt) = read_fixture_ids(&reference, "prompt_ids");
    let (_, want) = read_fixture_ids(&reference, "greedy_ids");
    let prompt: Vec<u32> = prompt.iter().map(|&x| x as u32).collect();
    let new = want.len() - prompt.len();
    let opts = GenerateOptions {
        max_new_tokens: new,
        sampling: Default::default(),
        eos_token_ids: cfg.eos_token_ids.clone(),
    };
    let out = generate(
        &model,
        std::slice::from_ref(&prompt),
        &opts,
        &dev,
        |_, _| {},
    )
    .unwrap();
    let want: Vec<u32> = want[prompt.len()..].iter().map(|&x| x as u32).collect();
    assert_eq!(
        out[0], want,
        "{name}: greedy tokens differ from transformers"
    );
}

#[test]
fn qwen3_next_logits_match_transformers() {
    check_logits("qwen3_next_tiny", "a");
}

#[test]
fn qwen3_next_long_logits_match_transformers() {
    check_logits("qwen3_next_tiny", "long");
}

#[test]
fn qwen3_next_greedy_matches_transformers() {
    check_greedy("qwen3_next_tiny");
}
