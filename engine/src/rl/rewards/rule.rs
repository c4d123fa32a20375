//! Rule verifiers: final-answer extraction, numeric equivalence, exact match, format and
//! length rules.
//!
//! Extraction (each returns the answer text, not yet parsed):
//! - [`extract_boxed`]: the last `\boxed{...}` / `\fbox{...}` (nested braces), or `\boxed 5`;
//! - [`extract_gsm8k`]: what follows the last `####` on its line (GSM8K references);
//! - [`extract_tag`]: the content of the last `<tag>...</tag>`;
//! - [`extract_last_number`]: the last number in free text: signs, decimals, thousands
//!   separators (`1,234`), fractions (`3/4`, `\frac{a}{b}`, `\dfrac`, `\tfrac`, `\frac12`),
//!   percentages (`45%`, `45\%`), scientific notation (`1.5e-3`, `2\times10^{3}`); a
//!   sentence's trailing period is not part of the number.
//!
//! Equivalence ([`answers_match`]): when both sides parse as numbers ([`parse_number`]),
//! `|a − b| ≤ abs + rel·max(|a|, |b|)` ([`Tolerance`]), so `0.50 == 1/2 == \frac{1}{2}` and
//! `1,234 == 1234`; a percentage also matches its bare number (`50% == 50`, and `== 0.5`).
//! Otherwise the normalised strings ([`normalize_answer`]) must be equal.

use super::{RuleReward, Sample};

// ---------------------------------------------------------------------------------------
// Extraction

/// The content of the last well-formed `\boxed{...}` or `\fbox{...}` (nested braces kept),
/// or the token after `\boxed ` (`\boxed 5`). `None` when there is none.
pub fn extract_boxed(text: &str) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    for cmd in ["\\boxed", "\\fbox"] {
        let mut from = 0;
        while let Some(rel) = text[from..].find(cmd) {
            let at = from + rel;
            from = at + cmd.len();
            if let Some(content) = boxed_content(&text[from..])
                && best.as_ref().is_none_or(|(b, _)| at > *b)
            {
                best = Some((at, content));
            }
        }
    }
    best.map(|(_, c)| c)
}

/// What follows a `\boxed` command: a balanced `{...}` group, or after whitespace a token.
fn boxed_content(rest: &str) -> Option<String> {
    if let Some(inner) = rest.strip_prefix('{') {
        let mut depth = 1usize;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(inner[..i].trim().to_string());
                    }
                }
                _ => {}
            }
        }
        return None;
    }
    // `\boxed 5`: a space, then a token up to whitespace or `$`.
    let trimmed = rest.trim_start_matches([' ', '\t']);
    if trimmed.len() == rest.len() {
        return None; // `\boxedx` is another command
    }
    let token: String = trimmed
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '$')
        .collect();
    (!token.is_empty()).then_some(token)
}

/// The text after the last `####` up to the end of its line (GSM8K's answer marker),
/// trimmed, without a trailing period.
pub fn extract_gsm8k(text: &str) -> Option<String> {
    let at = text.rfind("####")?;
    let line = text[at + 4..].lines().next().unwrap_or("");
    let answer = line.trim().trim_end_matches('.').trim();
    (!answer.is_empty()).then(|| answer.to_string())
}

/// The content of the last complete `<tag>...</tag>`, trimmed.
pub fn extract_tag<'t>(text: &'t str, tag: &str) -> Option<&'t str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let end = text.rfind(&close)?;
    let start = text[..end].rfind(&open)? + open.len();
    Some(text[start..end].trim())
}

/// The last number in `text` (see the module docs for the forms recognised), as written.
pub fn extract_last_number(text: &str) -> Option<String> {
    let norm = normalize_latex_spacing(text);
    find_numbers(&norm).last().map(|m| m.text.clone())
}

