//! AdamW with global-norm gradient clipping, gradient accumulation and non-finite skipping.
//!
//! Semantics follow `torch.optim.AdamW` (single-tensor path) after
//! `torch.nn.utils.clip_grad_norm_`; for each parameter with a gradient, at step t:
//! ```text
//! ‖g‖ = sqrt(Σ_params Σ g²)                      (one norm over ALL parameters)
//! g  ← g · min(1, max_norm / (‖g‖ + 1e-6))        (when max_grad_norm is set)
//! p  ← p · (1 − lr·wd)                           (decoupled decay; decayed params only)
//! m  ← m + (1 − β1)(g − m)        v ← β2·v + (1 − β2)·g²
//! p  ← p − lr/(1 − β1^t) · m / (sqrt(v)/sqrt(1 − β2^t) + ε)      (ε outside the sqrt)
//! ```
//! Gradients of several micro-batches are summed in [`Grads`] before one step (scale each
//! micro-batch loss, e.g. by 1/number of micro-batches, for a mean). A non-finite loss or
//! gradient skips the step: weights, moments and the step count stay as they were, with a
//! `tracing::warn`. With a finite gradient, a finite learning rate ≥ 0 (else an error) and
//! ε > 0 the update cannot leave the finite range short of an f32 overflow; to refuse that
//! case too, the update is first computed without being stored and checked (parameter by
//! parameter, so no second copy of the model is held), and applied only when every new
//! value is finite — otherwise the step is skipped like the others
//! ([`SkipReason::NonFiniteUpdate`]). The checks need two host readbacks per step
//! ([`AdamW::step_async`]; [`AdamW::step`] blocks, native only).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use burn::tensor::{Gradients, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::HybridModel;
use crate::model::random::FileDtype;
use crate::model::save::{ParamMut, ParamRef, SaveError, named_params, named_params_mut};
use crate::model::tensor_file::TensorWriter;
use safetensors::tensor::TensorView;

/// Errors of the optimizer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptimError {
    #[error("no gradients were accumulated before the optimizer step")]
    NoGradients,
    #[error("gradient for `{0}`, which is not a parameter of the model")]
    UnknownGradient(String),
    #[error("gradient for `{name}` has {got} elements, the parameter {want}")]
    GradientSize {
        name: String,
        got: usize,
        want: usize,
    },
    #[error("reading {what} from the device: {msg}")]
    Device { what: String, msg: String },
    #[error("learning rate {0}: must be a finite number ≥ 0")]
    LearningRate(f64),
    #[error("optimizer state: {0}")]
    State(String),
}

/// Which parameters get weight decay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecayRule {
    /// Parameters of rank ≥ 2 (embeddings, linear and conv weights); not norms, `A_log`,
    /// `dt_bias`. The usual LM recipe.
    Matrices,
    /// Every parameter (plain `torch.optim.AdamW` on `model.parameters()`).
    All,
    /// Parameters whose name contains any of these substrings.
    Names(Vec<String>),
}

impl DecayRule {
    /// Whether a parameter named `name` of shape `shape` is decayed.
    pub fn applies(&self, name: &str, shape: &[usize]) -> bool {
        match self {
            Self::Matrices => shape.len() >= 2,
            Self::All => true,
            Self::Names(pats) => pats.iter().any(|p| name.contains(p.as_str())),
        }
    }
}

/// AdamW hyper-parameters (the learning rate is given per step, from a schedule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    /// Added to `sqrt(v̂)` (outside the square root), as torch.
    pub eps: f64,
    /// Decoupled weight decay coefficient (multiplied by the step's learning rate).
    pub weight_decay: f64,
    /// Which parameters are decayed.
    pub decay: DecayRule,
    /// Clip the global gradient norm to this value (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
}

impl AdamWConfig {
    /// Checks every number (a NaN or negative learning-rate-like value never trains).
    pub fn validate(&self) -> crate::check::Checked {
        use crate::check::{half_open, non_negative, positive};
        half_open("beta1", self.beta1, 0.0, 1.0)?;
        half_open("beta2", self.beta2, 0.0, 1.0)?;
        positive("eps", self.eps)?;
        non_negative("weight_decay", self.weight_decay)?;
        if let Some(c) = self.max_grad_norm {
            positive("max_grad_norm", c)?;
        }
        Ok(())
    }
}

