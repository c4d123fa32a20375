//! `sluice chat`: an interactive conversation on stdin/stdout.
//!
//! Each line read is one user turn. The conversation is kept as typed messages; every turn
//! renders all of it through the chat template (with the generation prompt) and generates
//! the reply from scratch, streaming it to stdout. (Re-prefilling the whole conversation
//! each turn keeps the prompt exactly what the template produces — templates may rewrite
//! earlier turns, e.g. drop old reasoning — at the cost of a prefill that grows with the
//! conversation.) The reply is stored without its EOS token and with any `<think>` part as
//! the message's reasoning. `/reset` clears the conversation (keeping `--system`), `/exit`
//! or end of input quits. Prompts and statistics go to stderr, replies to stdout.

use std::io::{BufRead, Write};

use sluice::model::generate::GenerateOptions;

use super::generate::generate_one;
use super::text::{Message, Text, assistant_message, generation_options};
use super::{ModelArgs, SamplingArgs, load};
use crate::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,

    /// A system message that starts the conversation.
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,

    /// Render the template with enable_thinking=False (Qwen3 templates then close an empty
    /// <think> block in the prompt, and the model answers without reasoning).
    #[arg(long)]
    no_thinking: bool,

    #[command(flatten)]
    sampling: SamplingArgs,

    /// Do not print the timing line after each reply.
    #[arg(long)]
    quiet: bool,
}

/// What one input line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Input<'a> {
    Exit,
    Reset,
    Empty,
    UnknownCommand(&'a str),
    Say(&'a str),
}

fn classify(line: &str) -> Input<'_> {
    let trimmed = line.trim();
    match trimmed {
        "" => Input::Empty,
        "/exit" | "/quit" => Input::Exit,
        "/reset" => Input::Reset,
        cmd if cmd.starts_with('/') && !cmd.contains(char::is_whitespace) => {
            Input::UnknownCommand(cmd)
        }
        _ => Input::Say(line.trim_end_matches(['\n', '\r'])),
    }
}

fn fresh(system: &Option<String>) -> Vec<Message> {
    system.iter().map(Message::system).collect()
}

pub fn run(args: &Args) -> Result<()> {
    let dir = &args.model.model;
    let text = Text::open(dir)?.ok_or_else(|| {
        format!(
            "chat needs a tokenizer, and {} has no tokenizer.json",
            dir.display()
        )
    })?;
    text.check_chat_template()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let (device, cfg, model) = load(&args.model, true)?;
    let opts = GenerateOptions {
        max_new_tokens: args.sampling.max_new_tokens,
        sampling: args.sampling.sampling(),
        eos_token_ids: cfg.eos_token_ids.clone(),
    };
    if opts.max_new_tokens == 0 {
        return Err("--max-new-tokens must be at least 1".into());
    }
    let mut messages = fresh(&args.system);
    eprintln!("sluice chat: one line per turn; /reset clears the conversation, /exit quits");

    let stdin = std::io::stdin();
    let mut lines = stdin.lock();
    let mut bytes = Vec::new();
    let mut turn = 0u64;
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        bytes.clear();
        if lines.read_until(b'\n', &mut bytes)? == 0 {
            eprintln!();
            break;
        }
        // One undecodable line is skipped; the conversation goes on.
        let Ok(line) = std::str::from_utf8(&bytes) else {
            eprintln!("that line is not UTF-8 text; it was ignored");
            continue;
        };
        let said = match classify(line) {
            Input::Exit => break,
            Input::Empty => continue,
            Input::Reset => {
                messages = fresh(&args.system);
                eprintln!("(conversation cleared)");
                continue;
            }
            Input::UnknownCommand(cmd) => {
                eprintln!("unknown command {cmd}: /reset clears the conversation, /exit quits");
                continue;
            }
            Input::Say(s) => s,
        };
        messages.push(Message::user(said));
        let template_opts = generation_options(args.no_thinking);
        let prompt = text.encode(&text.render_chat(&messages, &template_opts)?, false)?;
        super::warn_past_context(&cfg, prompt.len() + opts.max_new_tokens);
        // A different sampling seed per turn, reproducible from --seed.
        let mut turn_opts = opts.clone();
        turn_opts.sampling.seed = opts.sampling.seed.wrapping_add(turn);
        turn += 1;

        let mut stdout = std::io::stdout().lock();
        let mut decoder = text.stream();
        let mut write_err = None;
        let result = generate_one(&model, &device, &prompt, &turn_opts, |tok| {
            let piece = decoder.push(tok);
            if write_err.is_none()
                && let Err(e) = stdout
                    .write_all(piece.as_bytes())
                    .and_then(|()| stdout.flush())
            {
                write_err = Some(e);
            }
        });
        let (ids, timings) = match result {
            Ok(r) => r,
            Err(e) => {
                // Keep the session: forget the turn that failed.
                messages.pop();
                eprintln!("\nsluice: error: {e}");
                continue;
            }
        };
        if let Some(e) = write_err {
            return Err(format!("writing to stdout: {e}").into());
        }
        writeln!(stdout, "{}", decoder.finish())?;
        stdout.flush()?;
        drop(stdout);

        let content_ids = match ids.last() {
            Some(t) if opts.eos_token_ids.contains(t) => &ids[..ids.len() - 1],
            _ => &ids[..],
        };
        let reply = text.decode(content_ids, true)?;
        messages.push(assistant_message(&reply));
        if !args.quiet {
            let stopped = if content_ids.len() < ids.len() {
                "eos"
            } else {
                "max_new_tokens"
            };
            eprintln!("[{}; stopped: {stopped}]", timings.summary());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_lines() {
        assert_eq!(classify("/exit\n"), Input::Exit);
        assert_eq!(classify("  /reset \r\n"), Input::Reset);
        assert_eq!(classify("\n"), Input::Empty);
        assert_eq!(classify("/help\n"), Input::UnknownCommand("/help"));
        assert_eq!(classify("hello there\n"), Input::Say("hello there"));
        // A path-like message is text, not a command.
        assert_eq!(
            classify("/usr/bin is where\n"),
            Input::Say("/usr/bin is where")
        );
        assert_eq!(fresh(&Some("s".into())).len(), 1);
        assert!(fresh(&None).is_empty());
    }
}
