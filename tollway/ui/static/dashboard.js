// Dashboard charts: uPlot over the JSON block the server rendered into the page (UTC times).
// Every chart shares one x range (the report's buckets) and one cursor; a bucket without data
// is a gap in its line, and a lone value between gaps still shows as a point.
(function () {
  "use strict";
  const source = document.getElementById("chart-data");
  if (!source || typeof uPlot === "undefined") return;
  const d = JSON.parse(source.textContent);
  const utc = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");
  const dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  const css = getComputedStyle(document.documentElement);
  const color = (name, fallback) => (css.getPropertyValue(name).trim() || fallback);
  const BLUE = color("--chart-1", "#1f4fbf"), RED = color("--bad", "#b3261e");
  const GREEN = color("--chart-2", "#1b6e3a"), AMBER = color("--chart-3", "#8a5a00");
  const GREY = color("--muted", "#555d66"), AXIS = color("--fg", "#1a1d21");
  const GRID = dark ? "rgba(255,255,255,0.09)" : "rgba(0,0,0,0.07)";

  const charts = {
    requests: [
      ["Requests", d.requests, BLUE],
      ["Previous period", d.previous_requests, GREY, [5, 4]],
      ["Client errors", d.client_errors, AMBER],
      ["Upstream errors", d.upstream_errors, RED],
    ],
    tokens: [["Prompt", d.prompt_tokens, GREEN], ["Completion", d.completion_tokens, BLUE]],
    cost: [["Cost (USD)", d.cost, AMBER]],
    error_rate: [["Client %", d.client_error_rate, AMBER], ["Upstream %", d.upstream_error_rate, RED]],
    latency: [["p50 ms", d.p50, BLUE], ["p95 ms", d.p95, AMBER]],
  };
  const made = [];

  // 600000 -> "600k", 1250000 -> "1.25M", 0.0042 -> "0.0042": short labels that fit.
  function compact(v) {
    if (v == null) return "";
    const a = Math.abs(v);
    if (a >= 1e9) return +(v / 1e9).toFixed(2) + "B";
    if (a >= 1e6) return +(v / 1e6).toFixed(2) + "M";
    if (a >= 1e4) return +(v / 1e3).toFixed(1) + "k";
    if (a >= 1 || a === 0) return String(+v.toFixed(2));
    return String(+v.toPrecision(2));
  }
  // The y axis is as wide as its longest label (uPlot's fixed 50 px clipped "600,000").
  function axisSize(self, values, axisIdx, cycleNum) {
    const axis = self.axes[axisIdx];
    if (cycleNum > 1) return axis._size;
    let longest = 0;
    for (const v of values || []) longest = Math.max(longest, String(v).length);
    return Math.ceil(longest * 7.5) + 24;
  }
  // Points only where a value has no neighbour to draw a line to: a lone value stays visible.
  function lonePoints(u, seriesIdx) {
    const ys = u.data[seriesIdx], out = [];
    for (let i = 0; i < ys.length; i++) {
      if (ys[i] != null && (i === 0 || ys[i - 1] == null) && (i === ys.length - 1 || ys[i + 1] == null)) out.push(i);
    }
    return out;
  }

  function size(el) {
    const w = Math.max(240, el.clientWidth);
    return { width: w, height: Math.round(Math.min(220, Math.max(160, w * 0.45))) };
  }
  const xMin = d.x.length ? d.x[0] : 0;
  const xMax = d.x.length ? d.x[d.x.length - 1] : 1;

  for (const el of document.querySelectorAll("[data-chart]")) {
    const spec = charts[el.dataset.chart];
    if (!spec) continue;
    const opts = {
      ...size(el),
      tzDate: utc,
      legend: { live: true },
      cursor: { points: { size: 6 }, sync: { key: "dashboard" } },
      scales: {
        x: { time: true, range: () => [xMin, xMax > xMin ? xMax : xMin + 3600] },
        y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] },
      },
      axes: [
        { stroke: AXIS, grid: { stroke: GRID }, ticks: { stroke: GRID } },
        { stroke: AXIS, grid: { stroke: GRID }, ticks: { stroke: GRID }, size: axisSize,
          values: (u, splits) => splits.map(compact) },
      ],
      series: [{ label: "UTC" }].concat(spec.map(([label, , stroke, dash]) => ({
        label, stroke, width: 2, dash, fill: dash ? undefined : stroke + "1a", spanGaps: false,
        points: { show: true, size: 5, filter: lonePoints },
        value: (u, v) => (v == null ? "—" : compact(v)),
      }))),
    };
    const chart = new uPlot(opts, [d.x].concat(spec.map((s) => s[1])), el);
    el.uplot = chart;  // for the browser tests, which read the axes and series back
    made.push([el, chart]);
  }

  // Follow the container's width (window resize, phone rotation) without polling.
  const observer = new ResizeObserver(() => {
    for (const [el, u] of made) {
      const next = size(el);
      if (next.width !== u.width) u.setSize(next);
    }
  });
  for (const [el] of made) observer.observe(el);
})();
