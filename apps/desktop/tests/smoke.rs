//! Runs the real app under X (Xvfb via `xvfb-run`, or an existing `DISPLAY`) on the Vulkan
//! driver the machine has (lavapipe pinned when present): a tiny scripted training run,
//! a screenshot, close → checkpoint; then a second launch resumes from that checkpoint.
//!
//! Needs `xvfb-run` (Debian: `apt-get install -y xvfb xauth`) unless `DISPLAY` is set.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::demo::run::{Demo, Phase};

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

#[test]
fn scripted_training_screenshot_close_and_resume() {
    let tmp: PathBuf =
        std::env::temp_dir().join(format!("sluice-desktop-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let shot = tmp.join("out.png");
    let ckpt = tmp.join("ckpt");
    let (shot_s, ckpt_s) = (shot.display().to_string(), ckpt.display().to_string());
    let size = format!("{}x{}", SIZE[0], SIZE[1]);
    let common = [
        "--demo-config",
        "tiny",
        "--exit",
        "--checkpoint-dir",
        &ckpt_s,
        "--window-size",
        &size,
    ];

    // 1. Two steps (one SFT, one RL), screenshot, close.
    let mut args = vec!["--demo-steps", "2", "--screenshot", &shot_s];
    args.extend(common);
    let v = run_app(&args, &tmp);
    assert_eq!(v["steps_done"], 2, "{v}");
    assert_eq!(v["global_step"], 2, "{v}");
    assert_eq!(losses(&v).len(), 2, "{v}");
    assert!(v["last_reward"].as_f64().is_some_and(f64::is_finite), "{v}");
    assert_eq!(v["checkpoint"].as_str(), Some(ckpt_s.as_str()), "{v}");
    assert_eq!(v["screenshot"].as_str(), Some(shot_s.as_str()), "{v}");
    check_png(&shot);

    let device = sluice::device::wgpu();
    let demo = Demo::restore(read_checkpoint(&ckpt), &device).expect("the checkpoint restores");
    assert_eq!((demo.phase, demo.step), (Phase::Rl, 1));
    drop(demo);

    // 2. A later start continues the saved run for one more step and saves again.
    let mut args = vec!["--resume", "--demo-steps", "1"];
    args.extend(common);
    let v = run_app(&args, &tmp);
    assert_eq!(v["steps_done"], 1, "{v}");
    assert_eq!(v["global_step"], 3, "{v}");
    assert_eq!(losses(&v).len(), 1, "{v}");
    let demo = Demo::restore(read_checkpoint(&ckpt), &device).expect("restores again");
    assert_eq!((demo.phase, demo.step), (Phase::Rl, 2));

    let _ = std::fs::remove_dir_all(&tmp);
}
