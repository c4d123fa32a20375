//! Long sequences on lavapipe: the WGSL kernels (forward and backward) at T = 2048–4096
//! against the composed reference run on Burn's CPU backend (Flex) with the same inputs.
//! Guards the loop bounds of the causal/chunk loops at many blocks, and llvmpipe's cap on
//! loop iterations per invocation (~65k in total; past it loops silently stop): before the
//! delta-rule backward was split into one dispatch per chunk, its gradients were zero for
//! all but the last ~160 tokens at T = 2048.

use burn::tensor::{Device, Tensor};
use sluice::ops::delta_rule::{self, DeltaRuleOptions};
use sluice::ops::gated_attention::{self, AttentionOptions};
use sluice_tests::{assert_close, randn, uniform, wgpu};

fn copy<const D: usize>(x: &Tensor<D>, dev: &Device) -> Tensor<D> {
    Tensor::<D>::from_data(x.to_data(), dev).require_grad()
}

/// Output and input gradients of `sum(y ⊙ co)` for the attention op on `dev`.
fn attention_run(xs: &[Tensor<4>; 5], dev: &Device) -> Vec<Tensor<4>> {
    let [q, k, v, gate, co] = xs.each_ref().map(|x| copy(x, dev));
    let y = gated_attention::gated_attention(
        q.clone(),
        k.clone(),
        v.clone(),
        gate.clone(),
        &AttentionOptions::default(),
    )
    .unwrap();
    let gr = (y.clone() * co.detach()).sum().backward();
    let host = wgpu();
    let back = |x: Tensor<4>| Tensor::<4>::from_data(x.to_data(), &host);
    let mut out = vec![back(y.inner())];
    out.extend([q, k, v, gate].map(|x| back(x.grad(&gr).expect("gradient"))));
    out
}

#[test]
fn attention_t4096_forward_and_gradients_match_reference_on_cpu() {
    const T: usize = 4096;
    let gpu = wgpu();
    let (hq, hkv, d) = (2, 1, 64);
    let xs = [
        randn([1, T, hq, d], 1.0, &gpu),
        randn([1, T, hkv, d], 1.0, &gpu),
        randn([1, T, hkv, d], 1.0, &gpu),
        randn([1, T, hq, d], 2.0, &gpu),
        randn([1, T, hq, d], 1.0, &gpu),
    ];
    let got = attention_run(&xs, &gpu.clone().autodiff());
    let want = attention_run(&xs, &Device::flex().autodiff());
    for ((a, b), name) in got
        .into_iter()
        .zip(want)
        .zip(["y", "dq", "dk", "dv", "dgate"])
    {
        assert_close(a, b, 2e-3, 2e-4, &format!("attention T={T} {name}"));
    }
}

#[test]
fn delta_rule_t2048_forward_and_gradients_match_reference_on_cpu() {
    const T: usize = 2048;
    let gpu = wgpu();
    let (hk, hv, dk, dv) = (1, 2, 64, 64);
    let q = randn([1, T, hk, dk], 1.0, &gpu);
    let k = randn([1, T, hk, dk], 1.0, &gpu);
    let v = randn([1, T, hv, dv], 1.0, &gpu);
    let g = uniform([1, T, hv], -0.3, 0.0, &gpu);
    let beta = uniform([1, T, hv], 0.0, 1.0, &gpu);
    let co = randn([1, T, hv, dv], 1.0, &gpu);
    let run = |dev: &Device| -> Vec<Tensor<4>> {
        let (q, k, v, co) = (copy(&q, dev), copy(&k, dev), copy(&v, dev), copy(&co, dev));
        let (g, beta) = (copy(&g, dev), copy(&beta, dev));
        let out = delta_rule::delta_rule(
            q.clone(),
            k.clone(),
            v.clone(),
            g.clone(),
            beta.clone(),
            None,
            &DeltaRuleOptions::default(),
        )
        .unwrap();
        let gr =
            ((out.output.clone() * co.detach()).sum() + out.final_state.clone().sum()).backward();
        let host = wgpu();
        let back4 = |x: Tensor<4>| Tensor::<4>::from_data(x.to_data(), &host);
        let back3 = |x: Tensor<3>| Tensor::<3>::from_data(x.to_data(), &host).unsqueeze_dim::<4>(3);
        vec![
            back4(out.output.inner()),
            back4(out.final_state.inner()),
            back4(q.grad(&gr).expect("dq")),
            back4(k.grad(&gr).expect("dk")),
            back4(v.grad(&gr).expect("dv")),
            back3(g.grad(&gr).expect("dg")),
            back3(beta.grad(&gr).expect("dbeta")),
        ]
    };
    let got = run(&gpu.clone().autodiff());
    let want = run(&Device::flex().autodiff());
    let names = ["o", "state", "dq", "dk", "dv", "dg", "dbeta"];
    for ((a, b), name) in got.into_iter().zip(want).zip(names) {
        assert_close(a, b, 2e-3, 2e-4, &format!("delta rule T={T} {name}"));
    }
}

#[test]
fn delta_rule_t4096_dk128_forward_matches_reference_on_cpu() {
    // Qwen3-Next's linear-attention head dims; forward only (the gradients' loop structure is
    // the same as at dk = 64 above, one dispatch per chunk).
    const T: usize = 4096;
    let gpu = wgpu();
    let cpu = Device::flex();
    let (hk, hv, dk, dv) = (1, 1, 128, 128);
    let xs4 = [
        randn([1, T, hk, dk], 1.0, &gpu),
        randn([1, T, hk, dk], 1.0, &gpu),
        randn([1, T, hv, dv], 1.0, &gpu),
    ];
    let xs3 = [
        uniform([1, T, hv], -0.3, 0.0, &gpu),
        uniform([1, T, hv], 0.0, 1.0, &gpu),
    ];
    let run = |dev: &Device| {
        let [q, k, v] = xs4
            .each_ref()
            .map(|x| Tensor::<4>::from_data(x.to_data(), dev));
        let [g, beta] = xs3
            .each_ref()
            .map(|x| Tensor::<3>::from_data(x.to_data(), dev));
        let out =
            delta_rule::delta_rule(q, k, v, g, beta, None, &DeltaRuleOptions::default()).unwrap();
        let host = wgpu();
        [out.output, out.final_state].map(|x| Tensor::<4>::from_data(x.to_data(), &host))
    };
    let [o, s] = run(&gpu);
    let [o_ref, s_ref] = run(&cpu);
    assert_close(o, o_ref, 2e-3, 2e-4, "delta rule T=4096 dk=128 output");
    assert_close(s, s_ref, 2e-3, 2e-4, "delta rule T=4096 dk=128 state");
}
