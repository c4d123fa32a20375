//! The Device panel: the shared wgpu adapter.

use eframe::egui;

use crate::app::App;

pub fn show(app: &mut App, ui: &mut egui::Ui) {
    let d = &app.device;
    egui::ScrollArea::vertical().show(ui, |ui| {
        egui::Grid::new("device").striped(true).show(ui, |ui| {
            for (k, v) in [
                ("adapter", d.name.as_str()),
                ("backend", d.backend.as_str()),
                ("type", d.device_type.as_str()),
                ("driver", d.driver.as_str()),
                ("driver info", d.driver_info.as_str()),
            ] {
                ui.label(k);
                ui.label(v);
                ui.end_row();
            }
            ui.label("UI and engine");
            ui.label(if d.shared {
                "one wgpu device (shared)"
            } else {
                "separate wgpu devices"
            });
            ui.end_row();
        });
        if let Some(n) = &d.note {
            ui.label(n);
        }
        ui.separator();
        ui.heading("Limits");
        egui::Grid::new("limits").striped(true).show(ui, |ui| {
            for (k, v) in &d.limits {
                ui.monospace(k);
                ui.monospace(v);
                ui.end_row();
            }
        });
        ui.separator();
        ui.heading("Features");
        ui.label(d.features.join(", "));
    });
}
