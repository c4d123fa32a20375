//! The RL loop end to end on the WGSL path: every preset runs a full step (rollouts, rewards,
//! shaping, advantages, loss, AdamW) on a tiny fresh model, and a short GRPO run raises the
//! reward of a toy task.

use burn::module::Module;
use sluice::demo::vocab;
use sluice::model::Config;
use sluice::model::init::init_model;
use sluice::rl::kl::KlController;
use sluice::rl::presets::Preset;
use sluice::rl::rewards::{FnReward, Sample, WeightedRewards};
use sluice::rl::step::{Policy, Prompt, Reference, RlConfig, rl_step_async};
use sluice::train::optim::{AdamW, AdamWConfig};
use sluice_tests::wgpu;

/// Reward: the fraction of generated tokens that are the digit 7 (dense, so a few steps of
/// policy gradient visibly raise it from chance, 1/14).
fn sevens() -> WeightedRewards<'static> {
    WeightedRewards::new().with(
        FnReward::new("sevens", |s: &Sample| {
            let ids = s.completion_ids.as_ref()?;
            let seven = vocab::encode("7")[0];
            Some(ids.iter().filter(|&&t| t == seven).count() as f64 / ids.len().max(1) as f64)
        }),
        1.0,
    )
}

fn prompts(n: usize) -> Vec<Prompt> {
    (0..n)
        .map(|i| {
            let text = format!("{}=", 10 + i);
            Prompt {
                ids: vocab::encode(&text),
                text,
                reference: Some("7777".into()),
            }
        })
        .collect()
}

fn tiny(hidden: usize, seed: u64) -> (Config, sluice::model::HybridModel) {
    let cfg = Config::from_json(&vocab::model_config_json(hidden)).unwrap();
    let model = init_model(&cfg, seed, &wgpu().autodiff());
    (cfg, model)
}

#[test]
fn every_preset_runs_a_step() {
    let dev = wgpu().autodiff();
    for preset in Preset::ALL {
        let (_, mut model) = tiny(16, 1);
        let reference = model.valid();
        let mut opt = AdamW::new(AdamWConfig::default());
        let cfg = RlConfig {
            preset: Some(preset),
            group_size: 4,
            prompts_per_step: 2,
            max_new_tokens: 4,
            num_iterations: 2,
            micro_batch_rows: 5,
            max_refills: 1,
            ..RlConfig::default()
        };
        let mut objective = preset.objective();
        if let Some(o) = objective.shaping.overlong.as_mut() {
            o.max_len = 4;
            o.cache_len = 2;
        }
        let mut kl = objective.reward_kl.controller.clone();
        let mut next = |n: usize| prompts(n);
        let before = model
            .embed_tokens
            .param()
            .expect("f32 embedding")
            .val()
            .into_data();
        let rep = pollster::block_on(rl_step_async(
            Policy {
                model: &mut model,
                optimizer: &mut opt,
                reference: Reference::Model(&reference),
                kl_controller: &mut kl,
            },
            1e-3,
            &cfg,
            &objective,
            &sevens(),
            &mut next,
            &[vocab::EOS],
            &|ids: &[u32]| vocab::decode(ids),
            7,
            &dev,
            &mut |_| {},
        ))
        .unwrap_or_else(|e| panic!("{preset}: {e}"));
        let rec = rep.to_record();
        assert!(
            rec["reward"].as_f64().unwrap().is_finite(),
            "{preset}: {rec}"
        );
        if rep.no_update {
            assert!(
                objective.shaping.dynamic_sampling,
                "{preset}: only DAPO may skip"
            );
            continue;
        }
        assert!(rec["loss"].as_f64().unwrap().is_finite(), "{preset}: {rec}");
        assert_eq!(opt.step_count(), 2, "{preset}: μ = 2 passes → 2 steps");
        assert_ne!(
            model
                .embed_tokens
                .param()
                .expect("f32 embedding")
                .val()
                .into_data(),
            before,
            "{preset}: weights changed"
        );
    }
}

