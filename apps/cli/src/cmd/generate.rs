//! `sluice generate`: one continuation of a prompt (text or token ids), streamed to stdout.
//!
//! Text goes through the checkpoint's tokenizer (`tokenizer.json`); `--chat` first wraps
//! the prompt as one user message through the chat template with the generation prompt.
//! Without a tokenizer, `--prompt-ids` still works and the output is token ids. Generation
//! stops at an EOS id of `generation_config.json` or after `--max-new-tokens`.

use std::io::Write;
use std::time::Instant;

use serde_json::json;
use sluice::model::generate::{GenerateOptions, generate};

use super::text::{Message, Text, generation_options};
use super::{ModelArgs, SamplingArgs, check_vocab, load, parse_ids};
use crate::Result;

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["prompt", "prompt_ids"]))]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,

    /// The prompt text (needs tokenizer.json in the model folder).
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,

    /// The prompt as comma-separated token ids, e.g. "1,2,3".
    #[arg(long, value_name = "IDS")]
    prompt_ids: Option<String>,

    /// Wrap --prompt as a user message through the model's chat template (with the
    /// assistant generation prompt).
    #[arg(long, conflicts_with = "prompt_ids")]
    chat: bool,

    /// With --chat: render the template with enable_thinking=False (Qwen3 templates then
    /// close an empty <think> block in the prompt).
    #[arg(long, requires = "chat")]
    no_thinking: bool,

    #[command(flatten)]
    sampling: SamplingArgs,

    /// Print one JSON object (prompt ids, generated ids, text, timings) instead of streaming
    /// text.
    #[arg(long)]
    json: bool,
}

/// Wall-clock figures of one generation.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Until the first new token (prefill, its readback and the first sample).
    pub prefill_s: f64,
    /// Everything.
    pub total_s: f64,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
}

impl Timings {
    pub fn prefill_tokens_per_s(&self) -> Option<f64> {
        (self.prefill_s > 0.0).then(|| self.prompt_tokens as f64 / self.prefill_s)
    }

    /// Tokens after the first one over the time after the first one.
    pub fn decode_tokens_per_s(&self) -> Option<f64> {
        let t = self.total_s - self.prefill_s;
        (self.new_tokens > 1 && t > 0.0).then(|| (self.new_tokens - 1) as f64 / t)
    }

    /// New tokens over the whole generation.
    pub fn tokens_per_s(&self) -> Option<f64> {
        (self.total_s > 0.0).then(|| self.new_tokens as f64 / self.total_s)
    }

    pub fn summary(&self) -> String {
        let f = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.1}"));
        format!(
            "{} prompt tokens, {} new; prefill {:.3} s ({} tok/s), decode {} tok/s, overall {} tok/s",
            self.prompt_tokens,
            self.new_tokens,
            self.prefill_s,
            f(self.prefill_tokens_per_s()),
            f(self.decode_tokens_per_s()),
            f(self.tokens_per_s()),
        )
    }
}

/// Runs `generate` for one prompt, calling `on_token` with each new token, and times it.
pub fn generate_one(
    model: &sluice::model::HybridModel,
    device: &burn::tensor::Device,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(u32),
) -> Result<(Vec<u32>, Timings)> {
    let t0 = Instant::now();
    let mut first: Option<f64> = None;
    let out = generate(model, &[prompt.to_vec()], opts, device, |_, tok| {
        first.get_or_insert_with(|| t0.elapsed().as_secs_f64());
        on_token(tok);
    })?;
    let total_s = t0.elapsed().as_secs_f64();
    let ids = out.into_iter().next().unwrap_or_default();
    let timings = Timings {
        prefill_s: first.unwrap_or(total_s),
        total_s,
        prompt_tokens: prompt.len(),
        new_tokens: ids.len(),
    };
    Ok((ids, timings))
}

