// Item check at the GS1 Digital Link path (/01/{gtin}/21/{serial}): maker, attestations,
// custody hand-offs and owner as a timeline, proven in this browser. "Verified" only when
// the certificate, the producers and every state proof verify; "not verified" otherwise.
// A long history comes a page at a time, all at one height: the first page, then "Show
// more events" for each next one.
import { renderSVG } from "uqr";
import { api, ApiError } from "../lib/api.js";
import { hex } from "../lib/codec.js";
import { formatAddress } from "../lib/crypto.js";
import { merchantNames, verifyItemPage } from "../lib/item.js";
import { isVerificationFailure } from "../lib/light.js";
import { lightClient } from "../lib/trust.js";
import { ago, h, link, replace, short, time } from "../lib/ui.js";

// GTIN-8/12/13 as printed are GTIN-14 with leading zeros.
const gtin14 = (text) => text.padStart(14, "0");

export async function itemPage(main, gtinText, serial) {
  const gtin = gtin14(gtinText);
  const path = `/v1/items/01/${gtin}/21/${encodeURIComponent(serial)}`;
  let answer;
  try {
    answer = await api(path);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      return replace(main, h("h1", {}, "Unknown item"), verdict(false, "The chain has no item with this code."));
    }
    if (err instanceof ApiError && err.code === "answer_malformed") {
      return replace(main, h("h1", {}, "Item check"), verdict(false, "The node's answer could not be read."));
    }
    throw err;
  }
  let proven = null;
  let reason = "";
  let light = null;
  try {
    light = await lightClient();
    proven = await verifyItemPage(light, gtin, serial, answer);
  } catch (err) {
    if (!(isVerificationFailure(err) || err instanceof ApiError || err instanceof TypeError)) throw err;
    reason = err.message;
  }
  const view = answer.item;
  // Verified: everything shown is what the proofs proved. Otherwise the node's view,
  // marked as such.
  const item = proven
    ? { ...proven.item, maker: formatAddress(proven.item.maker), custodian: formatAddress(proven.item.custodian), pending_to: proven.item.pending_to && formatAddress(proven.item.pending_to), return_to: proven.item.return_to && formatAddress(proven.item.return_to), status: proven.item.status === 1 ? "active" : "decommissioned" }
    : view;
  const events = proven ? proven.events.map(eventFromProof) : view.history;
  // Names only when proven (the node's unproven view is shown by address).
  const names = proven
    ? await merchantNames(light, proven.header, [proven.item.maker, ...proven.events.map((e) => e.attestor)])
    : new Map();
  const who = (addr) => (addr ? h("span", { title: addr }, names.get(addr) ?? short(addr, 12)) : "—");
  const url = `${location.origin}/01/${gtin}/21/${encodeURIComponent(serial)}`;
  const timeline = h("ol", { class: proven ? "timeline" : "timeline unproven", id: "timeline" }, events.map((e) => timelineEntry(e, who)));
  // The proven count; unproven, the node's (or what it showed, from a node that says none).
  const total = proven ? Number(proven.item.event_count) : Number.isSafeInteger(answer.event_count) ? answer.event_count : events.length;
  const shown = h("p", { class: "muted small", id: "history-count" });
  const countShown = () => shown.replaceChildren(timeline.children.length < total ? `The first ${timeline.children.length} of ${total} events.` : `${total} events.`);
  countShown();
  const shownVerdict = proven
    ? // A node may answer at any final height it keeps, an older one too: the block's
      // time says how fresh what is proven is (a hand-off since would not show).
      verdict(
        true,
        `Proven at block ${proven.header.height}, made ${time(proven.header.time_ms)} (${ago(proven.header.time_ms)}): its certificate is signed by more than 2/3 of the producers derived from the genesis document (${light.genesisHash.slice(0, 12)}…).`,
      )
    : verdict(false, reason ? `This history could not be proven (${reason}). Do not rely on it.` : "This history could not be proven.");

  // A long history comes a page at a time: each next page at the first page's height,
  // proven against its header, and shown only once proven.
  let next = proven ? proven.nextFromSeq : null;
  const more = h("button", { class: "secondary", id: "more", onclick: () => loadMore() }, "Show more events");
  const loadMore = async () => {
    more.disabled = true;
    try {
      const page = await verifyItemPage(light, gtin, serial, await api(`${path}?from_seq=${next}&height=${proven.header.height}`), next, proven.header);
      for (const [addr, name] of await merchantNames(light, proven.header, page.events.map((e) => e.attestor))) names.set(addr, name);
      timeline.append(...page.events.map(eventFromProof).map((e) => timelineEntry(e, who)));
      next = page.nextFromSeq;
      countShown();
      if (next === null) more.remove();
      else more.disabled = false;
    } catch (err) {
      if (!(isVerificationFailure(err) || err instanceof ApiError || err instanceof TypeError)) throw err;
      // A node that cannot prove its next page is not trusted for the rest either.
      more.remove();
      shownVerdict.replaceWith(verdict(false, `The node's next events could not be proven (${err.message}). The events shown were proven at block ${proven.header.height}; do not rely on anything more this node shows.`));
    }
  };

  replace(
    main,
    h("p", { class: "muted" }, `(01)${gtin}(21)${serial}`),
    h("h1", {}, item.description || "Item"),
    shownVerdict,
    h(
      "dl",
      { class: "card facts" },
      h("dt", {}, "Made by"), h("dd", {}, who(item.maker)),
      h("dt", {}, "Held by"), h("dd", {}, who(item.custodian)),
      item.pending_to ? [h("dt", {}, "Handing to"), h("dd", {}, who(item.pending_to))] : null,
      item.return_to ? [h("dt", {}, "Going back to"), h("dd", {}, who(item.return_to))] : null,
      h("dt", {}, "Status"), h("dd", {}, item.status),
      h("dt", {}, "Registered"), h("dd", {}, time(item.registered_ms)),
    ),
    h("h2", {}, "History"),
    timeline,
    shown,
    next !== null ? more : null,
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
  else if (e.biz_step === "shipping" && e.disposition === "cancelled") what = ["Hand-off to ", who(e.destination), " withdrawn; stays with ", who(e.source)];
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
