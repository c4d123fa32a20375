//! The GRPO-family objective (`sluice::rl`) against golden vectors made by calling TRL 1.16 and
//! verl 0.9.1 (`fixtures/make_rl_fixtures.py`): f64 on `Device::flex()` to 1e-9 relative, f32 on
//! wgpu to ~1e-5; plus shaping unit tests with hand-computed values and bad-input errors.

use std::str::FromStr;

use burn::tensor::{DType, Device, Tensor};
use serde_json::Value;
use sluice::rl::advantage::{
    self, AdvantageConfig, Estimator, Rewards, Singletons, StdScale, consecutive_groups,
};
use sluice::rl::error::RlError;
use sluice::rl::kl::{self, KlController, KlPenalty};
use sluice::rl::loss::{
    self, Aggregation, LossConfig, LossInputs, RowConvention, grid_tensor, policy_loss,
};
use sluice::rl::presets::{KlPlacement, Preset, RlObjective};
use sluice::rl::shaping::{self, GtpoEntropyConfig, OverlongConfig};
use sluice::rl::surrogate::Surrogate;
use sluice_tests::{fixtures_dir, wgpu};

fn golden() -> Value {
    let p = fixtures_dir().join("rl/golden.json");
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).expect("golden.json")
}

fn vec1(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().unwrap_or(f64::NAN))
        .collect()
}

fn grid(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().expect("array").iter().map(vec1).collect()
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("f64 data")
}

/// |a − b| ≤ rtol·max(|b|, floor) element-wise; returns the worst relative error seen.
fn close(a: &[f64], b: &[f64], rtol: f64, floor: f64, what: &str) -> f64 {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    let mut worst = 0.0f64;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let err = (x - y).abs() / y.abs().max(floor);
        assert!(
            err <= rtol,
            "{what}: element {i} is {x}, expected {y} (relative error {err:e} > {rtol:e})"
        );
        worst = worst.max(err);
    }
    worst
}

struct Run {
    loss: f64,
    grad: Vec<f64>,
    stats: loss::LossStats,
}

/// Runs one golden loss case with `cfg` on `dev` (autodiff) in `dtype`.
fn run_case(g: &Value, case: &Value, cfg: &LossConfig, dev: &Device, dtype: DType) -> Run {
    let inputs = &g["inputs"];
    let t = |name: &Value| -> Option<Tensor<2>> {
        name.as_str()
            .map(|n| grid_tensor(&grid(&inputs[n]), dev, dtype).expect("grid"))
    };
    let lp = t(&case["lp"]).unwrap().require_grad();
    let mask_rows = grid(&inputs["mask"]);
    let mut inp = LossInputs::new(
        lp.clone(),
        t(&case["adv"]).unwrap(),
        grid_tensor(&mask_rows, dev, dtype).unwrap(),
    );
    inp.old_logp = t(&case["old"]);
    inp.ref_logp = t(&case["ref"]);
    inp.entropy = t(&case["entropy"]);
    inp.token_weights = t(&case["token_weights"]);
    inp.global_tokens = case["global_tokens"].as_f64();
    if let Some(trl_mask) = case.get("entropy_mask") {
        // the entropy mask is computed here and must equal TRL's get_high_entropy_mask
        let ours = shaping::high_entropy_mask(&grid(&inputs["entropy"]), &mask_rows, 0.5).unwrap();
        assert_eq!(ours, grid(trl_mask), "high-entropy mask differs from TRL's");
        inp.entropy_mask = Some(grid_tensor(&ours, dev, dtype).unwrap());
    }
    let out = policy_loss(cfg, inp).expect("loss");
    assert_eq!(out.loss.dtype(), dtype, "loss dtype");
    let stats = out.metrics.read_blocking(&out.loss).expect("metrics");
    let grads = out.loss.backward();
    let grad = lp.grad(&grads).expect("gradient");
    assert_eq!(grad.dtype(), dtype, "gradient dtype");
    let grad = host(grad);
    Run {
        loss: stats.loss,
        grad,
        stats,
    }
}

fn case_config(case: &Value) -> LossConfig {
    serde_json::from_value(case["config"].clone()).expect("config deserialises")
}

fn flex64() -> Device {
    Device::flex().autodiff()
}

#[test]
fn losses_match_trl_and_verl_in_f64_on_flex() {
    let g = golden();
    let cases = g["loss_cases"].as_array().unwrap();
    let mut worst = (0.0f64, 0.0f64);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let r = run_case(&g, case, &case_config(case), &flex64(), DType::F64);
        let want = case["loss"].as_f64().unwrap();
        worst.0 = worst.0.max(close(&[r.loss], &[want], 1e-9, 1e-12, name));
        let wg = vec1(&Value::Array(
            case["grad"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().clone())
                .collect(),
        ));
        worst.1 = worst
            .1
            .max(close(&r.grad, &wg, 1e-9, 1e-9, &format!("{name} grad")));
    }
    println!(
        "{} loss cases: worst relative error loss {:e}, grad {:e}",
        cases.len(),
        worst.0,
        worst.1
    );
}

