//! LoRA adapters against the real `peft` (fixtures of `tests/fixtures/make_lora_fixtures.py`):
//! logits, merged logits and torch-autograd gradients; Sluice-written adapters in PEFT's exact
//! layout; 16-bit bases; bad adapters as named errors.

use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use sluice::model::HybridModel;
use sluice::model::adapter::{self, AdapterError, LoraConfig, TargetModules};
use sluice::model::files::{LoadError, load_adapter_dir, load_model, load_model_with};
use sluice::model::load::{LoadOptions, WeightDtype};
use sluice::model::save::{named_params, named_params_mut};
use sluice::nn::AdapterMode;
use sluice::nn::attention::AttentionContext;
use sluice::train::sft::{SftExample, sft_loss};
use sluice_tests::{
    assert_close, fixture_tensor, fixtures_dir, read_fixture, read_fixture_ids, wgpu,
};

fn lora_dir() -> PathBuf {
    fixtures_dir().join("lora")
}

fn base_dir() -> PathBuf {
    fixtures_dir().join("models/qwen3_5_tiny")
}

fn full_logits(model: &HybridModel, ids: &[i64], dev: &burn::tensor::Device) -> Tensor<2> {
    let t = ids.len();
    let x = Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), [1, t]), dev);
    let mut cache = model.new_cache();
    let ctx = AttentionContext::contiguous(1, t, 0, dev);
    let v = model.vocab_size();
    model
        .logits(model.hidden(x, &mut cache, &ctx))
        .reshape([t, v])
}

fn adapted(name: &str, dev: &burn::tensor::Device) -> (HybridModel, Vec<String>) {
    let (cfg, base) = load_model(&base_dir(), dev).unwrap();
    load_adapter_dir(base, &cfg, &lora_dir().join(name), dev).unwrap()
}

#[test]
fn peft_adapters_match_transformers_logits_and_merge() {
    let dev = wgpu();
    let reference = lora_dir().join("reference.safetensors");
    let f = read_fixture(&reference);
    let (_, ids) = read_fixture_ids(&reference, "ids");
    // plain: 3 Gated DeltaNet layers × 5 + 1 attention layer × 4 + 4 MLPs × 3;
    // patterns: q/v of the attention layer, in_proj_qkv of 3 linear layers, down_proj of 4 MLPs.
    for (name, modules) in [("plain", 3 * 5 + 4 + 4 * 3), ("patterns", 2 + 3 + 4)] {
        let (model, names) = adapted(name, &dev);
        let want: Tensor<2> = fixture_tensor(&f, &format!("{name}.logits"), &dev);
        assert_close(full_logits(&model, &ids, &dev), want, 1e-3, 1e-3, name);
        assert_eq!(names.len(), modules, "{name}: {names:?}");
        if name == "plain" {
            let merged = adapter::merge(model).unwrap();
            assert!(merged.named_linears().iter().all(|(_, l)| l.lora.is_none()));
            let want: Tensor<2> = fixture_tensor(&f, "plain.merged_logits", &dev);
            assert_close(full_logits(&merged, &ids, &dev), want, 1e-3, 1e-3, "merged");
        }
    }
}

#[test]
fn lora_gradients_match_torch_autograd() {
    let dev = wgpu().autodiff();
    let reference = lora_dir().join("reference.safetensors");
    let f = read_fixture(&reference);
    let (_, ids) = read_fixture_ids(&reference, "ids");
    let (mut model, _) = adapted("plain", &dev);
    adapter::set_mode(&mut model, AdapterMode::Train);
    let ex = SftExample {
        ids: ids.iter().map(|&i| i as u32).collect(),
        targets: vec![true; ids.len()],
    };
    let (loss, _) = sft_loss(&model, &[ex], &dev).unwrap();
    let want_loss: Tensor<1> = fixture_tensor::<1>(&f, "plain.loss", &dev);
    assert_close(loss.value.clone().inner(), want_loss, 1e-4, 1e-5, "loss");
    let grads = loss.backward();
    let mut checked = 0;
    for (name, p) in named_params(&model) {
        let g = p.grad(&grads);
        if !name.contains(".lora_") {
            assert!(
                g.is_none(),
                "the frozen base parameter {name} got a gradient"
            );
            continue;
        }
        let want: Tensor<2> = fixture_tensor(&f, &format!("plain.grad.{name}"), &dev);
        let got = g.unwrap_or_else(|| panic!("no gradient for {name}"));
        assert_close(got.reshape(want.dims()), want, 2e-3, 1e-5, &name);
        checked += 1;
    }
    assert_eq!(checked, 2 * 31);
}

