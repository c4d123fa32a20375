//! Typed chat messages ([`Message`], [`Role`], [`ToolCall`], [`Tool`]) and their JSON forms
//! (the OpenAI message format), as the chat template receives them.

use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::ChatError;

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
    pub(super) fn template_value(&self) -> Value {
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

pub(super) fn json_kind(v: &Value) -> &'static str {
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
