// The live session: pinned products, flash deals with countdown and stock, a ticker of
// orders and tips, one-tap buying and tipping, all live from the session's feed.
import { api } from "../lib/api.js";
import { plain } from "../lib/codes.js";
import { pack, unhex } from "../lib/codec.js";
import { sealAddress } from "../lib/crypto.js";
import { SessionFeed } from "../lib/feed.js";
import { countdown, fmt, go, h, replace } from "../lib/ui.js";
import { current, send } from "../lib/wallet.js";

const TICKER_MAX = 40;

export async function livePage(main, idText) {
  const id = Number(idText);
  const doc = await api(`/v1/sessions/${id}`);
  const session = doc.session;
  const merchantDoc = await api(`/v1/merchants/${session.merchant}`);
  const merchant = merchantDoc.merchant;
  const deals = new Map(session.deals.map((d) => [d.id, d]));
  const pinned = new Map(session.pinned.map((l) => [l.id, l]));
  const listings = new Map(session.pinned.map((l) => [l.id, l]));
  let status = session.status;
  let tipsTotal = session.tips_total;
  // A deal may be on a listing that is not pinned: its title is read once.
  await Promise.all(session.deals.filter((d) => !listings.has(d.listing_id)).map((d) => loadListing(d.listing_id)));

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
    // Live auctions (issue 14) go here once the chain has them: current price, leader
    // tag and timer, fed by the same session feed.
    h("section", { id: "auctions", hidden: true }),
    h("h2", {}, "On this show"),
    pinnedEl,
    h("h2", {}, "Happening now"),
    tickerEl,
    tipBar(),
  );

  function listingTitle(listingId) {
    return listings.get(Number(listingId))?.title ?? `product ${listingId}`;
  }

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
        const button = h("button", { class: "buy", onclick: () => buy(d) }, d.left === 0 ? "Sold out" : `Buy now · ${fmt(d.price)}`);
        cards.push({ d, timer, button });
        return h(
          "article",
          { class: "deal card", "data-deal": d.id },
          h("div", { class: "deal-top" }, h("h3", {}, listingTitle(d.listing_id)), timer),
          h("p", { class: "price" }, fmt(d.price), " ", listing && listing.price > d.price ? h("s", {}, fmt(listing.price)) : null),
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

  function renderPinned() {
    if (!pinned.size) return replace(pinnedEl, h("p", { class: "muted" }, "Nothing pinned yet."));
    replace(
      pinnedEl,
      [...pinned.values()].map((l) =>
        h("article", { class: "card product" }, h("h3", {}, l.title), h("p", { class: "muted" }, l.description), h("p", {}, h("b", {}, fmt(l.price)), ` · ${fmt(l.available)} in stock`)),
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
        tick(msg, [h("b", {}, "Order"), ` #${a.order}: ${a.quantity} × ${listingTitle(a.listing)} for ${fmt(Number(a.amount))}`], "order");
        break;
      case "commerce.stock_left": {
        const deal = deals.get(Number(a.deal));
        if (deal) deal.left = Number(a.left);
        else if (pinned.has(Number(a.listing))) pinned.get(Number(a.listing)).available = Number(a.left);
        break;
      }
      case "commerce.tip":
        tipsTotal += Number(a.amount);
        tipsEl.textContent = fmt(tipsTotal);
        tick(msg, [h("b", {}, "Tip"), ` ${fmt(Number(a.amount))}${a.message ? `: “${a.message}”` : ""}`], "tip");
        break;
      case "commerce.deal_opened": {
        const deal = (await api(`/v1/deals/${a.deal}`)).deal;
        await loadListing(deal.listing_id);
        // The deal as of the latest height may already have sold some: keep the feed's
        // order of things by starting from what the event says.
        deals.set(deal.id, { ...deal, left: Number(a.allocation), sold: 0, status: "open" });
        tick(msg, [h("b", {}, "Deal"), ` on ${listingTitle(a.listing)} at ${fmt(Number(a.price))}`], "deal");
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
      case "commerce.session_closed":
        status = "closed";
        tick(msg, "The show has ended.");
        break;
      default:
        break;
    }
    renderDeals();
    renderPinned();
  }

  function show(text, cls) {
    replace(outcomeEl, h("p", { class: cls }, text));
  }

  async function buy(d) {
    const w = current();
    if (!w) return go(`/wallet?next=${encodeURIComponent(location.pathname)}`);
    if (!w.shipTo) return go(`/wallet?next=${encodeURIComponent(location.pathname)}&ship=1`);
    try {
      // The deal and the merchant's key as of now (the price and version must match).
      const deal = (await api(`/v1/deals/${d.id}`)).deal;
      const key = unhex((await api(`/v1/merchants/${session.merchant}`)).merchant.enc_key);
      const sealed = sealAddress(key, w.shipTo);
      const payload = pack([deal.listing_id, deal.listing_version, 1, deal.price, id, deal.id, key, sealed.commitment, sealed.ciphertext]);
      const result = await send("commerce.place_order", payload, (stage) => show(stage === "signing" ? "Signing…" : "Sent, waiting for the block…", "muted"));
      await outcome(result, (r) => {
        const placed = r.events.find((e) => e.kind === "commerce.order_placed");
        return `✓ Order #${placed?.attrs.order} is final (block ${result.height}).`;
      });
    } catch (err) {
      show(await plain(err.code ?? "", err.message), "error");
    }
  }

  async function outcome(result, okText) {
    const r = result.receipt;
    if (r.code === "ok") show(okText(r), "ok");
    else show(`${result.sent ? "" : "Not sent. "}${await plain(r.code, r.message)}`, "error");
  }

  function tipBar() {
    const message = h("input", { placeholder: "Say something (optional)", maxlength: 64, id: "tip-message" });
    const tip = async (amount) => {
      if (!current()) return go(`/wallet?next=${encodeURIComponent(location.pathname)}`);
      try {
        const result = await send("commerce.tip", pack([id, amount, message.value]), () => show("Sending your tip…", "muted"));
        await outcome(result, () => `✓ Tip of ${fmt(amount)} sent (block ${result.height}).`);
        message.value = "";
      } catch (err) {
        show(await plain(err.code ?? "", err.message), "error");
      }
    };
    return h("footer", { class: "tipbar" }, message, [100, 500, 1000].map((n) => h("button", { class: "tip", onclick: () => tip(n) }, `Tip ${fmt(n)}`)));
  }

  renderDeals();
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
    },
  });
  const timer = setInterval(updateTimers, 1000);
  return () => {
    clearInterval(timer);
    feed.stop();
  };
}

