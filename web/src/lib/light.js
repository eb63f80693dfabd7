// The light-client rule of cli/light.py, in the browser: trust the genesis document
// only; a header is final when it names a producer set derived from genesis's and more
// than 2/3 of that set signed it (Rule S, docs/state-sync.md, Trust model). Sets are
// derived one change of producers at a time (GET /v1/epochs/{e}/next-change: the record
// of the next epoch whose set differs, its boundary header checked with the set before),
// not one epoch at a time: a node that hides a change leaves an earlier set, which the
// header of the height asked refuses, since it names the set it was signed by. State
// values are proven against a certified header's state root, a transaction and its
// receipt against its tx root and receipt root.
import {
  compareBytes,
  concat,
  DecodeError,
  equalBytes,
  fields,
  hex,
  pack,
  u64be,
  unhex,
  unpack,
} from "./codec.js";
import { Domain, hashBytes, SignDomain, verifySignature } from "./crypto.js";
import {
  CHAIN_PARAMS,
  COMMIT,
  COMMIT_SIG,
  EVENT,
  EVENT_ATTR,
  GENESIS,
  GENESIS_VALIDATOR,
  HEADER,
  PRODUCER_SET,
  PROOF_LEAF,
  RECEIPT,
  STATE_PROOF,
} from "./records.js";

export class NotVerified extends Error {}

export function decodeHeader(bytes) {
  const header = fields(unpack(bytes), HEADER, "BlockHeader");
  header.hash = hashBytes(Domain.HEADER, bytes);
  return header;
}

export function decodeCommit(bytes) {
  const commit = fields(unpack(bytes), COMMIT, "Commit");
  commit.signatures = commit.signatures.map((s) => fields(s, COMMIT_SIG, "CommitSig"));
  return commit;
}

// What a header names as its producers (consensus.validators.ValidatorSet.hash): the
// hash of the set's sorted keys, packed as one array.
export function setHash(producers) {
  return hashBytes(Domain.PRODUCER_SET, pack(producers));
}

// A producer set: unique keys in byte order (consensus.validators.ValidatorSet).
export function validatorSet(keys) {
  const sorted = [...keys].sort(compareBytes);
  for (let i = 1; i < sorted.length; i++) {
    if (equalBytes(sorted[i - 1], sorted[i])) throw new NotVerified("duplicate producer key");
  }
  return sorted;
}

// Whether two producer sets (as validatorSet makes them, sorted) hold the same keys.
const sameSet = (a, b) => a.length === b.length && a.every((k, i) => equalBytes(k, b[i]));

// consensus.validators.verify_commit: this block, signers sorted and unique, all
// producers, more than 2/3 of them, every precommit signature valid.
export function verifyCommit(commit, chainId, height, blockHash, producers) {
  if (commit.height !== height) throw new NotVerified(`certificate is for height ${commit.height}`);
  if (!equalBytes(commit.block_hash, blockHash)) {
    throw new NotVerified("certificate is for another block");
  }
  const signers = commit.signatures.map((s) => s.validator);
  for (let i = 1; i < signers.length; i++) {
    if (compareBytes(signers[i - 1], signers[i]) >= 0) {
      throw new NotVerified("certificate signers are not unique and sorted");
    }
  }
  for (const key of signers) {
    if (!producers.some((p) => equalBytes(p, key))) {
      throw new NotVerified("certificate signed by a key that is not a producer");
    }
  }
  const quorum = Math.floor((producers.length * 2) / 3) + 1;
  if (signers.length < quorum) {
    throw new NotVerified(`certificate has ${signers.length} precommits, ${quorum} needed`);
  }
  for (const s of commit.signatures) {
    // core.types.vote_signing_body: [PRECOMMIT, height, round, block_hash].
    const body = pack([2, commit.height, commit.round, commit.block_hash]);
    if (!verifySignature(s.validator, SignDomain.VOTE, chainId, body, s.signature)) {
      throw new NotVerified("a precommit signature does not verify");
    }
  }
}

// --- state proofs (storage/state_tree.py verify_proof) ---

const MAX_DEPTH = 256;
const ZERO = new Uint8Array(32);
const bit = (path, d) => (path[d >> 3] >> (7 - (d & 7))) & 1;

