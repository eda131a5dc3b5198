// Usage by model, feature, end user, route and rcv_ key, from
// GET /v1/recovea/usage?group_by=…: a chart of the largest groups and the full table.
import { apiGet } from "./api.js";
import { byGroup } from "./charts.js";
import { el, fill, note, table } from "./dom.js";
import { count, label, shortId, usd } from "./format.js";

export const DIMENSIONS = [
  ["model", "By model"],
  ["feature", "By feature"],
  ["end_user", "By end user"],
  ["route", "By route"],
  ["key", "By rcv_ key"],
];
const CHARTED = 8;

/** How a key id is shown: its last four when an admin key could list the keys. */
function keyName(id, keys) {
  if (id === null) return "(no key: passthrough)";
  const known = keys && keys.get(id);
  return known ? `…${known.last_four} (${known.role}, ${known.env})` : `key ${shortId(id)}`;
}

function groupRow(dimension, row, name) {
  const cells = [
    el("td", { title: label(row.key) }, name),
    count(row.requests), count(row.errors), count(row.cache_hits), count(row.dedup_hits),
    usd(row.baseline_cost_usd), usd(row.realized_cost_usd), usd(row.savings_usd),
  ];
  const tr = el("tr", { "data-key": row.key === null ? "" : row.key, "data-requests": row.requests },
    cells.map((cell) => (cell instanceof Node ? cell : el("td", {}, cell))));
  return tr;
}

function panel(dimension, title, usage, keys) {
  const nameOf = (key) => (dimension === "key" ? keyName(key, keys) : label(key));
  const box = el("div", { class: "breakdown", "data-group": dimension }, el("h3", {}, title));
  if (!usage.data.length) {
    box.append(note("No usage in this period."));
    return box;
  }
  box.append(byGroup(usage.data.slice(0, CHARTED).map((row) => ({
    label: nameOf(row.key),
    baseline: row.baseline_cost_usd === null ? null : Number(row.baseline_cost_usd),
    realized: row.realized_cost_usd === null ? null : Number(row.realized_cost_usd),
  }))));
  const head = ["", "requests", "errors", "cache", "singleflight", "baseline", "realized", "savings"];
  const grid = table(head, []);
  grid.tBodies[0].append(...usage.data.map((row) => groupRow(dimension, row, nameOf(row.key))));
  box.append(grid);
  if (dimension === "key" && !keys) {
    box.append(note("Key ids are shown; an admin key shows each key's last four characters."));
  }
  return box;
}

export async function showBreakdowns(range, container, keys) {
  const results = await Promise.all(DIMENSIONS.map(([dimension]) =>
    apiGet("/v1/recovea/usage", { group_by: dimension, from: range.from, to: range.to })));
  fill(container, DIMENSIONS.map(([dimension, title], i) =>
    panel(dimension, title, results[i], keys)));
}
