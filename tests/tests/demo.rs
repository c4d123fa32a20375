//! The training session (`sluice::train::session`) on the demo's recipe, as the desktop app
//! and the browser worker drive it: checkpoint files → restore continues bit-identically, a
//! trained model can start a run straight in RL, bad checkpoints are refused with a message.

use serde_json::Value;
use sluice::demo::DemoConfig;
use sluice::rl::step::RlConfig;
use sluice::train::record::StepPhase;
use sluice::train::session::{REFERENCE_FILE, Session};
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

fn new(cfg: DemoConfig, dev: &burn::tensor::Device) -> Session {
    Session::demo(cfg.recipe().unwrap(), None, dev).unwrap()
}

fn step(s: &mut Session) -> Option<Value> {
    let rec = pollster::block_on(s.step_async(&mut |_| {})).unwrap();
    rec.map(|r| r.to_json())
}

fn files(s: &Session) -> Vec<(String, Vec<u8>)> {
    pollster::block_on(s.checkpoint_files_async()).unwrap()
}

fn restore(files: Vec<(String, Vec<u8>)>, dev: &burn::tensor::Device) -> Result<Session, String> {
    let no_files = |p: &std::path::Path| Err(format!("{}: no files here", p.display()));
    Session::restore(files, &no_files, ".".as_ref(), &dev.clone().autodiff())
        .map_err(|e| e.to_string())
}

#[test]
fn checkpoint_restore_continues_bit_identically_in_both_phases() {
    let dev = wgpu();
    let mut a = new(tiny(), &dev);
    step(&mut a).unwrap();
    // Mid-SFT checkpoint: no reference model yet.
    let mid_sft = files(&a);
    assert!(mid_sft.iter().all(|(n, _)| n != REFERENCE_FILE));
    assert_eq!(mid_sft.last().unwrap().0, "trainer_state.json");
    let mut b = restore(mid_sft, &dev).unwrap();
    assert_eq!(b.phase_progress(), (StepPhase::Sft, 1));
    for _ in 0..2 {
        // SFT step 2, then RL step 1.
        assert_eq!(step(&mut a), step(&mut b));
    }
    assert_eq!(a.phase_progress(), (StepPhase::Rl, 1));
    let mid_rl = files(&a);
    assert!(mid_rl.iter().any(|(n, _)| n == REFERENCE_FILE));
    assert_eq!(mid_rl, files(&b), "same run, same bytes");
    let mut c = restore(mid_rl, &dev).unwrap();
    let ra = step(&mut a).unwrap();
    assert_eq!(Some(ra.clone()), step(&mut c));
    assert!(ra["reward"].is_number() && ra["kl"].is_number(), "{ra}");
    assert_eq!(files(&a), files(&c));
}

#[test]
fn a_trained_model_starts_straight_in_rl() {
    let dev = wgpu();
    let mut a = new(tiny(), &dev);
    step(&mut a).unwrap();
    let cfg = DemoConfig {
        sft_steps: 0,
        ..tiny()
    };
    let start = (a.config().clone(), a.model().clone());
    let mut b = Session::demo(cfg.recipe().unwrap(), Some(start), &dev).unwrap();
    let rec = step(&mut b).unwrap();
    assert_eq!(rec["phase"], "rl");
    assert_eq!(b.phase_progress(), (StepPhase::Rl, 1));
    let e = pollster::block_on(b.evaluate_async()).unwrap();
    assert!((0.0..=1.0).contains(&e.greedy));

    // A non-demo vocabulary, a model without autodiff: refused with a reason.
    let mut other = a.config().clone();
    other.vocab_size = 32;
    let err = Session::demo(
        tiny().recipe().unwrap(),
        Some((other, a.model().clone())),
        &dev,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("vocabulary"), "{err}");
    let plain = sluice::model::init::init_model(a.config(), 0, &dev);
    let err = Session::demo(
        tiny().recipe().unwrap(),
        Some((a.config().clone(), plain)),
        &dev,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("autodiff"), "{err}");
}

#[test]
fn bad_checkpoints_name_the_problem() {
    let dev = wgpu();
    let mut a = new(tiny(), &dev);
    for _ in 0..3 {
        step(&mut a).unwrap();
    }
    let good = files(&a);
    let without = |name: &str| -> Vec<(String, Vec<u8>)> {
        good.iter().filter(|(n, _)| n != name).cloned().collect()
    };
    let err = restore(without(REFERENCE_FILE), &dev).err().unwrap();
    assert!(err.contains(REFERENCE_FILE), "{err}");
    let err = restore(without("optimizer.safetensors"), &dev)
        .err()
        .unwrap();
    assert!(err.contains("optimizer.safetensors"), "{err}");
    let mut broken = good.clone();
    for (n, b) in &mut broken {
        if n == "model.safetensors" {
            b.truncate(b.len() / 2);
        }
    }
    let err = restore(broken, &dev).err().unwrap();
    assert!(err.contains("model.safetensors"), "{err}");
    let mut no_meta = good.clone();
    for (n, b) in &mut no_meta {
        if n == "trainer_state.json" {
            let mut v: Value = serde_json::from_slice(b).unwrap();
            v["metadata"] = Value::Null;
            *b = serde_json::to_vec(&v).unwrap();
        }
    }
    let err = restore(no_meta, &dev).err().unwrap();
    assert!(err.contains("metadata.recipe"), "{err}");
}

#[test]
fn evaluation_is_due_every_n_steps_and_at_phase_ends() {
    let dev = wgpu();
    let cfg = DemoConfig {
        eval_every: 2,
        sft_steps: 3,
        rl_steps: 2,
        ..tiny()
    };
    let mut s = new(cfg, &dev);
    let mut due = vec![];
    while step(&mut s).is_some() {
        due.push(s.eval_due());
    }
    // SFT 1, 2 (every 2), 3 (end); RL 1, 2 (every 2 and end).
    assert_eq!(due, [false, true, true, false, true]);
    assert_eq!(s.heldout().len(), 8);
}
