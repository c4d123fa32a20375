//! Sessions on a native file system: a recipe's model folder, data files and user programs
//! in, atomic checkpoints out (`<out>/checkpoint`, and `<out>/reference` for full fine-tuning's
//! frozen RL reference).

use std::path::{Path, PathBuf};

use super::{Session, SessionError, Trainee};
use crate::demo::vocab;
use crate::model::adapter;
use crate::model::load::{LoadOptions, WeightDtype};
use crate::model::tokenizer::Tokenizer;
use crate::model::{Config, HybridModel};
use crate::train::checkpoint::TrainerState;
use crate::train::files;
use crate::train::optim::AdamW;
use crate::train::recipe::Recipe;

/// Where a native session's files are.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// The recipe's folder: relative paths in the recipe are read from it, and user reward
    /// programs run in it.
    pub recipe_dir: PathBuf,
    /// The output folder (`<out>/checkpoint`, `<out>/reference`, ...); made if missing.
    pub out: PathBuf,
    /// Continue from `<out>/checkpoint`.
    pub resume: bool,
    /// On resume: accept a recipe that differs from the checkpoint's (the differences are
    /// returned by [`Session::open`] instead of refused).
    pub allow_recipe_change: bool,
}

impl OpenOptions {
    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.recipe_dir.join(p)
        }
    }

    /// A data file the recipe names, read from the recipe's folder.
    fn read_text(&self, p: &Path) -> Result<String, String> {
        let p = self.resolve(p);
        crate::fs::read_to_string(&p).map_err(|e| format!("reading {}: {e}", p.display()))
    }
}

/// The files saved next to a full model: the model folder's tokenizer and templates.
fn tokenizer_files(model_dir: Option<&Path>, demo: bool) -> Vec<(String, Vec<u8>)> {
    if demo {
        return vocab::tokenizer_files();
    }
    let Some(dir) = model_dir else { return vec![] };
    [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "generation_config.json",
    ]
    .iter()
    .filter_map(|n| {
        crate::fs::read(&dir.join(n))
            .ok()
            .map(|b| ((*n).to_string(), b))
    })
    .collect()
}

impl Session {
    /// Opens `recipe` on the autodiff `device`: the model (fresh, or `<out>/checkpoint` on
    /// resume), its tokenizer, the data files and the rewards. Returns the session and, on a
    /// resume that `allow_recipe_change` let through, the recipe's differences from the
    /// checkpoint's (`field: old → new`).
    pub fn open(
        recipe: Recipe,
        opts: &OpenOptions,
        device: &burn::tensor::Device,
    ) -> Result<(Self, Vec<String>), SessionError> {
        std::fs::create_dir_all(&opts.out)
            .map_err(|e| SessionError::Save(format!("creating {}: {e}", opts.out.display())))?;
        let demo = recipe.model.demo_hidden.is_some();
        let model_dir = recipe.model.path.as_ref().map(|p| opts.resolve(p));
        let tokenizer = if demo {
            None
        } else {
            model_dir.as_ref().and_then(|d| Tokenizer::from_dir(d).ok())
        };
        let extra = tokenizer_files(model_dir.as_deref(), demo);
        let trainee = start(&recipe, opts, model_dir.as_deref(), &extra, device)?;
        let changes = if opts.resume {
            recipe_changes(&recipe, &trainee.state, opts.allow_recipe_change)?
        } else {
            vec![]
        };
        let read = |p: &Path| opts.read_text(p);
        let mut session =
            Session::build(recipe, trainee, tokenizer, &read, &opts.recipe_dir, device)?;
        session.reference_dir = Some(opts.out.join("reference"));
        session.recipe_dir = Some(opts.recipe_dir.display().to_string());
        session.extra_files = extra;
        Ok((session, changes))
    }

    /// Writes the checkpoint to `dir` atomically: the adapters (LoRA) or the whole model,
    /// the AdamW moments and the trainer state (step, KL controller, recipe).
    pub fn save(&self, dir: &Path) -> Result<(), SessionError> {
        let state = self.checkpoint_state();
        match &self.lora_base {
            Some(base) => {
                files::save_adapter_checkpoint(dir, &self.model, &self.optimizer, &state, base)
            }
            None => files::save_checkpoint(
                dir,
                &self.config,
                &self.model,
                &self.optimizer,
                &state,
                &self.extra_files,
            ),
        }
        .map_err(|e| SessionError::Save(format!("saving {}: {e}", dir.display())))
    }

