//! The PyTorch CPU baseline of `scripts/bench_torch_delta_rule.py`: read from a file it
//! wrote, or run the script and read its stdout.
//!
//! Accepted input: JSON lines as the script prints them
//! (`{"env": {..}}`, `{"impl": "torch_chunk", "T": 1024, "fwd_ms": .., "fwd_bwd_ms": ..}`,
//! `{"impl": "torch_recurrent", "decode_step_ms": ..}`), or the single object its
//! `--json-out` writes (`{"env": {..}, "results": [..]}`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::Result;

/// Script path relative to the repository root.
pub const SCRIPT: &str = "scripts/bench_torch_delta_rule.py";

/// PyTorch timings for one sequence length (ms, medians).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChunkTiming {
    pub fwd_ms: Option<f64>,
    pub fwd_bwd_ms: Option<f64>,
}

/// Everything read from the baseline.
#[derive(Debug, Clone, Default)]
pub struct TorchResults {
    /// Where the figures came from (file name or command).
    pub source: String,
    /// The script's environment line (torch version, threads, ...), if present.
    pub env: Option<Value>,
    /// `torch_chunk_gated_delta_rule` per T.
    pub chunk: BTreeMap<usize, ChunkTiming>,
    /// `torch_recurrent_gated_delta_rule`, one decode step.
    pub decode_step_ms: Option<f64>,
}

impl TorchResults {
    /// One-line description of the environment, e.g. "torch 2.5.1, 2 threads".
    pub fn env_summary(&self) -> String {
        let Some(env) = &self.env else {
            return String::new();
        };
        let mut parts = Vec::new();
        if let Some(v) = env.get("torch").and_then(Value::as_str) {
            parts.push(format!("torch {v}"));
        }
        if let Some(v) = env.get("transformers").and_then(Value::as_str) {
            parts.push(format!("transformers {v}"));
        }
        if let Some(v) = env.get("threads").and_then(Value::as_u64) {
            parts.push(format!("{v} CPU threads"));
        }
        parts.join(", ")
    }
}

/// Reads a file written by the script (its stdout redirected, or `--json-out`).
pub fn from_file(path: &Path) -> Result<TorchResults> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --torch-json file {}: {e}", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// Runs the script with `$SLUICE_PYTHON` (default `python3`) and parses its stdout. Its
/// stderr goes to ours.
pub fn run_script() -> Result<TorchResults> {
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = find_script()
        .ok_or_else(|| format!("cannot find {SCRIPT} (run sluice from the repository root)"))?;
    let shown = format!("{python} {}", script.display());
    eprintln!("running `{shown}` (PyTorch CPU baseline; this takes a while) ...");
    let out = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start `{shown}`: {e}"))?;
    if !out.status.success() {
        return Err(format!("`{shown}` failed ({})", out.status).into());
    }
    parse(&String::from_utf8_lossy(&out.stdout), &shown)
}

/// The script in the current directory's `scripts/`, else in this source tree's.
fn find_script() -> Option<PathBuf> {
    let here = PathBuf::from(SCRIPT);
    if here.is_file() {
        return Some(here);
    }
    let tree = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(SCRIPT);
    tree.is_file().then_some(tree)
}

/// Parses the script's output (see the module docs).
pub fn parse(text: &str, source: &str) -> Result<TorchResults> {
    let mut res = TorchResults {
        source: source.to_string(),
        ..Default::default()
    };
    let records: Vec<Value> = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(obj)) if obj.contains_key("results") => {
            res.env = obj.get("env").cloned();
            obj.get("results")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        }
        _ => text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect(),
    };
    for r in records {
        if let Some(env) = r.get("env") {
            res.env = Some(env.clone());
            continue;
        }
        match r.get("impl").and_then(Value::as_str) {
            Some("torch_chunk") => {
                let t = r
                    .get("T")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| format!("{source}: torch_chunk record without T: {r}"))?;
                res.chunk.insert(
                    t as usize,
                    ChunkTiming {
                        fwd_ms: r.get("fwd_ms").and_then(Value::as_f64),
                        fwd_bwd_ms: r.get("fwd_bwd_ms").and_then(Value::as_f64),
                    },
                );
            }
            Some("torch_recurrent") => {
                res.decode_step_ms = r.get("decode_step_ms").and_then(Value::as_f64);
            }
            _ => {}
        }
    }
    if res.chunk.is_empty() && res.decode_step_ms.is_none() {
        return Err(format!("{source}: no PyTorch measurements found").into());
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json_lines() {
        let text = r#"{"env": {"torch": "2.5.1", "threads": 2}}
some warning line
{"impl": "torch_chunk", "T": 256, "fwd_ms": 1.5, "fwd_bwd_ms": 4.25, "reps": 7}
{"impl": "torch_chunk", "T": 1024, "fwd_ms": 6.0, "fwd_bwd_ms": 17.0}
{"impl": "torch_recurrent", "T": 1, "decode_step_ms": 0.12}
"#;
        let r = parse(text, "test").unwrap();
        assert_eq!(r.chunk.len(), 2);
        assert_eq!(r.chunk[&256].fwd_ms, Some(1.5));
        assert_eq!(r.chunk[&1024].fwd_bwd_ms, Some(17.0));
        assert_eq!(r.decode_step_ms, Some(0.12));
        assert_eq!(r.env_summary(), "torch 2.5.1, 2 CPU threads");
    }

    #[test]
    fn parses_json_out_file() {
        let text = r#"{"env": {"torch": "2.5.1"}, "results": [
            {"impl": "torch_chunk", "T": 4096, "fwd_ms": 30.0, "fwd_bwd_ms": 90.0},
            {"impl": "torch_recurrent", "decode_step_ms": 0.2}]}"#;
        let r = parse(text, "test").unwrap();
        assert_eq!(r.chunk[&4096].fwd_ms, Some(30.0));
        assert_eq!(r.decode_step_ms, Some(0.2));
    }

    #[test]
    fn rejects_empty() {
        assert!(parse("not json\n", "test").is_err());
    }
}
