//! The Training panel: preset, task, start/pause/stop, live curves, checkpoints.

use std::ops::RangeInclusive;

use eframe::egui::{self, Color32, RichText};
use egui_plot::{GridMark, Line, Plot, PlotBounds, Points, VLine};
use sluice::train::format;

use crate::app::App;
use crate::plots::{PlotSpec, plots};
use crate::protocol::StartFrom;
use crate::state::{PRESETS, TrainStatus, field};

/// A number field with its label before it and a tooltip on both.
fn num(ui: &mut egui::Ui, label: &str, tip: &str, v: &mut usize, max: usize) {
    ui.label(label).on_hover_text(tip);
    ui.add(egui::DragValue::new(v).range(0..=max))
        .on_hover_text(tip);
}

fn settings(app: &mut App, ui: &mut egui::Ui, editable: bool) {
    let f = &mut app.state.form;
    ui.add_enabled_ui(editable, |ui| {
        ui.horizontal_wrapped(|ui| {
            let tip = "the RL objective: loss, advantages and KL as TRL/verl define them";
            ui.label("preset").on_hover_text(tip);
            egui::ComboBox::from_id_salt("preset")
                .selected_text(f.preset.as_str())
                .show_ui(ui, |ui| {
                    for p in PRESETS {
                        ui.selectable_value(&mut f.preset, p.to_string(), p);
                    }
                })
                .response
                .on_hover_text(tip);
            let tip = "the task: sort, sort:N (N digits), addition, addition:N";
            ui.label("task").on_hover_text(tip);
            ui.add(
                egui::TextEdit::singleline(&mut f.task)
                    .desired_width(90.0)
                    .hint_text("sort:5"),
            )
            .on_hover_text(tip);
            ui.radio_value(
                &mut f.start,
                StartFrom::Scratch,
                "from scratch (SFT, then RL)",
            )
            .on_hover_text("a fresh model learns the task by SFT, then improves by RL");
            ui.radio_value(
                &mut f.start,
                StartFrom::LoadedModel,
                "RL from the loaded model",
            )
            .on_hover_text("RL only, starting from the model loaded in the Model panel");
            ui.radio_value(&mut f.start, StartFrom::Recipe, "a recipe file")
                .on_hover_text(
                    "any training recipe (TOML, as `sluice train --config`): a model folder, \
                     SFT and/or RL, LoRA or full fine-tuning, any reward",
                );
        });
        if f.start == StartFrom::Recipe {
            ui.horizontal(|ui| {
                let tip = "the recipe's path; its relative paths are its folder's";
                ui.label("recipe").on_hover_text(tip);
                ui.add(
                    egui::TextEdit::singleline(&mut f.recipe_path)
                        .desired_width(320.0)
                        .hint_text("recipes/lora-grpo.toml"),
                )
                .on_hover_text(tip);
            });
            return;
        }
        ui.horizontal_wrapped(|ui| {
            num(
                ui,
                "hidden",
                "model width (a multiple of 4); a fresh model only",
                &mut f.hidden,
                1024,
            );
            if f.start == StartFrom::Scratch {
                num(
                    ui,
                    "SFT steps",
                    "supervised steps on correct answers before RL",
                    &mut f.sft_steps,
                    100_000,
                );
                num(
                    ui,
                    "SFT batch",
                    "examples per SFT step",
                    &mut f.sft_batch,
                    4096,
                );
            }
            num(
                ui,
                "RL steps",
                "reinforcement-learning steps",
                &mut f.rl_steps,
                100_000,
            );
            num(
                ui,
                "prompts/step",
                "prompts sampled per RL step",
                &mut f.prompts_per_step,
                1024,
            );
            num(
                ui,
                "group",
                "completions per prompt (advantages compare them; ≥ 2)",
                &mut f.group_size,
                256,
            );
            num(
                ui,
                "held-out",
                "problems never trained on, for the accuracy plot",
                &mut f.eval_size,
                10_000,
            );
            num(
                ui,
                "eval every",
                "steps between held-out evaluations (0: only at phase ends)",
                &mut f.eval_every,
                100_000,
            );
            num(
                ui,
                "stop after (0 = all)",
                "pause the run for good after this many steps",
                &mut f.max_steps,
                1_000_000,
            );
            let tip = "seeds data, initialisation and sampling";
            ui.label("seed").on_hover_text(tip);
            ui.add(egui::DragValue::new(&mut f.seed)).on_hover_text(tip);
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
            .on_hover_text("end the run after this step and save it to the checkpoint folder")
            .clicked()
            .then(|| app.state.stop())
            .flatten();
        for c in cmd.into_iter().chain(stop) {
            app.send(c);
        }
        ui.separator();
        let tip = "where Save, Stop and closing the window save the run, and where Resume from it \
                   reads one";
        ui.label("checkpoint folder").on_hover_text(tip);
        ui.add(egui::TextEdit::singleline(&mut app.state.checkpoint_dir).desired_width(220.0))
            .on_hover_text(tip);
        if ui
            .add_enabled(app.state.run.is_some(), egui::Button::new("Save"))
            .clicked()
        {
            let cmd = app.state.save_checkpoint();
            app.send_result(cmd);
        }
        let can_resume = !status.is_active() && app.state.checkpoint_available();
        if ui
            .add_enabled(can_resume, egui::Button::new("Resume from it"))
            .on_disabled_hover_text(
                "the folder holds no saved run yet (Save, Stop or closing the window saves one)",
            )
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
    let mut text = match s.saved_preview.filter(|_| s.run.is_none()) {
        Some(n) => format!("a run saved at step {n} is in the checkpoint folder: Resume from it"),
        None => format!("step {}/{} — {}", s.global_step, total, s.status.label()),
    };
    if let Some(r) = &s.last_record {
        let phase = r.get("phase").and_then(|p| p.as_str()).unwrap_or("?");
        text.push_str(&format!(" — {phase}"));
        for k in ["loss", "reward", "kl", "entropy"] {
            if let Some(v) = field(r, k) {
                text.push_str(&format!(" {k} {}", format::metric(k, v)));
            }
        }
    }
    for (name, rl) in [("SFT", false), ("RL", true)] {
        if let Some(t) = s.metrics.mean_seconds(rl) {
            text.push_str(&format!(" — {name} {}/step", format::seconds(t)));
        }
    }
    ui.add(egui::ProgressBar::new(s.progress()).text(text));
    if let Some(stage) = s.stage_text().filter(|_| s.status.is_active()) {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(stage);
        });
        // Keep the seconds counting while the step runs.
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_millis(200));
    }
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

fn colour(rgb: [u8; 3]) -> Color32 {
    Color32::from_rgb(rgb[0], rgb[1], rgb[2])
}

/// Tick labels through the shared number format (`4.000e-5`, not `0.00004` or `0`).
fn tick(mark: GridMark, _range: &RangeInclusive<f64>) -> String {
    if mark.step_size < 1e-3 || mark.value.abs() >= 1e5 {
        format::number(mark.value)
    } else {
        let decimals = (-mark.step_size.log10().floor()).max(0.0) as usize;
        format!("{:.*}", decimals, mark.value)
    }
}

/// One plot: its title and a legend row in the series' colours above it, then the curves
/// inside bounds fixed from the data (no lag, no drifting), or the waiting text.
fn plot(ui: &mut egui::Ui, spec: &PlotSpec, h: f32) {
    ui.vertical(|ui| {
        ui.horizontal(|ui| {
            ui.label(RichText::new(spec.title).strong());
            for s in &spec.series {
                let c = colour(s.rgb);
                let (r, _) = ui.allocate_exact_size(egui::vec2(10.0, 10.0), egui::Sense::hover());
                ui.painter().rect_filled(r, 2.0, c);
                ui.label(RichText::new(s.name).color(c));
            }
            if spec.phase_marker.is_some() {
                ui.label(RichText::new("(dashed line: RL begins)").weak())
                    .on_hover_text("SFT steps are left of the dashed line, RL steps right of it");
            }
        });
        let w = ui.available_width().max(100.0);
        let Some([x0, x1, y0, y1]) = spec.bounds else {
            let (rect, _) = ui.allocate_exact_size(egui::vec2(w, h), egui::Sense::hover());
            ui.painter().rect_stroke(
                rect,
                4.0,
                egui::Stroke::new(1.0, ui.visuals().weak_text_color()),
                egui::StrokeKind::Inside,
            );
            ui.painter().text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                &spec.waiting,
                egui::FontId::proportional(13.0),
                ui.visuals().weak_text_color(),
            );
            return;
        };
        Plot::new(spec.id)
            .height(h)
            .width(w)
            .allow_drag(false)
            .allow_zoom(false)
            .allow_scroll(false)
            .allow_boxed_zoom(false)
            .allow_double_click_reset(false)
            .x_axis_label("step")
            .y_axis_formatter(tick)
            .show(ui, |p| {
                p.set_plot_bounds(PlotBounds::from_min_max([x0, y0], [x1, y1]));
                if let Some(x) = spec.phase_marker {
                    p.vline(
                        VLine::new("SFT | RL", x)
                            .color(Color32::GRAY)
                            .style(egui_plot::LineStyle::dashed_loose()),
                    );
                }
                for s in &spec.series {
                    let c = colour(s.rgb);
                    p.line(Line::new(s.name, s.points.clone()).color(c));
                    if s.points.len() < 60 {
                        p.points(Points::new(s.name, s.points.clone()).color(c).radius(3.0));
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
    let specs = plots(&app.state);
    let h = ((ui.available_height() - 90.0) / 2.0).max(80.0);
    let w = ui.available_width() / 2.0 - 8.0;
    egui::Grid::new("plots").num_columns(2).show(ui, |ui| {
        for (i, spec) in specs.iter().enumerate() {
            ui.allocate_ui(egui::vec2(w, h + 40.0), |ui| plot(ui, spec, h));
            if i % 2 == 1 {
                ui.end_row();
            }
        }
    });
}