    pub(super) fn store_reference(&mut self, r: &HybridModel) -> Result<(), String> {
        match &self.reference_dir {
            Some(dir) => files::save_model_dir(dir, &self.config, r, &self.extra_files)
                .map_err(|e| format!("saving the RL reference {}: {e}", dir.display())),
            None => Ok(()),
        }
    }

    pub(super) fn load_reference(&self) -> Result<HybridModel, String> {
        let dir = self
            .reference_dir
            .as_ref()
            .ok_or("the RL reference model of a resumed run is not stored")?;
        let device = self.device.clone().inner();
        crate::model::files::load_model(dir, &device)
            .map(|(_, m)| m)
            .map_err(|e| format!("loading the RL reference {}: {e}", dir.display()))
    }
}

impl Session {
    /// Resumes the run saved in `dir` (files written by [`Session::checkpoint_files_async`],
    /// e.g. by the desktop app), whatever the recipe: full fine-tuning (with its RL
    /// reference) or LoRA over the base folder the recipe names. The recipe is the one
    /// stored with the checkpoint; its relative paths are the folder stored with it, else
    /// `recipe_dir`'s.
    pub fn resume_from_dir(
        dir: &Path,
        recipe_dir: &Path,
        device: &burn::tensor::Device,
    ) -> Result<Self, SessionError> {
        let bad = |m: String| SessionError::Load(format!("{}: {m}", dir.display()));
        let state_json = crate::fs::read_to_string(&dir.join(crate::train::checkpoint::STATE_FILE))
            .map_err(|e| bad(format!("{}: {e}", crate::train::checkpoint::STATE_FILE)))?;
        let state = TrainerState::from_json(&state_json).map_err(|e| bad(e.to_string()))?;
        let recipe = super::files::stored_recipe(&state)?;
        let stored_dir = (state.metadata.get("recipe_dir")).and_then(|d| d.as_str());
        let recipe_dir = stored_dir.map_or_else(|| recipe_dir.to_path_buf(), PathBuf::from);
        let opts = OpenOptions {
            out: recipe_dir.join(&recipe.out),
            recipe_dir,
            resume: true,
            allow_recipe_change: false,
        };
        let model_dir = recipe.model.path.as_ref().map(|p| opts.resolve(p));
        let trainee = match &recipe.lora {
            None => {
                let r = files::load_checkpoint(dir, device).map_err(|e| bad(e.to_string()))?;
                Trainee {
                    config: r.config,
                    model: r.model,
                    optimizer: r.optimizer,
                    state: r.state,
                    lora_base: None,
                }
            }
            Some(_) => {
                // A demo base was written to `<out>/base` when the run started.
                let base_dir = model_dir.clone().unwrap_or_else(|| opts.out.join("base"));
                let (config, base) = load_base(&recipe, &base_dir, device)?;
                let (model, optimizer, state) =
                    files::load_adapter_checkpoint(dir, &config, base, device)
                        .map_err(|e| bad(e.to_string()))?;
                Trainee {
                    config,
                    model,
                    optimizer,
                    state,
                    lora_base: Some(base_dir.display().to_string()),
                }
            }
        };
        let tokenizer = model_dir.as_ref().and_then(|d| Tokenizer::from_dir(d).ok());
        let read = |p: &Path| opts.read_text(p);
        let mut session =
            Session::build(recipe, trainee, tokenizer, &read, &opts.recipe_dir, device)?;
        session.extra_files = tokenizer_files(model_dir.as_deref(), session.demo);
        let reference = dir.join(super::REFERENCE_FILE);
        if reference.exists() {
            let bytes = crate::fs::read(&reference)
                .map_err(|e| bad(format!("{}: {e}", super::REFERENCE_FILE)))?;
            let r = super::files::reference_model(&session.config, bytes, device).map_err(bad)?;
            session.reference = Some(r);
        } else if session.reference_due() {
            // `sluice train` keeps the reference in `<out>/reference`: loaded at the next step.
            let kept = opts.out.join("reference");
            if !kept.join("config.json").is_file() {
                return Err(bad(format!(
                    "`{}` is missing (the RL phase's KL reference), and so is {}",
                    super::REFERENCE_FILE,
                    kept.display()
                )));
            }
            session.reference_dir = Some(kept);
        }
        Ok(session)
    }
}

/// The frozen LoRA base, held as `[model] dtype` says (16-bit files stay 16-bit by default).
fn load_base(
    recipe: &Recipe,
    base_dir: &Path,
    ad: &burn::tensor::Device,
) -> Result<(Config, HybridModel), SessionError> {
    let load_opts = LoadOptions {
        dtype: recipe.model.dtype.unwrap_or(WeightDtype::Auto),
        ..LoadOptions::default()
    };
    crate::model::files::load_model_with(base_dir, ad, load_opts, &mut |_, _| {})
        .map_err(|e| SessionError::Load(format!("loading the base {}: {e}", base_dir.display())))
}

