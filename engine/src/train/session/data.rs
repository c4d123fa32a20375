//! A session's training data: SFT examples and RL prompts, from a recipe's files or a built-in
//! task, and which of them each step uses (a pure function of `(seed, step)`).

use std::path::Path;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde_json::Value;

use crate::demo::Task;
use crate::demo::task::Problem;
use crate::model::chat::{ChatOptions, Message};
use crate::model::tokenizer::Tokenizer;
use crate::rl::step::Prompt;
use crate::train::recipe::{RlPhase, SftPhase};
use crate::train::seeds::{Stream, step_seed};
use crate::train::sft::{SftExample, pack, parse_jsonl, tokenize};

/// Problems drawn once from a built-in task for a model with a real tokenizer.
const TASK_POOL: usize = 2048;

/// Reads a data file named by the recipe (already resolved against the recipe's folder).
pub type ReadText<'a> = &'a dyn Fn(&Path) -> Result<String, String>;

/// Where the SFT phase's examples come from.
pub enum SftData {
    Examples(Vec<SftExample>),
    /// A built-in task on the demo vocabulary: fresh problems every step.
    Task(Task),
}

/// Where the RL phase's prompts come from.
pub enum RlData {
    Prompts(Vec<Prompt>),
    /// A built-in task on the demo vocabulary: fresh problems every step.
    Task(Task),
}

/// What turns text into ids: a model's tokenizer, or the demo's character vocabulary.
pub struct Text<'a> {
    pub tokenizer: Option<&'a Tokenizer>,
    pub demo: bool,
}

impl SftData {
    /// The `[sft]` phase's data: a JSONL file of examples (packed when the recipe asks) or a
    /// built-in task: fresh problems every step on the demo vocabulary, or a pool of `pool`
    /// problems drawn once (a real tokenizer: 2,048 by default, each ending in `eos`).
    pub fn load(
        s: &SftPhase,
        text: &Text,
        eos: &[u32],
        seed: u64,
        read: ReadText,
    ) -> Result<Self, String> {
        if let Some(t) = &s.task {
            let task = t.parse::<Task>()?;
            if text.demo {
                let Some(n) = s.pool else {
                    return Ok(SftData::Task(task));
                };
                let mut rng = StdRng::seed_from_u64(step_seed(seed, Stream::TaskPool, 0));
                let pool = (0..n).map(|_| task.train_problem(&mut rng).sft_example());
                return Ok(SftData::Examples(pool.collect()));
            }
            let tok = text
                .tokenizer
                .ok_or("[sft] task = ... needs the model's tokenizer.json")?;
            let eos = *eos
                .first()
                .ok_or("[sft] task = ...: the model names no EOS token")?;
            let mut rng = StdRng::seed_from_u64(step_seed(seed, Stream::TaskPool, 0));
            let n = s.pool.unwrap_or(TASK_POOL);
            let mut examples = Vec::with_capacity(n);
            for _ in 0..n {
                let p = task.train_problem(&mut rng);
                let (_, mut ids) = task_prompt(&task, &p, tok, s.chat)?;
                let np = ids.len();
                ids.extend(tok.encode(&p.answer, false).map_err(|e| e.to_string())?);
                ids.push(eos);
                ids.truncate(s.max_len);
                let targets = (0..ids.len()).map(|i| i >= np).collect();
                examples.push(SftExample { ids, targets });
            }
            return Ok(SftData::Examples(examples));
        }
        let path = s.data.as_ref().ok_or("[sft]: no `data` and no `task`")?;
        let body = read(path)?;
        let tok = text
            .tokenizer
            .ok_or("SFT data needs the model's tokenizer.json")?;
        let records = parse_jsonl(&body).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut examples = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            examples.push(
                tokenize(r, tok, s.max_len)
                    .map_err(|e| format!("{} record {}: {e}", path.display(), i + 1))?,
            );
        }
        if s.packing {
            examples = pack(&examples, s.max_len);
        }
        if examples.is_empty() {
            return Err(format!("{}: no SFT examples", path.display()));
        }
        Ok(SftData::Examples(examples))
    }

    /// Micro-batch `micro` of SFT step `step`. Files: example k of the run is position
    /// k mod n of epoch k / n's shuffle (one shuffle per epoch a batch touches).
    pub fn batch(&self, s: &SftPhase, seed: u64, step: u64, micro: usize) -> Vec<SftExample> {
        match self {
            SftData::Task(t) => {
                let mut rng = StdRng::seed_from_u64(step_seed(
                    seed,
                    Stream::SftProblems,
                    step * 1024 + micro as u64,
                ));
                (0..s.batch_size)
                    .map(|_| t.train_problem(&mut rng).sft_example())
                    .collect()
            }
            SftData::Examples(ex) => {
                let n = ex.len() as u64;
                let first = (step * s.grad_accum as u64 + micro as u64) * s.batch_size as u64;
                let mut order: Option<(u64, Vec<usize>)> = None;
                (first..first + s.batch_size as u64)
                    .map(|k| {
                        let (epoch, pos) = (k / n, k % n);
                        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
                            let mut o: Vec<usize> = (0..ex.len()).collect();
                            o.shuffle(&mut StdRng::seed_from_u64(step_seed(
                                seed,
                                Stream::SftOrder,
                                epoch,
                            )));
                            order = Some((epoch, o));
                        }
                        let (_, o) = order.as_ref().expect("set above");
                        ex[o[pos as usize]].clone()
                    })
                    .collect()
            }
        }
    }
}