/// Where the final answer is looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extractor {
    /// [`extract_boxed`].
    Boxed,
    /// [`extract_gsm8k`].
    Gsm8k,
    /// [`extract_last_number`].
    LastNumber,
    /// The content of the last `<answer>...</answer>`.
    AnswerTag,
    /// The whole completion, trimmed.
    Whole,
    /// The first that applies of: boxed, `####`, `<answer>` (a box inside it wins), last
    /// number.
    Auto,
}

impl Extractor {
    /// The answer found in `text`, if any.
    pub fn extract(self, text: &str) -> Option<String> {
        match self {
            Extractor::Boxed => extract_boxed(text),
            Extractor::Gsm8k => extract_gsm8k(text),
            Extractor::LastNumber => extract_last_number(text),
            Extractor::AnswerTag => extract_tag(text, "answer").map(str::to_string),
            Extractor::Whole => {
                let t = text.trim();
                (!t.is_empty()).then(|| t.to_string())
            }
            Extractor::Auto => extract_boxed(text)
                .or_else(|| extract_gsm8k(text))
                .or_else(|| {
                    extract_tag(text, "answer")
                        .filter(|a| !a.is_empty())
                        .map(|a| extract_boxed(a).unwrap_or_else(|| a.to_string()))
                })
                .or_else(|| extract_last_number(text)),
        }
    }
}

/// The gold answer of a reference: after `####` when present (GSM8K solutions), else the
/// last box when present, else the whole reference trimmed.
pub fn reference_answer(reference: &str) -> String {
    extract_gsm8k(reference)
        .or_else(|| extract_boxed(reference))
        .unwrap_or_else(|| reference.trim().to_string())
}

// ---------------------------------------------------------------------------------------
// Numbers

/// A parsed number: `value` as written (a percentage keeps its number: `45%` → 45).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Number {
    pub value: f64,
    /// Written with `%`.
    pub percent: bool,
}

impl Number {
    /// The value with a percentage scaled: `45%` → 0.45.
    pub fn scaled(self) -> f64 {
        if self.percent {
            self.value / 100.0
        } else {
            self.value
        }
    }
}

/// A number found in text: byte span in the normalised text, its text and value.
#[derive(Debug, Clone, PartialEq)]
struct Found {
    start: usize,
    end: usize,
    text: String,
    number: Number,
}

/// Drops LaTeX spacing that may sit inside numbers (`1{,}234`, `1\,234`, `\!`), maps `\%`
/// to `%`, the Unicode minus to `-`, `\$` to `$`.
fn normalize_latex_spacing(text: &str) -> String {
    text.replace("{,}", ",")
        .replace("\\,", "")
        .replace("\\!", "")
        .replace("\\%", "%")
        .replace("\\$", "$")
        .replace('\u{2212}', "-")
}

/// Every number in `text`, left to right (non-overlapping).
fn find_numbers(text: &str) -> Vec<Found> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if let Some((end, number)) = number_at(text, i) {
            out.push(Found {
                start: i,
                end,
                text: text[i..end].to_string(),
                number,
            });
            i = end;
        } else {
            // Skip a whole identifier so digits inside words ("x2", "H2O") are not numbers.
            if b[i].is_ascii_alphabetic() || b[i] == b'_' {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
            } else {
                i += text[i..].chars().next().map_or(1, char::len_utf8);
            }
        }
    }
    out
}

