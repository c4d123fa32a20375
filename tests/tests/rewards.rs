//! Rewards (`rl::rewards`): answer extraction and equivalence edge cases, format and length
//! rules, weighted combination, NOVER and reference-likelihood rewards against log-probs
//! computed by hand on the tiny fixture model, the lagged proxy, self-scoring, and the
//! DeepSeekMath-V2 generate → verify → meta-verify loop with scripted policies.

use std::cell::RefCell;
use std::collections::HashMap;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use sluice::model::HybridModel;
use sluice::model::files::load_model;
use sluice::model::generate::{GenerateOptions, Sampling};
use sluice::model::tokenizer::Tokenizer;
use sluice::nn::attention::AttentionContext;
use sluice::rl::rewards::likelihood::{LikelihoodMode, LikelihoodReward, TargetLogProb};
use sluice::rl::rewards::nover::{
    EfficiencyRule, NoverConfig, NoverReward, ProxyModel, efficiency_rewards, length_norm,
    rank_rewards, reasoning_perplexity,
};
use sluice::rl::rewards::rule::*;
use sluice::rl::rewards::self_score::{SelfScoreMode, SelfScoreReward, parse_self_score};
use sluice::rl::rewards::self_verify::*;
use sluice::rl::rewards::{
    FnReward, Reward, RewardFuture, RuleReward, Sample, WeightedRewards, combine, score_blocking,
};
use sluice_tests::{fixtures_dir, to_vec, wgpu};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

// ---------------------------------------------------------------------------------------
// Extraction

#[test]
fn boxed_extraction_edge_cases() {
    assert_eq!(extract_boxed("so \\boxed{42}."), Some("42".into()));
    assert_eq!(
        extract_boxed("\\boxed{\\frac{1}{2}}"),
        Some("\\frac{1}{2}".into())
    );
    assert_eq!(
        extract_boxed("first \\boxed{1} then \\boxed{ 2 }"),
        Some("2".into())
    );
    assert_eq!(extract_boxed("answer: \\boxed 5$"), Some("5".into()));
    assert_eq!(extract_boxed("\\fbox{7} done"), Some("7".into()));
    assert_eq!(
        extract_boxed("\\boxed{3} and \\fbox{4}"),
        Some("4".into()),
        "last of either command"
    );
    assert_eq!(
        extract_boxed("\\boxed{\\{a, b\\}}"),
        Some("\\{a, b\\}".into())
    );
    assert_eq!(extract_boxed("\\boxed{3"), None, "unbalanced");
    assert_eq!(
        extract_boxed("\\boxed{2} \\boxed{3"),
        Some("2".into()),
        "an unbalanced last box falls back to the previous one"
    );
    assert_eq!(extract_boxed("no box here"), None);
    assert_eq!(extract_boxed("\\boxedx{3}"), None);
}

#[test]
fn gsm8k_and_tag_extraction() {
    assert_eq!(
        extract_gsm8k("She pays 3*4=12.\n#### 1,234\n"),
        Some("1,234".into())
    );
    assert_eq!(extract_gsm8k("#### 72."), Some("72".into()));
    assert_eq!(extract_gsm8k("#### 1\n#### 2"), Some("2".into()));
    assert_eq!(extract_gsm8k("####   \n"), None);
    assert_eq!(extract_gsm8k("no marker 5"), None);
    assert_eq!(
        extract_tag("<answer> 1 </answer><answer>2</answer>", "answer"),
        Some("2")
    );
    assert_eq!(extract_tag("<answer>open", "answer"), None);
}

#[test]
fn last_number_edge_cases() {
    let last = |t: &str| extract_last_number(t).and_then(|s| parse_number(&s).map(|n| n.scaled()));
    assert_eq!(last("The answer is 5."), Some(5.0), "trailing period");
    assert_eq!(last("It costs $1,234.50 in total"), Some(1234.5));
    assert_eq!(last("temperature -3.5 degrees"), Some(-3.5));
    assert_eq!(last("x = −7"), Some(-7.0), "unicode minus");
    assert_eq!(last("eat 3/4 of it"), Some(0.75));
    assert_eq!(last("about 45% of them"), Some(0.45));
    assert_eq!(last("about 45\\% of them"), Some(0.45));
    assert_eq!(last("rate 1.5e-3 per s"), Some(0.0015));
    assert_eq!(last("so $\\frac{3}{4}$"), Some(0.75));
    assert_eq!(last("so $-\\dfrac{1}{8}$"), Some(-0.125));
    assert_eq!(last("so \\tfrac12 remains"), Some(0.5));
    assert_eq!(last("mass 2\\times10^{3} kg"), Some(2000.0));
    assert_eq!(last("mass 2 \\times 10^-2 kg"), Some(0.02));
    assert_eq!(last("value 1{,}000"), Some(1000.0), "LaTeX thousands");
    assert_eq!(
        last("7 then x2 and H2O"),
        Some(7.0),
        "digits in words skipped"
    );
    assert_eq!(last("pages 3-4"), Some(4.0), "binary minus is not a sign");
    assert_eq!(last("list 1,23"), Some(23.0), "not a thousands group");
    assert_eq!(last("1,234,567 items"), Some(1_234_567.0));
    assert_eq!(last(".5 of it"), Some(0.5));
    assert_eq!(last("the 3rd one"), None, "ordinals are not numbers");
    assert_eq!(last("no digits"), None);
}

