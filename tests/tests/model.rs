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

#[path = "model/lora.rs"]
mod lora;

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

#[test]
fn qwen3_5_dense_logits_and_greedy_match_transformers() {
    check_logits("qwen3_5_tiny", "a");
    check_logits("qwen3_5_tiny", "long");
    check_greedy("qwen3_5_tiny");
}

#[test]
fn qwen3_5_moe_logits_and_greedy_match_transformers() {
    check_logits("qwen3_5_moe_tiny", "a");
    check_greedy("qwen3_5_moe_tiny");
}

#[test]
fn bf16_checkpoint_loads_and_matches() {
    check_logits("qwen3_next_tiny_bf16", "a");
}

#[test]
fn prefill_then_decode_equals_full_forward() {
    let dev = wgpu();
    let dir = model_dir("qwen3_next_tiny");
    let (_, model) = load_model(&dir, &dev).unwrap();
    let (shape, ids) = read_fixture_ids(&dir.join("reference.safetensors"), "input_ids_long");
    let t = shape[1];
    let full = logits(&model, &ids, &shape);
    let prefill = 100;
    let mut cache = model.new_cache();
    let to_ids =
        |xs: &[i64]| Tensor::<2, Int>::from_data(TensorData::new(xs.to_vec(), [1, xs.len()]), &dev);
    let mut parts = vec![model.logits(model.hidden(
        to_ids(&ids[..prefill]),
        &mut cache,
        &AttentionContext::contiguous(1, prefill, 0, &dev),
    ))];
    for i in prefill..t {
        let ctx = AttentionContext::contiguous(1, 1, i, &dev);
        parts.push(model.logits(model.hidden(to_ids(&ids[i..i + 1]), &mut cache, &ctx)));
    }
    assert_eq!(cache.seq_len, t);
    assert_close(
        Tensor::cat(parts, 1),
        full,
        1e-3,
        1e-3,
        "prefill + decode logits",
    );
}

