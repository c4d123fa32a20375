//! Scripted runs from the command line (`--demo-steps`, `--screenshot`, `--exit`): train,
//! let the final state paint, take the screenshot, close.

use std::path::PathBuf;

use crate::state::{AppState, TrainStatus};

/// What the app should do this frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    StartTraining(usize),
    Screenshot(PathBuf),
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Start,
    Training,
    /// Frames painted since the work ended.
    Settle(u32),
    Shooting,
    Closing,
    Done,
}

/// Frames to paint after the work ends before the screenshot (the plots catch up).
const SETTLE_FRAMES: u32 = 3;

/// The scripted run's progress.
#[derive(Debug, Clone)]
pub struct Script {
    pub demo_steps: Option<usize>,
    pub screenshot: Option<PathBuf>,
    pub exit: bool,
    /// Continue the saved run instead of starting a new one.
    pub resume: bool,
    stage: Stage,
    shot_done: bool,
}

impl Script {
    pub fn new(demo_steps: Option<usize>, screenshot: Option<PathBuf>, exit: bool) -> Self {
        Script {
            demo_steps,
            screenshot,
            exit,
            resume: false,
            stage: Stage::Start,
            shot_done: false,
        }
    }

    /// True while the script still has something to do (the app keeps repainting).
    pub fn busy(&self) -> bool {
        self.stage != Stage::Done
    }

    /// The screenshot was written (or failed; the failure is reported elsewhere).
    pub fn screenshot_taken(&mut self) {
        self.shot_done = true;
    }

    /// Advances one frame.
    pub fn next(&mut self, state: &AppState) -> Option<Action> {
        match self.stage {
            Stage::Start => match self.demo_steps {
                Some(n) if n > 0 => {
                    self.stage = Stage::Training;
                    Some(Action::StartTraining(n))
                }
                _ => {
                    self.stage = Stage::Settle(0);
                    None
                }
            },
            Stage::Training => {
                if !state.status.is_active() && state.status != TrainStatus::Idle
                    || state.status == TrainStatus::Idle && state.train_error.is_some()
                {
                    self.stage = Stage::Settle(0);
                }
                None
            }
            Stage::Settle(n) => {
                if n < SETTLE_FRAMES || state.model_loading {
                    self.stage = Stage::Settle(n + 1);
                    return None;
                }
                match &self.screenshot {
                    Some(p) => {
                        self.stage = Stage::Shooting;
                        Some(Action::Screenshot(p.clone()))
                    }
                    None => {
                        self.stage = Stage::Closing;
                        None
                    }
                }
            }
            Stage::Shooting => {
                if self.shot_done {
                    self.stage = Stage::Closing;
                }
                None
            }
            Stage::Closing => {
                self.stage = Stage::Done;
                self.exit.then_some(Action::Close)
            }
            Stage::Done => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{EndReason, Event, RunInfo};
    use crate::state::TrainForm;
    use std::path::Path;

    fn run(script: &mut Script, state: &AppState, frames: usize) -> Vec<Action> {
        (0..frames).filter_map(|_| script.next(state)).collect()
    }

    #[test]
    fn trains_then_shoots_then_closes() {
        let mut state = AppState::new(TrainForm::tiny(), Path::new("c"));
        let mut s = Script::new(Some(2), Some("out.png".into()), true);
        assert_eq!(s.next(&state), Some(Action::StartTraining(2)));
        state.start_training().expect("start");
        state.apply(Event::TrainingStarted(RunInfo {
            task: "sort".into(),
            preset: "grpo".into(),
            parameters: 1,
            sft_steps: 1,
            rl_steps: 3,
            done: 0,
            resumed_from: None,
        }));
        assert!(run(&mut s, &state, 10).is_empty(), "waits for training");
        state.apply(Event::TrainingEnded(EndReason::StepLimit));
        let acts = run(&mut s, &state, 10);
        assert_eq!(acts, vec![Action::Screenshot("out.png".into())]);
        assert!(s.busy());
        s.screenshot_taken();
        assert_eq!(run(&mut s, &state, 5), vec![Action::Close]);
        assert!(!s.busy());
    }

    #[test]
    fn no_flags_means_no_actions() {
        let state = AppState::new(TrainForm::tiny(), Path::new("c"));
        let mut s = Script::new(None, None, false);
        assert!(run(&mut s, &state, 20).is_empty());
        assert!(!s.busy());
    }

    #[test]
    fn a_failed_start_still_exits() {
        let mut state = AppState::new(TrainForm::tiny(), Path::new("c"));
        state.form.hidden = 3;
        let mut s = Script::new(Some(2), None, true);
        assert_eq!(s.next(&state), Some(Action::StartTraining(2)));
        assert!(state.start_training().is_err());
        assert_eq!(run(&mut s, &state, 10), vec![Action::Close]);
    }
}
