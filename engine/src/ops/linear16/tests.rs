//! The 16-bit kernels against the f64 reference on the widened weights (lavapipe in CI).

use burn::tensor::{Distribution, Int, Tensor, TensorData};

use super::reference::{matmul_t, widen};
use super::{Half, Packed, embed16, linear16};

fn device() -> burn::tensor::Device {
    crate::device::wgpu()
}

fn host(t: Tensor<2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    // A small LCG: deterministic, no device round trip.
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: element {i} is {g}, expected {w}"
        );
    }
}

/// `x W^T` on the device for `[m, k] x [n, k]`, both paths (GEMV for m <= 8 and k % 8 == 0).
fn check_forward(m: usize, k: usize, n: usize, half: Half) {
    let dev = device();
    let x = random(m * k, 1 + m as u64);
    let w = random(n * k, 7 + n as u64);
    let packed = Packed::from_f32(&w, n, k, half, &dev).expect("packs");
    let bits: Vec<u16> = w.iter().map(|&v| half.from_f32(v)).collect();
    let want = matmul_t(&x, &widen(&bits, half), m, k, n);
    let xt = Tensor::<3>::from_data(TensorData::new(x, [1, m, k]), &dev);
    let got = host(linear16(xt, &packed).reshape([m, n]));
    assert_close(&got, &want, 1e-4, &format!("{half:?} m={m} k={k} n={n}"));
}

#[test]
fn gemv_matches_reference() {
    for half in [Half::Bf16, Half::F16] {
        check_forward(1, 64, 37, half);
        check_forward(3, 1024, 130, half);
        check_forward(8, 72, 5, half);
    }
}

#[test]
fn gemm_matches_reference() {
    for half in [Half::Bf16, Half::F16] {
        check_forward(9, 64, 70, half);
        check_forward(130, 34, 65, half);
        // k % 8 != 0 takes the GEMM even for one row.
        check_forward(1, 18, 3, half);
    }
}

#[test]
fn bits_round_trip_and_bf16_is_exact() {
    let dev = device();
    // bf16 keeps f32's range: 1e38 stays finite (f16 would overflow).
    let w = [1e38f32, -3.5, 1.0e-30, 0.15625];
    let p = Packed::from_f32(&w, 2, 2, Half::Bf16, &dev).expect("packs");
    let bits = pollster::block_on(p.bits()).expect("reads back");
    let back = widen(&bits, Half::Bf16);
    for (a, b) in w.iter().zip(&back) {
        assert!((a - b).abs() <= a.abs() * 4e-3, "{a} -> {b}");
    }
    assert_eq!(p.bytes(), 8);
    assert!(Packed::from_f32(&[1.0, 2.0, 3.0], 1, 3, Half::Bf16, &dev).is_err());
}

#[test]
fn input_gradient_is_dy_w() {
    let ad = device().autodiff();
    let (m, k, n) = (5, 24, 11);
    let w = random(n * k, 3);
    let half = Half::Bf16;
    let packed = Packed::from_f32(&w, n, k, half, &ad).expect("packs");
    let wf = widen(
        &w.iter().map(|&v| half.from_f32(v)).collect::<Vec<_>>(),
        half,
    );
    let x = Tensor::<3>::random([1, m, k], Distribution::Normal(0.0, 1.0), &ad).require_grad();
    let c = random(m * n, 11);
    let ct = Tensor::<3>::from_data(TensorData::new(c.clone(), [1, m, n]), &ad);
    let loss = (linear16(x.clone(), &packed) * ct).sum();
    let grads = loss.backward();
    let dx = host(x.grad(&grads).expect("x has a gradient").reshape([m, k]));
    // dx[i, j] = Σ_n c[i, n] W[n, j] = c (W^T)^T: matmul_t with W transposed.
    let wt: Vec<f32> = (0..k)
        .flat_map(|j| (0..n).map(move |r| (r, j)))
        .map(|(r, j)| wf[r * k + j])
        .collect();
    let want = matmul_t(&c, &wt, m, n, k);
    assert_close(&dx, &want, 1e-4, "dx");
}

#[test]
fn embedding_rows_come_from_the_right_shard() {
    let dev = device();
    let (v, h, half) = (10, 6, Half::F16);
    let table = random(v * h, 5);
    let split = 4;
    let a = Packed::from_f32(&table[..split * h], split, h, half, &dev).expect("packs");
    let b = Packed::from_f32(&table[split * h..], v - split, h, half, &dev).expect("packs");
    let ids = [9i32, 0, 4, 3, 7];
    let idt = Tensor::<1, Int>::from_data(TensorData::new(ids.to_vec(), [ids.len()]), &dev);
    let got = host(embed16(idt.clone(), &a, 0) + embed16(idt, &b, split));
    let want: Vec<f32> = ids
        .iter()
        .flat_map(|&i| {
            let row = &table[i as usize * h..(i as usize + 1) * h];
            row.iter()
                .map(|&x| half.to_f32(half.from_f32(x)))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_close(&got, &want, 0.0, "gathered rows");
}

#[test]
fn fused_prologues_and_residual_match_reference() {
    use super::{Prologue, linear16_decode};
    let dev = device();
    let (m, k, n, half) = (3, 64, 20, Half::Bf16);
    let x = random(m * k, 21);
    let w = random(n * k, 22);
    let aux = random(m * k, 23);
    let r = random(m * n, 24);
    let packed = Packed::from_f32(&w, n, k, half, &dev).expect("packs");
    let wf = widen(
        &w.iter().map(|&v| half.from_f32(v)).collect::<Vec<_>>(),
        half,
    );
    let t2 = |v: &[f32], r: usize, c: usize| {
        Tensor::<2>::from_data(TensorData::new(v.to_vec(), [r, c]), &dev)
    };
    let eps = 1e-6;
    // RMSNorm prologue (weight = first row of aux) + residual.
    let nw = &aux[..k];
    let normed: Vec<f32> = (0..m)
        .flat_map(|i| {
            let row = &x[i * k..(i + 1) * k];
            let ms = row.iter().map(|v| v * v).sum::<f32>() / k as f32;
            let inv = 1.0 / (ms + eps as f32).sqrt();
            row.iter()
                .zip(nw)
                .map(move |(v, g)| v * inv * (1.0 + g))
                .collect::<Vec<_>>()
        })
        .collect();
    let want: Vec<f32> = matmul_t(&normed, &wf, m, k, n)
        .iter()
        .zip(&r)
        .map(|(a, b)| a + b)
        .collect();
    let weight = Tensor::<1>::from_data(TensorData::new(nw.to_vec(), [k]), &dev);
    let got = linear16_decode(
        t2(&x, m, k),
        &packed,
        Prologue::RmsNorm { weight, eps },
        Some(t2(&r, m, n)),
    );
    assert_close(&host(got), &want, 1e-4, "rms prologue + residual");
    // SwiGLU prologue, no residual.
    let act: Vec<f32> = x
        .iter()
        .zip(&aux)
        .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
        .collect();
    let want = matmul_t(&act, &wf, m, k, n);
    let got = linear16_decode(
        t2(&x, m, k),
        &packed,
        Prologue::SwiGlu { up: t2(&aux, m, k) },
        None,
    );
    assert_close(&host(got), &want, 1e-4, "swiglu prologue");
}
