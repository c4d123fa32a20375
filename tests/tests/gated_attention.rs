//! The gated-attention op: WGSL kernels vs the composed-ops reference, vs transformers'
//! fixtures, gradients, decode with a KV cache, padding and bad input.

use burn::tensor::{Device, Tensor, TensorData};
use sluice::ops::gated_attention::{
    self, AttentionOptions, Kernels, KeyPadding, KvCache, reference,
};
use sluice_tests::{assert_close, fixture_tensor, fixtures_dir, randn, read_fixture, to_vec, wgpu};

#[derive(Clone)]
struct Case {
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    gate: Tensor<4>,
}

/// (B, Tq, Tk, Hq, Hkv, d)
type Shape = (usize, usize, usize, usize, usize, usize);

fn case(dev: &Device, s: Shape) -> Case {
    let (b, tq, tk, hq, hkv, d) = s;
    Case {
        q: randn([b, tq, hq, d], 1.0, dev),
        k: randn([b, tk, hkv, d], 1.0, dev),
        v: randn([b, tk, hkv, d], 1.0, dev),
        gate: randn([b, tq, hq, d], 2.0, dev),
    }
}

fn opts(past_len: usize, padding: Option<KeyPadding>) -> AttentionOptions {
    AttentionOptions {
        past_len,
        padding,
        ..Default::default()
    }
}

/// Both kernel families: the subgroup kernels (lavapipe has a fixed subgroup size of 8) and
/// the workgroup-tile kernels (what `Auto` picks for these short sequences).
const FAMILIES: [Kernels; 2] = [Kernels::Subgroup, Kernels::Tiled];

fn check_forward(dev: &Device, s: Shape, o: &AttentionOptions) {
    let c = case(dev, s);
    let want = reference::forward(c.q.clone(), c.k.clone(), c.v.clone(), c.gate.clone(), o);
    for kernels in FAMILIES {
        let o = AttentionOptions {
            kernels,
            ..o.clone()
        };
        let got = gated_attention::gated_attention(
            c.q.clone(),
            c.k.clone(),
            c.v.clone(),
            c.gate.clone(),
            &o,
        )
        .unwrap();
        assert_close(
            got,
            want.clone(),
            1e-4,
            1e-5,
            &format!("forward {s:?} {o:?}"),
        );
    }
}

#[test]
fn forward_matches_reference() {
    let dev = wgpu();
    // Tq = Tk = 1; GQA ratios 1, 2, 4; Tq != Tk with an offset; every head-dim class, and
    // head dims that are not a power of two.
    for (s, past) in [
        ((1, 1, 1, 1, 1, 16), 0),
        ((2, 37, 37, 4, 2, 16), 0),
        ((1, 20, 50, 4, 1, 64), 30),
        ((2, 33, 33, 2, 2, 128), 0),
        ((1, 9, 9, 4, 1, 256), 0),
        ((1, 5, 12, 2, 1, 256), 7),
        ((1, 19, 19, 2, 1, 32), 0),
        ((2, 11, 11, 3, 3, 24), 0),
        ((1, 13, 17, 2, 2, 80), 4),
        ((1, 10, 6, 2, 1, 64), 0), // Tq > Tk: late queries see every key
    ] {
        check_forward(&dev, s, &opts(past, None));
    }
}

#[test]
fn forward_long_sequence_matches_reference() {
    // Many query blocks and key tiles (the block boundary logic of the causal loop bounds).
    check_forward(&wgpu(), (1, 300, 300, 4, 2, 64), &opts(0, None));
}

#[test]
fn custom_scale_matches_reference() {
    let o = AttentionOptions {
        scale: Some(0.3),
        ..Default::default()
    };
    check_forward(&wgpu(), (1, 12, 12, 2, 1, 32), &o);
}

