//! The WGSL delta-rule op against transformers' own `torch_chunk_gated_delta_rule` and
//! `torch_recurrent_gated_delta_rule` (fixtures made by
//! `tests/fixtures/make_delta_rule_fixtures.py`).

use burn::tensor::Tensor;
use sluice::ops::delta_rule::{self, DeltaRuleOptions};
use sluice_tests::{assert_close, fixture_tensor, fixtures_dir, read_fixture, wgpu};

fn check(name: &str) {
    let dev = wgpu();
    let f = read_fixture(
        &fixtures_dir()
            .join("delta_rule")
            .join(format!("{name}.safetensors")),
    );
    let h0 = f
        .contains_key("initial_state")
        .then(|| fixture_tensor::<4>(&f, "initial_state", &dev));
    let out = delta_rule::delta_rule(
        fixture_tensor(&f, "q", &dev),
        fixture_tensor(&f, "k", &dev),
        fixture_tensor(&f, "v", &dev),
        fixture_tensor(&f, "g", &dev),
        fixture_tensor(&f, "beta", &dev),
        h0.clone(),
        &DeltaRuleOptions::default(),
    )
    .unwrap();
    for which in ["chunk", "recurrent"] {
        let o: Tensor<4> = fixture_tensor(&f, &format!("out_{which}"), &dev);
        let s: Tensor<4> = fixture_tensor(&f, &format!("state_{which}"), &dev);
        assert_close(
            out.output.clone(),
            o,
            1e-4,
            1e-5,
            &format!("{name} output vs {which}"),
        );
        assert_close(
            out.final_state.clone(),
            s,
            1e-4,
            1e-5,
            &format!("{name} state vs {which}"),
        );
    }
}

#[test]
fn matches_transformers_basic() {
    check("basic");
}

#[test]
fn matches_transformers_initial_state() {
    check("init_state");
}

#[test]
fn matches_transformers_grouped_heads_long() {
    check("gqa_long");
}

#[test]
fn matches_transformers_single_token() {
    check("single_token");
}