/// A number starting exactly at byte `i`: returns its end and value.
fn number_at(text: &str, i: usize) -> Option<(usize, Number)> {
    let b = text.as_bytes();
    let mut j = i;
    // Sign: only where it cannot be a binary minus ("3-4").
    let mut negative = false;
    if j < b.len() && (b[j] == b'-' || b[j] == b'+') {
        let prev = text[..i].chars().next_back();
        if prev.is_some_and(|c| c.is_ascii_alphanumeric() || c == ')' || c == '}') {
            return None;
        }
        negative = b[j] == b'-';
        j += 1;
    }
    // LaTeX fractions.
    for cmd in ["\\frac", "\\dfrac", "\\tfrac"] {
        if text[j..].starts_with(cmd) {
            let (end, v) = latex_frac(text, j + cmd.len())?;
            let (end, percent) = percent_suffix(text, end);
            let value = if negative { -v } else { v };
            return Some((end, Number { value, percent }));
        }
    }
    let (mut end, mut value) = decimal_at(text, j)?;
    // Fraction a/b (integers or decimals; not a date-like a/b/c).
    if end < b.len()
        && b[end] == b'/'
        && let Some((dend, den)) = decimal_at(text, end + 1)
        && !(dend < b.len() && b[dend] == b'/')
        && den != 0.0
    {
        value /= den;
        end = dend;
    }
    // Exponent: 1.5e-3, 2E5 (the e must be followed by digits).
    if end < b.len() && (b[end] == b'e' || b[end] == b'E') {
        let mut k = end + 1;
        if k < b.len() && (b[k] == b'-' || b[k] == b'+') {
            k += 1;
        }
        let ds = k;
        while k < b.len() && b[k].is_ascii_digit() {
            k += 1;
        }
        if k > ds && !(k < b.len() && b[k].is_ascii_alphabetic()) {
            let exp: i32 = text[end + 1..k].parse().ok()?;
            value *= 10f64.powi(exp);
            end = k;
        }
    }
    // Scientific in LaTeX: 2\times10^{3}, 2 \times 10^3, 2×10^3, 2\cdot 10^{-2}.
    if let Some((tend, exp)) = times_ten_power(text, end) {
        value *= 10f64.powi(exp);
        end = tend;
    }
    // A letter glued to the number ("2x", "3rd") makes it not a plain number.
    if end < b.len() && (b[end].is_ascii_alphabetic() || b[end] == b'_') {
        return None;
    }
    let (end, percent) = percent_suffix(text, end);
    Some((
        end,
        Number {
            value: if negative { -value } else { value },
            percent,
        },
    ))
}

/// Digits with optional thousands groups and decimals at `i` (`1,234.5`, `.5`, `12.`).
fn decimal_at(text: &str, i: usize) -> Option<(usize, f64)> {
    let b = text.as_bytes();
    let mut j = i;
    let mut digits = String::new();
    while j < b.len() && b[j].is_ascii_digit() {
        digits.push(b[j] as char);
        j += 1;
    }
    // Thousands groups: only when the leading run has 1–3 digits and each group has exactly
    // three digits not followed by another digit.
    if !digits.is_empty() && digits.len() <= 3 {
        let mut k = j;
        let mut grouped = String::new();
        while k < b.len()
            && b[k] == b','
            && text
                .get(k + 1..k + 4)
                .is_some_and(|g| g.bytes().all(|c| c.is_ascii_digit()))
            && !(k + 4 < b.len() && b[k + 4].is_ascii_digit())
        {
            grouped.push_str(&text[k + 1..k + 4]);
            k += 4;
        }
        if !grouped.is_empty() {
            digits.push_str(&grouped);
            j = k;
        }
    }
    // Decimals (only when a digit follows the point, so "is 5." ends at 5).
    if j + 1 < b.len() && b[j] == b'.' && b[j + 1].is_ascii_digit() {
        digits.push('.');
        j += 1;
        while j < b.len() && b[j].is_ascii_digit() {
            digits.push(b[j] as char);
            j += 1;
        }
    }
    if digits.is_empty() || digits == "." {
        return None;
    }
    // Digits glued to a preceding letter or digit-less dot are handled by the caller.
    digits.parse::<f64>().ok().map(|v| (j, v))
}

