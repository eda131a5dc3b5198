// The period's totals and its spend over time, from GET /v1/recovea/usage?group_by=hour|day.
import { apiGet } from "./api.js";
import { spendOverTime } from "./charts.js";
import { el, fill, note, table } from "./dom.js";
import { count, share, usd } from "./format.js";

function card(metric, title, value, raw, detail) {
  return el("div", { class: "card", "data-metric": metric, "data-value": raw },
    el("div", { class: "card-title" }, title),
    el("div", { class: "card-value" }, value),
    detail ? el("div", { class: "card-detail" }, detail) : null);
}

function cards(totals) {
  const n = totals.requests;
  return [
    card("requests", "Requests", count(n), n),
    card("errors", "Errors", count(totals.errors), totals.errors, share(totals.errors, n)),
    card("cache_hits", "Cache hits", count(totals.cache_hits), totals.cache_hits,
      share(totals.cache_hits, n)),
    card("dedup_hits", "Singleflight hits", count(totals.dedup_hits), totals.dedup_hits,
      share(totals.dedup_hits, n)),
    card("fallbacks", "Fallbacks to baseline", count(totals.fallbacks), totals.fallbacks,
      share(totals.fallbacks, n)),
    card("baseline_cost_usd", "Baseline cost", usd(totals.baseline_cost_usd),
      totals.baseline_cost_usd),
    card("realized_cost_usd", "Realized cost", usd(totals.realized_cost_usd),
      totals.realized_cost_usd),
    card("savings_usd", "Savings", usd(totals.savings_usd), totals.savings_usd),
    card("input_tokens", "Input tokens", count(totals.input_tokens), totals.input_tokens),
    card("output_tokens", "Output tokens", count(totals.output_tokens), totals.output_tokens),
    card("unpriced", "Unpriced requests", count(totals.unpriced), totals.unpriced,
      "no price for their model"),
  ];
}

function tick(iso, bucket) {
  const date = new Date(iso);
  return bucket === "hour"
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { month: "short", day: "numeric" });
}

function money(value) {
  return value === null ? null : Number(value);
}

export async function showSummary(range, cardsBox, chartBox) {
  const usage = await apiGet("/v1/recovea/usage",
    { group_by: range.bucket, from: range.from, to: range.to });
  fill(cardsBox, cards(usage.totals));
  if (!usage.data.length) {
    fill(chartBox, note("No usage in this period (as of the last rollup)."));
    return usage;
  }
  const buckets = usage.data.map((row) => ({
    label: new Date(row.key).toLocaleString(),
    tick: tick(row.key, range.bucket),
    baseline: money(row.baseline_cost_usd),
    realized: money(row.realized_cost_usd),
  }));
  const rows = usage.data.map((row) => [
    new Date(row.key).toLocaleString(), count(row.requests), usd(row.baseline_cost_usd),
    usd(row.realized_cost_usd), usd(row.savings_usd),
  ]);
  fill(chartBox, spendOverTime(buckets), el("details", {},
    el("summary", {}, `Per ${range.bucket} (UTC ${range.bucket === "day" ? "days" : "hours"})`),
    table(["start", "requests", "baseline", "realized", "savings"], rows,
      { class: "spend-table" })));
  return usage;
}
