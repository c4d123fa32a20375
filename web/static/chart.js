// The training chart: side-by-side panels, each with its own y axis, drawn on one canvas.
// Axes use "nice" ticks (1, 2, 5 × 10^k) with labels precise enough to tell them apart; an
// empty panel shows what it is waiting for instead of an axis of nothing. `draw` returns
// what it drew (titles, series sizes, tick labels) so tests can check the picture.

/** Ticks covering [lo, hi]: about `n` intervals of 1, 2 or 5 × 10^k. */
export function niceTicks(lo, hi, n = 4) {
  if (!(hi - lo > Math.max(Math.abs(lo), Math.abs(hi)) * 1e-3)) {
    // One value, a flat series (variation below 0.1% of its size) or none: a span
    // around it that reads well, not ticks 1e-13 apart that all print alike.
    const c = Number.isFinite(lo) && Number.isFinite(hi) ? (lo + hi) / 2 : Number.isFinite(lo) ? lo : 0;
    const half = c === 0 ? 1 : Math.abs(c) * 0.5;
    return niceTicks(c - half, c + half, n);
  }
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const first = Math.floor(lo / step) * step;
  const last = Math.ceil(hi / step) * step;
  const ticks = [];
  for (let v = first; v <= last + step / 2; v += step) ticks.push(Math.abs(v) < step / 1e6 ? 0 : v);
  return { lo: first, hi: last, step, ticks };
}

/** A tick label with as many digits as the step needs (scientific below 1e-3), so
 *  neighbouring ticks never read alike: 1.5e-3 next to 1.0e-3, not 2e-3. */
export function tickLabel(v, step) {
  if (v === 0) return "0";
  if (step < 1e-3 || Math.abs(v) >= 1e5) {
    const mag = (x) => Math.floor(Math.log10(Math.abs(x)) + 1e-9);
    const digits = Math.max(0, mag(v) - mag(step));
    return v.toExponential(Math.min(digits, 6)).replace("e+", "e");
  }
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return v.toFixed(decimals);
}

const FONT = "12px system-ui, sans-serif";
const GRID = "#dde1e6";
const INK = "#5f6b7a";

function drawPanel(g, box, panel, xMax) {
  const { x0, y0, w, h } = box;
  const L = 52, R = 10, T = 40, B = 34;
  const px = (s) => x0 + L + ((w - L - R) * s) / xMax;
  const pts = panel.series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
  const empty = pts.length === 0;
  g.fillStyle = "#1d232b";
  g.font = "bold " + FONT;
  g.fillText(panel.title, x0 + L, y0 + 14);
  g.font = FONT;
  // Legend: a swatch per series, in the series' own colour, under the title.
  let lx = x0 + L;
  for (const s of panel.series) {
    g.fillStyle = s.color;
    g.fillRect(lx, y0 + 21, 10, 10);
    g.fillStyle = INK;
    g.fillText(s.name, lx + 14, y0 + 30);
    lx += 14 + g.measureText(s.name).width + 12;
  }
  const top = y0 + T, bottom = y0 + h - B;
  g.strokeStyle = GRID;
  g.strokeRect(x0 + L, top, w - L - R, bottom - top);
  const out = { title: panel.title, empty, yTicks: [], yLabels: [], step: null, series: {} };
  for (const s of panel.series) out.series[s.name] = s.points.length;
  if (empty) {
    g.fillStyle = INK;
    g.textAlign = "center";
    g.fillText(panel.waiting, x0 + L + (w - L - R) / 2, (top + bottom) / 2);
    g.textAlign = "left";
    return out;
  }
  const range = panel.unit ? niceTicks(0, 1) : niceTicks(Math.min(...pts), Math.max(...pts));
  const py = (v) => bottom - ((bottom - top) * (v - range.lo)) / (range.hi - range.lo);
  g.fillStyle = INK;
  out.step = range.step;
  for (const v of range.ticks) {
    const label = tickLabel(v, range.step);
    out.yTicks.push(v);
    out.yLabels.push(label);
    g.beginPath();
    g.moveTo(x0 + L, py(v));
    g.lineTo(x0 + w - R, py(v));
    g.stroke();
    g.textAlign = "right";
    g.fillText(label, x0 + L - 4, py(v) + 4);
  }
  // x axis: step ticks, then the axis name centred under them.
  const xs = niceTicks(0, xMax, 4);
  g.textAlign = "center";
  for (const s of xs.ticks.filter((s) => s <= xMax)) g.fillText(String(s), px(s), bottom + 14);
  g.fillText("step", x0 + L + (w - L - R) / 2, bottom + 28);
  g.textAlign = "left";
  for (const s of panel.series) {
    const p = s.points.filter(([, y]) => Number.isFinite(y));
    g.strokeStyle = g.fillStyle = s.color;
    g.lineWidth = 2;
    g.beginPath();
    p.forEach(([x, y], i) => (i ? g.lineTo(px(x), py(y)) : g.moveTo(px(x), py(y))));
    g.stroke();
    for (const [x, y] of p) g.fillRect(px(x) - 2.5, py(y) - 2.5, 5, 5);
    g.lineWidth = 1;
  }
  return out;
}

/** Draws `panels` side by side at the canvas's displayed size (sharp on high-DPI
 *  screens); x runs from 0 to `xMax` steps. Returns what was drawn. */
export function draw(canvas, panels, xMax) {
  const dpr = globalThis.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || canvas.width;
  const cssH = canvas.clientHeight || canvas.height;
  canvas.width = Math.round(cssW * dpr);
  canvas.height = Math.round(cssH * dpr);
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, cssW, cssH);
  g.font = FONT;
  const w = cssW / panels.length;
  return panels.map((p, i) => drawPanel(g, { x0: i * w, y0: 0, w, h: cssH }, p, xMax));
}
