// Sluice demo page: UI only; all engine work runs in worker.js. Results are also published
// on `window.__sluice` (and `document.title`) for the browser test: what the page shows
// (busy states, the step's stage, what the chart drew) is mirrored there.

import { draw as drawPanels } from "./chart.js";

const $ = (id) => document.getElementById(id);
const state = (window.__sluice = {
  ready: false,
  error: null,
  init: null,
  steps: [],
  evals: [],
  /** Requests in flight (the busy state). */
  busy: 0,
  /** The running step's stage ("rollout", "update", "save") or null. */
  stage: null,
  stagesSeen: [],
  /** What the chart drew last (per panel: title, empty, yLabels, series sizes). */
  chart: [],
  /** Download progress events seen while the engine loaded. */
  downloadEvents: 0,
  /** The last generation as streamed: token events and the text they added up to. */
  stream: { tokens: 0, text: "" },
});

// ---- worker RPC ---------------------------------------------------------------------------

const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
const pending = new Map();
let nextId = 1;

worker.onmessage = (ev) => {
  const m = ev.data;
  const p = pending.get(m.id);
  if (!p) return;
  if (m.event) {
    p.onEvent?.(m);
    return;
  }
  pending.delete(m.id);
  if (m.ok) p.resolve(m.result);
  else p.reject(new Error(m.error));
};
worker.onerror = (e) => {
  e.preventDefault();
  if (state.ready) {
    // An error outside any request (e.g. a background task): report it, keep the page.
    state.workerErrors = [...(state.workerErrors || []), e.message];
    console.error("engine worker:", e.message);
    return;
  }
  fail(`The engine worker failed to start: ${e.message || "see the console"}. ` +
    "Module workers need Chrome 80+, Safari 15+ or Firefox 114+.");
};

/** One request to the worker; `onEvent` hears its progress events. Buttons that need the
 *  engine are disabled while any request runs (the worker answers one at a time). */
function call(op, args = {}, onEvent) {
  const id = nextId++;
  setBusy(+1);
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, onEvent });
    worker.postMessage({ id, op, ...args });
  }).finally(() => setBusy(-1));
}

// ---- status -------------------------------------------------------------------------------

function setStatus(text, kind = "") {
  $("status").textContent = text;
  $("status").className = kind;
}

function fail(text) {
  state.error = text;
  setStatus(text, "error");
  document.title = "Sluice: error";
}

const ENGINE_BUTTONS = ["generate", "step", "evaluate", "download", "folder", "reset", "recipe-file", "recipe-start"];

function setBusy(delta) {
  state.busy += delta;
  refreshButtons();
}

function refreshButtons() {
  const idle = state.ready && state.busy === 0;
  for (const id of ENGINE_BUTTONS) $(id).disabled = !idle;
  $("train").disabled = !state.ready || pausing || (!running && state.busy > 0);
  $("train").textContent = running
    ? (pausing ? "Pausing after this step…" : "Pause training")
    : (state.steps.length ? "Continue training" : "Start training");
}

const fmt = (x, d = 3) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(d) : "–");
const mb = (b) => (b / 1e6).toFixed(1);

// ---- chart --------------------------------------------------------------------------------

const EVAL_EVERY = 10;

function drawChart() {
  const steps = state.steps;
  const evals = state.evals;
  const last = Math.max(0, ...steps.map((s) => s.step), ...evals.map((e) => e.step));
  const xMax = Math.max(10, Math.ceil(last / 10) * 10);
  const pts = (key) => steps.filter((s) => Number.isFinite(s[key])).map((s) => [s.step, s[key]]);
  const nextEval = (Math.floor(last / EVAL_EVERY) + 1) * EVAL_EVERY;
  state.chart = drawPanels($("chart"), [
    {
      title: "reward, accuracy",
      unit: true,
      series: [
        { name: "reward", color: "#1a73e8", points: pts("reward") },
        { name: "held-out accuracy", color: "#188038", points: evals.map((e) => [e.step, e.greedy]) },
      ],
      waiting: "no steps yet: the first point comes after step 1",
    },
    { title: "loss", series: [{ name: "loss", color: "#6b7785", points: pts("loss") }],
      waiting: "no steps yet" },
    { title: "KL", series: [{ name: "KL", color: "#b06000", points: pts("kl") }],
      waiting: "no steps yet" },
  ], xMax);
  const accHint = evals.length ? "" : ` Held-out accuracy: first measured at step ${nextEval} (or press Evaluate).`;
  state.chartHint = accHint;
}

