//! Training infrastructure: model init, HF-layout saving, AdamW against torch, clipping,
//! gradient accumulation, non-finite skipping, checkpoints (atomic writes, exact resume).

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use sluice::model::config::LayerType;
use sluice::model::files::{load_model, open_weights};
use sluice::model::init::{TinySpec, init_model};
use sluice::model::save::{
    NamedHostTensor, ParamMut, config_json, named_params, read_params, save_model,
};
use sluice::model::{Config, HybridModel, Weights};
use sluice::nn::attention::AttentionContext;
use sluice::train::checkpoint::{TrainerState, checkpoint_contents};
use sluice::train::files::{
    FilesError, load_checkpoint, save_checkpoint, save_model_dir, write_dir_atomic_failing_after,
};
use sluice::train::optim::{AdamW, AdamWConfig, DecayRule, Grads, SkipReason};
use sluice::train::schedule::LrSchedule;
use sluice_tests::{fixtures_dir, read_fixture, to_vec, wgpu};

fn model_dir(name: &str) -> PathBuf {
    fixtures_dir().join("models").join(name)
}

/// A fresh, empty scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sluice-train-infra-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn host_params(model: &HybridModel) -> Vec<NamedHostTensor> {
    pollster::block_on(read_params(model)).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_params_identical(a: &HybridModel, b: &HybridModel, what: &str) {
    let (a, b) = (host_params(a), host_params(b));
    assert_eq!(a.len(), b.len(), "{what}: parameter count");
    for ((na, sa, va), (nb, sb, vb)) in a.iter().zip(&b) {
        assert_eq!((na, sa), (nb, sb), "{what}: names/shapes");
        assert!(bits(va) == bits(vb), "{what}: `{na}` differs");
    }
}

/// Logits `[B, T, V]` of `ids` from an empty cache.
fn logits(model: &HybridModel, ids: &[i64], b: usize, dev: &Device) -> Tensor<3> {
    let t = ids.len() / b;
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), [b, t]), dev);
    let mut cache = model.new_cache();
    let ctx = AttentionContext::contiguous(b, t, 0, dev);
    model.logits(model.hidden(ids, &mut cache, &ctx))
}

// ---------------------------------------------------------------------------------------
// Saving in Hugging Face layout

