// The key page's charts: requests/errors and cost per UTC day, from the JSON block the
// server rendered (uPlot; no inline script under the CSP).
(function () {
  "use strict";
  const source = document.getElementById("key-chart-data");
  if (!source || typeof uPlot === "undefined") return;
  const d = JSON.parse(source.textContent);
  const utc = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");
  const specs = {
    requests: [["Requests", d.requests, "#1f4fbf"], ["Errors", d.errors, "#b3261e"]],
    cost: [["Cost (USD)", d.cost, "#8a5a00"]],
  };
  const made = [];
  const size = (el) => ({ width: Math.max(240, el.clientWidth), height: 150 });
  for (const el of document.querySelectorAll("[data-key-chart]")) {
    const spec = specs[el.dataset.keyChart];
    if (!spec) continue;
    const opts = {
      ...size(el),
      tzDate: utc,
      legend: { live: true },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [{ stroke: "#444" }, { stroke: "#444", size: 64 }],
      series: [{ label: "UTC day" }].concat(spec.map(([label, , color]) => ({
        label, stroke: color, width: 2, fill: color + "1a",
      }))),
    };
    made.push([el, new uPlot(opts, [d.x].concat(spec.map((s) => s[1])), el)]);
  }
  const observer = new ResizeObserver(() => {
    for (const [el, u] of made) {
      const next = size(el);
      if (next.width !== u.width) u.setSize(next);
    }
  });
  for (const [el] of made) observer.observe(el);
})();
