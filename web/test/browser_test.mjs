// Browser test of the Sluice demo page: serves web/dist on 127.0.0.1, drives headless
// Chromium over the DevTools protocol (--remote-debugging-pipe; no npm packages), and checks
// what a user sees: the engine download and its size, empty charts that say what they wait
// for, the page's own example answered right with the Generate button busy meanwhile, the
// page's greedy ids equal to the native ones, training through the Start/Pause button with
// the step's stages shown and a pause that waits for the step, charts and log that read
// right, and a reload that restores the run, its chart and its log from OPFS and goes on.
// Screenshots of each moment go to --shots (1-loaded, 2-generated, 3-training, 4-reloaded).
//
//   node web/test/browser_test.mjs --dist web/dist --native native.json [--browser PATH]
//       [--shots DIR] [--max-wasm-bytes N]
//
// native.json: {"<prompt>": {"generated_ids": [...], "prefill_s": .., "decode_tokens_per_s": ..}}.
// Exits non-zero on the first failed check.

import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { extname, join, normalize, resolve } from "node:path";
import { niceTicks, tickLabel } from "../static/chart.js";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1]]);
    return acc;
  }, []),
);
const dist = resolve(args.dist || "web/dist");
const native = JSON.parse(readFileSync(args.native, "utf8"));
const browserPath = args.browser || "/usr/lib/chromium/chromium";
const shotsDir = resolve(args.shots || join(dist, "screenshots"));
const maxWasm = args["max-wasm-bytes"] ? Number(args["max-wasm-bytes"]) : null;
const prompts = Object.keys(native);

const log = (...a) => console.log("browser-test:", ...a);
function check(ok, what) {
  if (!ok) throw new Error(`FAILED: ${what}`);
  log(`ok: ${what}`);
}

// ---- static server ----------------------------------------------------------------------

const MIME = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".safetensors": "application/octet-stream",
  ".png": "image/png",
};

function serve(root) {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    let file = normalize(join(root, path));
    if (!file.startsWith(root)) {
      res.writeHead(403).end();
      return;
    }
    try {
      if (statSync(file).isDirectory()) file = join(file, "index.html");
      const body = readFileSync(file);
      res.writeHead(200, {
        "content-type": MIME[extname(file)] || "application/octet-stream",
        "cache-control": "no-store",
      });
      res.end(body);
    } catch {
      res.writeHead(404).end("not found");
    }
  });
  return new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(server)));
}

// ---- DevTools protocol over a pipe --------------------------------------------------------

class Cdp {
  constructor(proc) {
    this.out = proc.stdio[3];
    this.seq = 0;
    this.calls = new Map();
    this.handlers = [];
    let buf = Buffer.alloc(0);
    proc.stdio[4].on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      let end;
      while ((end = buf.indexOf(0)) >= 0) {
        const msg = JSON.parse(buf.subarray(0, end).toString("utf8"));
        buf = buf.subarray(end + 1);
        if (msg.id !== undefined && this.calls.has(msg.id)) {
          const { ok, fail, method } = this.calls.get(msg.id);
          this.calls.delete(msg.id);
          if (msg.error) fail(new Error(`${method}: ${msg.error.message}`));
          else ok(msg.result);
        } else {
          for (const h of this.handlers) h(msg);
        }
      }
    });
  }
  send(method, params = {}, sessionId) {
    const id = ++this.seq;
    const msg = { id, method, params };
    if (sessionId) msg.sessionId = sessionId;
    return new Promise((ok, fail) => {
      this.calls.set(id, { ok, fail, method });
      this.out.write(JSON.stringify(msg) + "\0");
    });
  }
  on(h) {
    this.handlers.push(h);
  }
}

function withTimeout(p, s, what) {
  let t;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise((_, fail) => (t = setTimeout(() => fail(new Error(`timed out after ${s} s: ${what}`)), s * 1000))),
  ]);
}

// ---- the test ---------------------------------------------------------------------------

const server = await serve(dist);
const url = `http://127.0.0.1:${server.address().port}/`;
const profile = mkdtempSync(join(tmpdir(), "sluice-chromium-"));
const proc = spawn(
  browserPath,
  [
    "--headless",
    "--enable-unsafe-webgpu",
    "--no-sandbox",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    `--user-data-dir=${profile}`,
    "--remote-debugging-pipe",
    "--window-size=1000,1400",
    "about:blank",
  ],
  { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] },
);
let stderr = "";
proc.stderr.on("data", (d) => (stderr += d));
const cdp = new Cdp(proc);
let failed = false;