impl Default for AdamWConfig {
    /// torch's AdamW defaults (β = (0.9, 0.999), ε = 1e-8, wd = 0.01) on matrices only, and
    /// clipping at 1.0 as Hugging Face's Trainer does.
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            decay: DecayRule::Matrices,
            max_grad_norm: Some(1.0),
        }
    }
}

/// Gradients summed over micro-batches, by parameter name, flattened `[numel]`, plus the sum
/// of the micro-batch losses (checked for finiteness at the step).
#[derive(Debug, Default)]
pub struct Grads {
    grads: BTreeMap<String, Tensor<1>>,
    loss: Option<Tensor<1>>,
    micro_batches: usize,
}

impl Grads {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the gradients of every parameter of `model` found in `grads` (from
    /// `loss.backward()`), and `loss` (any shape; summed) when given.
    pub fn accumulate(&mut self, model: &HybridModel, grads: &Gradients, loss: Option<&Tensor<1>>) {
        self.add_params(model, grads);
        if let Some(l) = loss {
            self.add_loss(l.clone());
        }
        self.micro_batches += 1;
    }

    /// Adds the gradients of every parameter of `model` found in `grads`, as one more part of
    /// the current micro-batch (its loss and count are added by [`Self::accumulate`]).
    pub fn add_params(&mut self, model: &HybridModel, grads: &Gradients) {
        for (name, p) in named_params(model) {
            if let Some(g) = p.grad(grads) {
                self.add(name, g);
            }
        }
    }

    /// Adds `grad` (flattened `[numel]`, no autodiff association) for parameter `name`.
    pub fn add(&mut self, name: String, grad: Tensor<1>) {
        let grad = grad.inner();
        match self.grads.remove(&name) {
            Some(acc) => self.grads.insert(name, acc + grad),
            None => self.grads.insert(name, grad),
        };
    }

    /// Adds a loss value (summed to one element) to the finiteness check.
    pub fn add_loss(&mut self, loss: Tensor<1>) {
        let l = loss.inner().sum();
        self.loss = Some(match self.loss.take() {
            Some(acc) => acc + l,
            None => l,
        });
    }

    /// The accumulated gradient of `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor<1>> {
        self.grads.get(name)
    }

    /// Names with a gradient, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.grads.keys().map(String::as_str)
    }

    /// Number of [`accumulate`](Self::accumulate) calls.
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
}

/// First and second moments of one parameter, flattened `[numel]`.
#[derive(Debug, Clone)]
pub struct Moments {
    pub shape: Vec<usize>,
    pub exp_avg: Tensor<1>,
    pub exp_avg_sq: Tensor<1>,
}

/// Why a step was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    NonFiniteLoss,
    NonFiniteGradient,
    /// The update itself would have made a parameter non-finite (an f32 overflow).
    NonFiniteUpdate,
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// `None` when applied; the reason when skipped.
    pub skipped: Option<SkipReason>,
    /// Global gradient norm before clipping (non-finite when skipped for the gradient).
    pub grad_norm: f64,
    /// Factor the gradients were multiplied by (1 without clipping).
    pub clip_scale: f64,
    /// Sum of the accumulated losses (NaN when none were given).
    pub loss: f64,
    /// Optimizer step count after this call.
    pub step: u64,
    pub lr: f64,
}

/// Step-size terms of one AdamW step.
struct Coefficients {
    lr: f64,
    /// lr / (1 − β1^t).
    step_size: f64,
    /// √(1 − β2^t).
    bc2_sqrt: f64,
}

/// The first parameter whose candidate value holds a non-finite entry (`bad`: per
/// parameter, the count of such entries; one readback).
async fn first_bad(bad: Vec<(String, Tensor<1>)>) -> Result<Option<String>, OptimError> {
    let (names, counts): (Vec<String>, Vec<Tensor<1>>) = bad.into_iter().unzip();
    let host = crate::model::save::read_flat(Tensor::cat(counts, 0))
        .await
        .map_err(|msg| OptimError::Device {
            what: "the finiteness of the update".into(),
            msg,
        })?;
    Ok(host
        .iter()
        .position(|&n| n != 0.0)
        .map(|i| names[i].clone()))
}

/// AdamW state: hyper-parameters, step count, and moments by parameter name.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub config: AdamWConfig,
    step: u64,
    state: BTreeMap<String, Moments>,
}

