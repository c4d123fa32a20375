//! Self-verification (DeepSeekMath-V2, Shao et al. 2025, "Towards Self-Verifiable
//! Mathematical Reasoning"): generate → verify → meta-verify, for any model.
//!
//! Roles (one model may play all three):
//! - generator: problem X → proof Y, then a self-analysis Z ending in a self-score s' ∈ {0, ½, 1};
//! - verifier: (X, Y) → analysis V listing issues, then a score s ∈ {0, ½, 1} under the rubric
//!   1 = complete and rigorous, ½ = sound but with minor gaps, 0 = fatally flawed;
//! - meta-verifier: (X, Y, analysis, its score) → m ∈ {0, ½, 1}: are the issues raised real
//!   and is the score justified by them?
//!
//! Rewards (paper, §2: verifier and generator training):
//! ```text
//! verifier:   R_V = R_format(V) · (1 − |s − s*|) · m(V)          s* = reference score
//! generator:  R_G = R_format(Y, Z) · (α·R_Y + β·R_Z)             α = 0.76, β = 0.24
//!             R_Y = the verifiers' score of the proof
//!             R_Z = (1 − |s' − R_Y|) · m(Z)                      honest, meta-verified self-score
//! ```
//! In the loop ([`score_proofs_async`], [`self_verify_async`]) the proof's score R_Y comes
//! from n verifier samples: those that fail the format are dropped; the rest are
//! meta-verified and kept when m ≥ `meta_threshold` (issues judged real); R_Y is the
//! [`Aggregate`] of the kept scores (mean, or the minimum as the paper's conservative
//! auto-labelling does). With no kept verification the proof is unscored (`None`). Each
//! verifier sample's reward uses s* = R_Y (the consensus), or a human label passed in.
//!
//! Text formats the parsers accept (prompts below ask for them):
//! ```text
//! generator:      … proof … "## Self-Evaluation" … analysis … \boxed{s'}
//! verifier:       … analysis … \boxed{s}        (the last box in the text)
//! meta-verifier:  … assessment … \boxed{m}      (the last box in the text)
//! ```
//! A score is `0`, `1`, `0.5`, `.5`, `1/2`, `\frac{1}{2}` or `½` (whitespace ignored); any
//! other value, or no box, is a format failure.

use std::future::Future;
use std::pin::Pin;

use super::rule::extract_boxed;
use super::{Reward, RewardError, RewardFuture, Sample, Scores};

/// The rubric the verifier and the generator's self-evaluation share.
pub const RUBRIC: &str = "Grade the proof with exactly one of three scores.\n\
1 - the argument is complete and rigorous: every step follows, every case is covered.\n\
1/2 - the overall argument is sound, but some details are missing or a minor slip needs fixing.\n\
0 - a step is false, a key case is ignored, or the argument does not reach the claim.\n\
Citing a known result is fine; claiming the statement itself without proof is not.";

/// Generator prompt; `{problem}` is replaced. Asks for the proof, then a self-evaluation
/// under [`RUBRIC`] ending in `\boxed{score}`.
pub const GENERATOR_TEMPLATE: &str = "Solve the following problem with a complete proof.\n\n\
### Problem\n{problem}\n\n\
Write your proof first. Then add a section headed \"## Self-Evaluation\" where you check \
your own proof as a strict grader would, list every weakness you find, and finish with \
your grade in \\boxed{} using this rubric:\n{rubric}\n";

/// Verifier prompt; `{problem}` and `{proof}` are replaced.
pub const VERIFIER_TEMPLATE: &str = "You are grading a proof.\n\n\
### Problem\n{problem}\n\n### Proof\n{proof}\n\n\
Go through the proof step by step and list every error or gap you find, quoting the \
place where it occurs. Then give your grade in \\boxed{} using this rubric:\n{rubric}\n";

/// Meta-verifier prompt; `{problem}`, `{proof}`, `{analysis}` and `{score}` are replaced.
pub const META_VERIFIER_TEMPLATE: &str = "You are checking a grader's report on a proof.\n\n\
### Problem\n{problem}\n\n### Proof\n{proof}\n\n### Grader's report\n{analysis}\n\n\
### Grader's score\n{score}\n\n\
For each issue the report raises, decide whether it is really present in the proof. \
Then decide whether the score follows from the real issues under this rubric:\n{rubric}\n\
Give your verdict in \\boxed{}: 1 if every issue is real and the score fits, 1/2 if the \
report is partly right, 0 if its issues are invented or the score is unjustified.\n";

