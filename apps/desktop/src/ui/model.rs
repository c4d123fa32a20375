//! The Model panel: the built-in demo model or a Hugging Face folder.

use eframe::egui;

use crate::app::App;

pub fn show(app: &mut App, ui: &mut egui::Ui) {
    ui.heading("Model");
    ui.horizontal(|ui| {
        let busy = app.state.model_loading;
        if ui
            .add_enabled(!busy, egui::Button::new("Load built-in demo model"))
            .on_hover_text("A 217k-parameter hybrid that sorts digits: try `31415=`")
            .clicked()
        {
            let cmd = app.state.load_demo();
            app.send(cmd);
        }
        if ui
            .add_enabled(!busy, egui::Button::new("Use the training run's model"))
            .clicked()
        {
            let cmd = app.state.use_trained();
            app.send_result(cmd);
        }
    });
    ui.horizontal(|ui| {
        ui.label("Hugging Face folder:");
        let edit = ui.add(
            egui::TextEdit::singleline(&mut app.state.model_path)
                .hint_text("/path/to/Qwen3.5-model")
                .desired_width(420.0),
        );
        let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if ui
            .add_enabled(!app.state.model_loading, egui::Button::new("Load"))
            .clicked()
            || enter
        {
            let cmd = app.state.load_dir();
            app.send_result(cmd);
        }
    });
    if app.state.model_loading {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("loading…");
        });
    }
    super::error_line(ui, &app.state.model_error);
    ui.separator();
    match &app.state.model {
        Some(m) => {
            egui::Grid::new("model").striped(true).show(ui, |ui| {
                ui.label("model");
                ui.label(&m.name);
                ui.end_row();
                ui.label("architecture");
                ui.label(&m.summary);
                ui.end_row();
                ui.label("parameters");
                ui.label(format!("{}", m.parameters));
                ui.end_row();
                ui.label("vocabulary");
                ui.label(format!("{}", m.vocab_size));
                ui.end_row();
                ui.label("chat template");
                ui.label(if m.chat_template {
                    "yes"
                } else {
                    "no (plain text)"
                });
                ui.end_row();
                ui.label("load time");
                ui.label(format!("{:.2} s", m.load_seconds));
                ui.end_row();
            });
        }
        None => {
            ui.label("No model loaded.");
        }
    }
}