// Console output of the page and its worker, for diagnosis.
const consoleLines = [];
cdp.on((m) => {
  if (process.env.CDP_DEBUG && m.method) console.log("cdp event", m.method, m.sessionId ?? "", JSON.stringify(m.params).slice(0, 300));
  if (m.method === "Runtime.consoleAPICalled") {
    const text = m.params.args.map((a) => a.value ?? a.description ?? "").join(" ");
    consoleLines.push(`[${m.params.type}] ${text}`);
  } else if (m.method === "Log.entryAdded") {
    // Browser-side messages, e.g. WGSL compilation errors of a rejected shader module.
    consoleLines.push(`[${m.params.entry.level === "error" ? "error" : "warning"}] ${m.params.entry.source}: ${m.params.entry.text}`);
  } else if (m.method === "Runtime.exceptionThrown") {
    consoleLines.push(`[exception] ${m.params.exceptionDetails?.exception?.description ?? m.params.exceptionDetails?.text}`);
  } else if (m.method === "Target.attachedToTarget") {
    const sid = m.params.sessionId;
    cdp.send("Runtime.enable", {}, sid).catch(() => {});
    cdp.send("Log.enable", {}, sid).catch(() => {});
    cdp.send("Runtime.runIfWaitingForDebugger", {}, sid).catch(() => {});
  }
});

// The chart's axes, checked in node first: every tick label differs from its neighbours, for
// a series varying by a noise of 1e-12 around 0.5 as for one spanning 3.9e-5 to 4.1e-5.
for (const [lo, hi] of [[0.5, 0.5 + 1e-12], [3.9e-5, 4.1e-5], [0, 0], [-2, 7]]) {
  const t = niceTicks(lo, hi);
  const labels = t.ticks.map((v) => tickLabel(v, t.step));
  check(t.lo <= lo && t.hi >= hi && new Set(labels).size === labels.length && labels.length >= 2 &&
    t.step >= Math.max(Math.abs(lo), Math.abs(hi)) * 1e-4,
  `axis for [${lo}, ${hi}]: ticks ${labels.join(" ")}`);
}