#[test]
fn padding_masks_match_reference_and_empty_rows_are_zero() {
    let dev = wgpu();
    let s = (3, 12, 12, 4, 2, 64);
    // Left padding (batched generation): pad queries see nothing.
    check_forward(&dev, s, &opts(0, Some(KeyPadding::left(&[0, 3, 7]))));
    // Right padding, general ranges, a row with no valid key at all, with an offset.
    check_forward(&dev, s, &opts(0, Some(KeyPadding::right(&[12, 5, 1]))));
    let ranges = KeyPadding::ranges(vec![2..9, 0..0, 4..100]);
    check_forward(&dev, (3, 5, 12, 4, 2, 16), &opts(7, Some(ranges)));
    let mask = KeyPadding::from_mask(&[vec![false, false, true, true, true, true], vec![true; 6]])
        .unwrap();
    assert_eq!(mask, KeyPadding::ranges(vec![2..6, 0..6]));
    check_forward(&dev, (2, 6, 6, 2, 1, 128), &opts(0, Some(mask)));

    // Rows whose queries see no key give exact zeros, not NaN.
    let c = case(&dev, s);
    let y = gated_attention::gated_attention(
        c.q,
        c.k,
        c.v,
        c.gate,
        &opts(0, Some(KeyPadding::left(&[0, 3, 12]))),
    )
    .unwrap();
    let y = to_vec(y);
    let row = 4 * 64;
    for (b, pad) in [(1usize, 3usize), (2, 12)] {
        for i in 0..pad {
            let at = (b * 12 + i) * row;
            assert!(
                y[at..at + row].iter().all(|&x| x == 0.0),
                "batch {b} padding query {i} is not zero"
            );
        }
    }
    assert!(y.iter().all(|x| x.is_finite()));
}

fn check_fixture(name: &str) {
    let dev = wgpu();
    let f = read_fixture(
        &fixtures_dir()
            .join("attention")
            .join(format!("{name}.safetensors")),
    );
    let past_len = f["past_len"].1[0] as usize;
    let padding = f
        .get("pads")
        .map(|(_, p)| KeyPadding::left(&p.iter().map(|&x| x as usize).collect::<Vec<_>>()));
    let q: Tensor<4> = fixture_tensor(&f, "q", &dev);
    let got = gated_attention::gated_attention(
        q.clone(),
        fixture_tensor(&f, "k", &dev),
        fixture_tensor(&f, "v", &dev),
        fixture_tensor(&f, "gate", &dev),
        &opts(past_len, padding),
    )
    .unwrap();
    let want: Tensor<4> = fixture_tensor(&f, "out", &dev);
    let (got, want) = match f.get("query_valid") {
        // transformers averages all values on rows that see no key; Sluice gives 0 there.
        Some(_) => {
            let valid: Tensor<2> = fixture_tensor(&f, "query_valid", &dev);
            let valid = valid.unsqueeze_dims::<4>(&[2, 3]);
            let invalid = valid.clone().neg().add_scalar(1.0);
            assert_eq!(
                to_vec((got.clone() * invalid).abs().sum())[0],
                0.0,
                "{name}: padding rows must be zero"
            );
            (got * valid.clone(), want * valid)
        }
        None => (got, want),
    };
    assert_close(got, want, 1e-4, 1e-5, &format!("{name} vs transformers"));
}

#[test]
fn matches_transformers_qwen3_next_attention_module() {
    check_fixture("module");
}

#[test]
fn matches_transformers_left_padded_batch() {
    check_fixture("left_padded");
}

#[test]
fn matches_transformers_with_past_len() {
    check_fixture("past");
}

#[test]
fn matches_transformers_head_dim_256() {
    check_fixture("d256");
}

/// Gradients of `sum(y ⊙ co)` w.r.t. q, k, v, gate, by the WGSL op or the reference.
fn grads(c: &Case, co: &Tensor<4>, o: &AttentionOptions, wgsl: bool) -> Vec<Tensor<4>> {
    let dev = wgpu().autodiff();
    let leaf = |x: &Tensor<4>| Tensor::<4>::from_data(x.to_data(), &dev).require_grad();
    let (q, k, v, gate) = (leaf(&c.q), leaf(&c.k), leaf(&c.v), leaf(&c.gate));
    let y = if wgsl {
        gated_attention::gated_attention(q.clone(), k.clone(), v.clone(), gate.clone(), o).unwrap()
    } else {
        reference::forward(q.clone(), k.clone(), v.clone(), gate.clone(), o)
    };
    let loss = (y * Tensor::<4>::from_data(co.to_data(), &dev)).sum();
    let gr = loss.backward();
    [q, k, v, gate]
        .iter()
        .map(|x| Tensor::<4>::from_data(x.grad(&gr).expect("gradient").to_data(), &wgpu()))
        .collect()
}

