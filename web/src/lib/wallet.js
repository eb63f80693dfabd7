// The shopper's key (and shipping address): made in the browser, kept in localStorage
// encrypted under a passphrase (scrypt, then XSalsa20-Poly1305, as the CLI's keyring uses a KDF and
// SecretBox); held in memory only while unlocked. Every transaction is signed here.
import { xsalsa20poly1305 } from "@noble/ciphers/salsa.js";
import { scryptAsync } from "@noble/hashes/scrypt.js";
import { api, ApiError, postJson } from "./api.js";
import { concat, fields, hex, u64be, unhex, unpack, utf8 } from "./codec.js";
import { addressOf, formatAddress, publicKeyOf, randomBytes, randomSeed, signTx } from "./crypto.js";
import { isVerificationFailure, NotVerified } from "./light.js";
import { CHAIN_PARAMS, MERCHANT, SESSION } from "./records.js";
import { lightClient } from "./trust.js";

const STORE = "liveledger.wallet.v1";
// OWASP's scrypt floor at 32 MiB (N=2^15, r=8, p=3: the cost of its N=2^17, r=8, p=1 in
// a quarter of the memory a phone's tab may lack): ~1.5 s on a phone, what a stolen copy
// of the storage costs per passphrase guess. A record sealed cheaper (this page made
// p=1 before; an imported file may be weaker) is sealed again under this once opened.
const KDF = { N: 2 ** 15, r: 8, p: 3, dkLen: 32 };
const kdfCost = (kdf) => kdf.N * kdf.r * kdf.p;
// consensus.staking_state.ACTIVE_PARAMS_KEY: the parameters in force, under staking.
const ACTIVE_PARAMS_KEY = Uint8Array.of(0x18, 0x01);
// apps.commerce.keys.CommercePrefix: SESSION ‖ u64 id, MERCHANT ‖ address.
const SESSION_PREFIX = 0x27;
const MERCHANT_PREFIX = 0x24;

let unlocked = null; // { seed, address, shipTo, key } while unlocked
const listeners = new Set();

export const onWalletChange = (fn) => listeners.add(fn);
const changed = () => listeners.forEach((fn) => fn());

export function stored() {
  try {
    return JSON.parse(localStorage.getItem(STORE) ?? "null");
  } catch {
    return null;
  }
}

export const current = () => unlocked;

async function deriveKey(passphrase, salt, kdf) {
  return scryptAsync(utf8(passphrase), salt, { N: kdf.N, r: kdf.r, p: kdf.p, dkLen: 32 });
}

// The secret part (the key's seed and the shipping address) sealed under `key`.
function save(record, key, secret) {
  const nonce = randomBytes(24);
  const box = xsalsa20poly1305(key, nonce).encrypt(utf8(JSON.stringify(secret)));
  localStorage.setItem(STORE, JSON.stringify({ ...record, nonce: hex(nonce), box: hex(box) }));
}

export async function createWallet(passphrase) {
  if (passphrase.length < 8) throw new Error("use a passphrase of at least 8 characters");
  const seed = randomSeed();
  const salt = randomBytes(16);
  const key = await deriveKey(passphrase, salt, KDF);
  const address = formatAddress(addressOf(publicKeyOf(seed)));
  save({ address, kdf: { name: "scrypt", ...KDF, salt: hex(salt) } }, key, { seed: hex(seed), shipTo: "" });
  unlocked = { seed, address, shipTo: "", key };
  changed();
  return address;
}

// The seed and shipping address in `record`, opened with `passphrase`.
async function open(record, passphrase) {
  const key = await deriveKey(passphrase, unhex(record.kdf.salt), record.kdf);
  let secret;
  try {
    const plain = xsalsa20poly1305(key, unhex(record.nonce)).decrypt(unhex(record.box));
    secret = JSON.parse(new TextDecoder().decode(plain));
  } catch {
    throw new Error("that passphrase does not open the key");
  }
  const seed = unhex(secret.seed);
  if (seed.length !== 32) throw new Error("the key is damaged");
  const shipTo = typeof secret.shipTo === "string" ? secret.shipTo : "";
  return { seed, address: formatAddress(addressOf(publicKeyOf(seed))), shipTo, key };
}

// `opened` (from `record`) kept under `KDF` with a fresh salt if `record` was sealed cheaper.
async function strengthened(record, opened, passphrase) {
  if (kdfCost(record.kdf) >= kdfCost(KDF)) return opened;
  const salt = randomBytes(16);
  const key = await deriveKey(passphrase, salt, KDF);
  save({ address: opened.address, kdf: { name: "scrypt", ...KDF, salt: hex(salt) } }, key, {
    seed: hex(opened.seed),
    shipTo: opened.shipTo,
  });
  return { ...opened, key };
}

