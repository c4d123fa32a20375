//! Scripted runs from the command line (`--screenshot-dir`, `--prompt`, `--demo-steps`,
//! `--exit`): wait for the model, screenshot it, ask a question, screenshot the answer,
//! train, screenshot the curves, close. Each screenshot waits for a few painted frames so
//! what it shows has caught up with the state.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use sluice::train::Stage;

use crate::state::{AppState, TrainStatus};
use crate::ui::Tab;

/// What the app should do this frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    ShowTab(Tab),
    Generate(String),
    StartTraining(usize),
    Screenshot(PathBuf),
    Close,
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    WaitModel,
    Show(Tab),
    Ask(String),
    WaitAnswer,
    Train(usize),
    /// Until an RL step is sampling (a step's busy state is on screen).
    WaitRollout,
    WaitTraining,
    /// A screenshot after this many painted frames.
    Shot(PathBuf, u32),
    Close,
}

/// Frames to paint before a screenshot (plots and text catch up).
const SETTLE_FRAMES: u32 = 3;
/// Frames before the screenshot of a running step (short: the step must still be running;
/// the spinner and stage line are drawn in the first frame).
const BUSY_SETTLE_FRAMES: u32 = 1;

/// The scripted run's progress.
#[derive(Debug, Clone)]
pub struct Script {
    pub demo_steps: Option<usize>,
    /// Continue the saved run instead of starting a new one.
    pub resume: bool,
    plan: VecDeque<Step>,
    settled: u32,
    shooting: bool,
}

/// What the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Screenshots go here: `loaded.png`, `generated.png`, `busy.png` (an RL step sampling),
    /// `training.png` (`restart-…` when resuming).
    pub screenshot_dir: Option<PathBuf>,
    pub prompt: Option<String>,
    pub demo_steps: Option<usize>,
    pub resume: bool,
    pub exit: bool,
}

impl Script {
    pub fn new(p: Plan) -> Self {
        let mut plan = VecDeque::new();
        let prefix = if p.resume { "restart-" } else { "" };
        let shot_after = |name: &str, dir: &Option<PathBuf>, frames: u32| {
            dir.as_deref()
                .map(|d: &Path| Step::Shot(d.join(format!("{prefix}{name}.png")), frames))
        };
        let shot = |name: &str, dir: &Option<PathBuf>| shot_after(name, dir, SETTLE_FRAMES);
        if p.screenshot_dir.is_some() || p.prompt.is_some() {
            plan.push_back(Step::WaitModel);
            // Resuming, the first look is at the saved run's curves.
            plan.push_back(Step::Show(if p.resume { Tab::Training } else { Tab::Chat }));
            plan.extend(shot("loaded", &p.screenshot_dir));
        }
        if let Some(q) = &p.prompt {
            plan.extend([
                Step::Show(Tab::Chat),
                Step::Ask(q.clone()),
                Step::WaitAnswer,
            ]);
            plan.extend(shot("generated", &p.screenshot_dir));
        }
        if let Some(n) = p.demo_steps.filter(|&n| n > 0) {
            plan.extend([Step::Show(Tab::Training), Step::Train(n)]);
            if p.screenshot_dir.is_some() {
                plan.push_back(Step::WaitRollout);
                plan.extend(shot_after("busy", &p.screenshot_dir, BUSY_SETTLE_FRAMES));
            }
            plan.push_back(Step::WaitTraining);
            plan.extend(shot("training", &p.screenshot_dir));
        }
        if p.exit {
            plan.push_back(Step::Close);
        }
        Script {
            demo_steps: p.demo_steps,
            resume: p.resume,
            plan,
            settled: 0,
            shooting: false,
        }
    }

    /// True while the script still has something to do (the app keeps repainting).
    pub fn busy(&self) -> bool {
        !self.plan.is_empty() || self.shooting
    }

    /// The screenshot was written (or failed; the failure is reported elsewhere).
    pub fn screenshot_taken(&mut self) {
        self.shooting = false;
    }

