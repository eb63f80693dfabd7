// An item's provenance, proven in the browser a page at a time (apps/commerce/item_proofs.py
// verify_item_page): each page holds the item's record and its own events, each with a
// state proof against the state root of one header whose certificate verifies under
// producers derived from genesis.
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

// `answer` is a page of GET /v1/items/01/{gtin}/21/{serial} (apps/commerce/item_proofs.py
// verify_item_page checks the same); `light` a LightClient. `fromSeq` is the seq the page
// was asked to start at, never the node's word. `header` is the certified header of the
// history's first page: null for the first page (its certificate is checked here), and
// every later page must be at its height, so all pages prove one history. Returns the
// proven item, the page's proven events, the header and where the next page starts (null
// at the end), never the node's unproven view; or throws NotVerified.
export async function verifyItemPage(light, gtin, serial, answer, fromSeq = 0, header = null) {
  const proof = answer?.proof;
  if (!proof || !Array.isArray(proof.entries) || !proof.entries.length) {
    throw new NotVerified("the answer holds no proof");
  }
  if (header === null) {
    header = await light.checkHeader(proof.height, proof.header, proof.commit);
  } else if (proof.height !== header.height) {
    // A page from another block would mix two histories.
    throw new NotVerified(`a page at height ${proof.height}, the history is at ${header.height}`);
  }
  if (answer.height !== header.height) throw new NotVerified(`the answer says height ${answer.height}, proven ${header.height}`);
  const ref = itemRef(gtin, serial);
  const values = proof.entries.map((entry, at) => {
    const key = unhex(entry?.key);
    const expected = at === 0 ? itemKey(ref) : eventKey(ref, fromSeq + at - 1);
    // Only this item's keys, in order from `fromSeq`: no substitution, no gaps, no repeats.
    if (!equalBytes(key, expected)) throw new NotVerified(`entry ${at} is another key`);
    if (entry.value === null) throw new NotVerified(`entry ${at} proves an absent key`);
    const value = unhex(entry.value);
    verifyProof(header.state_root, key, value, decodeProof(unhex(entry.proof)));
    return value;
  });
  const item = fields(unpack(values[0]), ITEM, "Item");
  const events = values.slice(1).map((v) => fields(unpack(v), PROVENANCE_EVENT, "ProvenanceEvent"));
  if (item.gtin !== gtin || item.serial !== serial) throw new NotVerified("another item");
  const count = Number(item.event_count);
  const end = fromSeq + events.length;
  // At least one event (a page that held none would be asked for again and again), and
  // none past the last one the record counts.
  if (!events.length && fromSeq < count) throw new NotVerified(`the page from event ${fromSeq} proves no event`);
  if (end > count) throw new NotVerified(`the item has ${count} events, the page proves up to ${end}`);
  const nextFromSeq = end < count ? end : null;
  if (answer.from_seq !== fromSeq || answer.event_count !== count || answer.next_from_seq !== nextFromSeq) {
    throw new NotVerified("the node's paging differs from the proven one");
  }
  return { item, events, header, nextFromSeq };
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