#[test]
fn batched_unequal_prompts_match_one_by_one_and_transformers() {
    let dev = wgpu();
    let dir = model_dir("qwen3_next_tiny");
    let (cfg, model) = load_model(&dir, &dev).unwrap();
    let reference = dir.join("reference.safetensors");
    let (shape, ids) = read_fixture_ids(&reference, "batch_ids");
    let (_, mask) = read_fixture_ids(&reference, "batch_mask");
    let (gshape, greedy) = read_fixture_ids(&reference, "batch_greedy_ids");
    let t = shape[1];
    // Unpad the left-padded rows into prompts of different lengths.
    let prompts: Vec<Vec<u32>> = (0..shape[0])
        .map(|r| {
            (0..t)
                .filter(|&i| mask[r * t + i] == 1)
                .map(|i| ids[r * t + i] as u32)
                .collect()
        })
        .collect();
    assert_ne!(
        prompts[0].len(),
        prompts[1].len(),
        "fixture has unequal prompts"
    );
    let new = gshape[1] - t;
    let opts = GenerateOptions {
        max_new_tokens: new,
        sampling: Default::default(),
        eos_token_ids: cfg.eos_token_ids.clone(),
    };
    let batched = generate(&model, &prompts, &opts, &dev, |_, _| {}).unwrap();
    for (r, p) in prompts.iter().enumerate() {
        let alone = generate(&model, std::slice::from_ref(p), &opts, &dev, |_, _| {}).unwrap();
        assert_eq!(
            batched[r], alone[0],
            "row {r}: batched generation differs from alone"
        );
        let want: Vec<u32> = greedy[r * gshape[1] + t..(r + 1) * gshape[1]]
            .iter()
            .map(|&x| x as u32)
            .collect();
        let n = batched[r].len();
        assert_eq!(
            batched[r],
            want[..n],
            "row {r}: differs from transformers' batched greedy"
        );
    }
    // Logits at the real positions of the padded batch equal transformers'.
    let (ids_t, ctx, _) = sluice::model::generate::left_padded(&prompts, &dev);
    let mut cache = model.new_cache();
    let got = sluice_tests::to_vec(model.logits(model.hidden(ids_t, &mut cache, &ctx)));
    let f = read_fixture(&reference);
    let (_, want) = &f["batch_logits"];
    let v = cfg.vocab_size;
    for r in 0..shape[0] {
        for i in (0..t).filter(|&i| mask[r * t + i] == 1) {
            for j in 0..v {
                let (a, b) = (got[(r * t + i) * v + j], want[(r * t + i) * v + j]);
                assert!(
                    (a - b).abs() <= 1e-3 + 1e-3 * b.abs(),
                    "batch logits [{r},{i},{j}]: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn forked_prefill_continues_like_the_original() {
    use sluice::model::generate::{Sampling, sample};
    let dev = wgpu();
    let dir = model_dir("qwen3_next_tiny");
    let (_, model) = load_model(&dir, &dev).unwrap();
    let (_, prompt) = read_fixture_ids(&dir.join("reference.safetensors"), "prompt_ids");
    let t = prompt.len();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(prompt.clone(), [1, t]), &dev);
    let mut cache = model.new_cache();
    let hidden = model.hidden(
        ids,
        &mut cache,
        &AttentionContext::contiguous(1, t, 0, &dev),
    );
    let base = sluice_tests::to_vec(model.logits(hidden.narrow(1, t - 1, 1)));
    // Fork into 3 copies and feed each a different next token; copy 0 gets the greedy one.
    let mut forked = cache.fork(3);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let greedy = sample(&mut base.clone(), &[], &Sampling::default(), &mut rng);
    let next = [greedy as i64, 5, 7];
    let step = Tensor::<2, Int>::from_data(TensorData::new(next.to_vec(), [3, 1]), &dev);
    let out = model.logits(model.hidden(
        step,
        &mut forked,
        &AttentionContext::contiguous(3, 1, t, &dev),
    ));
    // The unforked cache continued with each token must agree row by row.
    for (r, &tok) in next.iter().enumerate() {
        let mut single = cache.fork(1);
        let one = Tensor::<2, Int>::from_data(TensorData::new(vec![tok], [1, 1]), &dev);
        let want = model.logits(model.hidden(
            one,
            &mut single,
            &AttentionContext::contiguous(1, 1, t, &dev),
        ));
        assert_close(
            out.clone().narrow(0, r, 1),
            want,
            1e-4,
            1e-4,
            &format!("forked row {r}"),
        );
    }
}

#[test]
fn generation_stops_at_eos() {
    let dev = wgpu();
    let dir = model_dir("qwen3_next_tiny");
    let (_, model) = load_model(&dir, &dev).unwrap();
    let reference = dir.join("reference.safetensors");
    let (_, prompt) = read_fixture_ids(&reference, "prompt_ids");
    let (_, want) = read_fixture_ids(&reference, "eos_stop_ids");
    let (_, eos) = read_fixture_ids(&reference, "eos_stop_token");
    let prompt: Vec<u32> = prompt.iter().map(|&x| x as u32).collect();
    let opts = GenerateOptions {
        max_new_tokens: 64,
        sampling: Default::default(),
        eos_token_ids: vec![eos[0] as u32],
    };
    let mut streamed = Vec::new();
    let out = generate(
        &model,
        std::slice::from_ref(&prompt),
        &opts,
        &dev,
        |r, t| streamed.push((r, t)),
    )
    .unwrap();
    let want: Vec<u32> = want[prompt.len()..].iter().map(|&x| x as u32).collect();
    assert_eq!(
        out[0], want,
        "stops after the EOS token, as transformers does"
    );
    assert_eq!(*out[0].last().unwrap(), eos[0] as u32);
    assert_eq!(
        streamed.iter().map(|&(_, t)| t).collect::<Vec<_>>(),
        out[0],
        "every token streamed once"
    );
}

/// End to end: the fixture conversation through the model folder's own tokenizer and chat
/// template gives transformers' prompt ids, and greedy generation continues as transformers'.
fn check_chat_end_to_end(name: &str) {
    use sluice::model::chat::{ChatOptions, messages_from_json};
    use sluice::model::tokenizer::Tokenizer;
    let dev = wgpu();
    let dir = model_dir(name);
    let tok = Tokenizer::from_dir(&dir).unwrap();
    // Each model folder's reference.json names the chat fixture its ids were made from.
    let own = dir.join("chat_fixture.json");
    let path = if own.exists() {
        own
    } else {
        fixtures_dir().join("models/tokenizer/chat_fixture.json")
    };
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let case = &fixture["cases"][0];
    let messages = messages_from_json(&case["messages"]).unwrap();
    let options = ChatOptions {
        tools: case["tools"].as_array().cloned(),
        ..ChatOptions::generation()
    };
    let reference = dir.join("reference.safetensors");
    let (_, want_prompt) = read_fixture_ids(&reference, "chat_prompt_ids");
    let (_, want_all) = read_fixture_ids(&reference, "chat_greedy_ids");
    let prompt = tok.encode_chat(&messages, &options).unwrap();
    let want_prompt: Vec<u32> = want_prompt.iter().map(|&x| x as u32).collect();
    assert_eq!(prompt, want_prompt, "{name}: chat prompt ids");
    let (cfg, model) = load_model(&dir, &dev).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: want_all.len() - prompt.len(),
        sampling: Default::default(),
        eos_token_ids: cfg.eos_token_ids,
    };
    let out = generate(
        &model,
        std::slice::from_ref(&prompt),
        &opts,
        &dev,
        |_, _| {},
    )
    .unwrap();
    let want: Vec<u32> = want_all[prompt.len()..].iter().map(|&x| x as u32).collect();
    assert_eq!(out[0], want, "{name}: chat greedy continuation");
    assert!(tok.decode(&out[0], false).is_ok());
}

#[test]
fn chat_end_to_end_matches_transformers() {
    check_chat_end_to_end("qwen3_next_tiny");
    check_chat_end_to_end("qwen3_5_tiny");
}

#[test]
fn grouped_generation_equals_repeated_prompts() {
    use sluice::model::generate::{Sampling, generate_groups};
    let dev = wgpu();
    let (_, model) = load_model(&model_dir("qwen3_5_tiny"), &dev).unwrap();
    let prompts = vec![vec![5u32, 9, 14, 3], vec![7u32, 8]];
    let mut opts = GenerateOptions {
        max_new_tokens: 6,
        sampling: Default::default(),
        eos_token_ids: vec![],
    };
    let grouped = generate_groups(&model, &prompts, 3, &opts, &dev, |_, _| {}).unwrap();
    let repeated: Vec<Vec<u32>> = prompts.iter().flat_map(|p| vec![p.clone(); 3]).collect();
    let plain = generate(&model, &repeated, &opts, &dev, |_, _| {}).unwrap();
    assert_eq!(grouped, plain);
    // Sampled groups: reproducible for a seed, and the group's rows explore different tokens.
    opts.sampling = Sampling {
        temperature: 1.5,
        seed: 11,
        ..Sampling::default()
    };
    let a = generate_groups(&model, &prompts, 4, &opts, &dev, |_, _| {}).unwrap();
    let b = generate_groups(&model, &prompts, 4, &opts, &dev, |_, _| {}).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 8);
    assert!(a[..4].iter().any(|r| r != &a[0]), "{a:?}");
    assert!(
        generate_groups(&model, &prompts, 0, &opts, &dev, |_, _| {})
            .unwrap_err()
            .to_string()
            .contains("group size")
    );
}

// ---- 16-bit weights and vocabulary shards ----------------------------------------------------

use sluice::model::files::{load_model_with, open_weights, read_config};
use sluice::model::load::{LoadOptions, WeightDtype};
use sluice::model::weights::WeightError;

fn load_as(name: &str, dtype: WeightDtype, limit: Option<u64>) -> sluice::model::HybridModel {
    let opts = LoadOptions {
        dtype,
        max_binding_bytes: limit,
    };
    load_model_with(&model_dir(name), &wgpu(), opts, &mut |_, _| {})
        .unwrap()
        .1
}

/// The largest checkpoint tensor other than the vocabulary matrices, in bytes at `size` per value.
fn largest_non_vocab(name: &str, size: usize) -> u64 {
    let cfg = read_config(&model_dir(name)).unwrap();
    sluice::model::save::checkpoint_shapes(&cfg)
        .unwrap()
        .into_iter()
        .filter(|(n, _)| n != "model.embed_tokens.weight" && n != "lm_head.weight")
        .map(|(_, s)| (s.iter().product::<usize>() * size) as u64)
        .max()
        .unwrap()
}

#[test]
fn bf16_weights_stay_16_bit_and_match_transformers() {
    let name = "qwen3_next_tiny_bf16";
    let frozen = load_as(name, WeightDtype::Auto, None);
    let wide = load_as(name, WeightDtype::F32, None);
    assert!(
        frozen.linears().all(|l| l.frozen.is_some()),
        "auto keeps bf16"
    );
    assert!(wide.linears().all(|l| l.param().is_some()), "f32 widens");
    let bytes =
        |m: &sluice::model::HybridModel| -> usize { m.linears().map(|l| l.device_bytes()).sum() };
    assert_eq!(
        2 * bytes(&frozen),
        bytes(&wide),
        "16-bit projections take half the bytes"
    );
    let reference = model_dir(name).join("reference.safetensors");
    let (shape, ids) = read_fixture_ids(&reference, "input_ids_a");
    // Same weights, same maths: equal up to f32 summation order.
    assert_close(
        logits(&frozen, &ids, &shape),
        logits(&wide, &ids, &shape),
        1e-4,
        1e-4,
        "bf16 vs widened",
    );
    let want: Tensor<3> = fixture_tensor(&read_fixture(&reference), "logits_a", &wgpu());
    assert_close(
        logits(&frozen, &ids, &shape),
        want,
        1e-3,
        1e-3,
        "bf16 vs transformers",
    );
}

#[test]
fn tiny_binding_limit_shards_the_vocabulary() {
    // A binding just large enough for every other tensor: the vocabulary matrices must split.
    for (name, dtype, size) in [
        ("qwen3_next_tiny_bf16", WeightDtype::Auto, 2),
        ("qwen3_next_tiny", WeightDtype::F32, 4),
        ("qwen3_next_tiny", WeightDtype::F16, 2),
    ] {
        let limit = largest_non_vocab(name, size);
        let model = load_as(name, dtype, Some(limit));
        let cfg = read_config(&model_dir(name)).unwrap();
        let rows = (limit as usize / (cfg.hidden_size * size)).min(cfg.vocab_size);
        let shards = cfg.vocab_size.div_ceil(rows);
        assert!(
            shards >= 2,
            "{name}: the test needs a split ({shards} shard)"
        );
        assert_eq!(
            model.embed_tokens.shards.len(),
            shards,
            "{name}: embedding shards"
        );
        assert_eq!(model.vocab_size(), cfg.vocab_size);
        let whole = load_as(name, dtype, None);
        assert_eq!(whole.embed_tokens.shards.len(), 1);
        let reference = model_dir(name).join("reference.safetensors");
        let (shape, ids) = read_fixture_ids(&reference, "input_ids_a");
        assert_close(
            logits(&model, &ids, &shape),
            logits(&whole, &ids, &shape),
            1e-5,
            1e-5,
            &format!("{name} {dtype:?}: sharded vs whole"),
        );
        // Greedy generation across shards gives the same tokens.
        let opts = GenerateOptions {
            max_new_tokens: 6,
            sampling: Default::default(),
            eos_token_ids: vec![],
        };
        let prompt = vec![vec![3u32, 200, 17, 255]];
        let a = generate(&model, &prompt, &opts, &wgpu(), |_, _| {}).unwrap();
        let b = generate(&whole, &prompt, &opts, &wgpu(), |_, _| {}).unwrap();
        assert_eq!(a, b, "{name}: greedy tokens with shards");
    }
}

#[test]
fn a_tensor_above_the_binding_limit_is_a_named_error() {
    let dir = model_dir("qwen3_5_tiny");
    let cfg = read_config(&dir).unwrap();
    let weights = open_weights(&dir).unwrap();
    let opts = LoadOptions {
        dtype: WeightDtype::F32,
        max_binding_bytes: Some(256),
    };
    let e = sluice::model::load::build_with(&cfg, &weights, &wgpu(), opts, &mut |_, _| {})
        .expect_err("256-byte bindings cannot hold a layer");
    match &e {
        WeightError::TooLarge { name, bytes, limit } => {
            assert!(*bytes > 256 && *limit == 256, "{e}");
            assert!(e.to_string().contains(name.as_str()), "{e}");
        }
        other => panic!("expected TooLarge, got {other}"),
    }
}

#[test]
fn checkpoint_shapes_match_a_built_model() {
    for name in ["qwen3_next_tiny", "qwen3_5_tiny", "qwen3_5_moe_tiny"] {
        let cfg = read_config(&model_dir(name)).unwrap();
        let model = sluice::model::init::init_model(&cfg, 0, &wgpu());
        let built: Vec<(String, Vec<usize>)> = sluice::model::save::named_params(&model)
            .into_iter()
            .map(|(n, p)| (n, p.shape()))
            .collect();
        assert_eq!(
            sluice::model::save::param_shapes(&cfg),
            built,
            "{name}: parameters"
        );
        assert_eq!(
            sluice::model::save::checkpoint_shapes(&cfg).unwrap(),
            sluice::model::save::hf_names(&cfg, &model).unwrap(),
            "{name}: checkpoint tensors"
        );
    }
}

#[test]
fn fused_16_bit_decode_equals_the_composed_path() {
    // Dense Qwen3.5 in bf16: every Gated DeltaNet layer takes the fused decode step.
    let name = "qwen3_5_tiny";
    let model = load_as(name, WeightDtype::Bf16, None);
    let prepared = model.layers.iter().filter(|l| match &l.mixer {
        sluice::model::hybrid::Mixer::Linear(m) => m.decode.is_some(),
        _ => false,
    });
    assert_eq!(
        prepared.count(),
        3,
        "the linear-attention layers are prepared"
    );
    let dev = wgpu();
    let (shape, ids) = read_fixture_ids(
        &model_dir(name).join("reference.safetensors"),
        "input_ids_long",
    );
    let t = shape[1].min(40);
    let ids = &ids[..t];
    // Full forward (chunked kernels, composed layers) vs prefill + fused decode steps.
    let full = logits(&model, ids, &[1, t]);
    let prefill = 12;
    let mut cache = model.new_cache();
    let to_ids =
        |xs: &[i64]| Tensor::<2, Int>::from_data(TensorData::new(xs.to_vec(), [1, xs.len()]), &dev);
    let mut parts = vec![model.logits(model.hidden(
        to_ids(&ids[..prefill]),
        &mut cache,
        &AttentionContext::contiguous(1, prefill, 0, &dev),
    ))];
    for i in prefill..t {
        let ctx = AttentionContext::contiguous(1, 1, i, &dev);
        parts.push(model.logits(model.hidden(to_ids(&ids[i..i + 1]), &mut cache, &ctx)));
    }
    assert_close(
        Tensor::cat(parts, 1),
        full,
        1e-3,
        1e-3,
        "fused decode vs full forward",
    );
}

/// The 0.8B shape cut to 4 layers (real vocabulary and width), made at test time with the
/// same deterministic initialiser as `sluice init`; transformers' outputs on the same folder
/// are committed (tests/fixtures/make_real_size_fixture.py).
#[test]
fn real_vocabulary_model_matches_transformers() {
    use sluice::model::files::write_random_checkpoint;
    use sluice::model::random::FileDtype;
    use sluice::ops::linear16::Half;
    let fixture = fixtures_dir().join("real_size");
    let dir = std::env::temp_dir().join(format!("sluice-real-size-{}", std::process::id()));
    let config = std::fs::read_to_string(fixture.join("config.json")).unwrap();
    write_random_checkpoint(&dir, &config, FileDtype::Half(Half::Bf16), 0, 0.02).unwrap();
    let dev = wgpu();
    let opts = LoadOptions::default();
    let (cfg, model) = load_model_with(&dir, &dev, opts, &mut |_, _| {}).unwrap();
    assert_eq!(cfg.vocab_size, 248_320);
    // 248,320 x 1024 bf16 = 508 MB: split at the device's binding limit (4 shards on lavapipe).
    let limit = sluice::device::max_binding_bytes(&dev).unwrap();
    let rows = (limit / (2 * cfg.hidden_size as u64)) as usize;
    assert_eq!(
        model.embed_tokens.shards.len(),
        cfg.vocab_size.div_ceil(rows)
    );
    let reference = fixture.join("reference.safetensors");
    let f = read_fixture(&reference);
    let (_, prompt) = read_fixture_ids(&reference, "prompt_ids");
    let (_, sample) = read_fixture_ids(&reference, "logit_ids");
    let t = prompt.len();
    let all = logits(&model, &prompt, &[1, t]).reshape([t, cfg.vocab_size]);
    let idx = Tensor::<1, Int>::from_data(TensorData::new(sample.clone(), [sample.len()]), &dev);
    let got = all.select(1, idx);
    let want: Tensor<2> = fixture_tensor(&f, "logits_sample", &dev);
    assert_close(got, want, 2e-3, 2e-3, "real-size logits vs transformers");
    let (_, greedy) = read_fixture_ids(&reference, "greedy_ids");
    let opts = GenerateOptions {
        max_new_tokens: greedy.len() - t,
        sampling: Default::default(),
        eos_token_ids: vec![],
    };
    let p: Vec<u32> = prompt.iter().map(|&x| x as u32).collect();
    let out = generate(&model, std::slice::from_ref(&p), &opts, &dev, |_, _| {}).unwrap();
    let want: Vec<u32> = greedy[t..].iter().map(|&x| x as u32).collect();
    assert_eq!(out[0], want, "real-size greedy tokens");
    // Greedy picked the tokens on the device across the vocabulary shards; sampling without
    // top-k reads each row back, and top-p 1e-6 keeps only the host's argmax. Both agree, in
    // a batch too.
    assert!(cfg.vocab_size >= sluice::model::generate::DEVICE_GREEDY_MIN_VOCAB);
    let host = GenerateOptions {
        sampling: sluice::model::generate::Sampling {
            temperature: 1.0,
            top_p: 1e-6,
            ..Default::default()
        },
        max_new_tokens: 3,
        ..opts.clone()
    };
    let batch = vec![p.clone(), vec![11, 248_000, 7]];
    let device_picks = generate(
        &model,
        &batch,
        &GenerateOptions {
            max_new_tokens: 3,
            ..opts
        },
        &dev,
        |_, _| {},
    )
    .unwrap();
    let host_picks = generate(&model, &batch, &host, &dev, |_, _| {}).unwrap();
    assert_eq!(device_picks, host_picks, "device greedy = host argmax");
    assert_eq!(device_picks[0], want[..3], "the batch's first row");

    // Top-k sampling finds the k best logits on the device (each shard's, then the best of
    // those) and samples among them on the host: the same tokens as the host sampler over
    // each whole row, step after step.
    let sampling = sluice::model::generate::Sampling {
        temperature: 0.9,
        top_k: 40,
        top_p: 0.95,
        min_p: 0.01,
        seed: 5,
        ..Default::default()
    };
    let topk = GenerateOptions {
        sampling: sampling.clone(),
        ..host
    };
    let sampled = generate(&model, &batch, &topk, &dev, |_, _| {}).unwrap();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5);
    for step in 0..3 {
        for (r, p) in batch.iter().enumerate() {
            let seq: Vec<i64> = p
                .iter()
                .chain(&sampled[r][..step])
                .map(|&x| x as i64)
                .collect();
            let n = seq.len();
            let last = logits(&model, &seq, &[1, n])
                .reshape([n, cfg.vocab_size])
                .narrow(0, n - 1, 1);
            let mut row = last.into_data().try_to_vec::<f32>().unwrap();
            let seen: Vec<u32> = seq.iter().map(|&x| x as u32).collect();
            let tok = sluice::model::generate::sample(&mut row, &seen, &sampling, &mut rng);
            assert_eq!(tok, sampled[r][step], "top-k sample, row {r}, step {step}");
        }
    }
    drop(model);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The frozen-head training path: token log-probs and entropies computed vocabulary shard by
/// shard and token chunk by chunk equal the materialised log-softmax, values and gradients.
#[test]
fn chunked_token_logp_equals_the_full_softmax() {
    use sluice::nn::token_logp::token_logp;
    let name = "qwen3_next_tiny_bf16";
    let dev = wgpu().autodiff();
    let opts = LoadOptions {
        dtype: WeightDtype::Auto,
        max_binding_bytes: Some(largest_non_vocab(name, 2)),
    };
    let (_, model) = load_model_with(&model_dir(name), &dev, opts, &mut |_, _| {}).unwrap();
    assert!(model.head_frozen());
    let head = model.head();
    assert!(head.shards.len() >= 2, "the test needs a split head");
    let (v, hd, n) = (head.rows(), head.cols(), 37);
    let ids: Vec<i64> = (0..n as i64).map(|i| (i * 97 + 5) % v as i64).collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), &dev);
    let c = sluice_tests::randn([n], 1.0, &dev);
    let d = sluice_tests::randn([n], 1.0, &dev);
    let h0 = sluice_tests::randn([n, hd], 1.0, &dev);
    for (temperature, limit) in [(1.0f32, 1u64 << 30), (0.7, 600)] {
        let run = |chunked: bool| {
            let h = h0.clone().detach().require_grad();
            let (logp, ent) = if chunked {
                let r = token_logp(head, h.clone(), targets.clone(), temperature, true, limit);
                (r.logp, r.entropy.unwrap())
            } else {
                let z = head.logits(h.clone().unsqueeze::<3>()).reshape([n, v]);
                let lsm = burn::tensor::activation::log_softmax(z.div_scalar(temperature), 1);
                let logp = lsm
                    .clone()
                    .gather(1, targets.clone().reshape([n, 1]))
                    .reshape([n]);
                let ent = (lsm.clone().exp() * lsm).sum_dim(1).reshape([n]).neg();
                (logp, ent)
            };
            let loss = (logp.clone() * c.clone()).sum() + (ent.clone() * d.clone()).sum();
            let g = loss.backward();
            let gh = Tensor::<2>::from_inner(h.grad(&g).unwrap());
            (logp.detach(), ent.detach(), gh)
        };
        let (a, b) = (run(true), run(false));
        let what = format!("τ = {temperature}, chunk limit {limit} B");
        assert_close(a.0, b.0, 1e-4, 1e-4, &format!("logp, {what}"));
        assert_close(a.1, b.1, 1e-4, 1e-4, &format!("entropy, {what}"));
        assert_close(a.2, b.2, 1e-3, 1e-4, &format!("d/dh, {what}"));
    }
}

