//! The tokenizer of a Hugging Face checkpoint: `tokenizer.json` through the `tokenizers` crate,
//! the special tokens and chat template of `tokenizer_config.json`, and the chat template of
//! `chat_template.jinja` (which takes priority, as in transformers).
//!
//! The core API takes the files' contents (bytes or text), so it works the same in a browser;
//! [`Tokenizer::from_dir`] reads a checkpoint folder on native targets.
//!
//! Encoding follows transformers: `tokenizer(text)` is [`Tokenizer::encode`] with
//! `add_special_tokens = true` (for Qwen's byte-level BPE that adds nothing: no BOS), and
//! `apply_chat_template(..., tokenize=True)` is [`Tokenizer::encode_chat`], which encodes the
//! rendered prompt without adding special tokens.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::chat::{ChatError, ChatOptions, ChatTemplate, Message};

/// Errors of loading or using a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// `tokenizer.json` is malformed or not a tokenizer the `tokenizers` crate knows.
    #[error("tokenizer.json: {0}")]
    Parse(String),
    /// `tokenizer_config.json` is malformed.
    #[error("tokenizer_config.json: {0}")]
    Config(String),
    #[error("encoding failed: {0}")]
    Encode(String),
    #[error("decoding failed: {0}")]
    Decode(String),
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[cfg(not(target_family = "wasm"))]
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The special tokens named in `tokenizer_config.json` (absent or `null` ones are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub pad: Option<String>,
    pub unk: Option<String>,
}

impl SpecialTokens {
    /// The template variables transformers passes (`bos_token`, `eos_token`, ...), set ones
    /// only.
    fn template_vars(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("bos_token", &self.bos),
            ("eos_token", &self.eos),
            ("unk_token", &self.unk),
            ("pad_token", &self.pad),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    }
}

