// Sluice engine worker (module worker): owns the WebGPU device and the wasm engine, answers
// the page's requests one at a time, streams tokens, and keeps the training run's latest
// checkpoint in the Origin Private File System so a reload resumes it.
//
// Page → worker: {id, op, ...args}. Worker → page: {id, ok: true, result} or
// {id, ok: false, error}; while working also events: {id, event: "token", token, piece}
// (generation), {id, event: "stage", stage, completions} (a training step's parts) and
// {id, event: "download", what, loaded, total} (bytes fetched so far; total 0 if unknown).
//
// The run's history (step records and evaluations) is kept beside its checkpoint in OPFS as
// metrics.jsonl, so a reload redraws the chart and the log.

import init, { Session } from "./pkg/sluice_web.js";

// What the WGSL kernels need (WebGPU's default limits).
const REQUIRED_LIMITS = {
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupStorageSize: 16384,
  maxStorageBuffersPerShaderStage: 8,
  maxStorageBufferBindingSize: 128 * 1024 * 1024,
};
const MODEL_DIR = "./demo-model/";
const OPFS_DIR = "sluice-run";

const METRICS_FILE = "metrics.jsonl";
const WASM_URL = new URL("./pkg/sluice_web_bg.wasm", import.meta.url);

let session = null;
let autosave = true;
let queue = Promise.resolve();
/** The run's history: step records and evaluations (`kind: "step" | "eval"`), oldest first. */
let history = [];
/** The OPFS folder holding the stored run, once one is saved. */
let storedName = null;
/** How many history records the stored folder's metrics file holds (what its weights saw). */
let storedLen = 0;

/** Checks WebGPU and the adapter's limits; throws a message naming what is missing. */
async function checkWebGpu() {
  if (!("gpu" in navigator) || !navigator.gpu) {
    throw new Error(
      "WebGPU is not available here (navigator.gpu is missing in the worker). Use a browser " +
        "with WebGPU enabled: Chrome/Edge 113+, Safari 26+, Firefox 141+ (Windows) or with " +
        "dom.webgpu.enabled; headless Chromium needs --enable-unsafe-webgpu.",
    );
  }
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) {
    throw new Error(
      "navigator.gpu.requestAdapter() returned null: the browser has WebGPU but no usable " +
        "adapter (GPU blocklisted or disabled; Chrome: chrome://gpu, Firefox: " +
        "gfx.webgpu.ignore-blocklist).",
    );
  }
  const low = Object.entries(REQUIRED_LIMITS)
    .filter(([name, need]) => !(adapter.limits[name] >= need))
    .map(([name, need]) => `${name} is ${adapter.limits[name]}, the kernels need ≥ ${need}`);
  if (low.length) {
    throw new Error(`This WebGPU adapter's limits are too low: ${low.join("; ")}.`);
  }
  const info = adapter.info || {};
  const limits = {};
  for (const name of Object.keys(REQUIRED_LIMITS)) limits[name] = adapter.limits[name];
  return {
    vendor: info.vendor || "",
    architecture: info.architecture || "",
    device: info.device || "",
    description: info.description || "",
    isFallbackAdapter: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter),
    features: [...adapter.features].sort(),
    limits,
  };
}

// ---- OPFS: one folder per saved step, `current` names the complete one -------------------

async function opfsRoot() {
  if (!navigator.storage || !navigator.storage.getDirectory) return null;
  const root = await navigator.storage.getDirectory();
  return root.getDirectoryHandle(OPFS_DIR, { create: true });
}

async function readText(dir, name) {
  const fh = await dir.getFileHandle(name);
  return (await fh.getFile()).text();
}

async function writeFile(dir, name, bytes) {
  const fh = await dir.getFileHandle(name, { create: true });
  const w = await fh.createWritable();
  await w.write(bytes);
  await w.close();
}

const metricsBytes = () => new TextEncoder().encode(history.map((r) => JSON.stringify(r) + "\n").join(""));

/** The history from a metrics.jsonl file's bytes (torn or foreign lines are skipped). */
function parseMetrics(bytes) {
  const out = [];
  for (const line of new TextDecoder().decode(bytes).split("\n")) {
    try {
      const r = JSON.parse(line);
      if (r && (r.kind === "step" || r.kind === "eval")) out.push(r);
    } catch {
      // a torn line
    }
  }
  return out;
}

