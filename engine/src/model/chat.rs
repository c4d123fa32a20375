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

use std::fmt;
use std::str::FromStr;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use serde_json::{Map, Value};

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

/// Work one render may do: minijinja fuel (about one unit per instruction and per 64 bytes
/// of data created), so about 10M instructions or 640 MB of strings and lists.
pub const TEMPLATE_FUEL: u64 = 10_000_000;
/// Most bytes one render may output (a 100k-token conversation is well under 1 MB).
pub const TEMPLATE_MAX_OUTPUT: usize = 64 << 20;

/// An output buffer that refuses to grow past [`TEMPLATE_MAX_OUTPUT`].
#[derive(Default)]
struct Limited {
    buf: Vec<u8>,
    exceeded: bool,
}

impl std::io::Write for Limited {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > TEMPLATE_MAX_OUTPUT {
            self.exceeded = true;
            return Err(std::io::Error::other("output limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Who speaks in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call, sent back to the model.
    Tool,
}

impl Role {
    /// The name chat templates compare against (`"system"`, `"user"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ChatError;

    fn from_str(s: &str) -> Result<Self, ChatError> {
        match s {
            "system" => Ok(Role::System),
            "user" => Ok(Role::User),
            "assistant" => Ok(Role::Assistant),
            "tool" => Ok(Role::Tool),
            other => Err(ChatError::UnknownRole(other.to_string())),
        }
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

/// A function call the assistant made.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The call id (OpenAI's `id`), echoed by the tool message's `tool_call_id`.
    pub id: Option<String>,
    /// The function name.
    pub name: String,
    /// The arguments, in the order given (templates print them in this order).
    pub arguments: Map<String, Value>,
}

impl ToolCall {
    /// A call of `name` with `arguments` (an ordered JSON object).
    pub fn new(name: impl Into<String>, arguments: Map<String, Value>) -> Self {
        ToolCall {
            id: None,
            name: name.into(),
            arguments,
        }
    }

    /// Sets the call id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The OpenAI shape `{"id"?, "type": "function", "function": {"name", "arguments"}}`,
    /// which is what chat templates read.
    pub fn to_json(&self) -> Value {
        let mut function = Map::new();
        function.insert("name".into(), Value::String(self.name.clone()));
        function.insert("arguments".into(), Value::Object(self.arguments.clone()));
        let mut call = Map::new();
        if let Some(id) = &self.id {
            call.insert("id".into(), Value::String(id.clone()));
        }
        call.insert("type".into(), Value::String("function".into()));
        call.insert("function".into(), Value::Object(function));
        Value::Object(call)
    }

    /// Reads a tool call in the OpenAI shape (`{"id", "type", "function": {"name",
    /// "arguments"}}`) or the flat shape (`{"name", "arguments"}`). `arguments` is an object,
    /// or a string holding a JSON object (as the OpenAI API sends it).
    pub fn from_json(value: &Value) -> Result<Self, ChatError> {
        let err = |msg: String| ChatError::InvalidToolCall(msg);
        let obj = value
            .as_object()
            .ok_or_else(|| err(format!("expected an object, got {}", json_kind(value))))?;
        let (body, outer) = match obj.get("function") {
            Some(f) => {
                for key in obj.keys() {
                    if !matches!(key.as_str(), "id" | "type" | "function") {
                        return Err(err(format!(
                            "unknown field {key:?} (expected id, type, function)"
                        )));
                    }
                }
                match obj.get("type") {
                    None => {}
                    Some(Value::String(t)) if t == "function" => {}
                    Some(t) => return Err(err(format!("type must be \"function\", got {t}"))),
                }
                let f = f.as_object().ok_or_else(|| {
                    err(format!(
                        "\"function\" must be an object, got {}",
                        json_kind(f)
                    ))
                })?;
                (f, Some(obj))
            }
            None => (obj, None),
        };
        for key in body.keys() {
            let allowed = if outer.is_some() {
                matches!(key.as_str(), "name" | "arguments")
            } else {
                matches!(key.as_str(), "id" | "type" | "name" | "arguments")
            };
            if !allowed {
                return Err(err(format!(
                    "unknown field {key:?} (expected name, arguments)"
                )));
            }
        }
        let id_src = outer.unwrap_or(obj);
        let id = match id_src.get("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => return Err(err(format!("id must be a string, got {}", json_kind(v)))),
        };
        let name = match body.get("name") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => return Err(err(format!("name must be a string, got {}", json_kind(v)))),
            None => return Err(err("missing field \"name\"".into())),
        };
        let arguments = match body.get("arguments") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(m)) => m,
                Ok(v) => {
                    return Err(err(format!(
                        "arguments of {name:?} must encode a JSON object, got {}",
                        json_kind(&v)
                    )));
                }
                Err(e) => {
                    return Err(err(format!(
                        "arguments of {name:?} are not valid JSON: {e}"
                    )));
                }
            },
            Some(v) => {
                return Err(err(format!(
                    "arguments of {name:?} must be an object, got {}",
                    json_kind(v)
                )));
            }
        };
        Ok(ToolCall {
            id,
            name,
            arguments,
        })
    }
}

