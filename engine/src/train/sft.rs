//! Supervised fine-tuning data and loss.
//!
//! Records are JSONL lines in TRL's two dataset shapes:
//! * conversational: `{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}`,
//!   rendered through the tokenizer's chat template;
//! * prompt–completion: `{"prompt": "...", "completion": "..."}` (plain text, EOS appended to
//!   the completion) or with message lists for both (conversational prompt–completion).
//!
//! The loss is the mean next-token negative log-likelihood over *assistant* tokens only
//! (TRL's `assistant_only_loss` / `completion_only_loss`):
//! ```text
//! L = −Σ_{b,t} m[b,t] · log π(x[b,t] | x[b,<t]) / Σ m
//! ```
//! Assistant spans of a conversation are found by rendering it turn by turn: for assistant
//! message i, the text of `render(messages[..=i])` after `render(messages[..i])` and after the
//! part it shares with the generation prompt `render(messages[..i], add_generation_prompt)`
//! (the assistant header) is the assistant's, incl. its end-of-turn marker. A template that
//! does not render conversations as growing prefixes is rejected with an error.

use burn::tensor::{Device, Tensor, TensorData};
use serde_json::Value;

use crate::model::HybridModel;
use crate::model::chat::{ChatOptions, Message, messages_from_json};
use crate::model::score::{Loss, score_completions};
use crate::model::tokenizer::Tokenizer;

/// Errors reading or tokenising SFT data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SftError {
    #[error("SFT data line {line}: {msg}")]
    Line { line: usize, msg: String },
    #[error("SFT data: {0}")]
    Data(String),
    #[error("SFT: {0}")]
    Model(String),
}

/// One training record.
#[derive(Debug, Clone, PartialEq)]
pub enum SftRecord {
    /// A whole conversation; the loss covers every assistant turn.
    Messages(Vec<Message>),
    /// Plain-text prompt and completion.
    Text { prompt: String, completion: String },
    /// Conversational prompt (messages) and completion (assistant messages).
    Conversation {
        prompt: Vec<Message>,
        completion: Vec<Message>,
    },
}

/// A tokenised example: `ids` and which of them are loss targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftExample {
    pub ids: Vec<u32>,
    /// `true` where `ids[t]` is an assistant token (a prediction target).
    pub targets: Vec<bool>,
}

impl SftExample {
    /// Number of target tokens.
    pub fn num_targets(&self) -> usize {
        self.targets.iter().filter(|&&t| t).count()
    }
}

/// Parses JSONL text (blank lines skipped); errors name the 1-based line.
pub fn parse_jsonl(text: &str) -> Result<Vec<SftRecord>, SftError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |msg: String| SftError::Line { line: i + 1, msg };
        let v: Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        out.push(parse_record(&v).map_err(bad)?);
    }
    if out.is_empty() {
        return Err(SftError::Data("no records".into()));
    }
    Ok(out)
}

fn parse_record(v: &Value) -> Result<SftRecord, String> {
    let obj = v.as_object().ok_or("expected a JSON object")?;
    if let Some(m) = obj.get("messages") {
        let msgs = messages_from_json(m).map_err(|e| e.to_string())?;
        if msgs.is_empty() {
            return Err("`messages` is empty".into());
        }
        return Ok(SftRecord::Messages(msgs));
    }
    match (obj.get("prompt"), obj.get("completion")) {
        (Some(Value::String(p)), Some(Value::String(c))) => Ok(SftRecord::Text {
            prompt: p.clone(),
            completion: c.clone(),
        }),
        (Some(p @ Value::Array(_)), Some(c @ Value::Array(_))) => Ok(SftRecord::Conversation {
            prompt: messages_from_json(p).map_err(|e| e.to_string())?,
            completion: messages_from_json(c).map_err(|e| e.to_string())?,
        }),
        (Some(_), Some(_)) => {
            Err("`prompt` and `completion` must both be strings or both message lists".into())
        }
        _ => Err("expected `messages`, or `prompt` and `completion`".into()),
    }
}

/// Tokenises a record; sequences longer than `max_len` are truncated at the end.
pub fn tokenize(
    record: &SftRecord,
    tok: &Tokenizer,
    max_len: usize,
) -> Result<SftExample, SftError> {
    let model_err = |e: crate::model::tokenizer::TokenizerError| SftError::Model(e.to_string());
    let mut ex = match record {
        SftRecord::Text { prompt, completion } => {
            let mut ids = tok.encode(prompt, false).map_err(model_err)?;
            let np = ids.len();
            ids.extend(tok.encode(completion, false).map_err(model_err)?);
            ids.extend(tok.eos_token_id());
            let targets = (0..ids.len()).map(|i| i >= np).collect();
            SftExample { ids, targets }
        }
        SftRecord::Messages(msgs) => conversation(msgs, tok)?,
        SftRecord::Conversation { prompt, completion } => {
            if let Some(m) = completion.iter().find(|m| m.role.as_str() != "assistant") {
                return Err(SftError::Data(format!(
                    "a completion may only hold assistant messages, found role `{}`",
                    m.role.as_str()
                )));
            }
            let all: Vec<Message> = prompt.iter().chain(completion).cloned().collect();
            conversation(&all, tok)?
        }
    };
    ex.ids.truncate(max_len);
    ex.targets.truncate(max_len);
    if ex.ids.len() < 2 {
        return Err(SftError::Data(
            "an example needs at least two tokens".into(),
        ));
    }
    Ok(ex)
}