#[test]
fn numeric_equivalence() {
    let t = Tolerance::default();
    for (a, b) in [
        ("0.50", "1/2"),
        ("\\dfrac{1}{2}", "0.5"),
        ("\\frac{1}{2}", ".5"),
        ("1,234", "1234"),
        ("50%", "50"),
        ("50%", "0.5"),
        ("$5$", "5"),
        ("x = 5", "5"),
        ("5\\text{ cm}", "5"),
        ("\\boxed{12}", "12"),
        ("-\\frac{1}{2}", "-0.5"),
        ("3.0", "3"),
        ("(4)", "4"),
        ("90^\\circ", "90"),
        ("\\$1,000.00", "1000"),
        ("2e3", "2000"),
        ("\\(7\\)", "7"),
    ] {
        assert!(answers_match(a, b, t), "{a} should match {b}");
        assert!(answers_match(b, a, t), "{b} should match {a}");
    }
    for (a, b) in [
        ("0.333", "1/3"),
        ("5", "6"),
        ("1,234", "1.234"),
        ("-5", "5"),
        ("1/2", "2"),
    ] {
        assert!(!answers_match(a, b, t), "{a} should not match {b}");
    }
    let loose = Tolerance {
        abs: 0.0,
        rel: 1e-2,
    };
    assert!(answers_match("0.333", "1/3", loose));
    assert!(numbers_close(1e-12, 0.0, t));
    assert!(!numbers_close(f64::NAN, f64::NAN, t));
    assert_eq!(parse_number("3/0"), None, "zero denominator");
    assert_eq!(parse_number("5 apples and 6"), None);
    assert_eq!(
        parse_number("45%"),
        Some(Number {
            value: 45.0,
            percent: true
        })
    );
}

#[test]
fn string_equivalence() {
    let t = Tolerance::default();
    assert!(answers_match("Paris", " paris.", t));
    assert!(answers_match("x+1", "x + 1", t));
    assert!(answers_match("$\\text{Blue}$", "blue", t));
    assert!(!answers_match("A", "B", t));
    assert!(!answers_match("", "", t), "empty answers never match");
    assert_eq!(normalize_answer("  The   Cat. "), "the cat");
}

#[test]
fn accuracy_and_exact_match_rewards() {
    let acc = AccuracyReward::default();
    let gsm_ref = "Natalia sold 48/2 = 24 clips in May.\n#### 72";
    let s = |c: &str| Sample::new("q", c).with_reference(gsm_ref);
    assert_eq!(acc.score_one(&s("so the total is \\boxed{72}")), Some(1.0));
    assert_eq!(acc.score_one(&s("total: 72.")), Some(1.0), "last number");
    assert_eq!(acc.score_one(&s("#### 72")), Some(1.0));
    assert_eq!(
        acc.score_one(&s("<think>48+24</think><answer>72</answer>")),
        Some(1.0)
    );
    assert_eq!(acc.score_one(&s("\\boxed{71}")), Some(0.0));
    assert_eq!(acc.score_one(&s("I do not know")), Some(0.0));
    assert_eq!(acc.score_one(&Sample::new("q", "\\boxed{72}")), None);
    let half = |c: &str| Sample::new("q", c).with_reference("\\boxed{\\frac{1}{2}}");
    assert_eq!(acc.score_one(&half("it is 0.5")), Some(1.0));
    assert_eq!(acc.score_one(&half("\\boxed{50\\%}")), Some(1.0));
    assert_eq!(acc.score_one(&half("\\boxed{1/3}")), Some(0.0));
    let boxed_only = AccuracyReward::new(Extractor::Boxed);
    assert_eq!(
        boxed_only.score_one(&s("72")),
        Some(0.0),
        "no box, no answer"
    );
    let em = ExactMatchReward {
        extractor: Extractor::AnswerTag,
        normalize: true,
    };
    let s2 = Sample::new("q", "<answer> New  York </answer>").with_reference("new york");
    assert_eq!(em.score_one(&s2), Some(1.0));
    let strict = ExactMatchReward {
        extractor: Extractor::AnswerTag,
        normalize: false,
    };
    assert_eq!(strict.score_one(&s2), Some(0.0));
}

#[test]
fn think_answer_format_rules() {
    let good = "<think>\nadd them\n</think>\n<answer> 4 </answer>\n";
    assert_eq!(split_think_answer(good, false), Some(("add them", "4")));
    assert!(think_answer_format(good, false));
    assert!(think_answer_format(
        "<think></think><answer>4</answer>",
        false
    ));
    for bad in [
        "<think>a</think><answer></answer>",        // empty answer
        "<answer>4</answer><think>a</think>",       // wrong order
        "<think>a</think><answer>4</answer> extra", // trailing text
        "intro <think>a</think><answer>4</answer>", // leading text
        "<think>a</think><think>b</think><answer>4</answer>", // two thinks
        "<think>a<answer>4</answer></think><answer>4</answer>", // nested
        "<think>a</think> mid <answer>4</answer>",  // text between
        "<think>a</think><answer>4",                // unclosed
        "plain answer 4",
    ] {
        assert!(!think_answer_format(bad, false), "{bad:?} should fail");
    }
    // The prompt opened <think>: the completion must not open it again.
    assert!(think_answer_format("a</think><answer>4</answer>", true));
    assert!(!think_answer_format(
        "<think>a</think><answer>4</answer>",
        true
    ));
    let f = FormatReward::default();
    assert_eq!(f.score_one(&Sample::new("", good)), Some(1.0));
    assert_eq!(f.score_one(&Sample::new("", "x")), Some(0.0));
    let partial = FormatReward {
        mode: FormatMode::Partial,
        think_open_in_prompt: false,
    };
    assert_eq!(
        partial.score_one(&Sample::new("", "<think>a</think> 4")),
        Some(0.5)
    );
    assert_eq!(
        partial.score_one(&Sample::new("", "<answer></answer><answer>")),
        Some(0.25),
        "only </answer> occurs exactly once"
    );
}