/// `{a}{b}` or `ab` (single digits) after `\frac`: returns the end and a/b.
fn latex_frac(text: &str, i: usize) -> Option<(usize, f64)> {
    let b = text.as_bytes();
    let mut j = i;
    while j < b.len() && b[j] == b' ' {
        j += 1;
    }
    if j < b.len() && b[j] == b'{' {
        let (nend, num) = braced_number(text, j)?;
        let mut k = nend;
        while k < b.len() && b[k] == b' ' {
            k += 1;
        }
        let (dend, den) = if k < b.len() && b[k] == b'{' {
            braced_number(text, k)?
        } else if k < b.len() && b[k].is_ascii_digit() {
            (k + 1, f64::from(b[k] - b'0'))
        } else {
            return None;
        };
        return (den != 0.0).then_some((dend, num / den));
    }
    // \frac12
    if j + 1 < b.len() && b[j].is_ascii_digit() && b[j + 1].is_ascii_digit() {
        let den = f64::from(b[j + 1] - b'0');
        return (den != 0.0).then_some((j + 2, f64::from(b[j] - b'0') / den));
    }
    None
}

/// A `{...}` group at `i` whose content parses as a number.
fn braced_number(text: &str, i: usize) -> Option<(usize, f64)> {
    let close = matching_brace(text, i)?;
    let n = parse_number(&text[i + 1..close])?;
    Some((close + 1, n.scaled()))
}

/// Byte index of the `}` matching the `{` at `i`.
fn matching_brace(text: &str, i: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, c) in text[i..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + k);
                }
            }
            _ => {}
        }
    }
    None
}

/// ` \times 10^{k}` (or `×`, `\cdot`) at `i`: returns the end and k.
fn times_ten_power(text: &str, i: usize) -> Option<(usize, i32)> {
    let rest = &text[i..];
    let t = rest.trim_start();
    let t = ["\\times", "×", "\\cdot", "*"]
        .iter()
        .find_map(|op| t.strip_prefix(op))?
        .trim_start();
    let t = t.strip_prefix("10^")?;
    let (exp_text, after) = if let Some(inner) = t.strip_prefix('{') {
        let close = inner.find('}')?;
        (inner[..close].trim(), &inner[close + 1..])
    } else {
        let n = t
            .char_indices()
            .take_while(|&(k, c)| c.is_ascii_digit() || (k == 0 && c == '-'))
            .count();
        (&t[..n], &t[n..])
    };
    let exp: i32 = exp_text.parse().ok()?;
    Some((text.len() - after.len(), exp))
}

/// A `%` right after a number (spaces allowed).
fn percent_suffix(text: &str, i: usize) -> (usize, bool) {
    let rest = &text[i..];
    let t = rest.trim_start_matches(' ');
    if t.starts_with('%') {
        (text.len() - t.len() + 1, true)
    } else {
        (i, false)
    }
}

/// Parses an answer that is a single number, after stripping math delimiters, `\boxed{}`,
/// a leading `x =`, currency, units in `\text{...}`/`\mathrm{...}`, degrees and a trailing
/// period. `None` when anything else remains.
pub fn parse_number(answer: &str) -> Option<Number> {
    let s = strip_answer_wrappers(answer);
    let s = normalize_latex_spacing(&s);
    let s = s.trim();
    // Drop a leading "x =" / "=".
    let s = match s.rfind('=') {
        Some(at) if !s[at + 1..].trim().is_empty() => s[at + 1..].trim(),
        _ => s,
    };
    let s = s.trim_start_matches('$').trim();
    let s = s
        .trim_end_matches('.')
        .trim_end_matches("^\\circ")
        .trim_end_matches("^{\\circ}")
        .trim_end_matches('°')
        .trim();
    if s.is_empty() {
        return None;
    }
    // Parenthesised or braced single number.
    let s = strip_outer(s, '(', ')');
    let s = strip_outer(s, '{', '}');
    let (end, n) = number_at(s, 0)?;
    s[end..].trim().is_empty().then_some(n)
}

/// `s` without one pair of enclosing `open`/`close` characters, when they enclose it all.
fn strip_outer(s: &str, open: char, close: char) -> &str {
    if s.starts_with(open) && s.ends_with(close) && s.len() >= 2 {
        s[1..s.len() - 1].trim()
    } else {
        s
    }
}

