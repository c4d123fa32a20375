//! Rendering: one module per panel; every action goes through [`crate::state::AppState`].

mod chat;
mod device;
mod model;
mod training;

use eframe::egui::{self, Color32, RichText};

use crate::app::App;
use crate::state::Shutdown;

/// The panels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Model,
    Chat,
    Training,
    Device,
}

/// An error line (red).
pub fn error_line(ui: &mut egui::Ui, err: &Option<String>) {
    if let Some(e) = err {
        ui.colored_label(Color32::from_rgb(0xe0, 0x40, 0x40), format!("Error: {e}"));
    }
}

/// Draws the whole window.
pub fn show(app: &mut App, ui: &mut egui::Ui) {
    egui::Panel::top("tabs").show(ui, |ui| {
        ui.horizontal(|ui| {
            ui.heading("Sluice");
            ui.separator();
            for (tab, name) in [
                (Tab::Model, "Model"),
                (Tab::Chat, "Chat"),
                (Tab::Training, "Training"),
                (Tab::Device, "Device"),
            ] {
                ui.selectable_value(&mut app.tab, tab, name);
            }
        });
    });
    egui::Panel::bottom("status").show(ui, |ui| {
        ui.horizontal(|ui| {
            let model = app
                .state
                .model
                .as_ref()
                .map_or("no model".to_string(), |m| m.name.clone());
            ui.label(format!("model: {model}"));
            ui.separator();
            ui.label(format!("training: {}", app.state.status.label()));
            ui.separator();
            ui.label(format!("{} ({})", app.device.name, app.device.backend));
            if let Some(last) = app.state.log.last().filter(|l| !l.starts_with("training:")) {
                ui.separator();
                ui.label(RichText::new(last).weak());
            }
        });
    });
    egui::CentralPanel::default().show(ui, |ui| {
        if app.state.shutdown == Shutdown::Requested {
            ui.heading("Finishing the current step and saving the checkpoint…");
            ui.spinner();
            return;
        }
        match app.tab {
            Tab::Model => model::show(app, ui),
            Tab::Chat => chat::show(app, ui),
            Tab::Training => training::show(app, ui),
            Tab::Device => device::show(app, ui),
        }
    });
}
