// Dashboard charts: uPlot over the JSON block the server rendered into the page (UTC times).
(function () {
  "use strict";
  const source = document.getElementById("chart-data");
  if (!source || typeof uPlot === "undefined") return;
  const d = JSON.parse(source.textContent);
  const utc = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");
  const BLUE = "#1f4fbf", RED = "#b3261e", GREEN = "#1b6e3a", AMBER = "#8a5a00";

  const charts = {
    requests: [["Requests", d.requests, BLUE], ["Errors", d.errors, RED]],
    tokens: [["Prompt", d.prompt_tokens, GREEN], ["Completion", d.completion_tokens, BLUE]],
    cost: [["Cost (USD)", d.cost, AMBER]],
    error_rate: [["Error rate %", d.error_rate, RED]],
    latency: [["p50 ms", d.p50, BLUE], ["p95 ms", d.p95, AMBER]],
  };
  const made = [];

  function size(el) {
    const w = Math.max(240, el.clientWidth);
    return { width: w, height: Math.round(Math.min(220, Math.max(160, w * 0.45))) };
  }

  for (const el of document.querySelectorAll("[data-chart]")) {
    const spec = charts[el.dataset.chart];
    if (!spec) continue;
    const opts = {
      ...size(el),
      tzDate: utc,
      legend: { live: true },
      cursor: { points: { size: 6 } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [{ stroke: "#444" }, { stroke: "#444", size: 56 }],
      series: [{ label: "UTC" }].concat(spec.map(([label, , color]) => ({
        label, stroke: color, width: 2, fill: color + "1a", spanGaps: false,
        points: { show: d.x.length <= 48 },
      }))),
    };
    made.push([el, new uPlot(opts, [d.x].concat(spec.map((s) => s[1])), el)]);
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