#[test]
fn sluice_writes_peft_layout_and_reads_it_back() {
    let dev = wgpu();
    let (model, _) = adapted("plain", &dev);
    let files = pollster::block_on(adapter::adapter_files_async(&model, "qwen3_5_tiny")).unwrap();
    let out = std::env::temp_dir().join(format!("sluice-lora-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    for (name, bytes) in &files {
        std::fs::write(out.join(name), bytes).unwrap();
    }
    // Tensor names, shapes and values equal to what peft wrote.
    let peft_bytes = std::fs::read(lora_dir().join("plain/adapter_model.safetensors")).unwrap();
    let ours_bytes = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
    let peft = safetensors::SafeTensors::deserialize(&peft_bytes).unwrap();
    let ours = safetensors::SafeTensors::deserialize(&ours_bytes).unwrap();
    let mut names: Vec<String> = peft.names().into_iter().map(str::to_string).collect();
    let mut ours_names: Vec<String> = ours.names().into_iter().map(str::to_string).collect();
    names.sort();
    ours_names.sort();
    assert_eq!(names, ours_names);
    for n in &names {
        let (a, b) = (peft.tensor(n).unwrap(), ours.tensor(n).unwrap());
        assert_eq!(a.shape(), b.shape(), "{n}");
        assert_eq!(a.data(), b.data(), "{n}: values differ");
    }
    // The config is PEFT's LoRA config and reads back to the same settings.
    let text = std::fs::read_to_string(out.join("adapter_config.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["peft_type"], "LORA");
    assert_eq!(json["r"], 4);
    assert_eq!(json["lora_alpha"], 8.0);
    let cfg = adapter::parse_adapter_config(&text).unwrap();
    assert!(matches!(&cfg.target_modules, TargetModules::Names(l) if l.len() == 31));
    let (c, base) = load_model(&base_dir(), &dev).unwrap();
    let (back, _) = load_adapter_dir(base, &c, &out, &dev).unwrap();
    let (_, ids) = read_fixture_ids(&lora_dir().join("reference.safetensors"), "ids");
    assert_close(
        full_logits(&back, &ids, &dev),
        full_logits(&model, &ids, &dev),
        1e-6,
        1e-6,
        "reloaded",
    );
    std::fs::remove_dir_all(&out).ok();
}

/// Random non-zero B matrices (a fresh adapter's update is zero).
fn randomise_b(model: &mut HybridModel, dev: &burn::tensor::Device) {
    let bs = named_params_mut(model)
        .into_iter()
        .filter(|(n, _)| n.ends_with(".lora_B.weight"));
    for (i, (_, mut p)) in bs.enumerate() {
        {
            let n = p.as_ref().numel();
            let v: Vec<f32> = (0..n)
                .map(|j| (((i * 31 + j * 7) % 13) as f32 - 6.0) * 0.03)
                .collect();
            p.set_flat(Tensor::from_data(TensorData::new(v, [n]), dev));
        }
    }
}

#[test]
fn lora_over_a_frozen_bf16_base_equals_lora_over_its_f32_widening() {
    // Qwen3-Next: attention q/k/v/o and the shared experts are adaptable.
    let dev = wgpu().autodiff();
    let dir = fixtures_dir().join("models/qwen3_next_tiny_bf16");
    let cfg = LoraConfig {
        r: 2,
        alpha: 4.0,
        ..LoraConfig::default()
    };
    let mut losses = Vec::new();
    let mut all_grads = Vec::new();
    for dtype in [WeightDtype::Auto, WeightDtype::F32] {
        let opts = LoadOptions {
            dtype,
            ..LoadOptions::default()
        };
        let (c, base) = load_model_with(&dir, &dev, opts, &mut |_, _| {}).unwrap();
        let frozen = base.linears().any(|l| l.frozen.is_some());
        assert_eq!(frozen, dtype == WeightDtype::Auto);
        let (mut model, names) = adapter::attach(base, c.family, &cfg, 7, &dev).unwrap();
        assert!(
            names
                .iter()
                .all(|n| !n.contains(".mlp.experts.") && !n.contains("in_proj"))
        );
        assert!(names.iter().any(|n| n.ends_with("shared_expert.down_proj")));
        randomise_b(&mut model, &dev);
        let ex = SftExample {
            ids: vec![3, 17, 99, 4, 250, 8, 61, 12],
            targets: vec![true; 8],
        };
        let (loss, _) = sft_loss(&model, &[ex], &dev).unwrap();
        let grads = loss.backward();
        losses.push(loss.value.inner());
        all_grads.push(
            named_params(&model)
                .into_iter()
                .filter(|(n, _)| n.contains(".lora_"))
                .map(|(n, p)| (n, p.grad(&grads).expect("adapter gradient")))
                .collect::<Vec<_>>(),
        );
    }
    let b = losses.pop().unwrap();
    assert_close(losses.pop().unwrap(), b, 1e-5, 1e-5, "loss");
    let widened = all_grads.pop().unwrap();
    for ((n, g16), (_, g32)) in all_grads.pop().unwrap().into_iter().zip(widened) {
        assert_close(g16, g32, 1e-3, 1e-5, &n);
    }
}

fn write_case(dir: &Path, config: &serde_json::Value, tensors_from: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    std::fs::copy(
        tensors_from.join("adapter_model.safetensors"),
        dir.join("adapter_model.safetensors"),
    )
    .unwrap();
}

#[test]
fn bad_adapters_are_named_errors() {
    let dev = wgpu();
    let plain = lora_dir().join("plain");
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plain.join("adapter_config.json")).unwrap())
            .unwrap();
    let tmp = std::env::temp_dir().join(format!("sluice-bad-lora-{}", std::process::id()));
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "rank",
            serde_json::json!({"r": 8}),
            "has shape [4, 32], expected [8, 32]",
        ),
        (
            "dora",
            serde_json::json!({"use_dora": true}),
            "DoRA are not supported",
        ),
        (
            "type",
            serde_json::json!({"peft_type": "IA3"}),
            "field `peft_type`",
        ),
        (
            "alpha",
            serde_json::json!({"lora_alpha": -1.0}),
            "field `alpha`",
        ),
        (
            "regex",
            serde_json::json!({"rank_pattern": {"(": 2}}),
            "rank_pattern",
        ),
    ];
    for (name, patch, want) in cases {
        let mut cfg = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        let dir = tmp.join(name);
        write_case(&dir, &cfg, &plain);
        let (c, base) = load_model(&base_dir(), &dev).unwrap();
        let err = load_adapter_dir(base, &c, &dir, &dev)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(want),
            "{name}: {err:?} should contain {want:?}"
        );
        assert!(
            err.contains(&dir.display().to_string()),
            "{name}: {err:?} names no folder"
        );
    }
    // An adapter made for another architecture: Qwen3.5's split Gated DeltaNet projections
    // do not exist in Qwen3-Next.
    let next = fixtures_dir().join("models/qwen3_next_tiny");
    let (c, base) = load_model(&next, &dev).unwrap();
    let err = load_adapter_dir(base, &c, &plain, &dev).unwrap_err();
    assert!(
        matches!(
            &err,
            LoadError::Adapter {
                source: AdapterError::Unsupported(_)
                    | AdapterError::UnknownTensor(_)
                    | AdapterError::Shape { .. }
                    | AdapterError::Weights(_),
                ..
            }
        ),
        "{err}"
    );
    // Attaching: a rank above the layer, targets that match nothing, fused Qwen3-Next inputs.
    let (c, base) = load_model(&base_dir(), &dev).unwrap();
    let big = LoraConfig {
        r: 64,
        target_modules: TargetModules::Names(vec!["q_proj".into()]),
        ..LoraConfig::default()
    };
    let err = adapter::attach(base, c.family, &big, 0, &dev).unwrap_err();
    assert!(matches!(err, AdapterError::Rank { r: 64, .. }), "{err}");
    let (c, base) = load_model(&base_dir(), &dev).unwrap();
    let none = LoraConfig {
        target_modules: TargetModules::Names(vec!["nothing_proj".into()]),
        ..LoraConfig::default()
    };
    let err = adapter::attach(base, c.family, &none, 0, &dev).unwrap_err();
    assert!(matches!(err, AdapterError::NoTargets { .. }), "{err}");
    let (c, base) = load_model(&next, &dev).unwrap();
    let fused = LoraConfig {
        target_modules: TargetModules::Names(vec!["in_proj_qkvz".into()]),
        ..LoraConfig::default()
    };
    let err = adapter::attach(base, c.family, &fused, 0, &dev).unwrap_err();
    assert!(matches!(err, AdapterError::Unsupported(_)), "{err}");
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn adapters_switch_off_to_the_base_and_generation_uses_them() {
    let dev = wgpu();
    let (_, ids) = read_fixture_ids(&lora_dir().join("reference.safetensors"), "ids");
    let (_, base) = load_model(&base_dir(), &dev).unwrap();
    let base_logits = full_logits(&base, &ids, &dev);
    let (mut model, _) = adapted("plain", &dev);
    adapter::set_mode(&mut model, AdapterMode::Off);
    assert_close(
        full_logits(&model, &ids, &dev),
        base_logits,
        1e-6,
        1e-6,
        "off",
    );

    // A 16-bit base whose Gated DeltaNet layers keep the fused decode kernels and whose
    // adapted attention projections must not: greedy decoding follows the adapted full
    // forward token by token.
    let dir = fixtures_dir().join("models/qwen3_next_tiny_bf16");
    let (c, base) = load_model_with(&dir, &dev, LoadOptions::default(), &mut |_, _| {}).unwrap();
    let cfg = LoraConfig {
        r: 2,
        ..LoraConfig::default()
    };
    let (mut model, _) = adapter::attach(base, c.family, &cfg, 3, &dev).unwrap();
    randomise_b(&mut model, &dev);
    let prompt: Vec<u32> = vec![5, 77, 130, 9];
    let opts = sluice::model::generate::GenerateOptions {
        max_new_tokens: 6,
        sampling: Default::default(),
        eos_token_ids: vec![],
    };
    let out = sluice::model::generate::generate(
        &model,
        std::slice::from_ref(&prompt),
        &opts,
        &dev,
        |_, _| {},
    )
    .unwrap();
    let mut seq: Vec<i64> = prompt.iter().map(|&i| i64::from(i)).collect();
    for &tok in &out[0] {
        let l = full_logits(&model, &seq, &dev);
        let last = sluice_tests::to_vec(l.narrow(0, seq.len() - 1, 1));
        let arg = (0..last.len())
            .max_by(|&a, &b| last[a].total_cmp(&last[b]))
            .unwrap();
        assert_eq!(tok as usize, arg, "greedy token after {seq:?}");
        seq.push(i64::from(tok));
    }
    adapter::set_mode(&mut model, AdapterMode::Off);
    let off = sluice::model::generate::generate(&model, &[prompt], &opts, &dev, |_, _| {}).unwrap();
    assert_ne!(off, out, "switching the adapters off changes nothing");
}
