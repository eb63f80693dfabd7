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

// `limit`: the longest answer read (bytes); past it, the answer is dropped unread and
// an ApiError `too_large` names the bound.
export async function api(path, init = undefined, limit = MAX_ANSWER_BYTES) {
  let resp;
  try {
    // Never from the browser's cache: the API sends no cache headers, and Chromium then
    // keeps a 410 (`pruned`) for good, so a page would never ask the node again.
    resp = await fetch(path, { cache: "no-store", ...init });
  } catch {
    throw new ApiError(0, "unreachable", "the node cannot be reached");
  }
  let doc;
  try {
    doc = parseJson(await boundedText(resp, limit));
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw new ApiError(resp.status, "malformed", "the node's answer is not JSON");
  }
  if (!resp.ok) throw new ApiError(resp.status, doc.code ?? "http_error", doc.message ?? "");
  return doc;
}

// The answer's body as text, read up to `limit` bytes (as decoded: a compressed body is
// counted as it unpacks); past it, reading stops and the rest is never fetched.
async function boundedText(resp, limit) {
  const tooLarge = () =>
    new ApiError(resp.status, "too_large", `the node's answer is larger than ${limit / 2 ** 20} MiB`);
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