#[test]
fn losses_match_on_wgpu_in_f32() {
    let g = golden();
    let dev = wgpu().autodiff();
    let mut worst = (0.0f64, 0.0f64);
    for case in g["loss_cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let r = run_case(&g, case, &case_config(case), &dev, DType::F32);
        let want = case["loss"].as_f64().unwrap();
        worst.0 = worst.0.max(close(&[r.loss], &[want], 1e-5, 1e-2, name));
        let wg: Vec<f64> = grid(&case["grad"]).into_iter().flatten().collect();
        let scale = wg.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        worst.1 = worst.1.max(close(
            &r.grad,
            &wg,
            1e-5,
            scale,
            &format!("{name} grad (relative to max |grad|)"),
        ));
    }
    println!(
        "wgpu f32: worst relative error loss {:e}, grad {:e}",
        worst.0, worst.1
    );
}

#[test]
fn trl_metrics_match() {
    let g = golden();
    for case in g["loss_cases"].as_array().unwrap() {
        let Some(m) = case.get("trl_metrics") else {
            continue;
        };
        let cfg = case_config(case);
        let name = case["name"].as_str().unwrap();
        let r = run_case(&g, case, &cfg, &flex64(), DType::F64);
        let s = r.stats;
        close(
            &[s.entropy_mean],
            &[m["entropy"].as_f64().unwrap()],
            1e-9,
            1e-12,
            name,
        );
        if let Some(c) = m.get("cispo_clip_ratio") {
            // TRL: (w > ε_high) ∧ (A > 0), the truncated share of the tokens
            close(
                &[s.clip_high_frac],
                &[c.as_f64().unwrap()],
                1e-7,
                1e-12,
                name,
            );
        }
        if cfg.ratio_level == loss::RatioLevel::Token && cfg.surrogate == Surrogate::Clip {
            close(
                &[s.clip_low_frac, s.clip_high_frac],
                &[
                    m["clip_ratio/low_mean"].as_f64().unwrap(),
                    m["clip_ratio/high_mean"].as_f64().unwrap(),
                ],
                1e-7,
                1e-12,
                &format!("{name} clip fractions (TRL computes them in f32)"),
            );
            if let Some(k) = m.get("kl") {
                close(&[s.kl_mean], &[k.as_f64().unwrap()], 1e-9, 1e-12, name);
            }
        }
    }
}

#[test]
fn verl_metrics_match() {
    let g = golden();
    for case in g["loss_cases"].as_array().unwrap() {
        let Some(m) = case.get("verl_metrics") else {
            continue;
        };
        let cfg = case_config(case);
        if cfg.dual_clip.is_none() {
            continue; // vanilla only: its pg_clipfrac_lower is the dual-clip fraction
        }
        let name = case["name"].as_str().unwrap();
        let r = run_case(&g, case, &cfg, &flex64(), DType::F64);
        close(
            &[r.stats.dual_clip_frac],
            &[m["actor/pg_clipfrac_lower"].as_f64().unwrap()],
            1e-7,
            1e-12,
            name,
        );
    }
}

#[test]
fn every_preset_matches_its_library_loss() {
    let g = golden();
    let mut covered = Vec::new();
    for case in g["loss_cases"].as_array().unwrap() {
        let Some(p) = case["preset"].as_str() else {
            continue;
        };
        let preset = Preset::from_str(p).unwrap();
        let cfg = preset.objective().loss;
        let r = run_case(&g, case, &cfg, &flex64(), DType::F64);
        let name = case["name"].as_str().unwrap();
        close(
            &[r.loss],
            &[case["loss"].as_f64().unwrap()],
            1e-9,
            1e-12,
            name,
        );
        let wg: Vec<f64> = grid(&case["grad"]).into_iter().flatten().collect();
        close(&r.grad, &wg, 1e-9, 1e-9, &format!("{name} grad"));
        covered.push(preset);
    }
    for p in Preset::ALL {
        assert!(covered.contains(&p), "preset {p} has no golden loss case");
    }
}

