//! Bad checkpoints and configs give clear errors that name the field, tensor and file.

use std::path::{Path, PathBuf};

use sluice::model::Config;
use sluice::model::files::load_model;
use sluice_tests::{fixtures_dir, wgpu};

fn tiny_dir() -> PathBuf {
    fixtures_dir().join("models").join("qwen3_next_tiny")
}

fn tiny_config() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(tiny_dir().join("config.json")).unwrap()).unwrap()
}

fn config_err(v: &serde_json::Value) -> String {
    Config::from_json(&v.to_string()).unwrap_err().to_string()
}

#[test]
fn config_errors_name_the_field() {
    let base = tiny_config();
    assert!(Config::from_json(&base.to_string()).is_ok());

    let mut v = base.clone();
    v["frobnicate_heads"] = 3.into();
    let e = config_err(&v);
    assert!(e.contains("unknown config field `frobnicate_heads`"), "{e}");

    let mut v = base.clone();
    v["hidden_act"] = "gelu".into();
    let e = config_err(&v);
    assert!(e.contains("`hidden_act`") && e.contains("gelu"), "{e}");

    let mut v = base.clone();
    v.as_object_mut().unwrap().remove("vocab_size");
    let e = config_err(&v);
    assert!(e.contains("`vocab_size` is missing"), "{e}");

    let mut v = base.clone();
    v["model_type"] = "llama".into();
    let e = config_err(&v);
    assert!(e.contains("unsupported model_type `llama`"), "{e}");

    let mut v = base.clone();
    v["layer_types"] = serde_json::json!([
        "linear_attention",
        "mamba",
        "linear_attention",
        "full_attention"
    ]);
    let e = config_err(&v);
    assert!(e.contains("`layer_types[1]`"), "{e}");

    let mut v = base.clone();
    v["num_key_value_heads"] = 3.into();
    let e = config_err(&v);
    assert!(e.contains("`num_key_value_heads`"), "{e}");

    let mut v = base.clone();
    v["rope_parameters"] = serde_json::json!({"rope_type": "yarn", "rope_theta": 10000.0});
    let e = config_err(&v);
    assert!(e.contains("`rope_parameters.rope_type`"), "{e}");

    let e = Config::from_json("{ not json").unwrap_err().to_string();
    assert!(e.contains("not valid JSON"), "{e}");
}

#[test]
fn composite_qwen3_5_config_reads_text_config() {
    // The Qwen3.5 fixture is saved the way hub checkpoints are: a composite config whose
    // text model is `text_config`.
    let composite: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("models/qwen3_5_tiny/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(composite["model_type"], "qwen3_5");
    let mut text = composite["text_config"].clone();
    text["model_type"] = "qwen3_5_text".into();
    let direct = Config::from_json(&text.to_string()).unwrap();
    let via = Config::from_json(&composite.to_string()).unwrap();
    assert_eq!(direct, via);
    assert_eq!(via.family, sluice::model::config::Family::Qwen35);
}

/// A scratch copy of the tiny checkpoint.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "generation_config.json", "model.safetensors"] {
        std::fs::copy(tiny_dir().join(f), dir.join(f)).unwrap();
    }
    dir
}

/// Rewrites the checkpoint with `edit` applied to its tensors `(name, shape, bytes)`.
fn rewrite(dir: &Path, edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<u8>)>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(&path, out).unwrap();
}