impl Serialize for ToolCall {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ToolCall {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        ToolCall::from_json(&v).map_err(D::Error::custom)
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// The assistant's reasoning (the `<think>` part), for templates that render it.
    pub reasoning_content: Option<String>,
    /// Function calls made by the assistant.
    pub tool_calls: Vec<ToolCall>,
    /// For a tool message: the id of the call it answers.
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A message of `role` with `content` and nothing else.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
            reasoning_content: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }

    /// A tool's result.
    pub fn tool(content: impl Into<String>) -> Self {
        Self::new(Role::Tool, content)
    }

    /// Sets the reasoning.
    pub fn with_reasoning(mut self, reasoning: impl Into<String>) -> Self {
        self.reasoning_content = Some(reasoning.into());
        self
    }

    /// Appends tool calls.
    pub fn with_tool_calls(mut self, calls: impl IntoIterator<Item = ToolCall>) -> Self {
        self.tool_calls.extend(calls);
        self
    }

    /// Sets the id of the tool call this message answers.
    pub fn with_tool_call_id(mut self, id: impl Into<String>) -> Self {
        self.tool_call_id = Some(id.into());
        self
    }

    /// The message in the OpenAI JSON format (fields that are unset are left out).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("role".into(), Value::String(self.role.as_str().into()));
        m.insert("content".into(), Value::String(self.content.clone()));
        if let Some(r) = &self.reasoning_content {
            m.insert("reasoning_content".into(), Value::String(r.clone()));
        }
        if !self.tool_calls.is_empty() {
            let calls = self.tool_calls.iter().map(ToolCall::to_json).collect();
            m.insert("tool_calls".into(), Value::Array(calls));
        }
        if let Some(id) = &self.tool_call_id {
            m.insert("tool_call_id".into(), Value::String(id.clone()));
        }
        Value::Object(m)
    }

    /// What the template sees for this message: [`Message::to_json`] with the reasoning also
    /// under `thinking`, as transformers passes it (some templates read that name).
    fn template_value(&self) -> Value {
        let Value::Object(fields) = self.to_json() else {
            unreachable!("a message is a JSON object")
        };
        let mut m = Map::new();
        if let Some(r) = &self.reasoning_content {
            m.insert("thinking".into(), Value::String(r.clone()));
        }
        m.extend(fields);
        Value::Object(m)
    }

    /// Reads a message in the OpenAI JSON format: `role` (system, user, assistant, tool),
    /// `content` (a string; `null` or absent is empty), `reasoning_content` (also accepted as
    /// `reasoning` or `thinking`), `tool_calls`, `tool_call_id`. Any other field is an error, so
    /// that nothing the caller wrote is silently left out of the prompt.
    pub fn from_json(value: &Value) -> Result<Self, ChatError> {
        let bad = |msg: String| ChatError::InvalidMessages(msg);
        let obj = value
            .as_object()
            .ok_or_else(|| bad(format!("expected an object, got {}", json_kind(value))))?;
        let mut role = None;
        let mut message = Message::new(Role::User, "");
        for (key, v) in obj {
            let string = |what: &str| -> Result<Option<String>, ChatError> {
                match v {
                    Value::Null => Ok(None),
                    Value::String(s) => Ok(Some(s.clone())),
                    other => Err(bad(format!(
                        "{what} must be a string, got {}",
                        json_kind(other)
                    ))),
                }
            };
            match key.as_str() {
                "role" => {
                    let r = string("role")?.ok_or_else(|| bad("role is null".into()))?;
                    role = Some(r.parse::<Role>()?);
                }
                "content" => message.content = string("content")?.unwrap_or_default(),
                "reasoning_content" | "reasoning" | "thinking" => {
                    if let Some(r) = string(key)? {
                        if message
                            .reasoning_content
                            .as_ref()
                            .is_some_and(|old| *old != r)
                        {
                            return Err(bad(format!(
                                "{key} differs from the reasoning given under another name"
                            )));
                        }
                        message.reasoning_content = Some(r);
                    }
                }
                "tool_calls" => match v {
                    Value::Null => {}
                    Value::Array(calls) => {
                        for call in calls {
                            message.tool_calls.push(ToolCall::from_json(call)?);
                        }
                    }
                    other => {
                        return Err(bad(format!(
                            "tool_calls must be a list, got {}",
                            json_kind(other)
                        )));
                    }
                },
                "tool_call_id" => message.tool_call_id = string("tool_call_id")?,
                other => {
                    return Err(bad(format!(
                        "unknown field {other:?} (expected role, content, reasoning_content, \
                         tool_calls, tool_call_id)"
                    )));
                }
            }
        }
        message.role = role.ok_or_else(|| bad("missing field \"role\"".into()))?;
        Ok(message)
    }
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Message::from_json(&v).map_err(D::Error::custom)
    }
}