function sharesPrefix(a, b, bits) {
  for (let d = 0; d < bits; d++) if (bit(a, d) !== bit(b, d)) return false;
  return true;
}

export function decodeProof(bytes) {
  const proof = fields(unpack(bytes), STATE_PROOF, "StateProof");
  proof.siblings.forEach((s) => fields([s], [["sibling", "bytes32"]], "StateProof"));
  if (proof.leaf !== null) proof.leaf = fields(proof.leaf, PROOF_LEAF, "ProofLeaf");
  return proof;
}

// Where `key` sits in the state tree (storage.state_tree.key_path): its hash, with
// the first 16 bits from the hash of its group. A key of 21 bytes or more, other than
// an account (0x01), is kept for the address after its prefix byte; a 9-byte key
// (prefix and u64 id) shares a group with the 255 ids around it; any other key is
// its own group.
const GROUP_BYTES = 2;
export function keyPath(key) {
  const whole = hashBytes(Domain.STATE_KEY, key);
  let group;
  if (key.length >= 21 && key[0] !== 0x01) group = key.subarray(1, 21);
  else if (key.length === 9) group = key.subarray(0, 8);
  else return whole;
  const prefix = hashBytes(Domain.STATE_KEY, group);
  return concat(prefix.subarray(0, GROUP_BYTES), whole.subarray(GROUP_BYTES));
}

// Check that `key` holds `value` (or is absent, when null) under `root`.
export function verifyProof(root, key, value, proof) {
  const { siblings, leaf } = proof;
  const depth = siblings.length;
  if (depth > MAX_DEPTH) throw new NotVerified("proof is deeper than a path");
  const path = keyPath(key);
  let node;
  if (value === null) {
    if (leaf === null) node = ZERO;
    else if (equalBytes(leaf.key_path, path)) throw new NotVerified("the key is present");
    else if (!sharesPrefix(leaf.key_path, path, depth)) throw new NotVerified("leaf off path");
    else node = hashBytes(Domain.STATE_LEAF, concat(leaf.key_path, leaf.value_hash));
  } else {
    if (leaf === null) throw new NotVerified("proof shows the key absent");
    if (!equalBytes(leaf.key_path, path)) throw new NotVerified("proof is for another key");
    const digest = hashBytes(Domain.STATE_VALUE, value);
    if (!equalBytes(leaf.value_hash, digest)) throw new NotVerified("value does not match");
    node = hashBytes(Domain.STATE_LEAF, concat(path, digest));
  }
  if (depth && equalBytes(siblings[depth - 1], ZERO)) {
    throw new NotVerified("non-canonical proof");
  }
  for (let d = depth - 1; d >= 0; d--) {
    const pair = bit(path, d) ? concat(siblings[d], node) : concat(node, siblings[d]);
    node = hashBytes(Domain.STATE_NODE, pair);
  }
  if (!equalBytes(node, root)) throw new NotVerified("proof does not lead to the state root");
}

// --- transactions and receipts (core/hashing.py verify_merkle_path, vm/inclusion.py) ---

// core.types.MAX_BLOCK_TXS, and the longest path of a tree over that many leaves.
export const MAX_BLOCK_TXS = 100_000;
export const MAX_TX_PATH = 17;

// How many siblings the path of leaf `index` of `count` holds: one per level at which
// its node is not the odd last one (promoted unchanged, with none).
function pathLength(index, count) {
  let length = 0;
  for (; count > 1; index = Math.floor(index / 2), count = Math.ceil(count / 2)) {
    if (index % 2 || index + 1 < count) length++;
  }
  return length;
}

// Check that `leaf` is leaf `index` of `count` under `root` by `path` (siblings from the
// leaves up): exactly the siblings (index, count) call for, each 32 bytes.
export function verifyMerklePath(root, leaf, index, count, path) {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(count) || index < 0 || index >= count) {
    throw new NotVerified(`leaf ${index} of ${count} is no leaf of a list`);
  }
  if (!Array.isArray(path) || path.length !== pathLength(index, count)) {
    throw new NotVerified(`leaf ${index} of ${count} has a path of ${pathLength(index, count)} hashes`);
  }
  if (!path.every((s) => s instanceof Uint8Array && s.length === 32)) {
    throw new NotVerified("a path's hashes are 32 bytes");
  }
  let node = hashBytes(Domain.LIST_LEAF, leaf);
  let at = 0;
  for (; count > 1; index = Math.floor(index / 2), count = Math.ceil(count / 2)) {
    if (index % 2) node = hashBytes(Domain.LIST_NODE, concat(path[at++], node));
    else if (index + 1 < count) node = hashBytes(Domain.LIST_NODE, concat(node, path[at++]));
  }
  if (!equalBytes(node, root)) throw new NotVerified("the path does not lead to the root");
}

