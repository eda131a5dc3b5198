// How figures are shown. Dollar amounts are the API's own decimal strings, never
// re-computed in floating point; a missing price is "unpriced", not $0.

export function usd(value) {
  return value === null || value === undefined ? "unpriced" : `$${value}`;
}

export function count(value) {
  return value === null || value === undefined ? "—" : Number(value).toLocaleString("en-US");
}

/** `part` of `whole` as a percentage with one decimal ("—" when there is no whole). */
export function share(part, whole) {
  if (!whole) return "—";
  return `${((100 * part) / whole).toFixed(1)}%`;
}

export function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

/** A group's key as shown: a null key is "(none)". */
export function label(key) {
  return key === null || key === undefined ? "(none)" : String(key);
}

export function shortId(id) {
  return id ? `${String(id).slice(0, 8)}…` : "—";
}
