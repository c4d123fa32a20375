//! Runs the real app under X (Xvfb via `xvfb-run`, or an existing `DISPLAY`) on the Vulkan
//! driver the machine has (lavapipe pinned when present): the model loads, answers a prompt,
//! trains a tiny scripted run, closes → checkpoint; then a second launch resumes from that
//! checkpoint with its curves. Screenshots of each moment are kept in
//! `target/screenshots/desktop/` (CI keeps them as artifacts), and the app's exit summary
//! says what each one showed, which the test checks.
//!
//! Needs `xvfb-run` (Debian: `apt-get install -y xvfb xauth`) unless `DISPLAY` is set.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::train::record::StepPhase;
use sluice::train::session::Session;

const SIZE: [u32; 2] = [1024, 700];

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
}

/// The app's command line wrapped for a display; fails clearly when there is none.
fn app_command(args: &[&str], tmp: &Path) -> Command {
    let bin = env!("CARGO_BIN_EXE_sluice-desktop");
    let mut cmd = if have("xvfb-run") {
        let mut c = Command::new("xvfb-run");
        c.args(["-a", "-s", "-screen 0 1280x800x24", bin]);
        c
    } else if std::env::var_os("DISPLAY").is_some() {
        Command::new(bin)
    } else {
        panic!(
            "the desktop smoke test needs an X display: install Xvfb \
             (Debian/Ubuntu: `apt-get install -y xvfb xauth`) or set DISPLAY"
        );
    };
    cmd.args(args);
    // Pin Mesa's lavapipe when it is installed and nothing else is pinned.
    let pinned = std::env::var_os("VK_DRIVER_FILES").is_some()
        || std::env::var_os("VK_ICD_FILENAMES").is_some();
    if !pinned {
        let icds: Vec<String> = std::fs::read_dir("/usr/share/vulkan/icd.d")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("lvp_icd"))
            })
            .map(|p| p.display().to_string())
            .collect();
        if !icds.is_empty() {
            cmd.env("VK_DRIVER_FILES", icds.join(":"));
        }
    }
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        cmd.env("XDG_RUNTIME_DIR", tmp);
    }
    // X11 only under Xvfb, even when the session has Wayland.
    cmd.env_remove("WAYLAND_DISPLAY");
    cmd
}

/// Runs the app to completion (10 minutes at most); returns its JSON summary line.
fn run_app(args: &[&str], tmp: &Path) -> Value {
    let t0 = Instant::now();
    let mut child = app_command(args, tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the app");
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for the app") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the app did not exit within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().expect("app output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "app {args:?}: {status} in {:.1} s\nstdout: {stdout}\nstderr: {}",
        t0.elapsed().as_secs_f64(),
        &stderr[..stderr.floor_char_boundary(6000)]
    );
    assert!(status.success(), "the app failed: {status}");
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .expect("a JSON summary line on stdout");
    serde_json::from_str(line).expect("the summary line is JSON")
}

fn losses(v: &Value) -> Vec<f64> {
    v["losses"]
        .as_array()
        .expect("losses array")
        .iter()
        .map(|x| x.as_f64().expect("losses are finite numbers"))
        .collect()
}

fn check_png(path: &Path) {
    let file = std::fs::File::open(path).expect("the screenshot exists");
    let dec = png::Decoder::new(std::io::BufReader::new(file));
    let mut reader = dec.read_info().expect("PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buf).expect("PNG data");
    assert_eq!(
        [info.width, info.height],
        SIZE,
        "screenshot has the window's size"
    );
    let px = info.color_type.samples();
    let mut colours: Vec<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(
        colours.len() > 16,
        "the screenshot is (nearly) blank: {} distinct colours",
        colours.len()
    );
}

fn read_checkpoint(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for name in [
        "config.json",
        "model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
    ] {
        assert!(dir.join(name).is_file(), "checkpoint lacks {name}");
    }
    for e in std::fs::read_dir(dir).expect("checkpoint folder") {
        let p = e.expect("entry").path();
        if p.is_file() {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .expect("name")
                .to_string();
            files.push((name, std::fs::read(&p).expect("read")));
        }
    }
    files
}

/// Where the screenshots are kept for CI (`target/screenshots/desktop/`).
fn shots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("screenshots/desktop")
}

/// The screenshot entries of a summary, by file name: (path, what the window showed).
fn shots(v: &Value) -> Vec<(String, Value)> {
    v["screenshots"]
        .as_array()
        .expect("screenshots array")
        .iter()
        .map(|s| {
            let path = s["path"].as_str().expect("path").to_string();
            check_png(Path::new(&path));
            let name = Path::new(&path)
                .file_name()
                .and_then(|n| n.to_str())
                .expect("name")
                .to_string();
            (name, s.clone())
        })
        .collect()
}

fn shown<'a>(shots: &'a [(String, Value)], name: &str) -> &'a Value {
    &shots
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} among {shots:?}"))
        .1
}

/// Checks a plot's axes: finite, not degenerate, and none when it has no points.
fn check_plot(plot: &Value, what: &str) {
    let points: u64 = plot["series"]
        .as_object()
        .expect("series")
        .values()
        .map(|n| n.as_u64().expect("count"))
        .sum();
    match plot["bounds"].as_array() {
        None => {
            assert_eq!(points, 0, "{what}: points but no axes: {plot}");
            assert!(
                plot["waiting"].as_str().is_some_and(|w| !w.is_empty()),
                "{what}: {plot}"
            );
        }
        Some(b) => {
            let b: Vec<f64> = b
                .iter()
                .map(|x| x.as_f64().expect("finite bound"))
                .collect();
            assert!(points > 0, "{what}: axes without points: {plot}");
            assert!(b[1] > b[0] && b[3] > b[2], "{what}: empty range {b:?}");
        }
    }
}