/// The heading that separates the proof from the self-evaluation.
pub const SELF_EVAL_HEADING: &str = "## Self-Evaluation";

/// The generator prompt for `problem`.
pub fn generator_prompt(problem: &str) -> String {
    GENERATOR_TEMPLATE
        .replace("{rubric}", RUBRIC)
        .replace("{problem}", problem)
}

/// The problem inside a prompt made by [`generator_prompt`] (`None` for other text).
pub fn problem_from_generator_prompt(prompt: &str) -> Option<&str> {
    let head = "### Problem\n";
    let start = prompt.find(head)? + head.len();
    let end = start + prompt[start..].rfind("\n\nWrite your proof first.")?;
    Some(&prompt[start..end])
}

/// The verifier prompt for `proof` of `problem`.
pub fn verifier_prompt(problem: &str, proof: &str) -> String {
    VERIFIER_TEMPLATE
        .replace("{rubric}", RUBRIC)
        .replace("{problem}", problem)
        .replace("{proof}", proof)
}

/// The meta-verifier prompt for an analysis (with its score) of `proof`.
pub fn meta_verifier_prompt(problem: &str, proof: &str, analysis: &str, score: f64) -> String {
    META_VERIFIER_TEMPLATE
        .replace("{rubric}", RUBRIC)
        .replace("{problem}", problem)
        .replace("{proof}", proof)
        .replace("{analysis}", analysis)
        .replace("{score}", &format_score(score))
}

/// `0`, `1/2` or `1`.
pub fn format_score(score: f64) -> String {
    if score == 0.5 {
        "1/2".into()
    } else {
        format!("{score}")
    }
}

/// Why an output does not follow its format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("no \\boxed{{}} score")]
    MissingScore,
    #[error("score `{0}` is not one of 0, 1/2, 1")]
    BadScore(String),
    #[error("no \"{SELF_EVAL_HEADING}\" section")]
    MissingSelfEvaluation,
    #[error("empty proof")]
    EmptyProof,
}

/// Reads a rubric score: `0`, `1`, `0.5`, `.5`, `1/2`, `\frac{1}{2}`, `\dfrac12`, `½`
/// (whitespace and `$` ignored).
pub fn parse_rubric_score(text: &str) -> Result<f64, FormatError> {
    let t: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '$')
        .collect();
    let v = match t.as_str() {
        "0" | "0.0" | "0.00" => 0.0,
        "1" | "1.0" | "1.00" => 1.0,
        "0.5" | ".5" | "0.50" | "1/2" | "½" | "\\frac{1}{2}" | "\\dfrac{1}{2}"
        | "\\tfrac{1}{2}" | "\\frac12" | "\\dfrac12" | "\\tfrac12" => 0.5,
        _ => return Err(FormatError::BadScore(text.trim().to_string())),
    };
    Ok(v)
}

/// The last `\boxed{}` score of a text.
fn boxed_score(text: &str) -> Result<f64, FormatError> {
    let b = extract_boxed(text).ok_or(FormatError::MissingScore)?;
    parse_rubric_score(&b)
}

/// A parsed generator output.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Text before the self-evaluation heading, trimmed.
    pub proof: String,
    /// The self-evaluation section (heading excluded), trimmed.
    pub self_analysis: String,
    /// s'.
    pub self_score: f64,
}

/// Parses a generator output (see the module docs).
pub fn parse_generation(text: &str) -> Result<Generation, FormatError> {
    let lower = text.to_ascii_lowercase();
    let at = lower
        .rfind(&SELF_EVAL_HEADING.to_ascii_lowercase())
        .ok_or(FormatError::MissingSelfEvaluation)?;
    let proof = text[..at].trim();
    if proof.is_empty() {
        return Err(FormatError::EmptyProof);
    }
    let analysis = text[at + SELF_EVAL_HEADING.len()..].trim();
    let self_score = boxed_score(analysis)?;
    Ok(Generation {
        proof: proof.to_string(),
        self_analysis: analysis.to_string(),
        self_score,
    })
}

/// A parsed verifier output.
#[derive(Debug, Clone, PartialEq)]
pub struct Verification {
    /// The whole report, trimmed.
    pub analysis: String,
    /// s.
    pub score: f64,
}

/// Parses a verifier output: the last `\boxed{}` is the score.
pub fn parse_verification(text: &str) -> Result<Verification, FormatError> {
    Ok(Verification {
        analysis: text.trim().to_string(),
        score: boxed_score(text)?,
    })
}

/// Parses a meta-verifier output: the last `\boxed{}` is m.
pub fn parse_meta(text: &str) -> Result<f64, FormatError> {
    boxed_score(text)
}