try {
  const { targetId } = await cdp.send("Target.createTarget", { url: "about:blank" });
  const { sessionId: s } = await cdp.send("Target.attachToTarget", { targetId, flatten: true });
  await cdp.send("Runtime.enable", {}, s);
  await cdp.send("Page.enable", {}, s);
  await cdp.send("Log.enable", {}, s);
  await cdp.send("Target.setAutoAttach", { autoAttach: true, waitForDebuggerOnStart: false, flatten: true }, s);

  const evaluate = async (expr, timeoutS = 300) => {
    const r = await withTimeout(
      cdp.send("Runtime.evaluate", { expression: expr, awaitPromise: true, returnByValue: true }, s),
      timeoutS,
      expr,
    );
    if (r.exceptionDetails) {
      throw new Error(`${expr}: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
    }
    return r.result.value;
  };
  const waitReady = async (timeoutS) => {
    const t0 = Date.now();
    while (Date.now() - t0 < timeoutS * 1000) {
      const st = await evaluate("!window.__stale && window.__sluice ? JSON.stringify({ready: __sluice.ready, error: __sluice.error}) : null", 10).catch(() => null);
      if (st) {
        const { ready, error } = JSON.parse(st);
        if (error) throw new Error(`the page reports: ${error}`);
        if (ready) return JSON.parse(await evaluate("JSON.stringify(__sluice.init)"));
      }
      await new Promise((ok) => setTimeout(ok, 250));
    }
    throw new Error(`the page was not ready after ${timeoutS} s`);
  };

  const shot = async (name) => {
    await evaluate("new Promise((ok) => requestAnimationFrame(() => setTimeout(ok, 200)))");
    const r = await cdp.send("Page.captureScreenshot", { format: "png", captureBeyondViewport: true }, s);
    const path = join(shotsDir, name);
    writeFileSync(path, Buffer.from(r.data, "base64"));
    log(`screenshot: ${path}`);
  };
  const waitFor = async (expr, timeoutS, what) => {
    const t0 = Date.now();
    while (Date.now() - t0 < timeoutS * 1000) {
      if (await evaluate(expr, 10)) return;
      await new Promise((ok) => setTimeout(ok, 250));
    }
    throw new Error(`timed out after ${timeoutS} s waiting for ${what}`);
  };
  const page = async () => JSON.parse(await evaluate(`JSON.stringify({
    status: document.getElementById("status").textContent,
    trainStatus: document.getElementById("train-status").textContent,
    trainButton: document.getElementById("train").textContent,
    trainDisabled: document.getElementById("train").disabled,
    log: document.getElementById("log").textContent,
    chart: __sluice.chart,
    steps: __sluice.steps.length,
    stagesSeen: __sluice.stagesSeen,
  })`));
  const chartPanel = (p, title) => p.chart.find((c) => c.title === title);
  mkdirSync(shotsDir, { recursive: true });

  // 1. Fresh start (?fresh clears any stored run): the engine download, empty charts.
  let t0 = Date.now();
  await cdp.send("Page.navigate", { url: url + "?fresh" }, s);
  const init = await waitReady(180);
  log(`ready in ${((Date.now() - t0) / 1000).toFixed(1)} s; adapter ${JSON.stringify(init.adapter.vendor)} ` +
    `${JSON.stringify(init.adapter.architecture)} fallback=${init.adapter.isFallbackAdapter}; wgpu ${JSON.stringify(init.engineAdapter)}`);
  check(!init.info.training, "fresh page starts from the demo model (no stored run)");
  const wasmBytes = statSync(join(dist, "pkg", "sluice_web_bg.wasm")).size;
  check(init.wasmBytes === wasmBytes, `the engine was downloaded whole (${init.wasmBytes} of ${wasmBytes} bytes)`);
  const downloadEvents = await evaluate("__sluice.downloadEvents");
  check(downloadEvents >= 1, `the page showed download progress (${downloadEvents} progress events)`);
  if (maxWasm) check(wasmBytes <= maxWasm, `the .wasm is ${(wasmBytes / 1e6).toFixed(2)} MB ≤ ${(maxWasm / 1e6).toFixed(1)} MB`);
  let p = await page();
  check(p.chart.length === 3 && p.chart.every((c) => c.empty && c.yLabels.length === 0),
    `empty chart panels draw no axis of nothing: ${JSON.stringify(p.chart)}`);
  check(await evaluate(`!document.getElementById("device").open && document.querySelectorAll("#device-table tr").length > 4`),
    "the Device box is a table, collapsed");
  await shot("1-loaded.png");

  // 2. The page's own example: Generate is busy while it runs; the answer is the stated one.
  const example = JSON.parse(await evaluate(`JSON.stringify([document.getElementById("example-prompt").textContent,
    document.getElementById("example-answer").textContent, document.getElementById("prompt").value])`));
  check(example[0] === example[2], `the prompt box holds the example ${example[0]}`);
  const busy = JSON.parse(await evaluate(`(() => { document.getElementById("generate").click();
    return JSON.stringify([document.getElementById("generate").disabled, document.getElementById("output").classList.contains("busy")]); })()`));
  check(busy[0] && busy[1], "while generating, Generate is disabled and the output shows it is busy");
  await waitFor(`__sluice.busy === 0 && !document.getElementById("output").classList.contains("busy")`, 120, "the example's answer");
  const answer = await evaluate(`document.getElementById("output").textContent`);
  check(answer === example[1], `the example ${example[0]} → ${JSON.stringify(answer)} (the page says ${example[1]})`);
  const stream = JSON.parse(await evaluate("JSON.stringify(__sluice.stream)"));
  check(stream.tokens >= 2 && stream.text === answer,
    `the answer streamed token by token (${stream.tokens} pieces adding up to ${JSON.stringify(stream.text)})`);
  await shot("2-generated.png");

  // 3. Greedy generation equals the native ids.
  const rows = [];
  for (const q of prompts) {
    const r = await evaluate(`sluiceApi.generate(${JSON.stringify(q)}, ${native[q].max_new_tokens ?? 8}).then(JSON.stringify)`, 300);
    const g = JSON.parse(r);
    rows.push({ prompt: q, browser: g, native: native[q] });
    check(
      JSON.stringify(g.generated_ids) === JSON.stringify(native[q].generated_ids),
      `${q} greedy ids in the browser ${JSON.stringify(g.generated_ids)} (text ${JSON.stringify(g.text)}) = native ${JSON.stringify(native[q].generated_ids)}`,
    );
  }

  if (args.quick) {
    log("--quick: stopping after generation");
    throw new Error("quick");
  }

  // 4. Train with the button: Start, then Pause during the second step, which finishes first.
  await evaluate(`document.getElementById("train").click()`);
  await waitFor("__sluice.steps.length >= 1", 600, "the first training step");
  await evaluate(`document.getElementById("train").click()`);
  p = await page();
  check(p.trainButton === "Pausing after this step…" && p.trainDisabled,
    `Pause waits for the running step (button: ${JSON.stringify(p.trainButton)}, disabled ${p.trainDisabled})`);
  await waitFor(`!document.getElementById("train").disabled && __sluice.busy === 0`, 600, "the pause");
  p = await page();
  const steps = JSON.parse(await evaluate("JSON.stringify(__sluice.steps)"));
  const n = steps.length;
  for (const r of steps) {
    log(`train step ${r.step}: ${r.line} (OPFS save ${r.save_ms?.toFixed(0)} ms)`);
  }
  check(n >= 2 && steps.at(-1).step === n, `paused after ${n} steps`);
  check(p.trainButton === "Continue training", `then the button offers ${JSON.stringify(p.trainButton)}`);
  check(steps.every((r) => Number.isFinite(r.loss)), "training losses are finite");
  check(steps[0].loss !== steps[1].loss, `the loss changed between the steps (${steps[0].loss} → ${steps[1].loss})`);
  check(["rollout", "update", "save"].every((st) => p.stagesSeen.includes(st)),
    `the step's stages were shown: ${p.stagesSeen.join(", ")}`);
  for (const [title, series] of [["reward, accuracy", "reward"], ["loss", "loss"], ["KL", "KL"]]) {
    const c = chartPanel(p, title);
    const labelsRight = c && c.yLabels.every((l, i) => Math.abs(Number(l) - c.yTicks[i]) < c.step * 0.01);
    check(c && !c.empty && c.series[series] === n && c.yLabels.length >= 2 && labelsRight,
      `chart "${title}" has ${n} ${series} points; its labels ${JSON.stringify(c?.yLabels)} read as its ticks`);
  }
  const logLines = p.log.trim().split("\n");
  check(logLines.length === n && !/\bstep \d+\.\d/.test(p.log) && /time \d+\.\d+ s/.test(p.log),
    `the log reads as a person expects: ${JSON.stringify(logLines[0])}`);
  check(p.status.includes(`at step ${n}`), `the banner follows the run: ${JSON.stringify(p.status)}`);
  await shot("3-training.png");

  // 5. Reload: the run, its chart and its log come back from OPFS; training goes on.
  t0 = Date.now();
  await evaluate("window.__stale = true"); // marks the old document until the new one loads
  await cdp.send("Page.navigate", { url }, s);
  const again = await waitReady(180);
  check(again.info.training?.step === n, `after a reload the stored run is resumed at step ${again.info.training?.step}`);
  p = await page();
  check(p.steps === n && chartPanel(p, "loss").series.loss === n && p.log.trim().split("\n").length === n,
    `the chart and the log are restored (${p.steps} steps)`);
  check(p.trainButton === "Continue training" && /press Continue training/.test(p.trainStatus),
    `the page says how to go on: ${JSON.stringify(p.trainStatus)}`);
  await shot("4-reloaded.png");
  const r3 = JSON.parse(await evaluate("sluiceApi.trainStep().then(JSON.stringify)", 600));
  check(r3.step === n + 1 && Number.isFinite(r3.loss), `training continues at step ${r3.step} (loss ${r3.loss})`);
  p = await page();
  check(p.status.includes(`at step ${n + 1}`), `the banner follows: ${JSON.stringify(p.status)}`);

  // 6. A recipe file with a model-based reward (reference likelihood) and the page's own
  // JavaScript reward: SFT then RL, each reward in the RL step's record.
  const recipe = [
    'seed = 1', 'out = "run"', '[model]', 'demo_hidden = 16',
    '[sft]', 'task = "sort:3"', 'steps = 1', 'batch_size = 4', 'schedule = { kind = "constant", lr = 1e-2 }',
    '[rl]', 'task = "sort:3"', 'steps = 2', 'schedule = { kind = "constant", lr = 1e-3 }',
    'rewards = [{ kind = "exact_match" }, { kind = "likelihood", weight = 0.5 }, { kind = "user", name = "short", weight = 0.5 }]',
    '[rl.sampling]', 'group_size = 2', 'prompts_per_step = 2', 'max_new_tokens = 0',
  ].join("\n");
  const short = "return samples.map((s) => 1 / (1 + s.completion.length));";
  const started = JSON.parse(await evaluate(
    `sluiceApi.startRecipe(${JSON.stringify(recipe)}, "short", ${JSON.stringify(short)}).then(JSON.stringify)`, 300));
  check(started.training?.task === "sort:3" && started.training?.step === 0,
    `the recipe starts a run: ${JSON.stringify(started.training)}`);
  const rs = JSON.parse(await evaluate(
    "sluiceApi.trainStep().then((a) => sluiceApi.trainStep().then((b) => JSON.stringify([a, b])))", 600));
  const rl = rs[1];
  check(rs[0].phase === "sft" && rl.phase === "rl" && rl["reward/short"] > 0 && rl["reward/short"] <= 1 &&
    rl["reward/reference_likelihood"] > 0 && rl["reward/reference_likelihood"] <= 1,
    `the recipe trains with its rewards: SFT loss ${rs[0].loss}, RL short ${rl["reward/short"]}, likelihood ${rl["reward/reference_likelihood"]}`);

  // Measurements.
  const f = (x, d = 1) => (typeof x === "number" ? x.toFixed(d) : "-");
  log("measurements (browser: Chromium headless, WebGPU on SwiftShader; native: sluice generate on this Vulkan driver):");
  for (const { prompt, browser, native: n } of rows) {
    log(`  ${prompt}: TTFT browser ${f(browser.ttft_ms)} ms vs native ${f(n.prefill_s * 1000)} ms; ` +
      `decode browser ${f(browser.decode_tokens_per_s)} tok/s vs native ${f(n.decode_tokens_per_s)} tok/s`);
  }
  const ms = [...steps, r3].map((r) => r.step_ms);
  log(`  engine download: ${(init.wasmBytes / 1e6).toFixed(2)} MB in ${(init.downloadMs / 1000).toFixed(2)} s`);
  log(`  training: ${ms.map((m) => (m / 1000).toFixed(2)).join(", ")} s per step ` +
    `(${(1000 / (ms.slice(1).reduce((a, b) => a + b, 0) / (ms.length - 1))).toFixed(3)} steps/s after the first)`);
  writeFileSync(join(dist, "browser-test.json"), JSON.stringify({ init, rows, steps: [...steps, r3] }, null, 1));
  const workerErrors = await evaluate("JSON.stringify(__sluice.workerErrors || [])");
  if (workerErrors !== "[]") log(`worker errors outside requests: ${workerErrors}`);
  const noisy = consoleLines.filter((l) => /^\[(error|warning|exception)\]/.test(l));
  if (noisy.length) log(`page/worker console errors and warnings (first 8):\n  ${noisy.slice(0, 8).join("\n  ")}`);
  // A WebGPU validation error (e.g. a WGSL kernel the browser rejects) poisons the device
  // in a background task: the run may look fine while an op silently did nothing.
  check(workerErrors === "[]", "no engine errors outside requests (WebGPU validation errors, panics)");
  log("PASS");
} catch (e) {
  failed = e.message !== "quick";
  console.error(`browser-test: ${e.message}`);
  console.error("browser-test: page/worker console:\n  " + consoleLines.slice(-40).join("\n  "));
  if (stderr.trim()) console.error("browser-test: chromium stderr (tail):\n" + stderr.split("\n").slice(-20).join("\n"));
} finally {
  proc.kill("SIGTERM");
  server.close();
  setTimeout(() => {
    try {
      rmSync(profile, { recursive: true, force: true });
    } catch {
      // best effort
    }
    process.exit(failed ? 1 : 0);
  }, 500);
}
