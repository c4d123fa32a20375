//! The `sluice` binary end to end on the tiny checkpoints of tests/fixtures/models (made by
//! tests/fixtures/make_model_fixtures.py with transformers), headless on lavapipe.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models")
        .join(name)
}

fn sluice(args: &[&str]) -> Output {
    sluice_with_stdin(args, None)
}

fn sluice_with_stdin(args: &[&str], stdin: Option<&str>) -> Output {
    sluice_with_stdin_bytes(args, stdin.map(str::as_bytes))
}

fn sluice_with_stdin_bytes(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        cmd.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    let mut child = cmd.spawn().expect("running the sluice binary");
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input).expect("writing stdin");
    }
    child.wait_with_output().expect("waiting for sluice")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

/// Fails with a clear message on stderr, not a panic.
fn assert_fails_with(o: &Output, needle: &str, what: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "{what}: expected failure, got success\nstdout:\n{}",
        stdout(o)
    );
    assert!(
        err.contains(needle),
        "{what}: stderr lacks {needle:?}:\n{err}"
    );
    assert!(!err.contains("panicked"), "{what}: panicked:\n{err}");
}

/// (shape, values) of an I64 tensor as i64 and of an F32 tensor as f32, by name.
fn read_i64(path: &Path, name: &str) -> (Vec<usize>, Vec<i64>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::I64, "{name}");
    let v = t
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), v)
}

fn read_f32(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), v)
}

