//! `sluice-desktop`: chat with and train Sluice models, with live training curves. The UI
//! renders on the same wgpu device the engine computes on.

mod app;
mod device_info;
mod plots;
mod protocol;
mod script;
mod shot;
mod state;
mod ui;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex, OnceLock};

use burn::tensor::Device;
use clap::{Parser, ValueEnum};
use eframe::{egui, egui_wgpu};

use crate::app::{App, Outcome};
use crate::device_info::DeviceInfo;
use crate::protocol::Command;
use crate::script::{Plan, Script};
use crate::state::{AppState, TrainForm, parse_preset, parse_task};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DemoSize {
    /// `sluice demo`'s run (hidden 64, 100 SFT + 60 RL steps).
    Default,
    /// A seconds-long run for smoke tests (hidden 16, 1 SFT + 3 RL steps, tiny batches).
    Tiny,
}

/// Sluice desktop: chat with and train gated hybrid language models on WebGPU.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Start training the demo run right away and stop after N steps.
    #[arg(long, value_name = "N")]
    demo_steps: Option<usize>,
    /// With --demo-steps: continue the run saved in --checkpoint-dir instead of a new one.
    #[arg(long)]
    resume: bool,
    /// Size of the demo run's settings.
    #[arg(long, value_enum, default_value = "default")]
    demo_config: DemoSize,
    /// RL preset of the demo run (grpo, dr_grpo, dapo, gspo, gmpo, reinforce_pp, ...).
    #[arg(long)]
    preset: Option<String>,
    /// Task of the demo run (sort, sort:N, addition, addition:N).
    #[arg(long)]
    task: Option<String>,
    /// Save PNG screenshots of the window here at the key moments: loaded.png (the model is
    /// loaded), generated.png (after --prompt), busy.png (an RL step sampling) and
    /// training.png (after --demo-steps); with --resume they are named restart-*.png.
    #[arg(long, value_name = "DIR")]
    screenshot_dir: Option<PathBuf>,
    /// Ask the loaded model this in the Chat panel (before any training).
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// Close the window once the scripted work (and screenshot) is done.
    #[arg(long)]
    exit: bool,
    /// Where Save, Resume and closing mid-training keep the training checkpoint.
    #[arg(long, value_name = "DIR", default_value = "sluice-desktop-checkpoint")]
    checkpoint_dir: PathBuf,
    /// Window size in logical pixels.
    #[arg(long, value_name = "WxH", default_value = "1100x720", value_parser = parse_size)]
    window_size: [f32; 2],
    /// Render the UI on its own wgpu device instead of sharing the engine's.
    #[arg(long)]
    separate_devices: bool,
}

fn parse_size(s: &str) -> Result<[f32; 2], String> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| format!("`{s}`: expected WIDTHxHEIGHT, e.g. 1100x720"))?;
    let n = |t: &str| {
        t.trim()
            .parse::<u32>()
            .ok()
            .filter(|&v| (200..=8192).contains(&v))
            .map(|v| v as f32)
            .ok_or_else(|| format!("`{t}`: expected a size from 200 to 8192"))
    };
    Ok([n(w)?, n(h)?])
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-desktop: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let mut form = match args.demo_config {
        DemoSize::Default => TrainForm::default(),
        DemoSize::Tiny => TrainForm::tiny(),
    };
    if let Some(p) = &args.preset {
        form.preset = parse_preset(p)?;
    }
    if let Some(t) = &args.task {
        form.task = parse_task(t)?;
    }

    // One wgpu device: Burn acquires it and the UI renders with the same handles.
    let (device, setup) = Device::wgpu_options()
        .init_with_setup()
        .map_err(|e| format!("no usable GPU adapter (WebGPU/Vulkan/Metal/DX12): {e}"))?;
    let shared = !args.separate_devices;
    let note = (!shared).then(|| "--separate-devices: the UI picked its own device".to_string());
    let device_info = DeviceInfo::from_adapter(&setup.adapter, shared, note);
    let wgpu_setup = if shared {
        egui_wgpu::WgpuSetup::Existing(egui_wgpu::WgpuSetupExisting {
            instance: setup.instance.clone(),
            adapter: setup.adapter.clone(),
            device: setup.device.clone(),
            queue: setup.queue.clone(),
        })
    } else {
        // eframe fills in the display handle.
        egui_wgpu::WgpuSetup::without_display_handle()
    };

    let mut state = AppState::new(form, &args.checkpoint_dir);
    // A run saved in the checkpoint folder shows its history at once.
    state.checkpoint_available();
    let (cmd_tx, cmd_rx) = channel::<Command>();
    let (ev_tx, ev_rx) = channel();
    let repaint: Arc<OnceLock<egui::Context>> = Arc::new(OnceLock::new());
    let notify = {
        let repaint = repaint.clone();
        move || {
            if let Some(ctx) = repaint.get() {
                ctx.request_repaint();
            }
        }
    };
    let worker = worker::spawn(device, cmd_rx, ev_tx, notify, state.chat.stop.clone())
        .map_err(|e| format!("starting the worker thread: {e}"))?;

    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let script = Script::new(Plan {
        screenshot_dir: args.screenshot_dir.clone(),
        prompt: args.prompt.clone(),
        demo_steps: args.demo_steps,
        resume: args.resume,
        exit: args.exit,
    });
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Sluice")
            .with_inner_size(args.window_size)
            .with_min_inner_size([400.0, 300.0]),
        wgpu_options: egui_wgpu::WgpuConfiguration {
            wgpu_setup,
            ..Default::default()
        },
        ..Default::default()
    };
    let app_outcome = outcome.clone();
    let app_tx = cmd_tx.clone();
    let res = eframe::run_native(
        "Sluice",
        options,
        Box::new(move |cc| {
            let _ = repaint.set(cc.egui_ctx.clone());
            Ok(Box::new(App::new(
                state,
                device_info,
                app_tx,
                ev_rx,
                script,
                app_outcome,
            )))
        }),
    );

    // However the window went away, let the worker save the run and finish.
    let _ = cmd_tx.send(Command::Shutdown {
        checkpoint_dir: args.checkpoint_dir.clone(),
    });
    let exit = worker
        .join()
        .map_err(|_| "the engine worker panicked".to_string())?;
    let mut summary = outcome
        .lock()
        .map(|o| o.summary.clone())
        .unwrap_or_default();
    if summary.is_null() {
        summary = serde_json::json!({});
    }
    if let Some(c) = exit.checkpoint {
        summary["checkpoint"] = c.display().to_string().into();
    }
    if let Some(e) = exit.error {
        summary["checkpoint_error"] = e.into();
    }
    println!("{summary}");
    res.map_err(|e| format!("window: {e}"))
}
