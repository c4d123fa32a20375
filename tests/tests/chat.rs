//! Tokenizer and chat template against transformers.
//!
//! `fixtures/models/{tokenizer,qwen3_5_tiny}/chat_fixture.json` hold, for conversations with
//! system prompts, tools, tool calls, tool results, reasoning and non-ASCII text, the exact
//! strings transformers' `apply_chat_template(..., tokenize=False, add_generation_prompt=...)`
//! produced (Qwen3-Next's template from `tokenizer_config.json`, Qwen3.5's from
//! `chat_template.jinja`), their token ids, and plain encode/decode cases. The expected strings
//! written out below came from transformers 5.24 / Jinja2 3.1.6 in the same way.

use std::path::PathBuf;

use serde_json::{Value, json};
use sluice::model::chat::{
    ChatError, ChatOptions, ChatTemplate, Map, Message, Role, Tool, ToolCall, messages_from_json,
    parse_messages,
};
use sluice::model::tokenizer::{Tokenizer, TokenizerError};
use sluice_tests::fixtures_dir;

fn model_dir(name: &str) -> PathBuf {
    fixtures_dir().join("models").join(name)
}

fn read_json(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// The tokenizer of a fixture folder, built from the files' contents (the platform-neutral path).
fn tokenizer_from_parts(dir: &str) -> Tokenizer {
    let dir = model_dir(dir);
    let json = std::fs::read(dir.join("tokenizer.json")).unwrap();
    let config = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok();
    let template = std::fs::read_to_string(dir.join("chat_template.jinja")).ok();
    Tokenizer::from_parts(&json, config.as_deref(), template.as_deref()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("a list of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

fn tools_of(case: &Value) -> Option<Vec<Value>> {
    match &case["tools"] {
        Value::Null => None,
        Value::Array(tools) => Some(tools.clone()),
        other => panic!("tools: {other}"),
    }
}

/// Every case of `chat_fixture.json` renders byte-identical to transformers, and its ids match.
fn check_chat_fixture(fixture: &str, tok: &Tokenizer) {
    let fixture = read_json(model_dir(fixture).join("chat_fixture.json"));
    let cases = fixture["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let messages = messages_from_json(&case["messages"]).unwrap();
        for (key, add_generation_prompt) in [
            ("add_generation_prompt_false", false),
            ("add_generation_prompt_true", true),
        ] {
            let options = ChatOptions {
                add_generation_prompt,
                tools: tools_of(case),
                ..ChatOptions::default()
            };
            let want = &case[key];
            let text = tok.apply_chat_template(&messages, &options).unwrap();
            assert_eq!(
                text,
                want["text"].as_str().unwrap(),
                "{name} ({key}): rendered prompt differs"
            );
            let want_ids = ids(&want["input_ids"]);
            assert_eq!(
                tok.encode(&text, true).unwrap(),
                want_ids,
                "{name} ({key}): ids"
            );
            assert_eq!(
                tok.encode_chat(&messages, &options).unwrap(),
                want_ids,
                "{name} ({key}): encode_chat"
            );
            assert_eq!(
                tok.decode(&want_ids, false).unwrap(),
                text,
                "{name}: decode"
            );
        }
    }
}

#[test]
fn qwen3_next_template_from_tokenizer_config_matches_transformers() {
    check_chat_fixture("tokenizer", &tokenizer_from_parts("tokenizer"));
}

#[test]
fn qwen3_5_template_from_chat_template_jinja_matches_transformers() {
    check_chat_fixture("qwen3_5_tiny", &tokenizer_from_parts("qwen3_5_tiny"));
}

#[test]
fn model_dirs_load_tokenizer_and_template() {
    // Qwen3.5 MoE: template only in chat_template.jinja; Qwen3-Next: only in tokenizer_config.json.
    check_chat_fixture(
        "qwen3_5_tiny",
        &Tokenizer::from_dir(model_dir("qwen3_5_moe_tiny")).unwrap(),
    );
    check_chat_fixture(
        "tokenizer",
        &Tokenizer::from_dir(model_dir("qwen3_next_tiny")).unwrap(),
    );
    check_chat_fixture(
        "qwen3_5_tiny",
        &Tokenizer::from_dir(model_dir("qwen3_5_tiny")).unwrap(),
    );
}

#[test]
fn chat_template_jinja_overrides_tokenizer_config() {
    // As in transformers: chat_template.jinja wins over tokenizer_config.json's template.
    let dir = model_dir("tokenizer");
    let json = std::fs::read(dir.join("tokenizer.json")).unwrap();
    let config = std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap();
    let jinja =
        std::fs::read_to_string(model_dir("qwen3_5_tiny").join("chat_template.jinja")).unwrap();
    let tok = Tokenizer::from_parts(&json, Some(&config), Some(&jinja)).unwrap();
    let fixture = read_json(model_dir("qwen3_5_tiny").join("chat_fixture.json"));
    let case = &fixture["cases"][0];
    let messages = messages_from_json(&case["messages"]).unwrap();
    let options = ChatOptions::generation().with_tools(tools_of(case).unwrap());
    assert_eq!(
        tok.apply_chat_template(&messages, &options).unwrap(),
        case["add_generation_prompt_true"]["text"].as_str().unwrap()
    );
}

#[test]
fn encode_and_decode_cases_match_transformers() {
    for dir in ["tokenizer", "qwen3_5_tiny"] {
        let tok = tokenizer_from_parts(dir);
        let fixture = read_json(model_dir(dir).join("chat_fixture.json"));
        let cases = fixture["encode_cases"].as_array().unwrap();
        assert!(!cases.is_empty());
        for case in cases {
            let text = case["text"].as_str().unwrap();
            let want = ids(&case["input_ids"]);
            assert_eq!(
                tok.encode(text, true).unwrap(),
                want,
                "{dir}: encode {text:?}"
            );
            // Qwen's post-processor adds nothing: with or without special tokens is the same.
            assert_eq!(tok.encode(text, false).unwrap(), want, "{dir}: {text:?}");
            assert_eq!(
                tok.decode(&want, false).unwrap(),
                case["decoded"].as_str().unwrap(),
                "{dir}: decode {text:?}"
            );
            assert_eq!(
                tok.decode(&want, true).unwrap(),
                case["decoded_skip_special"].as_str().unwrap(),
                "{dir}: decode (skip special) {text:?}"
            );
            // Round trip.
            assert_eq!(
                tok.decode(&tok.encode(text, true).unwrap(), false).unwrap(),
                text
            );
        }
    }
}

#[test]
fn vocabulary_and_special_tokens() {
    for dir in ["tokenizer", "qwen3_5_tiny"] {
        let tok = tokenizer_from_parts(dir);
        // len(tokenizer) and tokenizer.vocab_size in transformers.
        assert_eq!(tok.vocab_size(), 256, "{dir}");
        assert_eq!(tok.base_vocab_size(), 247, "{dir}");
        assert_eq!(tok.eos_token(), Some("<|im_end|>"));
        assert_eq!(tok.eos_token_id(), Some(249));
        assert_eq!(tok.pad_token(), Some("<|endoftext|>"));
        assert_eq!(tok.pad_token_id(), Some(247));
        assert_eq!(tok.bos_token(), None);
        assert_eq!(tok.bos_token_id(), None);
        assert_eq!(tok.token_to_id("<|im_start|>"), Some(248));
        assert_eq!(tok.token_to_id("<think>"), Some(254));
        assert_eq!(tok.id_to_token(249).as_deref(), Some("<|im_end|>"));
        assert_eq!(tok.token_to_id("<|no such token|>"), None);
        assert_eq!(tok.id_to_token(100_000), None);
        assert_eq!(tok.chat_template_names().collect::<Vec<_>>(), ["default"]);
    }
    // tokenizer.json alone: the same ids, but no special tokens and no template.
    let json = std::fs::read(model_dir("tokenizer").join("tokenizer.json")).unwrap();
    let bare = Tokenizer::from_bytes(&json).unwrap();
    assert_eq!(bare.eos_token_id(), None);
    let fixture = read_json(model_dir("tokenizer").join("chat_fixture.json"));
    let case = &fixture["encode_cases"][0];
    assert_eq!(
        bare.encode(case["text"].as_str().unwrap(), true).unwrap(),
        ids(&case["input_ids"])
    );
    let err = bare
        .apply_chat_template(&[Message::user("hi")], &ChatOptions::generation())
        .unwrap_err();
    assert!(
        matches!(err, TokenizerError::Chat(ChatError::NoTemplate(_))),
        "{err}"
    );
    assert!(err.to_string().contains("no chat template"), "{err}");
}

#[test]
fn typed_messages_render_like_json_messages() {
    let mut args = Map::new();
    args.insert("unit".into(), json!("celsius"));
    args.insert("city".into(), json!("Paris"));
    let typed = vec![
        Message::system("You are Sluice."),
        Message::user("Weather in Paris?"),
        Message::assistant("")
            .with_reasoning("Call the tool.")
            .with_tool_calls([ToolCall::new("get_weather", args).with_id("call_0")]),
        Message::tool(r#"{"temperature": 18}"#).with_tool_call_id("call_0"),
        Message::assistant("18 degrees. Café weather!").with_reasoning("Short answer."),
        Message::user("Thanks!"),
    ];
    let openai_json = json!([
        {"role": "system", "content": "You are Sluice."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "reasoning_content": "Call the tool.",
         "tool_calls": [{"id": "call_0", "type": "function",
                         "function": {"name": "get_weather",
                                      "arguments": {"unit": "celsius", "city": "Paris"}}}]},
        {"role": "tool", "content": "{\"temperature\": 18}", "tool_call_id": "call_0"},
        {"role": "assistant", "content": "18 degrees. Café weather!",
         "reasoning_content": "Short answer."},
        {"role": "user", "content": "Thanks!"}
    ]);
    let parsed = messages_from_json(&openai_json).unwrap();
    assert_eq!(typed, parsed);
    // Messages serialise back to the OpenAI JSON they were read from, key order included.
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        serde_json::to_string(&back).unwrap(),
        serde_json::to_string(&openai_json).unwrap()
    );
    // Typed tools take transformers' `get_json_schema` shape.
    let tool = Tool {
        name: "get_weather".into(),
        description: "Weather in a city.".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    };
    assert_eq!(
        serde_json::to_string(&tool.to_json()).unwrap(),
        r#"{"type":"function","function":{"name":"get_weather","description":"Weather in a city.","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}"#
    );
    for dir in ["tokenizer", "qwen3_5_tiny"] {
        let tok = tokenizer_from_parts(dir);
        let options = ChatOptions::generation().with_tools([tool.clone()]);
        assert_eq!(
            tok.apply_chat_template(&typed, &options).unwrap(),
            tok.apply_chat_template(&parsed, &options).unwrap(),
            "{dir}"
        );
    }
}

/// A template printing what it sees of the messages with Python's `str` and `json.dumps`.
const PROBE_TEMPLATE: &str = r#"{%- for m in messages %}
{{ loop.index0 }} {{ m.role }} {{ m.content.strip() | tojson }} reasoning={{ m.reasoning_content if m.reasoning_content is defined else '-' }} thinking={{ m.thinking | default('-') }} id={{ m.tool_call_id | default('-') }}
{%- for call in m.tool_calls | default([]) %}
{%- set f = call.function %}
  call {{ call.id | default('-') }} {{ call.type }} {{ f.name }}({% for k, v in f.arguments | items %}{{ k }}={{ v | string }}{{ ', ' if not loop.last }}{% endfor %}) {{ f.arguments | tojson }}
{%- for k, v in f.arguments.items() %}
    {{ k }}: {{ v }} {{ v is string }} {{ v is mapping }}
{%- endfor %}
{%- endfor %}
{% endfor %}
{%- if add_generation_prompt %}> thinking={{ enable_thinking }} {{ eos_token }} {{ bos_token is defined }} {{ tools is none }}{% endif %}
"#;

#[test]
fn template_sees_messages_as_transformers_passes_them() {
    // Arguments out of alphabetical order, non-string values, nested objects, the reasoning
    // aliased as `thinking`, absent optional fields undefined, special tokens and kwargs.
    let messages = parse_messages(
        r#"[
            {"role": "system", "content": "  Be brief.\n"},
            {"role": "user", "content": "Plan a trip."},
            {"role": "assistant", "content": "Checking.", "reasoning_content": "Need a plan.",
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "plan",
               "arguments": {"unit": "celsius", "city": "Paris", "days": 3, "detailed": true,
                 "ratio": 0.5, "tiny": 1e-7, "none": null, "extra": {"x": [1, 2], "é": null}}}}]},
            {"role": "tool", "content": "ok", "tool_call_id": "c1"}
        ]"#,
    )
    .unwrap();
    let tok = tokenizer_from_parts("qwen3_5_tiny")
        .with_chat_template(PROBE_TEMPLATE)
        .unwrap();
    let options = ChatOptions::generation().with_kwarg("enable_thinking", false);
    // transformers 5.24: tok.apply_chat_template(messages, tokenize=False,
    // add_generation_prompt=True, enable_thinking=False, chat_template=PROBE_TEMPLATE)
    assert_eq!(
        tok.apply_chat_template(&messages, &options).unwrap(),
        "0 system \"Be brief.\" reasoning=- thinking=- id=-1 user \"Plan a trip.\" reasoning=- \
         thinking=- id=-2 assistant \"Checking.\" reasoning=Need a plan. thinking=Need a plan. \
         id=-  call c1 function plan(unit=celsius, city=Paris, days=3, detailed=True, ratio=0.5, \
         tiny=1e-07, none=None, extra={'x': [1, 2], 'é': None}) {\"unit\": \"celsius\", \
         \"city\": \"Paris\", \"days\": 3, \"detailed\": true, \"ratio\": 0.5, \"tiny\": 1e-07, \
         \"none\": null, \"extra\": {\"x\": [1, 2], \"é\": null}}    unit: celsius True False    \
         city: Paris True False    days: 3 False False    detailed: True False False    \
         ratio: 0.5 False False    tiny: 1e-07 False False    none: None False False    \
         extra: {'x': [1, 2], 'é': None} False True3 tool \"ok\" reasoning=- thinking=- id=c1> \
         thinking=False <|im_end|> False True"
    );
    // The OpenAI API sends arguments as a JSON string: the same call, order kept.
    let as_string = parse_messages(
        r#"[{"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "plan", "arguments": "{\"unit\": \"celsius\", \"city\": \"Paris\"}"}}]}]"#,
    )
    .unwrap();
    let call = &as_string[0].tool_calls[0];
    assert_eq!(call.id.as_deref(), Some("c1"));
    assert_eq!(call.arguments.keys().collect::<Vec<_>>(), ["unit", "city"]);
}

