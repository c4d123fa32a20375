// Sluice demo page: UI only; all engine work runs in worker.js. Results are also published
// on `window.__sluice` (and `document.title`) for the browser test.

const $ = (id) => document.getElementById(id);
const state = (window.__sluice = {
  ready: false,
  error: null,
  init: null,
  steps: [],
  evals: [],
});

// ---- worker RPC ---------------------------------------------------------------------------

const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
const pending = new Map();
let nextId = 1;

worker.onmessage = (ev) => {
  const m = ev.data;
  const p = pending.get(m.id);
  if (!p) return;
  if (m.event === "token") {
    p.onToken?.(m.token, m.piece);
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

function call(op, args = {}, onToken) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, onToken });
    worker.postMessage({ id, op, ...args });
  });
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

function enable(on) {
  for (const id of ["generate", "train", "step", "evaluate", "download", "folder", "reset"]) {
    $(id).disabled = !on;
  }
}

const fmt = (x, d = 3) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(d) : "–");

// ---- chart (hand-drawn) -------------------------------------------------------------------

function drawChart() {
  const c = $("chart");
  const g = c.getContext("2d");
  const W = c.width, H = c.height, L = 44, R = 64, T = 12, B = 28;
  g.clearRect(0, 0, W, H);
  g.font = "12px system-ui, sans-serif";
  const steps = state.steps;
  const evals = state.evals;
  const maxStep = Math.max(10, ...steps.map((s) => s.step), ...evals.map((e) => e.step));
  const x = (s) => L + ((W - L - R) * s) / maxStep;
  const y = (v) => T + (H - T - B) * (1 - v);
  const losses = steps.map((s) => s.loss).filter(Number.isFinite);
  const lossMax = Math.max(1e-6, ...losses.map(Math.abs));
  const lossMin = Math.min(0, ...losses);
  const yl = (v) => y((v - lossMin) / (lossMax - lossMin || 1));
  // Axes and grid.
  g.strokeStyle = "#dde1e6";
  g.fillStyle = "#5f6b7a";
  for (let i = 0; i <= 4; i++) {
    const v = i / 4;
    g.beginPath();
    g.moveTo(L, y(v));
    g.lineTo(W - R, y(v));
    g.stroke();
    g.fillText(v.toFixed(2), 6, y(v) + 4);
    g.fillText((lossMin + v * (lossMax - lossMin)).toPrecision(2), W - R + 4, y(v) + 4);
  }
  g.fillText("step", W - R - 24, H - 8);
  for (let i = 0; i <= 5; i++) {
    const s = Math.round((maxStep * i) / 5);
    g.fillText(String(s), x(s) - 4, H - 8);
  }
  const line = (pts, color) => {
    if (!pts.length) return;
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    pts.forEach(([px, py], i) => (i ? g.lineTo(px, py) : g.moveTo(px, py)));
    g.stroke();
    g.fillStyle = color;
    for (const [px, py] of pts) g.fillRect(px - 2, py - 2, 4, 4);
    g.lineWidth = 1;
  };
  line(steps.filter((s) => Number.isFinite(s.loss)).map((s) => [x(s.step), yl(s.loss)]), "#9aa4b1");
  line(steps.filter((s) => Number.isFinite(s.reward)).map((s) => [x(s.step), y(s.reward)]), "#1a73e8");
  line(evals.map((e) => [x(e.step), y(e.greedy)]), "#188038");
}

// ---- generate -----------------------------------------------------------------------------

async function generate(prompt, maxNewTokens = 8, temperature = 0) {
  const sampling = temperature > 0 ? JSON.stringify({ temperature, seed: Date.now() % 1e9 }) : "";
  $("output").textContent = "";
  const r = await call("generate", { prompt, maxNewTokens, sampling }, (_tok, piece) => {
    $("output").textContent += piece;
  });
  $("output").textContent = r.text ?? r.generated_ids.join(" ");
  $("timing").textContent =
    `${r.new_tokens} tokens (${r.stop_reason}); time to first token ${fmt(r.ttft_ms, 1)} ms, ` +
    `decode ${fmt(r.decode_tokens_per_s, 1)} tok/s; ids ${JSON.stringify(r.generated_ids)}`;
  return r;
}

$("generate").onclick = () =>
  generate($("prompt").value, Number($("max-tokens").value) || 8, Number($("temperature").value) || 0)
    .catch((e) => ($("timing").textContent = `Error: ${e.message}`));

// ---- training -----------------------------------------------------------------------------

let running = false;

