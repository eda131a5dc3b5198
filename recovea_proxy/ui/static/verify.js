// The receipt checks of `recovea verify-receipt` (recovea_proxy/meter/verify.py and
// verify_chain.py), in the browser with Web Crypto's Ed25519: a strict decode of the
// token, the signature with the published key its kid names (whose kid must be the
// hash of the key), the key's validity window, and the version; then what the page
// can add: the receipt against the ledger row it belongs to, and its link to the
// chain's previous receipt. The request and response hashes need the bodies, which
// the page never holds: `recovea verify-receipt --request/--response` checks those.
// Failure messages are the command's, word for word where the check is the same.

export const VERSION = "recovea-receipt-v1";
export const ZERO_HASH = "0".repeat(64);
export const KEY_GRACE_S = 3600;
const COUNTS = ["input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"];
const FIELDS = (
  "v kid request_id ts customer_id rcv_key_id provider baseline_model realized_model" +
  " input_tokens output_tokens cached_tokens reasoning_tokens cache_hit status" +
  " request_sha256 response_sha256 chain seq prev"
).split(" ").sort();
const STRING_FIELDS = ["v", "kid", "request_sha256", "response_sha256", "chain", "prev"];
/** The receipt fields that repeat the ledger row's columns of the same name. */
const ROW_FIELDS = [
  "customer_id", "rcv_key_id", "provider", "baseline_model", "realized_model",
  ...COUNTS, "cache_hit", "status",
];

export class VerifyError extends Error {}
export class MalformedError extends VerifyError {}

/** An untrusted string fit for a one-line message: non-printables escaped, bounded. */
export function shown(value, limit = 80) {
  const text = String(value).replace(/[\p{C}\p{Z}]/gu, (c) =>
    c === " " ? c : "\\u" + c.codePointAt(0).toString(16).padStart(4, "0"));
  return text.length <= limit ? text : text.slice(0, limit) + "...";
}

function subtle() {
  if (!globalThis.isSecureContext || !globalThis.crypto || !crypto.subtle) {
    throw new VerifyError(
      "this page is not in a secure context (https, or http on localhost), so the" +
      " browser offers no Web Crypto here; use recovea verify-receipt");
  }
  return crypto.subtle;
}

function b64urlEncode(bytes) {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Strict unpadded base64url: the alphabet only, and it must re-encode to itself. */
export function b64urlDecode(text, what) {
  const bad = () => new MalformedError(`${what} is not valid base64url`);
  if (!/^[A-Za-z0-9_-]+$/.test(text) || text.length % 4 === 1) throw bad();
  let binary;
  try {
    binary = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  } catch {
    throw bad();
  }
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  if (b64urlEncode(bytes) !== text) throw bad();
  return bytes;
}

function loadJson(bytes, what) {
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
    return JSON.parse(text);
  } catch {
    throw new MalformedError(`${what} is not UTF-8 JSON`);
  }
}

function isInt(value) {
  return typeof value === "number" && Number.isInteger(value);
}

function typeOk(name, value) {
  if (STRING_FIELDS.includes(name)) return typeof value === "string";
  if (COUNTS.includes(name)) return value === null || isInt(value);
  if (name === "seq" || name === "ts") return isInt(value);
  return value === null || ["string", "boolean"].includes(typeof value) || isInt(value);
}

/** The canonical form: sorted keys, no whitespace, UTF-8 (of an object of scalars). */
export function canonicalJson(payload) {
  const parts = Object.keys(payload).sort()
    .map((name) => `${JSON.stringify(name)}:${JSON.stringify(payload[name])}`);
  return new TextEncoder().encode(`{${parts.join(",")}}`);
}

function sameBytes(a, b) {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/** Decode a token and check that its payload is a canonical, complete receipt. */
export function decodeToken(token) {
  const parts = String(token).trim().split(".");
  if (parts.length !== 2 || !parts.every(Boolean)) {
    throw new MalformedError("token is not <payload>.<signature>");
  }
  const canonical = b64urlDecode(parts[0], "token payload");
  const signature = b64urlDecode(parts[1], "token signature");
  if (signature.length !== 64) throw new MalformedError("token signature is not 64 bytes");
  const payload = loadJson(canonical, "token payload");
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
    throw new MalformedError("token payload is not a JSON object");
  }
  const names = Object.keys(payload);
  const missing = FIELDS.filter((name) => !names.includes(name));
  if (missing.length) throw new MalformedError(`receipt is missing ${missing.join(", ")}`);
  const extra = names.filter((name) => !FIELDS.includes(name)).sort();
  if (extra.length) {
    throw new MalformedError(`receipt has unknown fields ${shown(extra.join(", "))}`);
  }
  for (const name of FIELDS) {
    const value = payload[name];
    if (typeof value === "number" && !Number.isInteger(value)) {
      throw new MalformedError(`receipt payload holds a non-integer number (${shown(value)})`);
    }
    if (typeof value === "number" && !Number.isSafeInteger(value)) {
      throw new MalformedError(`receipt field ${name} is too large for this page to check`);
    }
    if (!typeOk(name, value)) throw new MalformedError(`receipt field ${name} has the wrong type`);
    if (typeof value === "string" && !value.isWellFormed()) {
      throw new MalformedError("token payload holds a lone surrogate escape");
    }
  }
  if (!sameBytes(canonicalJson(payload), canonical)) {
    throw new MalformedError("token payload is not canonical JSON");
  }
  return { payload, canonical, signature };
}

