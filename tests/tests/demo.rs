//! The demo state machine (`sluice::demo::run`) as the desktop app and the browser worker
//! drive it: checkpoint → restore continues bit-identically, a trained model can start a run
//! straight in RL, bad checkpoints are refused with a message.

use serde_json::Value;
use sluice::demo::run::{Demo, DemoConfig, Phase, REFERENCE_FILE};
use sluice::rl::step::RlConfig;
use sluice_tests::wgpu;

fn tiny() -> DemoConfig {
    DemoConfig {
        task: "sort:3".into(),
        hidden: 16,
        eval_size: 8,
        eval_samples: 1,
        sft_steps: 2,
        sft_batch: 4,
        rl_steps: 3,
        rl: RlConfig {
            preset: Some(sluice::rl::presets::Preset::Grpo),
            group_size: 2,
            prompts_per_step: 2,
            ..RlConfig::default()
        },
        ..DemoConfig::default()
    }
}

/// Drops fields that are wall-clock timings.
fn stable(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.retain(|k, _| !k.contains("time") && !k.ends_with("_ms") && !k.contains("per_s"));
    }
    v
}

fn step(d: &mut Demo) -> Option<Value> {
    pollster::block_on(d.step_async()).unwrap().map(stable)
}

fn files(d: &Demo) -> Vec<(String, Vec<u8>)> {
    pollster::block_on(d.checkpoint_files_async()).unwrap()
}

#[test]
fn checkpoint_restore_continues_bit_identically_in_both_phases() {
    let dev = wgpu();
    let mut a = Demo::new(tiny(), &dev).unwrap();
    step(&mut a).unwrap();
    // Mid-SFT checkpoint: no reference model yet.
    let mid_sft = files(&a);
    assert!(mid_sft.iter().all(|(n, _)| n != REFERENCE_FILE));
    assert_eq!(mid_sft.last().unwrap().0, "trainer_state.json");
    let mut b = Demo::restore(mid_sft, &dev).unwrap();
    assert_eq!((b.phase, b.step), (Phase::Sft, 1));
    for _ in 0..2 {
        // SFT step 2, then RL step 1 (the phase change happens inside step 3).
        assert_eq!(step(&mut a), step(&mut b));
    }
    assert_eq!((a.phase, a.step), (Phase::Rl, 1));
    let mid_rl = files(&a);
    assert!(mid_rl.iter().any(|(n, _)| n == REFERENCE_FILE));
    assert_eq!(mid_rl, files(&b), "same run, same bytes");
    let mut c = Demo::restore(mid_rl, &dev).unwrap();
    let ra = step(&mut a).unwrap();
    assert_eq!(Some(ra.clone()), step(&mut c));
    assert!(ra["reward"].is_number() && ra["kl"].is_number(), "{ra}");
    assert_eq!(files(&a), files(&c));
}

#[test]
fn a_trained_model_starts_straight_in_rl() {
    let dev = wgpu();
    let mut a = Demo::new(tiny(), &dev).unwrap();
    step(&mut a).unwrap();
    let cfg = DemoConfig {
        sft_steps: 0,
        ..tiny()
    };
    let b = Demo::from_model(cfg, a.config.clone(), a.model.clone(), &dev);
    let mut b = b.unwrap();
    let rec = step(&mut b).unwrap();
    assert_eq!(rec["phase"], "rl");
    assert_eq!(b.phase, Phase::Rl);
    let e = pollster::block_on(b.evaluate_async()).unwrap();
    assert!((0.0..=1.0).contains(&e.greedy));

    // A non-demo vocabulary, a model without autodiff: refused with a reason.
    let mut other = a.config.clone();
    other.vocab_size = 32;
    let err = Demo::from_model(tiny(), other, a.model.clone(), &dev)
        .err()
        .unwrap();
    assert!(err.to_string().contains("vocabulary"), "{err}");
    let plain = sluice::model::init::init_model(&a.config, 0, &dev);
    let err = Demo::from_model(tiny(), a.config.clone(), plain, &dev)
        .err()
        .unwrap();
    assert!(err.to_string().contains("autodiff"), "{err}");
}

#[test]
fn bad_checkpoints_name_the_problem() {
    let dev = wgpu();
    let mut a = Demo::new(tiny(), &dev).unwrap();
    for _ in 0..3 {
        step(&mut a).unwrap();
    }
    let good = files(&a);
    let without = |name: &str| -> Vec<(String, Vec<u8>)> {
        good.iter().filter(|(n, _)| n != name).cloned().collect()
    };
    let err = Demo::restore(without(REFERENCE_FILE), &dev).err().unwrap();
    assert!(err.to_string().contains(REFERENCE_FILE), "{err}");
    let err = Demo::restore(without("optimizer.safetensors"), &dev)
        .err()
        .unwrap();
    assert!(err.to_string().contains("optimizer.safetensors"), "{err}");
    let mut broken = good.clone();
    for (n, b) in &mut broken {
        if n == "model.safetensors" {
            b.truncate(b.len() / 2);
        }
    }
    let err = Demo::restore(broken, &dev).err().unwrap();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    let mut no_meta = good.clone();
    for (n, b) in &mut no_meta {
        if n == "trainer_state.json" {
            let mut v: Value = serde_json::from_slice(b).unwrap();
            v["metadata"] = Value::Null;
            *b = serde_json::to_vec(&v).unwrap();
        }
    }
    let err = Demo::restore(no_meta, &dev).err().unwrap();
    assert!(err.to_string().contains("metadata.demo"), "{err}");
}