#[test]
fn length_rules() {
    let lin = LengthShape::Linear { max_len: 100 };
    assert_eq!(lin.reward(0), 0.0);
    assert_eq!(lin.reward(25), -0.25);
    assert_eq!(lin.reward(250), -1.0);
    let target = LengthShape::Target {
        target: 50,
        width: 10,
    };
    assert_eq!(target.reward(50), 1.0);
    assert!(close(target.reward(45), 0.5, 1e-12));
    assert!(close(target.reward(55), 0.5, 1e-12));
    assert_eq!(target.reward(70), 0.0);
    // DAPO: L_max = 20, L_cache = 4 → free up to 16, linear to −1 at 20, −1 beyond.
    let dapo = LengthShape::SoftOverlong {
        max_len: 20,
        cache: 4,
    };
    assert_eq!(dapo.reward(16), 0.0);
    assert_eq!(dapo.reward(17), -0.25);
    assert_eq!(dapo.reward(20), -1.0);
    assert_eq!(dapo.reward(21), -1.0);
    let tok = LengthReward {
        unit: LengthUnit::Tokens,
        shape: lin,
    };
    assert_eq!(tok.score_one(&Sample::new("p", "c")), None, "no ids");
    let with_ids = Sample::new("p", "c").with_ids(vec![1], vec![0; 10]);
    assert_eq!(tok.score_one(&with_ids), Some(-0.1));
    let words = LengthReward {
        unit: LengthUnit::Words,
        shape: lin,
    };
    assert_eq!(
        words.score_one(&Sample::new("", "one two  three\nfour")),
        Some(-0.04)
    );
    let chars = LengthReward {
        unit: LengthUnit::Chars,
        shape: lin,
    };
    assert_eq!(chars.score_one(&Sample::new("", "héllo")), Some(-0.05));
}

/// Parsers never panic on arbitrary text (multi-byte characters next to digits, braces,
/// backslashes and tags).
#[test]
fn parsers_survive_arbitrary_text() {
    let pieces = [
        "1",
        "23",
        ",",
        ".",
        "-",
        "+",
        "/",
        "%",
        "e",
        "E",
        "{",
        "}",
        "\\",
        "\\boxed",
        "\\fbox",
        "\\frac",
        "\\dfrac",
        "\\times",
        "10^",
        "#",
        "####",
        " ",
        "\n",
        "$",
        "é",
        "ñ",
        "−",
        "½",
        "日本",
        "<think>",
        "</think>",
        "<answer>",
        "</answer>",
        "Score:",
        "## Self-Evaluation",
        "self-assessment",
        "x",
        "=",
        "(",
        ")",
        "\\%",
        "{,}",
        "\\,",
        "°",
        "^\\circ",
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let t = Tolerance::default();
    for _ in 0..4000 {
        let len = (next() % 12) as usize;
        let text: String = (0..len)
            .map(|_| pieces[(next() % pieces.len() as u64) as usize])
            .collect();
        let _ = extract_boxed(&text);
        let _ = extract_gsm8k(&text);
        let _ = extract_tag(&text, "answer");
        let last = extract_last_number(&text);
        if let Some(n) = &last {
            assert!(parse_number(n).is_some(), "{n:?} from {text:?} must parse");
        }
        let _ = parse_number(&text);
        let _ = normalize_answer(&text);
        let _ = answers_match(&text, "1/2", t);
        let _ = Extractor::Auto.extract(&text);
        let _ = split_think_answer(&text, false);
        let _ = split_think_answer(&text, true);
        let _ = parse_self_score(&text, 1.0);
        let _ = parse_generation(&text);
        let _ = parse_verification(&text);
        let _ = parse_rubric_score(&text);
    }
}

// ---------------------------------------------------------------------------------------
// Combination

/// A reward that answers with the wrong number of scores.
struct Broken;
impl Reward for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn score<'a>(&'a self, _: &'a [Sample]) -> RewardFuture<'a> {
        Box::pin(std::future::ready(Ok(vec![Some(1.0)])))
    }
}

#[test]
fn weighted_combination() {
    let samples = vec![
        Sample::new("q", "<think>x</think><answer>72</answer>").with_reference("72"),
        Sample::new("q", "<think>x</think><answer>7</answer>").with_reference("72"),
        Sample::new("q", "72"),
    ];
    let rewards = WeightedRewards::new()
        .with(AccuracyReward::default(), 2.0)
        .with(FormatReward::default(), 0.5)
        .with(
            FnReward::new("only_first", |s: &Sample| {
                s.completion.contains("72</answer>").then_some(10.0)
            }),
            1.0,
        );
    let out = rewards.score(&samples).unwrap();
    assert_eq!(out.names, ["accuracy", "format", "only_first"]);
    assert_eq!(out.per_reward[0], [Some(1.0), Some(0.0), None]);
    assert_eq!(out.per_reward[2], [Some(10.0), None, None]);
    assert_eq!(out.total[0], 2.0 + 0.5 + 10.0);
    assert_eq!(out.total[1], 0.5);
    assert_eq!(out.total[2], 0.0, "format applies (0), accuracy does not");
    // All None → NaN (TRL).
    let none = combine(&[vec![None, Some(1.0)], vec![None, None]], &[1.0, 1.0]);
    assert!(none[0].is_nan());
    assert_eq!(none[1], 1.0);
    // Object safety + a reward that miscounts.
    let boxed: Box<dyn Reward> = Box::new(FormatReward::default());
    assert_eq!(
        score_blocking(boxed.as_ref(), &samples).unwrap(),
        vec![Some(1.0), Some(1.0), Some(0.0)]
    );
    let err = WeightedRewards::new()
        .with(Broken, 1.0)
        .score(&samples)
        .unwrap_err();
    assert!(err.to_string().contains("1 scores for 3 samples"), "{err}");
}