export async function unlock(passphrase) {
  const record = stored();
  if (!record) throw new Error("there is no key in this browser yet");
  unlocked = await strengthened(record, await open(record, passphrase), passphrase);
  changed();
  return unlocked.address;
}

// --- moving a key to another browser: the stored record as it is (still sealed under
// its passphrase), as a text to save, and read back in the other browser ---

const EXPORT_KIND = "liveledger-key";

export function exportKey() {
  const record = stored();
  if (!record) throw new Error("there is no key in this browser");
  const { address, kdf, nonce, box } = record;
  return JSON.stringify({ kind: EXPORT_KIND, version: 1, address, kdf, nonce, box }, null, 2);
}

// Within these a passphrase check takes at most a few seconds: a crafted file cannot
// hang the page (and what this page makes, 2**15/8/3, is inside). A weaker file is
// sealed again under KDF once its passphrase opens it (importKey).
const KDF_LIMITS = { N: [2 ** 10, 2 ** 20], r: [1, 16], p: [1, 4] };

function importedRecord(text) {
  let doc;
  try {
    doc = JSON.parse(text);
  } catch {
    doc = null;
  }
  if (doc?.kind !== EXPORT_KIND || doc.version !== 1) throw new Error("this is not an exported LiveLedger key");
  const { address, kdf, nonce, box } = doc;
  const sized = (v, n) => typeof v === "string" && /^[0-9a-f]*$/.test(v) && (n === null ? v.length >= 32 && v.length <= 4096 : v.length === 2 * n);
  const bounded = (v, [lo, hi]) => Number.isSafeInteger(v) && v >= lo && v <= hi;
  const ok =
    typeof address === "string" &&
    kdf?.name === "scrypt" &&
    bounded(kdf.N, KDF_LIMITS.N) &&
    (kdf.N & (kdf.N - 1)) === 0 &&
    bounded(kdf.r, KDF_LIMITS.r) &&
    bounded(kdf.p, KDF_LIMITS.p) &&
    sized(kdf.salt, 16) &&
    sized(nonce, 24) &&
    sized(box, null);
  if (!ok) throw new Error("this key file is damaged or not one this page makes");
  return { address, kdf: { name: "scrypt", N: kdf.N, r: kdf.r, p: kdf.p, dkLen: 32, salt: kdf.salt }, nonce, box };
}

// Keep an exported key here once its passphrase opens it and it is the key of the
// address it names; unlocked.
export async function importKey(text, passphrase) {
  const record = importedRecord(text);
  const held = stored();
  if (held && held.address !== record.address) throw new Error("this browser holds another key: forget it first");
  const opened = await open(record, passphrase);
  if (opened.address !== record.address) throw new Error("the file's key is not the key of the address it names");
  localStorage.setItem(STORE, JSON.stringify(record));
  unlocked = await strengthened(record, opened, passphrase);
  changed();
  return opened.address;
}

export function setShipTo(text) {
  if (!unlocked) throw new Error("unlock your key first");
  const { address, kdf } = stored();
  save({ address, kdf }, unlocked.key, { seed: hex(unlocked.seed), shipTo: text });
  unlocked = { ...unlocked, shipTo: text };
  changed();
}

export function lock() {
  unlocked = null;
  changed();
}

export function forget() {
  localStorage.removeItem(STORE);
  lock();
}

// What a transaction commits to, from proofs rather than the node's JSON (a hostile
// node cannot make the shopper sign a huge fee or a transaction for another chain): the
// chain id of the genesis this browser trusts; the fee, the minimum of the parameters
// proven in force (genesis's, or with staking the active ones in state, which
// governance changes); the expiry bound from the same parameters.
async function provenTerms() {
  const light = await lightClient();
  if (!light.staking) {
    const { height } = await api("/v1/status");
    return { chainId: light.chainId, params: light.params, height };
  }
  const { value, header } = await light.provenState(ACTIVE_PARAMS_KEY);
  if (value === null) throw new NotVerified("the chain's parameters are not in its state");
  return { chainId: light.chainId, params: fields(unpack(value), CHAIN_PARAMS, "ChainParams"), height: header.height };
}

// The key the shopper's address is sealed to in session `sessionId` (the page's own, from
// its address): the X25519 key of the session's merchant, both records proven under a
// certified header. Never the node's JSON: the node sees the sealed box when it is asked
// to simulate or send the order, before any block checks the key (`stale_key`), so a
// node naming its own key as the merchant's would read the address. Every deal and
// auction of a session sells its merchant's listings, which the chain seals to that key.
export async function sealingKey(sessionId) {
  try {
    const light = await lightClient();
    const session = await light.provenRecentState(concat(Uint8Array.of(SESSION_PREFIX), u64be(sessionId)));
    if (session.value === null) throw new NotVerified(`session ${sessionId} is not on chain`);
    const { merchant } = fields(unpack(session.value), SESSION, "Session");
    const record = await light.provenState(concat(Uint8Array.of(MERCHANT_PREFIX), merchant), session.header.height);
    if (record.value === null) throw new NotVerified("the session's merchant is not on chain");
    return fields(unpack(record.value), MERCHANT, "Merchant").enc_key;
  } catch (err) {
    if (!isVerificationFailure(err)) throw err;
    throw new ApiError(0, "not_verified", `Nothing was signed: the merchant's key could not be verified (${err.message}).`);
  }
}

