//! `sluice demo` and `sluice train` end to end (tiny sizes, headless on lavapipe): the demo's
//! JSON summary and files, and a recipe run split by `--stop-after` + `--resume` ending
//! bit-identical to the uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn sluice(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        cmd.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    cmd.output().expect("running the sluice binary")
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sluice-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn demo_reports_json_and_writes_its_files() {
    let dir = temp_dir("demo");
    let cfg = dir.join("demo.toml");
    std::fs::write(
        &cfg,
        "hidden = 16\neval_size = 16\nsft_steps = 3\nsft_batch = 8\nrl_steps = 2\n\
         [rl]\npreset = \"dapo\"\ngroup_size = 4\nprompts_per_step = 2\n",
    )
    .unwrap();
    let out = dir.join("run");
    let o = sluice(&[
        "demo",
        "--quiet",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o, "sluice demo");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let last = stdout.lines().last().expect("a summary line");
    let v: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    for k in ["base_accuracy", "sft_accuracy", "rl_accuracy", "seconds"] {
        let x = v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
        assert!((0.0..=1.0).contains(&x) || k == "seconds", "{k} = {x}");
    }
    assert_eq!(v["task"], "sort:5");
    // 1 base eval + 3 SFT + 2 RL records.
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 6, "{metrics}");
    assert!(metrics.lines().last().unwrap().contains("\"phase\":\"rl\""));
    let png = std::fs::read(out.join("training.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    // The saved model loads in `sluice generate` with its tokenizer.
    let model = out.join("model");
    let o = sluice(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "31415=",
        "--max-new-tokens",
        "3",
    ]);
    assert_ok(&o, "generate with the demo model");
    let _ = std::fs::remove_dir_all(&dir);
}

fn recipe(dir: &Path) -> PathBuf {
    let p = dir.join("recipe.toml");
    std::fs::write(
        &p,
        r#"
seed = 5
out = "run"
save_every = 100
[model]
demo_hidden = 16
[optim]
weight_decay = 0.01
[sft]
task = "sort:4"
steps = 2
batch_size = 4
grad_accum = 2
schedule = { kind = "warmup_cosine", peak_lr = 1e-2, min_lr = 1e-3, warmup_steps = 1, total_steps = 2 }
[rl]
task = "sort:4"
steps = 2
schedule = { kind = "constant", lr = 1e-3 }
rewards = [{ kind = "exact_match" }, { kind = "length", weight = 0.1, max_len = 6, cache = 2 }]
[rl.sampling]
preset = "grpo"
group_size = 3
prompts_per_step = 2
max_new_tokens = 6
num_iterations = 2
"#,
    )
    .unwrap();
    p
}

#[test]
fn resumed_training_equals_the_uninterrupted_run() {
    let whole = temp_dir("train-whole");
    let split = temp_dir("train-split");
    let (rw, rs) = (recipe(&whole), recipe(&split));
    let o = sluice(&["train", "--quiet", "--config", rw.to_str().unwrap()]);
    assert_ok(&o, "train (whole)");
    // Interrupted after 3 steps (SFT done, one RL step), then resumed.
    let o = sluice(&[
        "train",
        "--quiet",
        "--config",
        rs.to_str().unwrap(),
        "--stop-after",
        "3",
    ]);
    assert_ok(&o, "train (first part)");
    // A changed recipe is refused on resume, naming each difference.
    let changed = split.join("changed.toml");
    let text = std::fs::read_to_string(&rs).unwrap();
    std::fs::write(&changed, text.replace("lr = 1e-3", "lr = 2e-3")).unwrap();
    let o = sluice(&[
        "train",
        "--quiet",
        "--config",
        changed.to_str().unwrap(),
        "--resume",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("rl.schedule.lr: 0.001 → 0.002"), "{err}");
    assert!(err.contains("--allow-recipe-change"), "{err}");
    let o = sluice(&[
        "train",
        "--quiet",
        "--config",
        rs.to_str().unwrap(),
        "--resume",
    ]);
    assert_ok(&o, "train (resumed)");
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming at step 3"));
    for f in ["model.safetensors", "optimizer.safetensors"] {
        let a = std::fs::read(whole.join("run/checkpoint").join(f)).unwrap();
        let b = std::fs::read(split.join("run/checkpoint").join(f)).unwrap();
        assert!(a == b, "{f} differs between the whole and the resumed run");
    }
    let metrics = std::fs::read_to_string(split.join("run/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4);
    let state = std::fs::read_to_string(split.join("run/checkpoint/trainer_state.json")).unwrap();
    assert!(
        state.contains("\"step\": 4") || state.contains("\"step\":4"),
        "{state}"
    );
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&split);
}

#[test]
fn bad_recipes_are_clear_errors() {
    let dir = temp_dir("train-bad");
    let p = dir.join("r.toml");
    std::fs::write(&p, "out = \"x\"\n[model]\ndemo_hidden = 16\n").unwrap();
    let o = sluice(&["train", "--config", p.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("neither an [sft] nor an [rl] phase"));
    let o = sluice(&[
        "train",
        "--config",
        dir.join("missing.toml").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.toml"));
    let o = sluice(&["train", "--config", p.to_str().unwrap(), "--resume"]);
    assert!(!o.status.success());
    let o = sluice(&["train", "--help-recipe"]);
    assert_ok(&o, "--help-recipe");
    assert!(String::from_utf8_lossy(&o.stdout).contains("[rl.sampling]"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn lora_recipe(dir: &Path) -> PathBuf {
    let p = dir.join("lora.toml");
    let text = std::fs::read_to_string(recipe(dir)).unwrap().replace(
        "[sft]",
        "[lora]\nr = 4\nalpha = 8.0\ndropout = 0.1\n\n[sft]",
    ) + "[rl.objective]\nkl_placement = \"loss\"\n[rl.objective.loss]\nkl_coef = 0.05\n";
    std::fs::write(&p, text).unwrap();
    p
}

/// LoRA from a recipe: SFT and GRPO with the base (adapters off) as the KL reference,
/// checkpoints of adapters + optimizer + state only, resume bit for bit (dropout included),
/// the adapters loading in `generate --adapter` and merging with `sluice merge`.
#[test]
fn lora_recipe_trains_resumes_generates_and_merges() {
    let whole = temp_dir("lora-whole");
    let split = temp_dir("lora-split");
    let (rw, rs) = (lora_recipe(&whole), lora_recipe(&split));
    let o = sluice(&["train", "--quiet", "--config", rw.to_str().unwrap()]);
    assert_ok(&o, "LoRA train (whole)");
    assert!(String::from_utf8_lossy(&o.stderr).contains("trainable parameters over a frozen base"));
    let cfg = rs.to_str().unwrap();
    let o = sluice(&["train", "--quiet", "--config", cfg, "--stop-after", "3"]);
    assert_ok(&o, "LoRA train (first part)");
    let o = sluice(&["train", "--quiet", "--config", cfg, "--resume"]);
    assert_ok(&o, "LoRA train (resumed)");
    let ckpt = whole.join("run/checkpoint");
    let mut files: Vec<String> = std::fs::read_dir(&ckpt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "adapter_config.json",
            "adapter_model.safetensors",
            "optimizer.safetensors",
            "trainer_state.json"
        ]
    );
    for f in ["adapter_model.safetensors", "optimizer.safetensors"] {
        let a = std::fs::read(ckpt.join(f)).unwrap();
        let b = std::fs::read(split.join("run/checkpoint").join(f)).unwrap();
        assert!(
            a == b,
            "{f} differs between the whole and the resumed LoRA run"
        );
    }
    let metrics = std::fs::read_to_string(whole.join("run/metrics.jsonl")).unwrap();
    let kl: Vec<f64> = metrics
        .lines()
        .filter(|l| l.contains("\"phase\":\"rl\""))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kl"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert!(
        kl.len() == 2 && kl.iter().all(|k| k.is_finite()),
        "{metrics}"
    );

    let base = whole.join("run/base");
    let greedy_ids = |model: &Path, adapter: Option<&Path>| {
        let mut a = vec!["generate", "--model", model.to_str().unwrap()];
        if let Some(d) = adapter {
            a.extend(["--adapter", d.to_str().unwrap()]);
        }
        a.extend(["--prompt", "3141=", "--max-new-tokens", "5", "--json"]);
        let o = sluice(&a);
        assert_ok(&o, "generate");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["generated_ids"].clone()
    };
    let adapted = greedy_ids(&base, Some(&ckpt));
    let merged = whole.join("merged");
    let o = sluice(&[
        "merge",
        "--base",
        base.to_str().unwrap(),
        "--adapter",
        ckpt.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert_ok(&o, "merge");
    assert_eq!(
        greedy_ids(&merged, None),
        adapted,
        "merged vs adapted greedy ids"
    );

    // --model / --steps / --out override the recipe.
    let other = whole.join("other");
    let o = sluice(&[
        "train",
        "--quiet",
        "--config",
        rw.to_str().unwrap(),
        "--model",
        base.to_str().unwrap(),
        "--steps",
        "1",
        "--out",
        other.to_str().unwrap(),
    ]);
    assert_ok(&o, "train with overrides");
    let metrics = std::fs::read_to_string(other.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "{metrics}");
    let cfg = std::fs::read_to_string(other.join("checkpoint/adapter_config.json")).unwrap();
    assert!(cfg.contains("\"base_model_name_or_path\""), "{cfg}");
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&split);
}

/// A user reward from a recipe: an external program answering JSON lines. Its score is in
/// the metrics, and a program that answers garbage stops the run with an error naming it.
#[cfg(unix)]
#[test]
fn command_reward_scores_from_a_recipe() {
    let dir = temp_dir("train-command");
    let script = dir.join("verify.sh");
    // Scores 1 when the completion has an even number of characters, else 0.
    std::fs::write(
        &script,
        "while IFS= read -r l; do c=$(printf '%s' \"$l\" | sed 's/.*\"completion\":\"\\([^\"]*\\)\".*/\\1/'); \
         if [ $(( ${#c} % 2 )) -eq 0 ]; then echo 1; else echo '{\"score\": 0}'; fi; done\n",
    )
    .unwrap();
    let base = std::fs::read_to_string(recipe(&dir)).unwrap();
    let with = |rewards: &str| {
        let text = base
            .replace(
                "rewards = [{ kind = \"exact_match\" }, { kind = \"length\", weight = 0.1, max_len = 6, cache = 2 }]",
                rewards,
            )
            .replace("steps = 2\nbatch_size", "steps = 1\nbatch_size");
        let p = dir.join("cmd.toml");
        std::fs::write(&p, text).unwrap();
        p
    };
    let p =
        with(r#"rewards = [{ kind = "command", command = ["sh", "./verify.sh"], name = "even" }]"#);
    let o = sluice(&[
        "train",
        "--quiet",
        "--config",
        p.to_str().unwrap(),
        "--steps",
        "1",
    ]);
    assert_ok(&o, "train with a command reward");
    let metrics = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    let rl = metrics.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(rl).unwrap();
    let r = v["reward/even"].as_f64().unwrap_or(f64::NAN);
    assert!((0.0..=1.0).contains(&r), "{rl}");

    let p = with(
        r#"rewards = [{ kind = "command", command = ["sh", "-c", "while read l; do echo yes; done"] }]"#,
    );
    let o = sluice(&[
        "train",
        "--quiet",
        "--config",
        p.to_str().unwrap(),
        "--steps",
        "1",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("answer 1 `yes`") && err.contains("while read l"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Model-based rewards from a recipe on a model with a real tokenizer: the reference-answer
/// likelihood (over a snapshot of the policy), NOVER (over a lagged proxy), self-scoring and
/// self-verification (the policy as verifier and meta-verifier), next to a rule reward; each
/// shows up in the metrics.
#[test]
fn model_based_rewards_run_from_a_recipe() {
    let dir = temp_dir("train-model-rewards");
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/qwen3_next_tiny");
    let p = dir.join("r.toml");
    std::fs::write(
        &p,
        format!(
            r#"
seed = 1
out = "run"
[model]
path = "{}"
[rl]
task = "addition"
steps = 2
schedule = {{ kind = "constant", lr = 1e-3 }}
rewards = [
  {{ kind = "exact_match" }},
  {{ kind = "likelihood", weight = 0.5 }},
  {{ kind = "nover", weight = 0.5, sync_every = 1 }},
  {{ kind = "self_score", weight = 0.1 }},
  {{ kind = "self_verify", weight = 0.1, verifier_samples = 1, max_new_tokens = 4 }},
]
[rl.sampling]
group_size = 2
prompts_per_step = 2
max_new_tokens = 4
"#,
            model.display()
        ),
    )
    .unwrap();
    let o = sluice(&["train", "--quiet", "--config", p.to_str().unwrap()]);
    assert_ok(&o, "train with model-based rewards");
    let metrics = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    for line in metrics.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for k in [
            "reward/reference_likelihood",
            "reward/nover",
            "reward/self_score",
            "reward/self_verify",
        ] {
            assert!(v.get(k).is_some(), "{k} missing: {line}");
        }
        let lik = v["reward/reference_likelihood"].as_f64().unwrap();
        assert!(lik > 0.0 && lik <= 1.0, "{line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