// ---------------------------------------------------------------------------------------
// NOVER: pure parts

#[test]
fn nover_normalisation_rank_and_efficiency() {
    assert_eq!(length_norm(0, std::f64::consts::E), 1.0);
    assert_eq!(length_norm(1, std::f64::consts::E), 1.0);
    assert!(close(
        length_norm(100, std::f64::consts::E),
        1.0 + 100f64.ln(),
        1e-12
    ));
    assert!(close(length_norm(100, 10.0), 3.0, 1e-12));
    // P = exp(−sum / (|g| N)).
    let lp = TargetLogProb { sum: -6.0, len: 3 };
    let n = 1.0 + 20f64.ln();
    assert!(close(
        reasoning_perplexity(lp, 20, std::f64::consts::E).unwrap(),
        (6.0 / (3.0 * n)).exp(),
        1e-12
    ));
    assert_eq!(
        reasoning_perplexity(TargetLogProb { sum: 0.0, len: 0 }, 5, 10.0),
        None
    );
    // Ranks: lowest P → 1; ties share the better rank; invalid → 0.
    let r = rank_rewards(&[Some(3.0), Some(1.0), None, Some(2.0), Some(2.0)]);
    assert_eq!(r, vec![0.25, 1.0, 0.0, 0.75, 0.75]);
    // Pairwise efficiency: i beats j when P_i < P_j and |t_i| < |t_j|.
    let p = [Some(1.0), Some(2.0), Some(3.0), None];
    let l = [30, 10, 20, 5];
    let e = efficiency_rewards(&p, &l, EfficiencyRule::Pairwise);
    // 0 beats 1? 30<10 no; 0 beats 2? 30<20 no → 0. 1 beats 2: 2<3, 10<20 → 1/2.
    assert_eq!(e, vec![0.0, 0.5, 0.0, 0.0]);
    // Median gate: median P = 2; only sample 0 (P=1) qualifies; it is the longest → 0.
    let m = efficiency_rewards(&p, &[5, 10, 20, 1], EfficiencyRule::MedianGate);
    assert_eq!(m, vec![1.0, 0.0, 0.0, 0.0]);
    assert_eq!(
        efficiency_rewards(&[Some(1.0)], &[3], EfficiencyRule::Pairwise),
        vec![0.0]
    );
}

// ---------------------------------------------------------------------------------------
// Model-based rewards against hand-computed log-probs

fn tiny() -> (HybridModel, Tokenizer) {
    let dir = fixtures_dir().join("models/qwen3_5_tiny");
    let (_, model) = load_model(&dir, &wgpu()).unwrap();
    (model, Tokenizer::from_dir(&dir).unwrap())
}

/// Σ log π(target | context) by one full forward of `context ++ target` and a log-softmax.
fn hand_logprob(model: &HybridModel, context: &[u32], target: &[u32]) -> f64 {
    let dev = wgpu();
    let seq: Vec<i64> = context
        .iter()
        .chain(target)
        .map(|&x| i64::from(x))
        .collect();
    let t = seq.len();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(seq.clone(), [1, t]), &dev);
    let mut cache = model.new_cache();
    let ctx = AttentionContext::contiguous(1, t, 0, &dev);
    let lp = to_vec(log_softmax(
        model.logits(model.hidden(ids, &mut cache, &ctx)),
        2,
    ));
    let v = lp.len() / t;
    (0..target.len())
        .map(|j| {
            let pos = context.len() + j - 1;
            f64::from(lp[pos * v + target[j] as usize])
        })
        .sum()
}

fn enc(tok: &Tokenizer, s: &str) -> Vec<u32> {
    tok.encode(s, false).unwrap()
}

