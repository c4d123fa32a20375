//! The JavaScript interface: `Session` owns one [`Engine`]; every method returns a Promise,
//! results are JSON strings (checkpoints: arrays of `[name, Uint8Array]`), errors are
//! strings meant for the page.

use std::cell::RefCell;
use std::rc::Rc;

use burn::tensor::Device;
use js_sys::{Array, Function, Promise, Uint8Array};
use serde_json::{Value, json};
use sluice::model::generate::Sampling;
use sluice::train::Stage;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::engine::{Engine, Error, GenerateRequest};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(s: &str);
}

/// Rust panics go to the console (they abort the call; the worker reports the failure).
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error(&format!("sluice panicked: {info}"))
    }));
}

type Shared = Rc<RefCell<Option<Engine>>>;

/// One engine on one WebGPU device. Calls must not overlap (the worker queues them); an
/// overlapping call fails with "busy".
#[wasm_bindgen]
pub struct Session {
    engine: Shared,
    adapter: String,
}

fn js_err(e: Error) -> JsValue {
    JsValue::from_str(&e)
}

fn json_str(v: &Value) -> JsValue {
    JsValue::from_str(&v.to_string())
}

/// Runs `f` on the engine (taken out of the cell for the duration, so no borrow is held
/// across an await) and turns its result into a Promise.
fn with_engine<F, Fut>(shared: &Shared, f: F) -> Promise
where
    F: FnOnce(Engine) -> Fut + 'static,
    Fut: std::future::Future<Output = (Engine, Result<JsValue, Error>)> + 'static,
{
    let shared = shared.clone();
    future_to_promise(async move {
        let engine = shared
            .borrow_mut()
            .take()
            .ok_or_else(|| js_err("the engine is busy with another call".into()))?;
        let (engine, out) = f(engine).await;
        *shared.borrow_mut() = Some(engine);
        out.map_err(js_err)
    })
}

fn sampling_from_json(s: &str) -> Result<Option<Sampling>, Error> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(s).map_err(|e| format!("sampling settings: {e}"))?;
    let d = Sampling::default();
    let f = |k: &str, def: f32| v.get(k).and_then(Value::as_f64).map_or(def, |x| x as f32);
    let s = Sampling {
        temperature: f("temperature", d.temperature),
        top_k: v.get("top_k").and_then(Value::as_u64).unwrap_or(0) as usize,
        top_p: f("top_p", d.top_p),
        min_p: f("min_p", d.min_p),
        repetition_penalty: f("repetition_penalty", d.repetition_penalty),
        seed: v.get("seed").and_then(Value::as_u64).unwrap_or(0),
    };
    if !(s.temperature >= 0.0 && s.top_p > 0.0 && s.top_p <= 1.0 && s.repetition_penalty > 0.0) {
        return Err(
            "sampling settings: need temperature ≥ 0, 0 < top_p ≤ 1, repetition penalty > 0".into(),
        );
    }
    Ok(Some(s))
}

fn files_from_js(files: &Array) -> Result<Vec<(String, Vec<u8>)>, Error> {
    files
        .iter()
        .map(|pair| {
            let pair: Array = pair
                .dyn_into()
                .map_err(|_| "expected [name, bytes] pairs")?;
            let name = pair
                .get(0)
                .as_string()
                .ok_or("a file name is not a string")?;
            let bytes: Uint8Array = pair
                .get(1)
                .dyn_into()
                .map_err(|_| format!("{name}: expected a Uint8Array"))?;
            Ok((name, bytes.to_vec()))
        })
        .collect()
}

#[wasm_bindgen]
impl Session {
    /// Initialises Burn's wgpu runtime on the browser's WebGPU adapter.
    pub async fn create() -> Result<Session, JsValue> {
        let (device, setup) = Device::wgpu_options()
            .init_with_setup_async()
            .await
            .map_err(|e| JsValue::from_str(&format!("WebGPU initialisation failed: {e}")))?;
        let info = setup.adapter.get_info();
        let adapter = json!({
            "name": info.name,
            "vendor": info.vendor,
            "driver": info.driver,
            "backend": format!("{:?}", info.backend),
            "device_type": format!("{:?}", info.device_type),
        });
        Ok(Session {
            engine: Rc::new(RefCell::new(Some(Engine::new(device, performance_now)))),
            adapter: adapter.to_string(),
        })
    }

    /// The adapter wgpu picked, as JSON.
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> String {
        self.adapter.clone()
    }

    /// Loads a model from its files' bytes → JSON summary.
    #[wasm_bindgen(js_name = loadModel)]
    pub fn load_model(
        &self,
        config_json: String,
        safetensors: Vec<u8>,
        tokenizer_json: Option<Vec<u8>>,
    ) -> Promise {
        with_engine(&self.engine, move |mut e| async move {
            let r = e.load_model(&config_json, safetensors, tokenizer_json.as_deref());
            (e, r.map(|v| json_str(&v)))
        })
    }

