//! Self-scoring ("inverse incentive"): the model answers, then grades its own answer; the
//! parsed grade is the reward, so tasks without any checker can still be trained. The
//! incentive runs backwards from the usual verifier set-up: instead of an outside judge
//! scoring the answer, the policy's own assessment (written in the same rollout) is fed
//! back as the answer's reward.
//!
//! Format: the completion ends with a self-assessment score, written as one of
//! ```text
//! Score: 0.8          Self-score: 4/5          Confidence: 80%        (label, ':' or '=')
//! ## Self-assessment … \boxed{0.8}                                   (box after the heading)
//! ```
//! Labels are case-insensitive (`self-score`, `self score`, `score`, `confidence`); the value
//! is any number [`parse_number`] reads (decimals, fractions, `\frac`, percentages) divided
//! by [`SelfScoreReward::scale`] (1 by default; 10 for "Score: 8" on a 0–10 scale) and must
//! land in [0, 1]; only whitespace and closing punctuation may follow it. Anything else is
//! a format failure.
//!
//! Rewards ([`SelfScoreMode`]), with s the parsed score:
//! ```text
//! Raw:         R = s                                 no reference needed
//! Calibrated:  R = α·c + β·(1 − |s − c|)             c = checker's score of the answer part
//! format failure: R = format_failure (0 by default)
//! ```
//! `Raw` rewards confidence itself and is trivially hackable by always writing 1; use it
//! only with other rewards (format, length, a likelihood reward) or when the scoring pass is
//! done by a frozen copy of the model. `Calibrated` needs a reference: it rewards a correct
//! answer and an honest self-score, the same shape as DeepSeekMath-V2's generator reward
//! (see [`super::self_verify`]); samples without a reference score `None` there.

use super::rule::{AccuracyReward, parse_number};
use super::{RuleReward, Sample};

/// A parsed self-assessment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelfScore {
    /// The score in [0, 1] (after dividing by the scale).
    pub value: f64,
    /// Byte offset where the self-assessment starts (the answer is `text[..answer_end]`).
    pub answer_end: usize,
}

/// Labels that introduce a score, longest first.
const LABELS: [&str; 4] = ["self-score", "self score", "confidence", "score"];
/// Headings that open a self-assessment section holding a `\boxed{}` score.
const HEADINGS: [&str; 4] = [
    "self-assessment",
    "self-evaluation",
    "self assessment",
    "self evaluation",
];

/// Parses the score at the end of `text` on a 0–`scale` scale (see the module docs).
pub fn parse_self_score(text: &str, scale: f64) -> Option<SelfScore> {
    let lower = text.to_ascii_lowercase();
    let trailing_ok = |rest: &str| {
        rest.chars()
            .all(|c| c.is_whitespace() || matches!(c, '.' | '*' | ')' | ']' | '$' | '}'))
    };
    let in_range = |v: f64| {
        let v = v / scale;
        (0.0..=1.0).contains(&v).then_some(v)
    };
    // A boxed score after a self-assessment heading.
    if let Some(head) = HEADINGS.iter().filter_map(|h| lower.rfind(h)).max()
        && let Some(rel) = text[head..].rfind("\\boxed{")
    {
        let open = head + rel + "\\boxed".len();
        if let Some(close) = close_brace(text, open) {
            let value = parse_number(&text[open + 1..close]).map(|n| n.scaled());
            if trailing_ok(&text[close + 1..]) {
                return in_range(value?).map(|value| SelfScore {
                    value,
                    answer_end: line_start(text, head),
                });
            }
        }
    }
    // The last "label: value".
    let mut best: Option<(usize, usize)> = None; // (label start, value start)
    for label in LABELS {
        let mut from = 0;
        while let Some(rel) = lower[from..].find(label) {
            let at = from + rel;
            from = at + label.len();
            // Whole word: not preceded by a letter (so "self-score" is not read as "score").
            if lower[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '-')
            {
                continue;
            }
            let after = &text[from..];
            let t = after.trim_start_matches([' ', '*']);
            let Some(t) = t.strip_prefix(':').or_else(|| t.strip_prefix('=')) else {
                continue;
            };
            let t = t.trim_start_matches([' ', '*']);
            let value_at = text.len() - t.len();
            if best.is_none_or(|(b, _)| at > b) {
                best = Some((at, value_at));
            }
        }
    }
    let (label_at, value_at) = best?;
    let line_end = text[value_at..]
        .find('\n')
        .map_or(text.len(), |k| value_at + k);
    let raw = text[value_at..line_end]
        .trim_end_matches(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | ')' | ']'));
    if !trailing_ok(&text[line_end..]) {
        return None;
    }
    let value = parse_number(raw)?.scaled();
    in_range(value).map(|value| SelfScore {
        value,
        answer_end: line_start(text, label_at),
    })
}

/// Index of the `}` closing the `{` at `open`.
fn close_brace(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + k);
                }
            }
            _ => {}
        }
    }
    None
}

/// Start of the line holding byte `at` (with any markdown heading marks).
fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map_or(0, |k| k + 1)
}

/// How the parsed score becomes a reward.
#[derive(Debug, Clone)]
pub enum SelfScoreMode {
    /// `R = s`.
    Raw,
    /// `R = answer_weight·c + honesty_weight·(1 − |s − c|)`, c = `checker` on the answer
    /// part (the text before the self-assessment); `None` without a reference.
    Calibrated {
        checker: AccuracyReward,
        answer_weight: f64,
        honesty_weight: f64,
    },
}

/// The self-scoring reward.
#[derive(Debug, Clone)]
pub struct SelfScoreReward {
    pub mode: SelfScoreMode,
    /// Scores are written on a 0–`scale` scale.
    pub scale: f64,
    /// Reward of a completion whose score does not parse.
    pub format_failure: f64,
}

impl Default for SelfScoreReward {
    /// Raw mode, scale 1, format failure 0.
    fn default() -> Self {
        SelfScoreReward {
            mode: SelfScoreMode::Raw,
            scale: 1.0,
            format_failure: 0.0,
        }
    }
}

impl RuleReward for SelfScoreReward {
    fn name(&self) -> &str {
        "self_score"
    }
    fn score_one(&self, sample: &Sample) -> Option<f64> {
        let parsed = parse_self_score(&sample.completion, self.scale);
        match &self.mode {
            SelfScoreMode::Raw => Some(parsed.map_or(self.format_failure, |s| s.value)),
            SelfScoreMode::Calibrated {
                checker,
                answer_weight,
                honesty_weight,
            } => {
                sample.reference.as_ref()?;
                let Some(s) = parsed else {
                    return Some(self.format_failure);
                };
                let answer = Sample {
                    completion: sample.completion[..s.answer_end].to_string(),
                    ..sample.clone()
                };
                let c = checker.score_one(&answer)?;
                Some(answer_weight * c + honesty_weight * (1.0 - (s.value - c).abs()))
            }
        }
    }
}