#[test]
fn kl_estimators_match_verl() {
    let g = golden();
    let k = &g["kl"];
    let w = grid(&k["inputs"]["w"]);
    for (dev, dtype, rtol) in [
        (flex64(), DType::F64, 1e-12),
        (wgpu().autodiff(), DType::F32, 1e-5),
    ] {
        let lp_rows = grid(&k["inputs"]["lp"]);
        let ref_rows = grid(&k["inputs"]["ref"]);
        for case in k["cases"].as_array().unwrap() {
            let name = case["estimator"].as_str().unwrap();
            let pen = KlPenalty::from_str(name).unwrap();
            let lp = grid_tensor(&lp_rows, &dev, dtype).unwrap().require_grad();
            let rf = grid_tensor(&ref_rows, &dev, dtype).unwrap();
            let wt = grid_tensor(&w, &dev, dtype).unwrap();
            let v = kl::kl_penalty(lp.clone(), rf, pen);
            let grads = (v.clone() * wt).sum().backward();
            let want: Vec<f64> = grid(&case["value"]).into_iter().flatten().collect();
            close(&host(v), &want, rtol, 1.0, &format!("{name} value"));
            let wg: Vec<f64> = grid(&case["grad"]).into_iter().flatten().collect();
            close(
                &host(lp.grad(&grads).unwrap()),
                &wg,
                rtol,
                1.0,
                &format!("{name} grad"),
            );
            // the host version agrees with the tensor one
            for (i, (a, b)) in lp_rows
                .iter()
                .flatten()
                .zip(ref_rows.iter().flatten())
                .enumerate()
            {
                let h = kl::kl_value(*a, *b, pen);
                assert!(
                    (h - want[i]).abs() <= 1e-12 * want[i].abs().max(1.0),
                    "{name} host"
                );
            }
        }
        // TRL's unclamped k3
        let lp = grid_tensor(&lp_rows, &dev, dtype).unwrap();
        let rf = grid_tensor(&ref_rows, &dev, dtype).unwrap();
        let v = kl::kl_penalty(lp, rf, KlPenalty::from_str("k3_unclamped").unwrap());
        let want: Vec<f64> = grid(&k["trl_k3"]).into_iter().flatten().collect();
        close(&host(v), &want, rtol * 10.0, 1.0, "TRL k3");
    }
    // verl's names mean verl's estimators; the ambiguous "k3" says what each library means.
    for (verl, ours) in [("kl", "k1"), ("mse", "k2"), ("kl+", "k1+")] {
        assert_eq!(
            KlPenalty::from_str(verl).unwrap(),
            KlPenalty::from_str(ours).unwrap()
        );
    }
    for (name, want) in [("k3", "`low_var_kl`"), ("k3+", "`low_var_kl+`")] {
        let e = KlPenalty::from_str(name).unwrap_err().to_string();
        assert!(
            e.contains("ambiguous") && e.contains(want) && e.contains("k3_unclamped"),
            "{e}"
        );
    }
    assert_eq!(KlPenalty::default().to_string(), "k3_unclamped");
}

#[test]
fn aggregation_modes_match_verl() {
    let g = golden();
    let a = &g["agg"];
    let dev = Device::flex();
    let x = grid_tensor(&grid(&a["loss_mat"]), &dev, DType::F64).unwrap();
    let m = grid_tensor(&grid(&g["inputs"]["mask"]), &dev, DType::F64).unwrap();
    for case in a["cases"].as_array().unwrap() {
        let mode: Aggregation = serde_json::from_value(case["mode"].clone()).unwrap();
        let v = loss::aggregate(
            x.clone(),
            m.clone(),
            mode,
            RowConvention::Verl,
            case["norm_divisor"].as_f64(),
            None,
        );
        close(
            &host(v),
            &[case["value"].as_f64().unwrap()],
            1e-12,
            1e-12,
            &format!("{mode:?}"),
        );
    }
    // TRL's bnpo (micro-token-mean) is each micro-batch's own token mean, whatever the
    // batch's global token count; token-mean (DAPO) divides by the global count.
    let agg = |mode, global| {
        host(loss::aggregate(
            x.clone(),
            m.clone(),
            mode,
            RowConvention::Trl,
            None,
            global,
        ))[0]
    };
    let own = agg(Aggregation::TokenMean, None);
    assert_eq!(agg(Aggregation::MicroTokenMean, Some(1000.0)), own);
    let n: f64 = grid(&g["inputs"]["mask"]).iter().flatten().sum();
    close(
        &[agg(Aggregation::TokenMean, Some(1000.0))],
        &[own * n / 1000.0],
        1e-12,
        0.0,
        "dapo",
    );
}

