// The latest ledger rows (GET /v1/recovea/requests), each with its receipt and a
// "Verify" that runs verify.js on it against the published receipt keys.
import { ApiError, apiGet, receiptKeys } from "./api.js";
import { el, fill, note, table } from "./dom.js";
import { count, shortId, when } from "./format.js";
import { verifyReceipt } from "./verify.js";

const SHOWN = 50;

function yes(value) {
  if (value === null || value === undefined) return "—";
  return value ? "yes" : "no";
}

function levers(fired) {
  const entries = Object.entries(fired || {});
  return entries.length ? entries.map(([name, result]) => `${name}: ${result}`).join(", ") : "—";
}

function model(row) {
  return row.realized_model && row.realized_model !== row.baseline_model
    ? `${row.baseline_model} → ${row.realized_model}`
    : row.baseline_model || "—";
}

/** The chain's receipt before `receipt`: its token, or null when the ledger lacks it. */
async function previousToken(receipt) {
  if (receipt.seq <= 1) return undefined;
  const page = await apiGet("/v1/recovea/ledger",
    { chain: receipt.chain, after_seq: receipt.seq - 2, limit: 1 });
  const before = page.receipts[0];
  return before && before.seq === receipt.seq - 1 ? before.token : null;
}

function outcome(cell, result, receipt) {
  const lines = result.lines.map(([check, text]) => el("li", {}, `${check}: ${text}`));
  cell.setAttribute("data-verified", result.ok ? "ok" : "failed");
  fill(cell,
    el("div", { class: result.ok ? "verified" : "error" },
      result.ok ? "receipt OK" : `receipt FAILED: ${result.error}`),
    el("ul", { class: "checks" }, lines),
    receipt ? el("details", {}, el("summary", {}, `receipt (chain ${shortId(receipt.chain)},` +
      ` seq ${receipt.seq})`), el("code", { class: "token" }, receipt.token)) : null);
}

async function verifyRow(row, cell, keys) {
  cell.setAttribute("data-verified", "running");
  fill(cell, "verifying…");
  let receipt;
  try {
    receipt = await apiGet(`/v1/recovea/receipts/${row.request_id}`);
  } catch (error) {
    const why = error instanceof ApiError && error.status === 404
      ? "no receipt is stored for this request"
      : error.message;
    outcome(cell, { ok: false, lines: [], error: why }, null);
    return;
  }
  try {
    const result = await verifyReceipt(receipt.token, await keys(),
      { row, previousToken: await previousToken(receipt) });
    outcome(cell, result, receipt);
  } catch (error) {
    outcome(cell, { ok: false, lines: [], error: error.message }, receipt);
  }
}

function requestRow(row, keys) {
  const result = el("td", { class: "verify-result" });
  const button = el("button", { type: "button", class: "verify" }, "Verify");
  button.addEventListener("click", () => verifyRow(row, result, keys));
  const tokens = `${count(row.input_tokens)} / ${count(row.output_tokens)}`;
  return el("tr", { "data-request-id": row.request_id },
    [when(row.ts), el("code", { title: row.request_id }, shortId(row.request_id)),
      row.provider, model(row), row.feature || "—", row.status, tokens, yes(row.cache_hit),
      yes(row.dedup_singleflight), yes(row.fell_back_to_baseline), levers(row.levers_fired),
      count(row.latency_total_ms)]
      .map((cell) => el("td", {}, cell)),
    el("td", {}, button), result);
}

export async function showRequests(range, container) {
  const listed = await apiGet("/v1/recovea/requests",
    { from: range.from, to: range.to, limit: SHOWN });
  if (!listed.data.length) {
    fill(container, note("No requests in this period."));
    return;
  }
  let published = null;
  const keys = () => (published ??= receiptKeys().catch((error) => {
    published = null;
    throw error;
  }));
  const grid = table(["time", "request", "provider", "model", "feature", "status",
    "tokens in / out", "cache", "singleflight", "fallback", "levers", "latency ms", "", "receipt"],
  [], { id: "requests" });
  grid.tBodies[0].append(...listed.data.map((row) => requestRow(row, keys)));
  fill(container, grid, listed.has_more ? note(`The ${SHOWN} newest are shown.`) : null);
}