fn join_ids(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sluice-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn generate_json_gives_transformers_greedy_ids() {
    let dir = fixture("qwen3_next_tiny");
    let reference = dir.join("reference.safetensors");
    let (_, prompt) = read_i64(&reference, "prompt_ids");
    let (_, greedy) = read_i64(&reference, "greedy_ids");
    let n = 8;
    let o = sluice(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        &join_ids(&prompt),
        "--max-new-tokens",
        &n.to_string(),
        "--json",
    ]);
    assert_ok(&o, "generate --json");
    let out = stdout(&o);
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{out}"));
    let got: Vec<i64> = v["generated_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    assert_eq!(
        got,
        greedy[prompt.len()..prompt.len() + n],
        "greedy ids differ"
    );
    let prompt_back: Vec<i64> = v["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    assert_eq!(prompt_back, prompt);
    assert_eq!(v["new_tokens"], n);
    assert_eq!(v["stop_reason"], "max_new_tokens");
    assert!(v["tokens_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn logits_file_matches_transformers() {
    let dir = fixture("qwen3_next_tiny");
    let reference = dir.join("reference.safetensors");
    let (shape, ids) = read_i64(&reference, "input_ids_a");
    let (want_shape, want) = read_f32(&reference, "logits_a");
    let rows: Vec<String> = ids.chunks(shape[1]).map(join_ids).collect();
    let tmp = temp_dir("logits");
    let out = tmp.join("logits.safetensors");
    let o = sluice(&[
        "logits",
        "--model",
        dir.to_str().unwrap(),
        "--ids",
        &rows.join(";"),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o, "logits");
    let (got_shape, got) = read_f32(&out, "logits");
    assert_eq!(got_shape, want_shape);
    let (_, ids_back) = read_i64(&out, "input_ids");
    assert_eq!(ids_back, ids);
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs() / (1e-3 + 1e-3 * b.abs()))
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1.0,
        "logits differ from transformers: worst ratio {worst}"
    );
    // Only the output file is left in the folder (no temporary file).
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 1);
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn bad_input_gives_clear_errors() {
    let dir = fixture("qwen3_next_tiny");
    let model = dir.to_str().unwrap();
    let tmp = temp_dir("bad");
    let out = tmp.join("x.safetensors");
    let out = out.to_str().unwrap();

    let o = sluice(&[
        "logits",
        "--model",
        model,
        "--ids",
        "1,2,3;4,5",
        "--out",
        out,
    ]);
    assert_fails_with(&o, "row 2 has 2 ids but row 1 has 3", "ragged --ids");
    assert!(!Path::new(out).exists(), "no file on failure");

    let o = sluice(&["logits", "--model", model, "--ids", "1,2;3,x", "--out", out]);
    assert_fails_with(&o, "row 2: id 2 (`x`)", "non-numeric id");

    let o = sluice(&[
        "logits",
        "--model",
        model,
        "--ids",
        "1,2;3,256",
        "--out",
        out,
    ]);
    assert_fails_with(
        &o,
        "token id 256 (row 2, position 2) is outside",
        "id out of vocab",
    );

    let o = sluice(&["generate", "--model", model, "--prompt-ids", "1,,2"]);
    assert_fails_with(&o, "--prompt-ids: id 2 is empty", "empty id");

    let o = sluice(&["generate", "--model", model, "--prompt-ids", "5,1000"]);
    assert_fails_with(&o, "token id 1000 (position 2)", "prompt id out of vocab");

    let no_tok = fixture("qwen3_next_tiny_bf16");
    let o = sluice(&[
        "generate",
        "--model",
        no_tok.to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert_fails_with(
        &o,
        "has no tokenizer.json",
        "text prompt without a tokenizer",
    );

    let o = sluice(&[
        "generate",
        "--model",
        "/nonexistent/model",
        "--prompt-ids",
        "1",
    ]);
    assert_fails_with(
        &o,
        "/nonexistent/model: no such folder",
        "missing model folder",
    );
    // ... also when a text prompt would look for its tokenizer first.
    let o = sluice(&[
        "generate",
        "--model",
        "/nonexistent/model",
        "--prompt",
        "hi",
    ]);
    assert_fails_with(
        &o,
        "/nonexistent/model: no such folder",
        "missing folder, text",
    );

    // Negative numbers reach the value check (not "unexpected argument").
    for (flag, value, needle) in [
        ("--temperature", "-1", "-1 is negative"),
        ("--top-p", "-0.5", "not in [0, 1]"),
        ("--min-p", "-0.1", "not in [0, 1]"),
        ("--repetition-penalty", "-2", "must be > 0"),
        ("--temperature", "nan", "not a finite number"),
    ] {
        let o = sluice(&[
            "generate",
            "--model",
            model,
            "--prompt-ids",
            "1",
            flag,
            value,
        ]);
        assert_fails_with(&o, needle, flag);
    }

    // Past max_position_embeddings: generation goes on, with a warning that says why.
    let short = tmp.join("short-context");
    std::fs::create_dir_all(&short).unwrap();
    for f in ["config.json", "generation_config.json", "model.safetensors"] {
        std::fs::copy(dir.join(f), short.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(short.join("config.json")).unwrap();
    let cfg = cfg.replace(
        "\"max_position_embeddings\": 4096",
        "\"max_position_embeddings\": 4",
    );
    std::fs::write(short.join("config.json"), cfg).unwrap();
    let short = short.to_str().unwrap();
    let args = [
        "generate",
        "--model",
        short,
        "--prompt-ids",
        "1,2,3",
        "--max-new-tokens",
        "3",
    ];
    let o = sluice(&args);
    assert_ok(&o, "generation past max_position_embeddings");
    assert!(
        stderr(&o).contains("pass max_position_embeddings = 4"),
        "{}",
        stderr(&o)
    );

    // A closed stdout is an error (exit ≠ 0), not output silently lost.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "generate",
            "--model",
            model,
            "--prompt",
            "hello",
            "--max-new-tokens",
            "8",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_fails_with(&o, "writing to stdout", "closed stdout");

    // Argument errors are clap's (exit status 2).
    let o = sluice(&["generate", "--model", model]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// The ids of `json["key"]`.
fn json_ids(v: &serde_json::Value, key: &str) -> Vec<u32> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn generate_text_streams_what_json_reports() {
    use sluice::model::chat::{ChatOptions, Message};
    use sluice::model::tokenizer::Tokenizer;

    let dir = fixture("qwen3_next_tiny");
    let model = dir.to_str().unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let base = ["generate", "--model", model, "--max-new-tokens", "10"];

    // Plain text prompt: encoded by the tokenizer; the streamed text equals the JSON text.
    let prompt = "The sluice gate opens at dawn, ünd clöses at dusk.";
    let json_run = sluice(&[&base[..], &["--prompt", prompt, "--json"]].concat());
    assert_ok(&json_run, "generate --prompt --json");
    let v: serde_json::Value = serde_json::from_str(stdout(&json_run).trim()).unwrap();
    assert_eq!(
        json_ids(&v, "prompt_ids"),
        tok.encode(prompt, true).unwrap()
    );
    let generated = json_ids(&v, "generated_ids");
    assert_eq!(generated.len(), 10);
    let text = v["text"].as_str().unwrap();
    assert_eq!(text, tok.decode(&generated, true).unwrap());
    let stream_run = sluice(&[&base[..], &["--prompt", prompt]].concat());
    assert_ok(&stream_run, "generate --prompt");
    assert_eq!(stdout(&stream_run), format!("{text}\n"), "streamed text");

    // --chat: the prompt is the user message through the template, generation prompt added.
    let chat_run = sluice(&[&base[..], &["--prompt", "Hi!", "--chat", "--json"]].concat());
    assert_ok(&chat_run, "generate --chat --json");
    let v: serde_json::Value = serde_json::from_str(stdout(&chat_run).trim()).unwrap();
    let ids = json_ids(&v, "prompt_ids");
    let want = tok
        .encode_chat(&[Message::user("Hi!")], &ChatOptions::generation())
        .unwrap();
    assert_eq!(ids, want);
    assert_eq!(
        tok.decode(&ids, false).unwrap(),
        "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n<think>\n"
    );
}

#[test]
fn chat_keeps_and_resets_the_conversation() {
    let dir = fixture("qwen3_next_tiny");
    let o = sluice_with_stdin_bytes(
        &[
            "chat",
            "--model",
            dir.to_str().unwrap(),
            "--max-new-tokens",
            "5",
            "--system",
            "Be brief.",
        ],
        // A line that is not UTF-8 is skipped; the session goes on.
        Some(b"Hello\n/reset\nHello\n\xff\xfe bad\nAgain\n/exit\nnot read\n"),
    );
    assert_ok(&o, "chat");
    let err = stderr(&o);
    assert!(err.contains("(conversation cleared)"), "{err}");
    assert!(err.contains("not UTF-8 text; it was ignored"), "{err}");
    // "[N prompt tokens, ..." per reply.
    let prompt_tokens: Vec<usize> = err
        .match_indices('[')
        .filter_map(|(i, _)| err[i + 1..].split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(prompt_tokens.len(), 3, "three replies:\n{err}");
    // After /reset the same first turn (greedy): the same prompt and the same reply.
    assert_eq!(prompt_tokens[0], prompt_tokens[1]);
    // The third turn carries the first exchange: a longer prompt.
    assert!(prompt_tokens[2] > prompt_tokens[1] + 5, "{prompt_tokens:?}");
    let out = stdout(&o);
    // stdout: reply 1, newline, reply 2 (== reply 1), newline, reply 3, newline.
    let same_twice = out
        .match_indices('\n')
        .any(|(k, _)| out[k + 1..].starts_with(&out[..=k]));
    assert!(same_twice, "replies 1 and 2 differ:\n{out}");
    assert!(out.ends_with('\n'));
}

#[test]
fn graphics_api_is_pinned_by_the_environment() {
    let dir = fixture("qwen3_next_tiny");
    let run = |api: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args([
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--prompt-ids",
            "1,2,3",
            "--max-new-tokens",
            "3",
            "--json",
        ])
        .env("SLUICE_WGPU_BACKEND", api)
        .stdin(Stdio::null());
        if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
            cmd.env("XDG_RUNTIME_DIR", std::env::temp_dir());
        }
        cmd.output().expect("running the sluice binary")
    };
    // Vulkan (lavapipe here) pinned explicitly gives the same ids as the default choice.
    let pinned = run("vulkan");
    assert_ok(&pinned, "SLUICE_WGPU_BACKEND=vulkan");
    let auto = run("auto");
    assert_ok(&auto, "SLUICE_WGPU_BACKEND=auto");
    let ids = |o: &Output| {
        let v: serde_json::Value = serde_json::from_str(stdout(o).trim()).unwrap();
        v["generated_ids"].clone()
    };
    assert_eq!(ids(&pinned), ids(&auto));
    assert_fails_with(
        &run("cuda"),
        "expected one of auto, vulkan, metal, dx12",
        "bad name",
    );
    if cfg!(target_os = "linux") {
        // No Metal on Linux: a clear error naming the variable, not a panic.
        assert_fails_with(&run("metal"), "SLUICE_WGPU_BACKEND", "metal on linux");
    }
}

#[test]
fn init_writes_a_16_bit_checkpoint_that_generates() {
    let config = fixture("qwen3_5_tiny").join("config.json");
    let out = temp_dir("init");
    let init = |dir: &Path| {
        let o = sluice(&[
            "init",
            "--config",
            config.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
            "--dtype",
            "bf16",
            "--seed",
            "3",
        ]);
        assert_ok(&o, "init");
        std::fs::read(dir.join("model.safetensors")).unwrap()
    };
    let bytes = init(&out);
    let again = temp_dir("init-again");
    assert_eq!(bytes, init(&again), "the same seed writes the same file");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.len() > 10);
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::BF16, "{name}");
    }
    // 16-bit on the device (auto) and widened to f32 give the same greedy tokens.
    let generate = |dtype: &str| {
        let o = sluice(&[
            "generate",
            "--model",
            out.to_str().unwrap(),
            "--prompt-ids",
            "1,2,3,4",
            "--max-new-tokens",
            "5",
            "--dtype",
            dtype,
            "--json",
        ]);
        assert_ok(&o, &format!("generate --dtype {dtype}"));
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        v["generated_ids"].clone()
    };
    assert_eq!(generate("auto"), generate("f32"));
    let o = sluice(&[
        "init",
        "--config",
        "/nonexistent.json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_fails_with(&o, "/nonexistent.json", "init with a missing config");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&again);
}