/// Reads a JSON list of messages in the OpenAI format (see [`Message::from_json`]); an error
/// names the message at fault.
pub fn parse_messages(json: &str) -> Result<Vec<Message>, ChatError> {
    let value: Value =
        serde_json::from_str(json).map_err(|e| ChatError::InvalidMessages(e.to_string()))?;
    messages_from_json(&value)
}

/// [`parse_messages`] on an already parsed JSON value.
pub fn messages_from_json(value: &Value) -> Result<Vec<Message>, ChatError> {
    let list = value.as_array().ok_or_else(|| {
        ChatError::InvalidMessages(format!("expected a list, got {}", json_kind(value)))
    })?;
    list.iter()
        .enumerate()
        .map(|(index, m)| {
            Message::from_json(m).map_err(|e| ChatError::InvalidMessage {
                index,
                msg: match e {
                    ChatError::InvalidMessages(msg) => msg,
                    other => other.to_string(),
                },
            })
        })
        .collect()
}

/// A function the model may call, described by a JSON schema of its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// JSON schema of the arguments (`{"type": "object", "properties": {...}, ...}`).
    pub parameters: Value,
}

impl Tool {
    /// The shape transformers makes of a Python function (`get_json_schema`):
    /// `{"type": "function", "function": {"name", "description", "parameters"}}`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            }
        })
    }
}

impl From<Tool> for Value {
    fn from(t: Tool) -> Value {
        t.to_json()
    }
}

/// What `apply_chat_template` takes besides the messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatOptions {
    /// End with the header of a new assistant turn (what a model should continue from).
    pub add_generation_prompt: bool,
    /// Tool schemas (JSON, in the order the template should list them), `None` for none:
    /// the template sees `tools` as `none` then, as transformers passes it.
    pub tools: Option<Vec<Value>>,
    /// Documents for retrieval-augmented templates (`None` for none).
    pub documents: Option<Vec<Value>>,
    /// Extra template variables, e.g. `enable_thinking`. They override the tokenizer's special
    /// tokens of the same name, as in transformers.
    pub kwargs: Map<String, Value>,
}