/// `R_V = R_format · (1 − |s − s*|) · m`.
pub fn verifier_reward(format_ok: bool, score: f64, reference: f64, meta: f64) -> f64 {
    if !format_ok {
        return 0.0;
    }
    (1.0 - (score - reference).abs()) * meta
}

/// Weights of the generator reward.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeneratorWeights {
    pub alpha: f64,
    pub beta: f64,
}

impl Default for GeneratorWeights {
    /// The paper's α = 0.76, β = 0.24.
    fn default() -> Self {
        GeneratorWeights {
            alpha: 0.76,
            beta: 0.24,
        }
    }
}

/// `R_G = R_format · (α·R_Y + β·(1 − |s' − R_Y|)·m(Z))`.
pub fn generator_reward(
    format_ok: bool,
    proof_score: f64,
    self_score: f64,
    self_meta: f64,
    w: GeneratorWeights,
) -> f64 {
    if !format_ok {
        return 0.0;
    }
    w.alpha * proof_score + w.beta * (1.0 - (self_score - proof_score).abs()) * self_meta
}

/// How kept verifier scores become the proof's score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Mean,
    /// The lowest kept score (a proof is as good as its worst confirmed issue).
    Min,
}

/// Settings of the loop.
#[derive(Debug, Clone)]
pub struct SelfVerifyConfig {
    /// Verifier samples per proof (n).
    pub verifier_samples: usize,
    /// A verification is kept when its meta-score is at least this.
    pub meta_threshold: f64,
    pub aggregate: Aggregate,
    pub weights: GeneratorWeights,
}

impl Default for SelfVerifyConfig {
    /// n = 4, threshold ½, mean, α = 0.76, β = 0.24.
    fn default() -> Self {
        SelfVerifyConfig {
            verifier_samples: 4,
            meta_threshold: 0.5,
            aggregate: Aggregate::Mean,
            weights: GeneratorWeights::default(),
        }
    }
}

/// What [`Policy::generate`] returns.
pub type PolicyFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + 'a>>;

/// Something that writes one completion per prompt: the model
/// ([`ModelPolicy`]) or a scripted stand-in. `&self`: implementations keep their sampling
/// state (e.g. a seed counter) in cells, so one policy can play several roles at once.
pub trait Policy {
    fn generate<'a>(&'a self, prompts: &'a [String]) -> PolicyFuture<'a>;
}

/// One verifier sample of a proof.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifierOutcome {
    /// The verifier's output.
    pub text: String,
    /// Parsed report, or why it failed the format.
    pub parsed: Result<Verification, FormatError>,
    /// m of this report (parsed reports only; `None` when the meta output failed its format).
    pub meta: Option<f64>,
    /// Counted in the proof's score.
    pub kept: bool,
    /// R_V with s* = the proof's score (or a label); `None` when there is no reference score.
    pub reward: Option<f64>,
}

/// Everything the loop learned about one proof.
#[derive(Debug, Clone, PartialEq)]
pub struct ProofOutcome {
    pub problem: String,
    /// The generator's output.
    pub text: String,
    /// Parsed output, or why it failed the format.
    pub parsed: Result<Generation, FormatError>,
    pub verifications: Vec<VerifierOutcome>,
    /// R_Y (`None`: malformed, or no verification kept).
    pub proof_score: Option<f64>,
    /// m(Z) of the self-analysis (`None` when not available).
    pub self_meta: Option<f64>,
    /// R_G: 0 for a malformed output; `None` when the proof could not be scored.
    pub reward: Option<f64>,
}

fn gen_err(e: String) -> RewardError {
    RewardError::Generate {
        reward: "self_verify".into(),
        message: e,
    }
}

async fn run(policy: &dyn Policy, prompts: &[String]) -> Result<Vec<String>, RewardError> {
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    let out = policy.generate(prompts).await.map_err(gen_err)?;
    if out.len() != prompts.len() {
        return Err(gen_err(format!(
            "policy returned {} outputs for {} prompts",
            out.len(),
            prompts.len()
        )));
    }
    Ok(out)
}