/// Strips `$...$`, `\(...\)`, `\[...\]`, `\boxed{...}`, `\text{...}` units after the
/// value, `\left`/`\right`, and a trailing period.
fn strip_answer_wrappers(answer: &str) -> String {
    let mut s = answer.trim().to_string();
    loop {
        let before = s.clone();
        if let Some(inner) = s.strip_prefix("\\(").and_then(|t| t.strip_suffix("\\)")) {
            s = inner.trim().to_string();
        }
        if let Some(inner) = s.strip_prefix("\\[").and_then(|t| t.strip_suffix("\\]")) {
            s = inner.trim().to_string();
        }
        if s.len() >= 2 && s.starts_with('$') && s.ends_with('$') {
            s = s.trim_matches('$').trim().to_string();
        }
        if (s.starts_with("\\boxed") || s.starts_with("\\fbox"))
            && let Some(inner) = extract_boxed(&s)
        {
            s = inner;
        }
        s = s.trim_end_matches('.').trim().to_string();
        // Trailing units: \text{...} or \mathrm{...} (or \textbf) after something else.
        for cmd in ["\\text{", "\\mathrm{", "\\textbf{", "\\mbox{"] {
            if let Some(at) = s.rfind(cmd)
                && let Some(close) = matching_brace(&s, at + cmd.len() - 1)
                && s[close + 1..].trim().is_empty()
            {
                let inner = s[at + cmd.len()..close].trim().to_string();
                let head = s[..at].trim();
                s = if head.is_empty() {
                    inner
                } else {
                    head.to_string()
                };
            }
        }
        s = s.replace("\\left", "").replace("\\right", "");
        if s == before {
            return s;
        }
    }
}

/// Absolute and relative tolerance of numeric equality.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub abs: f64,
    pub rel: f64,
}

impl Default for Tolerance {
    /// `abs = 1e-9`, `rel = 1e-6`.
    fn default() -> Self {
        Tolerance {
            abs: 1e-9,
            rel: 1e-6,
        }
    }
}

/// `|a − b| ≤ abs + rel·max(|a|, |b|)`.
pub fn numbers_close(a: f64, b: f64, tol: Tolerance) -> bool {
    a.is_finite() && b.is_finite() && (a - b).abs() <= tol.abs + tol.rel * a.abs().max(b.abs())
}

/// Two parsed numbers are equal: same scaled value, or (when either is a percentage) same
/// written value (`50% == 50`).
pub fn numbers_equal(a: Number, b: Number, tol: Tolerance) -> bool {
    numbers_close(a.scaled(), b.scaled(), tol)
        || ((a.percent || b.percent) && numbers_close(a.value, b.value, tol))
}

/// A normalised answer string: wrappers stripped (see [`parse_number`]), lower case,
/// whitespace runs collapsed to one space, no trailing period.
pub fn normalize_answer(answer: &str) -> String {
    let s = strip_answer_wrappers(answer);
    let s = s.to_lowercase();
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    s.trim_end_matches('.').trim().to_string()
}

/// Whether a predicted answer matches the gold one: numerically when both parse as
/// numbers, else as normalised strings (also compared with all whitespace removed).
pub fn answers_match(pred: &str, gold: &str, tol: Tolerance) -> bool {
    if let (Some(a), Some(b)) = (parse_number(pred), parse_number(gold)) {
        return numbers_equal(a, b, tol);
    }
    let (a, b) = (normalize_answer(pred), normalize_answer(gold));
    if a.is_empty() || b.is_empty() {
        return false;
    }
    a == b || a.replace(' ', "") == b.replace(' ', "")
}

// ---------------------------------------------------------------------------------------
// Rewards over answers

