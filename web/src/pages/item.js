// Item check at the GS1 Digital Link path (/01/{gtin}/21/{serial}): maker, attestations,
// custody hand-offs and owner as a timeline, proven in this browser. "Verified" only when
// the certificate, the producers and every state proof verify; "not verified" otherwise.
import { renderSVG } from "uqr";
import { api, ApiError } from "../lib/api.js";
import { hex } from "../lib/codec.js";
import { formatAddress } from "../lib/crypto.js";
import { merchantNames, verifyItem } from "../lib/item.js";
import { isVerificationFailure } from "../lib/light.js";
import { lightClient } from "../lib/trust.js";
import { h, link, replace, short, time } from "../lib/ui.js";

// GTIN-8/12/13 as printed are GTIN-14 with leading zeros.
const gtin14 = (text) => text.padStart(14, "0");

export async function itemPage(main, gtinText, serial) {
  const gtin = gtin14(gtinText);
  let answer;
  try {
    answer = await api(`/v1/items/01/${gtin}/21/${encodeURIComponent(serial)}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      return replace(main, h("h1", {}, "Unknown item"), verdict(false, "The chain has no item with this code."));
    }
    if (err instanceof ApiError && err.code === "malformed") {
      return replace(main, h("h1", {}, "Item check"), verdict(false, "The node's answer could not be read."));
    }
    if (err instanceof ApiError && err.code === "history_too_long") {
      // The node answers at most 1,024 events at once (apps/commerce/http.py).
      return replace(
        main,
        h("h1", {}, "Item check"),
        verdict(false, "This item's history is longer than the node serves in one answer, so it cannot be checked here."),
      );
    }
    throw err;
  }
  let proven = null;
  let reason = "";
  let light = null;
  try {
    light = await lightClient();
    proven = await verifyItem(light, gtin, serial, answer);
  } catch (err) {
    if (!(isVerificationFailure(err) || err instanceof ApiError || err instanceof TypeError)) throw err;
    reason = err.message;
  }
  const view = answer.item;
  // Verified: everything shown is what the proofs proved. Otherwise the node's view,
  // marked as such.
  const item = proven
    ? { ...proven.item, maker: formatAddress(proven.item.maker), custodian: formatAddress(proven.item.custodian), pending_to: proven.item.pending_to && formatAddress(proven.item.pending_to), status: proven.item.status === 1 ? "active" : "decommissioned" }
    : view;
  const events = proven ? proven.events.map(eventFromProof) : view.history;
  // Names only when proven (the node's unproven view is shown by address).
  const names = proven
    ? await merchantNames(light, proven.header, [proven.item.maker, ...proven.events.map((e) => e.attestor)])
    : new Map();
  const who = (addr) => (addr ? h("span", { title: addr }, names.get(addr) ?? short(addr, 12)) : "—");
  const url = `${location.origin}/01/${gtin}/21/${encodeURIComponent(serial)}`;

  replace(
    main,
    h("p", { class: "muted" }, `(01)${gtin}(21)${serial}`),
    h("h1", {}, item.description || "Item"),
    proven
      ? verdict(true, `Proven at block ${proven.header.height}: its certificate is signed by more than 2/3 of the producers derived from the genesis document (${light.genesisHash.slice(0, 12)}…).`)
      : verdict(false, reason ? `This history could not be proven (${reason}). Do not rely on it.` : "This history could not be proven."),
    h(
      "dl",
      { class: "card facts" },
      h("dt", {}, "Made by"), h("dd", {}, who(item.maker)),
      h("dt", {}, "Held by"), h("dd", {}, who(item.custodian)),
      item.pending_to ? [h("dt", {}, "Handing to"), h("dd", {}, who(item.pending_to))] : null,
      h("dt", {}, "Status"), h("dd", {}, item.status),
      h("dt", {}, "Registered"), h("dd", {}, time(item.registered_ms)),
    ),
    h("h2", {}, "History"),
    h("ol", { class: proven ? "timeline" : "timeline unproven", id: "timeline" }, events.map((e) => timelineEntry(e, who))),
    h(
      "details",
      { class: "card merchant", id: "label" },
      h("summary", {}, "Merchant: print this item's code"),
      h("div", { class: "label" }, h("div", { class: "qr", html: renderSVG(url, { border: 2 }) }), h("p", { class: "mono small" }, `(01)${gtin}(21)${serial}`), h("p", { class: "small" }, item.description)),
      h("button", { onclick: () => window.print() }, "Print label"),
    ),
  );
}

function verdict(ok, text) {
  return h(
    "div",
    { class: ok ? "verdict ok" : "verdict bad", id: "verdict", "data-verified": ok ? "yes" : "no" },
    h("strong", {}, ok ? "✓ verified" : "✗ not verified"),
    h("p", {}, text),
  );
}

function eventFromProof(e) {
  const addr = (a) => (a ? formatAddress(a) : null);
  return { ...e, attestor: addr(e.attestor), source: addr(e.source), destination: addr(e.destination), tx_hash: hex(e.tx_hash) };
}

function timelineEntry(e, who) {
  // The EPCIS business steps the chain records (apps/commerce/provenance.py).
  const words = (text) => text.replace(/^.*[:/]/, "").replaceAll("_", " ");
  let what;
  if (e.action === "ADD") what = ["Made and registered", e.read_point ? ` at ${e.read_point}` : ""];
  else if (e.action === "DELETE") what = ["Taken out of circulation"];
  else if (e.biz_step === "shipping") what = ["Sent by ", who(e.source), " to ", who(e.destination)];
  else if (e.biz_step === "receiving" && e.disposition === "refused") what = ["Refused by ", who(e.destination), "; stays with ", who(e.source)];
  else if (e.biz_step === "receiving") what = ["Received by ", who(e.destination), " from ", who(e.source)];
  else if (e.biz_step === "retail_selling") what = ["Sold to its buyer ", who(e.destination)];
  else {
    const step = words(e.biz_step || "observed");
    what = [step.charAt(0).toUpperCase() + step.slice(1), e.disposition ? ` (${words(e.disposition)})` : ""];
  }
  return h(
    "li",
    { "data-seq": e.seq },
    h("p", { class: "what" }, what),
    h("p", { class: "muted small" }, time(e.event_time_ms), " · by ", who(e.attestor), e.biz_location ? ` · ${e.biz_location}` : ""),
    e.tx_hash ? h("p", { class: "small" }, link(`/explorer/txs/${e.tx_hash}`, `block ${e.height}`)) : null,
  );
}