#[test]
fn tojson_is_python_json_dumps() {
    let template = ChatTemplate::new(
        "{{ x | tojson }}|{{ x | tojson(indent=2, sort_keys=true) }}|\
         {{ x | tojson(ensure_ascii=true, separators=(',', ':')) }}|{{ y | tojson }}",
    )
    .unwrap();
    let x = json!({"b": [1, 2.5, true, null, 1e-7, 1e16, -0.0], "a": "é\n\"\\\t\u{1} 😀",
                   "c": {}, "d": []});
    let options = ChatOptions::default()
        .with_kwarg("x", x)
        .with_kwarg("y", "<a&b>");
    let out = template.render(&[Message::user("x")], &options).unwrap();
    assert_eq!(
        out,
        "{\"b\": [1, 2.5, true, null, 1e-07, 1e+16, -0.0], \"a\": \"é\\n\\\"\\\\\\t\\u0001 😀\", \
         \"c\": {}, \"d\": []}|{\n  \"a\": \"é\\n\\\"\\\\\\t\\u0001 😀\",\n  \"b\": [\n    1,\n    \
         2.5,\n    true,\n    null,\n    1e-07,\n    1e+16,\n    -0.0\n  ],\n  \"c\": {},\n  \
         \"d\": []\n}|{\"b\":[1,2.5,true,null,1e-07,1e+16,-0.0],\"a\":\"\\u00e9\\n\\\"\\\\\\t\
         \\u0001 \\ud83d\\ude00\",\"c\":{},\"d\":[]}|\"<a&b>\""
    );
    let err = ChatTemplate::new("{{ nothing | tojson }}")
        .unwrap()
        .render(&[Message::user("x")], &ChatOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("not JSON serializable"), "{err}");
}

