//! The eframe app: moves events from the worker into [`AppState`], sends the UI's commands,
//! runs the command-line script and the close-saves-a-checkpoint handshake.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use eframe::egui::{self, ColorImage, ViewportCommand};
use serde_json::Value;

use crate::device_info::DeviceInfo;
use crate::protocol::{Command, Event};
use crate::script::{Action, Script};
use crate::state::{AppState, Shutdown};
use crate::ui::{self, Tab};

/// What `main` reads back after the window closed.
#[derive(Debug, Default)]
pub struct Outcome {
    pub summary: Value,
    /// True once the worker saved (or had nothing to save) and exited.
    pub worker_done: bool,
}

pub struct App {
    pub state: AppState,
    pub tab: Tab,
    pub device: DeviceInfo,
    commands: Sender<Command>,
    events: Receiver<Event>,
    script: Script,
    shots: (Sender<Arc<ColorImage>>, Receiver<Arc<ColorImage>>),
    /// The screenshot being taken: where it goes and what the window showed.
    shot_path: Option<(PathBuf, Value)>,
    /// Screenshots written, each with what the window showed (for the exit summary).
    saved_shots: Vec<Value>,
    outcome: Arc<Mutex<Outcome>>,
}

impl App {
    pub fn new(
        state: AppState,
        device: DeviceInfo,
        commands: Sender<Command>,
        events: Receiver<Event>,
        script: Script,
        outcome: Arc<Mutex<Outcome>>,
    ) -> Self {
        let tab = if script.demo_steps.is_some() {
            Tab::Training
        } else {
            Tab::Chat
        };
        let mut app = App {
            state,
            tab,
            device,
            commands,
            events,
            script,
            shots: channel(),
            shot_path: None,
            saved_shots: Vec::new(),
            outcome,
        };
        let load = app.state.load_demo();
        app.send(load);
        app
    }

    /// Sends a command to the worker.
    pub fn send(&mut self, cmd: Command) {
        if self.commands.send(cmd).is_err() {
            self.state.train_error = Some("the engine worker stopped".into());
        }
    }

    /// Sends the command a UI action produced (errors are already in the state).
    pub fn send_result(&mut self, cmd: Result<Command, String>) {
        if let Ok(c) = cmd {
            self.send(c);
        }
    }

    fn publish(&self) {
        if let Ok(mut o) = self.outcome.lock() {
            o.summary = self.state.summary(&self.saved_shots, self.device.shared);
            o.worker_done = matches!(self.state.shutdown, Shutdown::Done(_));
        }
    }

    fn drain_events(&mut self, ctx: &egui::Context) -> bool {
        let mut any = false;
        while let Ok(ev) = self.events.try_recv() {
            any = true;
            let done = matches!(ev, Event::ShutdownDone(_));
            self.state.apply(ev);
            if done {
                self.publish();
                ctx.send_viewport_cmd(ViewportCommand::Close);
            }
        }
        any
    }

    fn take_screenshots(&mut self) {
        while let Ok(img) = self.shots.1.try_recv() {
            let Some((path, mut shown)) = self.shot_path.take() else {
                continue;
            };
            match crate::shot::save_png(&img, &path) {
                Ok(()) => {
                    shown["path"] = path.display().to_string().into();
                    self.saved_shots.push(shown);
                }
                Err(e) => self.state.train_error = Some(format!("screenshot: {e}")),
            }
            self.script.screenshot_taken();
            self.publish();
        }
    }

    fn run_script(&mut self, ctx: &egui::Context) {
        match self.script.next(&self.state) {
            Some(Action::ShowTab(t)) => self.tab = t,
            Some(Action::Generate(prompt)) => {
                self.state.chat.prompt = prompt;
                let cmd = self.state.generate();
                self.send_result(cmd);
            }
            Some(Action::StartTraining(n)) => {
                self.state.form.max_steps = n;
                let cmd = if self.script.resume {
                    self.state.resume_from_checkpoint()
                } else {
                    self.state.start_training()
                };
                self.send_result(cmd);
            }
            Some(Action::Screenshot(path)) => {
                self.shot_path = Some((path, self.state.shown(self.tab)));
                let tx = self.shots.0.clone();
                let ctx2 = ctx.clone();
                ctx.request_screenshot(move |img| {
                    let _ = tx.send(img);
                    ctx2.request_repaint();
                });
            }
            Some(Action::Close) => ctx.send_viewport_cmd(ViewportCommand::Close),
            None => {}
        }
        if self.script.busy() {
            ctx.request_repaint();
        }
    }

    fn handle_close(&mut self, ctx: &egui::Context) {
        if !ctx.input(|i| i.viewport().close_requested()) {
            return;
        }
        if matches!(self.state.shutdown, Shutdown::Done(_)) {
            return; // let it close
        }
        ctx.send_viewport_cmd(ViewportCommand::CancelClose);
        if let Some(cmd) = self.state.request_shutdown() {
            self.send(cmd);
        }
    }
}

impl eframe::App for App {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        if self.drain_events(ctx) {
            self.publish();
        }
        self.take_screenshots();
        self.run_script(ctx);
        self.handle_close(ctx);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        ui::show(self, ui);
    }

    fn on_exit(&mut self) {
        self.publish();
    }
}
