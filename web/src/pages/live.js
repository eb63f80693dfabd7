// The live session: pinned products, flash deals with countdown and stock, auctions with
// price, leader tag and clock, a ticker of orders and tips, one-tap buying, bidding and
// tipping, all live from the session's feed.
import { api } from "../lib/api.js";
import { plain } from "../lib/codes.js";
import { pack } from "../lib/codec.js";
import { bidderTag, parseAddress, sealAddress } from "../lib/crypto.js";
import { SessionFeed } from "../lib/feed.js";
import { BID, PLACE_ORDER, record, TIP } from "../lib/records.js";
import { countdown, fmt, go, h, replace } from "../lib/ui.js";
import { current, sealingKey, send } from "../lib/wallet.js";

const TICKER_MAX = 40;

export async function livePage(main, idText) {
  const id = Number(idText);
  const doc = await api(`/v1/sessions/${id}`);
  const session = doc.session;
  const merchantDoc = await api(`/v1/merchants/${session.merchant}`);
  const merchant = merchantDoc.merchant;
  // The increment table, for the lowest bid an auction takes after each feed event.
  const commerceParams = (await api("/v1/commerce")).config.params;
  // Auctions as the feed leaves them: open ones from the snapshot, then started, bid on,
  // extended and ended by events; an ended one stays on the page with its result.
  const auctions = new Map(session.auctions.map((a) => [a.id, auctionState(a)]));
  const deals = new Map(session.deals.map((d) => [d.id, d]));
  const pinned = new Map(session.pinned.map((l) => [l.id, l]));
  const listings = new Map(session.pinned.map((l) => [l.id, l]));
  let status = session.status;
  let tipsTotal = session.tips_total;
  // A deal may be on a listing that is not pinned: its title is read once.
  await Promise.all(session.deals.filter((d) => !listings.has(d.listing_id)).map((d) => loadListing(d.listing_id)));
  await Promise.all(session.auctions.filter((a) => !listings.has(a.listing_id)).map((a) => loadListing(a.listing_id)));

  async function loadListing(listingId) {
    if (listings.has(listingId)) return listings.get(listingId);
    const l = (await api(`/v1/listings/${listingId}`)).listing;
    listings.set(l.id, l);
    return l;
  }

  const stateBadge = h("span", { class: "badge", id: "feed-state" }, "connecting");
  const tipsEl = h("span", { id: "tips-total" }, fmt(tipsTotal));
  const dealsEl = h("section", { id: "deals" });
  const pinnedEl = h("section", { id: "pinned" });
  const tickerEl = h("ol", { id: "ticker", class: "ticker", "aria-live": "polite" });
  const outcomeEl = h("div", { id: "outcome", class: "outcome", role: "status" });
  const auctionsEl = h("section", { id: "auctions", hidden: true });

  replace(
    main,
    h(
      "header",
      { class: "live-head" },
      h("div", {}, h("span", { class: "live-dot" }, session.status === "open" ? "LIVE" : "ENDED"), " ", stateBadge),
      h("h1", {}, session.title),
      h("p", { class: "muted" }, merchant.name, " · tips ", tipsEl),
    ),
    outcomeEl,
    h("h2", {}, "Flash deals"),
    dealsEl,
    auctionsEl,
    h("h2", {}, "On this show"),
    pinnedEl,
    h("h2", {}, "Happening now"),
    tickerEl,
    tipBar(),
  );

  function listingTitle(listingId) {
    return listings.get(Number(listingId))?.title ?? `product ${listingId}`;
  }

  // An amount in its listing's currency, named unless it is the native token (an
  // auction's bids are in its listing's currency too).
  function priced(amount, listingId) {
    return inCurrency(amount, listings.get(Number(listingId))?.currency);
  }
  const auctionPriced = (amount, auctionId) => priced(amount, auctions.get(Number(auctionId))?.listing_id);

  // Deal cards are rebuilt when the feed changes a deal; the clock only updates their
  // timers (a card rebuilt every second would swallow taps).
  let cards = [];
  function renderDeals() {
    const now = Date.now();
    const open = [...deals.values()].filter((d) => d.status === "open" && now < d.end_ms);
    cards = [];
    if (!open.length) return replace(dealsEl, h("p", { class: "muted" }, "No deal right now."));
    replace(
      dealsEl,
      open.map((d) => {
        const pct = d.allocation ? Math.round((100 * d.left) / d.allocation) : 0;
        const listing = listings.get(d.listing_id);
        const timer = h("span", { class: "timer" });
        const button = h("button", { class: "buy", onclick: () => buy(d) }, d.left === 0 ? "Sold out" : `Buy now · ${priced(d.price, d.listing_id)}`);
        cards.push({ d, timer, button });
        return h(
          "article",
          { class: "deal card", "data-deal": d.id },
          h("div", { class: "deal-top" }, h("h3", {}, listingTitle(d.listing_id)), timer),
          h("p", { class: "price" }, priced(d.price, d.listing_id), " ", listing && listing.price > d.price ? h("s", {}, fmt(listing.price)) : null),
          h("div", { class: "stock" }, h("div", { class: "bar" }, h("i", { style: `width:${pct}%` })), h("span", { class: "left" }, `${fmt(d.left)} of ${fmt(d.allocation)} left`)),
          button,
        );
      }),
    );
    updateTimers();
  }

  function updateTimers() {
    const now = Date.now();
    for (const { d, timer, button } of cards) {
      if (now >= d.end_ms) return renderDeals();
      const started = now >= d.start_ms;
      timer.textContent = started ? `ends in ${countdown(d.end_ms - now)}` : `starts in ${countdown(d.start_ms - now)}`;
      button.disabled = !started || d.left === 0 || status !== "open";
    }
  }

  function increment(price) {
    const { bid_increment_bounds: bounds, bid_increment_steps: steps } = commerceParams;
    const i = bounds.findIndex((bound) => price < bound);
    return steps[i === -1 ? steps.length - 1 : i];
  }

  // The lowest bid the auction takes now from anyone but its leader (as the chain's
  // next_minimum): the start price before the first bid.
  const nextMinimum = (a) => (a.leader ? a.price + increment(a.price) : a.start_price);

  // The wallet's own tag in an auction (the feed shows tags, never addresses).
  function myTag(auctionId) {
    const w = current();
    return w ? bidderTag(auctionId, parseAddress(w.address)) : null;
  }

  // Auction cards are rebuilt when the feed changes one (what the shopper is typing, and
  // where, is kept across); the clock only updates timers.
  let auctionCards = [];
  const typed = new Map();
  function renderAuctions() {
    const focused = document.activeElement?.closest?.("[data-auction]")?.dataset.auction;
    auctionCards = [];
    auctionsEl.hidden = auctions.size === 0;
    if (!auctions.size) return replace(auctionsEl);
    const mine = (a) => a.leader && a.leader === myTag(a.id);
    replace(
      auctionsEl,
      h("h2", {}, "Auctions"),
      [...auctions.values()].map((a) => {
        const timer = h("span", { class: "timer" });
        const open = a.status === "open";
        const max = h("input", { class: "max", type: "number", inputmode: "numeric", min: nextMinimum(a), step: 1, placeholder: `Your max, ${priced(nextMinimum(a), a.listing_id)}+`, "aria-label": "Your maximum bid", oninput: (e) => typed.set(a.id, e.target.value) });
        max.value = typed.get(a.id) ?? "";
        if (open && focused === String(a.id)) queueMicrotask(() => max.focus());
        const button = h("button", { type: "submit", class: "bid" }, "Bid");
        const form = open
          ? h(
              "form",
              {
                class: "bid-form",
                // The chain's answer (bid_too_low names the minimum), not the browser's bubble.
                novalidate: true,
                onsubmit: (e) => {
                  e.preventDefault();
                  typed.delete(a.id);
                  bid(a, max.value);
                },
              },
              max,
              button,
            )
          : null;
        auctionCards.push({ a, timer, button });
        const leader = a.leader
          ? [h("span", {}, open ? "Leading: " : "Winner: "), h("code", { class: "tag" }, a.leader), mine(a) ? h("b", { class: "you" }, " (you)") : null]
          : h("span", { class: "muted" }, open ? "No bid yet" : "No bid");
        return h(
          "article",
          { class: `auction card ${open ? "" : "ended"}`, "data-auction": a.id, "data-status": a.status },
          h("div", { class: "deal-top" }, h("h3", {}, listingTitle(a.listing_id)), timer),
          h("p", { class: "price" }, h("span", { class: "auction-price" }, priced(a.leader ? a.price : a.start_price, a.listing_id)), " ", h("span", { class: "bids muted small" }, a.leader ? `${fmt(a.bids)} bid${a.bids === 1 ? "" : "s"}` : "start price")),
          h("p", { class: "leader" }, leader),
          open
            ? h("p", { class: "muted small" }, `Next bid ${priced(nextMinimum(a), a.listing_id)} or more. ${a.mode === "timed" ? `A late bid resets the clock to ${commerceParams.auction_counter_ms / 1000} s.` : "Sudden death: the clock never resets."}${a.reserve ? " Reserve price." : ""}`)
            : h("p", { class: `result ${a.status === "won" ? "ok" : "muted"}` }, auctionResult(a)),
          form,
        );
      }),
    );
    updateAuctionTimers();
  }

  function auctionResult(a) {
    if (a.status === "won") return `Sold for ${priced(a.price, a.listing_id)}${a.order ? ` (order #${a.order})` : ""}${a.leader === myTag(a.id) ? ": you won!" : "."}`;
    if (a.status === "unsold") return a.leader ? "Unsold: the reserve was not met." : "Unsold: no bid.";
    return "Cancelled.";
  }

  function updateAuctionTimers() {
    const now = Date.now();
    for (const { a, timer, button } of auctionCards) {
      timer.dataset.endMs = String(a.end_ms);
      if (a.status !== "open") {
        timer.textContent = a.status === "won" ? "sold" : a.status;
        continue;
      }
      const started = now >= a.start_ms;
      // Past its end, the next block ends it: the result comes from the feed.
      timer.textContent = !started ? `starts in ${countdown(a.start_ms - now)}` : now < a.end_ms ? `ends in ${countdown(a.end_ms - now)}` : "ending…";
      // Bids before the start are pre-bids: the chain takes them.
      button.disabled = now >= a.end_ms;
    }
  }

  function renderPinned() {
    if (!pinned.size) return replace(pinnedEl, h("p", { class: "muted" }, "Nothing pinned yet."));
    replace(
      pinnedEl,
      [...pinned.values()].map((l) =>
        h("article", { class: "card product" }, h("h3", {}, l.title), h("p", { class: "muted" }, l.description), h("p", {}, h("b", {}, priced(l.price, l.id)), ` · ${fmt(l.available)} in stock`)),
      ),
    );
  }

  function tick(msg, text, cls = "") {
    const li = h("li", { class: cls, "data-pos": `${msg.height}:${msg.index}`, "data-kind": msg.kind }, text);
    tickerEl.prepend(li);
    while (tickerEl.children.length > TICKER_MAX) tickerEl.lastChild.remove();
  }

  async function onEvent(msg) {
    const a = msg.attrs;
    switch (msg.kind) {
      case "commerce.order_placed":
        tick(msg, [h("b", {}, "Order"), ` #${a.order}: ${a.quantity} × ${listingTitle(a.listing)} for ${inCurrency(a.amount, a.currency)}`], "order");
        break;
      case "commerce.stock_left": {
        const deal = deals.get(Number(a.deal));
        if (deal) deal.left = Number(a.left);
        else if (pinned.has(Number(a.listing))) pinned.get(Number(a.listing)).available = Number(a.left);
        break;
      }
      case "commerce.tip":
        // The session's total counts the native token (as the chain's tips_total does).
        if (!a.currency) tipsTotal += Number(a.amount);
        tipsEl.textContent = fmt(tipsTotal);
        tick(msg, [h("b", {}, "Tip"), ` ${inCurrency(a.amount, a.currency)}${a.message ? `: “${a.message}”` : ""}`], "tip");
        break;
      case "commerce.deal_opened": {
        const deal = (await api(`/v1/deals/${a.deal}`)).deal;
        await loadListing(deal.listing_id);
        // The deal as of the latest height may already have sold some: keep the feed's
        // order of things by starting from what the event says.
        deals.set(deal.id, { ...deal, left: Number(a.allocation), sold: 0, status: "open" });
        tick(msg, [h("b", {}, "Deal"), ` on ${listingTitle(a.listing)} at ${priced(a.price, a.listing)}`], "deal");
        break;
      }
      case "commerce.deal_closed":
        deals.delete(Number(a.deal));
        tick(msg, `Deal closed: ${a.sold} sold`, "deal");
        break;
      case "commerce.listing_pinned": {
        const l = (await api(`/v1/listings/${a.listing}`)).listing;
        pinned.set(l.id, l);
        listings.set(l.id, l); // the latest terms
        tick(msg, [h("b", {}, "Pinned"), ` ${l.title}`]);
        break;
      }
      case "commerce.listing_unpinned":
        pinned.delete(Number(a.listing));
        break;
      case "commerce.auction_started": {
        await loadListing(Number(a.listing));
        auctions.set(Number(a.auction), auctionState({ id: Number(a.auction), listing_id: Number(a.listing), mode: a.mode, start_price: Number(a.start_price), reserve: Number(a.reserve), start_ms: Number(a.start_ms), end_ms: Number(a.end_ms), price: 0, leader: "", bids: 0, status: "open", order_id: 0 }));
        tick(msg, [h("b", {}, "Auction"), ` of ${listingTitle(a.listing)} from ${priced(a.start_price, a.listing)}`], "auction");
        break;
      }
      case "commerce.auction_bid": {
        const auction = auctions.get(Number(a.auction));
        if (auction) Object.assign(auction, { price: Number(a.amount), leader: a.leader, bids: Number(a.bids) });
        tick(msg, [h("b", {}, "Bid"), ` ${auctionPriced(a.amount, a.auction)} by `, h("code", {}, a.leader)], "auction");
        break;
      }
      case "commerce.auction_extended": {
        const auction = auctions.get(Number(a.auction));
        if (auction) auction.end_ms = Number(a.end_ms);
        break;
      }
      case "commerce.auction_ended": {
        const auction = auctions.get(Number(a.auction));
        const status = a.outcome;
        if (auction) Object.assign(auction, { status, price: Number(a.price), leader: a.leader, bids: Number(a.bids), order: Number(a.order) });
        tick(msg, status === "won" ? [h("b", {}, "Sold"), ` for ${auctionPriced(a.price, a.auction)} to `, h("code", {}, a.leader)] : `Auction ${status}.`, "auction");
        break;
      }
      case "commerce.session_closed":
        status = "closed";
        tick(msg, "The show has ended.");
        break;
      default:
        break;
    }
    renderDeals();
    if (msg.kind.startsWith("commerce.auction_")) renderAuctions();
    renderPinned();
  }

  function show(text, cls) {
    replace(outcomeEl, h("p", { class: cls }, text));
  }

  // The unlocked wallet with a shipping address, or null once the page has gone to the
  // wallet page for what is missing.
  function shopper() {
    const w = current();
    if (!w) go(`/wallet?next=${encodeURIComponent(location.pathname)}`);
    else if (!w.shipTo) go(`/wallet?next=${encodeURIComponent(location.pathname)}&ship=1`);
    return w?.shipTo ? w : null;
  }

  // The shopper's address sealed to the merchant's current key, as proven (never as the
  // node's JSON says): the fields an order and a bid carry alike.
  async function sealedAddress(w) {
    const key = await sealingKey(id);
    const sealed = sealAddress(key, w.shipTo);
    return { sealed_to: key, address_commitment: sealed.commitment, sealed_address: sealed.ciphertext };
  }

  async function buy(d) {
    const w = shopper();
    if (!w) return;
    try {
      // The deal and the merchant's key as of now (the price and version must match);
      // the currency is the listing's (a deal has none of its own).
      const deal = (await api(`/v1/deals/${d.id}`)).deal;
      const { currency } = await loadListing(deal.listing_id);
      const payload = pack(record(PLACE_ORDER, { listing_id: deal.listing_id, listing_version: deal.listing_version, quantity: 1, unit_price: deal.price, session_id: id, deal_id: deal.id, ...(await sealedAddress(w)), currency }, "PlaceOrder"));
      const result = await send("commerce.place_order", payload, (stage) => show(stage === "signing" ? "Signing…" : "Sent, waiting for the block…", "muted"));
      await outcome(result, (r) => {
        const placed = r.events.find((e) => e.kind === "commerce.order_placed");
        return `✓ Order #${placed?.attrs.order} is final (block ${result.height}).`;
      });
    } catch (err) {
      show(await plain(err.code ?? "", err.message), "error");
    }
  }

  // A maximum bid, signed here, the address sealed here as for an order (the winner's
  // order carries it).
  async function bid(a, text) {
    const w = shopper();
    if (!w) return;
    const maximum = Number(text);
    if (!Number.isSafeInteger(maximum) || maximum <= 0) return show("Enter the most you will pay, in whole tokens.", "error");
    try {
      const payload = pack(record(BID, { auction_id: a.id, max_amount: maximum, ...(await sealedAddress(w)) }, "Bid"));
      const result = await send("commerce.bid", payload, (stage) => show(stage === "signing" ? "Signing your bid…" : "Bid sent, waiting for the block…", "muted"));
      // Read only from a proven receipt (or a simulation's: nothing was sent).
      if (result.sent && !result.verified) return outcome(result);
      if (result.receipt.code === "bid_too_low" && a.leader && a.leader === myTag(a.id)) {
        // The chain names no figure of a leader's maximum (its receipts are public).
        return show("You lead already: a new maximum must be above your current one.", "error");
      }
      if (result.receipt.code === "bid_too_low") {
        // The sentence names the lowest bid as the chain saw it.
        const least = result.receipt.message.match(/minimum (\d+)/)?.[1];
        return show(`Your maximum is too low: bid at least ${priced(least ? BigInt(least) : nextMinimum(a), a.listing_id)}.`, "error");
      }
      if (result.receipt.code === "self_dealing") return show("You sell or host this auction: you cannot bid on it.", "error");
      await outcome(result, (r) => {
        const placed = r.events.find((e) => e.kind === "commerce.auction_bid");
        const mineNow = placed && placed.attrs.leader === myTag(a.id);
        return mineNow ? `✓ You lead at ${priced(placed.attrs.amount, a.listing_id)} (your maximum ${priced(maximum, a.listing_id)}).` : `Outbid at once: another bidder's maximum is higher (price now ${priced(placed?.attrs.amount ?? 0, a.listing_id)}).`;
      });
    } catch (err) {
      show(await plain(err.code ?? "", err.message), "error");
    }
  }

  // A sent transaction's outcome, said only as its proof shows it: the node's word for
  // one it could not prove (it may have dropped it) is "not verified", never final.
  async function outcome(result, okText) {
    const r = result.receipt;
    if (result.sent && !result.verified) {
      const said = r?.code === "ok" ? "it went through" : `it failed (${r?.code})`;
      const text = `✗ Not verified: the node says ${said} in block ${result.height}, but could not prove it (${result.reason}). It may not be on chain: check before you try again.`;
      return replace(outcomeEl, h("p", { class: "error", "data-verified": "no" }, text));
    }
    const text = r.code === "ok" ? okText(r) : `${result.sent ? "" : "Not sent. "}${await plain(r.code, r.message)}`;
    // A sent one's outcome is its proven receipt's: said so.
    const proof = result.sent ? h("span", { class: "small proof" }, " ✓ verified here") : null;
    replace(outcomeEl, h("p", { class: r.code === "ok" ? "ok" : "error", "data-verified": result.sent ? "yes" : null }, text, proof));
  }

  function tipBar() {
    const message = h("input", { placeholder: "Say something (optional)", maxlength: 64, id: "tip-message" });
    const tip = async (amount) => {
      if (!current()) return go(`/wallet?next=${encodeURIComponent(location.pathname)}`);
      try {
        const result = await send("commerce.tip", pack(record(TIP, { session_id: id, amount, message: message.value, currency: "" }, "Tip")), () => show("Sending your tip…", "muted"));
        await outcome(result, () => `✓ Tip of ${fmt(amount)} sent (block ${result.height}).`);
        message.value = "";
      } catch (err) {
        show(await plain(err.code ?? "", err.message), "error");
      }
    };
    return h("footer", { class: "tipbar" }, message, [100, 500, 1000].map((n) => h("button", { class: "tip", onclick: () => tip(n) }, `Tip ${fmt(n)}`)));
  }

  renderDeals();
  renderAuctions();
  renderPinned();
  // Events are handled one after another, in feed order (some read the API first).
  let queue = Promise.resolve();
  let feed = null;
  feed = new SessionFeed(id, doc.height, {
    onEvent: (msg) => {
      queue = queue.then(() => onEvent(msg)).catch(() => {});
    },
    // Away for longer than the node replays: start again from a new snapshot.
    onStale: () => window.dispatchEvent(new PopStateEvent("popstate")),
    onState: (s) => {
      stateBadge.textContent = s;
      stateBadge.dataset.state = s;
      stateBadge.dataset.connections = String(feed?.connections ?? 0);
      // The wait before the next try (ms), while reconnecting.
      stateBadge.dataset.retryMs = String(s === "reconnecting" ? (feed?.retryMs ?? 0) : 0);
    },
  });
  const timer = setInterval(() => {
    updateTimers();
    updateAuctionTimers();
  }, 1000);
  return () => {
    clearInterval(timer);
    feed.stop();
  };
}


// An amount (a number, or an event's decimal text, exact at any size) and its currency
// unless native.
function inCurrency(amount, currency) {
  const text = fmt(typeof amount === "string" && /^\d+$/.test(amount) ? BigInt(amount) : amount);
  return currency ? `${text} ${currency}` : text;
}

// What the page keeps of an auction (GET /v1/auctions/{id} fields, "sold" read as "won"
// as the feed's outcome says it).
function auctionState(view) {
  const status = view.status === "sold" ? "won" : view.status;
  return { id: view.id, listing_id: view.listing_id, mode: view.mode, start_price: view.start_price, reserve: view.reserve, start_ms: view.start_ms, end_ms: view.end_ms, price: view.price, leader: view.leader, bids: view.bids, status, order: view.order_id };
}
