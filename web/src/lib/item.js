// An item's provenance, proven in the browser (apps/commerce/http.py verify_item_proof):
// the item's record and every event, each with a state proof against the state root of
// a header whose certificate verifies under producers derived from genesis.
import { ApiError } from "./api.js";
import { concat, DecodeError, equalBytes, fields, hex, u32be, unhex, unpack, utf8 } from "./codec.js";
import { formatAddress, personal } from "./crypto.js";
import { decodeProof, isVerificationFailure, NotVerified, verifyProof } from "./light.js";
import { ITEM, MERCHANT, PROVENANCE_EVENT } from "./records.js";

const ITEM_PREFIX = 0x32; // apps.commerce.keys.CommercePrefix.ITEM
const ITEM_EVENT_PREFIX = 0x33; // CommercePrefix.ITEM_EVENT
const MERCHANT_PREFIX = 0x24; // CommercePrefix.MERCHANT

export const itemRef = (gtin, serial) => personal(utf8(gtin + serial), "ll-gs1-item-ref");
const itemKey = (ref) => concat(Uint8Array.of(ITEM_PREFIX), ref);
const eventKey = (ref, seq) => concat(Uint8Array.of(ITEM_EVENT_PREFIX), ref, u32be(seq));

// `answer` is GET /v1/items/01/{gtin}/21/{serial}; `light` a LightClient. Returns the
// proven item and events (never the node's unproven view), or throws NotVerified.
export async function verifyItem(light, gtin, serial, answer) {
  const proof = answer.proof;
  if (!proof || !Array.isArray(proof.entries) || !proof.entries.length) {
    throw new NotVerified("the answer holds no proof");
  }
  const header = await light.checkHeader(proof.height, proof.header, proof.commit);
  const ref = itemRef(gtin, serial);
  const values = proof.entries.map((entry, seq) => {
    const key = unhex(entry.key);
    const expected = seq === 0 ? itemKey(ref) : eventKey(ref, seq - 1);
    // Only this item's keys, in order: no substitution, no gaps.
    if (!equalBytes(key, expected)) throw new NotVerified(`entry ${seq} is another key`);
    if (entry.value === null) throw new NotVerified(`entry ${seq} proves an absent key`);
    const value = unhex(entry.value);
    verifyProof(header.state_root, key, value, decodeProof(unhex(entry.proof)));
    return value;
  });
  const item = fields(unpack(values[0]), ITEM, "Item");
  const events = values.slice(1).map((v) => fields(unpack(v), PROVENANCE_EVENT, "ProvenanceEvent"));
  if (item.gtin !== gtin || item.serial !== serial) throw new NotVerified("another item");
  if (events.length !== item.event_count) {
    throw new NotVerified(`the item has ${item.event_count} events, ${events.length} proven`);
  }
  return { item, events, header };
}

// The names of the merchants among `addresses` (raw), by formatted address, each read
// from its merchant record proven under `header` (the item's): a name is a claim about
// who made or handled the item, so it is shown only when proven. An address without a
// proven record has no name.
export async function merchantNames(light, header, addresses) {
  const names = new Map();
  const unique = new Map(addresses.filter(Boolean).map((a) => [hex(a), a]));
  await Promise.all(
    [...unique.values()].map(async (address) => {
      const key = concat(Uint8Array.of(MERCHANT_PREFIX), address);
      try {
        const doc = await light.api(`/v1/state/${hex(key)}?height=${header.height}`);
        // Anything but a hex value or null (absent) is refused by unhex.
        if (doc?.value === null) return;
        const value = unhex(doc?.value);
        verifyProof(header.state_root, key, value, decodeProof(unhex(doc.proof)));
        names.set(formatAddress(address), fields(unpack(value), MERCHANT, "Merchant").name);
      } catch (err) {
        if (!(isVerificationFailure(err) || err instanceof ApiError)) throw err;
      }
    }),
  );
  return names;
}

export { DecodeError };