/// Saves a fixture model and checks: same tensor names/shapes/values as the fixture's own
/// checkpoint (text part), loads back (through `load_model`, as `sluice generate` does) to
/// bit-identical parameters and logits.
fn check_save_round_trip(name: &str) {
    let dev = wgpu();
    let dir = model_dir(name);
    let (cfg, model) = load_model(&dir, &dev).unwrap();
    let saved = save_model(&cfg, &model).unwrap();

    let fixture = open_weights(&dir).unwrap();
    let ours = Weights::new(vec![("saved".into(), Box::new(saved.safetensors.clone()))]).unwrap();
    assert_eq!(
        ours.names(),
        fixture.names(),
        "{name}: saved tensor names differ from the fixture's (text part)"
    );
    let st = safetensors::SafeTensors::deserialize(&saved.safetensors).unwrap();
    for n in ours.names() {
        let shape = st.tensor(&n).unwrap().shape().to_vec();
        let want = fixture
            .get(&n, &shape)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = ours.get(&n, &shape).unwrap();
        assert!(
            bits(&got.data) == bits(&want.data),
            "{name}: `{n}` values differ from the fixture's"
        );
    }

    let cfg2 = Config::from_json(&saved.config_json).unwrap();
    let mut want_cfg = cfg.clone();
    want_cfg.tie_word_embeddings = model.lm_head.is_none();
    assert_eq!(
        cfg2, want_cfg,
        "{name}: config.json does not read back equal"
    );

    let out = scratch(&format!("save-{name}"));
    let saved_dir = out.join("model");
    save_model_dir(&saved_dir, &cfg, &model, &[]).unwrap();
    let (cfg3, back) = load_model(&saved_dir, &dev).unwrap();
    assert_eq!(cfg3, want_cfg);
    assert_params_identical(&model, &back, name);
    let ids: Vec<i64> = (0..24).map(|i| (i * 37 + 5) % 256).collect();
    let (a, b) = (
        to_vec(logits(&model, &ids, 2, &dev)),
        to_vec(logits(&back, &ids, 2, &dev)),
    );
    assert!(
        bits(&a) == bits(&b),
        "{name}: logits differ after save/load"
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn save_round_trip_qwen3_next() {
    check_save_round_trip("qwen3_next_tiny");
}

#[test]
fn save_round_trip_qwen3_5() {
    check_save_round_trip("qwen3_5_tiny");
}

#[test]
fn save_round_trip_qwen3_5_moe() {
    check_save_round_trip("qwen3_5_moe_tiny");
}

// ---------------------------------------------------------------------------------------
// Initialisation

fn tiny_config() -> Config {
    let mut spec = TinySpec::new(64, 32, 2, 2);
    spec.intermediate_size = 48;
    Config::tiny_qwen3_5(&spec).unwrap()
}

#[test]
fn tiny_config_builder() {
    let spec = TinySpec::new(256, 128, 6, 3);
    let cfg = Config::tiny_qwen3_5(&spec).unwrap();
    use LayerType::{Full, Linear};
    assert_eq!(
        cfg.layer_types,
        vec![Linear, Linear, Full, Linear, Linear, Full]
    );
    assert_eq!(cfg.intermediate_size, Some(256));
    assert_eq!((cfg.num_attention_heads, cfg.linear_num_key_heads), (4, 2));
    assert!(cfg.tie_word_embeddings);
    // The JSON is what Config::from_json reads back.
    assert_eq!(Config::from_json(&config_json(&cfg)).unwrap(), cfg);
    let v: serde_json::Value = serde_json::from_str(&config_json(&cfg)).unwrap();
    assert_eq!(v["model_type"], "qwen3_5_text");
    assert_eq!(v["architectures"][0], "Qwen3_5ForCausalLM");
    // Parameter count agrees with the initialised model.
    let model = init_model(&cfg, 0, &wgpu());
    let n: usize = named_params(&model).iter().map(|(_, p)| p.numel()).sum();
    assert_eq!(cfg.num_parameters(), n);
    assert!((100_000..1_000_000).contains(&n), "{n} parameters");
}

#[test]
fn init_is_deterministic_and_follows_transformers() {
    let dev = wgpu();
    // The Qwen3-Next fixture config covers MoE (router, experts, shared expert) and an
    // untied head; the tiny Qwen3.5 config the dense, tied case.
    let (next_cfg, _) = load_model(&model_dir("qwen3_next_tiny"), &dev).unwrap();
    for cfg in [tiny_config(), next_cfg] {
        let a = init_model(&cfg, 7, &dev);
        let b = init_model(&cfg, 7, &dev);
        assert_params_identical(&a, &b, "same seed");
        // Identical on another backend (values are drawn on the host).
        let c = init_model(&cfg, 7, &Device::flex());
        assert_params_identical(&a, &c, "wgpu vs flex");
        let d = init_model(&cfg, 8, &dev);
        let (pa, pd) = (host_params(&a), host_params(&d));
        assert!(
            pa.iter()
                .zip(&pd)
                .filter(|(x, _)| x.1.len() == 2)
                .all(|(x, y)| x.2 != y.2),
            "another seed gives other matrices"
        );
        assert_eq!(a.lm_head.is_none(), cfg.tie_word_embeddings);

        let mut all_normal: Vec<f32> = Vec::new();
        for (name, shape, v) in &pa {
            if name.ends_with("A_log") {
                let lo = 0.01f32.ln();
                let hi = 16f32.ln();
                assert!(v.iter().all(|&x| x >= lo && x <= hi), "{name}: {v:?}");
            } else if name.ends_with("dt_bias") || name.ends_with("linear_attn.norm.weight") {
                assert!(v.iter().all(|&x| x == 1.0), "{name} must be ones");
            } else if shape.len() == 1 {
                // Zero-centred RMSNorms (used as 1 + w).
                assert!(v.iter().all(|&x| x == 0.0), "{name} must be zeros");
            } else {
                all_normal.extend(v);
            }
        }
        let n = all_normal.len() as f64;
        let mean = all_normal.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = all_normal
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        let kurt = all_normal
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(4))
            .sum::<f64>()
            / n
            / var.powi(2);
        assert!(mean.abs() < 5e-4, "mean {mean}");
        assert!((var.sqrt() - 0.02).abs() < 4e-4, "std {}", var.sqrt());
        assert!((kurt - 3.0).abs() < 0.1, "kurtosis {kurt} (normal: 3)");
        // A forward pass of the fresh model is finite and near-uniform over the vocab.
        let ids: Vec<i64> = (0..16).map(|i| (i * 7) % 64).collect();
        let lg = to_vec(logits(&a, &ids, 1, &dev));
        assert!(lg.iter().all(|x| x.is_finite() && x.abs() < 1.0));
    }
}

// ---------------------------------------------------------------------------------------
// AdamW against torch

#[test]
fn adamw_with_clipping_matches_torch() {
    let dev = wgpu();
    let f = read_fixture(&fixtures_dir().join("optim").join("adamw.safetensors"));
    let get = |k: &str| {
        f.get(k)
            .unwrap_or_else(|| panic!("fixture lacks {k}"))
            .clone()
    };
    let up2 = |k: &str| {
        let (s, v) = get(k);
        Param::from_tensor(Tensor::<2>::from_data(TensorData::new(v, s), &dev))
    };
    let (mut w0, mut w1) = (up2("init.w0"), up2("init.w1"));
    let mut b0 = Param::from_tensor(Tensor::<1>::from_data(
        TensorData::new(get("init.b0").1, [5]),
        &dev,
    ));
    let mut opt = AdamW::new(AdamWConfig {
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        decay: DecayRule::Matrices,
        max_grad_norm: Some(1.0),
    });
    let (_, lrs) = get("lr");
    let (_, norms) = get("grad_norm");
    for s in 0..3 {
        let mut grads = Grads::new();
        for n in ["w0", "b0", "w1"] {
            let v = get(&format!("grad.{s}.{n}")).1;
            let len = v.len();
            grads.add(
                n.into(),
                Tensor::<1>::from_data(TensorData::new(v, [len]), &dev),
            );
        }
        let mut params = vec![
            ("w0".to_string(), ParamMut::D2(&mut w0)),
            ("b0".to_string(), ParamMut::D1(&mut b0)),
            ("w1".to_string(), ParamMut::D2(&mut w1)),
        ];
        let r = pollster::block_on(opt.step_params_async(&mut params, grads, f64::from(lrs[s])))
            .unwrap();
        assert_eq!(r.skipped, None);
        assert_eq!(r.step, s as u64 + 1);
        assert!(
            (r.grad_norm - f64::from(norms[s])).abs() < 1e-5 * f64::from(norms[s]),
            "step {s}: grad norm {} vs torch {}",
            r.grad_norm,
            norms[s]
        );
        // Clipping: the clipped norm is max_norm when the norm exceeds it, else untouched.
        if norms[s] > 1.0 {
            assert!((r.clip_scale * r.grad_norm - 1.0).abs() < 1e-5, "step {s}");
        } else {
            assert_eq!(r.clip_scale, 1.0);
        }
        let check = |n: &str, got: Vec<f32>| {
            let want = get(&format!("param.{s}.{n}")).1;
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 + 1e-6 * b.abs(),
                    "step {s} {n}[{i}]: {a} vs torch {b}"
                );
            }
        };
        check("w0", to_vec(w0.val()));
        check("b0", to_vec(b0.val()));
        check("w1", to_vec(w1.val()));
    }
    for n in ["w0", "b0", "w1"] {
        let m = opt.moments(n).unwrap();
        for (which, t) in [("exp_avg", &m.exp_avg), ("exp_avg_sq", &m.exp_avg_sq)] {
            let want = get(&format!("{which}.{n}")).1;
            for (a, b) in to_vec(t.clone()).iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-7 + 1e-5 * b.abs(),
                    "{which}.{n}: {a} vs {b}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A minimal next-token training loop on a tiny model

/// Deterministic token rows `[b, t]` for batch `i`.
fn batch(i: u64, b: usize, t: usize, vocab: usize) -> Vec<i64> {
    (0..b * t)
        .map(|j| ((i as usize * 131 + j * 17 + (j / t) * 7) % vocab) as i64)
        .collect()
}

/// Mean next-token cross entropy of rows `ids` `[b, t]`, scaled by `scale`.
fn ce_loss(model: &HybridModel, ids: &[i64], b: usize, scale: f32, dev: &Device) -> Tensor<1> {
    let t = ids.len() / b;
    let inputs: Vec<i64> = (0..b)
        .flat_map(|r| ids[r * t..r * t + t - 1].to_vec())
        .collect();
    let targets: Vec<i64> = (0..b)
        .flat_map(|r| ids[r * t + 1..(r + 1) * t].to_vec())
        .collect();
    let lg = logits(model, &inputs, b, dev);
    let logp = log_softmax(lg, 2);
    let tgt = Tensor::<3, Int>::from_data(TensorData::new(targets, [b, t - 1, 1]), dev);
    logp.gather(2, tgt)
        .sum()
        .neg()
        .mul_scalar(scale / (b * (t - 1)) as f32)
}

/// One training step on `batch(i)`; returns the loss.
fn train_step(model: &mut HybridModel, opt: &mut AdamW, i: u64, sched: &LrSchedule, dev: &Device) {
    let vocab = model.vocab_size();
    let ids = batch(i, 2, 12, vocab);
    let loss = ce_loss(model, &ids, 2, 1.0, dev);
    let g = loss.backward();
    let mut grads = Grads::new();
    grads.accumulate(model, &g, Some(&loss));
    let r = opt.step(model, grads, sched.lr(i)).unwrap();
    assert_eq!(r.skipped, None);
}

fn schedule() -> LrSchedule {
    LrSchedule::WarmupCosine {
        peak_lr: 3e-3,
        min_lr: 3e-4,
        warmup_steps: 2,
        total_steps: 6,
    }
}

#[test]
fn accumulated_micro_batches_equal_one_big_batch() {
    let dev = wgpu().autodiff();
    let cfg = tiny_config();
    let ids = batch(3, 4, 10, cfg.vocab_size);
    let cfg_opt = AdamWConfig {
        max_grad_norm: Some(0.5),
        ..Default::default()
    };

    let mut big = init_model(&cfg, 1, &dev);
    let loss = ce_loss(&big, &ids, 4, 1.0, &dev);
    let mut g_big = Grads::new();
    g_big.accumulate(&big, &loss.backward(), Some(&loss));

    let mut small = init_model(&cfg, 1, &dev);
    let mut g_acc = Grads::new();
    for half in ids.chunks(2 * 10) {
        // Each micro-batch's mean scaled by 1/2: the sum is the big batch's mean.
        let l = ce_loss(&small, half, 2, 0.5, &dev);
        g_acc.accumulate(&small, &l.backward(), Some(&l));
    }
    assert_eq!(g_acc.micro_batches(), 2);
    let names: Vec<&str> = g_big.names().collect();
    assert_eq!(names, g_acc.names().collect::<Vec<_>>());
    assert_eq!(
        names.len(),
        named_params(&big).len(),
        "every parameter has a gradient"
    );
    for n in &names {
        sluice_tests::assert_close(
            g_acc.get(n).unwrap().clone(),
            g_big.get(n).unwrap().clone(),
            1e-4,
            1e-6,
            n,
        );
    }
    let mut o1 = AdamW::new(cfg_opt.clone());
    let mut o2 = AdamW::new(cfg_opt);
    let r1 = o1.step(&mut big, g_big, 1e-3).unwrap();
    let r2 = o2.step(&mut small, g_acc, 1e-3).unwrap();
    assert!((r1.grad_norm - r2.grad_norm).abs() < 1e-4 * r1.grad_norm);
    assert!((r1.loss - r2.loss).abs() < 1e-5 * r1.loss.abs());
    assert!(
        r1.clip_scale < 1.0,
        "the test clips (norm {})",
        r1.grad_norm
    );
    let (a, b) = (host_params(&big), host_params(&small));
    for ((n, _, x), (_, _, y)) in a.iter().zip(&b) {
        for (p, q) in x.iter().zip(y) {
            assert!((p - q).abs() < 2e-6, "{n}: {p} vs {q}");
        }
    }
}

#[test]
fn non_finite_loss_or_gradient_skips_the_step() {
    let dev = wgpu().autodiff();
    let cfg = tiny_config();
    let mut model = init_model(&cfg, 2, &dev);
    let mut opt = AdamW::new(AdamWConfig::default());
    train_step(&mut model, &mut opt, 0, &schedule(), &dev);
    let before = host_params(&model);
    let state_before = pollster::block_on(opt.to_safetensors_async()).unwrap();

    // NaN loss.
    let ids = batch(1, 2, 12, cfg.vocab_size);
    let loss = ce_loss(&model, &ids, 2, 1.0, &dev);
    let mut grads = Grads::new();
    grads.accumulate(&model, &loss.backward(), Some(&loss));
    grads.add_loss(Tensor::<1>::from_floats([f32::NAN], &dev));
    let r = opt.step(&mut model, grads, 1e-3).unwrap();
    assert_eq!(r.skipped, Some(SkipReason::NonFiniteLoss));

    // Infinite gradient entry (with a finite loss).
    let loss = ce_loss(&model, &ids, 2, 1.0, &dev);
    let g = loss.backward();
    let mut grads = Grads::new();
    grads.accumulate(&model, &g, Some(&loss));
    let h = cfg.hidden_size;
    let mut spike = vec![0.0f32; h];
    spike[3] = f32::INFINITY;
    grads.add(
        "model.norm.weight".into(),
        Tensor::<1>::from_floats(spike.as_slice(), &dev),
    );
    let r = opt.step(&mut model, grads, 1e-3).unwrap();
    assert_eq!(r.skipped, Some(SkipReason::NonFiniteGradient));

    // NaN gradient (inf · 0).
    let mut grads = Grads::new();
    let mut nan = vec![0.0f32; h];
    nan[0] = f32::NAN;
    grads.add(
        "model.norm.weight".into(),
        Tensor::<1>::from_floats(nan.as_slice(), &dev),
    );
    let r = opt.step(&mut model, grads, 1e-3).unwrap();
    assert_eq!(r.skipped, Some(SkipReason::NonFiniteGradient));

    assert_eq!(opt.step_count(), 1, "skipped steps do not count");
    let after = host_params(&model);
    for ((n, _, x), (_, _, y)) in before.iter().zip(&after) {
        assert!(bits(x) == bits(y), "{n} changed by a skipped step");
    }
    let state_after = pollster::block_on(opt.to_safetensors_async()).unwrap();
    assert!(
        state_before == state_after,
        "optimizer state changed by a skipped step"
    );

    // The next good step still runs.
    train_step(&mut model, &mut opt, 1, &schedule(), &dev);
    assert_eq!(opt.step_count(), 2);

    // A learning rate that is not a finite number ≥ 0 is an error, not a step.
    for lr in [f64::NAN, f64::INFINITY, -1e-3] {
        let mut grads = Grads::new();
        grads.add(
            "model.norm.weight".into(),
            Tensor::<1>::from_floats(vec![0.1f32; h].as_slice(), &dev),
        );
        let e = opt.step(&mut model, grads, lr).unwrap_err();
        assert!(e.to_string().contains("learning rate"), "{e}");
    }
    // An update that would overflow f32 is skipped too: nothing changes.
    let before = host_params(&model);
    let steps = opt.step_count();
    let mut grads = Grads::new();
    grads.add(
        "model.norm.weight".into(),
        Tensor::<1>::from_floats(vec![1.0f32; h].as_slice(), &dev),
    );
    let r = opt.step(&mut model, grads, 1e39).unwrap();
    assert_eq!(r.skipped, Some(SkipReason::NonFiniteUpdate));
    assert_eq!(opt.step_count(), steps);
    for ((n, _, x), (_, _, y)) in before.iter().zip(&host_params(&model)) {
        assert!(bits(x) == bits(y), "{n} changed by a skipped update");
    }
    // Non-finite weights never reach a checkpoint: the writer refuses them, naming the tensor.
    let mut w = vec![1.0f32; h];
    w[2] = f32::INFINITY;
    model.norm = burn::module::Param::from_tensor(Tensor::<1>::from_floats(w.as_slice(), &dev));
    let e = pollster::block_on(sluice::model::save::read_params(&model)).unwrap_err();
    assert!(e.to_string().contains("model.norm.weight"), "{e}");
}

#[test]
fn optimizer_state_round_trips_exactly() {
    let dev = wgpu().autodiff();
    let cfg = tiny_config();
    let mut model = init_model(&cfg, 3, &dev);
    let mut opt = AdamW::new(AdamWConfig {
        decay: DecayRule::Names(vec!["mlp".into()]),
        ..Default::default()
    });
    for i in 0..2 {
        train_step(&mut model, &mut opt, i, &schedule(), &dev);
    }
    let bytes = pollster::block_on(opt.to_safetensors_async()).unwrap();
    let back = AdamW::from_safetensors(&bytes, &dev).unwrap();
    assert_eq!(back.step_count(), 2);
    assert_eq!(back.config, opt.config);
    back.check_against(&model).unwrap();
    for (name, p) in named_params(&model) {
        let (a, b) = (opt.moments(&name).unwrap(), back.moments(&name).unwrap());
        assert_eq!(a.shape, p.shape());
        assert_eq!(b.shape, p.shape());
        assert!(bits(&to_vec(a.exp_avg.clone())) == bits(&to_vec(b.exp_avg.clone())));
        assert!(bits(&to_vec(a.exp_avg_sq.clone())) == bits(&to_vec(b.exp_avg_sq.clone())));
    }
    assert!(bytes == pollster::block_on(back.to_safetensors_async()).unwrap());
    // Moments for another model are refused with the parameter named.
    let other = init_model(
        &Config::tiny_qwen3_5(&TinySpec::new(64, 64, 2, 2)).unwrap(),
        0,
        &dev,
    );
    let e = back.check_against(&other).unwrap_err().to_string();
    assert!(
        e.contains("model.embed_tokens.weight") && e.contains("shape"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------
// Checkpoints

fn state_at(step: u64) -> TrainerState {
    let mut s = TrainerState {
        step,
        data_epoch: 1,
        data_index: step * 2,
        schedule: Some(schedule()),
        metadata: serde_json::json!({"run": "test", "loss": [1.5, 1.25]}),
        ..Default::default()
    };
    s.rng.insert(
        "sampler".into(),
        vec![u64::MAX, 0x9e37_79b9_7f4a_7c15, step],
    );
    s
}

#[test]
fn resume_from_checkpoint_is_bit_identical() {
    let dev = wgpu().autodiff();
    let cfg = tiny_config();
    let sched = schedule();
    let opt_cfg = AdamWConfig {
        max_grad_norm: Some(0.5),
        ..Default::default()
    };

    let mut straight = init_model(&cfg, 11, &dev);
    let mut o = AdamW::new(opt_cfg.clone());
    for i in 0..4 {
        train_step(&mut straight, &mut o, i, &sched, &dev);
    }

    let mut first = init_model(&cfg, 11, &dev);
    let mut o1 = AdamW::new(opt_cfg);
    for i in 0..2 {
        train_step(&mut first, &mut o1, i, &sched, &dev);
    }
    let root = scratch("resume");
    let ckpt = root.join("checkpoint");
    let tok = (
        "tokenizer.json".to_string(),
        std::fs::read(model_dir("qwen3_next_tiny").join("tokenizer.json")).unwrap(),
    );
    save_checkpoint(
        &ckpt,
        &cfg,
        &first,
        &o1,
        &state_at(2),
        std::slice::from_ref(&tok),
    )
    .unwrap();
    drop((first, o1));

    let r = load_checkpoint(&ckpt, &dev).unwrap();
    assert_eq!(r.state, state_at(2));
    assert_eq!(r.config, cfg);
    assert_eq!(r.optimizer.step_count(), 2);
    assert!(std::fs::read(ckpt.join("tokenizer.json")).unwrap() == tok.1);
    let (mut resumed, mut o2) = (r.model, r.optimizer);
    for i in r.state.step..4 {
        train_step(&mut resumed, &mut o2, i, &sched, &dev);
    }
    assert_params_identical(&straight, &resumed, "resumed vs uninterrupted");
    // The checkpoint is a model folder `sluice generate` loads.
    let (_, m) = load_model(&ckpt, &dev).unwrap();
    assert_eq!(named_params(&m).len(), named_params(&straight).len());
    let _ = std::fs::remove_dir_all(&root);
}

/// Files of a directory as (name, bytes), sorted by name.
type Files = Vec<(String, Vec<u8>)>;

fn dir_files(dir: &Path) -> Files {
    let mut v: Files = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// A model trained one step and checkpointed once (`state_at(1)`) in a scratch folder.
struct Saved {
    dev: Device,
    cfg: Config,
    model: HybridModel,
    opt: AdamW,
    root: PathBuf,
    ckpt: PathBuf,
    /// The checkpoint's files as first written.
    first: Files,
}

impl Saved {
    fn new(tag: &str) -> Self {
        let dev = wgpu().autodiff();
        let cfg = tiny_config();
        let mut model = init_model(&cfg, 5, &dev);
        let mut opt = AdamW::new(AdamWConfig::default());
        train_step(&mut model, &mut opt, 0, &schedule(), &dev);
        let root = scratch(tag);
        let ckpt = root.join("ckpt");
        save_checkpoint(&ckpt, &cfg, &model, &opt, &state_at(1), &[]).unwrap();
        let first = dir_files(&ckpt);
        Saved {
            dev,
            cfg,
            model,
            opt,
            root,
            ckpt,
            first,
        }
    }

    /// The first checkpoint is intact, loads, and no temporary file is left beside it.
    fn assert_first_kept(&self) {
        assert!(
            dir_files(&self.ckpt) == self.first,
            "the previous checkpoint changed"
        );
        let entries: Vec<String> = std::fs::read_dir(&self.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(entries, vec!["ckpt"], "temporary files left behind");
        let state = load_checkpoint(&self.ckpt, &self.dev).unwrap().state;
        assert_eq!(state, state_at(1));
    }
}

impl Drop for Saved {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[test]
fn interrupted_write_keeps_the_previous_checkpoint() {
    let mut s = Saved::new("interrupt");
    assert_eq!(
        s.first.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        vec![
            "config.json",
            "model.safetensors",
            "optimizer.safetensors",
            "trainer_state.json"
        ]
    );

    // A second checkpoint whose write fails after two of its four files.
    train_step(&mut s.model, &mut s.opt, 1, &schedule(), &s.dev);
    let files = pollster::block_on(sluice::train::checkpoint::checkpoint_files_async(
        &s.cfg,
        &s.model,
        &s.opt,
        &state_at(2),
    ))
    .unwrap();
    assert!(files.iter().zip(&s.first).any(|(a, b)| a.1 != b.1));
    let e = write_dir_atomic_failing_after(&s.ckpt, &files, Some(2)).unwrap_err();
    assert!(matches!(e, FilesError::Io { .. }), "{e}");
    s.assert_first_kept();

    // A crash between the two renames leaves the old checkpoint at `.ckpt.old`: it is put back.
    std::fs::rename(&s.ckpt, s.root.join(".ckpt.old")).unwrap();
    assert_eq!(load_checkpoint(&s.ckpt, &s.dev).unwrap().state, state_at(1));
    assert!(dir_files(&s.ckpt) == s.first);

    // A complete write replaces it.
    write_dir_atomic_failing_after(&s.ckpt, &files, None).unwrap();
    assert_eq!(load_checkpoint(&s.ckpt, &s.dev).unwrap().state, state_at(2));
}

/// Weights and moments are streamed into the checkpoint tensor by tensor: a value or a write
/// that fails once most of `model.safetensors` is on disk leaves the previous checkpoint
/// as it was and no temporary files.
#[test]
fn a_write_failing_midway_keeps_the_previous_checkpoint() {
    let mut s = Saved::new("midway");

    // A disk that fills up inside model.safetensors.
    let contents = checkpoint_contents(&s.cfg, &s.model, &s.opt, &state_at(1)).unwrap();
    let (name, model_file) = contents.into_iter().nth(1).unwrap();
    assert_eq!(name, "model.safetensors");
    let mut disk = [0u8; 4096];
    let e = pollster::block_on(model_file.write_to(&mut &mut disk[..])).unwrap_err();
    assert!(
        e.to_string().starts_with("model.safetensors: writing"),
        "{e}"
    );

    // The final norm is written after every layer: an infinity there stops the stream late.
    let h = s.cfg.hidden_size;
    let mut w = vec![1.0f32; h];
    w[h - 1] = f32::INFINITY;
    s.model.norm = Param::from_tensor(Tensor::<1>::from_floats(w.as_slice(), &s.dev));
    let e = save_checkpoint(&s.ckpt, &s.cfg, &s.model, &s.opt, &state_at(2), &[]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("model.norm.weight"),
        "{msg}"
    );
    s.assert_first_kept();
}

#[test]
fn bad_checkpoints_give_clear_errors() {
    let dev = wgpu().autodiff();
    let cfg = tiny_config();
    let mut model = init_model(&cfg, 6, &dev);
    let mut opt = AdamW::new(AdamWConfig::default());
    train_step(&mut model, &mut opt, 0, &schedule(), &dev);
    let root = scratch("bad");
    let good = root.join("good");
    save_checkpoint(&good, &cfg, &model, &opt, &state_at(1), &[]).unwrap();
    let files = dir_files(&good);
    let variant = |name: &str, edit: &dyn Fn(&mut Files)| -> String {
        let mut f = files.clone();
        edit(&mut f);
        let d = root.join(name);
        write_dir_atomic_failing_after(&d, &f, None).unwrap();
        load_checkpoint(&d, &dev).unwrap_err().to_string()
    };

    let e = variant("missing", &|f| f.retain(|x| x.0 != "optimizer.safetensors"));
    assert!(
        e.contains("optimizer.safetensors") && e.contains("missing"),
        "{e}"
    );

    // A config with another width: the weights no longer fit.
    let e = variant("shape", &|f| {
        let mut c = cfg.clone();
        c.intermediate_size = Some(40);
        f[0].1 = config_json(&c).into_bytes();
    });
    assert!(
        e.contains("model.layers.0.mlp.gate_proj.weight") && e.contains("shape"),
        "{e}"
    );

    // Moments under a name the model does not have.
    let e = variant("names", &|f| {
        let st = safetensors::SafeTensors::deserialize(&f[2].1).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&f[2].1).unwrap();
        let tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (n.replace("model.norm.weight", "model.nrom.weight"), v))
            .collect();
        f[2].1 = safetensors::serialize(tensors, meta.metadata().clone()).unwrap();
    });
    assert!(
        e.contains("model.nrom.weight") && e.contains("not a parameter"),
        "{e}"
    );

    // A model tensor with a wrong name.
    let e = variant("extra", &|f| {
        let st = safetensors::SafeTensors::deserialize(&f[1].1).unwrap();
        let mut tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> =
            st.tensors().into_iter().collect();
        let extra = tensors[0].1.clone();
        tensors.push(("model.layers.0.mlp.gate_projj.weight".into(), extra));
        f[1].1 = safetensors::serialize(tensors, None).unwrap();
    });
    assert!(
        e.contains("gate_projj") && e.contains("does not use"),
        "{e}"
    );

    let e = variant("state", &|f| f[3].1 = b"{\"step\": 1}".to_vec());
    assert!(e.contains("trainer_state.json"), "{e}");
    let _ = std::fs::remove_dir_all(&root);
}
