//! Chat messages and Hugging Face chat templates.
//!
//! A chat template is the Jinja program a checkpoint ships (in `tokenizer_config.json`'s
//! `chat_template`, or a `chat_template.jinja` file) that turns a conversation into the prompt
//! text the model was trained on. [`ChatTemplate`] renders it with `minijinja` the way
//! transformers' `apply_chat_template` renders it with Jinja2 (see
//! `transformers/utils/chat_template_utils.py`):
//!
//! * the environment: `trim_blocks=True`, `lstrip_blocks=True`, trailing newline of the
//!   template dropped (Jinja2's default), no auto-escaping, `break`/`continue`, Python string
//!   and dict methods (`startswith`, `split`, `rstrip`, `items`, ...);
//! * `tojson` is Python's `json.dumps(x, ensure_ascii=False)`: `", "` and `": "` separators,
//!   keys in insertion order, non-ASCII kept, Python's float formatting; `indent`,
//!   `separators`, `sort_keys` and `ensure_ascii` keyword arguments as in transformers;
//! * `raise_exception(msg)` stops rendering with [`ChatError::Raised`];
//! * values print as Python prints them (`True`, `None`, `1e-07`, `{'a': 1}`), also through
//!   the `string` filter;
//! * the variables: `messages`, `tools` (`none` when not given), `documents`,
//!   `add_generation_prompt`, the tokenizer's special tokens (`eos_token`, ...) and any extra
//!   keyword arguments such as `enable_thinking`;
//! * each message as transformers passes it: keys whose value would be `None` are absent,
//!   reasoning is given as both `reasoning_content` and `thinking`, tool calls in the OpenAI
//!   shape `{"id", "type": "function", "function": {"name", "arguments"}}`.
//!
//! Messages are typed ([`Message`], [`Role`], [`ToolCall`]) from the caller to the template:
//! no ragged arrays, no maps that invent keys. JSON in the OpenAI message format parses into
//! them with clear errors ([`parse_messages`]).

mod messages;
mod pyjson;
mod template;

pub use messages::{Message, Role, Tool, ToolCall, messages_from_json, parse_messages};
pub use serde_json::{Map, Value};
pub use template::{ChatOptions, ChatTemplate, TEMPLATE_FUEL, TEMPLATE_MAX_OUTPUT};

/// Errors of chat messages and chat templates.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The template does not parse.
    #[error("chat template does not compile: {0}")]
    Syntax(String),
    /// The template failed while rendering (undefined variable, bad operation, ...).
    #[error("chat template failed to render: {0}")]
    Render(String),
    /// The template called `raise_exception(message)`.
    #[error("chat template raised an exception: {message}")]
    Raised { message: String },
    /// A role other than system, user, assistant or tool.
    #[error("unknown chat role {0:?} (expected one of system, user, assistant, tool)")]
    UnknownRole(String),
    /// A message (or the list of messages) given as JSON is malformed.
    #[error("message {index}: {msg}")]
    InvalidMessage { index: usize, msg: String },
    /// Messages given as JSON are not a JSON list of objects.
    #[error("chat messages: {0}")]
    InvalidMessages(String),
    /// A tool call given as JSON is malformed.
    #[error("tool call: {0}")]
    InvalidToolCall(String),
    /// `apply_chat_template` on no message at all.
    #[error("cannot apply a chat template to an empty conversation")]
    EmptyConversation,
    /// No chat template in the tokenizer files, or no template of the requested name.
    #[error("{0}")]
    NoTemplate(String),
    /// Rendering did more work or wrote more text than any real conversation needs (a loop
    /// that does not end, a huge repetition).
    #[error("chat template exceeded its limit: {0}")]
    Limit(String),
}
