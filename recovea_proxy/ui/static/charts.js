// Charts in plain SVG (no library): grouped bars of baseline against realized cost,
// over time or per group. Presentation attributes and classes only (the page's CSP
// allows no inline style).

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  for (const child of children) node.append(child);
  return node;
}

function titled(node, text) {
  node.append(svg("title", {}, text));
  return node;
}

/** A rounded-up axis maximum: 1, 2 or 5 times a power of ten. */
function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * power).find((m) => m >= value);
}

function legend(x, y) {
  return svg("g", { class: "legend" },
    svg("rect", { x, y, width: 10, height: 10, class: "baseline" }),
    svg("text", { x: x + 14, y: y + 9 }, "baseline"),
    svg("rect", { x: x + 80, y, width: 10, height: 10, class: "realized" }),
    svg("text", { x: x + 94, y: y + 9 }, "realized"));
}

/**
 * Grouped vertical bars: `buckets` is [{label, tick, baseline, realized}] (numbers or
 * null, in dollars), in order. One pair of bars per bucket, a dollar axis, a legend.
 */
export function spendOverTime(buckets) {
  const width = 760;
  const height = 240;
  const left = 64;
  const bottom = 36;
  const top = 24;
  const plotW = width - left - 12;
  const plotH = height - top - bottom;
  const max = niceMax(Math.max(0, ...buckets.flatMap((b) => [b.baseline || 0, b.realized || 0])));
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
    "aria-label": "Baseline and realized cost over time",
  });
  for (const fraction of [0, 0.5, 1]) {
    const y = top + plotH * (1 - fraction);
    chart.append(svg("line", { x1: left, x2: width - 12, y1: y, y2: y, class: "grid" }));
    chart.append(svg("text", { x: left - 6, y: y + 4, class: "axis", "text-anchor": "end" },
      `$${(max * fraction).toPrecision(2).replace(/\.?0+$/, "")}`));
  }
  const slot = plotW / Math.max(buckets.length, 1);
  const bar = Math.max(Math.min(slot * 0.4, 24), 1);
  const every = Math.ceil(buckets.length / 8);
  buckets.forEach((bucket, index) => {
    const x = left + slot * index + slot / 2;
    for (const [name, offset] of [["baseline", -bar], ["realized", 0]]) {
      const value = bucket[name];
      if (value === null) continue;
      const h = (plotH * value) / max;
      chart.append(titled(
        svg("rect", { x: x + offset, y: top + plotH - h, width: bar, height: h, class: name }),
        `${bucket.label}: ${name} $${value}`));
    }
    if (index % every === 0) {
      chart.append(svg("text", { x, y: height - bottom + 16, class: "axis", "text-anchor": "middle" },
        bucket.tick));
    }
  });
  chart.append(legend(left, 4));
  return chart;
}

/** Horizontal grouped bars, one row per group: [{label, baseline, realized}]. */
export function byGroup(rows) {
  const rowH = 22;
  const width = 360;
  const left = 120;
  const height = rows.length * rowH + 24;
  const max = niceMax(Math.max(0, ...rows.flatMap((r) => [r.baseline || 0, r.realized || 0])));
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, class: "chart small", role: "img",
    "aria-label": "Baseline and realized cost per group",
  });
  rows.forEach((row, index) => {
    const y = 20 + index * rowH;
    const name = row.label.length > 18 ? `${row.label.slice(0, 17)}…` : row.label;
    chart.append(titled(svg("text", { x: left - 6, y: y + 12, class: "axis", "text-anchor": "end" },
      name), row.label));
    for (const [key, offset] of [["baseline", 0], ["realized", 9]]) {
      const value = row[key];
      if (value === null) continue;
      const w = ((width - left - 8) * value) / max;
      chart.append(titled(svg("rect", { x: left, y: y + offset, width: w, height: 8, class: key }),
        `${row.label}: ${key} $${value}`));
    }
  });
  chart.append(legend(left, 2));
  return chart;
}