// vm.verify_tx_inclusion on a node's answer (GET /v1/txs/{hash}/proof): the transaction
// whose hash is `hash` (the one asked about, never the node's) and its receipt, proven in
// the block of `header` (certified by the caller). Returns the decoded receipt. The header
// does not commit to its block's count: `index` is proven for the `count` stated, and the
// receipt is the transaction's own whatever the node states (docs/node.md).
export function verifyTxInclusion(header, hash, doc) {
  if (doc === null || typeof doc !== "object") throw new NotVerified("no proof in the answer");
  const { index, count } = doc;
  if (doc.height !== header.height) throw new NotVerified(`the proof is of block ${doc.height}, the header of ${header.height}`);
  if (!Number.isSafeInteger(count) || count > MAX_BLOCK_TXS) throw new NotVerified(`a block of ${count} transactions`);
  // Bounded before anything is read or hashed: a path is at most as long as a full block's.
  for (const name of ["tx_path", "receipt_path"]) {
    if (!Array.isArray(doc[name]) || doc[name].length > MAX_TX_PATH) throw new NotVerified(`the node's ${name} is no path of a block`);
  }
  const tx = unhex(doc.tx);
  const receiptBytes = unhex(doc.receipt);
  if (!equalBytes(hashBytes(Domain.TX, tx), hash)) throw new NotVerified("the proof is of another transaction");
  verifyMerklePath(header.tx_root, tx, index, count, doc.tx_path.map(unhex));
  verifyMerklePath(header.receipt_root, receiptBytes, index, count, doc.receipt_path.map(unhex));
  const receipt = fields(unpack(receiptBytes), RECEIPT, "Receipt");
  receipt.events = receipt.events.map((e) => {
    const event = fields(e, EVENT, "Event");
    event.attrs = event.attrs.map((a) => fields(a, EVENT_ATTR, "EventAttr"));
    return event;
  });
  if (!equalBytes(receipt.tx_hash, hash)) throw new NotVerified("the receipt is of another transaction");
  return receipt;
}

// --- the trusted chain: genesis, then producers epoch by epoch ---

const PRODUCER_SET_PREFIX = 0x14; // consensus.prefixes.ConsensusPrefix.PRODUCER_SET
// What nextChange answers for a node without the next-change route: walk epoch by epoch.
const WALK = Symbol("walk");

const GENESIS_PINS = "liveledger.genesis.v1";
// The highest producer set verified, per genesis hash (as cli/light.py keeps it in the
// keyring): a load walks only the epochs after it. Trusted as far as this browser's
// storage is, which holds the pinned genesis and the key too.
const PRODUCERS = "liveledger.producers.v1.";
// The genesis hash the user entered, as the consortium gave it to them out of band.
const GENESIS_TRUSTED = "liveledger.genesis.trusted.v1";

