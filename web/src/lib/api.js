// The node's public HTTP API (GET /v1/openapi.json is the contract).
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(path, init = undefined) {
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
    doc = parseJson(await resp.text());
  } catch {
    throw new ApiError(resp.status, "malformed", "the node's answer is not JSON");
  }
  if (!resp.ok) throw new ApiError(resp.status, doc.code ?? "http_error", doc.message ?? "");
  return doc;
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