/** Saves checkpoint files and the history as a new folder, then points `current` at it,
 *  then prunes. */
async function saveToOpfs(files, tag) {
  const root = await opfsRoot();
  if (!root) throw new Error("this browser has no Origin Private File System");
  const name = `ckpt-${tag}-${Date.now()}`;
  const dir = await root.getDirectoryHandle(name, { create: true });
  for (const [file, bytes] of files) await writeFile(dir, file, bytes);
  await writeFile(dir, METRICS_FILE, metricsBytes());
  await writeFile(root, "current", new TextEncoder().encode(name));
  for await (const [entry] of root.entries()) {
    if (entry !== name && entry !== "current") await root.removeEntry(entry, { recursive: true });
  }
  storedName = name;
  storedLen = history.length;
  return name;
}

/** Rewrites the stored run's history after an evaluation (which changes no weights) — only
 *  when no step was taken since the stored checkpoint: a history that ran past the stored
 *  weights (autosave off for a while) would, after a reload, show steps they never took. */
async function saveMetrics() {
  const root = await opfsRoot();
  if (!root || !storedName) return;
  if (history.slice(storedLen).some((r) => r.kind !== "eval")) return;
  await writeFile(await root.getDirectoryHandle(storedName), METRICS_FILE, metricsBytes());
  storedLen = history.length;
}

/** The stored checkpoint's files, or null. */
async function loadFromOpfs() {
  const root = await opfsRoot();
  if (!root) return null;
  let name;
  try {
    name = (await readText(root, "current")).trim();
  } catch {
    return null;
  }
  const dir = await root.getDirectoryHandle(name);
  const files = [];
  for await (const [file, handle] of dir.entries()) {
    if (handle.kind !== "file") continue;
    files.push([file, new Uint8Array(await (await handle.getFile()).arrayBuffer())]);
  }
  return { name, files };
}

async function clearOpfs() {
  storedName = null;
  storedLen = 0;
  if (!navigator.storage || !navigator.storage.getDirectory) return;
  const root = await navigator.storage.getDirectory();
  try {
    await root.removeEntry(OPFS_DIR, { recursive: true });
  } catch {
    // nothing stored
  }
}

// ---- requests ---------------------------------------------------------------------------

/** The body of `url`, reporting progress as `download` events of request `id`. */
async function fetchBytes(url, { optional = false, id = null, what = "" } = {}) {
  const r = await fetch(url);
  if (!r.ok) {
    if (optional) return null;
    throw new Error(`fetching ${url}: HTTP ${r.status}`);
  }
  const total = Number(r.headers.get("content-length")) || 0;
  if (id == null || !r.body) return new Uint8Array(await r.arrayBuffer());
  const parts = [];
  let loaded = 0;
  let last = 0;
  const reader = r.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    loaded += value.length;
    const now = performance.now();
    if (now - last > 100) {
      last = now;
      postMessage({ id, event: "download", what, loaded, total });
    }
  }
  postMessage({ id, event: "download", what, loaded, total: total || loaded });
  const out = new Uint8Array(loaded);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

async function loadDemoModel() {
  const [config, weights, tokenizer] = await Promise.all([
    fetch(MODEL_DIR + "config.json").then((r) => {
      if (!r.ok) throw new Error(`fetching ${MODEL_DIR}config.json: HTTP ${r.status}`);
      return r.text();
    }),
    fetchBytes(MODEL_DIR + "model.safetensors"),
    fetchBytes(MODEL_DIR + "tokenizer.json", { optional: true }),
  ]);
  return JSON.parse(await session.loadModel(config, weights, tokenizer ?? undefined));
}

async function persist(tag) {
  const files = await session.checkpointFiles();
  return saveToOpfs(files, tag);
}

/** Splits loaded files into the engine's and the history. */
function takeMetrics(files) {
  const m = files.find(([n]) => n === METRICS_FILE);
  return { files: files.filter(([n]) => n !== METRICS_FILE), metrics: m ? parseMetrics(m[1]) : [] };
}