/// The full fine-tuning path: with a trainable f32 head split into vocabulary shards, the
/// chunked scores and their deferred head gradient ([`Loss::backward`]) equal the
/// materialised log-softmax — values, `d/dh` and `d/dW` of every shard.
#[test]
fn trainable_head_chunked_scores_equal_the_full_softmax() {
    use sluice::model::score::{Deferred, Loss};
    use sluice::nn::token_logp::token_logp_trainable;
    let name = "qwen3_next_tiny";
    let dev = wgpu().autodiff();
    let opts = LoadOptions {
        dtype: WeightDtype::F32,
        max_binding_bytes: Some(largest_non_vocab(name, 4)),
    };
    let (_, model) = load_model_with(&model_dir(name), &dev, opts, &mut |_, _| {}).unwrap();
    assert!(!model.head_frozen());
    let head = model.head();
    assert!(head.shards.len() >= 2, "the test needs a split head");
    let (v, hd, n) = (head.rows(), head.cols(), 37);
    let ids: Vec<i64> = (0..n as i64).map(|i| (i * 97 + 5) % v as i64).collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), &dev);
    let c = sluice_tests::randn([n], 1.0, &dev);
    let d = sluice_tests::randn([n], 1.0, &dev);
    let h0 = sluice_tests::randn([n, hd], 1.0, &dev);
    let weight = |i: usize| head.shards[i].weight.as_ref().expect("f32 shard").val();
    for (temperature, limit, entropy) in [
        (1.0f32, 1u64 << 30, true),
        (0.7, 600, true),
        (1.3, 600, false),
    ] {
        let run = |chunked: bool| {
            let h = h0.clone().detach().require_grad();
            let (logp, ent, heads) = if chunked {
                let (r, g) = token_logp_trainable(
                    head,
                    h.clone(),
                    targets.clone(),
                    temperature,
                    entropy,
                    limit,
                );
                let d = Deferred {
                    head: Some(g),
                    layers: None,
                };
                (r.logp, r.entropy, vec![d])
            } else {
                let z = head.logits(h.clone().unsqueeze::<3>()).reshape([n, v]);
                let lsm = burn::tensor::activation::log_softmax(z.div_scalar(temperature), 1);
                let logp = lsm
                    .clone()
                    .gather(1, targets.clone().reshape([n, 1]))
                    .reshape([n]);
                let ent = (lsm.clone().exp() * lsm).sum_dim(1).reshape([n]).neg();
                (logp, entropy.then_some(ent), vec![])
            };
            let mut value = (logp.clone() * c.clone()).sum();
            if let Some(e) = &ent {
                value = value + (e.clone() * d.clone()).sum();
            }
            let g = Loss {
                value,
                deferred: heads,
            }
            .backward();
            let gh = Tensor::<2>::from_inner(h.grad(&g).unwrap());
            let gw: Vec<Tensor<2>> = (0..head.shards.len())
                .map(|i| Tensor::<2>::from_inner(weight(i).grad(&g).expect("a head gradient")))
                .collect();
            (logp.detach(), ent.map(|e| e.detach()), gh, gw)
        };
        let (a, b) = (run(true), run(false));
        let what = format!("τ = {temperature}, chunk limit {limit} B, entropy {entropy}");
        assert_close(a.0, b.0, 1e-4, 1e-4, &format!("logp, {what}"));
        if let (Some(x), Some(y)) = (a.1, b.1) {
            assert_close(x, y, 1e-4, 1e-4, &format!("entropy, {what}"));
        }
        assert_close(a.2, b.2, 1e-3, 1e-4, &format!("d/dh, {what}"));
        for (i, (x, y)) in a.3.into_iter().zip(b.3).enumerate() {
            assert_close(x, y, 1e-3, 1e-4, &format!("d/dW shard {i}, {what}"));
        }
    }
}
