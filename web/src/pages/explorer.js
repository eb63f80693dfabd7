// The explorer for auditors and operators: chain status and finality lag, producers with
// missed slots, peers, recent blocks live, and each block (with its certificate checked
// here), transaction (with its receipt) and account.
import { api, ApiError, MAX_BLOCK_ANSWER_BYTES } from "../lib/api.js";
import { plain } from "../lib/codes.js";
import { formatAddress, addressOf } from "../lib/crypto.js";
import { hex, unhex } from "../lib/codec.js";
import { decodeCommit, decodeHeader, isVerificationFailure, NotVerified } from "../lib/light.js";
import { CLOSE_UNREADABLE, readableMessage, retryDelayMs } from "../lib/feed.js";
import { lightClient } from "../lib/trust.js";
import { ago, errorBox, fmt, go, h, link, replace, short, time, units } from "../lib/ui.js";

const RECENT = 10;

function search() {
  const input = h("input", { placeholder: "Height, transaction hash or ll1 address", id: "search" });
  return h(
    "form",
    {
      class: "search",
      onsubmit: (e) => {
        e.preventDefault();
        const q = input.value.trim();
        if (/^\d+$/.test(q)) go(`/explorer/blocks/${q}`);
        else if (/^[0-9a-f]{64}$/i.test(q)) go(`/explorer/txs/${q.toLowerCase()}`);
        else if (q.startsWith("ll1")) go(`/explorer/accounts/${q}`);
      },
    },
    input,
    h("button", { type: "submit" }, "Go"),
  );
}

export async function explorerPage(main) {
  const [status, candidates] = await Promise.all([api("/v1/status"), api("/v1/staking/candidates").catch(() => null)]);
  const lagEl = h("span", { id: "finality-lag" }, `${ago(status.latest_block_time_ms)} (latest block)`);
  const heightEl = h("span", { id: "height" }, fmt(status.height));
  const blocksEl = h("ol", { class: "rows", id: "blocks" });
  const producers = new Set(status.producers);
  replace(
    main,
    h("h1", {}, "Explorer"),
    search(),
    h(
      "dl",
      { class: "card facts" },
      h("dt", {}, "Chain"), h("dd", {}, status.chain_id),
      h("dt", {}, "Final height"), h("dd", {}, heightEl),
      h("dt", {}, "Finality lag"), h("dd", {}, lagEl),
      h("dt", {}, "Mempool"), h("dd", {}, `${fmt(status.mempool_size)} txs`),
      h("dt", {}, "Node"), h("dd", {}, `${status.moniker}${status.observer ? " (observer)" : ""}`),
      h("dt", {}, "Genesis"), h("dd", { class: "mono" }, short(status.genesis_hash, 16)),
    ),
    h("h2", {}, "Recent blocks"),
    blocksEl,
    h("h2", {}, "Producers"),
    h(
      "table",
      { class: "card", id: "producers" },
      h("tr", {}, h("th", {}, "producer"), h("th", {}, "weight"), h("th", {}, "missed"), h("th", {}, "")),
      (candidates?.candidates ?? status.producers.map((k) => ({ public_key: k }))).map((c) =>
        h(
          "tr",
          {},
          h("td", {}, c.member ?? link(`/explorer/accounts/${formatAddress(addressOf(unhex(c.public_key)))}`, short(c.public_key, 8))),
          h("td", {}, c.weight === undefined ? "" : fmt(c.weight)),
          h("td", {}, c.missed === undefined ? "" : `${c.missed} (epoch ${c.missed_epoch})`),
          h("td", {}, c.jailed ? "jailed" : producers.has(c.public_key) ? "producing" : "candidate"),
        ),
      ),
    ),
    h("h2", {}, "Peers"),
    h("ul", { class: "card mono small", id: "peers" }, status.peers.length ? status.peers.map((p) => h("li", {}, short(p, 16))) : h("li", { class: "muted" }, "no peer connected (a single node)")),
  );

  const rows = [];
  const addRow = (b, top = true) => {
    const row = h("li", { "data-height": b.height }, link(`/explorer/blocks/${b.height}`, `#${fmt(b.height)}`), ` · ${b.num_txs} txs · `, h("span", { class: "muted" }, time(b.time_ms)));
    if (top) blocksEl.prepend(row);
    else blocksEl.append(row);
    rows.push(row);
    while (blocksEl.children.length > RECENT) blocksEl.lastChild.remove();
  };
  const first = Math.max(1, status.height - RECENT + 1);
  const recent = await Promise.all(
    Array.from({ length: status.height - first + 1 }, (_, i) => api(`/v1/blocks/${status.height - i}?txs=false`).catch(() => null)),
  );
  for (const b of recent) if (b) addRow({ height: b.header.height, num_txs: b.num_txs, time_ms: b.header.time_ms }, false);

  // Live: one message per finalized block; the lag is how long after its time it was final.
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  let ws = null;
  let stopped = false;
  // Connections in a row that delivered nothing (a node at its feed cap opens and
  // closes them): the wait before the next grows with them (retryDelayMs).
  let failures = 0;
  const connect = (from) => {
    const sock = new WebSocket(`${scheme}://${location.host}/v1/blocks/ws?from=${from}`);
    ws = sock;
    let last = from;
    sock.onmessage = (m) => {
      if (!readableMessage(m.data)) return sock.close(CLOSE_UNREADABLE, "message too large");
      failures = 0;
      let msg;
      try {
        msg = JSON.parse(m.data);
      } catch {
        return;
      }
      if (msg.type !== "block" || msg.height <= last) return;
      last = msg.height;
      addRow(msg);
      heightEl.textContent = fmt(msg.height);
      lagEl.textContent = `${((Date.now() - msg.time_ms) / 1000).toFixed(1)} s (block ${msg.height} final after its time)`;
    };
    sock.onclose = (e) => {
      if (stopped) return;
      failures += 1;
      setTimeout(() => connect(last), retryDelayMs(failures, e.code));
    };
  };
  connect(status.height);
  return () => {
    stopped = true;
    ws?.close();
  };
}