/// On resume: the recipe must equal the checkpoint's (its `out` aside) unless `allow`;
/// returns the differences that were allowed.
fn recipe_changes(
    recipe: &Recipe,
    state: &TrainerState,
    allow: bool,
) -> Result<Vec<String>, SessionError> {
    let Some(stored) = state.metadata.get("recipe") else {
        return Ok(vec![
            "the checkpoint stores no recipe; it cannot be compared".into(),
        ]);
    };
    let diff = recipe.differences(stored);
    if diff.is_empty() || allow {
        return Ok(diff);
    }
    Err(SessionError::Recipe(format!(
        "--resume: the recipe differs from the one the checkpoint was trained with:\n  {}\n\
         (pass --allow-recipe-change to continue anyway)",
        diff.join("\n  ")
    )))
}

/// The model, optimizer and state to train: fresh, or from `<out>/checkpoint` on resume.
/// With `[lora]` the base is loaded frozen (16-bit where `[model] dtype` says) and gets fresh
/// adapters, or the checkpoint's; a demo base is written to `<out>/base` so that the adapters
/// have a base to resume and generate from.
fn start(
    recipe: &Recipe,
    opts: &OpenOptions,
    model_dir: Option<&Path>,
    extra: &[(String, Vec<u8>)],
    ad: &burn::tensor::Device,
) -> Result<Trainee, SessionError> {
    let ckpt_dir = opts.out.join("checkpoint");
    let load = |what: &str, dir: &Path, e: &dyn std::fmt::Display| {
        SessionError::Load(format!("{what} {}: {e}", dir.display()))
    };
    let Some(lora) = &recipe.lora else {
        if opts.resume {
            let r = files::load_checkpoint(&ckpt_dir, ad)
                .map_err(|e| load("--resume: loading", &ckpt_dir, &e))?;
            return Ok(Trainee {
                config: r.config,
                model: r.model,
                optimizer: r.optimizer,
                state: r.state,
                lora_base: None,
            });
        }
        let (config, model) = fresh_model(recipe, model_dir, ad)?;
        return Ok(Trainee {
            config,
            model,
            optimizer: AdamW::new(recipe.optim.clone()),
            state: TrainerState::default(),
            lora_base: None,
        });
    };
    let base_dir = match model_dir {
        Some(d) => d.to_path_buf(),
        None => {
            let d = opts.out.join("base");
            if !opts.resume {
                let (config, model) = fresh_model(recipe, None, ad)?;
                files::save_model_dir(&d, &config, &model, extra)
                    .map_err(|e| SessionError::Save(format!("saving {}: {e}", d.display())))?;
            }
            d
        }
    };
    let (config, base) = load_base(recipe, &base_dir, ad)?;
    let (model, optimizer, state) = if opts.resume {
        files::load_adapter_checkpoint(&ckpt_dir, &config, base, ad)
            .map_err(|e| load("--resume: loading", &ckpt_dir, &e))?
    } else {
        let (model, _) = adapter::attach(base, config.family, lora, recipe.seed, ad)
            .map_err(|e| SessionError::Recipe(format!("[lora]: {e}")))?;
        (
            model,
            AdamW::new(recipe.optim.clone()),
            TrainerState::default(),
        )
    };
    Ok(Trainee {
        config,
        model,
        optimizer,
        state,
        lora_base: Some(base_dir.display().to_string()),
    })
}

/// A fresh model: the folder's weights (f32, trainable) or a new demo model.
fn fresh_model(
    recipe: &Recipe,
    model_dir: Option<&Path>,
    ad: &burn::tensor::Device,
) -> Result<(Config, HybridModel), SessionError> {
    match (model_dir, recipe.model.demo_hidden) {
        (Some(d), _) => crate::model::files::load_model(d, ad)
            .map_err(|e| SessionError::Load(format!("loading {}: {e}", d.display()))),
        (None, Some(h)) => {
            let c = vocab::model_config(h)
                .map_err(|e| SessionError::Recipe(format!("[model] `demo_hidden` = {e}")))?;
            let m = crate::model::init::init_model(&c, recipe.seed, ad);
            Ok((c, m))
        }
        (None, None) => Err(SessionError::Recipe(
            "[model]: no `path` and no `demo_hidden`".into(),
        )),
    }
}