/// 1 when the extracted answer matches the reference ([`answers_match`]), 0 when it does
/// not or none was found; `None` without a reference. The reference goes through
/// [`reference_answer`] (so a full GSM8K solution works as reference).
#[derive(Debug, Clone)]
pub struct AccuracyReward {
    pub extractor: Extractor,
    pub tolerance: Tolerance,
}

impl Default for AccuracyReward {
    fn default() -> Self {
        AccuracyReward {
            extractor: Extractor::Auto,
            tolerance: Tolerance::default(),
        }
    }
}

impl AccuracyReward {
    pub fn new(extractor: Extractor) -> Self {
        AccuracyReward {
            extractor,
            tolerance: Tolerance::default(),
        }
    }
}

impl RuleReward for AccuracyReward {
    fn name(&self) -> &str {
        "accuracy"
    }
    fn score_one(&self, sample: &Sample) -> Option<f64> {
        let gold = reference_answer(sample.reference.as_deref()?);
        let ok = self
            .extractor
            .extract(&sample.completion)
            .is_some_and(|pred| answers_match(&pred, &gold, self.tolerance));
        Some(if ok { 1.0 } else { 0.0 })
    }
}

/// 1 when the extracted answer equals the reference exactly (`normalize = false`) or after
/// [`normalize_answer`] (`normalize = true`); `None` without a reference.
#[derive(Debug, Clone)]
pub struct ExactMatchReward {
    pub extractor: Extractor,
    pub normalize: bool,
}

impl RuleReward for ExactMatchReward {
    fn name(&self) -> &str {
        "exact_match"
    }
    fn score_one(&self, sample: &Sample) -> Option<f64> {
        let gold = sample.reference.as_deref()?;
        let ok = self.extractor.extract(&sample.completion).is_some_and(|p| {
            if self.normalize {
                normalize_answer(&p) == normalize_answer(gold)
            } else {
                p.trim() == gold.trim()
            }
        });
        Some(if ok { 1.0 } else { 0.0 })
    }
}

// ---------------------------------------------------------------------------------------
// Format

/// Splits a completion of the form `<think>R</think> <answer>A</answer>` (whitespace
/// around and between the blocks allowed) into `(R, A)` trimmed. Each tag must occur
/// exactly once, in that order, with nothing outside the blocks. With
/// `think_open_in_prompt` the completion starts inside the reasoning (the prompt ended with
/// `<think>`), so the opening tag must be absent.
pub fn split_think_answer(completion: &str, think_open_in_prompt: bool) -> Option<(&str, &str)> {
    let t = completion.trim();
    let count = |tag: &str| t.matches(tag).count();
    let want_open = usize::from(!think_open_in_prompt);
    if count("<think>") != want_open
        || count("</think>") != 1
        || count("<answer>") != 1
        || count("</answer>") != 1
    {
        return None;
    }
    let body = if think_open_in_prompt {
        t
    } else {
        t.strip_prefix("<think>")?
    };
    let (reasoning, rest) = body.split_once("</think>")?;
    let rest = rest.trim_start().strip_prefix("<answer>")?;
    let answer = rest.strip_suffix("</answer>")?;
    Some((reasoning.trim(), answer.trim()))
}

/// How strictly [`FormatReward`] checks the think/answer structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatMode {
    /// 1 when [`split_think_answer`] accepts the completion and the answer is non-empty,
    /// else 0.
    Strict,
    /// 0.25 for each of `<think>`, `</think>`, `<answer>`, `</answer>` present exactly once
    /// (partial credit while the format is learned).
    Partial,
}

/// Think/answer format reward.
#[derive(Debug, Clone)]
pub struct FormatReward {
    pub mode: FormatMode,
    /// The prompt already opened `<think>` (chat templates that prefill it).
    pub think_open_in_prompt: bool,
}

impl Default for FormatReward {
    fn default() -> Self {
        FormatReward {
            mode: FormatMode::Strict,
            think_open_in_prompt: false,
        }
    }
}