    /// Advances one frame.
    pub fn next(&mut self, state: &AppState) -> Option<Action> {
        while !self.shooting {
            let step = self.plan.front()?.clone();
            let action = match step {
                Step::WaitModel if state.model.is_none() && state.model_error.is_none() => {
                    return None;
                }
                Step::WaitAnswer if state.is_generating() => return None,
                Step::WaitTraining if !training_over(state) => return None,
                Step::WaitRollout if !rolling_out(state) && !training_over(state) => return None,
                Step::WaitModel | Step::WaitAnswer | Step::WaitTraining | Step::WaitRollout => None,
                Step::Show(t) => Some(Action::ShowTab(t)),
                Step::Ask(q) => Some(Action::Generate(q)),
                Step::Train(n) => Some(Action::StartTraining(n)),
                Step::Close => Some(Action::Close),
                Step::Shot(path, frames) => {
                    if self.settled < frames || state.model_loading {
                        self.settled += 1;
                        return None;
                    }
                    self.settled = 0;
                    self.shooting = true;
                    Some(Action::Screenshot(path))
                }
            };
            self.plan.pop_front();
            if action.is_some() {
                return action;
            }
        }
        None
    }
}

/// An RL step is sampling completions.
fn rolling_out(state: &AppState) -> bool {
    matches!(state.stage, Some((Stage::Rollout { .. }, _)))
}

/// The scripted training run ended (or failed to start).
fn training_over(state: &AppState) -> bool {
    !state.status.is_active() && state.status != TrainStatus::Idle
        || state.status == TrainStatus::Idle && state.train_error.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{EndReason, Event};
    use crate::state::tests::{info, model, state};

    fn run(script: &mut Script, state: &AppState, frames: usize) -> Vec<Action> {
        (0..frames).filter_map(|_| script.next(state)).collect()
    }

    #[test]
    fn shoots_loaded_asks_trains_shoots_closes() {
        let mut state = state();
        let mut s = Script::new(Plan {
            screenshot_dir: Some("shots".into()),
            prompt: Some("31415=".into()),
            demo_steps: Some(2),
            resume: false,
            exit: true,
        });
        assert!(run(&mut s, &state, 5).is_empty(), "waits for the model");
        state.apply(Event::ModelLoaded(model()));
        assert_eq!(run(&mut s, &state, 1), vec![Action::ShowTab(Tab::Chat)]);
        let acts = run(&mut s, &state, 10);
        assert_eq!(acts, vec![Action::Screenshot("shots/loaded.png".into())]);
        assert!(
            run(&mut s, &state, 5).is_empty(),
            "waits for the screenshot"
        );
        s.screenshot_taken();
        let acts = run(&mut s, &state, 2);
        assert_eq!(
            acts,
            vec![
                Action::ShowTab(Tab::Chat),
                Action::Generate("31415=".into())
            ]
        );
        state.chat.prompt = "31415=".into();
        state.generate().expect("generate");
        assert!(run(&mut s, &state, 5).is_empty(), "waits for the answer");
        state.apply(Event::GenerationDone {
            tokens: 1,
            seconds: 0.1,
            first_token_seconds: Some(0.05),
            stopped: false,
        });
        assert_eq!(
            run(&mut s, &state, 10),
            vec![Action::Screenshot("shots/generated.png".into())]
        );
        s.screenshot_taken();
        assert_eq!(
            run(&mut s, &state, 2),
            vec![Action::ShowTab(Tab::Training), Action::StartTraining(2)]
        );
        state.start_training().expect("start");
        state.apply(Event::TrainingStarted(info(1, 3, 0)));
        assert!(run(&mut s, &state, 10).is_empty(), "waits for a rollout");
        state.apply(Event::Stage(Stage::Rollout { completions: 4 }));
        assert_eq!(
            run(&mut s, &state, 3),
            vec![Action::Screenshot("shots/busy.png".into())]
        );
        s.screenshot_taken();
        assert!(run(&mut s, &state, 10).is_empty(), "waits for training");
        state.apply(Event::TrainingEnded(EndReason::StepLimit));
        assert_eq!(
            run(&mut s, &state, 10),
            vec![Action::Screenshot("shots/training.png".into())]
        );
        assert!(s.busy());
        s.screenshot_taken();
        assert_eq!(run(&mut s, &state, 5), vec![Action::Close]);
        assert!(!s.busy());
    }

    #[test]
    fn no_flags_means_no_actions() {
        let state = state();
        let mut s = Script::new(Plan::default());
        assert!(run(&mut s, &state, 20).is_empty());
        assert!(!s.busy());
    }

    #[test]
    fn a_failed_start_still_exits() {
        let mut state = state();
        state.form.hidden = 3;
        let mut s = Script::new(Plan {
            demo_steps: Some(2),
            exit: true,
            ..Plan::default()
        });
        assert_eq!(
            run(&mut s, &state, 2),
            vec![Action::ShowTab(Tab::Training), Action::StartTraining(2)]
        );
        assert!(state.start_training().is_err());
        assert_eq!(run(&mut s, &state, 10), vec![Action::Close]);
    }
}