/// Verifies and meta-verifies generator outputs `generations[i]` for `problems[i]` and
/// computes every reward. `labels[i]`, when given, is a reference score of proof i used as
/// s* in the verifier rewards (else s* = the aggregated score).
pub async fn score_proofs_async(
    verifier: &dyn Policy,
    meta_verifier: &dyn Policy,
    problems: &[String],
    generations: &[String],
    labels: Option<&[f64]>,
    cfg: &SelfVerifyConfig,
) -> Result<Vec<ProofOutcome>, RewardError> {
    if problems.len() != generations.len() || labels.is_some_and(|l| l.len() != problems.len()) {
        return Err(RewardError::Input {
            reward: "self_verify".into(),
            message: format!(
                "{} problems, {} generations, {} labels",
                problems.len(),
                generations.len(),
                labels.map_or(0, <[f64]>::len)
            ),
        });
    }
    let parsed: Vec<Result<Generation, FormatError>> =
        generations.iter().map(|g| parse_generation(g)).collect();
    // Verify: n prompts per well-formed proof.
    let mut v_prompts = Vec::new();
    let mut v_owner = Vec::new();
    for (i, p) in parsed.iter().enumerate() {
        if let Ok(g) = p {
            for _ in 0..cfg.verifier_samples {
                v_prompts.push(verifier_prompt(&problems[i], &g.proof));
                v_owner.push(i);
            }
        }
    }
    let v_texts = run(verifier, &v_prompts).await?;
    let v_parsed: Vec<Result<Verification, FormatError>> =
        v_texts.iter().map(|t| parse_verification(t)).collect();
    // Meta-verify every parsed report and every self-analysis, in one batch.
    let mut m_prompts = Vec::new();
    let mut m_of_report = vec![None; v_texts.len()];
    let mut m_of_self = vec![None; problems.len()];
    for (k, r) in v_parsed.iter().enumerate() {
        if let Ok(v) = r {
            let i = v_owner[k];
            let proof = &parsed[i].as_ref().map(|g| g.proof.as_str()).unwrap_or("");
            m_of_report[k] = Some(m_prompts.len());
            m_prompts.push(meta_verifier_prompt(
                &problems[i],
                proof,
                &v.analysis,
                v.score,
            ));
        }
    }
    for (i, p) in parsed.iter().enumerate() {
        if let Ok(g) = p {
            m_of_self[i] = Some(m_prompts.len());
            m_prompts.push(meta_verifier_prompt(
                &problems[i],
                &g.proof,
                &g.self_analysis,
                g.self_score,
            ));
        }
    }
    let m_texts = run(meta_verifier, &m_prompts).await?;
    let m_scores: Vec<Option<f64>> = m_texts.iter().map(|t| parse_meta(t).ok()).collect();
    // Assemble per proof.
    let mut outcomes: Vec<ProofOutcome> = problems
        .iter()
        .zip(generations)
        .zip(parsed)
        .enumerate()
        .map(|(i, ((problem, text), parsed))| ProofOutcome {
            problem: problem.clone(),
            text: text.clone(),
            parsed,
            verifications: Vec::new(),
            proof_score: None,
            self_meta: m_of_self[i].and_then(|k| m_scores[k]),
            reward: None,
        })
        .collect();
    for (k, (text, parsed)) in v_texts.into_iter().zip(v_parsed).enumerate() {
        let meta = m_of_report[k].and_then(|j| m_scores[j]);
        let kept = parsed.is_ok() && meta.is_some_and(|m| m >= cfg.meta_threshold);
        outcomes[v_owner[k]].verifications.push(VerifierOutcome {
            text,
            parsed,
            meta,
            kept,
            reward: None,
        });
    }
    for (i, o) in outcomes.iter_mut().enumerate() {
        let kept: Vec<f64> = o
            .verifications
            .iter()
            .filter(|v| v.kept)
            .filter_map(|v| v.parsed.as_ref().ok().map(|p| p.score))
            .collect();
        o.proof_score = (!kept.is_empty()).then(|| match cfg.aggregate {
            Aggregate::Mean => kept.iter().sum::<f64>() / kept.len() as f64,
            Aggregate::Min => kept.iter().copied().fold(f64::INFINITY, f64::min),
        });
        o.reward = match (&o.parsed, o.proof_score) {
            (Err(_), _) => Some(0.0),
            (Ok(_), None) => None,
            (Ok(g), Some(ry)) => Some(generator_reward(
                true,
                ry,
                g.self_score,
                o.self_meta.unwrap_or(0.0),
                cfg.weights,
            )),
        };
        let reference = labels.map(|l| l[i]).or(o.proof_score);
        for v in &mut o.verifications {
            v.reward = reference.map(|s_star| match &v.parsed {
                Ok(p) => verifier_reward(true, p.score, s_star, v.meta.unwrap_or(0.0)),
                Err(_) => 0.0,
            });
        }
    }
    Ok(outcomes)
}

