// The usage page: sign-in with an rcv_ key (kept in sessionStorage only), the period,
// and the panels, each filled from the API on its own so one failing panel says why
// without hiding the others.
import { showCaps, keyLabels } from "./admin.js";
import { ApiError, apiGet } from "./api.js";
import { showBreakdowns } from "./breakdowns.js";
import { fill, note } from "./dom.js";
import { period } from "./period.js";
import { showReconciliation } from "./reconcile.js";
import { showRequests } from "./requests.js";
import { currentKey, forgetKey, keepKey } from "./session.js";
import { showSummary } from "./summary.js";

const $ = (id) => document.getElementById(id);
let loads = 0;

function showSignIn(message) {
  $("dashboard").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  for (const id of ["summary-cards", "spend-chart", "breakdown-list", "requests-table",
    "caps-body", "reconciliation-body"]) fill($(id));
  $("sign-in-error").hidden = !message;
  $("sign-in-error").textContent = message || "";
}

function signOut(message) {
  forgetKey();
  showSignIn(message);
}

function signInMessage(error) {
  if (error instanceof ApiError && error.status === 401) {
    return `Sign-in failed: ${error.message} Check that you pasted a whole, unrevoked rcv_ key.`;
  }
  return `Sign-in failed: ${error.message}`;
}

async function signIn(event) {
  event.preventDefault();
  const input = $("key-input");
  const key = input.value.trim();
  $("sign-in-button").disabled = true;
  try {
    // any workspace-scoped read proves the key; nothing is kept unless it works
    await apiGet("/v1/recovea/ledger", {}, key);
    keepKey(key);
    input.value = "";
    showDashboard();
  } catch (error) {
    showSignIn(signInMessage(error));
  } finally {
    $("sign-in-button").disabled = false;
  }
}

function showDashboard() {
  $("sign-in").hidden = true;
  $("dashboard").hidden = false;
  $("sign-out").hidden = false;
  load();
}

/** Run one panel; a 401 signs out (the key was revoked), other errors stay in the panel. */
async function panel(box, work) {
  try {
    await work();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      signOut(signInMessage(error));
      return;
    }
    fill(box, note(`Could not load: ${error.message}`, "error"));
  }
}

async function load() {
  const dashboard = $("dashboard");
  let range;
  try {
    range = period($("period").value, $("from-input").value, $("to-input").value);
  } catch (error) {
    $("load-error").hidden = false;
    $("load-error").textContent = error.message;
    return;
  }
  $("load-error").hidden = true;
  const run = ++loads;
  dashboard.dataset.state = "loading";
  dashboard.dataset.from = range.from;
  dashboard.dataset.to = range.to;
  $("status").textContent = `Loading ${new Date(range.from).toLocaleString()} – ` +
    `${new Date(range.to).toLocaleString()}…`;
  const keys = keyLabels().catch(() => null);
  await Promise.all([
    panel($("summary-cards"), () => showSummary(range, $("summary-cards"), $("spend-chart"))),
    panel($("breakdown-list"), async () => showBreakdowns(range, $("breakdown-list"), await keys)),
    panel($("requests-table"), () => showRequests(range, $("requests-table"))),
    panel($("caps-body"), () => showCaps($("caps-body"))),
    panel($("reconciliation-body"), () => showReconciliation(range, $("reconciliation-body"))),
  ]);
  if (run !== loads || !currentKey()) return;
  $("status").textContent = `${new Date(range.from).toLocaleString()} – ` +
    `${new Date(range.to).toLocaleString()}`;
  dashboard.dataset.state = "ready";
}

function choosePeriod() {
  $("custom-range").hidden = $("period").value !== "custom";
  if ($("period").value !== "custom") load();
}

$("sign-in-form").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", () => signOut(null));
$("period").addEventListener("change", choosePeriod);
$("refresh").addEventListener("click", load);
if (currentKey()) showDashboard();
else showSignIn(null);
