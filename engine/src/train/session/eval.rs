//! Held-out evaluation of a session's built-in task: greedy exact match and the sampled
//! pass@1 (temperature 1), on problems the training data never contains.

use burn::module::Module;
use serde::Serialize;

use super::data::task_prompt;
use super::{Session, SessionError};
use crate::demo::Task;
use crate::demo::task::Problem;
use crate::model::generate::{GenerateOptions, Sampling, generate_async, generate_groups_async};
use crate::model::tokenizer::Tokenizer;
use crate::train::recipe::{EvalSpec, Recipe};

/// Held-out accuracies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Eval {
    /// Greedy decoding.
    pub greedy: f64,
    /// pass@1 at temperature 1 (mean over `samples` samples per problem); NaN when the
    /// recipe asks for none.
    pub sampled: f64,
}

/// The evaluation set: held-out problems as prompt ids, and how long answers may be.
pub(super) struct EvalSet {
    spec: EvalSpec,
    problems: Vec<Problem>,
    prompts: Vec<Vec<u32>>,
    max_new_tokens: usize,
    seed: u64,
}

impl EvalSet {
    /// `[eval]`'s problems, rendered as the RL (else SFT) phase renders its prompts.
    pub(super) fn new(
        recipe: &Recipe,
        tokenizer: Option<&Tokenizer>,
        demo: bool,
    ) -> Result<Option<Self>, String> {
        let (Some(spec), Some(task)) = (&recipe.eval, recipe.task()) else {
            return Ok(None);
        };
        let task: Task = task.parse()?;
        let problems = task.heldout(spec.problems, recipe.seed ^ 0x5EED);
        // The phase that names the task renders its prompts (RL's when both do).
        let rl_task = recipe.rl.as_ref().filter(|r| r.task.is_some());
        let chat = match (rl_task, &recipe.sft) {
            (Some(r), _) => r.chat,
            (None, Some(s)) => s.chat,
            _ => false,
        };
        let prompts = if demo {
            problems.iter().map(Problem::prompt_ids).collect()
        } else {
            let tok = tokenizer.ok_or("[eval] on a task needs the model's tokenizer.json")?;
            (problems.iter())
                .map(|p| task_prompt(&task, p, tok, chat).map(|(_, ids)| ids))
                .collect::<Result<_, _>>()?
        };
        let answer = task.max_answer_tokens() + 2;
        let max_new_tokens = match &recipe.rl {
            Some(r) if !demo && r.sampling.max_new_tokens > 0 => r.sampling.max_new_tokens,
            _ if demo => answer,
            _ => 4 * answer,
        };
        Ok(Some(Self {
            spec: spec.clone(),
            problems,
            prompts,
            max_new_tokens,
            seed: recipe.seed ^ 0xE7A1,
        }))
    }
}

impl Session {
    /// The held-out problems (empty without `[eval]`).
    pub fn heldout(&self) -> &[Problem] {
        self.eval.as_ref().map_or(&[], |e| &e.problems)
    }

    /// True when the step just taken should be followed by an evaluation: a phase just
    /// ended, or `[eval] every` divides the phase's step.
    pub fn eval_due(&self) -> bool {
        let Some(e) = &self.eval else { return false };
        let sft = self.recipe.sft.as_ref().map_or(0, |s| s.steps);
        let step = self.state.step;
        let (phase_step, phase_end) = if step <= sft {
            (step, sft)
        } else {
            (step - sft, self.total_steps() - sft)
        };
        phase_step > 0
            && (phase_step == phase_end
                || (e.spec.every > 0 && phase_step.is_multiple_of(e.spec.every)))
    }

    /// Held-out accuracy of the current model: greedy, and pass@1 of its own sampling
    /// (temperature 1, fixed seed). An error without `[eval]`.
    pub async fn evaluate_async(&self) -> Result<Eval, SessionError> {
        let e =
            (self.eval.as_ref()).ok_or_else(|| SessionError::Recipe("no [eval] section".into()))?;
        let model = self.model.valid();
        let device = self.device.clone().inner();
        let mut opts = GenerateOptions {
            max_new_tokens: e.max_new_tokens,
            sampling: Default::default(),
            eos_token_ids: self.eos.clone(),
        };
        let err = |e: crate::model::generate::GenerateError| {
            SessionError::Step(format!("evaluation: {e}"))
        };
        let out = generate_async(&model, &e.prompts, &opts, &device, |_, _| {})
            .await
            .map_err(err)?;
        let n = e.problems.len() as f64;
        let right = |r: usize, ids: &[u32]| self.is_correct(&e.problems[r], ids);
        let greedy = out.iter().enumerate().filter(|(r, o)| right(*r, o)).count() as f64 / n;
        let k = e.spec.samples;
        if k == 0 {
            return Ok(Eval {
                greedy,
                sampled: f64::NAN,
            });
        }
        opts.sampling = Sampling {
            temperature: 1.0,
            seed: e.seed,
            ..Sampling::default()
        };
        let out = generate_groups_async(&model, &e.prompts, k, &opts, &device, |_, _| {})
            .await
            .map_err(err)?;
        let hits = out
            .iter()
            .enumerate()
            .filter(|(r, o)| right(r / k, o))
            .count();
        Ok(Eval {
            greedy,
            sampled: hits as f64 / (n * k as f64),
        })
    }

    /// Exact match: the demo's answer then `<eos>`; a real tokenizer's decoded text, trimmed.
    fn is_correct(&self, p: &Problem, ids: &[u32]) -> bool {
        match (&self.tokenizer, self.demo) {
            (Some(t), false) => t
                .decode(ids, true)
                .is_ok_and(|text| text.trim() == p.answer.trim()),
            _ => p.is_correct(ids),
        }
    }
}
