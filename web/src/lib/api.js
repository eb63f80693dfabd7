// The node's public HTTP API (GET /v1/openapi.json is the contract).
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// The longest answer `api` reads, in bytes. Every answer the pages ask for is far
// smaller (a page of a history, a proof, the OpenAPI document) but a whole block's
// transaction list; a node that sends more (hostile or broken: an endless chunked body,
// a compression bomb) would have the page hold all of it, then parse it.
export const MAX_ANSWER_BYTES = 4 * 1024 * 1024;
// A whole block's transaction list: ~240 bytes a transaction, 40,000 transactions
// (the default `max_block_txs`) are ~10 MB.
export const MAX_BLOCK_ANSWER_BYTES = 32 * 1024 * 1024;

// How long `api` waits for a whole answer of up to MAX_ANSWER_BYTES (its headers and its
// body), in seconds; an answer allowed to be n times larger (a whole block's) gets n
// times as long. Most answers are a few kilobytes; even 4 MiB comes within it over a
// link of about 1 Mbit/s. A node that never answers, or trickles its answer a byte at
// a time (each byte in time for any idle timeout), would otherwise hold the page's
// request, and the page, for good.
export const ANSWER_DEADLINE_S = 30;
// This browser's own deadline, if set: whole seconds, kept in localStorage as the
// page's other settings are (a slow link may want longer, tests want shorter).
const DEADLINE_SETTING = "liveledger.deadline.v1";

// The deadline this browser uses, in seconds: its setting if it is a whole number of
// seconds from 1 to an hour, else ANSWER_DEADLINE_S.
function answerDeadline() {
  let seconds = 0;
  try {
    seconds = Number(localStorage.getItem(DEADLINE_SETTING));
  } catch {
    // Storage is off in this browser: the default.
  }
  return Number.isSafeInteger(seconds) && seconds >= 1 && seconds <= 3600 ? seconds : ANSWER_DEADLINE_S;
}

// `limit`: the longest answer read (bytes); past it, the answer is dropped unread and
// an ApiError `answer_too_large` names the bound. An answer not whole by its deadline is
// dropped (the connection let go) and an ApiError `too_slow` names the deadline.
export async function api(path, init = undefined, limit = MAX_ANSWER_BYTES) {
  const seconds = answerDeadline() * Math.max(1, Math.ceil(limit / MAX_ANSWER_BYTES));
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), seconds * 1000);
  const tooSlow = () => new ApiError(0, "too_slow", `the node did not answer within ${seconds} s`);
  try {
    let resp;
    try {
      // Never from the browser's cache: the API sends no cache headers, and Chromium then
      // keeps a 410 (`pruned`) for good, so a page would never ask the node again.
      resp = await fetch(path, { cache: "no-store", ...init, signal: deadline.signal });
    } catch {
      if (deadline.signal.aborted) throw tooSlow();
      throw new ApiError(0, "unreachable", "the node cannot be reached");
    }
    let doc;
    try {
      // The abort also ends the body's stream: a read waiting on it rejects.
      doc = parseJson(await boundedText(resp, limit));
    } catch (err) {
      if (err instanceof ApiError) throw err;
      if (deadline.signal.aborted) throw tooSlow();
      throw new ApiError(resp.status, "answer_malformed", "the node's answer is not JSON");
    }
    if (!resp.ok) throw new ApiError(resp.status, doc.code ?? "http_error", doc.message ?? "");
    return doc;
  } finally {
    clearTimeout(timer);
  }
}

// The answer's body as text, read up to `limit` bytes (as decoded: a compressed body is
// counted as it unpacks); past it, reading stops and the rest is never fetched.
async function boundedText(resp, limit) {
  const tooLarge = () =>
    new ApiError(resp.status, "answer_too_large", `the node's answer is larger than ${limit / 2 ** 20} MiB`);
  // A declared length over the bound is refused before anything is read.
  if (Number(resp.headers.get("Content-Length")) > limit) {
    resp.body?.cancel().catch(() => {});
    throw tooLarge();
  }
  if (resp.body === null) return "";
  const reader = resp.body.getReader();
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      reader.cancel().catch(() => {});
      throw tooLarge();
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return new TextDecoder().decode(bytes);
}

// JSON whose integers beyond 2**53 stay exact: BigInt (from the number's own text), as
// the codec decodes them; every smaller integer is a Number, so a figure compares equal
// whether it came from JSON or from a proven value.
export function parseJson(text) {
  return JSON.parse(text, (_key, value, context) => {
    if (typeof value !== "number" || Number.isSafeInteger(value)) return value;
    const source = context?.source;
    return typeof source === "string" && /^\d+$/.test(source) ? BigInt(source) : value;
  });
}

export const postJson = (path, body) =>
  api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });

let genesisDoc = null;
// The genesis document the light client trusts (as `liveledger query account --prove`
// does without --genesis: the node's, with its hash shown).
export async function genesis() {
  genesisDoc ??= api("/v1/genesis");
  genesisDoc.catch(() => (genesisDoc = null));
  return genesisDoc;
}

let receiptCodes = null;
// The description of every receipt code, from the OpenAPI document (a fallback for
// codes the page has no sentence of its own for).
export async function codeDescriptions() {
  receiptCodes ??= api("/v1/openapi.json").then((doc) => {
    const text = doc.components?.schemas?.ReceiptCode?.description ?? "";
    const out = {};
    for (const m of text.matchAll(/\|\s*`([a-z0-9_]+)`\s*\|\s*([^|\n]+)\|/g)) {
      out[m[1]] = m[2].trim();
    }
    return out;
  });
  return receiptCodes.catch(() => ({}));
}