#[test]
fn grpo_raises_the_reward_of_a_toy_task() {
    let dev = wgpu().autodiff();
    let (_, mut model) = tiny(32, 3);
    let mut opt = AdamW::new(AdamWConfig {
        weight_decay: 0.0,
        ..AdamWConfig::default()
    });
    let cfg = RlConfig {
        preset: Some(Preset::DrGrpo),
        group_size: 8,
        prompts_per_step: 4,
        max_new_tokens: 4,
        ..RlConfig::default()
    };
    let objective = Preset::DrGrpo.objective();
    let mut kl = KlController::Fixed { coef: 0.0 };
    let mut rewards_seen = Vec::new();
    for step in 0..12u64 {
        let mut next = |n: usize| prompts(n);
        let rep = pollster::block_on(rl_step_async(
            Policy {
                model: &mut model,
                optimizer: &mut opt,
                reference: Reference::None,
                kl_controller: &mut kl,
            },
            2e-2,
            &cfg,
            &objective,
            &sevens(),
            &mut next,
            &[vocab::EOS],
            &|ids: &[u32]| vocab::decode(ids),
            100 + step,
            &dev,
            &mut |_| {},
        ))
        .unwrap();
        rewards_seen.push(rep.score_mean);
    }
    let first: f64 = rewards_seen[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = rewards_seen[9..].iter().sum::<f64>() / 3.0;
    assert!(
        last > first + 0.2 && last > 0.3,
        "reward should rise clearly: {rewards_seen:?}"
    );
}

/// LoRA-GRPO: the KL reference is the policy with its adapters off (no second model). Fresh
/// adapters (B = 0) leave the policy equal to the base, so the first step's KL is exactly 0;
/// only the adapters train, and after a step the KL to the base is positive.
#[test]
fn lora_grpo_uses_the_base_as_its_reference() {
    use sluice::model::adapter::{self, LoraConfig};
    use sluice::model::save::named_params;
    let dev = wgpu().autodiff();
    let (cfg, model) = tiny(16, 4);
    let lora = LoraConfig {
        r: 4,
        ..LoraConfig::default()
    };
    let (mut model, names) = adapter::attach(model, cfg.family, &lora, 9, &dev).unwrap();
    assert!(!names.is_empty());
    let frozen_before = model.embed_tokens.shards[0]
        .param()
        .unwrap()
        .val()
        .into_data();
    let mut opt = AdamW::new(AdamWConfig::default());
    let rl = RlConfig {
        group_size: 4,
        prompts_per_step: 2,
        max_new_tokens: 4,
        ..RlConfig::default()
    };
    let mut objective = Preset::Grpo.objective();
    objective.kl_placement = sluice::rl::presets::KlPlacement::Loss;
    objective.loss.kl_coef = 0.1;
    let mut kl = objective.reward_kl.controller.clone();
    let mut kls = Vec::new();
    for step in 0..2 {
        let mut next = |n: usize| prompts(n);
        let rep = pollster::block_on(rl_step_async(
            Policy {
                model: &mut model,
                optimizer: &mut opt,
                reference: Reference::AdaptersOff,
                kl_controller: &mut kl,
            },
            1e-2,
            &rl,
            &objective,
            &sevens(),
            &mut next,
            &[vocab::EOS],
            &|ids: &[u32]| vocab::decode(ids),
            step,
            &dev,
            &mut |_| {},
        ))
        .unwrap();
        kls.push(rep.to_record()["kl"].as_f64().unwrap());
    }
    assert_eq!(kls[0], 0.0, "fresh adapters: policy == base");
    assert!(
        kls[1] > 0.0,
        "after an update the adapters move the policy: {kls:?}"
    );
    let frozen_after = model.embed_tokens.shards[0]
        .param()
        .unwrap()
        .val()
        .into_data();
    assert_eq!(frozen_before, frozen_after, "the base is frozen");
    let trained: Vec<String> = named_params(&model)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| opt.moments(n).is_some())
        .collect();
    assert!(
        !trained.is_empty() && trained.iter().all(|n| n.contains(".lora_")),
        "{trained:?}"
    );
}