export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await subtle().digest("SHA-256", bytes));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** The key id the gateway derives from a raw Ed25519 public key. */
export async function kidOf(raw) {
  return "rk_" + (await sha256Hex(raw)).slice(0, 16);
}

const ISO = /^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,6}))?)?(Z|[+-]\d\d:?\d\d)$/;

/** An ISO 8601 time with a UTC offset, as integer epoch milliseconds. */
export function epochMs(value, name) {
  const match = typeof value === "string" ? ISO.exec(value) : null;
  if (!match) throw new MalformedError(`${name} is not an ISO 8601 time with a UTC offset`);
  const [, y, mo, d, h, mi, s, frac, zone] = match;
  const ms = Number((frac || "").padEnd(3, "0").slice(0, 3));
  let offset = 0;
  if (zone !== "Z") {
    const digits = zone.replace(":", "");
    offset = (Number(digits.slice(1, 3)) * 60 + Number(digits.slice(3, 5))) * 60000;
    if (digits[0] === "-") offset = -offset;
  }
  return Date.UTC(+y, +mo - 1, +d, +h, +mi, +(s || 0), ms) - offset;
}

function moment(ms) {
  const date = new Date(ms);
  return Number.isNaN(date.getTime())
    ? `${ms} ms after the epoch`
    : date.toISOString().replace("Z", "+00:00");
}

async function publishedKey(entry) {
  const publicKey = entry.public_key;
  const raw = typeof publicKey === "string"
    ? b64urlDecode(publicKey, "its public_key")
    : new Uint8Array();
  if (entry.alg !== "Ed25519" || raw.length !== 32) {
    throw new MalformedError("it is not a raw 32-byte Ed25519 public key");
  }
  const createdMs = epochMs(entry.created_at, "its created_at");
  const retired = entry.retired_at;
  const retiredMs = retired === null || retired === undefined
    ? null
    : epochMs(retired, "its retired_at");
  let key;
  try {
    key = await subtle().importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
  } catch {
    throw new MalformedError("its public_key is not an Ed25519 point");
  }
  return { key, raw, createdMs, retiredMs };
}

/** Public keys from a keys document, each with its window; unreadable entries are set
 * aside as unusable, and a key whose kid is not its hash is refused. */
export async function loadKeys(document, graceS = KEY_GRACE_S) {
  const entries = document && typeof document === "object" ? document.keys : undefined;
  if (!Array.isArray(entries)) throw new MalformedError('keys document has no "keys" list');
  const keys = { usable: new Map(), rejected: new Map(), unusable: new Map(), graceMs: graceS * 1000 };
  for (const [index, entry] of entries.entries()) {
    const kid = entry && typeof entry === "object" ? entry.kid : undefined;
    if (typeof kid !== "string") {
      throw new MalformedError(`keys document entry ${index + 1} is not an object with a kid`);
    }
    let key;
    try {
      key = await publishedKey(entry);
    } catch (error) {
      if (!(error instanceof MalformedError)) throw error;
      keys.unusable.set(kid, error.message);
      continue;
    }
    if ((await kidOf(key.raw)) !== kid) {
      keys.rejected.set(kid, "its kid does not match the hash of its public key");
      continue;
    }
    keys.usable.set(kid, key);
  }
  return keys;
}

function checkWindow(receipt, kid, key, graceMs) {
  const ts = receipt.payload.ts;
  const grace = `${Math.floor(graceMs / 1000)} s`;
  if (ts < key.createdMs - graceMs) {
    throw new VerifyError(
      `key ${shown(kid)} was created at ${moment(key.createdMs)}: receipt ts` +
      ` ${moment(ts)} is more than ${grace} before that`);
  }
  if (key.retiredMs !== null && ts > key.retiredMs + graceMs) {
    throw new VerifyError(
      `key ${shown(kid)} was retired at ${moment(key.retiredMs)}: receipt ts` +
      ` ${moment(ts)} is more than ${grace} after that`);
  }
}