impl RlData {
    /// The `[rl]` phase's prompts: a JSONL file (`{"prompt": ..., "answer": ...}` per line,
    /// through the chat template when `chat`) or a built-in task.
    pub fn load(r: &RlPhase, text: &Text, seed: u64, read: ReadText) -> Result<Self, String> {
        if let Some(t) = &r.task {
            let task = t.parse::<Task>()?;
            if text.demo {
                return Ok(RlData::Task(task));
            }
            let tok = text
                .tokenizer
                .ok_or("[rl] task = ... needs the model's tokenizer.json")?;
            let mut rng = StdRng::seed_from_u64(step_seed(seed, Stream::TaskPool, 1));
            let mut prompts = Vec::with_capacity(TASK_POOL);
            for _ in 0..TASK_POOL {
                let p = task.train_problem(&mut rng);
                let (text, ids) = task_prompt(&task, &p, tok, r.chat)?;
                prompts.push(Prompt {
                    text,
                    ids,
                    reference: Some(p.answer),
                });
            }
            return Ok(RlData::Prompts(prompts));
        }
        let path = r
            .prompts
            .as_ref()
            .ok_or("[rl]: no `prompts` and no `task`")?;
        let body = read(path)?;
        let tok = text
            .tokenizer
            .ok_or("RL prompts need the model's tokenizer.json")?;
        let mut prompts = Vec::new();
        for (i, line) in body.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |m: String| format!("{} line {}: {m}", path.display(), i + 1);
            prompts.push(prompt_line(line, tok, r.chat).map_err(bad)?);
        }
        if prompts.is_empty() {
            return Err(format!("{}: no prompts", path.display()));
        }
        Ok(RlData::Prompts(prompts))
    }

    /// `n` prompts for one RL step, drawn with `rng`.
    pub fn draw(&self, n: usize, rng: &mut StdRng) -> Vec<Prompt> {
        match self {
            RlData::Prompts(ps) => (0..n)
                .map(|_| {
                    ps.choose(rng)
                        .expect("loaded prompts are never empty")
                        .clone()
                })
                .collect(),
            RlData::Task(t) => (0..n).map(|_| t.train_problem(rng).rl_prompt()).collect(),
        }
    }
}

/// One line of an RL prompts file.
fn prompt_line(line: &str, tok: &Tokenizer, chat: bool) -> Result<Prompt, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let p = v
        .get("prompt")
        .and_then(Value::as_str)
        .ok_or("expected a string `prompt`")?;
    let answer = v.get("answer").map(|a| match a {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let rendered = if chat {
        tok.apply_chat_template(&[Message::user(p)], &ChatOptions::generation())
            .map_err(|e| e.to_string())?
    } else {
        p.to_string()
    };
    let ids = tok.encode(&rendered, false).map_err(|e| e.to_string())?;
    if ids.is_empty() {
        return Err("the prompt encodes to no tokens".into());
    }
    Ok(Prompt {
        text: rendered,
        ids,
        reference: answer,
    })
}

/// A built-in task problem for a real tokenizer: its instruction, through the chat template
/// when `chat`; returns the rendered text and its ids.
pub(super) fn task_prompt(
    task: &Task,
    p: &Problem,
    tok: &Tokenizer,
    chat: bool,
) -> Result<(String, Vec<u32>), String> {
    let q = task.instruction(p);
    let text = if chat {
        tok.apply_chat_template(&[Message::user(&q)], &ChatOptions::generation())
            .map_err(|e| e.to_string())?
    } else {
        q
    };
    let ids = tok.encode(&text, false).map_err(|e| e.to_string())?;
    Ok((text, ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(pool: Option<usize>) -> SftPhase {
        SftPhase {
            data: None,
            task: Some("sort:3".into()),
            chat: false,
            steps: 4,
            batch_size: 3,
            grad_accum: 1,
            max_len: 64,
            packing: false,
            pool,
            schedule: crate::train::schedule::LrSchedule::Constant { lr: 1e-3 },
        }
    }

    /// The demo's SFT data: fresh problems every step, or batches drawn from a fixed pool.
    #[test]
    fn demo_tasks_draw_fresh_problems_or_from_a_pool() {
        let text = Text {
            tokenizer: None,
            demo: true,
        };
        let no_files = |_: &Path| -> Result<String, String> { Err("no files".into()) };
        let fresh = SftData::load(&phase(None), &text, &[], 7, &no_files).unwrap();
        assert!(matches!(fresh, SftData::Task(_)));
        let s = phase(Some(5));
        let pooled = SftData::load(&s, &text, &[], 7, &no_files).unwrap();
        let SftData::Examples(pool) = &pooled else {
            panic!("a pool of examples")
        };
        assert_eq!(pool.len(), 5);
        for step in 0..4 {
            let batch = pooled.batch(&s, 7, step, 0);
            assert_eq!(batch.len(), 3);
            assert!(batch.iter().all(|e| pool.contains(e)));
        }
        // The same seed draws the same pool.
        let again = SftData::load(&s, &text, &[], 7, &no_files).unwrap();
        let SftData::Examples(again) = again else {
            panic!("a pool")
        };
        assert_eq!(&again, pool);
    }
}
