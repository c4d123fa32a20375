//! A reward written in JavaScript by the page: `fn(samples)` gets an array of
//! `{prompt, completion, reference, group}` and returns (or resolves to) an array with one
//! number or `null` (not applicable) per sample — TRL's custom reward functions, in the
//! browser. A thrown error, a wrong length, or a value that is not a finite number or null is
//! an error naming the reward and the sample.

use js_sys::{Array, Function, Promise};
use serde_json::json;
use sluice::rl::rewards::{Reward, RewardError, RewardFuture, Sample, Scores};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// The page's function under the name the recipe's `kind = "user"` entry gives.
pub struct JsReward {
    pub name: String,
    pub f: Function,
}

/// A thrown JavaScript value as text.
fn js_text(e: &JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return String::from(err.message());
    }
    e.as_string()
        .or_else(|| js_sys::JSON::stringify(e).ok().and_then(|s| s.as_string()))
        .unwrap_or_else(|| "a JavaScript error".into())
}

impl JsReward {
    async fn score_all(&self, samples: &[Sample]) -> Result<Scores, RewardError> {
        let err = |message: String| RewardError::Input {
            reward: self.name.clone(),
            message,
        };
        let batch: Vec<_> = (samples.iter())
            .map(|s| {
                json!({"prompt": s.prompt, "completion": s.completion,
                       "reference": s.reference, "group": s.group})
            })
            .collect();
        let arg = js_sys::JSON::parse(&serde_json::Value::from(batch).to_string())
            .map_err(|e| err(js_text(&e)))?;
        let mut out = (self.f.call1(&JsValue::NULL, &arg)).map_err(|e| err(js_text(&e)))?;
        if let Some(p) = out.dyn_ref::<Promise>() {
            out = JsFuture::from(p.clone())
                .await
                .map_err(|e| err(js_text(&e)))?;
        }
        if !Array::is_array(&out) {
            return Err(err(
                "the function must return an array (one score per sample)".into(),
            ));
        }
        let arr = Array::from(&out);
        if arr.length() as usize != samples.len() {
            return Err(err(format!(
                "{} scores for {} samples",
                arr.length(),
                samples.len()
            )));
        }
        (0..arr.length())
            .map(|i| {
                let v = arr.get(i);
                if v.is_null() || v.is_undefined() {
                    return Ok(None);
                }
                match v.as_f64() {
                    Some(x) if x.is_finite() => Ok(Some(x)),
                    _ => Err(err(format!(
                        "sample {i}: `{}` is not a finite number or null",
                        js_text(&v)
                    ))),
                }
            })
            .collect()
    }
}

impl Reward for JsReward {
    fn name(&self) -> &str {
        &self.name
    }

    fn score<'a>(&'a self, samples: &'a [Sample]) -> RewardFuture<'a> {
        Box::pin(self.score_all(samples))
    }
}