export async function blockPage(main, heightText) {
  const height = Number(heightText);
  // A whole block's transaction list: the one answer past the default bound.
  const doc = await api(`/v1/blocks/${height}`, undefined, MAX_BLOCK_ANSWER_BYTES);
  // What the page shows of the header and its certificate is read from their encodings,
  // the bytes the certificate check covers, never from the node's description of them.
  let header = null;
  let commit = null;
  let unreadable = "";
  try {
    header = decodeHeader(unhex(doc.header?.encoded));
    if (doc.commit) commit = decodeCommit(unhex(doc.commit.encoded));
  } catch (err) {
    if (!isVerificationFailure(err)) throw err;
    unreadable = err.message;
  }
  const certEl = h("p", { id: "certificate-check", class: "muted" }, "Checking the certificate…");
  replace(
    main,
    h("p", {}, link("/explorer", "← Explorer")),
    h("h1", {}, `Block ${fmt(height)}`),
    header
      ? h(
          "dl",
          { class: "card facts" },
          h("dt", {}, "Time"), h("dd", {}, time(header.time_ms)),
          h("dt", {}, "Hash"), h("dd", { class: "mono" }, short(hex(header.hash), 16)),
          h("dt", {}, "Producer"), h("dd", { class: "mono" }, short(hex(header.producer), 12)),
          h("dt", {}, "State root"), h("dd", { class: "mono" }, short(hex(header.state_root), 16)),
          h("dt", {}, "Round"), h("dd", {}, header.round),
          h("dt", {}, "Transactions"), h("dd", {}, doc.num_txs),
        )
      : null,
    h("h2", {}, "Certificate"),
    h(
      "div",
      { class: "card" },
      commit ? h("p", {}, `${commit.signatures.length} precommits in round ${commit.round}`) : h("p", {}, "No certificate stored."),
      certEl,
      commit ? h("ul", { class: "mono small" }, commit.signatures.map((s) => h("li", {}, short(hex(s.validator), 16)))) : null,
    ),
    h("h2", {}, "Transactions"),
    // The certificate covers the header, which commits to the transactions through its tx
    // root, a tree over their encodings: a list of hashes cannot be checked against it, so
    // the list and its count are the node's word. Each transaction's page proves itself.
    h("p", { class: "muted small", id: "block-txs-trust" }, "The node's list and count, not verified here: open a transaction to verify that this block holds it."),
    h(
      "ol",
      { class: "rows", id: "block-txs" },
      doc.txs.length ? doc.txs.map((t) => h("li", { "data-tx": t.hash }, link(`/explorer/txs/${t.hash}`, short(t.hash, 12)), ` · ${t.type ?? "?"} · from `, t.sender ? link(`/explorer/accounts/${t.sender}`, short(t.sender, 10)) : "?")) : h("li", { class: "muted" }, "none"),
    ),
    h("p", {}, height > 1 ? link(`/explorer/blocks/${height - 1}`, "← previous") : null, " ", link(`/explorer/blocks/${height + 1}`, "next →")),
  );
  try {
    if (!header) throw new NotVerified(`the node's header cannot be read (${unreadable})`);
    await (await lightClient()).checkHeader(height, doc.header.encoded, doc.commit?.encoded);
    replace(certEl, "✓ verified here: more than 2/3 of this height's producers (derived from genesis) signed this header");
    certEl.className = "ok";
  } catch (err) {
    if (!isVerificationFailure(err) && !(err instanceof ApiError)) throw err;
    replace(certEl, `✗ not verified: ${err.message}`);
    certEl.className = "error";
  }
}

// What the transaction page says of a node's 404 for a transaction (GET /v1/txs/{hash}):
// `not_found` from a node that holds every block, so it was never included (up to its
// head); `maybe_pruned` from one that pruned old blocks (or started from a state sync),
// whose tx index went with them, so a block it no longer holds may have held it.
export function unknownTxText(code) {
  if (code === "maybe_pruned") {
    return "This node knows no such transaction in the blocks it keeps, and it does not keep the oldest blocks (it prunes them, or joined the chain by a state sync): one of those may hold it. An archive node (one that keeps every block) can tell.";
  }
  if (code === "not_found") return "This node knows no such transaction: it is neither pending nor in any block (this node keeps every block).";
  return "This node knows no such transaction (neither pending nor in a block it keeps).";
}