export class LightClient {
  // `api` reads the node's public routes; `answer` is GET /v1/genesis. What is trusted
  // is read from the document's canonical encoding, hashed here: its chain id, its
  // validators (epoch 0's producers), whether staking elects later sets, epoch_length.
  // With a hash the user entered, only a document hashing to it is trusted; without
  // one, the first document this browser saw for the chain id.
  constructor(api, answer) {
    this.api = api;
    const encoded = unhex(answer.encoded ?? "");
    this.genesisHash = hex(hashBytes(Domain.GENESIS, encoded));
    const entered = trustedGenesis();
    // Before decoding: a document that is not the one entered is refused as such.
    if (entered !== null && entered !== this.genesisHash) {
      throw new NotVerified(`this node's genesis (${this.genesisHash.slice(0, 12)}…) does not match the hash you entered (${entered.slice(0, 12)}…)`);
    }
    this.entered = entered !== null;
    const g = fields(unpack(encoded), GENESIS, "Genesis");
    this.chainId = g.chain_id;
    this.params = fields(g.params, CHAIN_PARAMS, "ChainParams");
    // Not governable, so genesis's holds for good.
    this.epochLength = this.params.epoch_length;
    this.staking = g.staking !== null;
    if (!Number.isInteger(this.epochLength) || this.epochLength < 1) {
      throw new NotVerified("genesis has no valid epoch length");
    }
    const keys = g.validators.map((v) => fields(v, GENESIS_VALIDATOR, "GenesisValidator").public_key);
    // Sets by epoch, sparse: genesis's, the one kept from an earlier load, and those
    // walked since.
    this.sets = new Map([[0, validatorSet(keys)]]);
    this.kept = keptProducers(this.genesisHash);
    if (this.kept) this.sets.set(this.kept.epoch, this.kept.set);
    // Epoch -> the highest epoch the node said has its set (no change since): asked once.
    this.unchanged = new Map();
    // Certified headers by height (a final block never changes): a page proving several
    // values at one height checks its certificate once.
    this.headers = new Map();
    pin(this.chainId, this.genesisHash, this.entered);
  }

  epochOf(height) {
    return Math.floor((height - 1) / this.epochLength);
  }

  // The producers of block `height`, derived from genesis through proofs only: the set
  // of the last change of producers at or before its epoch, one record read per change.
  // Proven for `height` with the header it certifies (checkHeader refuses a header
  // naming another set): a node that hid a change is caught there.
  async producersAt(height) {
    // No block is at a height below 1 (genesis is no block), so no epoch has producers there.
    if (!Number.isSafeInteger(height) || height < 1) throw new NotVerified(`no block is at height ${height}`);
    if (!this.staking) return this.sets.get(0);
    const epoch = this.epochOf(height);
    // From the highest set verified at or below it (a height below the kept set:
    // genesis's), found among the sets held, not by counting down from `epoch`: the node
    // names the height, and from 2**53 - 1 that count froze the page for weeks.
    let known = 0;
    for (const e of this.sets.keys()) if (e <= epoch && e > known) known = e;
    let set = this.sets.get(known);
    // The node said no change after `known` up to this epoch before: asked once a load.
    while (known < epoch && !((this.unchanged.get(known) ?? -1) >= epoch)) {
      const change = await this.nextChange(known, set, height);
      if (change === WALK) {
        // A node without the route (an older one): epoch by epoch, as before, kept at
        // each change (and at `epoch`) as it is verified.
        for (let e = known + 1; e <= epoch; e++) {
          const next = await this.epochSet(e, height, set);
          this.sets.set(e, next);
          if (e === epoch || !sameSet(next, set)) this.keep(e);
          set = next;
        }
        known = epoch;
        break;
      }
      if (change === null) {
        this.unchanged.set(known, epoch);
        break;
      }
      // Verified with the set before it: kept even past `epoch`, as the highest, now: a
      // walk a busy or slow node interrupts resumes from here on the next load.
      this.sets.set(change.epoch, change.set);
      this.keep(change.epoch);
      if (change.epoch > epoch) {
        this.unchanged.set(known, change.epoch - 1);
        break;
      }
      known = change.epoch;
      set = change.set;
    }
    return set;
  }

  // Keep epoch `e`'s set (verified, in `sets`) for the next load if it is above the
  // kept one: only ever forward.
  keep(e) {
    if (e <= (this.kept?.epoch ?? 0)) return;
    this.kept = { epoch: e, set: this.sets.get(e) };
    try {
      localStorage.setItem(PRODUCERS + this.genesisHash, JSON.stringify({ epoch: e, keys: this.kept.set.map(hex) }));
    } catch {
      // Storage full or refused: the next load walks again, nothing else changes.
    }
  }

  // The next epoch after `e` whose producers differ from `producers` (epoch e's), from
  // the node's record of it (GET /v1/epochs/{e}/next-change), checked with `producers`:
  // { epoch, set }; null when the node says none did up to its head; WALK from a node
  // without the route.
  async nextChange(e, producers, height) {
    let doc;
    try {
      doc = await this.api(`/v1/epochs/${e}/next-change`);
    } catch (err) {
      if (err?.status === 404 && err?.code === "no_set_change") return null;
      if (err?.status === 404) return WALK;
      throw err;
    }
    // Strictly later: a walk always moves on.
    if (!Number.isSafeInteger(doc?.epoch) || doc.epoch <= e) {
      throw new NotVerified(`the node's next change of producers after epoch ${e} is no later epoch`);
    }
    return { epoch: doc.epoch, set: await this.recordSet(doc.epoch, doc, producers) };
  }