/// 1 when `completion` is a well-formed `<think>…</think><answer>…</answer>` with a
/// non-empty answer.
pub fn think_answer_format(completion: &str, think_open_in_prompt: bool) -> bool {
    split_think_answer(completion, think_open_in_prompt).is_some_and(|(_, a)| !a.is_empty())
}

impl RuleReward for FormatReward {
    fn name(&self) -> &str {
        "format"
    }
    fn score_one(&self, sample: &Sample) -> Option<f64> {
        let c = &sample.completion;
        Some(match self.mode {
            FormatMode::Strict => {
                if think_answer_format(c, self.think_open_in_prompt) {
                    1.0
                } else {
                    0.0
                }
            }
            FormatMode::Partial => {
                let tags: &[&str] = if self.think_open_in_prompt {
                    &["</think>", "<answer>", "</answer>"]
                } else {
                    &["<think>", "</think>", "<answer>", "</answer>"]
                };
                let each = 1.0 / tags.len() as f64;
                tags.iter().filter(|t| c.matches(*t).count() == 1).count() as f64 * each
            }
        })
    }
}

// ---------------------------------------------------------------------------------------
// Length

/// What a length is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthUnit {
    /// Completion token ids (`None` when the sample has no ids).
    Tokens,
    /// Unicode scalar values.
    Chars,
    /// Whitespace-separated words.
    Words,
}

impl LengthUnit {
    /// The length of a sample's completion in this unit.
    pub fn of(self, sample: &Sample) -> Option<usize> {
        match self {
            LengthUnit::Tokens => sample.completion_ids.as_ref().map(Vec::len),
            LengthUnit::Chars => Some(sample.completion.chars().count()),
            LengthUnit::Words => Some(sample.completion.split_whitespace().count()),
        }
    }
}

/// Shape of a length reward as a function of the length L.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LengthShape {
    /// `r = −min(L / max_len, 1)`: a penalty growing linearly to −1 at `max_len`.
    Linear { max_len: usize },
    /// `r = max(0, 1 − |L − target| / width)`: 1 at the target length, 0 beyond ± width.
    Target { target: usize, width: usize },
    /// DAPO's soft overlong punishment with L_max = `max_len`, L_cache = `cache`:
    /// `0` if L ≤ L_max − L_cache; `((L_max − L_cache) − L) / L_cache` if
    /// L_max − L_cache < L ≤ L_max; `−1` beyond L_max.
    SoftOverlong { max_len: usize, cache: usize },
}

impl LengthShape {
    /// The reward of length `len`.
    pub fn reward(self, len: usize) -> f64 {
        let l = len as f64;
        match self {
            LengthShape::Linear { max_len } => -(l / max_len.max(1) as f64).min(1.0),
            LengthShape::Target { target, width } => {
                (1.0 - (l - target as f64).abs() / width.max(1) as f64).max(0.0)
            }
            LengthShape::SoftOverlong { max_len, cache } => {
                let free = max_len.saturating_sub(cache) as f64;
                if l <= free {
                    0.0
                } else if len <= max_len {
                    (free - l) / cache.max(1) as f64
                } else {
                    -1.0
                }
            }
        }
    }
}

/// A length reward/penalty over the completion.
#[derive(Debug, Clone)]
pub struct LengthReward {
    pub unit: LengthUnit,
    pub shape: LengthShape,
}

impl RuleReward for LengthReward {
    fn name(&self) -> &str {
        "length"
    }
    fn score_one(&self, sample: &Sample) -> Option<f64> {
        self.unit.of(sample).map(|l| self.shape.reward(l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_numbers_and_spans() {
        let f = find_numbers("a 1,234 b -5 c 3/4 d x2 e");
        let vals: Vec<f64> = f.iter().map(|n| n.number.value).collect();
        assert_eq!(vals, vec![1234.0, -5.0, 0.75]);
        assert_eq!(f[0].start, 2);
        assert_eq!(f[0].end, 7);
    }
}