#[test]
fn verl_advantages_match() {
    let g = golden();
    let a = &g["advantages"];
    let groups: Vec<usize> = a["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let mask = grid(&a["mask"]);
    for case in a["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let estimator: Estimator = serde_json::from_value(case["estimator"].clone()).unwrap();
        let cfg = AdvantageConfig {
            estimator,
            scale: case.get("scale").map_or(StdScale::Group, |s| {
                serde_json::from_value(s.clone()).unwrap()
            }),
            eps: 1e-6,
            singletons: Singletons::RawScore,
            gamma: case["gamma"].as_f64().unwrap_or(1.0),
        };
        let groups: Vec<usize> = case.get("groups").map_or(groups.clone(), |g| {
            vec1(g).into_iter().map(|x| x as usize).collect()
        });
        let rewards = grid(&a[case["rewards"].as_str().unwrap()]);
        let got = if estimator == Estimator::Remax {
            let scores: Vec<f64> = rewards.iter().map(|r| r.iter().sum()).collect();
            advantage::remax_advantages(&scores, &vec1(&case["baselines"]), &mask)
        } else {
            advantage::token_advantages(&cfg, Rewards::Token(&rewards), &mask, &groups)
        }
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want: Vec<f64> = grid(&case["out"]).into_iter().flatten().collect();
        let got: Vec<f64> = got.into_iter().flatten().collect();
        close(&got, &want, 1e-9, 1e-9, name);
    }
}

#[test]
fn trl_advantages_match() {
    let g = golden();
    let a = &g["trl_advantages"];
    let per_func = grid(&a["per_func"]);
    let weights = vec1(&a["weights"]);
    let rewards = advantage::aggregate_rewards(&per_func, &weights).unwrap();
    let gsize = a["group_size"].as_u64().unwrap() as usize;
    let groups = consecutive_groups(rewards.len(), gsize).unwrap();
    let mask = vec![vec![1.0; 3]; rewards.len()];
    for case in a["cases"].as_array().unwrap() {
        let want_r = vec1(&case["rewards"]);
        for (x, y) in rewards.iter().zip(&want_r) {
            assert!(x == y || (x.is_nan() && y.is_nan()), "rewards {x} vs {y}");
        }
        let scale: StdScale = serde_json::from_value(case["scale"].clone()).unwrap();
        let cfg = AdvantageConfig {
            scale,
            ..AdvantageConfig::default()
        };
        let got =
            advantage::token_advantages(&cfg, Rewards::Sequence(&rewards), &mask, &groups).unwrap();
        let got: Vec<f64> = got.iter().map(|r| r[0]).collect();
        close(&got, &vec1(&case["out"]), 1e-9, 1e-9, &format!("{scale:?}"));
    }
    let gdpo = advantage::normalize_then_sum(&per_func, &weights, &groups, 1e-4).unwrap();
    close(
        &gdpo,
        &vec1(&a["normalize_then_sum"]),
        1e-9,
        1e-9,
        "normalize_then_sum",
    );
}

#[test]
fn preset_advantages_match_libraries() {
    let g = golden();
    let a = &g["advantages"];
    let groups: Vec<usize> = a["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let mask = grid(&a["mask"]);
    for (preset, case_name) in [
        (Preset::Gmpo, "verl_grpo"),
        (Preset::Rloo, "verl_rloo"),
        (Preset::ReinforcePp, "verl_rpp_g1"),
        (Preset::ReinforcePpBaseline, "verl_rpp_baseline"),
    ] {
        let case = a["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == case_name)
            .unwrap();
        let rewards = grid(&a[case["rewards"].as_str().unwrap()]);
        let got = advantage::token_advantages(
            &preset.objective().advantage,
            Rewards::Token(&rewards),
            &mask,
            &groups,
        )
        .unwrap();
        let want: Vec<f64> = grid(&case["out"]).into_iter().flatten().collect();
        let got: Vec<f64> = got.into_iter().flatten().collect();
        close(&got, &want, 1e-9, 1e-9, preset.name());
    }
    // TRL presets: group scale (grpo, dapo, gspo, gtpo) and none (dr_grpo)
    let t = &g["trl_advantages"];
    let rewards =
        advantage::aggregate_rewards(&grid(&t["per_func"]), &vec1(&t["weights"])).unwrap();
    let groups = consecutive_groups(rewards.len(), 4).unwrap();
    let mask = vec![vec![1.0]; rewards.len()];
    for (preset, scale) in [
        (Preset::Grpo, "group"),
        (Preset::Dapo, "group"),
        (Preset::Gspo, "group"),
        (Preset::Gtpo, "group"),
        (Preset::DrGrpo, "none"),
    ] {
        let case = t["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["scale"] == scale)
            .unwrap();
        let got = advantage::token_advantages(
            &preset.objective().advantage,
            Rewards::Sequence(&rewards),
            &mask,
            &groups,
        )
        .unwrap();
        let got: Vec<f64> = got.iter().map(|r| r[0]).collect();
        close(&got, &vec1(&case["out"]), 1e-9, 1e-9, preset.name());
    }
}

#[test]
fn kl_in_reward_matches_verl_with_controllers() {
    let g = golden();
    let rk = &g["reward_kl"];
    let scores = grid(&rk["scores"]);
    let mask = grid(&g["inputs"]["mask"]);
    let ref_lp = grid(&g["inputs"]["ref"]);
    for case in rk["cases"].as_array().unwrap() {
        let pen = KlPenalty::from_str(case["penalty"].as_str().unwrap()).unwrap();
        let steps = case["steps"].as_array().unwrap();
        let beta0 = steps[0]["beta"].as_f64().unwrap();
        let mut ctrl = if case["adaptive"].as_bool().unwrap() {
            KlController::Adaptive {
                coef: beta0,
                target_kl: 0.1,
                horizon: 1000.0,
            }
        } else {
            KlController::Fixed { coef: beta0 }
        };
        for s in steps {
            let out =
                kl::apply_kl_in_reward(&scores, &grid(&s["old"]), &ref_lp, &mask, pen, &mut ctrl)
                    .unwrap();
            close(
                &[out.coef],
                &[s["beta"].as_f64().unwrap()],
                1e-12,
                1e-12,
                "beta",
            );
            close(
                &[out.current_kl],
                &[s["current_kl"].as_f64().unwrap()],
                1e-9,
                1e-12,
                "current kl",
            );
            let want: Vec<f64> = grid(&s["rewards"]).into_iter().flatten().collect();
            let got: Vec<f64> = out.rewards.into_iter().flatten().collect();
            close(&got, &want, 1e-9, 1e-9, "rewards");
            close(
                &[ctrl.coef()],
                &[s["beta_after"].as_f64().unwrap()],
                1e-12,
                1e-12,
                "beta after",
            );
        }
    }
}

// ------------------------------------------------------------------ presets and config parsing

#[test]
fn presets_parse_and_deserialise() {
    for p in Preset::ALL {
        assert_eq!(Preset::from_str(p.name()).unwrap(), p);
        let obj = p.objective();
        obj.loss.validate().unwrap();
        let json = serde_json::to_value(&obj).unwrap();
        let back: RlObjective = serde_json::from_value(json).unwrap();
        assert_eq!(back, obj, "{p} round trip");
    }
    let err = Preset::from_str("ppo").unwrap_err().to_string();
    assert!(
        err.contains("ppo") && err.contains("reinforce_pp_baseline") && err.contains("gtpo"),
        "{err}"
    );
    // partial recipes override defaults; unknown fields are errors
    let o: RlObjective =
        serde_json::from_str(r#"{"loss": {"epsilon_high": 0.28, "kl_estimator": "low_var_kl+"}}"#)
            .unwrap();
    assert_eq!(o.loss.epsilon_high, 0.28);
    assert_eq!(o.loss.kl_estimator.to_string(), "low_var_kl+");
    assert_eq!(o.loss.epsilon_low, 0.2);
    assert!(serde_json::from_str::<RlObjective>(r#"{"loss": {"epsilon": 0.2}}"#).is_err());
    assert!(serde_json::from_str::<RlObjective>(r#"{"loss": {"kl_estimator": "k4"}}"#).is_err());
    assert_eq!(
        Preset::ReinforcePp.objective().kl_placement,
        KlPlacement::Reward
    );
    assert_eq!(Preset::Grpo.objective().kl_placement, KlPlacement::Loss);
}

// ------------------------------------------------------------------ shaping (hand-computed)

#[test]
fn dynamic_sampling_drops_uniform_groups() {
    let scores = [1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.5, 0.5];
    let groups = [0, 0, 1, 1, 2, 2, 3, 3];
    let d = shaping::dynamic_sampling(&scores, &groups).unwrap();
    assert_eq!(d.dropped_groups, vec![0, 3]);
    assert_eq!(d.kept_groups, 2);
    assert_eq!(
        d.keep,
        vec![false, false, true, true, true, true, false, false]
    );
    assert!(matches!(
        shaping::dynamic_sampling(&scores, &groups[..3]),
        Err(RlError::Shape { .. })
    ));
}

#[test]
fn overlong_penalty_is_linear_in_the_cache_window() {
    let cfg = OverlongConfig {
        max_len: 20,
        cache_len: 4,
        factor: 1.0,
    };
    let p = |l| shaping::overlong_penalty(l, &cfg).unwrap();
    assert_eq!(p(10), 0.0);
    assert_eq!(p(16), 0.0);
    assert_eq!(p(17), -0.25);
    assert_eq!(p(18), -0.5);
    assert_eq!(p(20), -1.0);
    assert_eq!(p(25), -1.0);
    let half = OverlongConfig { factor: 0.5, ..cfg };
    assert_eq!(shaping::overlong_penalty(18, &half).unwrap(), -0.25);
    let bad = OverlongConfig {
        cache_len: 30,
        ..OverlongConfig::default()
    };
    assert!(shaping::overlong_penalty(18, &OverlongConfig { max_len: 20, ..bad }).is_err());
}

#[test]
fn truncated_completions_are_masked() {
    let eos = [2u32, 9];
    let ids = vec![
        vec![5, 6, 2, 0],
        vec![5, 6, 7, 8],
        vec![5, 9, 0, 0],
        vec![0, 0, 0, 0],
    ];
    let mask = vec![
        vec![1.0, 1.0, 1.0, 0.0],
        vec![1.0, 1.0, 1.0, 1.0],
        vec![1.0, 1.0, 0.0, 0.0],
        vec![0.0; 4],
    ];
    let ended = shaping::ended_with_eos(&ids, &mask, &eos).unwrap();
    assert_eq!(ended, vec![true, false, true, false]);
    let m = shaping::mask_truncated(&mask, &ended).unwrap();
    assert_eq!(m[0], mask[0]);
    assert_eq!(m[1], vec![0.0; 4]);
    assert_eq!(m[2], mask[2]);
    assert!(shaping::mask_truncated(&mask, &ended[..2]).is_err());
}

#[test]
fn gtpo_conflict_tokens_are_not_pushed_down() {
    // group 0: rows 0 (+) and 1 (−), 2 (−); group 1: rows 3 (+), 4 (−)
    let ids = vec![
        vec![1, 2, 3, 4],
        vec![1, 5, 3, 4],
        vec![7, 2, 3, 8],
        vec![1, 2, 3, 4],
        vec![9, 2, 6, 4],
    ];
    let mask = vec![
        vec![1.0, 1.0, 1.0, 1.0],
        vec![1.0, 1.0, 1.0, 0.0], // position 3 is padding: token 4 there does not count
        vec![1.0, 1.0, 1.0, 1.0],
        vec![1.0, 1.0, 1.0, 1.0],
        vec![1.0, 1.0, 1.0, 1.0],
    ];
    let adv = [1.0, -0.5, -0.5, 0.7, -0.7];
    let groups = [0, 0, 0, 1, 1];
    let w = shaping::conflict_token_weights(&ids, &mask, &adv, &groups, 2.0).unwrap();
    // group 0: pos 0 token 1 shared by + (row 0) and − (row 1); pos 1 token 2 by rows 0 and 2;
    // pos 2 token 3 by all three; pos 3 token 4 only valid in row 0 (row 1 padded), row 2 has 8.
    assert_eq!(w[0], vec![2.0, 2.0, 2.0, 1.0]);
    assert_eq!(w[1], vec![0.0, 1.0, 0.0, 0.0]);
    assert_eq!(w[2], vec![1.0, 0.0, 0.0, 1.0]);
    // group 1: pos 1 token 2 and pos 3 token 4 are shared
    assert_eq!(w[3], vec![1.0, 2.0, 1.0, 2.0]);
    assert_eq!(w[4], vec![1.0, 0.0, 1.0, 0.0]);
    // a zero advantage is neither side
    let w0 =
        shaping::conflict_token_weights(&ids[..2], &mask[..2], &[1.0, 0.0], &[0, 0], 2.0).unwrap();
    assert_eq!(w0[0], vec![1.0, 1.0, 1.0, 1.0]);
    assert!(shaping::conflict_token_weights(&ids, &mask, &adv[..4], &groups, 1.0).is_err());
}

#[test]
fn gtpo_entropy_rewards_follow_the_stated_rule() {
    let scores = [1.0, 1.0, 0.0, 0.0];
    let entropy = vec![
        vec![1.0, 3.0],
        vec![3.0, 1.0],
        vec![0.5, 2.0],
        vec![2.0, 2.0],
    ];
    let mask = vec![
        vec![1.0, 1.0],
        vec![1.0, 0.0],
        vec![1.0, 1.0],
        vec![1.0, 1.0],
    ];
    let cfg = GtpoEntropyConfig {
        alpha1: 1.0,
        alpha2: 0.5,
    };
    let r = shaping::gtpo_token_rewards(&scores, &entropy, &mask, &[0; 4], &cfg).unwrap();
    // positives at t=0: H = 1, 3 (d = 2): 1 + 0.5·2·1/4 = 1.25, 1 + 0.5·2·3/4 = 1.75
    // positives at t=1: only row 0 (d = 1): 1 + 0.5·1·3/3 = 1.5; row 1 padded: 0
    assert_eq!(r[0], vec![1.25, 1.5]);
    assert_eq!(r[1], vec![1.75, 0.0]);
    // negatives at t=0: 1/H = 2, 0.5 (sum 2.5, d = 2): −0.5·2·2/2.5 = −0.8, −0.5·2·0.5/2.5 = −0.2
    // negatives at t=1: 1/H = 0.5, 0.5: −0.5 each
    assert!((r[2][0] + 0.8).abs() < 1e-12 && (r[3][0] + 0.2).abs() < 1e-12);
    assert!((r[2][1] + 0.5).abs() < 1e-12 && (r[3][1] + 0.5).abs() < 1e-12);
    let a = shaping::gtpo_token_advantages(&r, &mask, &[0; 4], 1e-6).unwrap();
    let valid: Vec<f64> = a
        .iter()
        .flatten()
        .zip(mask.iter().flatten())
        .filter(|(_, m)| **m != 0.0)
        .map(|(x, _)| *x)
        .collect();
    assert!(valid.iter().sum::<f64>().abs() < 1e-9, "zero mean");
    assert_eq!(a[1][1], 0.0);
}

#[test]
fn high_entropy_mask_uses_the_linear_quantile() {
    let h = vec![vec![0.1, 0.4, 0.9, 5.0], vec![0.2, 0.3, 7.0, 0.0]];
    let m = vec![vec![1.0, 1.0, 1.0, 0.0], vec![1.0, 1.0, 1.0, 0.0]];
    // valid: 0.1 0.2 0.3 0.4 0.9 7.0; q = 0.5 → position 2.5 → 0.35
    let k = shaping::high_entropy_mask(&h, &m, 0.5).unwrap();
    assert_eq!(k, vec![vec![0.0, 1.0, 1.0, 0.0], vec![0.0, 0.0, 1.0, 0.0]]);
    let all = shaping::high_entropy_mask(&h, &m, 1.0).unwrap();
    assert_eq!(all, m);
    assert!(shaping::high_entropy_mask(&h, &m, 0.0).is_err());
}

// ------------------------------------------------------------------ bad input

#[test]
fn bad_inputs_give_clear_errors() {
    let dev = Device::flex();
    let z = |b, t| Tensor::<2>::zeros([b, t], &dev);
    let cfg = LossConfig::default();
    let e = policy_loss(&cfg, LossInputs::new(z(2, 3), z(2, 3), z(2, 4))).unwrap_err();
    assert!(matches!(e, RlError::Shape { what: "mask", .. }), "{e}");
    let e = policy_loss(&cfg, LossInputs::new(z(2, 3), z(3, 1), z(2, 3))).unwrap_err();
    assert!(e.to_string().contains("advantages"), "{e}");
    let kl_cfg = LossConfig {
        kl_coef: 0.1,
        ..LossConfig::default()
    };
    let e = policy_loss(&kl_cfg, LossInputs::new(z(2, 3), z(2, 1), z(2, 3))).unwrap_err();
    assert!(e.to_string().contains("reference"), "{e}");
    let bad = LossConfig {
        dual_clip: Some(0.5),
        ..LossConfig::default()
    };
    assert!(matches!(
        policy_loss(&bad, LossInputs::new(z(2, 3), z(2, 1), z(2, 3))),
        Err(RlError::Config(_))
    ));

    assert!(matches!(consecutive_groups(6, 0), Err(RlError::Groups(_))));
    assert!(matches!(consecutive_groups(7, 2), Err(RlError::Groups(_))));
    assert!(matches!(consecutive_groups(0, 2), Err(RlError::Empty(_))));
    let cfg = AdvantageConfig::default();
    let e = advantage::token_advantages(&cfg, Rewards::Sequence(&[]), &[], &[]).unwrap_err();
    assert!(matches!(e, RlError::Empty(_)), "{e}");
    let mask = vec![vec![1.0; 2]; 3];
    let e = advantage::token_advantages(&cfg, Rewards::Sequence(&[1.0, 0.0, 1.0]), &mask, &[0, 0])
        .unwrap_err();
    assert!(
        matches!(
            e,
            RlError::Shape {
                what: "group ids",
                ..
            }
        ),
        "{e}"
    );
    let ragged = vec![vec![1.0; 2], vec![1.0; 3]];
    assert!(
        advantage::token_advantages(&cfg, Rewards::Sequence(&[1.0, 0.0]), &ragged, &[0, 0])
            .is_err()
    );
    let rpp = AdvantageConfig {
        estimator: Estimator::ReinforcePp,
        ..cfg
    };
    let one = vec![vec![1.0, 0.0]];
    let e = advantage::token_advantages(&rpp, Rewards::Sequence(&[1.0]), &one, &[0]).unwrap_err();
    assert!(matches!(e, RlError::NotEnough(_)), "{e}");
}

#[test]
fn no_old_logp_means_ratio_one() {
    // old = sg(lp): loss = −agg(A), gradient = −A·m/|y| (seq-mean-token-mean)
    let dev = flex64();
    let lp = grid_tensor(&[vec![-1.0, -2.0], vec![-0.5, -0.1]], &dev, DType::F64)
        .unwrap()
        .require_grad();
    let adv = grid_tensor(&[vec![1.0], vec![-2.0]], &dev, DType::F64).unwrap();
    let m = grid_tensor(&[vec![1.0, 1.0], vec![1.0, 0.0]], &dev, DType::F64).unwrap();
    let cfg = Preset::Gtpo.objective().loss;
    let out = policy_loss(&cfg, LossInputs::new(lp.clone(), adv, m)).unwrap();
    let s = out.metrics.read_blocking(&out.loss).unwrap();
    assert!((s.loss - 0.5).abs() < 1e-15, "{}", s.loss); // −(1 + (−2))/2
    assert_eq!(s.ratio_mean, 1.0);
    let g = host(lp.grad(&out.loss.backward()).unwrap());
    assert_eq!(g, vec![-0.25, -0.25, 1.0, 0.0]);
}

/// GSPO with advantages that vary along a sequence: the TRL form (`sequence`) sends the
/// gradient through the mean log-ratio, so every token of a sequence gets the sequence's mean
/// advantage; GSPO-token (`sequence_token`, verl's `gspo`) keeps each token's own advantage.
/// Unclipped, token-mean over N tokens, w_b = exp(mean_t lr_bt):
///   sequence:       ∂L/∂lp_bt = −w_b · (Σ_t' m A_bt') / |y_b| · m_bt / N
///   sequence_token: ∂L/∂lp_bt = −w_b · A_bt · m_bt / N
#[test]
fn gspo_token_keeps_per_token_advantages() {
    let g = golden();
    let inp = &g["inputs"];
    let (lp, old, adv, mask) = (
        grid(&inp["lp"]),
        grid(&inp["old_small"]),
        grid(&inp["adv_tok"]),
        grid(&inp["mask"]),
    );
    let n: f64 = mask.iter().flatten().sum();
    let dev = flex64();
    for level in ["sequence", "sequence_token"] {
        let cfg: LossConfig = serde_json::from_value(serde_json::json!({
            "ratio_level": level, "epsilon_low": 10.0, "epsilon_high": 10.0,
            "kl_coef": 0.0, "aggregation": "token-mean"
        }))
        .unwrap();
        let t = |x: &Vec<Vec<f64>>| grid_tensor(x, &dev, DType::F64).unwrap();
        let lp_t = t(&lp).require_grad();
        let mut li = LossInputs::new(lp_t.clone(), t(&adv), t(&mask));
        li.old_logp = Some(t(&old));
        let out = policy_loss(&cfg, li).unwrap();
        let grad = host(lp_t.grad(&out.loss.backward()).unwrap());
        let mut want = Vec::new();
        for b in 0..lp.len() {
            let len: f64 = mask[b].iter().sum();
            let mean_lr: f64 = (0..lp[b].len())
                .map(|t| mask[b][t] * (lp[b][t] - old[b][t]))
                .sum::<f64>()
                / len.max(1.0);
            let w = mean_lr.exp();
            let mean_adv: f64 = (0..lp[b].len())
                .map(|t| mask[b][t] * adv[b][t])
                .sum::<f64>()
                / len.max(1.0);
            for t in 0..lp[b].len() {
                let a = if level == "sequence" {
                    mean_adv
                } else {
                    adv[b][t]
                };
                want.push(-w * a * mask[b][t] / n);
            }
        }
        close(&grad, &want, 1e-12, 1e-12, level);
    }
}

/// Clip-Cov with fewer cuts than candidates: exactly max(1, ⌊N·ratio⌋) of the candidate
/// tokens (unclipped, covariance in the band) lose their gradient, chosen at random.
#[test]
fn clip_cov_cuts_a_random_subset_of_the_candidates() {
    let g = golden();
    let inp = &g["inputs"];
    let dev = flex64();
    let t = |n: &str| grid_tensor(&grid(&inp[n]), &dev, DType::F64).unwrap();
    let grad = |ratio: f64, lb: f64, ub: f64| {
        let cfg = LossConfig {
            aggregation: Aggregation::TokenSum,
            surrogate: Surrogate::ClipCov { ratio, lb, ub },
            ..LossConfig::default()
        };
        let lp = t("lp").require_grad();
        let mut li = LossInputs::new(lp.clone(), t("adv_tok"), t("mask"));
        li.old_logp = Some(t("old_big"));
        let out = policy_loss(&cfg, li).unwrap();
        host(lp.grad(&out.loss.backward()).unwrap())
    };
    let none = grad(1.0, 100.0, 200.0);
    let all = grad(1.0, -0.3, 0.4);
    let candidates: Vec<usize> = (0..none.len())
        .filter(|&i| none[i] != 0.0 && all[i] == 0.0)
        .collect();
    assert_eq!(
        candidates.len(),
        11,
        "the mid band holds 11 candidates (verl fixture)"
    );
    // N = 33 valid tokens: ratio 0.07 cuts ⌊2.31⌋ = 2 of them.
    for _ in 0..3 {
        let some = grad(0.07, -0.3, 0.4);
        let cut: Vec<usize> = (0..none.len())
            .filter(|&i| none[i] != 0.0 && some[i] == 0.0)
            .collect();
        assert_eq!(cut.len(), 2, "{cut:?}");
        assert!(cut.iter().all(|i| candidates.contains(i)), "{cut:?}");
    }
}