#[test]
fn template_variables_and_generation_blocks() {
    // Special tokens are variables (unset ones undefined), tools/documents are none by default.
    let tok = tokenizer_from_parts("qwen3_5_tiny");
    let template = "{{ messages[0].content ~ '|' ~ eos_token ~ '|' ~ (bos_token is defined) ~ '|' \
                    ~ (tools is none) ~ '|' ~ (documents is none) }}";
    let probe = ChatTemplate::new(template).unwrap();
    let mut options = ChatOptions::default();
    options
        .kwargs
        .insert("eos_token".into(), json!("<|im_end|>"));
    assert_eq!(
        probe.render(&[Message::user("a")], &options).unwrap(),
        "a|<|im_end|>|False|True|True"
    );
    assert_eq!(tok.eos_token(), Some("<|im_end|>"));
    // transformers' {% generation %} blocks render their body (used for assistant masks).
    let generation = ChatTemplate::new(
        "{%- for m in messages %}\n  {%- if m.role == 'assistant' %}\n    {% generation %}\n    \
         {{- m.content }}\n    {% endgeneration %}\n  {%- else %}\n{{ m.role }}: {{ m.content }}\n  \
         {%- endif %}\n{%- endfor %}\n{{ eos_token }}\n",
    )
    .unwrap();
    let messages = [Message::user("hi"), Message::assistant("yo")];
    assert_eq!(
        generation.render(&messages, &options).unwrap(),
        "user: hiyo\n<|im_end|>"
    );
}