/// A tokenizer with its special tokens and chat template(s).
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
    clean_up_tokenization_spaces: bool,
    /// Named chat templates; a single template is named `"default"`.
    templates: Vec<(String, Arc<ChatTemplate>)>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("special", &self.special)
            .field(
                "templates",
                &self.templates.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// A tokenizer from the contents of `tokenizer.json` alone (no special tokens, no chat
    /// template).
    pub fn from_bytes(tokenizer_json: &[u8]) -> Result<Self, TokenizerError> {
        // The tokenizers crate panics on some malformed JSON (inside its decoder section):
        // check the syntax first.
        serde_json::from_slice::<serde_json::Value>(tokenizer_json)
            .map_err(|e| TokenizerError::Parse(format!("not valid JSON: {e}")))?;
        let inner = tokenizers::Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| TokenizerError::Parse(e.to_string()))?;
        Ok(Tokenizer {
            inner,
            special: SpecialTokens::default(),
            clean_up_tokenization_spaces: false,
            templates: Vec::new(),
        })
    }

    /// A tokenizer from the contents of a checkpoint's tokenizer files: `tokenizer.json`,
    /// `tokenizer_config.json` (special tokens, `clean_up_tokenization_spaces`,
    /// `chat_template`) and `chat_template.jinja`, which replaces the config's template.
    pub fn from_parts(
        tokenizer_json: &[u8],
        tokenizer_config_json: Option<&str>,
        chat_template_jinja: Option<&str>,
    ) -> Result<Self, TokenizerError> {
        let mut tok = Self::from_bytes(tokenizer_json)?;
        if let Some(config) = tokenizer_config_json {
            tok = tok.with_config(config)?;
        }
        if let Some(template) = chat_template_jinja {
            tok = tok.with_chat_template(template)?;
        }
        Ok(tok)
    }

    /// Applies `tokenizer_config.json`: special tokens (a string or an `{"content": ...}`
    /// object each), `clean_up_tokenization_spaces`, and `chat_template` (a string, or a list
    /// of `{"name", "template"}`).
    pub fn with_config(mut self, tokenizer_config_json: &str) -> Result<Self, TokenizerError> {
        let bad = |msg: String| TokenizerError::Config(msg);
        let config: Value =
            serde_json::from_str(tokenizer_config_json).map_err(|e| bad(e.to_string()))?;
        let config = config
            .as_object()
            .ok_or_else(|| bad("expected a JSON object".into()))?;
        let token = |key: &str| -> Result<Option<String>, TokenizerError> {
            match config.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    _ => Err(bad(format!("{key} has no string \"content\""))),
                },
                Some(other) => Err(bad(format!(
                    "{key} must be a string or an object, got {other}"
                ))),
            }
        };
        self.special = SpecialTokens {
            bos: token("bos_token")?,
            eos: token("eos_token")?,
            pad: token("pad_token")?,
            unk: token("unk_token")?,
        };
        for (name, token) in [
            ("bos_token", &self.special.bos),
            ("eos_token", &self.special.eos),
            ("pad_token", &self.special.pad),
            ("unk_token", &self.special.unk),
        ] {
            if let Some(t) = token
                && self.inner.token_to_id(t).is_none()
            {
                tracing::warn!("tokenizer_config.json: {name} {t:?} is not in the vocabulary");
            }
        }
        self.clean_up_tokenization_spaces = match config.get("clean_up_tokenization_spaces") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(bad(format!(
                    "clean_up_tokenization_spaces must be a boolean, got {other}"
                )));
            }
        };
        match config.get("chat_template") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                self.templates = vec![("default".into(), compile(s, "chat_template")?)];
            }
            Some(Value::Array(list)) => {
                let mut templates = Vec::new();
                for (i, entry) in list.iter().enumerate() {
                    let (Some(name), Some(template)) = (
                        entry.get("name").and_then(Value::as_str),
                        entry.get("template").and_then(Value::as_str),
                    ) else {
                        return Err(bad(format!(
                            "chat_template[{i}] must be an object with string \"name\" and \
                             \"template\""
                        )));
                    };
                    let what = format!("chat_template {name:?}");
                    templates.push((name.to_string(), compile(template, &what)?));
                }
                self.templates = templates;
            }
            Some(other) => {
                return Err(bad(format!(
                    "chat_template must be a string or a list of named templates, got {other}"
                )));
            }
        }
        Ok(self)
    }

    /// Sets the chat template (the contents of `chat_template.jinja`), replacing any other.
    pub fn with_chat_template(mut self, source: &str) -> Result<Self, TokenizerError> {
        self.templates = vec![("default".into(), compile(source, "chat_template.jinja")?)];
        Ok(self)
    }

    /// Reads `tokenizer.json`, and `tokenizer_config.json` and `chat_template.jinja` where
    /// present, from a checkpoint folder.
    #[cfg(not(target_family = "wasm"))]
    pub fn from_dir(dir: impl AsRef<std::path::Path>) -> Result<Self, TokenizerError> {
        let dir = dir.as_ref();
        let io = |path: std::path::PathBuf| {
            move |source: std::io::Error| TokenizerError::Io { path, source }
        };
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer_json =
            crate::fs::read(&tokenizer_path).map_err(io(tokenizer_path.clone()))?;
        let optional = |name: &str| -> Result<Option<String>, TokenizerError> {
            let path = dir.join(name);
            match crate::fs::read_to_string(&path) {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io(path)(e)),
            }
        };
        let config = optional("tokenizer_config.json")?;
        let template = optional("chat_template.jinja")?;
        let with_path = |path: std::path::PathBuf, e: TokenizerError| match e {
            TokenizerError::Io { .. } => e,
            other => TokenizerError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, other.to_string()),
            },
        };
        let mut tok =
            Self::from_bytes(&tokenizer_json).map_err(|e| with_path(tokenizer_path, e))?;
        if let Some(config) = config {
            tok = tok
                .with_config(&config)
                .map_err(|e| with_path(dir.join("tokenizer_config.json"), e))?;
        }
        if let Some(template) = template {
            tok = tok
                .with_chat_template(&template)
                .map_err(|e| with_path(dir.join("chat_template.jinja"), e))?;
        }
        Ok(tok)
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Token ids of `text`. `add_special_tokens` applies the tokenizer's post-processor (what
    /// transformers' `tokenizer(text)` does by default).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids` (`skip_special_tokens` drops special tokens such as `<|im_end|>`).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        let vocab = self.vocab_size();
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(TokenizerError::Decode(format!(
                "token id {bad} is out of the vocabulary (size {vocab})"
            )));
        }
        let text = self
            .inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::Decode(e.to_string()))?;
        Ok(if self.clean_up_tokenization_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }

    /// The id of a token (added tokens included).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token of an id (added tokens included).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The number of tokens, added tokens included (transformers' `len(tokenizer)`).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The size of the base vocabulary without added tokens (transformers' `vocab_size`).
    pub fn base_vocab_size(&self) -> usize {
        self.inner.get_vocab_size(false)
    }

    /// The special tokens of `tokenizer_config.json`.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// The end-of-sequence token (`eos_token`), if any.
    pub fn eos_token(&self) -> Option<&str> {
        self.special.eos.as_deref()
    }

    /// The id of the end-of-sequence token, if any and in the vocabulary.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token().and_then(|t| self.token_to_id(t))
    }

    /// The padding token (`pad_token`), if any.
    pub fn pad_token(&self) -> Option<&str> {
        self.special.pad.as_deref()
    }

    /// The id of the padding token, if any and in the vocabulary.
    pub fn pad_token_id(&self) -> Option<u32> {
        self.pad_token().and_then(|t| self.token_to_id(t))
    }

    /// The beginning-of-sequence token (`bos_token`), if any.
    pub fn bos_token(&self) -> Option<&str> {
        self.special.bos.as_deref()
    }

    /// The id of the beginning-of-sequence token, if any and in the vocabulary.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token().and_then(|t| self.token_to_id(t))
    }

    /// The names of the chat templates (`["default"]` for a single one).
    pub fn chat_template_names(&self) -> impl Iterator<Item = &str> {
        self.templates.iter().map(|(n, _)| n.as_str())
    }

    /// The chat template transformers would use: the one named `name` if given; otherwise
    /// `"tool_use"` when tools are given and it exists, else `"default"`.
    pub fn chat_template(
        &self,
        name: Option<&str>,
        with_tools: bool,
    ) -> Result<&ChatTemplate, TokenizerError> {
        let find = |n: &str| {
            self.templates
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, t)| t.as_ref())
        };
        let names = || {
            self.templates
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.templates.is_empty() {
            return Err(ChatError::NoTemplate(
                "the tokenizer has no chat template (neither `chat_template` in \
                 tokenizer_config.json nor chat_template.jinja)"
                    .into(),
            )
            .into());
        }
        let template = match name {
            Some(n) => find(n).ok_or_else(|| {
                ChatError::NoTemplate(format!("no chat template named {n:?} (have {})", names()))
            })?,
            None => match (
                with_tools.then(|| find("tool_use")).flatten(),
                find("default"),
            ) {
                (Some(t), _) | (None, Some(t)) => t,
                (None, None) => {
                    return Err(ChatError::NoTemplate(format!(
                        "several chat templates and none named \"default\": pick one of {}",
                        names()
                    ))
                    .into());
                }
            },
        };
        Ok(template)
    }

    /// The prompt text of a conversation, as transformers'
    /// `apply_chat_template(messages, tools=..., add_generation_prompt=..., tokenize=False,
    /// **kwargs)`: the tokenizer's special tokens are template variables (`eos_token`, ...),
    /// overridden by `options.kwargs`.
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        options: &ChatOptions,
    ) -> Result<String, TokenizerError> {
        let template = self.chat_template(None, options.tools.is_some())?;
        let mut kwargs = Map::new();
        for (k, v) in self.special.template_vars() {
            kwargs.insert(k.into(), Value::String(v.into()));
        }
        for (k, v) in &options.kwargs {
            kwargs.insert(k.clone(), v.clone());
        }
        let options = ChatOptions {
            kwargs,
            ..options.clone()
        };
        Ok(template.render(messages, &options)?)
    }

    /// The token ids of a conversation's prompt (`apply_chat_template(..., tokenize=True)`:
    /// the rendered text encoded without adding special tokens).
    pub fn encode_chat(
        &self,
        messages: &[Message],
        options: &ChatOptions,
    ) -> Result<Vec<u32>, TokenizerError> {
        let text = self.apply_chat_template(messages, options)?;
        self.encode(&text, false)
    }
}

fn compile(source: &str, what: &str) -> Result<Arc<ChatTemplate>, TokenizerError> {
    ChatTemplate::new(source)
        .map(Arc::new)
        .map_err(|e| match e {
            ChatError::Syntax(msg) => ChatError::Syntax(format!("{what}: {msg}")).into(),
            other => other.into(),
        })
}

/// transformers' `clean_up_tokenization` (applied on decode when the config asks for it).
fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}