// ---- generate -----------------------------------------------------------------------------

async function generate(prompt, maxNewTokens = 8, temperature = 0) {
  const sampling = temperature > 0 ? JSON.stringify({ temperature, seed: Date.now() % 1e9 }) : "";
  const out = $("output");
  out.textContent = "";
  out.classList.add("busy");
  $("timing").textContent = "Reading the prompt (prefill)…";
  try {
    state.stream = { tokens: 0, text: "" };
    const r = await call("generate", { prompt, maxNewTokens, sampling }, (m) => {
      if (m.event !== "token") return;
      if (!out.textContent) $("timing").textContent = "Generating…";
      out.textContent += m.piece;
      state.stream.tokens += 1;
      state.stream.text += m.piece;
    });
    out.textContent = r.text ?? r.generated_ids.join(" ");
    $("timing").textContent =
      `${r.new_tokens} tokens (${r.stop_reason}); time to first token ${fmt(r.ttft_ms, 1)} ms, ` +
      `decode ${fmt(r.decode_tokens_per_s, 1)} tok/s; ${temperature > 0 ? `sampled at temperature ${temperature}` : "greedy"}; ` +
      `ids ${JSON.stringify(r.generated_ids)}`;
    return r;
  } finally {
    out.classList.remove("busy");
  }
}

$("sample").onchange = () => ($("temperature").disabled = !$("sample").checked);
$("generate").onclick = () =>
  generate(
    $("prompt").value,
    Number($("max-tokens").value) || 8,
    $("sample").checked ? Number($("temperature").value) || 0 : 0,
  ).catch((e) => ($("timing").textContent = `Error: ${e.message}`));

// ---- training -----------------------------------------------------------------------------

let running = false;
let pausing = false;
let stageTimer = null;

function logLine(text) {
  $("log").textContent = text + "\n" + $("log").textContent;
}

/** The engine's log line of an evaluation (format shared with the CLI and the desktop). */
function evalLine(e) {
  return e.line ?? `eval  step ${e.step}  held-out accuracy ${fmt(e.greedy, 4)}`;
}

/** Shows where the running step is: stage, what it does, seconds so far. */
function showStage(step, stage, completions) {
  state.stage = stage;
  if (stage && !state.stagesSeen.includes(stage)) state.stagesSeen.push(stage);
  clearInterval(stageTimer);
  const bar = $("step-bar");
  if (!stage) {
    bar.hidden = true;
    $("stage").textContent = "";
    $("stage").classList.remove("busy");
    return;
  }
  const what = {
    start: "starting",
    rollout: `rollout: sampling ${completions} completions`,
    update: "update: scoring, backward pass, optimizer step",
    save: "saving the run in this browser",
    evaluate: "evaluating on held-out problems",
  }[stage] ?? stage;
  const order = ["start", "rollout", "update", "save"];
  bar.hidden = false;
  bar.max = order.length;
  if (stage === "evaluate") bar.removeAttribute("value");
  else bar.value = order.indexOf(stage) + 1;
  const t0 = performance.now();
  const paint = () =>
    ($("stage").textContent = `step ${step} · ${what} · ${fmt((performance.now() - t0) / 1000, 1)} s`);
  paint();
  $("stage").classList.add("busy");
  stageTimer = setInterval(paint, 200);
}

function runBanner() {
  const last = state.steps.at(-1);
  if (!last) return;
  setStatus(`Training run at step ${last.step} (${last.phase}).` +
    (state.evals.length ? ` Held-out accuracy ${fmt(state.evals.at(-1).greedy)} at step ${state.evals.at(-1).step}.` : ""), "ok");
}

async function ensureRun() {
  const info = await call("info");
  if (!info.training) {
    const r = await call("trainStart", { settings: "", fromScratch: false });
    $("train-status").textContent = `Started a run from the loaded model (${r.training.phase}).`;
  }
}