const ops = {
  async init({ id, fresh }) {
    const adapter = await checkWebGpu();
    const t0 = performance.now();
    const wasm = await fetchBytes(WASM_URL, { id, what: "engine" });
    const downloadMs = performance.now() - t0;
    await init({ module_or_path: wasm });
    session = await Session.create();
    const engineAdapter = JSON.parse(session.adapter);
    let resumed = null;
    let info = null;
    if (fresh) await clearOpfs();
    const stored = await loadFromOpfs().catch(() => null);
    if (stored) {
      try {
        const { files, metrics } = takeMetrics(stored.files);
        info = JSON.parse(await session.restore(files));
        resumed = stored.name;
        storedName = stored.name;
        history = metrics;
        storedLen = history.length;
      } catch (e) {
        // A stale or broken stored run must not block the demo.
        console.warn("ignoring the stored checkpoint:", e);
        await clearOpfs();
      }
    }
    if (!info) info = await loadDemoModel();
    return {
      adapter,
      engineAdapter,
      info,
      resumed,
      history,
      wasmBytes: wasm.length,
      downloadMs,
      initMs: performance.now() - t0,
    };
  },

  async generate({ id, prompt, maxNewTokens, sampling }) {
    const out = await session.generate(prompt, maxNewTokens, sampling || "", (token, piece) => {
      postMessage({ id, event: "token", token, piece });
      return true;
    });
    return JSON.parse(out);
  },

  async trainStart({ settings, fromScratch }) {
    const info = JSON.parse(await session.trainStart(settings || "", Boolean(fromScratch)));
    history = [];
    // Unsaved, the stored folder holds another run: its history must not be rewritten.
    if (autosave) info.saved = await persist("step0");
    else storedName = null;
    return info;
  },

  // A recipe's TOML text and the page's reward functions ({name: "body of f(samples)"}),
  // registered for the recipe's `{ kind = "user", name }` rewards.
  async trainRecipe({ recipe, rewards }) {
    for (const [name, body] of Object.entries(rewards || {})) {
      session.setReward(name, new Function("samples", body));
    }
    const info = JSON.parse(await session.trainRecipe(recipe));
    history = [];
    if (autosave) info.saved = await persist("step0");
    else storedName = null;
    return info;
  },

  async trainStep({ id }) {
    const out = await session.trainStep((stage, completions) =>
      postMessage({ id, event: "stage", stage, completions }),
    );
    if (out == null) return null;
    const rec = { kind: "step", ...JSON.parse(out) };
    history.push(rec);
    if (autosave) {
      postMessage({ id, event: "stage", stage: "save", completions: 0 });
      const t0 = performance.now();
      try {
        rec.saved = await persist(`step${rec.step}`);
        rec.save_ms = performance.now() - t0;
      } catch (e) {
        // The step happened: it is returned (and charted) with why it was not stored.
        rec.save_error = errorText(e);
      }
    }
    return rec;
  },

  async evaluate() {
    const e = { kind: "eval", ...JSON.parse(await session.evaluate()) };
    history.push(e);
    if (autosave) await saveMetrics();
    return e;
  },

  async checkpoint() {
    const files = await session.checkpointFiles();
    if (history.length) files.push([METRICS_FILE, metricsBytes()]);
    return files;
  },

  async loadFiles({ files }) {
    const { files: engineFiles, metrics } = takeMetrics(files);
    const info = JSON.parse(await session.restore(engineFiles));
    history = info.training ? metrics : [];
    if (autosave && info.training) info.saved = await persist("loaded");
    else storedName = null;
    info.history = history;
    return info;
  },

  async loadDemo() {
    await clearOpfs();
    history = [];
    return loadDemoModel();
  },

  async save() {
    return persist("manual");
  },

  async forget() {
    await clearOpfs();
    return true;
  },

  async setAutosave({ on }) {
    autosave = Boolean(on);
    return autosave;
  },

  async info() {
    return JSON.parse(session.info());
  },
};

function errorText(e) {
  if (e instanceof Error) return e.message;
  return String(e);
}

onmessage = (ev) => {
  const msg = ev.data;
  const op = ops[msg.op];
  queue = queue.then(async () => {
    try {
      if (!op) throw new Error(`unknown request ${msg.op}`);
      if (!session && msg.op !== "init") throw new Error("the engine is not initialised");
      const result = await op(msg);
      postMessage({ id: msg.id, ok: true, result });
    } catch (e) {
      postMessage({ id: msg.id, ok: false, error: errorText(e) });
    }
  });
};