#[test]
fn nover_reward_matches_hand_computation() {
    let (model, tok) = tiny();
    let dev = wgpu();
    let prompt = "Q: 2+2?\n";
    let reference = "4";
    let completions = [
        "<think>two plus two</think>\n<answer>4</answer>",
        "<think>I add the two numbers together carefully</think><answer>5</answer>",
        "<think>four</think><answer>4</answer>",
        "no tags at all",
    ];
    let mut samples: Vec<Sample> = completions
        .iter()
        .map(|c| Sample::new(prompt, *c).with_reference(reference))
        .collect();
    // A second group of one valid sample and one without a reference.
    samples.push(
        Sample::new("Q: 1+1?\n", "<think>one and one</think><answer>2</answer>")
            .with_reference("2")
            .in_group(1),
    );
    samples.push(Sample::new("Q: 1+1?\n", "<think>x</think><answer>2</answer>").in_group(1));
    // Two rows per forward pass: the three valid samples span two batches.
    let cfg = NoverConfig {
        max_batch: 2,
        ..NoverConfig::default()
    };
    let reward = NoverReward::new(&model, &tok, &dev, cfg.clone());
    let details = reward.details(&samples).unwrap();
    // Hand: P for the format-valid samples with a reference.
    let reasoning = [
        "two plus two",
        "I add the two numbers together carefully",
        "four",
    ];
    let mut p_hand = Vec::new();
    for (i, r) in reasoning.iter().enumerate() {
        let mut ctx = enc(&tok, prompt);
        let head = completions[i].split("<answer>").next().unwrap();
        ctx.extend(enc(&tok, &format!("{head}<answer>")));
        let target = enc(&tok, "4</answer>");
        let sum = hand_logprob(&model, &ctx, &target);
        let t_len = enc(&tok, r).len();
        let n = (1.0 + (t_len as f64).ln()).max(1.0);
        let p = (-sum / (target.len() as f64 * n)).exp();
        let d = &details[i];
        assert_eq!(d.reasoning_len, Some(t_len));
        assert!(
            close(d.logprob.unwrap().sum, sum, 2e-4),
            "sample {i} logprob"
        );
        assert!(
            close(d.perplexity.unwrap(), p, 1e-4 * p),
            "sample {i}: P {} vs {p}",
            d.perplexity.unwrap()
        );
        p_hand.push((p, t_len));
    }
    // Ranks and efficiency in group 0 (3 valid samples + 1 malformed).
    for (i, &(p, l)) in p_hand.iter().enumerate() {
        let better = p_hand.iter().filter(|&&(q, _)| q < p).count() as f64;
        let r = (3.0 - better) / 3.0;
        let wins = p_hand.iter().filter(|&&(q, m)| p < q && l < m).count() as f64;
        let e = wins / 2.0;
        let d = &details[i];
        assert_eq!(d.format, 1.0);
        assert!(close(d.reasoning, r, 1e-12), "rank of {i}");
        assert!(close(d.efficiency, e, 1e-12), "efficiency of {i}");
        assert!(close(d.total.unwrap(), 1.0 + r + e, 1e-12));
    }
    assert_eq!(details[3].format, 0.0);
    assert_eq!(details[3].perplexity, None);
    assert_eq!(details[3].total, Some(0.0), "malformed: no reasoning terms");
    // Group 1: the single valid sample ranks first; efficiency needs two.
    assert_eq!(details[4].reasoning, 1.0);
    assert_eq!(details[4].efficiency, 0.0);
    assert_eq!(details[4].total, Some(2.0));
    assert_eq!(details[5].total, None, "no reference: not applicable");
    // The Reward trait returns the totals.
    let scores = score_blocking(&reward, &samples).unwrap();
    assert_eq!(scores, details.iter().map(|d| d.total).collect::<Vec<_>>());
    // log10 normalisation changes P as the released code does.
    let ten = NoverReward::new(
        &model,
        &tok,
        &dev,
        NoverConfig {
            log_base: 10.0,
            ..cfg
        },
    )
    .details(&samples[..1])
    .unwrap();
    let lp = details[0].logprob.unwrap();
    let l = details[0].reasoning_len.unwrap();
    let want = (-lp.sum / (lp.len as f64 * (1.0 + (l as f64).log10()).max(1.0))).exp();
    assert!(close(ten[0].perplexity.unwrap(), want, 1e-9 * want));
}

#[test]
fn likelihood_reward_matches_hand_computation() {
    let (model, tok) = tiny();
    let dev = wgpu();
    let prompt = "Capital of France?\n";
    let samples = vec![
        Sample::new(prompt, "It is the city on the Seine.<answer>Lyon</answer>")
            .with_reference("Paris"),
        Sample::new(prompt, "Thinking without a tag").with_reference("Paris"),
        Sample::new(prompt, "no reference"),
    ];
    let r = LikelihoodReward::new(&model, &tok, &dev);
    let lps = pollster::block_on(r.logprobs_async(&samples)).unwrap();
    assert_eq!(lps[2], None);
    let target = enc(&tok, "Paris</answer>");
    for (i, head) in ["It is the city on the Seine.", "Thinking without a tag"]
        .iter()
        .enumerate()
    {
        let mut ctx = enc(&tok, prompt);
        ctx.extend(enc(&tok, &format!("{head}<answer>")));
        let want = hand_logprob(&model, &ctx, &target);
        let got = lps[i].unwrap();
        assert_eq!(got.len, target.len());
        assert!(
            close(got.sum, want, 2e-4),
            "sample {i}: {} vs {want}",
            got.sum
        );
    }
    let lp0 = lps[0].unwrap();
    let mean = lp0.sum / lp0.len as f64;
    let modes = [
        (LikelihoodMode::MeanProb, mean.exp()),
        (LikelihoodMode::SeqProb, lp0.sum.exp()),
        (LikelihoodMode::MeanLogProb, mean),
        (LikelihoodMode::SumLogProb, lp0.sum),
    ];
    for (mode, want) in modes {
        let scores = score_blocking(
            &LikelihoodReward::new(&model, &tok, &dev).with_mode(mode),
            &samples,
        )
        .unwrap();
        assert!(
            close(scores[0].unwrap(), want, 1e-9 * want.abs().max(1.0)),
            "{mode:?}"
        );
        assert_eq!(scores[2], None);
    }
    // Given prompt ids are used instead of re-encoding the prompt.
    let ids = vec![7u32, 8, 9];
    let s = Sample {
        prompt_ids: Some(ids.clone()),
        ..samples[0].clone()
    };
    let got = pollster::block_on(r.logprobs_async(&[s])).unwrap()[0].unwrap();
    let mut ctx = ids;
    ctx.extend(enc(&tok, "It is the city on the Seine.<answer>"));
    assert!(close(got.sum, hand_logprob(&model, &ctx, &target), 2e-4));
}

fn shift_embedding(model: &mut HybridModel, by: f32) {
    let p = model.embed_tokens.param_mut().expect("f32 embedding");
    *p = p.clone().map(|t| t.add_scalar(by));
}

fn embed(model: &HybridModel) -> Vec<f32> {
    to_vec(model.embed_tokens.param().expect("f32 embedding").val())
}