impl ChatOptions {
    /// Options that end the prompt with the assistant header (for generation).
    pub fn generation() -> Self {
        ChatOptions {
            add_generation_prompt: true,
            ..Self::default()
        }
    }

    /// Sets `add_generation_prompt`.
    pub fn with_generation_prompt(mut self, yes: bool) -> Self {
        self.add_generation_prompt = yes;
        self
    }

    /// Sets the tool schemas.
    pub fn with_tools(mut self, tools: impl IntoIterator<Item = impl Into<Value>>) -> Self {
        self.tools = Some(tools.into_iter().map(Into::into).collect());
        self
    }

    /// Sets one extra template variable (e.g. `("enable_thinking", false)`).
    pub fn with_kwarg(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.kwargs.insert(name.into(), value.into());
        self
    }
}

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles the Jinja source of a chat template.
    pub fn new(source: &str) -> Result<Self, ChatError> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(|e| ChatError::Syntax(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson_filter);
        env.add_filter("string", string_filter);
        env.set_formatter(python_formatter);
        env.add_function("raise_exception", raise_exception);
        env.set_fuel(Some(TEMPLATE_FUEL));
        // `{% generation %}...{% endgeneration %}` (transformers' assistant-mask extension)
        // renders its body unchanged; an `if true` block has the same whitespace handling.
        let compiled = replace_generation_tags(source);
        env.add_template_owned(TEMPLATE_NAME, compiled)
            .map_err(|e| ChatError::Syntax(describe(&e, source)))?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
        })
    }

    /// The Jinja source as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` (what `apply_chat_template(..., tokenize=False)` returns). Special
    /// tokens (`eos_token`, ...) are only defined when given in `options.kwargs`;
    /// [`crate::model::tokenizer::Tokenizer::apply_chat_template`] adds the tokenizer's.
    pub fn render(&self, messages: &[Message], options: &ChatOptions) -> Result<String, ChatError> {
        if messages.is_empty() {
            return Err(ChatError::EmptyConversation);
        }
        let mut ctx = Map::new();
        ctx.insert(
            "messages".into(),
            Value::Array(messages.iter().map(Message::template_value).collect()),
        );
        let list = |v: &Option<Vec<Value>>| v.clone().map(Value::Array).unwrap_or(Value::Null);
        ctx.insert("tools".into(), list(&options.tools));
        ctx.insert("documents".into(), list(&options.documents));
        ctx.insert(
            "add_generation_prompt".into(),
            Value::Bool(options.add_generation_prompt),
        );
        for (k, v) in &options.kwargs {
            ctx.insert(k.clone(), v.clone());
        }
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ChatError::Syntax(describe(&e, &self.source)))?;
        let mut out = Limited::default();
        let done = template.render_captured_to(
            minijinja::Value::from(minijinja::value::Serde(&ctx)),
            &mut out,
        );
        match done {
            Ok(_) => String::from_utf8(out.buf)
                .map_err(|e| ChatError::Render(format!("the output is not UTF-8: {e}"))),
            Err(_) if out.exceeded => Err(ChatError::Limit(format!(
                "its output passed {} MiB",
                TEMPLATE_MAX_OUTPUT >> 20
            ))),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(ChatError::Limit(format!(
                "rendering took more than {TEMPLATE_FUEL} steps (a runaway loop or a huge value?)"
            ))),
            Err(e) => Err(render_error(e, &self.source)),
        }
    }
}

/// A float value, which Python prints differently from Rust (`1e-07`, not `0.0000001`).
fn as_float(v: &minijinja::Value) -> Option<f64> {
    (v.kind() == ValueKind::Number && !v.is_integer())
        .then(|| f64::try_from(v.clone()).ok())
        .flatten()
}

