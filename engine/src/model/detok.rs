//! Streaming detokenization: token ids in, text out as soon as it is complete — the one
//! detokenizer of the CLI, the desktop app and the web page.
//!
//! The approach of text-generation-inference: decode a short window that starts a little
//! before the unprinted tokens (so the tokenizer's decoder sees the context that decides
//! spacing) and emit what the window adds over its already-printed prefix, only when that
//! is whole characters (no trailing U+FFFD of a split multi-byte character). Each emission
//! moves the window forward, so the work is linear in the output's length. Special tokens
//! are skipped; ids beyond the tokenizer's vocabulary (a model vocabulary padded past the
//! tokenizer's) are left out.

use super::tokenizer::Tokenizer;

/// Turns a stream of token ids into text pieces.
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    ids: Vec<u32>,
    /// Start of the decoded window.
    prefix_offset: usize,
    /// Tokens before this are printed.
    read_offset: usize,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tok: &'a Tokenizer) -> Self {
        Self {
            tok,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }

    fn window(&self, end: usize) -> String {
        let vocab = self.tok.vocab_size();
        let known: Vec<u32> = (self.ids[self.prefix_offset..end].iter().copied())
            .filter(|&i| (i as usize) < vocab)
            .collect();
        self.tok.decode(&known, true).unwrap_or_default()
    }

    /// Adds a token; returns the text it completes (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        self.ids.push(id);
        let prefix = self.window(self.read_offset);
        let full = self.window(self.ids.len());
        if full.len() > prefix.len()
            && !full.ends_with('\u{FFFD}')
            && full.is_char_boundary(prefix.len())
            && full.starts_with(&prefix)
        {
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            full[prefix.len()..].to_string()
        } else {
            String::new()
        }
    }

    /// Whatever is left unprinted (e.g. an incomplete character at the end).
    pub fn finish(&mut self) -> String {
        let prefix = self.window(self.read_offset);
        let full = self.window(self.ids.len());
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        match full.strip_prefix(prefix.as_str()) {
            Some(rest) => rest.to_string(),
            None => String::new(),
        }
    }
}

#[cfg(all(test, not(target_family = "wasm")))]
mod tests {
    use super::*;

    fn fixture() -> Tokenizer {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/models/qwen3_next_tiny");
        Tokenizer::from_dir(&dir).expect("the fixture has a tokenizer")
    }

    #[test]
    fn streaming_equals_full_decode() {
        let tok = fixture();
        let s = "Hello, wörld! Ünïcødé — 你好 <think>x</think> done.";
        let mut ids = tok.encode(s, false).unwrap();
        ids.push(u32::MAX); // beyond the vocabulary: left out
        let mut d = StreamDecoder::new(&tok);
        let mut out = String::new();
        for &id in &ids {
            out += &d.push(id);
        }
        out += &d.finish();
        // (The tiny fixture vocabulary lacks some bytes, so compare with a full decode.)
        assert_eq!(out, tok.decode(&ids[..ids.len() - 1], true).unwrap());
        assert!(out.starts_with("Hello, wörld!"), "{out}");
    }

    #[test]
    fn work_is_linear_in_the_output() {
        let tok = fixture();
        let ids = tok.encode(&"abc def ".repeat(400), false).unwrap();
        let mut d = StreamDecoder::new(&tok);
        let mut widest = 0;
        for &id in &ids {
            d.push(id);
            widest = widest.max(d.ids.len() - d.prefix_offset);
        }
        assert!(widest <= 8, "the window stays short: {widest} tokens");
    }
}