#[test]
fn gradients_match_reference_autodiff() {
    let dev = wgpu();
    let names = ["dq", "dk", "dv", "dgate"];
    for (s, o) in [
        ((1, 5, 5, 1, 1, 8), opts(0, None)),
        (
            (2, 19, 19, 4, 2, 16),
            opts(0, Some(KeyPadding::left(&[0, 6]))),
        ),
        ((1, 7, 12, 4, 1, 64), opts(5, None)),
        (
            (2, 21, 21, 2, 1, 32),
            opts(0, Some(KeyPadding::right(&[21, 9]))),
        ),
        ((1, 9, 9, 2, 2, 128), opts(0, None)),
        ((1, 6, 6, 2, 1, 256), opts(0, None)),
        (
            (1, 11, 11, 4, 2, 80),
            opts(0, Some(KeyPadding::left(&[11]))),
        ), // all rows empty
    ] {
        let c = case(&dev, s);
        let (b, tq, _, hq, _, d) = s;
        let co = randn([b, tq, hq, d], 1.0, &dev);
        let want = grads(&c, &co, &o, false);
        for kernels in FAMILIES {
            let o = AttentionOptions {
                kernels,
                ..o.clone()
            };
            let got = grads(&c, &co, &o, true);
            for ((x, y), name) in got.into_iter().zip(want.clone()).zip(names) {
                assert_close(x, y, 2e-3, 2e-4, &format!("{name} {s:?} {o:?}"));
            }
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    let dev = wgpu();
    let s = (2, 4, 5, 2, 1, 4);
    let o = opts(1, Some(KeyPadding::left(&[0, 2])));
    let c = case(&dev, s);
    let co = randn([2, 4, 2, 4], 1.0, &dev);
    let analytic: Vec<Vec<f32>> = grads(&c, &co, &o, true).into_iter().map(to_vec).collect();
    let loss = |c: &Case| -> f64 {
        let y = gated_attention::gated_attention(
            c.q.clone(),
            c.k.clone(),
            c.v.clone(),
            c.gate.clone(),
            &o,
        )
        .unwrap();
        f64::from(to_vec((y * co.clone()).sum())[0])
    };
    let eps = 1e-2f32;
    for (which, name) in ["q", "k", "v", "gate"].iter().enumerate() {
        let pick = |c: &Case| match which {
            0 => c.q.clone(),
            1 => c.k.clone(),
            2 => c.v.clone(),
            _ => c.gate.clone(),
        };
        let base = pick(&c);
        let shape = base.dims();
        let base = to_vec(base);
        for i in 0..base.len() {
            let with = |delta: f32| {
                let mut vals = base.clone();
                vals[i] += delta;
                let x = Tensor::<4>::from_data(TensorData::new(vals, shape), &dev);
                let mut cc = c.clone();
                match which {
                    0 => cc.q = x,
                    1 => cc.k = x,
                    2 => cc.v = x,
                    _ => cc.gate = x,
                }
                cc
            };
            let fd = (loss(&with(eps)) - loss(&with(-eps))) / (2.0 * f64::from(eps));
            let an = f64::from(analytic[which][i]);
            assert!(
                (fd - an).abs() <= 5e-3 + 1e-2 * an.abs(),
                "d{name}[{i}]: analytic {an} vs finite difference {fd}"
            );
        }
    }
}

#[test]
fn decode_matches_reference() {
    let dev = wgpu();
    for (s, past, padding) in [
        ((1, 1, 1, 1, 1, 16), 0, None),
        ((2, 1, 30, 4, 2, 64), 29, Some(KeyPadding::left(&[0, 11]))),
        ((1, 1, 300, 4, 1, 128), 299, None), // more keys than one chunk of the kernel
        ((2, 1, 9, 2, 1, 256), 5, None),     // keys after the query position stay hidden
        ((2, 1, 7, 2, 2, 24), 6, Some(KeyPadding::left(&[7, 0]))), // an empty row
    ] {
        let c = case(&dev, s);
        let o = opts(past, padding);
        let got = gated_attention::gated_attention_decode(
            c.q.clone(),
            c.k.clone(),
            c.v.clone(),
            c.gate.clone(),
            &o,
        )
        .unwrap();
        let want = reference::forward(c.q, c.k, c.v, c.gate, &o);
        assert_close(got, want, 1e-4, 1e-5, &format!("decode {s:?} {o:?}"));
    }
}

/// Prefill `prefill` tokens through a cache, then decode the rest one at a time; the outputs
/// must equal one forward over the whole sequence.
fn cache_run(dev: &Device, s: Shape, prefill: usize, padding: Option<KeyPadding>) -> KvCache {
    let (b, t, _, _, hkv, d) = s;
    let c = case(dev, s);
    let full = gated_attention::gated_attention(
        c.q.clone(),
        c.k.clone(),
        c.v.clone(),
        c.gate.clone(),
        &opts(0, padding.clone()),
    )
    .unwrap();
    let mut cache = KvCache::new(b, hkv, d, dev);
    let mut outs = Vec::new();
    let mut at = 0;
    while at < t {
        let n = if at == 0 { prefill } else { 1 };
        cache
            .append(c.k.clone().narrow(1, at, n), c.v.clone().narrow(1, at, n))
            .unwrap();
        let o = opts(at, padding.clone());
        outs.push(
            cache
                .attend(
                    c.q.clone().narrow(1, at, n),
                    c.gate.clone().narrow(1, at, n),
                    &o,
                )
                .unwrap(),
        );
        at += n;
    }
    assert_eq!(cache.len(), t);
    assert_close(
        Tensor::cat(outs, 1),
        full,
        1e-4,
        1e-5,
        &format!("cache prefill {prefill} + decode {s:?} vs forward"),
    );
    assert_eq!(cache.keys().unwrap().dims(), [b, t, hkv, d]);
    cache
}

#[test]
fn kv_cache_prefill_then_decode_equals_full_forward() {
    let dev = wgpu();
    let cache = cache_run(
        &dev,
        (2, 40, 40, 4, 2, 64),
        29,
        Some(KeyPadding::left(&[0, 5])),
    );
    // 29 -> 58 time steps: the buffer doubled once, it was not re-copied per token.
    assert_eq!(cache.capacity(), 58);
    assert_eq!(cache.reallocations(), 2);
    let cache = cache_run(&dev, (1, 70, 70, 2, 1, 256), 3, None);
    assert_eq!(cache.capacity(), 96); // 3, 6, 12, 24, 48, 96
    assert_eq!(cache.reallocations(), 6);
}

#[test]
fn kv_cache_chunked_prefill_and_views_equal_forward() {
    let dev = wgpu();
    let (b, t, hq, hkv, d) = (2, 50, 4, 1, 32);
    let c = case(&dev, (b, t, t, hq, hkv, d));
    let padding = Some(KeyPadding::left(&[3, 0]));
    let full = gated_attention::gated_attention(
        c.q.clone(),
        c.k.clone(),
        c.v.clone(),
        c.gate.clone(),
        &opts(0, padding.clone()),
    )
    .unwrap();
    let mut cache = KvCache::with_capacity(b, hkv, d, 64, &dev);
    let mut outs = Vec::new();
    for (at, n) in [(0, 20), (20, 17), (37, 13)] {
        cache
            .append(c.k.clone().narrow(1, at, n), c.v.clone().narrow(1, at, n))
            .unwrap();
        let (q, gate) = (
            c.q.clone().narrow(1, at, n),
            c.gate.clone().narrow(1, at, n),
        );
        let o = opts(at, padding.clone());
        let y = cache.attend(q.clone(), gate.clone(), &o).unwrap();
        // attend == gated_attention over the cache's valid views.
        let via_views = gated_attention::gated_attention(
            q,
            cache.keys().unwrap(),
            cache.values().unwrap(),
            gate,
            &o,
        )
        .unwrap();
        assert_close(y.clone(), via_views, 1e-5, 1e-6, "attend vs views");
        outs.push(y);
    }
    assert_eq!(cache.reallocations(), 0);
    assert_close(
        Tensor::cat(outs, 1),
        full,
        1e-4,
        1e-5,
        "chunked prefill vs forward",
    );
    // Roll back and redo the last chunk.
    cache.truncate(37);
    assert_eq!(cache.len(), 37);
    cache
        .append(c.k.clone().narrow(1, 37, 13), c.v.clone().narrow(1, 37, 13))
        .unwrap();
    assert_eq!(cache.len(), 50);
}

#[test]
fn cpu_backend_runs_the_reference() {
    // Burn's CPU backend has no WGSL: the op selects the composed reference by itself, and
    // its results equal the WGSL kernels' on the same inputs (forward, decode and cache).
    let gpu = wgpu();
    let cpu = Device::flex();
    assert!(!sluice::device::supports_wgsl(&cpu));
    let s = (2, 9, 9, 4, 2, 16);
    let c = case(&gpu, s);
    let to_cpu = |x: &Tensor<4>| Tensor::<4>::from_data(x.to_data(), &cpu);
    let to_gpu = |x: Tensor<4>| Tensor::<4>::from_data(x.to_data(), &gpu);
    let o = opts(0, Some(KeyPadding::left(&[0, 4])));
    let on_cpu = gated_attention::gated_attention(
        to_cpu(&c.q),
        to_cpu(&c.k),
        to_cpu(&c.v),
        to_cpu(&c.gate),
        &o,
    )
    .unwrap();
    let on_gpu =
        gated_attention::gated_attention(c.q.clone(), c.k.clone(), c.v.clone(), c.gate.clone(), &o)
            .unwrap();
    assert_close(
        to_gpu(on_cpu),
        on_gpu.clone(),
        1e-4,
        1e-5,
        "cpu vs wgpu forward",
    );

    let mut cache = KvCache::new(2, 2, 16, &cpu);
    cache.append(to_cpu(&c.k), to_cpu(&c.v)).unwrap();
    let last = |x: &Tensor<4>| to_cpu(&x.clone().narrow(1, 8, 1));
    let step = cache
        .attend(last(&c.q), last(&c.gate), &opts(8, o.padding.clone()))
        .unwrap();
    assert_close(
        to_gpu(step),
        on_gpu.narrow(1, 8, 1),
        1e-4,
        1e-5,
        "cpu cache decode vs wgpu forward",
    );
}

#[test]
fn bad_shapes_give_clear_errors() {
    let dev = wgpu();
    let c = case(&dev, (2, 6, 6, 4, 2, 8));
    let o = AttentionOptions::default();
    let run = |q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, gate: Tensor<4>, o: &AttentionOptions| {
        gated_attention::gated_attention(q, k, v, gate, o)
            .unwrap_err()
            .to_string()
    };
    let e = run(
        c.q.clone(),
        randn([2, 6, 2, 4], 1.0, &dev),
        c.v.clone(),
        c.gate.clone(),
        &o,
    );
    assert!(e.contains("k has shape"), "{e}");
    let e = run(
        c.q.clone(),
        randn([1, 6, 2, 8], 1.0, &dev),
        c.v.clone(),
        c.gate.clone(),
        &o,
    );
    assert!(e.contains("k has shape"), "{e}");
    let e = run(
        c.q.clone(),
        c.k.clone(),
        randn([2, 5, 2, 8], 1.0, &dev),
        c.gate.clone(),
        &o,
    );
    assert!(e.contains("v has shape"), "{e}");
    let e = run(
        c.q.clone(),
        c.k.clone(),
        c.v.clone(),
        randn([2, 6, 4, 9], 1.0, &dev),
        &o,
    );
    assert!(e.contains("gate has shape"), "{e}");
    let e = run(
        randn([2, 6, 3, 8], 1.0, &dev),
        c.k.clone(),
        c.v.clone(),
        randn([2, 6, 3, 8], 1.0, &dev),
        &o,
    );
    assert!(e.contains("multiple of kv heads"), "{e}");
    let big = |h| randn([1, 1, h, 300], 1.0, &dev);
    let e = run(big(1), big(1), big(1), big(1), &o);
    assert!(e.contains("exceeds the supported maximum 256"), "{e}");
    let pad = opts(0, Some(KeyPadding::left(&[0, 1, 2])));
    let e = run(c.q.clone(), c.k.clone(), c.v.clone(), c.gate.clone(), &pad);
    assert!(e.contains("padding describes 3 batch rows"), "{e}");
    let nan = AttentionOptions {
        scale: Some(f32::NAN),
        ..Default::default()
    };
    let e = run(c.q.clone(), c.k.clone(), c.v.clone(), c.gate.clone(), &nan);
    assert!(e.contains("not finite"), "{e}");
    let e = gated_attention::gated_attention_decode(
        c.q.clone(),
        c.k.clone(),
        c.v.clone(),
        c.gate.clone(),
        &o,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("one query token"), "{e}");
    let e = KeyPadding::from_mask(&[vec![true, false, true]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("hole"), "{e}");

    let mut cache = KvCache::new(2, 2, 8, &dev);
    let e = cache
        .attend(c.q.clone(), c.gate.clone(), &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty KV cache"), "{e}");
    let e = cache
        .append(
            randn([2, 3, 1, 8], 1.0, &dev),
            randn([2, 3, 1, 8], 1.0, &dev),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("cache append"), "{e}");
    cache.append(c.k.clone(), c.v.clone()).unwrap();
    let e = cache
        .attend(
            randn([2, 1, 4, 16], 1.0, &dev),
            randn([2, 1, 4, 16], 1.0, &dev),
            &o,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("k has shape"), "{e}");
}
