//! Rendering a chat template with minijinja the way transformers renders it with Jinja2.

use std::fmt;

use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior};
use serde_json::{Map, Value};

use super::pyjson::{python_float_repr, tojson_filter};
use super::{ChatError, Message};

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
