//! A session's checkpoint as in-memory files, for front ends without a file system (the
//! browser's OPFS, the desktop app's save folder): the model (or adapters), AdamW moments,
//! trainer state with the recipe, and full fine-tuning's RL reference.

use std::collections::BTreeMap;
use std::path::Path;

use super::{ReadText, Session, SessionError, Trainee};
use crate::model::weights::{Buffer, Weights};
use crate::train::checkpoint::{
    CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, TrainerState,
    adapter_checkpoint_files_async, checkpoint_files_async, restore,
};
use crate::train::recipe::Recipe;

/// The frozen RL reference model's file, next to the policy's `model.safetensors`.
pub const REFERENCE_FILE: &str = "reference.safetensors";

impl Session {
    /// The checkpoint as `(file name, bytes)`, the trainer state last;
    /// [`Session::restore`] continues the run bit-identically from them.
    pub async fn checkpoint_files_async(&self) -> Result<Vec<(String, Vec<u8>)>, SessionError> {
        let err = |e: &dyn std::fmt::Display| SessionError::Save(format!("checkpoint: {e}"));
        let state = self.checkpoint_state();
        if let Some(base) = &self.lora_base {
            return adapter_checkpoint_files_async(&self.model, &self.optimizer, &state, base)
                .await
                .map_err(|e| err(&e));
        }
        let mut files = checkpoint_files_async(&self.config, &self.model, &self.optimizer, &state)
            .await
            .map_err(|e| err(&e))?;
        if let Some(reference) = &self.reference {
            let bytes = crate::model::save::model_safetensors(&self.config, reference)
                .await
                .map_err(|e| err(&e))?;
            files.insert(files.len() - 1, (REFERENCE_FILE.into(), bytes));
        }
        Ok(files)
    }

    /// Resumes a full fine-tuning run from [`Session::checkpoint_files_async`]'s files (any
    /// order) on the autodiff `device`; the recipe is the one stored with them. `read` and
    /// `dir` serve the recipe's data files and user programs as in [`Session::build`].
    pub fn restore(
        files: Vec<(String, Vec<u8>)>,
        read: ReadText,
        dir: &Path,
        device: &burn::tensor::Device,
    ) -> Result<Self, SessionError> {
        let mut files: BTreeMap<String, Vec<u8>> = files.into_iter().collect();
        let bad = |m: String| SessionError::Load(format!("checkpoint: {m}"));
        let mut take = |name: &str| {
            files
                .remove(name)
                .ok_or_else(|| bad(format!("`{name}` is missing")))
        };
        let text = |name: &str, b: Vec<u8>| {
            String::from_utf8(b).map_err(|_| bad(format!("{name}: not UTF-8")))
        };
        let state_json = text(STATE_FILE, take(STATE_FILE)?)?;
        let state = TrainerState::from_json(&state_json).map_err(|e| bad(e.to_string()))?;
        let recipe = stored_recipe(&state)?;
        if recipe.lora.is_some() {
            return Err(bad(
                "a LoRA checkpoint is restored over its base model's folder (`sluice train \
                 --resume`), not from files alone"
                    .into(),
            ));
        }
        let config_json = text(CONFIG_FILE, take(CONFIG_FILE)?)?;
        let model: Buffer = Box::new(take(MODEL_FILE)?);
        let optimizer = take(OPTIMIZER_FILE)?;
        let r = restore(&config_json, model, &optimizer, &state_json, device)
            .map_err(|e| bad(e.to_string()))?;
        let trainee = Trainee {
            config: r.config,
            model: r.model,
            optimizer: r.optimizer,
            state: r.state,
            lora_base: None,
        };
        // A model's own tokenizer travels with its checkpoint (the demo's is built in).
        let tokenizer = match files.remove("tokenizer.json") {
            Some(bytes) if recipe.model.demo_hidden.is_none() => Some(
                crate::model::tokenizer::Tokenizer::from_bytes(&bytes)
                    .map_err(|e| bad(format!("tokenizer.json: {e}")))?,
            ),
            _ => None,
        };
        let mut session = Session::build(recipe, trainee, tokenizer, read, dir, device)?;
        let reference = files.remove(REFERENCE_FILE);
        if reference.is_none() && session.reference_due() {
            return Err(bad(format!(
                "`{REFERENCE_FILE}` is missing (the RL phase's KL reference)"
            )));
        }
        if let Some(bytes) = reference {
            let r = reference_model(&session.config, bytes, device).map_err(bad)?;
            session.reference = Some(r);
        }
        Ok(session)
    }
}

/// The RL reference from [`REFERENCE_FILE`]'s bytes, on `device`'s inner (no autodiff)
/// device.
pub(super) fn reference_model(
    config: &crate::model::Config,
    bytes: Vec<u8>,
    device: &burn::tensor::Device,
) -> Result<crate::model::HybridModel, String> {
    let weights = Weights::new(vec![(
        REFERENCE_FILE.to_string(),
        Box::new(bytes) as Buffer,
    )])
    .map_err(|e| format!("{REFERENCE_FILE}: {e}"))?;
    crate::model::load::build(config, &weights, &device.clone().inner())
        .map_err(|e| format!("{REFERENCE_FILE}: {e}"))
}

/// The recipe saved in a checkpoint's trainer state.
pub(super) fn stored_recipe(state: &TrainerState) -> Result<Recipe, SessionError> {
    let v = state.metadata.get("recipe").ok_or_else(|| {
        SessionError::Load(format!("checkpoint: {STATE_FILE} has no `metadata.recipe`"))
    })?;
    let recipe: Recipe = serde_json::from_value(v.clone()).map_err(|e| {
        SessionError::Load(format!("checkpoint: {STATE_FILE} `metadata.recipe`: {e}"))
    })?;
    recipe
        .checked()
        .map_err(|e| SessionError::Load(format!("checkpoint: {STATE_FILE} `metadata.recipe`: {e}")))
}
