//! The Training panel: preset, task, start/pause/stop, live curves, checkpoints.

use eframe::egui::{self, RichText};
use egui_plot::{Legend, Line, Plot, Points};

use crate::app::App;
use crate::protocol::StartFrom;
use crate::state::{PRESETS, TrainStatus, field};

fn settings(app: &mut App, ui: &mut egui::Ui, editable: bool) {
    let f = &mut app.state.form;
    ui.add_enabled_ui(editable, |ui| {
        ui.horizontal_wrapped(|ui| {
            egui::ComboBox::from_label("preset")
                .selected_text(f.preset.as_str())
                .show_ui(ui, |ui| {
                    for p in PRESETS {
                        ui.selectable_value(&mut f.preset, p.to_string(), p);
                    }
                });
            ui.label("task");
            ui.add(
                egui::TextEdit::singleline(&mut f.task)
                    .desired_width(90.0)
                    .hint_text("sort:5"),
            )
            .on_hover_text("sort, sort:N, addition, addition:N");
            ui.radio_value(
                &mut f.start,
                StartFrom::Scratch,
                "from scratch (SFT, then RL)",
            );
            ui.radio_value(
                &mut f.start,
                StartFrom::LoadedModel,
                "RL from the loaded model",
            );
        });
        ui.horizontal_wrapped(|ui| {
            let num = |ui: &mut egui::Ui, label: &str, v: &mut usize, max: usize| {
                ui.label(label);
                ui.add(egui::DragValue::new(v).range(0..=max));
            };
            num(ui, "hidden", &mut f.hidden, 1024);
            if f.start == StartFrom::Scratch {
                num(ui, "SFT steps", &mut f.sft_steps, 100_000);
                num(ui, "SFT batch", &mut f.sft_batch, 4096);
            }
            num(ui, "RL steps", &mut f.rl_steps, 100_000);
            num(ui, "prompts/step", &mut f.prompts_per_step, 1024);
            num(ui, "group", &mut f.group_size, 256);
            num(ui, "held-out", &mut f.eval_size, 10_000);
            num(ui, "eval every", &mut f.eval_every, 100_000);
            num(ui, "stop after (0 = all)", &mut f.max_steps, 1_000_000);
            ui.label("seed");
            ui.add(egui::DragValue::new(&mut f.seed));
        });
    });
}

fn controls(app: &mut App, ui: &mut egui::Ui) {
    let status = app.state.status.clone();
    ui.horizontal(|ui| {
        if ui
            .add_enabled(!status.is_active(), egui::Button::new("Start"))
            .clicked()
        {
            let cmd = app.state.start_training();
            app.send_result(cmd);
        }
        let paused = matches!(status, TrainStatus::Paused | TrainStatus::Pausing);
        let cmd = if paused {
            ui.button("Resume")
                .clicked()
                .then(|| app.state.resume())
                .flatten()
        } else {
            ui.add_enabled(status == TrainStatus::Running, egui::Button::new("Pause"))
                .clicked()
                .then(|| app.state.pause())
                .flatten()
        };
        let can_stop = matches!(
            status,
            TrainStatus::Running | TrainStatus::Pausing | TrainStatus::Paused
        );
        let stop = ui
            .add_enabled(can_stop, egui::Button::new("Stop"))
            .clicked()
            .then(|| app.state.stop())
            .flatten();
        for c in cmd.into_iter().chain(stop) {
            app.send(c);
        }
        ui.separator();
        ui.label("checkpoint folder");
        ui.add(egui::TextEdit::singleline(&mut app.state.checkpoint_dir).desired_width(220.0));
        if ui
            .add_enabled(app.state.run.is_some(), egui::Button::new("Save"))
            .clicked()
        {
            let cmd = app.state.save_checkpoint();
            app.send_result(cmd);
        }
        if ui
            .add_enabled(!status.is_active(), egui::Button::new("Resume from it"))
            .clicked()
        {
            let cmd = app.state.resume_from_checkpoint();
            app.send_result(cmd);
        }
    });
}

fn progress(app: &App, ui: &mut egui::Ui) {
    let s = &app.state;
    let total = s.total_steps();
    let mut text = format!("step {}/{} — {}", s.global_step, total, s.status.label());
    if let Some(r) = &s.last_record {
        let phase = r.get("phase").and_then(|p| p.as_str()).unwrap_or("?");
        text.push_str(&format!(" — {phase}"));
        for k in ["loss", "reward", "kl", "entropy"] {
            if let Some(v) = field(r, k) {
                text.push_str(&format!(" {k} {v:.4}"));
            }
        }
    }
    if let Some(t) = s.mean_step_seconds() {
        text.push_str(&format!(" — {t:.2} s/step"));
    }
    ui.add(egui::ProgressBar::new(s.progress()).text(text));
    if let Some(run) = &s.run {
        ui.label(
            RichText::new(format!(
                "{} · {} · {} parameters · {} SFT + {} RL steps",
                run.task, run.preset, run.parameters, run.sft_steps, run.rl_steps
            ))
            .weak(),
        );
    }
}

fn plot(ui: &mut egui::Ui, id: &str, title: &str, series: &[(&str, &[[f64; 2]])], h: f32) {
    ui.vertical(|ui| {
        ui.label(RichText::new(title).strong());
        Plot::new(id)
            .height(h)
            .width((ui.available_width()).max(100.0))
            .legend(Legend::default())
            .allow_scroll(false)
            .show(ui, |p| {
                for (name, pts) in series {
                    p.line(Line::new(*name, pts.to_vec()));
                    if pts.len() < 30 {
                        p.points(Points::new(*name, pts.to_vec()).radius(3.0));
                    }
                }
            });
    });
}

pub fn show(app: &mut App, ui: &mut egui::Ui) {
    let editable = !app.state.status.is_active();
    settings(app, ui, editable);
    controls(app, ui);
    super::error_line(ui, &app.state.train_error);
    progress(app, ui);
    ui.separator();
    let m = &app.state.metrics;
    let h = ((ui.available_height() - 60.0) / 2.0).max(80.0);
    let w = ui.available_width() / 2.0 - 8.0;
    egui::Grid::new("plots").num_columns(2).show(ui, |ui| {
        let cell = |ui: &mut egui::Ui, f: &dyn Fn(&mut egui::Ui)| {
            ui.allocate_ui(egui::vec2(w, h + 24.0), |ui| f(ui));
        };
        cell(ui, &|ui| {
            plot(ui, "reward", "reward", &[("reward", &m.reward)], h)
        });
        cell(ui, &|ui| plot(ui, "kl", "KL", &[("kl", &m.kl)], h));
        ui.end_row();
        cell(ui, &|ui| plot(ui, "loss", "loss", &[("loss", &m.loss)], h));
        cell(ui, &|ui| {
            plot(
                ui,
                "acc",
                "held-out accuracy",
                &[
                    ("greedy", &m.accuracy),
                    ("sampled pass@1", &m.sampled_accuracy),
                ],
                h,
            )
        });
        ui.end_row();
    });
}