/// Key of the safetensors metadata entry that holds the step and hyper-parameters.
const META_KEY: &str = "sluice_adamw";

#[derive(Serialize, Deserialize)]
struct Meta {
    step: u64,
    config: AdamWConfig,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            step: 0,
            state: BTreeMap::new(),
        }
    }

    /// Steps applied so far (skipped steps do not count).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Moments of parameter `name` (created at its first applied step).
    pub fn moments(&self, name: &str) -> Option<&Moments> {
        self.state.get(name)
    }

    /// One step on every parameter of `model` with a gradient in `grads`, at learning rate
    /// `lr`. Consumes the accumulated gradients.
    pub async fn step_async(
        &mut self,
        model: &mut HybridModel,
        grads: Grads,
        lr: f64,
    ) -> Result<StepReport, OptimError> {
        let mut params = named_params_mut(model);
        self.step_params_async(&mut params, grads, lr).await
    }

    /// Blocking [`step_async`](Self::step_async) (native only).
    #[cfg(not(target_family = "wasm"))]
    pub fn step(
        &mut self,
        model: &mut HybridModel,
        grads: Grads,
        lr: f64,
    ) -> Result<StepReport, OptimError> {
        pollster::block_on(self.step_async(model, grads, lr))
    }

    /// [`step_async`](Self::step_async) on any set of named parameters (e.g. a subset, or
    /// tensors outside a `HybridModel`).
    pub async fn step_params_async(
        &mut self,
        params: &mut [(String, ParamMut<'_>)],
        grads: Grads,
        lr: f64,
    ) -> Result<StepReport, OptimError> {
        if grads.is_empty() {
            return Err(OptimError::NoGradients);
        }
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(OptimError::LearningRate(lr));
        }
        let index: HashMap<String, usize> = params
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect();
        for (name, g) in &grads.grads {
            let i = *index
                .get(name)
                .ok_or_else(|| OptimError::UnknownGradient(name.clone()))?;
            let want = params[i].1.as_ref().numel();
            let got = g.dims()[0];
            if got != want {
                return Err(OptimError::GradientSize {
                    name: name.clone(),
                    got,
                    want,
                });
            }
        }

        // One readback: [Σ g², number of non-finite gradient entries, loss].
        let device = grads.grads.values().next().expect("non-empty").device();
        let mut sq: Option<Tensor<1>> = None;
        let mut bad: Option<Tensor<1>> = None;
        for g in grads.grads.values() {
            let s = g.clone().square().sum();
            let b = g.clone().is_finite().bool_not().float().sum();
            sq = Some(match sq {
                Some(a) => a + s,
                None => s,
            });
            bad = Some(match bad {
                Some(a) => a + b,
                None => b,
            });
        }
        let loss = grads
            .loss
            .clone()
            .unwrap_or_else(|| Tensor::<1>::zeros([1], &device));
        let probe = Tensor::cat(
            vec![sq.expect("non-empty"), bad.expect("non-empty"), loss],
            0,
        );
        let host =
            crate::model::save::read_flat(probe)
                .await
                .map_err(|msg| OptimError::Device {
                    what: "the gradient norm".into(),
                    msg,
                })?;
        let (sum_sq, n_bad) = (host[0], host[1]);
        let loss = if grads.loss.is_some() {
            f64::from(host[2])
        } else {
            f64::NAN
        };
        let norm = sum_sq.sqrt();
        let mut report = StepReport {
            skipped: None,
            grad_norm: f64::from(norm),
            clip_scale: 1.0,
            loss,
            step: self.step,
            lr,
        };
        if grads.loss.is_some() && !loss.is_finite() {
            tracing::warn!(
                step = self.step,
                loss,
                "non-finite loss: optimizer step skipped"
            );
            report.skipped = Some(SkipReason::NonFiniteLoss);
            return Ok(report);
        }
        if n_bad != 0.0 || !norm.is_finite() {
            tracing::warn!(
                step = self.step,
                grad_norm = report.grad_norm,
                "non-finite gradient: optimizer step skipped"
            );
            report.skipped = Some(SkipReason::NonFiniteGradient);
            return Ok(report);
        }
        // As clip_grad_norm_: scale = clamp(max_norm / (norm + 1e-6), max = 1), in f32.
        let scale = self
            .config
            .max_grad_norm
            .map(|m| (m as f32 / (norm + 1e-6)).min(1.0));
        report.clip_scale = scale.map_or(1.0, f64::from);

        // Pass 1: would the update make any parameter non-finite? Nothing is changed yet,
        // and each parameter's candidate is dropped as soon as it is counted.
        let k = self.coefficients(lr, self.step + 1);
        let mut bad: Vec<(String, Tensor<1>)> = Vec::with_capacity(grads.grads.len());
        for (name, g) in &grads.grads {
            let (_, p) = &params[index[name]];
            let (w, _, _) = self.updated(name, p.as_ref(), g.clone(), scale, &k);
            bad.push((name.clone(), w.is_finite().bool_not().float().sum()));
        }
        if let Some(name) = first_bad(bad).await? {
            tracing::warn!(
                step = self.step,
                parameter = name,
                "the update would make a parameter non-finite: optimizer step skipped"
            );
            report.skipped = Some(SkipReason::NonFiniteUpdate);
            return Ok(report);
        }
        // Pass 2: apply it.
        self.step += 1;
        for (name, g) in grads.grads {
            let (_, p) = &mut params[index[&name]];
            let shape = p.as_ref().shape();
            let (w, m, v) = self.updated(&name, p.as_ref(), g, scale, &k);
            self.state.insert(
                name,
                Moments {
                    shape,
                    exp_avg: m,
                    exp_avg_sq: v,
                },
            );
            p.set_flat(w);
        }
        report.step = self.step;
        Ok(report)
    }

    /// The step-size terms of step `t` (1-based) at learning rate `lr`.
    fn coefficients(&self, lr: f64, t: u64) -> Coefficients {
        let c = &self.config;
        let t = t as f64;
        Coefficients {
            lr,
            step_size: lr / (1.0 - c.beta1.powf(t)),
            bc2_sqrt: (1.0 - c.beta2.powf(t)).sqrt(),
        }
    }

    /// Parameter `name`'s weight and moments after one AdamW update with gradient `g`
    /// (scaled by the clip factor), as lazy tensors; nothing is stored.
    fn updated(
        &self,
        name: &str,
        p: ParamRef<'_>,
        g: Tensor<1>,
        scale: Option<f32>,
        k: &Coefficients,
    ) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
        let c = &self.config;
        let shape = p.shape();
        let g = match scale {
            Some(s) => g.mul_scalar(s),
            None => g,
        };
        let mut w = p.flat().inner();
        if c.weight_decay != 0.0 && c.decay.applies(name, &shape) {
            w = w.mul_scalar(1.0 - k.lr * c.weight_decay);
        }
        let (m0, v0) = match self.state.get(name) {
            Some(st) => (st.exp_avg.clone(), st.exp_avg_sq.clone()),
            None => (Tensor::zeros_like(&g), Tensor::zeros_like(&g)),
        };
        let m = m0.clone() + (g.clone() - m0).mul_scalar(1.0 - c.beta1);
        let v = v0.mul_scalar(c.beta2) + g.clone().mul_scalar(1.0 - c.beta2) * g;
        let denom = v.clone().sqrt().div_scalar(k.bc2_sqrt).add_scalar(c.eps);
        let w = w - (m.clone() / denom).mul_scalar(k.step_size);
        (w, m, v)
    }

    /// Checks that every moment belongs to a parameter of `model` with the same shape.
    pub fn check_against(&self, model: &HybridModel) -> Result<(), OptimError> {
        let shapes: HashMap<String, Vec<usize>> = named_params(model)
            .into_iter()
            .map(|(n, p): (String, ParamRef<'_>)| {
                let s = p.shape();
                (n, s)
            })
            .collect();
        for (name, m) in &self.state {
            match shapes.get(name) {
                None => {
                    return Err(OptimError::State(format!(
                        "moments for `{name}`, which is not a parameter of the model"
                    )));
                }
                Some(s) if *s != m.shape => {
                    return Err(OptimError::State(format!(
                        "moments for `{name}` have shape {:?}, the parameter {s:?}",
                        m.shape
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// `optimizer.safetensors` bytes: `{name}.exp_avg` and `{name}.exp_avg_sq` (F32, the
    /// parameter's shape) per parameter, and the step and hyper-parameters as JSON in the
    /// metadata entry `sluice_adamw`.
    pub async fn to_safetensors_async(&self) -> Result<Vec<u8>, OptimError> {
        let mut out = Vec::new();
        self.write_safetensors_async(&mut out).await?;
        Ok(out)
    }

    /// Writes [`to_safetensors_async`](Self::to_safetensors_async)'s file to `w` one moment
    /// at a time (host memory holds one tensor). A non-finite moment stops the write with an
    /// error (the caller discards the partial file).
    pub async fn write_safetensors_async(&self, w: &mut dyn Write) -> Result<(), OptimError> {
        let state = |e: SaveError| OptimError::State(e.to_string());
        let moments = || {
            self.state.iter().flat_map(|(name, m)| {
                [("exp_avg", &m.exp_avg), ("exp_avg_sq", &m.exp_avg_sq)]
                    .map(|(suffix, t)| (format!("{name}.{suffix}"), &m.shape, t))
            })
        };
        let entries = moments()
            .map(|(key, shape, _)| (key, shape.clone(), FileDtype::F32))
            .collect();
        let meta = serde_json::to_string(&Meta {
            step: self.step,
            config: self.config.clone(),
        })
        .expect("the optimizer metadata serialises");
        let mut file = TensorWriter::start(w, entries, (META_KEY, meta)).map_err(state)?;
        for (key, _, t) in moments() {
            use crate::model::save::{ReadError, read_finite};
            let v = read_finite(t.clone()).await.map_err(|e| match e {
                ReadError::Device(msg) => OptimError::Device {
                    what: key.clone(),
                    msg,
                },
                ReadError::NonFinite => {
                    OptimError::State(format!("`{key}` holds a non-finite value; it is not saved"))
                }
            })?;
            file.tensor(&key, &v).map_err(state)?;
        }
        file.finish().map_err(state)
    }

    /// Blocking [`to_safetensors_async`](Self::to_safetensors_async) (native only).
    #[cfg(not(target_family = "wasm"))]
    pub fn to_safetensors(&self) -> Result<Vec<u8>, OptimError> {
        pollster::block_on(self.to_safetensors_async())
    }

    /// Reads [`to_safetensors_async`](Self::to_safetensors_async) bytes onto `device`.
    pub fn from_safetensors(
        bytes: &[u8],
        device: &burn::tensor::Device,
    ) -> Result<Self, OptimError> {
        let err = |m: String| OptimError::State(m);
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let text = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| {
                err(format!(
                    "no `{META_KEY}` metadata (not a Sluice AdamW state)"
                ))
            })?;
        let Meta { step, config } =
            serde_json::from_str(text).map_err(|e| err(format!("metadata `{META_KEY}`: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| err(format!("not a safetensors file: {e}")))?;
        // Pair the views by parameter name first; values are copied one tensor at a time.
        let mut pairs: BTreeMap<String, (Option<TensorView<'_>>, Option<TensorView<'_>>)> =
            BTreeMap::new();
        for (key, view) in st.tensors() {
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(err(format!("`{key}` is {:?}, expected F32", view.dtype())));
            }
            if let Some(name) = key.strip_suffix(".exp_avg_sq") {
                pairs.entry(name.to_string()).or_default().1 = Some(view);
            } else if let Some(name) = key.strip_suffix(".exp_avg") {
                pairs.entry(name.to_string()).or_default().0 = Some(view);
            } else {
                return Err(err(format!(
                    "unexpected tensor `{key}` (expected NAME.exp_avg / NAME.exp_avg_sq)"
                )));
            }
        }
        let device = device.clone().inner();
        let up = |view: &TensorView<'_>| {
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let n = values.len();
            Tensor::<1>::from_data(burn::tensor::TensorData::new(values, [n]), &device)
        };
        let mut state = BTreeMap::new();
        for (name, pair) in pairs {
            let (Some(m), Some(v)) = pair else {
                return Err(err(format!("`{name}` lacks exp_avg or exp_avg_sq")));
            };
            if m.shape() != v.shape() {
                return Err(err(format!(
                    "`{name}`: exp_avg {:?} and exp_avg_sq {:?} differ in shape",
                    m.shape(),
                    v.shape()
                )));
            }
            let moments = Moments {
                shape: m.shape().to_vec(),
                exp_avg: up(&m),
                exp_avg_sq: up(&v),
            };
            state.insert(name, moments);
        }
        Ok(Self {
            config,
            step,
            state,
        })
    }
}
