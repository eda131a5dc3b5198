// Panels behind admin endpoints. The API decides who may read them (a member key gets
// 403); the page only says so. Nothing here shows more of a key than its last four.
import { ApiError, apiGet } from "./api.js";
import { el, fill, note, table } from "./dom.js";
import { share } from "./format.js";

/** Why an admin panel has nothing to show, in words, with the API's own answer. */
export function unavailable(error, what) {
  if (error instanceof ApiError && error.status === 403) {
    return `Not available: the ${what} panel needs an admin key (the API answered 403: ${error.message})`;
  }
  if (error instanceof ApiError && error.status === 404) {
    return `Not available: this gateway has no ${what} API (404).`;
  }
  return `Not available: ${error.message}`;
}

/** The workspace's keys by id (last four, role, env), or null without an admin key. */
export async function keyLabels() {
  try {
    const listed = await apiGet("/admin/v1/keys");
    return new Map(listed.data.map((key) => [key.id, key]));
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) return null;
    throw error;
  }
}

function capRow(cap) {
  const used = Number(cap.spent) + Number(cap.reserved);
  const meter = el("meter", { min: 0, max: cap.usd, value: Math.min(used, Number(cap.usd)),
    high: Number(cap.usd) * 0.8, title: share(used, Number(cap.usd)) });
  return [cap.scope, cap.name || "(workspace)", cap.period, cap.enabled ? "on" : "off",
    `$${cap.usd}`, `$${cap.spent}`, `$${cap.reserved}`, `$${cap.left}`, meter];
}

export async function showCaps(container) {
  let shown;
  try {
    shown = await apiGet("/admin/v1/caps");
  } catch (error) {
    fill(container, note(unavailable(error, "spend caps"), "unavailable"));
    return;
  }
  const caps = shown.caps || [];
  if (!caps.length) {
    fill(container, note("No spend caps are set for this workspace (recovea cap set)."));
    return;
  }
  fill(container, table(["scope", "name", "period", "enabled", "cap", "spent", "reserved",
    "left", "used"], caps.map(capRow), { id: "caps-table" }));
}