pub fn run(args: &Args) -> Result<()> {
    let dir = &args.model.model;
    let text = Text::open(dir)?;
    let prompt: Vec<u32> = match (&args.prompt, &args.prompt_ids) {
        (_, Some(ids)) => parse_ids(ids).map_err(|e| format!("--prompt-ids: {e}"))?,
        (Some(p), None) => {
            let text = text.as_ref().ok_or_else(|| {
                format!(
                    "--prompt needs a tokenizer, and {} has no tokenizer.json; pass token ids \
                     with --prompt-ids instead",
                    dir.display()
                )
            })?;
            if args.chat {
                let opts = generation_options(args.no_thinking);
                let rendered = text.render_chat(&[Message::user(p)], &opts)?;
                text.encode(&rendered, false)?
            } else {
                text.encode(p, true)?
            }
        }
        (None, None) => unreachable!("clap requires --prompt or --prompt-ids"),
    };
    if prompt.is_empty() {
        return Err("the prompt is empty (it encodes to no tokens)".into());
    }

    let (device, cfg, model) = load(&args.model, !args.json)?;
    check_vocab(std::slice::from_ref(&prompt), model.vocab_size())
        .map_err(|e| format!("the prompt: {e}"))?;
    let opts = GenerateOptions {
        max_new_tokens: args.sampling.max_new_tokens,
        sampling: args.sampling.sampling(),
        eos_token_ids: cfg.eos_token_ids.clone(),
    };
    if opts.max_new_tokens == 0 {
        return Err("--max-new-tokens must be at least 1".into());
    }
    super::warn_past_context(&cfg, prompt.len() + opts.max_new_tokens);

    let stream = !args.json;
    let mut stdout = std::io::stdout().lock();
    let mut decoder = text.as_ref().map(Text::stream);
    let mut write_err: Option<std::io::Error> = None;
    let mut count = 0usize;
    let (ids, timings) = generate_one(&model, &device, &prompt, &opts, |tok| {
        if !stream || write_err.is_some() {
            return;
        }
        let piece = match decoder.as_mut() {
            Some(d) => d.push(tok),
            None => format!("{}{tok}", if count == 0 { "" } else { " " }),
        };
        count += 1;
        if let Err(e) = stdout
            .write_all(piece.as_bytes())
            .and_then(|()| stdout.flush())
        {
            write_err = Some(e);
        }
    })?;
    if let Some(e) = write_err {
        return Err(format!("writing to stdout: {e}").into());
    }
    let stopped = if ids.last().is_some_and(|t| opts.eos_token_ids.contains(t)) {
        "eos"
    } else {
        "max_new_tokens"
    };

    if args.json {
        let decoded = match &text {
            Some(t) => Some(t.decode(&ids, true)?),
            None => None,
        };
        let r = |x: Option<f64>| x.map(|x| crate::bench::round(x, 3));
        let obj = json!({
            "prompt_ids": prompt,
            "generated_ids": ids,
            "text": decoded,
            "stop_reason": stopped,
            "prompt_tokens": timings.prompt_tokens,
            "new_tokens": timings.new_tokens,
            "prefill_s": crate::bench::round(timings.prefill_s, 4),
            "total_s": crate::bench::round(timings.total_s, 4),
            "prefill_tokens_per_s": r(timings.prefill_tokens_per_s()),
            "decode_tokens_per_s": r(timings.decode_tokens_per_s()),
            "tokens_per_s": r(timings.tokens_per_s()),
        });
        writeln!(stdout, "{obj}")?;
    } else {
        if let Some(rest) = decoder.as_mut().map(|d| d.finish()) {
            write!(stdout, "{rest}")?;
        }
        writeln!(stdout)?;
        stdout.flush()?;
        eprintln!("sluice: {} (stopped: {stopped})", timings.summary());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> std::result::Result<Args, clap::Error> {
        let mut v = vec!["sluice-generate"];
        v.extend_from_slice(argv);
        Cli::try_parse_from(v).map(|c| c.args)
    }

    #[test]
    fn arguments() {
        let a = parse(&["--model", "m", "--prompt-ids", "1,2", "--json"]).unwrap();
        assert_eq!(a.prompt_ids.as_deref(), Some("1,2"));
        assert!(a.json && !a.chat);
        assert_eq!(a.sampling.temperature, 0.0);
        assert_eq!(a.sampling.max_new_tokens, 128);
        // Exactly one of --prompt / --prompt-ids.
        assert!(parse(&["--model", "m"]).is_err());
        assert!(parse(&["--model", "m", "--prompt", "hi", "--prompt-ids", "1"]).is_err());
        // --chat needs a text prompt.
        assert!(parse(&["--model", "m", "--prompt-ids", "1", "--chat"]).is_err());
        assert!(parse(&["--model", "m", "--prompt", "x", "--no-thinking"]).is_err());
        let a = parse(&["--model", "m", "--prompt", "x", "--chat", "--no-thinking"]).unwrap();
        assert!(a.chat && a.no_thinking);
        let a = parse(&[
            "--model",
            "m",
            "--prompt",
            "hi",
            "--chat",
            "--temperature",
            "0.7",
            "--top-k",
            "20",
            "--top-p",
            "0.9",
            "--min-p",
            "0.05",
            "--repetition-penalty",
            "1.1",
            "--seed",
            "3",
        ])
        .unwrap();
        let s = a.sampling.sampling();
        assert_eq!(
            (s.temperature, s.top_k, s.top_p, s.min_p),
            (0.7, 20, 0.9, 0.05)
        );
        assert_eq!((s.repetition_penalty, s.seed), (1.1, 3));
        assert!(parse(&["--model", "m", "--prompt", "x", "--top-p", "0"]).is_err());
        assert!(parse(&["--model", "m", "--prompt", "x", "--temperature", "-1"]).is_err());
    }

    #[test]
    fn timings() {
        let t = Timings {
            prefill_s: 0.5,
            total_s: 1.5,
            prompt_tokens: 10,
            new_tokens: 11,
        };
        assert_eq!(t.prefill_tokens_per_s(), Some(20.0));
        assert_eq!(t.decode_tokens_per_s(), Some(10.0));
        let one = Timings { new_tokens: 1, ..t };
        assert_eq!(one.decode_tokens_per_s(), None);
    }
}