#[test]
fn proxy_lags_the_policy_and_mixes() {
    let (mut policy, _) = tiny();
    let original = embed(&policy);
    let mut proxy = ProxyModel::new(&policy, 2);
    shift_embedding(&mut policy, 0.5);
    let moved = embed(&policy);
    assert!(!proxy.step(&policy), "step 1 of 2: no sync");
    assert_eq!(embed(proxy.model()), original, "proxy still lags");
    assert!(proxy.step(&policy), "step 2 of 2: sync");
    assert_eq!(embed(proxy.model()), moved);
    assert_eq!((proxy.steps(), proxy.syncs()), (2, 1));
    // Mixup α = 0.25: θ_p ← 0.25·θ + 0.75·θ_p.
    let mut mixed = ProxyModel::new(&policy, 0).with_mixup(0.25);
    shift_embedding(&mut policy, 1.0);
    assert!(!mixed.step(&policy), "sync_every 0: never");
    mixed.sync(&policy);
    for (got, want) in embed(mixed.model()).iter().zip(&moved) {
        assert!((got - (want + 0.25)).abs() < 1e-5);
    }
    // Every other parameter mixes too (norm weights are untouched by the edit → unchanged).
    assert_eq!(to_vec(mixed.model().norm.val()), to_vec(policy.norm.val()));
    // A proxy of an autodiff policy is detached and scores like the plain model.
    let dev = wgpu().autodiff();
    let (_, ad_policy) = load_model(&fixtures_dir().join("models/qwen3_5_tiny"), &dev).unwrap();
    let ad_proxy = ProxyModel::new(&ad_policy, 1);
    assert_eq!(embed(ad_proxy.model()), original);
}

// ---------------------------------------------------------------------------------------
// Self-scoring

#[test]
fn self_score_parsing() {
    let v = |t: &str| parse_self_score(t, 1.0).map(|s| s.value);
    assert_eq!(v("The answer is 4.\nScore: 0.8"), Some(0.8));
    assert_eq!(v("4\nSelf-score: 4/5\n"), Some(0.8));
    assert_eq!(v("4\nself score = 1"), Some(1.0));
    assert_eq!(v("4\n**Confidence:** 80%."), Some(0.8));
    assert_eq!(
        v("4\n## Self-assessment\nLooks right.\n\\boxed{0.9}"),
        Some(0.9)
    );
    assert_eq!(v("4\nScore: \\frac{1}{2}"), Some(0.5));
    assert_eq!(v("Score: 0.2\nrevised.\nScore: 0.6"), Some(0.6), "last one");
    assert_eq!(v("4\nScore: 1.5"), None, "out of range");
    assert_eq!(
        v("4\nScore: 0.5 but maybe more text"),
        None,
        "must end the text"
    );
    assert_eq!(v("Score: 0.5\nand then more words"), None);
    assert_eq!(v("the final score was high"), None, "no value");
    assert_eq!(v("no assessment"), None);
    assert_eq!(
        parse_self_score("4\nScore: 8", 10.0).map(|s| s.value),
        Some(0.8),
        "0–10 scale"
    );
    let text = "Answer: 12\nScore: 0.7";
    let s = parse_self_score(text, 1.0).unwrap();
    assert_eq!(&text[..s.answer_end], "Answer: 12\n");
}

#[test]
fn self_score_rewards() {
    let raw = SelfScoreReward::default();
    assert_eq!(raw.score_one(&Sample::new("q", "4\nScore: 0.3")), Some(0.3));
    assert_eq!(raw.score_one(&Sample::new("q", "4")), Some(0.0));
    let cal = SelfScoreReward {
        mode: SelfScoreMode::Calibrated {
            checker: AccuracyReward::default(),
            answer_weight: 0.5,
            honesty_weight: 0.5,
        },
        ..Default::default()
    };
    let s = |c: &str| Sample::new("q", c).with_reference("12");
    // Correct and confident: 0.5·1 + 0.5·1.
    assert_eq!(cal.score_one(&s("Answer: 12\nScore: 1")), Some(1.0));
    // Correct but unsure: 0.5 + 0.5·(1 − 0.6).
    assert!(close(
        cal.score_one(&s("Answer: 12\nScore: 0.4")).unwrap(),
        0.7,
        1e-12
    ));
    // Wrong but confident: the self-score is not read as the answer.
    assert_eq!(cal.score_one(&s("Answer: 13\nScore: 1")), Some(0.0));
    // Wrong and honest.
    assert_eq!(cal.score_one(&s("Answer: 13\nScore: 0")), Some(0.5));
    assert_eq!(cal.score_one(&Sample::new("q", "12\nScore: 1")), None);
    assert_eq!(cal.score_one(&s("12")), Some(0.0), "format failure");
}

// ---------------------------------------------------------------------------------------
// DeepSeekMath-V2 self-verification

