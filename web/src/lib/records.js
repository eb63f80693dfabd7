// The chain's records the browser reads and the payloads it signs, field for field as
// their Python classes declare them. tests/e2e/test_web_crypto.py compares every spec
// here with its class (names, order and kinds) and round-trips Python's encodings, so
// a field added on one side fails a test rather than a shopper's order or a proof.
// Kinds (codec.js fields): int, str, bool, bytes (bounded by the chain, any length
// here), bytesN (exactly N bytes), list (a tuple or a nested record); "?" allows nil.
import { fields } from "./codec.js";

// --- core/types.py ---
export const TX_BODY = [
  ["nonce", "int"],
  ["fee", "int"],
  ["expiry_height", "int"],
  ["type", "str"],
  ["payload", "bytes"],
];
export const SIGNED_TX = [
  ["chain_id", "str"],
  ["sender", "bytes32"],
  ["body", "bytes"],
  ["signature", "bytes64"],
];
export const COMMIT_SIG = [
  ["validator", "bytes32"],
  ["signature", "bytes64"],
];
export const COMMIT = [
  ["height", "int"],
  ["round", "int"],
  ["block_hash", "bytes32"],
  ["signatures", "list"],
];
export const HEADER = [
  ["chain_id", "str"],
  ["height", "int"],
  ["round", "int"],
  ["time_ms", "int"],
  ["prev_hash", "bytes32"],
  ["tx_root", "bytes32"],
  ["state_root", "bytes32"],
  ["receipt_root", "bytes32"],
  ["producer", "bytes32"],
  ["producer_set_hash", "bytes32"],
  ["last_commit", "list?"],
];

// --- vm/receipts.py ---
export const EVENT_ATTR = [
  ["key", "str"],
  ["value", "str"],
];
export const EVENT = [
  ["kind", "str"],
  ["attrs", "list"],
];
export const RECEIPT = [
  ["tx_hash", "bytes32"],
  ["code", "str"],
  ["message", "str"],
  ["fee", "int"],
  ["events", "list"],
];

// --- storage/state_tree.py ---
export const PROOF_LEAF = [
  ["key_path", "bytes32"],
  ["value_hash", "bytes32"],
];
export const STATE_PROOF = [
  ["siblings", "list"],
  ["leaf", "list?"],
];

// --- genesis/document.py, vm/params.py, consensus/staking_state.py, vm/accounts.py ---
export const CHAIN_PARAMS = [
  ["min_fee", "int"],
  ["max_block_txs", "int"],
  ["max_block_bytes", "int"],
  ["max_tx_bytes", "int"],
  ["max_expiry_blocks", "int"],
  ["epoch_length", "int"],
  ["max_producers", "int"],
  ["max_votes", "int"],
  ["unbonding_blocks", "int"],
  ["min_self_bond", "int"],
  ["slash_bps", "int"],
  ["max_missed_slots", "int"],
  ["jail_blocks", "int"],
  ["max_evidence_age_blocks", "int"],
  ["proposal_voting_blocks", "int"],
  ["param_change_delay_blocks", "int"],
  ["time_precision_ms", "int"],
  ["time_message_delay_ms", "int"],
  ["max_currencies", "int"],
];
export const GENESIS_VALIDATOR = [
  ["name", "str"],
  ["public_key", "bytes32"],
  ["power", "int"],
  ["address", "str"],
];
export const GENESIS = [
  ["chain_id", "str"],
  ["genesis_time_ms", "int"],
  ["params", "list"],
  ["accounts", "list"],
  ["validators", "list"],
  ["staking", "list?"],
  ["commerce", "list?"],
];
export const PRODUCER_SET = [
  ["epoch", "int"],
  ["elected_height", "int"],
  ["keys", "list"],
  ["weights", "list"],
];
export const ACCOUNT = [
  ["balance", "int"],
  ["nonce", "int"],
];
export const BALANCE = [["amount", "int"]];
// --- vm/currency.py ---
export const CURRENCY = [
  ["symbol", "str"],
  ["decimals", "int"],
  ["issuer", "bytes20"],
  ["revoked", "bool"],
  ["minted", "int"],
  ["burned", "int"],
  ["reserves", "int"],
  ["report_hash", "bytes32"],
  ["attested_height", "int"],
  ["granted_height", "int"],
];
export const CURRENCY_LIST = [["symbols", "list"]];

