//! Text in and out of the model: the checkpoint's tokenizer and chat template (the engine's
//! [`Tokenizer`]), and incremental decoding for streaming output.

use std::path::Path;

pub use sluice::model::chat::{ChatOptions, Message};
use sluice::model::tokenizer::Tokenizer;

use crate::Result;

/// The tokenizer of a checkpoint folder.
pub struct Text {
    tok: Tokenizer,
}

impl Text {
    /// The tokenizer in `dir`, or `None` when the folder has no `tokenizer.json`. A tokenizer
    /// that is present but broken is an error.
    pub fn open(dir: &Path) -> Result<Option<Self>> {
        super::check_model_dir(dir)?;
        if !dir.join("tokenizer.json").exists() {
            return Ok(None);
        }
        let tok = Tokenizer::from_dir(dir)
            .map_err(|e| format!("loading the tokenizer of {}: {e}", dir.display()))?;
        Ok(Some(Text { tok }))
    }

    /// A streaming detokenizer over this tokenizer.
    pub fn stream(&self) -> sluice::model::detok::StreamDecoder<'_> {
        sluice::model::detok::StreamDecoder::new(&self.tok)
    }

    /// Token ids of `text` (`add_special_tokens` as transformers' `tokenizer(text)`).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        Ok(self.tok.encode(text, add_special_tokens)?)
    }

    /// The text of `ids`; ids the tokenizer does not know (a model vocabulary padded beyond
    /// the tokenizer's) are left out.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let vocab = self.tok.vocab_size();
        let known: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&i| (i as usize) < vocab)
            .collect();
        Ok(self.tok.decode(&known, skip_special_tokens)?)
    }

    /// The conversation rendered through the chat template (transformers'
    /// `apply_chat_template(messages, tokenize=False, ...)`).
    pub fn render_chat(&self, messages: &[Message], opts: &ChatOptions) -> Result<String> {
        Ok(self.tok.apply_chat_template(messages, opts)?)
    }

    /// Checks that the tokenizer has a chat template (before a chat session starts).
    pub fn check_chat_template(&self) -> Result<()> {
        self.tok.chat_template(None, false)?;
        Ok(())
    }
}

/// Template options for generating a reply: the generation prompt, and with `no_thinking`
/// `enable_thinking=False` (Qwen3 templates then open and close an empty `<think>` block).
pub fn generation_options(no_thinking: bool) -> ChatOptions {
    let opts = ChatOptions::generation();
    if no_thinking {
        opts.with_kwarg("enable_thinking", false)
    } else {
        opts
    }
}

/// An assistant reply as a message: reasoning (`<think>…</think>`, with or without the
/// opening tag, which a template may already have put in the prompt) separated from the
/// content, surrounding newlines trimmed as the Qwen templates do.
pub fn assistant_message(reply: &str) -> Message {
    match reply.split_once("</think>") {
        Some((reasoning, content)) => {
            let reasoning = reasoning
                .trim_start()
                .strip_prefix("<think>")
                .unwrap_or(reasoning)
                .trim_matches('\n');
            Message::assistant(content.trim_start_matches('\n').trim_end())
                .with_reasoning(reasoning)
        }
        None => Message::assistant(reply.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_reasoning() {
        let m = assistant_message("<think>\nhmm\n</think>\n\nHello!");
        assert_eq!(m.content, "Hello!");
        assert_eq!(m.reasoning_content.as_deref(), Some("hmm"));
        // The opening tag was in the prompt.
        let m = assistant_message("let me see\n</think>\n\nIt is 4.");
        assert_eq!(m.content, "It is 4.");
        assert_eq!(m.reasoning_content.as_deref(), Some("let me see"));
        let m = assistant_message("Just text\n");
        assert_eq!(m.content, "Just text");
        assert_eq!(m.reasoning_content, None);
    }

    fn fixture_text() -> Text {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/models/qwen3_next_tiny");
        Text::open(&dir)
            .unwrap()
            .expect("the fixture has a tokenizer")
    }

    #[test]
    fn renders_a_conversation() {
        let text = fixture_text();
        text.check_chat_template().unwrap();
        let conversation = [Message::system("sys"), Message::user("hi")];
        let s = text
            .render_chat(&conversation, &generation_options(false))
            .unwrap();
        assert!(s.contains("<|im_start|>user\nhi<|im_end|>"), "{s}");
        assert!(s.ends_with("<|im_start|>assistant\n<think>\n"), "{s}");
        let s = text
            .render_chat(&conversation, &generation_options(true))
            .unwrap();
        assert!(
            s.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"),
            "{s}"
        );
    }
}