/** The Ed25519 signature with the key the receipt names, the version, and the key's
 * window (give or take the grace); returns the kid. */
export async function checkSignature(receipt, keys) {
  const kid = receipt.payload.kid;
  const key = keys.usable.get(kid);
  if (!key) {
    if (keys.unusable.has(kid)) {
      throw new MalformedError(`key ${shown(kid)} is unusable: ${keys.unusable.get(kid)}`);
    }
    const why = keys.rejected.get(kid);
    throw new VerifyError(why ? `key ${shown(kid)} was refused: ${why}` : `no key ${shown(kid)} in the keys`);
  }
  const valid = await subtle().verify(
    { name: "Ed25519" }, key.key, receipt.signature, receipt.canonical);
  if (!valid) throw new VerifyError(`signature does not verify with key ${shown(kid)}`);
  if (receipt.payload.v !== VERSION) {
    throw new VerifyError(`unsupported receipt version '${shown(receipt.payload.v)}'`);
  }
  checkWindow(receipt, kid, key, keys.graceMs);
  return kid;
}

function compact(id) {
  return String(id).replace(/-/g, "").toLowerCase();
}

/** The receipt says what the ledger row says (the fields they share). */
export function checkRow(receipt, row) {
  const payload = receipt.payload;
  if (compact(payload.request_id) !== compact(row.request_id)) {
    throw new VerifyError(
      `request_id is ${shown(payload.request_id)} in the receipt but ${shown(row.request_id)} in the row`);
  }
  for (const name of ROW_FIELDS) {
    if (payload[name] !== row[name]) {
      throw new VerifyError(
        `${name} is ${shown(JSON.stringify(payload[name]))} in the receipt` +
        ` but ${shown(JSON.stringify(row[name]))} in the row`);
    }
  }
  if (epochMs(row.ts, "the row's ts") !== payload.ts) {
    throw new VerifyError(`ts is ${moment(payload.ts)} in the receipt but ${shown(row.ts)} in the row`);
  }
  return "ok (the receipt holds the row's facts)";
}

/** The receipt's link: seq 1 with a genesis prev, or prev the hash of the chain's
 * previous receipt (itself signed, of the same chain, seq one less). */
export async function checkLink(receipt, previous, keys) {
  const { seq, prev, chain } = receipt.payload;
  if (seq === 1) {
    if (prev !== ZERO_HASH) throw new VerifyError("receipt seq 1: prev is not 64 zeros");
    return "ok (seq 1, prev is 64 zeros)";
  }
  if (previous === null) return `not checkable (seq ${seq - 1} is not in the ledger)`;
  try {
    await checkSignature(previous, keys);
  } catch (error) {
    throw new VerifyError(`receipt seq ${previous.payload.seq}: ${error.message}`);
  }
  if (previous.payload.chain !== chain || previous.payload.seq !== seq - 1) {
    throw new VerifyError(`the ledger's receipt before seq ${seq} is not seq ${seq - 1} of its chain`);
  }
  if ((await sha256Hex(previous.canonical)) !== prev) {
    throw new VerifyError(`receipt seq ${seq}: prev does not match the hash of seq ${seq - 1}`);
  }
  return `ok (seq ${seq} follows seq ${seq - 1})`;
}

/**
 * Every check the page can run on one receipt token: `keysDocument` is the gateway's
 * `/.well-known/recovea-receipt-keys`; `row` the ledger row (optional); `previousToken`
 * the chain's previous receipt (`undefined`: not asked for; `null`: not in the ledger).
 * Returns `{ok, lines: [[check, result]], error}`; never throws.
 */
export async function verifyReceipt(token, keysDocument, { row, previousToken } = {}) {
  const lines = [];
  let step = "token";
  try {
    const receipt = decodeToken(token);
    step = "signature";
    const keys = await loadKeys(keysDocument);
    lines.push(["signature", `ok (kid ${await checkSignature(receipt, keys)})`]);
    if (row) {
      step = "ledger row";
      lines.push([step, checkRow(receipt, row)]);
    }
    if (previousToken !== undefined) {
      step = "chain link";
      const previous = previousToken === null ? null : decodeToken(previousToken);
      lines.push([step, await checkLink(receipt, previous, keys)]);
    }
    lines.push([
      "request_sha256, response_sha256",
      "not checkable here (the page holds no bodies; use recovea verify-receipt" +
      " --request --response)",
    ]);
    return { ok: true, lines, error: null };
  } catch (error) {
    const message = error instanceof VerifyError ? error.message : `unexpected: ${error}`;
    lines.push([step, `FAILED: ${message}`]);
    return { ok: false, lines, error: message };
  }
}