#[test]
fn rubric_scores_and_parsers() {
    for (t, v) in [
        ("1", 1.0),
        (" 0 ", 0.0),
        ("0.5", 0.5),
        (".5", 0.5),
        ("1/2", 0.5),
        ("\\frac{1}{2}", 0.5),
        ("\\dfrac12", 0.5),
        ("½", 0.5),
        ("$1$", 1.0),
    ] {
        assert_eq!(parse_rubric_score(t), Ok(v), "{t}");
    }
    for t in ["0.7", "2", "", "one", "1/3"] {
        assert!(parse_rubric_score(t).is_err(), "{t}");
    }
    let g =
        parse_generation("Proof: trivial.\n\n## Self-Evaluation\nA gap in step 2.\n\\boxed{ 1/2 }")
            .unwrap();
    assert_eq!(g.proof, "Proof: trivial.");
    assert_eq!(g.self_score, 0.5);
    assert!(g.self_analysis.starts_with("A gap"));
    assert_eq!(
        parse_generation("proof only \\boxed{1}"),
        Err(FormatError::MissingSelfEvaluation)
    );
    assert_eq!(
        parse_generation("## Self-Evaluation\n\\boxed{1}"),
        Err(FormatError::EmptyProof)
    );
    assert_eq!(
        parse_generation("p\n## self-evaluation\nfine"),
        Err(FormatError::MissingScore)
    );
    assert!(matches!(
        parse_generation("p\n## Self-Evaluation\n\\boxed{0.9}"),
        Err(FormatError::BadScore(_))
    ));
    let v = parse_verification("Step 3 is wrong.\nScore: \\boxed{0}").unwrap();
    assert_eq!(v.score, 0.0);
    assert_eq!(parse_meta("ok \\boxed{1} then \\boxed{1/2}"), Ok(0.5));
    assert_eq!(parse_meta("no verdict"), Err(FormatError::MissingScore));
    // Prompts carry their inputs and the rubric; the problem round-trips.
    let gp = generator_prompt("Show that 1 = 1.");
    assert!(
        gp.contains("Show that 1 = 1.") && gp.contains(RUBRIC) && gp.contains(SELF_EVAL_HEADING)
    );
    assert_eq!(problem_from_generator_prompt(&gp), Some("Show that 1 = 1."));
    let vp = verifier_prompt("P", "the proof");
    assert!(vp.contains("the proof") && vp.contains(RUBRIC));
    let mp = meta_verifier_prompt("P", "the proof", "step 2 fails", 0.5);
    assert!(mp.contains("step 2 fails") && mp.contains("1/2"));
    // Reward arithmetic.
    assert_eq!(verifier_reward(true, 0.5, 1.0, 1.0), 0.5);
    assert_eq!(verifier_reward(true, 1.0, 1.0, 0.5), 0.5);
    assert_eq!(verifier_reward(false, 1.0, 1.0, 1.0), 0.0);
    let w = GeneratorWeights::default();
    assert!(close(generator_reward(true, 1.0, 1.0, 1.0, w), 1.0, 1e-12));
    assert!(close(generator_reward(true, 0.0, 0.0, 1.0, w), 0.24, 1e-12));
    assert!(close(generator_reward(true, 0.0, 1.0, 1.0, w), 0.0, 1e-12));
    assert_eq!(generator_reward(false, 1.0, 1.0, 1.0, w), 0.0);
}

/// Fixed responses keyed by prompt: `respond(prompt, k)` for the k-th time that prompt is
/// asked.
struct Scripted<F> {
    respond: F,
    seen: RefCell<HashMap<String, usize>>,
    calls: RefCell<usize>,
}

impl<F: Fn(&str, usize) -> String> Scripted<F> {
    fn new(respond: F) -> Self {
        Scripted {
            respond,
            seen: RefCell::new(HashMap::new()),
            calls: RefCell::new(0),
        }
    }
}

impl<F: Fn(&str, usize) -> String> Policy for Scripted<F> {
    fn generate<'a>(&'a self, prompts: &'a [String]) -> PolicyFuture<'a> {
        *self.calls.borrow_mut() += 1;
        let out = prompts
            .iter()
            .map(|p| {
                let mut seen = self.seen.borrow_mut();
                let k = seen.entry(p.clone()).or_insert(0);
                let r = (self.respond)(p, *k);
                *k += 1;
                r
            })
            .collect();
        Box::pin(std::future::ready(Ok(out)))
    }
}

/// The generator: honest (A), over-confident (B), malformed (C), unverifiable (D).
fn generator_script(prompt: &str, _: usize) -> String {
    let problem = problem_from_generator_prompt(prompt).unwrap();
    match problem {
        "A" => "Proof A.\n## Self-Evaluation\nStep 2 skips a case.\n\\boxed{1/2}".into(),
        "B" => "Proof B.\n## Self-Evaluation\nAll good.\n\\boxed{1}".into(),
        "C" => "Proof C without any evaluation.".into(),
        _ => "Proof D.\n## Self-Evaluation\nFine.\n\\boxed{1}".into(),
    }
}

fn verifier_script(prompt: &str, k: usize) -> String {
    if prompt.contains("Proof A.") {
        [
            "Step 2 skips a case. \\boxed{1/2}",
            "Looks complete. \\boxed{1}",
            "rambling, no grade",
            "Missing case. \\boxed{0.5}",
        ][k % 4]
            .into()
    } else if prompt.contains("Proof B.") {
        "The key lemma is false. \\boxed{0}".into()
    } else {
        "cannot decide".into()
    }
}

fn meta_script(prompt: &str, _: usize) -> String {
    let report = prompt
        .split("### Grader's report\n")
        .nth(1)
        .and_then(|r| r.split("\n\n### Grader's score").next())
        .unwrap();
    match report {
        r if r.starts_with("Looks complete") => "It missed the gap. \\boxed{0}".into(),
        r if r.starts_with("All good") => "The self-check missed the flaw. \\boxed{1/2}".into(),
        _ => "The issues are real. \\boxed{1}".into(),
    }
}