// The receipt `provenTx` decoded, in the shape of the node's JSON (attributes as an
// object), so pages read a proven receipt as they read the node's.
function asJson(receipt) {
  return { ...receipt, events: receipt.events.map((e) => ({ kind: e.kind, attrs: Object.fromEntries(e.attrs.map((a) => [a.key, a.value])) })) };
}

// Transaction `hash` (the hash computed here) once the node says it is committed: the
// block and receipt its inclusion proof shows against a header certified from the
// trusted genesis (as the explorer's transaction page checks it), `verified: true`;
// a node that cannot prove what it says (a transaction it dropped, a forged receipt)
// leaves its word, `verified: false` with the reason, never shown as final.
// A node that is busy (its few block reads and proofs taken, as in a flash deal), or one
// whose proof is still pending (a balancer's node behind), says nothing against the
// transaction: asked again, a second apart, for up to PROOF_WAIT_MS.
async function provenOutcome(hash, doc) {
  const deadline = performance.now() + PROOF_WAIT_MS;
  for (;;) {
    try {
      const proven = await (await lightClient()).provenTx(hash);
      return { sent: true, hash, height: proven.header.height, receipt: asJson(proven.receipt), verified: true };
    } catch (err) {
      if (!isVerificationFailure(err) && !(err instanceof ApiError)) throw err;
      if (tryAgain(err, "pending") && performance.now() < deadline) {
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      return { sent: true, hash, height: doc.height, receipt: doc.receipt, verified: false, reason: err.message };
    }
  }
}

// How long `send` waits for the node to say the transaction is committed, then for its
// proof: on the clock (performance.now, which is never set back), as the CLI waits
// (NodeClient.wait_committed, send.PROOF_WAIT_S). Counted in answers instead (240 polls,
// 30 tries), a node answering each "pending" or "busy" just under the answer deadline
// (api.js, 30 s) held the page some two hours. Past either, at most one answer more.
export const COMMIT_WAIT_MS = 60_000;
export const PROOF_WAIT_MS = 30_000;

// A node's refusal that says "ask again" (503 busy or unavailable, with Retry-After),
// or one of the codes `also` names.
function tryAgain(err, ...also) {
  return err instanceof ApiError && (err.status === 503 || also.includes(err.code));
}

// Sign `type` with `payload` (its canonical encoding), ask the node whether the next
// block would fail it (nothing is sent if so), send it, wait for its receipt and prove
// it (`provenOutcome`). `progress(stage)` is told "signing", "sent", and the result is
// the receipt, with `verified` once sent.
export async function send(type, payload, progress = () => {}) {
  if (!unlocked) throw new Error("unlock your key first");
  progress("signing");
  let terms;
  try {
    terms = await provenTerms();
  } catch (err) {
    if (!isVerificationFailure(err)) throw err;
    throw new ApiError(0, "not_verified", `Nothing was signed: the chain could not be verified (${err.message}).`);
  }
  const { chainId, params, height } = terms;
  const account = await api(`/v1/accounts/${unlocked.address}`);
  const tx = signTx(unlocked.seed, chainId, {
    nonce: account.next_nonce,
    fee: params.min_fee,
    expiryHeight: height + Math.min(100, Number(params.max_expiry_blocks)),
    type,
    payload,
  });
  const simulated = await postJson("/v1/txs/simulate", { tx: hex(tx.encoded) });
  if (simulated.receipt.code !== "ok") {
    return { sent: false, receipt: simulated.receipt };
  }
  await postJson("/v1/txs", { tx: hex(tx.encoded) });
  // Followed by its own hash, not the one the node states (which could be another
  // transaction's, committed and provable).
  const hash = hex(tx.hash);
  progress("sent", hash);
  const deadline = performance.now() + COMMIT_WAIT_MS;
  while (performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    let doc;
    try {
      doc = await api(`/v1/txs/${hash}`);
    } catch (err) {
      // Not yet known (or busy: no word about it; thrown, a sent tip read as not sent).
      if (tryAgain(err, "not_found", "maybe_pruned")) continue;
      throw err;
    }
    if (doc.status === "committed") return provenOutcome(hash, doc);
  }
  throw new ApiError(0, "timeout", "the transaction was not in a block after a minute");
}