async function trainStep() {
  await ensureRun();
  const step = (state.steps.at(-1)?.step ?? 0) + 1;
  showStage(step, "start", 0);
  let rec;
  try {
    rec = await call("trainStep", {}, (m) => m.event === "stage" && showStage(step, m.stage, m.completions));
  } finally {
    showStage(step, null);
  }
  if (!rec) {
    running = false;
    $("train-status").textContent = "The run is over.";
    return null;
  }
  state.steps.push(rec);
  logLine(rec.line);
  $("train-status").textContent =
    `step ${rec.step} took ${fmt(rec.step_ms / 1000, 2)} s` +
    (rec.saved ? `, saved in this browser (${fmt(rec.save_ms / 1000, 2)} s)` : "") +
    (rec.save_error ? `; NOT saved in this browser (${rec.save_error}): a reload returns to the last saved step` : "") +
    "." + (state.chartHint || "");
  runBanner();
  drawChart();
  return rec;
}

async function evaluate() {
  await ensureRun();
  showStage(state.steps.at(-1)?.step ?? 0, "evaluate", 0);
  let e;
  try {
    e = await call("evaluate");
  } finally {
    showStage(0, null);
  }
  state.evals.push(e);
  logLine(evalLine(e));
  $("train-status").textContent =
    `held-out greedy accuracy ${fmt(e.greedy)} on ${e.problems} problems at step ${e.step} (${fmt(e.eval_ms / 1000, 1)} s)`;
  runBanner();
  drawChart();
  return e;
}

/** One step, then — every EVAL_EVERY steps, whichever button asked — the held-out
 *  evaluation, so the accuracy line has its points where the chart's hint says. */
async function stepAndEvaluate() {
  const rec = await trainStep();
  if (rec && rec.step % EVAL_EVERY === 0) await evaluate();
  return rec;
}

$("step").onclick = () => stepAndEvaluate().catch((e) => ($("train-status").textContent = `Error: ${e.message}`));
$("evaluate").onclick = () => evaluate().catch((e) => ($("train-status").textContent = `Error: ${e.message}`));
$("train").onclick = async () => {
  if (running) {
    // The step in flight finishes first (a GPU step cannot be interrupted).
    pausing = true;
    refreshButtons();
    return;
  }
  running = true;
  refreshButtons();
  try {
    while (running && !pausing) await stepAndEvaluate();
  } catch (e) {
    $("train-status").textContent = `Error: ${e.message}`;
  }
  running = false;
  pausing = false;
  refreshButtons();
};
$("autosave").onchange = () => call("setAutosave", { on: $("autosave").checked });

/** Replaces the chart and log with a run's history (after a reload or a loaded folder). */
function showHistory(history) {
  state.steps = history.filter((r) => r.kind === "step");
  state.evals = history.filter((r) => r.kind === "eval");
  $("log").textContent = "";
  for (const r of history) logLine(r.kind === "eval" ? evalLine(r) : r.line);
  drawChart();
  refreshButtons();
}

// ---- checkpoints --------------------------------------------------------------------------

$("download").onclick = async () => {
  try {
    const files = await call("checkpoint");
    for (const [name, bytes] of files) {
      const a = document.createElement("a");
      a.href = URL.createObjectURL(new Blob([bytes]));
      a.download = name;
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    }
    $("ckpt-status").textContent = `Downloaded ${files.map(([n]) => n).join(", ")}.`;
  } catch (e) {
    $("ckpt-status").textContent = `Error: ${e.message}`;
  }
};

$("folder").onchange = async (ev) => {
  const wanted = new Set(["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
    "optimizer.safetensors", "trainer_state.json", "reference.safetensors", "metrics.jsonl"]);
  const picked = [...ev.target.files].filter((f) => wanted.has(f.name));
  try {
    if (!picked.some((f) => f.name === "config.json") || !picked.some((f) => f.name === "model.safetensors")) {
      throw new Error("the folder needs config.json and model.safetensors");
    }
    const files = await Promise.all(picked.map(async (f) => [f.name, new Uint8Array(await f.arrayBuffer())]));
    const info = await call("loadFiles", { files });
    showHistory(info.history || []);
    $("ckpt-status").textContent = info.training
      ? `Resumed the run at step ${info.training.step}${info.history?.length ? " with its history" : ""}; press Continue training to go on.`
      : `Loaded a model (${info.layers} layers, hidden ${info.hidden}, vocab ${info.vocab}${info.tokenizer ? "" : ", no tokenizer: prompts are token ids"}).`;
  } catch (e) {
    $("ckpt-status").textContent = `Error: ${e.message}`;
  }
};