/// The whole loop: the generator answers [`generator_prompt`]`(problem)` for every problem
/// (one rollout per entry; repeat a problem for G rollouts), then [`score_proofs_async`].
pub async fn self_verify_async(
    generator: &dyn Policy,
    verifier: &dyn Policy,
    meta_verifier: &dyn Policy,
    problems: &[String],
    cfg: &SelfVerifyConfig,
) -> Result<Vec<ProofOutcome>, RewardError> {
    let prompts: Vec<String> = problems.iter().map(|p| generator_prompt(p)).collect();
    let generations = run(generator, &prompts).await?;
    score_proofs_async(verifier, meta_verifier, problems, &generations, None, cfg).await
}

/// Blocking [`self_verify_async`] (native only).
#[cfg(not(target_family = "wasm"))]
pub fn self_verify(
    generator: &dyn Policy,
    verifier: &dyn Policy,
    meta_verifier: &dyn Policy,
    problems: &[String],
    cfg: &SelfVerifyConfig,
) -> Result<Vec<ProofOutcome>, RewardError> {
    pollster::block_on(self_verify_async(
        generator,
        verifier,
        meta_verifier,
        problems,
        cfg,
    ))
}

/// The generator reward as a [`Reward`] over rollouts the training loop already sampled:
/// each sample's problem is read from its prompt ([`problem_from_generator_prompt`], else
/// the whole prompt), its completion is the generator output.
pub struct SelfVerifyReward<'a> {
    pub verifier: &'a dyn Policy,
    pub meta_verifier: &'a dyn Policy,
    pub config: SelfVerifyConfig,
}

impl SelfVerifyReward<'_> {
    /// R_G of each sample.
    pub async fn score_async(&self, samples: &[Sample]) -> Result<Scores, RewardError> {
        let problems: Vec<String> = samples
            .iter()
            .map(|s| {
                problem_from_generator_prompt(&s.prompt)
                    .unwrap_or(&s.prompt)
                    .to_string()
            })
            .collect();
        let gens: Vec<String> = samples.iter().map(|s| s.completion.clone()).collect();
        let out = score_proofs_async(
            self.verifier,
            self.meta_verifier,
            &problems,
            &gens,
            None,
            &self.config,
        )
        .await?;
        Ok(out.into_iter().map(|o| o.reward).collect())
    }
}

impl Reward for SelfVerifyReward<'_> {
    fn name(&self) -> &str {
        "self_verify"
    }
    fn score<'s>(&'s self, samples: &'s [Sample]) -> RewardFuture<'s> {
        Box::pin(self.score_async(samples))
    }
}

pub use model_policy::ModelPolicy;

mod model_policy {
    use std::cell::Cell;

    use burn::tensor::Device;

    use super::{Policy, PolicyFuture};
    use crate::model::generate::{GenerateOptions, generate_async};
    use crate::model::hybrid::HybridModel;
    use crate::model::tokenizer::Tokenizer;

    /// The model as a [`Policy`]: encodes each prompt (no special tokens; apply a chat
    /// template to the prompt text first if the model needs one), samples with
    /// [`generate_async`] and decodes the new tokens (special tokens skipped). The sampling
    /// seed advances by one per call, so repeated calls draw fresh samples.
    pub struct ModelPolicy<'a> {
        pub model: &'a HybridModel,
        pub tokenizer: &'a Tokenizer,
        pub options: GenerateOptions,
        pub device: Device,
        calls: Cell<u64>,
    }

    impl<'a> ModelPolicy<'a> {
        pub fn new(
            model: &'a HybridModel,
            tokenizer: &'a Tokenizer,
            options: GenerateOptions,
            device: &Device,
        ) -> Self {
            ModelPolicy {
                model,
                tokenizer,
                options,
                device: device.clone(),
                calls: Cell::new(0),
            }
        }

        async fn generate_texts(&self, prompts: &[String]) -> Result<Vec<String>, String> {
            let ids = prompts
                .iter()
                .map(|p| self.tokenizer.encode(p, false).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            let mut opts = self.options.clone();
            let call = self.calls.get();
            self.calls.set(call + 1);
            opts.sampling.seed = opts.sampling.seed.wrapping_add(call);
            let out = generate_async(self.model, &ids, &opts, &self.device, |_, _| {})
                .await
                .map_err(|e| e.to_string())?;
            out.iter()
                .map(|t| self.tokenizer.decode(t, true).map_err(|e| e.to_string()))
                .collect()
        }
    }

    impl Policy for ModelPolicy<'_> {
        fn generate<'b>(&'b self, prompts: &'b [String]) -> PolicyFuture<'b> {
            Box::pin(self.generate_texts(prompts))
        }
    }
}