#[test]
fn bad_messages_give_clear_errors() {
    let err =
        parse_messages(r#"[{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]"#)
            .unwrap_err();
    assert!(
        matches!(err, ChatError::InvalidMessage { index: 1, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("message 1") && msg.contains("\"robot\""),
        "{msg}"
    );
    assert!(msg.contains("system, user, assistant, tool"), "{msg}");

    assert!(matches!("robot".parse::<Role>(), Err(ChatError::UnknownRole(r)) if r == "robot"));

    let err = parse_messages(r#"[{"role": "user", "contents": "typo"}]"#).unwrap_err();
    assert!(
        err.to_string().contains("unknown field \"contents\""),
        "{err}"
    );

    let err = parse_messages(r#"[{"content": "no role"}]"#).unwrap_err();
    assert!(err.to_string().contains("missing field \"role\""), "{err}");

    let err = parse_messages(r#"[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]"#)
        .unwrap_err();
    assert!(
        err.to_string().contains("content must be a string"),
        "{err}"
    );

    let err = parse_messages(r#"{"role": "user"}"#).unwrap_err();
    assert!(err.to_string().contains("expected a list"), "{err}");

    let err = parse_messages("[").unwrap_err();
    assert!(matches!(err, ChatError::InvalidMessages(_)), "{err:?}");

    let err = parse_messages(
        r#"[{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "not json"}}]}]"#,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("arguments of \"f\" are not valid JSON"),
        "{err}"
    );

    let err = parse_messages(
        r#"[{"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": {}}}]}]"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing field \"name\""), "{err}");

    // Serde's Deserialize goes through the same checks.
    let err = serde_json::from_str::<Message>(r#"{"role": "wizard", "content": ""}"#).unwrap_err();
    assert!(
        err.to_string().contains("unknown chat role \"wizard\""),
        "{err}"
    );

    let tok = tokenizer_from_parts("qwen3_5_tiny");
    let err = tok
        .apply_chat_template(&[], &ChatOptions::generation())
        .unwrap_err();
    assert!(
        matches!(err, TokenizerError::Chat(ChatError::EmptyConversation)),
        "{err}"
    );
}

#[test]
fn template_errors_are_clear() {
    // raise_exception stops rendering with the template's message.
    let template = ChatTemplate::new(
        "{%- if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}ok",
    )
    .unwrap();
    let err = template
        .render(&[Message::system("s")], &ChatOptions::default())
        .unwrap_err();
    match &err {
        ChatError::Raised { message } => assert_eq!(message, "first message must be from the user"),
        other => panic!("expected a raised exception, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "chat template raised an exception: first message must be from the user"
    );
    assert_eq!(
        template
            .render(&[Message::user("u")], &ChatOptions::default())
            .unwrap(),
        "ok"
    );
    // The fixture templates raise on a conversation without a user query, as in transformers.
    for dir in ["tokenizer", "qwen3_5_tiny"] {
        let tok = tokenizer_from_parts(dir);
        let result = tok.apply_chat_template(
            &[Message::user("hi"), Message::system("late")],
            &ChatOptions::generation(),
        );
        match result {
            Err(TokenizerError::Chat(ChatError::Raised { message })) => {
                assert!(message.contains("system message"), "{dir}: {message}")
            }
            other => panic!("{dir}: expected a raised exception, got {other:?}"),
        }
    }

    // Syntax errors name the problem and the line.
    let err =
        ChatTemplate::new("line one\n{% if messages %}\n{{ messages[0].content }\n").unwrap_err();
    assert!(matches!(err, ChatError::Syntax(_)), "{err:?}");
    assert!(err.to_string().contains("chat_template:3"), "{err}");

    // Rendering errors too.
    let err = ChatTemplate::new("{{ messages[0].content }}\n{{ no_such.attribute }}")
        .unwrap()
        .render(&[Message::user("x")], &ChatOptions::default())
        .unwrap_err();
    assert!(matches!(err, ChatError::Render(_)), "{err:?}");
    assert!(err.to_string().contains("undefined"), "{err}");
    assert!(err.to_string().contains("chat_template:2"), "{err}");
}

#[test]
fn bad_tokenizer_files_give_clear_errors() {
    let err = Tokenizer::from_bytes(b"{ not json").unwrap_err();
    assert!(matches!(err, TokenizerError::Parse(_)), "{err:?}");
    assert!(err.to_string().starts_with("tokenizer.json:"), "{err}");

    let err = Tokenizer::from_bytes(br#"{"version": "1.0", "model": {"type": "NoSuchModel"}}"#)
        .unwrap_err();
    assert!(matches!(err, TokenizerError::Parse(_)), "{err:?}");

    let json = std::fs::read(model_dir("tokenizer").join("tokenizer.json")).unwrap();
    let err = Tokenizer::from_parts(&json, Some("[1, 2]"), None).unwrap_err();
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
    let err = Tokenizer::from_parts(&json, Some(r#"{"chat_template": 3}"#), None).unwrap_err();
    assert!(err.to_string().contains("chat_template must be"), "{err}");
    let err = Tokenizer::from_parts(&json, None, Some("{% for %}")).unwrap_err();
    assert!(
        matches!(err, TokenizerError::Chat(ChatError::Syntax(_))),
        "{err:?}"
    );
    assert!(err.to_string().contains("chat_template.jinja"), "{err}");

    let tok = Tokenizer::from_bytes(&json).unwrap();
    let err = tok.decode(&[1, 2, 99_999], false).unwrap_err();
    assert!(err.to_string().contains("99999"), "{err}");

    let missing = model_dir("no_such_model");
    let err = Tokenizer::from_dir(&missing).unwrap_err();
    assert!(err.to_string().contains("no_such_model"), "{err}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn named_templates_follow_transformers_selection() {
    let json = std::fs::read(model_dir("tokenizer").join("tokenizer.json")).unwrap();
    let config = r#"{"eos_token": {"content": "<|im_end|>", "special": true},
        "chat_template": [{"name": "default", "template": "plain:{{ messages[0].content }}"},
                          {"name": "tool_use", "template": "tools:{{ tools | length }}"}]}"#;
    let tok = Tokenizer::from_parts(&json, Some(config), None).unwrap();
    assert_eq!(tok.eos_token(), Some("<|im_end|>"));
    let messages = [Message::user("hi")];
    assert_eq!(
        tok.apply_chat_template(&messages, &ChatOptions::default())
            .unwrap(),
        "plain:hi"
    );
    let with_tools = ChatOptions::default().with_tools([json!({"type": "function"})]);
    assert_eq!(
        tok.apply_chat_template(&messages, &with_tools).unwrap(),
        "tools:1"
    );
    let err = tok.chat_template(Some("nope"), false).unwrap_err();
    assert!(err.to_string().contains("default, tool_use"), "{err}");
}

/// Templates from the internet cannot hang or exhaust memory: endless work and huge output
/// stop with [`ChatError::Limit`]; deep recursion with minijinja's recursion error.
#[test]
fn runaway_templates_hit_named_limits() {
    let render = |src: &str| {
        let t = std::time::Instant::now();
        let r = ChatTemplate::new(src)
            .unwrap()
            .render(&[Message::user("x")], &ChatOptions::default());
        assert!(t.elapsed().as_secs() < 60, "{src} took {:?}", t.elapsed());
        r
    };
    for src in [
        // ~10^10 loop steps
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        // 100 MB of output
        "{% for i in range(100) %}{{ 'x' * 1000000 }}{% endfor %}",
        // a 100M-item join (the repetition itself is lazy)
        "{{ ([1] * 100000000) | join }}",
    ] {
        match render(src) {
            Err(ChatError::Limit(msg)) => assert!(!msg.is_empty()),
            other => panic!("{src}: expected a limit error, got {other:?}"),
        }
    }
    let err = render("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").unwrap_err();
    assert!(err.to_string().contains("recursion"), "{err}");
    // Real templates stay far below the limits.
    let long: Vec<Message> = (0..2000)
        .map(|i| Message::user(format!("turn {i}")))
        .collect();
    let tok = tokenizer_from_parts("qwen3_5_tiny");
    let opts = ChatOptions::default();
    assert!(tok.apply_chat_template(&long, &opts).is_ok());
}