/// Tokens of a rendered conversation with the assistant spans marked.
fn conversation(msgs: &[Message], tok: &Tokenizer) -> Result<SftExample, SftError> {
    let render = |m: &[Message], gen_prompt: bool| {
        tok.apply_chat_template(
            m,
            &ChatOptions::default().with_generation_prompt(gen_prompt),
        )
        .map_err(|e| SftError::Model(e.to_string()))
    };
    let full = render(msgs, false)?;
    let mut spans = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if m.role.as_str() != "assistant" {
            continue;
        }
        let (before, prompt) = if i == 0 {
            (String::new(), String::new())
        } else {
            (render(&msgs[..i], false)?, render(&msgs[..i], true)?)
        };
        let upto = render(&msgs[..=i], false)?;
        if !upto.starts_with(&before) || !full.starts_with(&upto) {
            return Err(SftError::Data(format!(
                "the chat template does not render the conversation as growing prefixes at \
                 message {i}, so assistant tokens cannot be located"
            )));
        }
        // The assistant header is what the generation prompt shares with the rendered turn
        // (a prompt may add more, e.g. an opening `<think>`); the rest is the assistant's.
        let header = prompt
            .bytes()
            .zip(upto.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        let start = header.max(before.len());
        spans.push((start, upto.len()));
    }
    if spans.is_empty() {
        return Err(SftError::Data(
            "the conversation has no assistant message to learn from".into(),
        ));
    }
    let enc = tok
        .inner()
        .encode(full.as_str(), false)
        .map_err(|e| SftError::Model(e.to_string()))?;
    let targets = enc
        .get_offsets()
        .iter()
        .map(|&(start, _)| spans.iter().any(|&(a, b)| start >= a && start < b))
        .collect();
    Ok(SftExample {
        ids: enc.get_ids().to_vec(),
        targets,
    })
}

/// Greedy packing: concatenates examples (in order) into rows of at most `seq_len` tokens.
/// Examples are not masked from each other inside a row (as TRL's packing without
/// padding-free attention); an example longer than `seq_len` gets a row of its own, truncated.
pub fn pack(examples: &[SftExample], seq_len: usize) -> Vec<SftExample> {
    let mut rows: Vec<SftExample> = Vec::new();
    let mut cur = SftExample {
        ids: Vec::new(),
        targets: Vec::new(),
    };
    for ex in examples {
        if !cur.ids.is_empty() && cur.ids.len() + ex.ids.len() > seq_len {
            rows.push(std::mem::replace(
                &mut cur,
                SftExample {
                    ids: Vec::new(),
                    targets: Vec::new(),
                },
            ));
        }
        let take = ex.ids.len().min(seq_len - cur.ids.len());
        cur.ids.extend_from_slice(&ex.ids[..take]);
        cur.targets.extend_from_slice(&ex.targets[..take]);
    }
    if !cur.ids.is_empty() {
        rows.push(cur);
    }
    rows
}

/// Mean NLL over target tokens of a batch (differentiable on an autodiff device: use
/// [`Loss::backward`]) and the number of target tokens. Token 0 of each row is context only.
pub fn sft_loss(
    model: &HybridModel,
    batch: &[SftExample],
    device: &Device,
) -> Result<(Loss, usize), SftError> {
    if batch.is_empty() {
        return Err(SftError::Data("empty batch".into()));
    }
    let prompts: Vec<Vec<u32>> = batch.iter().map(|e| e.ids[..1].to_vec()).collect();
    let rest: Vec<Vec<u32>> = batch.iter().map(|e| e.ids[1..].to_vec()).collect();
    let scores = score_completions(model, &prompts, &rest, 1.0, false, device)
        .map_err(|e| SftError::Model(e.to_string()))?;
    let [b, tc] = scores.logp.dims();
    let mut m = vec![0f32; b * tc];
    let mut n = 0;
    for (r, e) in batch.iter().enumerate() {
        for (j, &t) in e.targets[1..].iter().enumerate() {
            if t {
                m[r * tc + j] = 1.0;
                n += 1;
            }
        }
    }
    if n == 0 {
        return Err(SftError::Data("the batch has no target tokens".into()));
    }
    let mask = Tensor::<2>::from_data(TensorData::new(m, [b, tc]), device);
    let value = (scores.logp * mask).sum().neg().div_scalar(n as f32);
    let deferred = vec![scores.deferred];
    Ok((Loss { value, deferred }, n))
}