// --- apps/commerce/model.py ---
export const MERCHANT = [
  ["address", "bytes20"],
  ["name", "str"],
  ["profile", "str"],
  ["enc_key", "bytes32"],
  ["status", "int"],
  ["registered_ms", "int"],
  ["updated_ms", "int"],
  ["rating_sum", "int"],
  ["rating_count", "int"],
  ["last_review", "int"],
  ["open_deals", "int"],
  ["open_auctions", "int"],
];
export const SESSION = [
  ["id", "int"],
  ["merchant", "bytes20"],
  ["host", "bytes20"],
  ["host_bps", "int"],
  ["title", "str"],
  ["status", "int"],
  ["opened_ms", "int"],
  ["closed_ms", "int"],
  ["pinned", "list"],
  ["open_deals", "list"],
  ["tips_total", "int"],
  ["open_auctions", "list"],
];
export const ITEM = [
  ["ref", "bytes32"],
  ["gtin", "str"],
  ["serial", "str"],
  ["maker", "bytes20"],
  ["custodian", "bytes20"],
  ["pending_to", "bytes20?"],
  ["status", "int"],
  ["order_id", "int"],
  ["event_count", "int"],
  ["registered_ms", "int"],
  ["description", "str"],
  ["owner", "bytes20?"],
  ["listing_id", "int"],
  ["return_to", "bytes20?"],
];
export const PROVENANCE_EVENT = [
  ["seq", "int"],
  ["action", "str"],
  ["biz_step", "str"],
  ["disposition", "str"],
  ["read_point", "str"],
  ["biz_location", "str"],
  ["event_time_ms", "int"],
  ["recorded_ms", "int"],
  ["height", "int"],
  ["attestor", "bytes20"],
  ["source", "bytes20?"],
  ["destination", "bytes20?"],
  ["data_hash", "bytes"],
  ["tx_hash", "bytes"],
];

// --- apps/commerce/payloads.py, apps/commerce/sealing.py ---
export const PLACE_ORDER = [
  ["listing_id", "int"],
  ["listing_version", "int"],
  ["quantity", "int"],
  ["unit_price", "int"],
  ["session_id", "int"],
  ["deal_id", "int"],
  ["sealed_to", "bytes32"],
  ["address_commitment", "bytes32"],
  ["sealed_address", "bytes"],
  ["currency", "str"],
];
export const TIP = [
  ["session_id", "int"],
  ["amount", "int"],
  ["message", "str"],
  ["currency", "str"],
];
export const BID = [
  ["auction_id", "int"],
  ["max_amount", "int"],
  ["sealed_to", "bytes32"],
  ["address_commitment", "bytes32"],
  ["sealed_address", "bytes"],
];
export const SHIPPING_ADDRESS = [
  ["salt", "bytes32"],
  ["text", "str"],
];

// Every spec by its Python class's name (what the test compares).
export const RECORDS = {
  TxBody: TX_BODY,
  SignedTx: SIGNED_TX,
  CommitSig: COMMIT_SIG,
  Commit: COMMIT,
  BlockHeader: HEADER,
  EventAttr: EVENT_ATTR,
  Event: EVENT,
  Receipt: RECEIPT,
  ProofLeaf: PROOF_LEAF,
  StateProof: STATE_PROOF,
  ChainParams: CHAIN_PARAMS,
  GenesisValidator: GENESIS_VALIDATOR,
  Genesis: GENESIS,
  ProducerSet: PRODUCER_SET,
  Account: ACCOUNT,
  Balance: BALANCE,
  Currency: CURRENCY,
  CurrencyList: CURRENCY_LIST,
  Merchant: MERCHANT,
  Session: SESSION,
  Item: ITEM,
  ProvenanceEvent: PROVENANCE_EVENT,
  PlaceOrder: PLACE_ORDER,
  Tip: TIP,
  Bid: BID,
  ShippingAddress: SHIPPING_ADDRESS,
};

// The raw array of a record to pack: every field of `spec` named in `values` (none
// missing, none extra), checked as decoding checks it.
export function record(spec, values, where) {
  for (const name of Object.keys(values)) {
    if (!spec.some(([n]) => n === name)) throw new Error(`${where} has no field ${name}`);
  }
  const raw = spec.map(([name]) => {
    if (!(name in values)) throw new Error(`${where}: ${name} is missing`);
    return values[name];
  });
  fields(raw, spec, where);
  return raw;
}
