//! The Chat panel: prompt, streamed answer, sampling settings, Stop.

use eframe::egui::{self, RichText};

use crate::app::App;

pub fn show(app: &mut App, ui: &mut egui::Ui) {
    let generating = app.state.is_generating();
    let template = app.state.model.as_ref().is_some_and(|m| m.chat_template);
    ui.horizontal_wrapped(|ui| {
        let s = &mut app.state.chat.settings;
        ui.label("max new tokens");
        ui.add(egui::DragValue::new(&mut s.max_new_tokens).range(1..=4096));
        ui.label("temperature");
        ui.add(
            egui::DragValue::new(&mut s.temperature)
                .range(0.0..=5.0)
                .speed(0.01),
        );
        ui.label("top-k");
        ui.add(egui::DragValue::new(&mut s.top_k).range(0..=100_000));
        ui.label("top-p");
        ui.add(
            egui::DragValue::new(&mut s.top_p)
                .range(0.01..=1.0)
                .speed(0.01),
        );
        ui.label("seed");
        ui.add(egui::DragValue::new(&mut s.seed));
    });
    ui.label(
        RichText::new(if template {
            "The tokenizer's chat template formats the conversation."
        } else {
            "Plain-text prompts (no chat template). Demo model: type digits then `=`, e.g. 31415="
        })
        .weak(),
    );
    ui.separator();
    let bottom = 90.0;
    egui::ScrollArea::vertical()
        .stick_to_bottom(true)
        .max_height((ui.available_height() - bottom).max(60.0))
        .show(ui, |ui| {
            let chat = &app.state.chat;
            for turn in chat.history.iter().chain(chat.pending.as_ref()) {
                ui.label(RichText::new(format!("> {}", turn.user)).strong());
                ui.monospace(if turn.assistant.is_empty() && generating {
                    "…"
                } else {
                    turn.assistant.as_str()
                });
                ui.add_space(6.0);
            }
        });
    ui.separator();
    let edit = ui.add(
        egui::TextEdit::multiline(&mut app.state.chat.prompt)
            .hint_text("prompt (Ctrl+Enter sends)")
            .desired_rows(2)
            .desired_width(f32::INFINITY),
    );
    let send_key =
        edit.has_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter) && i.modifiers.ctrl);
    ui.horizontal(|ui| {
        if ui
            .add_enabled(!generating, egui::Button::new("Send"))
            .clicked()
            || send_key
        {
            let cmd = app.state.generate();
            app.send_result(cmd);
        }
        if ui
            .add_enabled(generating, egui::Button::new("Stop"))
            .clicked()
        {
            app.state.stop_generation();
        }
        if ui
            .add_enabled(!generating, egui::Button::new("Clear"))
            .clicked()
        {
            app.state.clear_chat();
        }
        if generating {
            ui.spinner();
        }
        ui.label(&app.state.chat.status);
    });
    super::error_line(ui, &app.state.chat.error);
}