// A recipe file and an optional reward function: a new run (then Start training / One step).
async function startRecipe(recipe, rewardName, rewardBody) {
  running = false;
  const rewards = rewardBody.trim() ? { [rewardName.trim() || "js"]: rewardBody } : {};
  const info = await call("trainRecipe", { recipe, rewards });
  showHistory([]);
  $("train-status").textContent =
    `Started the recipe (${info.training.task ?? "custom data"}, ${info.training.phase}); press Start training or One step.`;
  return info;
}

$("recipe-start").onclick = async () => {
  const file = $("recipe-file").files[0];
  try {
    if (!file) throw new Error("choose a recipe file first");
    await startRecipe(await file.text(), $("reward-name").value, $("reward-js").value);
  } catch (e) {
    $("train-status").textContent = `Error: ${e.message}`;
  }
};

$("reset").onclick = async () => {
  running = false;
  try {
    await call("loadDemo");
    showHistory([]);
    setStatus("Demo model loaded; the stored run is gone.", "ok");
    $("train-status").textContent = "";
    $("ckpt-status").textContent = "Back to the demo model; the stored run is gone.";
  } catch (e) {
    $("ckpt-status").textContent = `Error: ${e.message}`;
  }
};

// ---- device -------------------------------------------------------------------------------

function showDevice(r) {
  const a = r.adapter;
  const e = r.engineAdapter;
  const name = [a.vendor, a.architecture, a.device, a.description].filter(Boolean).join(" / ") || e.name || "(no name)";
  $("device-summary").textContent = `${name}${a.isFallbackAdapter ? " (a CPU fallback adapter)" : ""}`;
  const rows = [
    ["adapter", name],
    ["CPU fallback", a.isFallbackAdapter ? "yes (software rendering: slow)" : "no"],
    ["engine backend", `${e.backend ?? "?"}, ${e.device_type ?? "?"}`],
    ["engine adapter", [e.name, e.driver].filter(Boolean).join(", ") || "–"],
    ...Object.entries(a.limits).map(([k, v]) => [k, v >= 2 ** 20 ? `${v} (${mb(v)} MB)` : String(v)]),
    ["features", a.features.join(", ") || "none"],
    ["engine download", `${mb(r.wasmBytes)} MB in ${fmt(r.downloadMs / 1000, 1)} s`],
  ];
  const table = $("device-table");
  table.replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement("tr");
    for (const text of [k, v]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  }));
}

// ---- start --------------------------------------------------------------------------------

async function start() {
  if (!("gpu" in navigator)) {
    fail("WebGPU is not available in this browser (navigator.gpu is missing). Use Chrome/Edge 113+, " +
      "Safari 26+ or Firefox with WebGPU enabled; headless Chromium needs --enable-unsafe-webgpu.");
    return;
  }
  setStatus("Downloading the engine…");
  const fresh = new URLSearchParams(location.search).has("fresh");
  drawChart();
  try {
    const r = await call("init", { fresh }, (m) => {
      if (m.event !== "download") return;
      state.downloadEvents += 1;
      const done = m.total && m.loaded >= m.total;
      $("status").textContent = done
        ? `Downloaded the engine (${mb(m.loaded)} MB); starting WebGPU and loading the model…`
        : `Downloading the engine: ${mb(m.loaded)}${m.total ? ` of ${mb(m.total)}` : ""} MB `;
      if (!done) {
        const bar = document.createElement("progress");
        bar.max = m.total || 1;
        bar.value = m.total ? m.loaded : 0;
        bar.id = "download-bar";
        $("status").append(bar);
      }
    });
    state.init = r;
    showDevice(r);
    const t = r.info.training;
    state.ready = true;
    showHistory(r.history || []);
    setStatus(
      (t ? `Restored the training run stored in this browser at step ${t.step} (${t.phase}).`
        : "Demo model loaded.") + ` Ready (${fmt(r.initMs / 1000, 1)} s).`,
      "ok",
    );
    if (t) $("train-status").textContent = `Stored run restored at step ${t.step}: press Continue training (or One step) to go on.`;
    document.title = "Sluice: ready";
  } catch (e) {
    fail(e.message);
  }
}

// Hooks for the browser test (the same calls the buttons make).
window.sluiceApi = { call, generate, trainStep, stepAndEvaluate, evaluate, startRecipe };
start();
