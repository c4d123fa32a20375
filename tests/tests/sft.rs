//! SFT data (JSONL shapes, assistant-only targets through the chat template, packing) and the
//! SFT loss against a hand computation.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use sluice::model::files::load_model;
use sluice::model::tokenizer::Tokenizer;
use sluice::nn::attention::AttentionContext;
use sluice::train::sft::{SftExample, SftRecord, pack, parse_jsonl, sft_loss, tokenize};
use sluice_tests::{fixtures_dir, to_vec, wgpu};

fn tokenizer() -> Tokenizer {
    Tokenizer::from_dir(fixtures_dir().join("models/qwen3_next_tiny")).unwrap()
}

const DATA: &str = r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "and again"}, {"role": "assistant", "content": "bye now"}]}

{"prompt": "2+2=", "completion": "4"}
{"prompt": [{"role": "user", "content": "name?"}], "completion": [{"role": "assistant", "content": "sluice"}]}
"#;

#[test]
fn jsonl_shapes_parse_and_errors_name_the_line() {
    let recs = parse_jsonl(DATA).unwrap();
    assert_eq!(recs.len(), 3);
    assert!(matches!(&recs[0], SftRecord::Messages(m) if m.len() == 5));
    assert!(
        matches!(&recs[1], SftRecord::Text { prompt, completion } if prompt == "2+2=" && completion == "4")
    );
    assert!(
        matches!(&recs[2], SftRecord::Conversation { prompt, completion } if prompt.len() == 1 && completion.len() == 1)
    );
    for (text, want) in [
        ("{\"prompt\": \"a\"}\n", "line 1: expected `messages`"),
        ("\n{\"messages\": []}", "line 2: `messages` is empty"),
        ("[1, 2]", "line 1: expected a JSON object"),
        (
            "{\"prompt\": \"a\", \"completion\": [] }",
            "both be strings or both message lists",
        ),
        ("{not json", "line 1"),
        ("\n\n", "no records"),
    ] {
        let err = parse_jsonl(text).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
}

#[test]
fn only_assistant_turns_are_targets() {
    let tok = tokenizer();
    let recs = parse_jsonl(DATA).unwrap();
    let ex = tokenize(&recs[0], &tok, 10_000).unwrap();
    assert_eq!(ex.ids.len(), ex.targets.len());
    // Target tokens decode to the two assistant turns (each with its end-of-turn marker),
    // in order, and nothing of the system or user turns.
    let mut runs: Vec<Vec<u32>> = Vec::new();
    for (i, (&id, &t)) in ex.ids.iter().zip(&ex.targets).enumerate() {
        if t {
            if i == 0 || !ex.targets[i - 1] {
                runs.push(Vec::new());
            }
            runs.last_mut().unwrap().push(id);
        }
    }
    assert_eq!(runs.len(), 2, "two assistant spans");
    let texts: Vec<String> = runs.iter().map(|r| tok.decode(r, false).unwrap()).collect();
    assert!(texts[0].starts_with("hello"), "{texts:?}");
    assert!(texts[1].starts_with("bye now"), "{texts:?}");
    for t in &texts {
        assert!(!t.contains("hi there") && !t.contains("and again") && !t.contains("Be brief"));
    }
    // The whole sequence is the rendered conversation.
    let full = tok.decode(&ex.ids, false).unwrap();
    assert!(full.contains("hi there") && full.contains("bye now"));

    // Plain prompt/completion: completion + EOS are the targets.
    let ex = tokenize(&recs[1], &tok, 10_000).unwrap();
    let np = tok.encode("2+2=", false).unwrap().len();
    assert!(ex.targets[..np].iter().all(|&t| !t));
    assert!(ex.targets[np..].iter().all(|&t| t));
    assert_eq!(ex.ids.last().copied(), tok.eos_token_id());

    // Conversational prompt/completion: only the assistant answer.
    let ex = tokenize(&recs[2], &tok, 10_000).unwrap();
    let target: Vec<u32> = ex
        .ids
        .iter()
        .zip(&ex.targets)
        .filter(|p| *p.1)
        .map(|p| *p.0)
        .collect();
    assert!(tok.decode(&target, false).unwrap().starts_with("sluice"));

    // Truncation.
    let ex = tokenize(&recs[0], &tok, 7).unwrap();
    assert_eq!((ex.ids.len(), ex.targets.len()), (7, 7));
}

#[test]
fn completions_must_be_assistant_messages() {
    let recs = parse_jsonl(
        r#"{"prompt": [{"role": "user", "content": "a"}], "completion": [{"role": "user", "content": "b"}]}"#,
    )
    .unwrap();
    let err = tokenize(&recs[0], &tokenizer(), 100)
        .unwrap_err()
        .to_string();
    assert!(err.contains("only hold assistant messages"), "{err}");
    let recs = parse_jsonl(r#"{"messages": [{"role": "user", "content": "a"}]}"#).unwrap();
    let err = tokenize(&recs[0], &tokenizer(), 100)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no assistant message"), "{err}");
}

#[test]
fn packing_fills_rows_in_order() {
    let ex = |n: u32, len: usize| SftExample {
        ids: vec![n; len],
        targets: (0..len).map(|i| i % 2 == 0).collect(),
    };
    let rows = pack(&[ex(1, 3), ex(2, 4), ex(3, 2), ex(4, 9)], 8);
    let lens: Vec<usize> = rows.iter().map(|r| r.ids.len()).collect();
    assert_eq!(lens, vec![7, 2, 8]);
    assert_eq!(rows[0].ids, vec![1, 1, 1, 2, 2, 2, 2]);
    assert_eq!(
        rows[0].targets,
        vec![true, false, true, true, false, true, false]
    );
    assert_eq!(rows[2].ids, vec![4; 8]);
}

#[test]
fn loss_is_mean_nll_of_target_tokens() {
    let dev = wgpu();
    let (_, model) = load_model(&fixtures_dir().join("models/qwen3_next_tiny"), &dev).unwrap();
    let batch = vec![
        SftExample {
            ids: vec![5, 9, 14, 3, 8, 2],
            targets: vec![false, false, false, true, true, true],
        },
        SftExample {
            ids: vec![7, 1, 4],
            targets: vec![false, true, false],
        },
    ];
    let (loss, n) = sft_loss(&model, &batch, &dev).unwrap();
    assert_eq!(n, 4);
    let mut want = 0.0f64;
    for ex in &batch {
        let t = ex.ids.len();
        let ids: Vec<i64> = ex.ids.iter().map(|&x| i64::from(x)).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &dev);
        let mut cache = model.new_cache();
        let ctx = AttentionContext::contiguous(1, t, 0, &dev);
        let lp = to_vec(log_softmax(
            model.logits(model.hidden(ids, &mut cache, &ctx)),
            2,
        ));
        let v = lp.len() / t;
        for i in 1..t {
            if ex.targets[i] {
                want -= f64::from(lp[(i - 1) * v + ex.ids[i] as usize]);
            }
        }
    }
    want /= n as f64;
    let got = f64::from(to_vec(loss.value)[0]);
    assert!((got - want).abs() < 1e-4, "{got} vs {want}");

    let none = vec![SftExample {
        ids: vec![1, 2],
        targets: vec![false, false],
    }];
    assert!(
        sft_loss(&model, &none, &dev)
            .unwrap_err()
            .to_string()
            .contains("no target")
    );
}

/// Gradient checkpointing (each layer run again during the backward pass) gives the
/// gradients of the plain backward: full fine-tuning of a Qwen3-Next model (both layer kinds,
/// a trainable tied-or-untied head) and of a Qwen3.5 MoE model, with padding in the batch.
#[test]
fn recomputed_layers_give_the_same_gradients() {
    use sluice::train::optim::Grads;
    let dev = wgpu().autodiff();
    let batch = vec![
        SftExample {
            ids: vec![5, 9, 14, 3, 8, 2, 11, 4],
            targets: vec![false, false, true, true, true, false, true, true],
        },
        SftExample {
            ids: vec![7, 1, 4],
            targets: vec![false, true, true],
        },
    ];
    for name in ["qwen3_next_tiny", "qwen3_5_moe_tiny"] {
        let (_, mut model) = load_model(&fixtures_dir().join("models").join(name), &dev).unwrap();
        let mut run = |recompute: bool| {
            model.recompute_layers = recompute;
            let (loss, _) = sft_loss(&model, &batch, &dev).unwrap();
            let mut grads = Grads::new();
            loss.accumulate_into(&model, &mut grads);
            grads
        };
        let (plain, again) = (run(false), run(true));
        let names: Vec<&str> = plain.names().collect();
        assert_eq!(names, again.names().collect::<Vec<_>>(), "{name}");
        assert!(
            names.iter().any(|n| n.contains("layers.0.")),
            "{name}: {names:?}"
        );
        for n in names {
            let (a, b) = (
                to_vec(plain.get(n).unwrap().clone()),
                to_vec(again.get(n).unwrap().clone()),
            );
            let scale = a.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(
                worst <= 1e-4 * scale,
                "{name} {n}: differs by {worst} (scale {scale})"
            );
        }
    }
}