fn load_err(dir: &Path) -> String {
    match load_model(dir, &wgpu()) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_tensor_is_named() {
    let dir = scratch("missing");
    rewrite(&dir, |t| {
        t.retain(|(n, _, _)| n != "model.layers.2.linear_attn.A_log")
    });
    let e = load_err(&dir);
    assert!(
        e.contains("`model.layers.2.linear_attn.A_log` is missing"),
        "{e}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn wrong_shape_names_tensor_and_file() {
    let dir = scratch("shape");
    rewrite(&dir, |t| {
        let x = t
            .iter_mut()
            .find(|(n, _, _)| n == "model.norm.weight")
            .unwrap();
        x.1 = vec![x.1[0] / 2];
        x.2.truncate(x.2.len() / 2);
    });
    let e = load_err(&dir);
    assert!(
        e.contains("`model.norm.weight`")
            && e.contains("model.safetensors")
            && e.contains("expected"),
        "{e}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn truncated_file_is_reported() {
    let dir = scratch("truncated");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("model.safetensors") && e.contains("truncated or corrupt"),
        "{e}"
    );
    std::fs::write(&path, b"garbage").unwrap();
    let e = load_err(&dir);
    assert!(e.contains("truncated or corrupt"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn missing_files_are_named() {
    let dir = scratch("nofile");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("model.safetensors"), "{e}");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("config.json"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn composite_prefixes_and_skipped_tensors_load() {
    // Hub Qwen3.5 layout: text weights under `model.language_model.`, plus vision and MTP
    // tensors that a text model skips.
    let dir = scratch("prefix");
    rewrite(&dir, |t| {
        for x in t.iter_mut() {
            if let Some(rest) = x.0.strip_prefix("model.") {
                x.0 = format!("model.language_model.{rest}");
            }
        }
        t.push((
            "model.visual.blocks.0.attn.qkv.weight".into(),
            vec![2, 2],
            vec![0; 16],
        ));
        t.push(("mtp.fc.weight".into(), vec![2], vec![0; 8]));
    });
    let dev = wgpu();
    let (_, a) = load_model(&dir, &dev).unwrap();
    let (_, b) = load_model(&tiny_dir(), &dev).unwrap();
    let ids = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(vec![1i64, 2, 3, 4], [1, 4]),
        &dev,
    );
    let run = |m: &sluice::model::HybridModel| {
        let mut cache = m.new_cache();
        let ctx = sluice::nn::attention::AttentionContext::contiguous(1, 4, 0, &dev);
        m.logits(m.hidden(ids.clone(), &mut cache, &ctx))
    };
    sluice_tests::assert_close(run(&a), run(&b), 0.0, 0.0, "prefixed checkpoint");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Rewrites the checkpoint's tensors as `dtype` bytes (F16 or F32) via `conv`.
fn rewrite_dtype(dir: &Path, dtype: safetensors::Dtype, conv: impl Fn(f32) -> Vec<u8>) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let data = v
                .data()
                .chunks_exact(4)
                .flat_map(|b| conv(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect();
            (n, v.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(dtype, s.clone(), d).unwrap(),
            )
        })
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn f16_checkpoint_loads_exactly() {
    // The same weights stored as F16, and as F32 holding the F16-rounded values: loading must
    // give identical models (the F16 → F32 conversion is exact).
    let f16_dir = scratch("f16");
    rewrite_dtype(&f16_dir, safetensors::Dtype::F16, |x| {
        half::f16::from_f32(x).to_le_bytes().to_vec()
    });
    let f32_dir = scratch("f16-as-f32");
    rewrite_dtype(&f32_dir, safetensors::Dtype::F32, |x| {
        half::f16::from_f32(x).to_f32().to_le_bytes().to_vec()
    });
    let dev = wgpu();
    let (_, a) = load_model(&f16_dir, &dev).unwrap();
    let (_, b) = load_model(&f32_dir, &dev).unwrap();
    let ids = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(vec![3i64, 1, 4, 1, 5, 9], [1, 6]),
        &dev,
    );
    let run = |m: &sluice::model::HybridModel| {
        let mut cache = m.new_cache();
        let ctx = sluice::nn::attention::AttentionContext::contiguous(1, 6, 0, &dev);
        m.logits(m.hidden(ids.clone(), &mut cache, &ctx))
    };
    sluice_tests::assert_close(run(&a), run(&b), 0.0, 0.0, "F16 checkpoint");
    std::fs::remove_dir_all(f16_dir).unwrap();
    std::fs::remove_dir_all(f32_dir).unwrap();
}

/// Edits `config.json` (or another JSON file) of a scratch checkpoint.
fn edit_json(dir: &Path, file: &str, edit: impl Fn(&mut serde_json::Value)) {
    let path = dir.join(file);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
}

/// Sets element 5 of tensor `name` to `x`.
fn poison(dir: &Path, name: &str, x: f32) {
    rewrite(dir, |t| {
        let e = t.iter_mut().find(|(n, _, _)| n == name).unwrap();
        e.2[20..24].copy_from_slice(&x.to_le_bytes());
    });
}

type Setup = fn(&Path);

/// Malformed and hostile checkpoint folders: each is a named error that says which file,
/// field or tensor is wrong — never a silently wrong model, a hang or a panic.
#[test]
fn hostile_checkpoints_get_named_errors() {
    let cases: &[(&str, Setup, &[&str])] = &[
        (
            "NaN weight",
            |d| poison(d, "model.layers.1.mlp.gate.weight", f32::NAN),
            &[
                "model.layers.1.mlp.gate.weight",
                "non-finite",
                "NaN",
                "element 5",
            ],
        ),
        (
            "infinite weight",
            |d| poison(d, "model.norm.weight", f32::INFINITY),
            &[
                "model.norm.weight",
                "non-finite",
                "inf",
                "model.safetensors",
            ],
        ),
        (
            "config with fewer layers than the checkpoint",
            |d| {
                edit_json(d, "config.json", |v| {
                    v["num_hidden_layers"] = 3.into();
                    v["layer_types"].as_array_mut().unwrap().truncate(3);
                })
            },
            &["does not use", "model.layers.3."],
        ),
        (
            "untied config without a stored lm_head",
            |d| rewrite(d, |t| t.retain(|(n, _, _)| n != "lm_head.weight")),
            &["`lm_head.weight` is missing"],
        ),
        (
            "index pointing outside the folder",
            |d| {
                let index = serde_json::json!({"weight_map": {"model.norm.weight": "../model.safetensors"}});
                std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
            },
            &[
                "model.safetensors.index.json",
                "not a file name inside the model folder",
            ],
        ),
        (
            "index with an empty weight_map",
            |d| {
                std::fs::write(
                    d.join("model.safetensors.index.json"),
                    r#"{"weight_map": {}}"#,
                )
                .unwrap();
            },
            &["model.safetensors.index.json", "lists no tensors"],
        ),
        (
            "EOS id outside the vocabulary",
            |d| {
                edit_json(d, "generation_config.json", |v| {
                    v["eos_token_id"] = 9999.into()
                })
            },
            &[
                "generation_config.json",
                "eos_token_id",
                "9999",
                "vocabulary of 256",
            ],
        ),
        (
            "non-integer EOS id",
            |d| {
                edit_json(d, "generation_config.json", |v| {
                    v["eos_token_id"] = 1.5.into()
                })
            },
            &["generation_config.json", "eos_token_id", "1.5"],
        ),
        (
            "generation_config.json that is not JSON",
            |d| std::fs::write(d.join("generation_config.json"), "{oops").unwrap(),
            &["generation_config.json: not valid JSON"],
        ),
        (
            "EOS id in config.json outside the vocabulary",
            |d| edit_json(d, "config.json", |v| v["eos_token_id"] = 256.into()),
            &["config.json", "eos_token_id", "256"],
        ),
        (
            "mlp_only_layers beyond the model",
            |d| {
                edit_json(d, "config.json", |v| {
                    v["mlp_only_layers"] = serde_json::json!([7])
                })
            },
            &["config.json", "mlp_only_layers", "layer 7"],
        ),
        (
            "negative rms_norm_eps",
            |d| edit_json(d, "config.json", |v| v["rms_norm_eps"] = (-1e-6).into()),
            &["config.json", "rms_norm_eps"],
        ),
        (
            "rope_theta 0",
            |d| {
                edit_json(d, "config.json", |v| {
                    v["rope_parameters"]["rope_theta"] = 0.into()
                })
            },
            &["config.json", "rope_theta"],
        ),
        (
            "max_position_embeddings 0",
            |d| {
                edit_json(d, "config.json", |v| {
                    v["max_position_embeddings"] = 0.into()
                })
            },
            &["config.json", "max_position_embeddings"],
        ),
        (
            "weight file that is a folder",
            |d| {
                std::fs::remove_file(d.join("model.safetensors")).unwrap();
                std::fs::create_dir(d.join("model.safetensors")).unwrap();
            },
            &["model.safetensors", "is a folder, not a regular file"],
        ),
        (
            "weight file that is a FIFO",
            |d| {
                std::fs::remove_file(d.join("model.safetensors")).unwrap();
                let ok = std::process::Command::new("mkfifo")
                    .arg(d.join("model.safetensors"))
                    .status()
                    .unwrap();
                assert!(ok.success());
            },
            &["model.safetensors", "FIFO"],
        ),
    ];
    for (i, (what, setup, want)) in cases.iter().enumerate() {
        let dir = scratch(&format!("hostile-{i}"));
        setup(&dir);
        let e = load_err(&dir);
        for w in *want {
            assert!(e.contains(w), "{what}: `{w}` not in: {e}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// `tie_word_embeddings = true` with a stored `lm_head.weight`: the head is the embedding, as
/// transformers ties it (the stored head is ignored).
#[test]
fn tied_config_ignores_a_stored_head() {
    let dir = scratch("tied");
    edit_json(&dir, "config.json", |v| {
        v["tie_word_embeddings"] = true.into()
    });
    let (cfg, model) = load_model(&dir, &wgpu()).unwrap();
    assert!(cfg.tie_word_embeddings && model.lm_head.is_none());
    std::fs::remove_dir_all(dir).unwrap();
}

/// A model whose weights turn non-finite inside (here a NaN norm weight set after loading)
/// stops generation with an error naming the first layer whose output is non-finite.
#[test]
fn non_finite_logits_name_the_layer() {
    use sluice::model::generate::{GenerateError, GenerateOptions, generate};
    let dev = wgpu();
    let (_, mut model) = load_model(&tiny_dir(), &dev).unwrap();
    let h = model.embed_tokens.cols();
    let mut w = vec![1.0f32; h];
    w[3] = f32::NAN;
    model.layers[2].post_attention_layernorm = burn::module::Param::from_tensor(
        burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(w, [h]), &dev),
    );
    let opts = GenerateOptions {
        max_new_tokens: 4,
        sampling: Default::default(),
        eos_token_ids: vec![],
    };
    match generate(&model, &[vec![1, 2, 3]], &opts, &dev, |_, _| {}) {
        Err(GenerateError::NonFinite { step, origin }) => {
            assert_eq!((step, origin.as_str()), (0, "model.layers.2"));
        }
        other => panic!("expected a non-finite error, got {other:?}"),
    }
}

/// Property-based fuzzing of the readers of untrusted files (a short bounded run: a few
/// hundred cases each): whatever the bytes, the result is `Ok` or a named error — never a
/// panic, a hang or an unbounded allocation.
mod fuzz {
    use proptest::prelude::*;
    use sluice::model::Config;
    use sluice::model::chat::{ChatOptions, ChatTemplate, Message};
    use sluice::model::tokenizer::Tokenizer;
    use sluice::model::weights::Weights;

    /// 256 cases from a fixed seed (CI); `SLUICE_FUZZ_CASES=N` and `SLUICE_FUZZ_SEED=S` run
    /// a longer or different search.
    fn cfg() -> ProptestConfig {
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        ProptestConfig {
            cases: env("SLUICE_FUZZ_CASES").map_or(256, |n| n as u32),
            rng_seed: proptest::test_runner::RngSeed::Fixed(env("SLUICE_FUZZ_SEED").unwrap_or(17)),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// A small valid safetensors file: three tensors of the three supported dtypes.
    fn small_safetensors() -> Vec<u8> {
        use safetensors::tensor::TensorView;
        let (a, b, c) = (vec![0u8; 4 * 6], vec![1u8; 2 * 4], vec![2u8; 2 * 3]);
        let views = vec![
            (
                "a",
                TensorView::new(safetensors::Dtype::F32, vec![2, 3], &a).unwrap(),
            ),
            (
                "b",
                TensorView::new(safetensors::Dtype::BF16, vec![4], &b).unwrap(),
            ),
            (
                "c",
                TensorView::new(safetensors::Dtype::F16, vec![3, 1], &c).unwrap(),
            ),
        ];
        safetensors::serialize(views, None).unwrap()
    }

    /// JSON values a hostile config may hold.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::json;
        prop_oneof![
            any::<i64>().prop_map(|x| json!(x)),
            any::<u64>().prop_map(|x| json!(x)),
            any::<f64>().prop_map(|x| json!(x)),
            Just(json!(null)),
            any::<bool>().prop_map(|x| json!(x)),
            "[a-z_]{0,12}".prop_map(|x| json!(x)),
            prop::collection::vec(0u64..300, 0..6).prop_map(|x| json!(x)),
            Just(json!({"rope_theta": -1})),
        ]
    }

    proptest! {
        #![proptest_config(cfg())]

        #[test]
        fn safetensors_bytes_never_panic(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = small_safetensors();
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            if let Ok(w) = Weights::new(vec![("f".into(), Box::new(bytes))]) {
                for name in w.names() {
                    let shape = w.shape(&name).unwrap_or_default();
                    let _ = w.raw(&name, &shape).map(|r| r.to_f32());
                }
                let _ = w.check_all_used();
            }
        }

        #[test]
        fn config_values_never_panic(
            edits in prop::collection::vec((any::<prop::sample::Index>(), json_value()), 1..4),
        ) {
            let text = std::fs::read_to_string(super::tiny_dir().join("config.json")).unwrap();
            let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            for (at, value) in edits {
                v[&keys[at.index(keys.len())]] = value;
            }
            if let Ok(c) = Config::from_json(&v.to_string()) {
                // A config that parses gives shapes whose products fit.
                let _ = c.num_parameters();
            }
        }

        #[test]
        fn config_text_never_panics(text in "\\PC{0,200}") {
            let _ = Config::from_json(&text);
            let _ = sluice::model::config::generation_eos_ids(&text);
        }

        #[test]
        fn chat_templates_never_panic(src in "[{}%#a-z()|~+*. '\\[\\]0-9=]{0,60}") {
            if let Ok(t) = ChatTemplate::new(&src) {
                let _ = t.render(&[Message::user("hi")], &ChatOptions::default());
            }
        }

        #[test]
        fn tokenizer_json_never_panics(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let path = sluice_tests::fixtures_dir().join("models/qwen3_next_tiny/tokenizer.json");
            let mut bytes = std::fs::read(path).unwrap();
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            if let Ok(tok) = Tokenizer::from_bytes(&bytes) {
                let _ = tok.encode("hello 123 ✓", true);
            }
        }
    }
}