export async function txPage(main, hash) {
  let doc;
  try {
    doc = await api(`/v1/txs/${hash}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      return replace(main, h("h1", {}, "Transaction"), errorBox(unknownTxText(err.code)));
    }
    throw err;
  }
  const outcomeEl = h("dd", { id: "tx-outcome" });
  const feeEl = h("dd", {});
  const eventsEl = h("div", {});
  // The receipt shown: the node's until its proof holds, then the proven one.
  const show = async (r) => {
    outcomeEl.className = r?.code === "ok" ? "ok" : "error";
    replace(outcomeEl, r ? (r.code === "ok" ? "ok" : `${r.code}: ${await plain(r.code, r.message)}`) : "no receipt");
    replace(feeEl, r ? fmt(r.fee) : "");
    replace(
      eventsEl,
      r && r.events.length
        ? [h("h2", {}, "Events"), h("ol", { class: "rows small" }, r.events.map((e) => h("li", {}, h("b", {}, e.kind), " ", e.attrs.map(([k, v]) => `${k}=${v.length > 24 ? short(v, 12) : v}`).join(" "))))]
        : null,
    );
  };
  const asShown = (r) => r && { ...r, events: r.events.map((e) => ({ kind: e.kind, attrs: Object.entries(e.attrs) })) };
  await show(asShown(doc.receipt));
  const proofEl = h("p", { id: "tx-proof", class: "muted" }, "Checking the proof…");
  replace(
    main,
    h("p", {}, link("/explorer", "← Explorer")),
    h("h1", {}, "Transaction"),
    h("p", { class: "mono small" }, hash),
    doc.status === "pending"
      ? h("p", { class: "muted" }, "Pending: not in a block yet.")
      : [
          h(
            "dl",
            { class: "card facts" },
            h("dt", {}, "Block"), h("dd", {}, link(`/explorer/blocks/${doc.height}`, `#${fmt(doc.height)}`), ` (position ${doc.index})`),
            h("dt", {}, "Outcome"), outcomeEl,
            h("dt", {}, "Fee"), feeEl,
          ),
          proofEl,
        ],
    eventsEl,
  );
  if (doc.status === "pending") return;
  try {
    const proven = await (await lightClient()).provenTx(hash);
    // The block and receipt shown are the proven ones, whatever the node said above.
    if (proven.header.height !== doc.height) throw new NotVerified(`the node named block ${doc.height}, its proof is of block ${proven.header.height}`);
    await show({ ...proven.receipt, events: proven.receipt.events.map((e) => ({ kind: e.kind, attrs: e.attrs.map((a) => [a.key, a.value]) })) });
    replace(proofEl, `✓ verified here: block ${fmt(proven.header.height)}, certified by more than 2/3 of its producers (derived from genesis), holds this transaction, and its receipt says ${proven.receipt.code}`);
    proofEl.className = "ok";
    proofEl.dataset.verified = "yes";
  } catch (err) {
    if (!isVerificationFailure(err) && !(err instanceof ApiError)) throw err;
    replace(proofEl, `✗ not verified: ${err.message} (the outcome above is the node's word)`);
    proofEl.className = "error";
    proofEl.dataset.verified = "no";
  }
}

export async function accountPage(main, address) {
  const [acct, roles, merchant] = await Promise.all([
    api(`/v1/accounts/${address}`),
    api(`/v1/roles/${address}`).catch(() => null),
    api(`/v1/merchants/${address}`).catch(() => null),
  ]);
  replace(
    main,
    h("p", {}, link("/explorer", "← Explorer")),
    h("h1", {}, merchant ? merchant.merchant.name : "Account"),
    h("p", { class: "mono small" }, address),
    h(
      "dl",
      { class: "card facts" },
      h("dt", {}, "Balance"), h("dd", {}, fmt(acct.balance)),
      (acct.balances ?? []).filter((b) => Number(b.balance) > 0).map((b) => [h("dt", {}, b.currency), h("dd", {}, units(b.balance, b.decimals))]),
      h("dt", {}, "Nonce"), h("dd", {}, acct.nonce),
      h("dt", {}, "Roles"), h("dd", {}, roles?.roles.length ? roles.roles.join(", ") : "none"),
      merchant ? [h("dt", {}, "Merchant"), h("dd", {}, `${merchant.merchant.status}, rated ${(merchant.merchant.rating_avg_x100 / 100).toFixed(2)} (${merchant.merchant.rating_count})`)] : null,
    ),
    // Read without proofs (the wallet proves balances): the node's word, said as such.
    h("p", { class: "muted small", id: "account-trust" }, `as of block ${acct.height}, the node's word: not verified here (the wallet verifies balances)`),
  );
}