  // Epoch `e`'s producers from the node's record of it (GET /v1/epochs/{e}, one read,
  // which every node keeps however much it prunes). `height` is the one the walk is
  // for, named if it cannot go on.
  async epochSet(e, height, producers) {
    const boundary = e * this.epochLength;
    let doc;
    try {
      doc = await this.api(`/v1/epochs/${e}`);
    } catch (err) {
      // A 404 read alone ("not found") would say the thing asked for does not exist.
      if (err?.status !== 404) throw err;
      throw new NotVerified(`cannot prove the producers of height ${height}: the node has no record of epoch ${e} (block ${boundary}, which elected them); ask another node`);
    }
    return this.recordSet(e, doc, producers);
  }

  // The set a record of epoch `e` proves: the header of its boundary (the last block of
  // epoch e - 1) names `producers` and more than 2/3 of them signed it, and the set is
  // proven in that header's state.
  async recordSet(e, doc, producers) {
    if (doc === null || typeof doc !== "object") {
      throw new NotVerified(`the node's record of epoch ${e} is malformed`);
    }
    const header = await this.checkHeader(e * this.epochLength, doc.header, doc.commit, producers);
    const key = concat(Uint8Array.of(PRODUCER_SET_PREFIX), u64be(e));
    const value = unhex(doc.producers);
    verifyProof(header.state_root, key, value, decodeProof(unhex(doc.proof)));
    const set = fields(unpack(value), PRODUCER_SET, "ProducerSet");
    set.keys.forEach((k) => fields([k], [["key", "bytes32"]], "ProducerSet"));
    return validatorSet(set.keys);
  }

  async certifiedHeader(height, producers) {
    if (this.headers.has(height)) return this.headers.get(height);
    const doc = await this.api(`/v1/blocks/${height}?txs=false`);
    // Any JSON may come back (null, no header): "not verified", never a TypeError.
    if (!doc?.commit) throw new NotVerified(`no certificate for height ${height}`);
    const header = await this.checkHeader(height, doc.header?.encoded, doc.commit.encoded, producers);
    if (this.headers.size >= 64) this.headers.clear();
    this.headers.set(height, header);
    return header;
  }

  // Decode an encoded header and certificate; the header, once the certificate holds.
  async checkHeader(height, headerHex, commitHex, producers = null) {
    if (!headerHex || !commitHex) throw new NotVerified(`no certificate for height ${height}`);
    const header = decodeHeader(unhex(headerHex));
    if (header.height !== height) throw new NotVerified("header is for another height");
    if (header.chain_id !== this.chainId) throw new NotVerified("header is for another chain");
    const commit = decodeCommit(unhex(commitHex));
    const set = producers ?? (await this.producersAt(height));
    // It names the set it is checked against: a set derived for an earlier epoch
    // certifies a later header only then (Rule S); a hidden change is refused here.
    if (!equalBytes(header.producer_set_hash, setHash(set))) {
      throw new NotVerified(`the header of height ${height} names another producer set than the one proven`);
    }
    verifyCommit(commit, this.chainId, height, header.hash, set);
    return header;
  }

  // A state value proven at `doc.height` against that height's certified header: `key`
  // is the one the caller computed, never the node's; `doc` carries value and proof.
  async provenValue(key, doc) {
    if (doc === null || typeof doc !== "object") throw new NotVerified("no proof in the answer");
    const header = await this.certifiedHeader(doc.height, await this.producersAt(doc.height));
    const value = doc.value === null ? null : unhex(doc.value);
    verifyProof(header.state_root, key, value, decodeProof(unhex(doc.proof)));
    return { value, header };
  }

