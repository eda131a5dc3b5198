// The providers' own usage reports against the ledger, per day, provider and model
// (GET /v1/recovea/reconciliation): the verdicts and the figures behind them.
import { apiGet } from "./api.js";
import { el, fill, note, table } from "./dom.js";
import { count, usd } from "./format.js";
import { days } from "./period.js";

function verdicts(data) {
  const tally = new Map();
  for (const row of data) tally.set(row.verdict, (tally.get(row.verdict) || 0) + 1);
  return el("p", { class: "verdicts" }, [...tally].map(([verdict, n]) =>
    el("span", { class: `verdict v-${verdict.replace(/\W+/g, "-")}` }, `${verdict}: ${n}`)));
}

export async function showReconciliation(range, container) {
  const result = await apiGet("/v1/recovea/reconciliation", days(range));
  if (!result.data.length) {
    fill(container, note("No provider usage reports for this period. An admin sets a" +
      " report key (recovea report-key set); see docs/reconciliation.md."));
    return;
  }
  const rows = result.data.map((row) => [
    row.day, row.provider, row.model, el("span", { class: "verdict" }, row.verdict),
    row.settled ? "yes" : "not yet",
    `${count(row.provider_reported.requests)} / ${count(row.ledger.requests)}`,
    `${count(row.provider_reported.input_tokens)} / ${count(row.ledger.input_tokens)}`,
    `${count(row.provider_reported.output_tokens)} / ${count(row.ledger.output_tokens)}`,
    `${usd(row.provider_reported.cost_usd)} / ${usd(row.ledger.cost_usd)}`,
  ]);
  fill(container, verdicts(result.data), table(["day", "provider", "model", "verdict",
    "settled", "requests (provider / ledger)", "input tokens", "output tokens", "cost"], rows,
  { id: "reconciliation-table" }));
}