/// A screenshot taken once an RL step began sampling: the run is active and shows where the
/// step is (rollout, or update when the rollout ended before the frame was painted).
fn check_busy(busy: &Value) {
    assert_eq!(busy["tab"], "Training", "{busy}");
    assert!(
        busy["stage"].as_str().is_some_and(
            |t| t.starts_with("step ") && (t.contains("rollout") || t.contains("update"))
        ),
        "the running step's stage is shown: {busy}"
    );
    assert!(
        ["running", "stopping", "pausing"]
            .iter()
            .any(|l| busy["training"].as_str().is_some_and(|t| t.contains(l))),
        "{busy}"
    );
}

#[test]
fn scripted_chat_training_screenshots_close_and_resume() {
    let tmp: PathBuf =
        std::env::temp_dir().join(format!("sluice-desktop-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let shot_dir = shots_dir();
    let _ = std::fs::remove_dir_all(&shot_dir);
    let ckpt = tmp.join("ckpt");
    let (shots_s, ckpt_s) = (shot_dir.display().to_string(), ckpt.display().to_string());
    let size = format!("{}x{}", SIZE[0], SIZE[1]);
    let common = [
        "--demo-config",
        "tiny",
        "--exit",
        "--checkpoint-dir",
        &ckpt_s,
        "--window-size",
        &size,
        "--screenshot-dir",
        &shots_s,
    ];

    // 1. Loaded → ask → two training steps (one SFT, one RL) → close, a screenshot at each.
    let mut args = vec!["--demo-steps", "2", "--prompt", "90210="];
    args.extend(common);
    let v = run_app(&args, &tmp);
    assert_eq!(v["steps_done"], 2, "{v}");
    assert_eq!(v["global_step"], 2, "{v}");
    assert_eq!(losses(&v).len(), 2, "{v}");
    assert!(v["last_reward"].as_f64().is_some_and(f64::is_finite), "{v}");
    assert_eq!(v["checkpoint"].as_str(), Some(ckpt_s.as_str()), "{v}");
    let s = shots(&v);
    assert_eq!(s.len(), 4, "{v}");
    let loaded = shown(&s, "loaded.png");
    assert!(loaded["model"].as_str().is_some(), "{loaded}");
    for (name, p) in loaded["plots"].as_object().expect("plots") {
        assert!(p["bounds"].is_null(), "{name}: no axes before a run: {p}");
        assert!(
            p["waiting"].as_str().is_some_and(|w| w.contains("Start")),
            "{p}"
        );
    }
    let generated = shown(&s, "generated.png");
    let answer = v["chat"]["last_answer"].as_str().expect("an answer");
    assert!(
        !answer.is_empty() && !answer.contains("<eos>"),
        "{answer:?}"
    );
    assert!(
        generated["chat_status"]
            .as_str()
            .is_some_and(|t| t.contains("first token after")),
        "{generated}"
    );
    check_busy(shown(&s, "busy.png"));
    let training = shown(&s, "training.png");
    assert_eq!(training["tab"], "Training", "{training}");
    let plots = &training["plots"];
    for name in ["reward", "kl", "loss", "acc"] {
        check_plot(&plots[name], name);
    }
    assert_eq!(plots["loss"]["series"]["SFT loss"], 1, "{plots}");
    assert_eq!(plots["loss"]["series"]["RL loss"], 1, "{plots}");
    assert_eq!(plots["reward"]["series"]["reward"], 1, "{plots}");
    assert_eq!(plots["loss"]["phase_marker"], 1.5, "{plots}");
    assert!(
        ckpt.join("metrics.jsonl").is_file(),
        "the history is saved with the run"
    );

    let device = sluice::device::wgpu();
    let demo = restore(read_checkpoint(&ckpt), &device).expect("the checkpoint restores");
    assert_eq!(demo.phase_progress(), (StepPhase::Rl, 1));
    drop(demo);

    // 2. A later start restores the run with its curves, continues one step and saves again.
    let mut args = vec!["--resume", "--demo-steps", "1"];
    args.extend(common);
    let v = run_app(&args, &tmp);
    assert_eq!(v["steps_done"], 1, "{v}");
    assert_eq!(v["global_step"], 3, "{v}");
    assert_eq!(losses(&v).len(), 3, "the earlier losses are back: {v}");
    assert!(v["history_records"].as_u64().is_some_and(|n| n >= 3), "{v}");
    let s = shots(&v);
    // Before resuming, the restarted app already draws the saved run's curves.
    let before = shown(&s, "restart-loaded.png");
    assert_eq!(before["saved_preview"], 2, "{before}");
    assert_eq!(before["plots"]["loss"]["series"]["SFT loss"], 1, "{before}");
    assert_eq!(before["plots"]["loss"]["series"]["RL loss"], 1, "{before}");
    check_busy(shown(&s, "restart-busy.png"));
    let after = shown(&s, "restart-training.png");
    assert_eq!(after["plots"]["loss"]["series"]["RL loss"], 2, "{after}");
    assert_eq!(after["plots"]["loss"]["series"]["SFT loss"], 1, "{after}");
    let demo = restore(read_checkpoint(&ckpt), &device).expect("restores again");
    assert_eq!(demo.phase_progress(), (StepPhase::Rl, 2));

    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!("screenshots: {}", shot_dir.display());
}

/// A saved run, restored as the app does (its recipe reads no data files).
fn restore(
    files: Vec<(String, Vec<u8>)>,
    device: &burn::tensor::Device,
) -> Result<Session, String> {
    let no_files = |p: &std::path::Path| Err(format!("{}: no data files", p.display()));
    Session::restore(files, &no_files, ".".as_ref(), &device.clone().autodiff())
        .map_err(|e| e.to_string())
}
