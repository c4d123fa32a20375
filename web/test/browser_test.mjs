// Browser test of the Sluice demo page: serves web/dist on 127.0.0.1, drives headless
// Chromium over the DevTools protocol (--remote-debugging-pipe; no npm packages), and checks
// that the page's greedy ids equal the native ones, that two training steps run with a
// changing finite loss, and that a reload resumes the run from OPFS at step 3.
//
//   node web/test/browser_test.mjs --dist web/dist --native native.json [--browser PATH]
//       [--screenshot PATH]
//
// native.json: {"<prompt>": {"generated_ids": [...], "prefill_s": .., "decode_tokens_per_s": ..}}.
// Exits non-zero on the first failed check.

import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { extname, join, normalize, resolve } from "node:path";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1]]);
    return acc;
  }, []),
);
const dist = resolve(args.dist || "web/dist");
const native = JSON.parse(readFileSync(args.native, "utf8"));
const browserPath = args.browser || "/usr/lib/chromium/chromium";
const screenshot = args.screenshot || join(dist, "screenshot.png");
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

  // 1. Fresh start (?fresh clears any stored run).
  let t0 = Date.now();
  await cdp.send("Page.navigate", { url: url + "?fresh" }, s);
  const init = await waitReady(180);
  log(`ready in ${((Date.now() - t0) / 1000).toFixed(1)} s; adapter ${JSON.stringify(init.adapter.vendor)} ` +
    `${JSON.stringify(init.adapter.architecture)} fallback=${init.adapter.isFallbackAdapter}; wgpu ${JSON.stringify(init.engineAdapter)}`);
  check(!init.info.training, "fresh page starts from the demo model (no stored run)");

  // 2. Greedy generation equals the native ids.
  const rows = [];
  for (const p of prompts) {
    const r = await evaluate(`sluiceApi.generate(${JSON.stringify(p)}, ${native[p].max_new_tokens ?? 8}).then(JSON.stringify)`, 300);
    const g = JSON.parse(r);
    rows.push({ prompt: p, browser: g, native: native[p] });
    check(
      JSON.stringify(g.generated_ids) === JSON.stringify(native[p].generated_ids),
      `${p} greedy ids in the browser ${JSON.stringify(g.generated_ids)} (text ${JSON.stringify(g.text)}) = native ${JSON.stringify(native[p].generated_ids)}`,
    );
  }

  if (args.quick) {
    log("--quick: stopping after generation");
    throw new Error("quick");
  }

  // 3. Two training steps: finite, changing loss.
  const steps = [];
  for (let i = 0; i < 2; i++) {
    const r = JSON.parse(await evaluate("sluiceApi.trainStep().then(JSON.stringify)", 600));
    steps.push(r);
    log(`train step ${r.step}: loss ${r.loss} reward ${r.reward} kl ${r.kl} entropy ${r.entropy} ` +
      `(${(r.step_ms / 1000).toFixed(2)} s, OPFS save ${r.save_ms?.toFixed(0)} ms)`);
  }
  check(steps.every((r) => Number.isFinite(r.loss)), "training losses are finite");
  check(steps[0].loss !== steps[1].loss, `the loss changed between the steps (${steps[0].loss} → ${steps[1].loss})`);
  check(steps[1].step === 2, "the run is at step 2");

  await evaluate("new Promise((ok) => setTimeout(ok, 300))");
  const shot = await cdp.send("Page.captureScreenshot", { format: "png", captureBeyondViewport: true }, s);
  writeFileSync(screenshot, Buffer.from(shot.data, "base64"));
  log(`screenshot: ${screenshot}`);

  // 4. Reload: the run comes back from OPFS and continues at step 3.
  t0 = Date.now();
  await evaluate("window.__stale = true"); // marks the old document until the new one loads
  await cdp.send("Page.navigate", { url }, s);
  const again = await waitReady(180);
  check(again.info.training?.step === 2, `after a reload the stored run is resumed at step ${again.info.training?.step}`);
  const r3 = JSON.parse(await evaluate("sluiceApi.trainStep().then(JSON.stringify)", 600));
  check(r3.step === 3 && Number.isFinite(r3.loss), `training continues at step ${r3.step} (loss ${r3.loss})`);

  // Measurements.
  const f = (x, d = 1) => (typeof x === "number" ? x.toFixed(d) : "-");
  log("measurements (browser: Chromium headless, WebGPU on SwiftShader; native: sluice generate on this Vulkan driver):");
  for (const { prompt, browser, native: n } of rows) {
    log(`  ${prompt}: TTFT browser ${f(browser.ttft_ms)} ms vs native ${f(n.prefill_s * 1000)} ms; ` +
      `decode browser ${f(browser.decode_tokens_per_s)} tok/s vs native ${f(n.decode_tokens_per_s)} tok/s`);
  }
  const ms = [...steps, r3].map((r) => r.step_ms);
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
