// Hashing, keys, addresses, signatures and address sealing, byte for byte as the chain
// does them (core/hashing.py, core/keys.py, apps/commerce/sealing.py).
import { hsalsa, xsalsa20poly1305 } from "@noble/ciphers/salsa.js";
import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { blake2b } from "@noble/hashes/blake2.js";
import { randomBytes } from "@noble/hashes/utils.js";
import { bech32m } from "@scure/base";
import { concat, hex, pack, u64be, utf8 } from "./codec.js";
import { record, SHIPPING_ADDRESS, SIGNED_TX, TX_BODY } from "./records.js";

// core/hashing.py Domain: one byte in front of every hashed object.
export const Domain = {
  TX: 0x01,
  HEADER: 0x02,
  VOTE: 0x03,
  GENESIS: 0x04,
  ADDRESS: 0x05,
  LIST_LEAF: 0x10,
  LIST_NODE: 0x11,
  STATE_KEY: 0x20,
  STATE_VALUE: 0x21,
  STATE_LEAF: 0x22,
  STATE_NODE: 0x23,
  PRODUCER_SET: 0x40,
};
// core/keys.py SignDomain.
export const SignDomain = { TX: 0x01, VOTE: 0x02 };

export function hashBytes(domain, data) {
  return blake2b(concat(Uint8Array.of(domain), data), { dkLen: 32 });
}

// hashlib.blake2b(person=...) pads the personalisation with zeros to 16 bytes.
export function personal(data, person, { dkLen = 32, key = undefined } = {}) {
  const p = new Uint8Array(16);
  p.set(utf8(person));
  return blake2b(data, { dkLen, key, personalization: p });
}

export const randomSeed = () => randomBytes(32);

export function publicKeyOf(seed) {
  return ed25519.getPublicKey(seed);
}

export function addressOf(publicKey) {
  return hashBytes(Domain.ADDRESS, publicKey).slice(0, 20);
}

export function formatAddress(address) {
  return bech32m.encode("ll", bech32m.toWords(address));
}

export function parseAddress(text) {
  const { prefix, words } = bech32m.decode(text.toLowerCase());
  const raw = bech32m.fromWords(words);
  if (prefix !== "ll" || raw.length !== 20) throw new Error("not an ll1 address");
  return raw;
}

export function signingBytes(domain, chainId, body) {
  const cid = utf8(chainId);
  return concat(Uint8Array.of(domain, cid.length), cid, body);
}

export function sign(seed, domain, chainId, body) {
  return ed25519.sign(signingBytes(domain, chainId, body), seed);
}

// Strict RFC 8032 verification (libsodium refuses what ZIP-215 would accept).
export function verifySignature(publicKey, domain, chainId, body, signature) {
  try {
    return ed25519.verify(signature, signingBytes(domain, chainId, body), publicKey, {
      zip215: false,
    });
  } catch {
    return false;
  }
}

// A bidder's anonymous tag in one auction's feed (apps/commerce/auctions.py bidder_tag):
// BLAKE2b-32 of the address keyed by the auction id (8 bytes, big-endian).
export function bidderTag(auctionId, address) {
  return hex(personal(address, "ll-bid-tag", { dkLen: 4, key: u64be(auctionId) }));
}

// --- transactions (core/types.py) ---

// TxBody(nonce, fee, expiry_height, type, payload) signed into SignedTx(chain_id,
// sender, body, signature); the hash is over the SignedTx encoding.
export function signTx(seed, chainId, { nonce, fee, expiryHeight, type, payload }) {
  const body = pack(record(TX_BODY, { nonce, fee, expiry_height: expiryHeight, type, payload }, "TxBody"));
  const signature = sign(seed, SignDomain.TX, chainId, body);
  const sender = publicKeyOf(seed);
  const encoded = pack(record(SIGNED_TX, { chain_id: chainId, sender, body, signature }, "SignedTx"));
  return { encoded, hash: hashBytes(Domain.TX, encoded) };
}

// --- sealed shipping addresses (apps/commerce/sealing.py) ---

export const MAX_ADDRESS_TEXT = 400;

export function addressCommitment(plaintext) {
  return personal(plaintext, "ll-ship-address");
}

// "expand 32-byte k", the Salsa20 constant, as four little-endian words.
const SIGMA = new Uint32Array([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);

function words(bytes) {
  return new Uint32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
}

// libsodium's crypto_box_beforenm: HSalsa20 of the X25519 shared point.
function boxKey(secret, publicKey) {
  const shared = x25519.getSharedSecret(secret, publicKey);
  if (shared.every((b) => b === 0)) throw new Error("the merchant key is not a valid X25519 key");
  const out = new Uint32Array(8);
  hsalsa(SIGMA, words(shared), new Uint32Array(4), out);
  return new Uint8Array(out.buffer);
}

// crypto_box_seal (what PyNaCl's SealedBox.encrypt does): an ephemeral key pair, the
// nonce BLAKE2b-192(ephemeral public || recipient public), and crypto_box's
// XSalsa20-Poly1305 (tag first), the ephemeral public key in front.
export function sealTo(recipientPublic, plaintext) {
  const secret = randomBytes(32);
  const ephemeral = x25519.getPublicKey(secret);
  const nonce = blake2b(concat(ephemeral, recipientPublic), { dkLen: 24 });
  const boxed = xsalsa20poly1305(boxKey(secret, recipientPublic), nonce).encrypt(plaintext);
  return concat(ephemeral, boxed);
}

// seal_address: ShippingAddress(salt, text) encoded, its commitment, and the box.
export function sealAddress(recipientPublic, text) {
  if (utf8(text).length > MAX_ADDRESS_TEXT) throw new Error("the address is too long");
  const plaintext = pack(record(SHIPPING_ADDRESS, { salt: randomBytes(32), text }, "ShippingAddress"));
  return {
    ciphertext: sealTo(recipientPublic, plaintext),
    commitment: addressCommitment(plaintext),
    plaintext,
  };
}

// The open side, for checking the sealing against itself (the merchant opens with the CLI).
export function openSealed(secret, ciphertext) {
  const ephemeral = ciphertext.slice(0, 32);
  const recipient = x25519.getPublicKey(secret);
  const nonce = blake2b(concat(ephemeral, recipient), { dkLen: 24 });
  return xsalsa20poly1305(boxKey(secret, ephemeral), nonce).decrypt(ciphertext.slice(32));
}

export { randomBytes };