    /// Generates from `prompt` (text, or comma-separated ids without a tokenizer);
    /// `sampling` is JSON (`{"temperature", "top_k", "top_p", "min_p",
    /// "repetition_penalty", "seed"}`, empty: greedy). `on_token(id, textPiece)` streams;
    /// returning `false` from it stops. → JSON with ids, text and timings.
    pub fn generate(
        &self,
        prompt: String,
        max_new_tokens: u32,
        sampling: String,
        on_token: Function,
    ) -> Promise {
        with_engine(&self.engine, move |e| async move {
            let req = match sampling_from_json(&sampling) {
                Ok(s) => GenerateRequest {
                    prompt,
                    max_new_tokens: max_new_tokens as usize,
                    sampling: s,
                },
                Err(err) => return (e, Err(err)),
            };
            let r = e
                .generate(&req, |tok, piece| {
                    let ret = on_token.call2(
                        &JsValue::NULL,
                        &JsValue::from(tok),
                        &JsValue::from_str(piece),
                    );
                    !matches!(ret, Ok(v) if v == JsValue::FALSE)
                })
                .await;
            (e, r.map(|g| json_str(&g.to_json())))
        })
    }

    /// Starts a demo training run (`settings`: JSON object of `DemoConfig` overrides).
    #[wasm_bindgen(js_name = trainStart)]
    pub fn train_start(&self, settings: String, from_scratch: bool) -> Promise {
        with_engine(&self.engine, move |mut e| async move {
            let r = e.train_start(&settings, from_scratch);
            (e, r.map(|v| json_str(&v)))
        })
    }

    /// One training step → its JSON record, or `null` when the run is over;
    /// `on_stage(name, completions)` hears each part of the step begin (`"rollout"` with the
    /// number of completions being sampled, `"update"` with 0).
    #[wasm_bindgen(js_name = trainStep)]
    pub fn train_step(&self, on_stage: Function) -> Promise {
        with_engine(&self.engine, move |mut e| async move {
            let mut report = |stage: Stage| {
                let n = match stage {
                    Stage::Rollout { completions } => completions,
                    Stage::Update => 0,
                    Stage::Evaluate { problems } => problems,
                };
                // A failing progress callback must not stop training.
                let _ = on_stage.call2(
                    &JsValue::NULL,
                    &JsValue::from_str(stage.name()),
                    &JsValue::from(n as u32),
                );
            };
            let r = e.train_step(&mut report).await;
            (e, r.map(|v| v.map_or(JsValue::NULL, |v| json_str(&v))))
        })
    }

    /// Held-out accuracy → JSON.
    pub fn evaluate(&self) -> Promise {
        with_engine(&self.engine, |e| async move {
            let r = e.evaluate().await;
            (e, r.map(|v| json_str(&v)))
        })
    }

    /// The current run or model as an array of `[name, Uint8Array]`.
    #[wasm_bindgen(js_name = checkpointFiles)]
    pub fn checkpoint_files(&self) -> Promise {
        with_engine(&self.engine, |e| async move {
            let r = e.checkpoint_files().await.map(|files| {
                let out = Array::new();
                for (name, bytes) in files {
                    out.push(&Array::of2(
                        &JsValue::from_str(&name),
                        &Uint8Array::from(bytes.as_slice()),
                    ));
                }
                out.into()
            });
            (e, r)
        })
    }

    /// Starts a training run from a recipe's TOML text (the CLI's `sluice train` format; a
    /// demo recipe, or the loaded model as the recipe's model) → JSON info.
    #[wasm_bindgen(js_name = trainRecipe)]
    pub fn train_recipe(&self, recipe: String) -> Promise {
        with_engine(&self.engine, move |mut e| async move {
            let r = e.train_recipe(&recipe);
            (e, r.map(|v| json_str(&v)))
        })
    }

    /// Registers `f(samples) → scores` (or a Promise of them) as the reward the next
    /// recipe's `{ kind = "user", name }` entries use; see `js_reward.rs`.
    #[wasm_bindgen(js_name = setReward)]
    pub fn set_reward(&self, name: String, f: Function) -> Result<(), JsValue> {
        let mut cell = (self.engine.try_borrow_mut())
            .map_err(|_| JsValue::from_str("busy: another call is running"))?;
        let engine = cell
            .as_mut()
            .ok_or_else(|| JsValue::from_str("busy: another call is running"))?;
        let reward = crate::js_reward::JsReward {
            name: name.clone(),
            f,
        };
        engine.set_reward(&name, Box::new(reward));
        Ok(())
    }

    /// Resumes a run (files with `trainer_state.json`) or loads a model folder's files.
    pub fn restore(&self, files: Array) -> Promise {
        let files = files_from_js(&files);
        with_engine(&self.engine, move |mut e| async move {
            let r = files.and_then(|f| e.restore(f));
            (e, r.map(|v| json_str(&v)))
        })
    }

    /// JSON summary of the model and the training run.
    pub fn info(&self) -> String {
        match self.engine.try_borrow() {
            Ok(g) => g.as_ref().map_or_else(
                || json!({"busy": true}).to_string(),
                |e| e.info().to_string(),
            ),
            Err(_) => json!({"busy": true}).to_string(),
        }
    }
}