#[test]
fn self_verification_pipeline() {
    let generator = Scripted::new(generator_script);
    let verifier = Scripted::new(verifier_script);
    let meta = Scripted::new(meta_script);
    let problems: Vec<String> = ["A", "B", "C", "D"].iter().map(|s| s.to_string()).collect();
    let cfg = SelfVerifyConfig::default();
    let out = self_verify(&generator, &verifier, &meta, &problems, &cfg).unwrap();
    assert_eq!(out.len(), 4);
    // One batched call per stage.
    assert_eq!(*generator.calls.borrow(), 1);
    assert_eq!(*verifier.calls.borrow(), 1);
    assert_eq!(*meta.calls.borrow(), 1);
    // A: scores [1/2, 1 (meta 0: dropped), malformed, 1/2] → R_Y = 1/2; honest s' = 1/2,
    // m(Z) = 1 → R = 0.76·0.5 + 0.24·1·1.
    let a = &out[0];
    assert_eq!(a.verifications.len(), 4);
    assert_eq!(
        a.verifications.iter().map(|v| v.kept).collect::<Vec<_>>(),
        [true, false, false, true]
    );
    assert_eq!(a.verifications[2].parsed, Err(FormatError::MissingScore));
    assert_eq!(a.verifications[2].meta, None);
    assert_eq!(a.proof_score, Some(0.5));
    assert_eq!(a.self_meta, Some(1.0));
    assert!(close(a.reward.unwrap(), 0.62, 1e-12));
    // Verifier rewards with s* = 1/2: exact (1·1), off by 1/2 with m = 0 → 0, malformed → 0.
    assert_eq!(
        a.verifications.iter().map(|v| v.reward).collect::<Vec<_>>(),
        [Some(1.0), Some(0.0), Some(0.0), Some(1.0)]
    );
    // B: verifiers agree on 0; the self-score 1 is dishonest → R = 0.76·0 + 0.24·0·0.5.
    let b = &out[1];
    assert_eq!(b.proof_score, Some(0.0));
    assert_eq!(b.self_meta, Some(0.5));
    assert_eq!(b.reward, Some(0.0));
    assert!(b.verifications.iter().all(|v| v.reward == Some(1.0)));
    // C: malformed → 0, never verified.
    let c = &out[2];
    assert_eq!(c.parsed, Err(FormatError::MissingSelfEvaluation));
    assert!(c.verifications.is_empty());
    assert_eq!(c.reward, Some(0.0));
    // D: no verifier produced a grade → unscored.
    let d = &out[3];
    assert_eq!(d.verifications.len(), 4);
    assert_eq!(d.proof_score, None);
    assert_eq!(d.reward, None);
    assert!(d.verifications.iter().all(|v| v.reward.is_none()));
    // Min aggregation and a human label for the verifier rewards.
    let min_cfg = SelfVerifyConfig {
        aggregate: Aggregate::Min,
        meta_threshold: 0.0,
        ..SelfVerifyConfig::default()
    };
    let gens: Vec<String> = problems
        .iter()
        .map(|p| generator_script(&generator_prompt(p), 0))
        .collect();
    let labelled = pollster::block_on(score_proofs_async(
        &verifier,
        &meta,
        &problems,
        &gens,
        Some(&[1.0, 0.0, 0.0, 1.0]),
        &min_cfg,
    ))
    .unwrap();
    // Threshold 0 keeps the "Looks complete" report too; the minimum is still 1/2.
    assert_eq!(labelled[0].proof_score, Some(0.5));
    // s* = label 1: report scores [1/2, 1, –, 1/2] with m [1, 0, –, 1] → [0.5, 0, 0, 0.5].
    assert_eq!(
        labelled[0]
            .verifications
            .iter()
            .map(|v| v.reward)
            .collect::<Vec<_>>(),
        [Some(0.5), Some(0.0), Some(0.0), Some(0.5)]
    );
    // As a Reward over rollouts sampled elsewhere: same generator rewards.
    let samples: Vec<Sample> = problems
        .iter()
        .zip(&gens)
        .map(|(p, g)| Sample::new(generator_prompt(p), g.clone()))
        .collect();
    let reward = SelfVerifyReward {
        verifier: &verifier,
        meta_verifier: &meta,
        config: cfg,
    };
    let scores = score_blocking(&reward, &samples).unwrap();
    assert_eq!(scores, out.iter().map(|o| o.reward).collect::<Vec<_>>());
    // Mismatched inputs are errors.
    let err = pollster::block_on(score_proofs_async(
        &verifier,
        &meta,
        &problems,
        &gens[..1],
        None,
        &min_cfg,
    ))
    .unwrap_err();
    assert!(
        err.to_string().contains("4 problems, 1 generations"),
        "{err}"
    );
}

#[test]
fn self_verification_runs_on_the_model() {
    let (model, tok) = tiny();
    let dev = wgpu();
    let opts = GenerateOptions {
        max_new_tokens: 6,
        sampling: Sampling {
            temperature: 1.0,
            seed: 3,
            ..Sampling::default()
        },
        eos_token_ids: vec![],
    };
    let policy = ModelPolicy::new(&model, &tok, opts, &dev);
    let problems = vec!["Prove 1 = 1.".to_string(), "Prove 2 > 1.".to_string()];
    let cfg = SelfVerifyConfig {
        verifier_samples: 2,
        ..SelfVerifyConfig::default()
    };
    // One model plays all three roles.
    let out = self_verify(&policy, &policy, &policy, &problems, &cfg).unwrap();
    assert_eq!(out.len(), 2);
    for o in &out {
        assert!(!o.text.is_empty());
        // Six random tokens never make a "## Self-Evaluation" section with a grade.
        assert!(o.parsed.is_err());
        assert_eq!(o.reward, Some(0.0));
    }
    // Fresh samples per call: the seed advances.
    let a = pollster::block_on(policy.generate(&problems[..1])).unwrap();
    let b = pollster::block_on(policy.generate(&problems[..1])).unwrap();
    assert_ne!(a, b);
}
