// The shopper's key (and shipping address): made in the browser, kept in localStorage
// encrypted under a passphrase (scrypt, then XSalsa20-Poly1305, as the CLI's keyring uses a KDF and
// SecretBox); held in memory only while unlocked. Every transaction is signed here.
import { xsalsa20poly1305 } from "@noble/ciphers/salsa.js";
import { scryptAsync } from "@noble/hashes/scrypt.js";
import { api, ApiError, genesis, postJson } from "./api.js";
import { hex, unhex, utf8 } from "./codec.js";
import { addressOf, formatAddress, publicKeyOf, randomBytes, randomSeed, signTx } from "./crypto.js";

const STORE = "liveledger.wallet.v1";
// ~0.5 s on a phone: a stolen copy of the storage costs that per passphrase guess.
const KDF = { N: 2 ** 15, r: 8, p: 1, dkLen: 32 };

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

export async function unlock(passphrase) {
  const record = stored();
  if (!record) throw new Error("there is no key in this browser yet");
  const key = await deriveKey(passphrase, unhex(record.kdf.salt), record.kdf);
  let secret;
  try {
    const plain = xsalsa20poly1305(key, unhex(record.nonce)).decrypt(unhex(record.box));
    secret = JSON.parse(new TextDecoder().decode(plain));
  } catch {
    throw new Error("that passphrase does not open the key");
  }
  const seed = unhex(secret.seed);
  unlocked = { seed, address: formatAddress(addressOf(publicKeyOf(seed))), shipTo: secret.shipTo, key };
  changed();
  return unlocked.address;
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

// Sign `type` with `payload` (its canonical encoding), ask the node whether the next
// block would fail it (nothing is sent if so), send it, and wait for its receipt.
// `progress(stage)` is told "signing", "sent", and the result is the receipt.
export async function send(type, payload, progress = () => {}) {
  if (!unlocked) throw new Error("unlock your key first");
  progress("signing");
  const [{ params }, account, status, g] = await Promise.all([
    api("/v1/params"),
    api(`/v1/accounts/${unlocked.address}`),
    api("/v1/status"),
    genesis(),
  ]);
  const tx = signTx(unlocked.seed, g.genesis.chain_id, {
    nonce: account.next_nonce,
    fee: params.min_fee,
    expiryHeight: status.height + Math.min(100, params.max_expiry_blocks),
    type,
    payload,
  });
  const simulated = await postJson("/v1/txs/simulate", { tx: hex(tx.encoded) });
  if (simulated.receipt.code !== "ok") {
    return { sent: false, receipt: simulated.receipt };
  }
  const { hash } = await postJson("/v1/txs", { tx: hex(tx.encoded) });
  progress("sent", hash);
  for (let i = 0; i < 240; i++) {
    await new Promise((r) => setTimeout(r, 250));
    let doc;
    try {
      doc = await api(`/v1/txs/${hash}`);
    } catch (err) {
      if (err instanceof ApiError && err.code === "not_found") continue;
      throw err;
    }
    if (doc.status === "committed") return { sent: true, hash, height: doc.height, receipt: doc.receipt };
  }
  throw new ApiError(0, "timeout", "the transaction was not in a block after a minute");
}
