// Calls to this gateway's own JSON endpoints with the signed-in key. Errors carry the
// API's status, code and message (the OpenAI error shape every endpoint answers in).
import { currentKey } from "./session.js";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function url(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null) query.set(name, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

async function failure(response) {
  let code = null;
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || null;
      message = body.error.message || message;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, message);
}

/** GET a JSON endpoint; `key` overrides the session's (used to try a key at sign-in). */
export async function apiGet(path, params, key) {
  const headers = { accept: "application/json" };
  const used = key || currentKey();
  if (used) headers.authorization = `Bearer ${used}`;
  const response = await fetch(url(path, params), {
    headers,
    cache: "no-store",
    credentials: "omit",
    referrerPolicy: "no-referrer",
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** The receipt public keys (no authentication). */
export async function receiptKeys() {
  const response = await fetch("/.well-known/recovea-receipt-keys", {
    cache: "no-store",
    credentials: "omit",
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}