  // Any state key, read with its proof (GET /v1/state) at `height` (default the head).
  async provenState(key, height = null) {
    const at = height === null ? "" : `?height=${height}`;
    const doc = await this.api(`/v1/state/${hex(key)}${at}`);
    // An answer at another height proves another state: a record at the height of one
    // read before (the session's merchant's, a balance's currency) would be any block's
    // the node picks, an older key too (as cli/light.py proven_value refuses).
    if (height !== null && doc?.height !== height) {
      throw new NotVerified(`asked for height ${height}, the node answered at ${String(doc?.height).slice(0, 20)}`);
    }
    return this.provenValue(key, doc);
  }

  // Transaction `hash` (hex, the one asked about) and its receipt, proven in its block
  // (GET /v1/txs/{hash}/proof): the header's certificate under the producers derived
  // from genesis, the paths against its tx root and receipt root.
  async provenTx(hash) {
    const doc = await this.api(`/v1/txs/${hash}/proof`);
    if (doc === null || typeof doc !== "object") throw new NotVerified("no proof in the answer");
    const header = await this.checkHeader(doc.height, doc.header, doc.commit);
    const receipt = verifyTxInclusion(header, unhex(hash), doc);
    return { header, receipt, index: doc.index };
  }

  // `provenState` at the head, refused when that block is more than MAX_STATE_AGE_MS
  // behind this machine's clock: the node picks the head it answers at, and at an old
  // one a merchant's key before a rotation (given up, perhaps leaked) would be proven
  // and sealed to (as cli/trust.py require_recent refuses it).
  async provenRecentState(key, now = Date.now()) {
    const read = await this.provenState(key);
    const age = now - Number(read.header.time_ms);
    if (!(age <= MAX_STATE_AGE_MS)) {
      throw new NotVerified(`the node answered at height ${read.header.height}, a block of ${Math.round(age / 1000)} s ago`);
    }
    return read;
  }
}

// How old a block the wallet seals to a key proven at may be (cli.trust.MAX_STATE_AGE_S).
export const MAX_STATE_AGE_MS = 120_000;

// The set kept for this genesis, or null: one that does not parse is walked again.
function keptProducers(genesisHash) {
  try {
    const { epoch, keys } = JSON.parse(localStorage.getItem(PRODUCERS + genesisHash) ?? "null") ?? {};
    if (!Number.isSafeInteger(epoch) || epoch < 1 || !Array.isArray(keys) || keys.length === 0) return null;
    if (!keys.every((k) => typeof k === "string" && /^[0-9a-f]{64}$/.test(k))) return null;
    return { epoch, set: validatorSet(keys.map(unhex)) };
  } catch {
    return null;
  }
}

export function trustedGenesis() {
  const text = localStorage.getItem(GENESIS_TRUSTED);
  return text && /^[0-9a-f]{64}$/.test(text) ? text : null;
}

// A genesis hash as people pass it on (any case, spaces or a 0x in front), or an error.
export function parseGenesisHash(text) {
  const clean = String(text).replace(/\s+/g, "").replace(/^0x/i, "").toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(clean)) throw new Error("a genesis hash is 64 hexadecimal digits");
  return clean;
}

export function trustGenesis(text) {
  const hash = parseGenesisHash(text);
  localStorage.setItem(GENESIS_TRUSTED, hash);
  return hash;
}

export function forgetTrustedGenesis() {
  localStorage.removeItem(GENESIS_TRUSTED);
}

// The first genesis this browser saw for a chain id is the one it trusts from then on:
// a node that later serves another document under that chain id is not believed. A
// hash the user entered overrides the pin (it is how a pin is set right).
function pin(chainId, hash, entered) {
  let pins = {};
  try {
    pins = JSON.parse(localStorage.getItem(GENESIS_PINS) ?? "{}") ?? {};
  } catch {
    pins = {};
  }
  if (pins[chainId] && pins[chainId] !== hash && !entered) {
    throw new NotVerified(`this node's genesis (${hash.slice(0, 12)}…) is not the one this browser trusts for ${chainId} (${pins[chainId].slice(0, 12)}…)`);
  }
  if (pins[chainId] !== hash) {
    pins[chainId] = hash;
    localStorage.setItem(GENESIS_PINS, JSON.stringify(pins));
  }
}

// Anything malformed from the node is "not verified", never a crash.
export function isVerificationFailure(err) {
  return err instanceof NotVerified || err instanceof DecodeError;
}
