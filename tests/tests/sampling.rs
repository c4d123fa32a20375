//! Sampling: each processor (repetition penalty, temperature, top-k, top-p, min-p) and the
//! seed, on hand-made logits.

use rand::SeedableRng;
use rand::rngs::StdRng;
use sluice::model::generate::{Sampling, sample};

fn draw(logits: &[f32], seen: &[u32], s: &Sampling, n: usize) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(s.seed);
    (0..n)
        .map(|_| sample(&mut logits.to_vec(), seen, s, &mut rng))
        .collect()
}

#[test]
fn greedy_takes_the_argmax() {
    let s = Sampling::default();
    assert_eq!(draw(&[0.1, 3.0, -1.0, 2.9], &[], &s, 3), vec![1, 1, 1]);
}

#[test]
fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
    let s = Sampling {
        repetition_penalty: 2.0,
        ..Default::default()
    };
    // Token 1 (3.0 -> 1.5) falls below token 3 (2.9): greedy switches.
    assert_eq!(draw(&[0.1, 3.0, -1.0, 2.9], &[1], &s, 1), vec![3]);
    let mut l = vec![2.0, -2.0];
    let mut rng = StdRng::seed_from_u64(0);
    sample(&mut l, &[0, 1], &s, &mut rng);
    assert_eq!(l, vec![1.0, -4.0]);
}

#[test]
fn top_k_one_is_greedy_whatever_the_temperature() {
    let s = Sampling {
        temperature: 5.0,
        top_k: 1,
        seed: 3,
        ..Default::default()
    };
    assert!(
        draw(&[0.0, 1.0, 0.5, 0.9], &[], &s, 50)
            .iter()
            .all(|&t| t == 1)
    );
}

#[test]
fn top_p_keeps_the_smallest_nucleus() {
    // Probabilities ≈ [0.64, 0.24, 0.09, 0.03]: p = 0.8 keeps tokens 0 and 1 only.
    let logits = [3.0f32, 2.0, 1.0, 0.0];
    let s = Sampling {
        temperature: 1.0,
        top_p: 0.8,
        seed: 7,
        ..Default::default()
    };
    let got = draw(&logits, &[], &s, 400);
    assert!(got.iter().all(|&t| t <= 1));
    assert!(got.contains(&0) && got.contains(&1));
}

#[test]
fn min_p_drops_unlikely_tokens() {
    // min_p 0.3: tokens below 0.3 × 0.64 ≈ 0.19 (tokens 2, 3) are dropped.
    let logits = [3.0f32, 2.0, 1.0, 0.0];
    let s = Sampling {
        temperature: 1.0,
        min_p: 0.3,
        seed: 11,
        ..Default::default()
    };
    let got = draw(&logits, &[], &s, 400);
    assert!(got.iter().all(|&t| t <= 1));
}

#[test]
fn temperature_sampling_follows_the_softmax_and_the_seed() {
    let logits = [2.0f32, 1.0, 0.0];
    let s = Sampling {
        temperature: 1.0,
        seed: 42,
        ..Default::default()
    };
    let a = draw(&logits, &[], &s, 3000);
    assert_eq!(a, draw(&logits, &[], &s, 3000), "same seed, same draws");
    let other = Sampling {
        seed: 43,
        ..s.clone()
    };
    assert_ne!(
        a,
        draw(&logits, &[], &other, 3000),
        "another seed, other draws"
    );
    // softmax([2,1,0]) = [0.665, 0.245, 0.090]
    let freq = |k: u32| a.iter().filter(|&&t| t == k).count() as f64 / a.len() as f64;
    assert!((freq(0) - 0.665).abs() < 0.04, "{}", freq(0));
    assert!((freq(1) - 0.245).abs() < 0.04, "{}", freq(1));
    assert!((freq(2) - 0.090).abs() < 0.03, "{}", freq(2));
}