/// Prints `{{ x }}` as Jinja2 does: floats with Python's `str`, the rest as minijinja does
/// (which already writes `True`, `False` and `None`).
fn python_formatter(
    out: &mut Output,
    state: &mut State,
    value: &minijinja::Value,
) -> Result<(), Error> {
    match as_float(value) {
        Some(x) => out.write_str(&python_float_repr(x)).map_err(Error::from),
        None => minijinja::escape_formatter(out, state, value),
    }
}

/// Jinja2's `string` filter (Python's `str`) with Python's float formatting.
fn string_filter(state: &State, value: &minijinja::Value) -> Result<minijinja::Value, Error> {
    match as_float(value) {
        Some(x) => Ok(minijinja::Value::from(python_float_repr(x))),
        None => minijinja::filters::string(state, value),
    }
}

/// The message raised by `raise_exception`, carried as the source of the minijinja error.
#[derive(Debug)]
struct Raised(String);

impl fmt::Display for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

fn raise_exception(message: String) -> Result<minijinja::Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, "raise_exception").with_source(Raised(message)))
}

fn render_error(e: Error, source: &str) -> ChatError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(Raised(message)) = c.downcast_ref::<Raised>() {
            return ChatError::Raised {
                message: message.clone(),
            };
        }
        cause = c.source();
    }
    ChatError::Render(describe(&e, source))
}

/// The error with its chain of causes, and the template line it points at.
fn describe(e: &Error, source: &str) -> String {
    let mut out = e.to_string();
    // `{% generation %}` rewriting keeps line numbers, so the line is the source's.
    if let Some(line) = e.line().and_then(|n| source.lines().nth(n.checked_sub(1)?)) {
        let line = line.trim();
        if !line.is_empty() {
            out.push_str(&format!(" at `{line}`"));
        }
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Rewrites `{% generation %}` / `{% endgeneration %}` (keeping their `-`/`+` whitespace
/// markers) as `{% if true %}` / `{% endif %}`.
fn replace_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        // The closing `%}` comes after the opening `{%` (in `{%}` they overlap).
        let Some(end) = tag[2..].find("%}").map(|i| i + 2) else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let body = inner.strip_prefix(['-', '+']).unwrap_or(inner).trim_start();
        let body = body
            .strip_suffix(['-', '+'])
            .unwrap_or(body)
            .trim_end()
            .to_string();
        let replacement = match body.as_str() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => {
                let open = &inner[..inner.len() - inner.trim_start_matches(['-', '+']).len()];
                let close = &inner[inner.trim_end_matches(['-', '+']).len()..];
                out.push_str("{%");
                out.push_str(open);
                out.push(' ');
                out.push_str(r);
                out.push(' ');
                out.push_str(close);
                out.push_str("%}");
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------------------------
// tojson: Python's json.dumps

/// transformers' `tojson` filter: `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`.
fn tojson_filter(value: &minijinja::Value, kwargs: Kwargs) -> Result<minijinja::Value, Error> {
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let indent = match kwargs.get::<Option<minijinja::Value>>("indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => {
            if let Some(s) = v.as_str() {
                Some(s.to_string())
            } else if let Some(n) = v.as_i64() {
                Some(" ".repeat(n.max(0) as usize))
            } else {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: indent must be an integer or a string, got {v}"),
                ));
            }
        }
    };
    let (item_sep, key_sep) = match kwargs.get::<Option<minijinja::Value>>("separators")? {
        Some(v) if !v.is_none() => {
            let parts: Vec<String> = v
                .try_iter()?
                .map(|p| p.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .filter(|p: &Vec<String>| p.len() == 2)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings",
                    )
                })?;
            (parts[0].clone(), parts[1].clone())
        }
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    kwargs.assert_all_used()?;
    let dumper = JsonDumper {
        ensure_ascii,
        sort_keys,
        indent,
        item_sep,
        key_sep,
    };
    let mut out = String::new();
    dumper.dump(value, 0, &mut out)?;
    Ok(minijinja::Value::from(out))
}

struct JsonDumper {
    ensure_ascii: bool,
    sort_keys: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
}