function logRecord(rec) {
  const keys = ["phase", "step", "loss", "reward", "kl", "entropy", "response_length", "step_ms"];
  const line = keys.map((k) => `${k} ${typeof rec[k] === "number" ? fmt(rec[k], 4) : rec[k]}`).join("  ");
  $("log").textContent = line + "\n" + $("log").textContent;
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
  const rec = await call("trainStep");
  if (!rec) {
    running = false;
    $("train-status").textContent = "The run is over.";
    return null;
  }
  state.steps.push(rec);
  logRecord(rec);
  $("train-status").textContent =
    `step ${rec.step}: ${fmt(rec.step_ms / 1000, 2)} s` + (rec.saved ? `, saved (${fmt(rec.save_ms, 0)} ms)` : "");
  drawChart();
  return rec;
}

async function evaluate() {
  await ensureRun();
  $("train-status").textContent = "Evaluating on held-out problems…";
  const e = await call("evaluate");
  state.evals.push(e);
  $("train-status").textContent =
    `held-out greedy accuracy ${fmt(e.greedy)} on ${e.problems} problems at step ${e.step} (${fmt(e.eval_ms / 1000, 1)} s)`;
  drawChart();
  return e;
}

$("step").onclick = () => trainStep().catch((e) => ($("train-status").textContent = `Error: ${e.message}`));
$("evaluate").onclick = () => evaluate().catch((e) => ($("train-status").textContent = `Error: ${e.message}`));
$("train").onclick = async () => {
  if (running) {
    running = false;
    $("train").textContent = "Start training";
    return;
  }
  running = true;
  $("train").textContent = "Pause training";
  try {
    while (running) {
      const rec = await trainStep();
      if (rec && rec.step % 10 === 0) await evaluate();
    }
  } catch (e) {
    $("train-status").textContent = `Error: ${e.message}`;
  }
  running = false;
  $("train").textContent = "Start training";
};
$("autosave").onchange = () => call("setAutosave", { on: $("autosave").checked });

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
    "optimizer.safetensors", "trainer_state.json", "reference.safetensors"]);
  const picked = [...ev.target.files].filter((f) => wanted.has(f.name));
  try {
    if (!picked.some((f) => f.name === "config.json") || !picked.some((f) => f.name === "model.safetensors")) {
      throw new Error("the folder needs config.json and model.safetensors");
    }
    const files = await Promise.all(picked.map(async (f) => [f.name, new Uint8Array(await f.arrayBuffer())]));
    const info = await call("loadFiles", { files });
    state.steps = [];
    state.evals = [];
    drawChart();
    $("ckpt-status").textContent = info.training
      ? `Resumed the run at step ${info.training.step}.`
      : `Loaded a model (${info.layers} layers, hidden ${info.hidden}, vocab ${info.vocab}${info.tokenizer ? "" : ", no tokenizer: prompts are token ids"}).`;
  } catch (e) {
    $("ckpt-status").textContent = `Error: ${e.message}`;
  }
};

$("reset").onclick = async () => {
  running = false;
  try {
    await call("loadDemo");
    state.steps = [];
    state.evals = [];
    drawChart();
    $("ckpt-status").textContent = "Back to the demo model; the stored run is gone.";
  } catch (e) {
    $("ckpt-status").textContent = `Error: ${e.message}`;
  }
};

// ---- start --------------------------------------------------------------------------------

async function start() {
  if (!("gpu" in navigator)) {
    fail("WebGPU is not available in this browser (navigator.gpu is missing). Use Chrome/Edge 113+, " +
      "Safari 26+ or Firefox with WebGPU enabled; headless Chromium needs --enable-unsafe-webgpu.");
    return;
  }
  setStatus("Initialising WebGPU and loading the model…");
  const fresh = new URLSearchParams(location.search).has("fresh");
  try {
    const r = await call("init", { fresh });
    state.init = r;
    const a = r.adapter;
    $("adapter").textContent =
      `adapter: ${[a.vendor, a.architecture, a.device, a.description].filter(Boolean).join(" / ") || "(no info)"}` +
      `${a.isFallbackAdapter ? " (fallback adapter: CPU)" : ""}\n` +
      `wgpu: ${JSON.stringify(r.engineAdapter)}\n` +
      `limits: ${Object.entries(a.limits).map(([k, v]) => `${k} ${v}`).join(", ")}\nfeatures: ${a.features.join(", ")}`;
    const t = r.info.training;
    setStatus(
      (t ? `Resumed the stored training run at step ${t.step} (${t.phase}).` : "Demo model loaded.") +
        ` Ready (${fmt(r.initMs / 1000, 1)} s).`,
      "ok",
    );
    if (t) $("train-status").textContent = `Stored run resumed at step ${t.step}; training continues from there.`;
    enable(true);
    drawChart();
    state.ready = true;
    document.title = "Sluice: ready";
  } catch (e) {
    fail(e.message);
  }
}

// Hooks for the browser test (the same calls the buttons make).
window.sluiceApi = { call, generate, trainStep, evaluate };
start();
