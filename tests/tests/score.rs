//! Teacher-forced scoring (`model::score`): batched, right-padded scores equal each row's own
//! full forward, temperature and entropy follow their definitions, gradients reach the weights.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use sluice::model::files::load_model;
use sluice::model::score::score_completions;
use sluice::nn::attention::AttentionContext;
use sluice_tests::{fixtures_dir, to_vec, wgpu};

/// log-softmax `[T, V]` of one unpadded sequence at temperature `tau`.
fn row_logp(model: &sluice::model::HybridModel, seq: &[u32], tau: f32) -> Vec<Vec<f32>> {
    let dev = wgpu();
    let t = seq.len();
    let ids: Vec<i64> = seq.iter().map(|&x| i64::from(x)).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &dev);
    let mut cache = model.new_cache();
    let ctx = AttentionContext::contiguous(1, t, 0, &dev);
    let logits = model
        .logits(model.hidden(ids, &mut cache, &ctx))
        .div_scalar(tau);
    let v = logits.dims()[2];
    to_vec(log_softmax(logits, 2))
        .chunks(v)
        .map(<[f32]>::to_vec)
        .collect()
}

#[test]
fn batched_scores_equal_per_row_forward() {
    let dev = wgpu();
    let (_, model) = load_model(&fixtures_dir().join("models/qwen3_next_tiny"), &dev).unwrap();
    let prompts = vec![
        vec![5u32, 9, 14, 3],
        vec![7u32],
        vec![1u32, 2, 3, 4, 5, 6, 7],
    ];
    let completions = vec![vec![11u32, 12, 13], vec![20u32, 21, 22, 23, 24], vec![]];
    let tau = 0.7;
    let s = score_completions(&model, &prompts, &completions, tau, true, &dev).unwrap();
    assert_eq!(s.logp.dims(), [3, 5]);
    let (logp, ent, mask) = (to_vec(s.logp), to_vec(s.entropy.unwrap()), to_vec(s.mask));
    for (r, (p, c)) in prompts.iter().zip(&completions).enumerate() {
        let seq: Vec<u32> = p.iter().chain(c).copied().collect();
        let lp = row_logp(&model, &seq, tau);
        for j in 0..5 {
            let at = r * 5 + j;
            if j < c.len() {
                let dist = &lp[p.len() + j - 1];
                let want = dist[c[j] as usize];
                let want_h: f32 = -dist.iter().map(|&l| l.exp() * l).sum::<f32>();
                assert!(
                    (logp[at] - want).abs() < 1e-4,
                    "row {r} tok {j}: {} vs {want}",
                    logp[at]
                );
                assert!((ent[at] - want_h).abs() < 1e-4, "row {r} entropy {j}");
                assert_eq!(mask[at], 1.0);
            } else {
                assert_eq!(
                    (logp[at], ent[at], mask[at]),
                    (0.0, 0.0, 0.0),
                    "padding row {r} col {j}"
                );
            }
        }
    }
}

#[test]
fn scores_are_differentiable() {
    let dev = wgpu().autodiff();
    let (_, model) = load_model(&fixtures_dir().join("models/qwen3_5_tiny"), &dev).unwrap();
    let s = score_completions(&model, &[vec![3, 4, 5]], &[vec![6, 7]], 1.0, false, &dev).unwrap();
    // A trainable (tied) head: the scores defer its gradient to `Loss::backward`.
    let deferred = vec![s.deferred];
    let value = s.logp.sum();
    let grads = sluice::model::score::Loss { value, deferred }.backward();
    let g = model
        .embed_tokens
        .param()
        .expect("an f32 embedding")
        .val()
        .grad(&grads)
        .expect("embedding gradient");
    assert!(
        to_vec(g.abs().sum())
            .iter()
            .all(|&x| x > 0.0 && x.is_finite())
    );
}

#[test]
fn bad_requests_are_errors() {
    let dev = wgpu();
    let (_, model) = load_model(&fixtures_dir().join("models/qwen3_5_tiny"), &dev).unwrap();
    for (p, c, tau, what) in [
        (vec![vec![1u32]], vec![], 1.0, "same number"),
        (vec![vec![]], vec![vec![1u32]], 1.0, "empty"),
        (
            vec![vec![1u32]],
            vec![vec![1_000_000u32]],
            1.0,
            "outside the vocabulary",
        ),
        (vec![vec![1u32]], vec![vec![1u32]], 0.0, "temperature"),
    ] {
        let err = score_completions(&model, &p, &c, tau, false, &dev).unwrap_err();
        assert!(
            err.to_string().contains(what),
            "{err} should mention {what}"
        );
    }
}