impl JsonDumper {
    fn newline(&self, level: usize, out: &mut String) {
        if let Some(indent) = &self.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(indent);
            }
        }
    }

    fn dump(&self, v: &minijinja::Value, level: usize, out: &mut String) -> Result<(), Error> {
        let unsupported = |what: &str| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: object of type {what} is not JSON serializable"),
            )
        };
        match v.kind() {
            ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => self.number(v, out),
            ValueKind::String => self.string(v.as_str().unwrap_or_default(), out),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<minijinja::Value> = v.try_iter()?.collect();
                if items.is_empty() {
                    out.push_str("[]");
                    return Ok(());
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(level + 1, out);
                    self.dump(item, level + 1, out)?;
                }
                self.newline(level, out);
                out.push(']');
            }
            ValueKind::Map => {
                let mut entries = Vec::new();
                for key in v.try_iter()? {
                    let item = v.get_item(&key)?;
                    entries.push((self.key(&key)?, item));
                }
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                if entries.is_empty() {
                    out.push_str("{}");
                    return Ok(());
                }
                out.push('{');
                for (i, (key, item)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(level + 1, out);
                    self.string(key, out);
                    out.push_str(&self.key_sep);
                    self.dump(item, level + 1, out)?;
                }
                self.newline(level, out);
                out.push('}');
            }
            ValueKind::Undefined => return Err(unsupported("Undefined")),
            ValueKind::Bytes => return Err(unsupported("bytes")),
            _ => return Err(unsupported(&v.kind().to_string())),
        }
        Ok(())
    }

    /// A map key as Python's json turns it into a string.
    fn key(&self, key: &minijinja::Value) -> Result<String, Error> {
        match key.kind() {
            ValueKind::String => Ok(key.as_str().unwrap_or_default().to_string()),
            ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.into()),
            ValueKind::None => Ok("null".into()),
            ValueKind::Number => {
                let mut s = String::new();
                self.number(key, &mut s);
                Ok(s)
            }
            other => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: keys must be str, int, float, bool or None, not {other}"),
            )),
        }
    }

    fn number(&self, v: &minijinja::Value, out: &mut String) {
        if v.is_integer() {
            out.push_str(&v.to_string());
        } else {
            let x = f64::try_from(v.clone()).unwrap_or(f64::NAN);
            out.push_str(&if x.is_nan() {
                "NaN".to_string()
            } else if x.is_infinite() {
                if x > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
            } else {
                python_float_repr(x)
            });
        }
    }

    fn string(&self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{08}' => out.push_str("\\b"),
                '\u{0c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c if self.ensure_ascii && !(' '..='~').contains(&c) => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Python's `str(float)` / `repr(float)`: the shortest digits that round-trip, positional
/// notation for exponents -4..=15 (with a `.0` for integral values), scientific with a signed
/// two-digit exponent otherwise; `nan`, `inf`, `-inf`.
pub(crate) fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').expect("`{:e}` has an exponent");
    let exp: i32 = exp.parse().expect("`{:e}` exponent is an integer");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let body = if exp < 0 {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        } else if exp + 1 >= n {
            format!("{}{}.0", digits, "0".repeat((exp + 1 - n) as usize))
        } else {
            let (int, frac) = digits.split_at((exp + 1) as usize);
            format!("{int}.{frac}")
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let mant = if rest.is_empty() {
            first.to_string()
        } else {
            format!("{first}.{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mant}e{esign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (18.5, "18.5"),
            (0.1, "0.1"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (123456789.125, "123456789.125"),
            (1.2345e20, "1.2345e+20"),
            (-2.5e-300, "-2.5e-300"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (x, want) in cases {
            assert_eq!(python_float_repr(x), want, "{x}");
        }
    }

    #[test]
    fn generation_tags_become_if_blocks() {
        assert_eq!(
            replace_generation_tags("a{%- generation -%}b{% endgeneration %}c{{ x }}{% if y %}"),
            "a{%- if true -%}b{% endif %}c{{ x }}{% if y %}"
        );
    }
}
