// The shopper's wallet: a key made here, its balance proven against a certified header,
// the shipping address one-tap orders seal to the merchant.
import { renderSVG } from "uqr";
import { api, genesis } from "../lib/api.js";
import { concat, fields, unpack } from "../lib/codec.js";
import { parseAddress } from "../lib/crypto.js";
import { isVerificationFailure, LightClient } from "../lib/light.js";
import { ACCOUNT } from "../lib/records.js";
import { errorBox, fmt, go, h, replace } from "../lib/ui.js";
import { createWallet, current, forget, lock, setShipTo, stored, unlock } from "../lib/wallet.js";

export async function walletPage(main) {
  const params = new URLSearchParams(location.search);
  const next = params.get("next");
  const w = current();
  if (!w) return replace(main, stored() ? unlockForm(main) : createForm(main));
  const balanceEl = h("div", { id: "balance", class: "card" }, h("p", { class: "muted" }, "Reading your balance…"));
  const saved = h("p", { class: "muted" });
  const ship = h("textarea", { id: "ship-to", rows: 3, maxlength: 400, placeholder: "Name, street, city, postcode" }, w.shipTo);
  replace(
    main,
    h("h1", {}, "Your wallet"),
    balanceEl,
    h(
      "section",
      { class: "card" },
      h("h2", {}, "Your address"),
      h("p", { class: "mono", id: "my-address" }, w.address),
      h("div", { class: "qr", html: renderSVG(w.address) }),
      h("p", { class: "muted" }, "Give it to whoever funds you. Your key never leaves this browser."),
    ),
    h(
      "form",
      {
        class: "card",
        onsubmit: (e) => {
          e.preventDefault();
          setShipTo(ship.value.trim());
          if (next) go(next);
          else replace(saved, "Saved (encrypted in this browser).");
        },
      },
      h("h2", {}, "Shipping address"),
      h("p", { class: "muted" }, "Sealed to the merchant's key when you order: only they can read it."),
      ship,
      h("button", { type: "submit", id: "save-ship" }, next ? "Save and go back" : "Save"),
      saved,
    ),
    h("p", {}, h("button", { class: "secondary", onclick: () => (lock(), walletPage(main)) }, "Lock"), " ", h("button", { class: "secondary danger", onclick: () => confirm("Forget this key? Funds on it are lost without it.") && (forget(), walletPage(main)) }, "Forget key")),
  );
  showBalance(balanceEl, w.address);
}

async function showBalance(el, address) {
  try {
    const doc = await api(`/v1/accounts/${address}?proof=true`);
    const g = await genesis();
    // The key is the account's own (0x01 || address), never the one the node names.
    const key = concat(Uint8Array.of(0x01), parseAddress(address));
    let balance = 0;
    let verified = false;
    let reason = "";
    // The genesis trusted is the one hashed here, not the hash the node names.
    let trusted = null;
    try {
      const light = new LightClient(api, g);
      trusted = light.genesisHash;
      const { value } = await light.provenValue(key, doc);
      if (value !== null) balance = fields(unpack(value), ACCOUNT, "Account").balance;
      verified = balance === doc.balance;
      if (!verified) reason = "the node's figure differs from the proven one";
    } catch (err) {
      if (!isVerificationFailure(err)) throw err;
      reason = err.message;
    }
    replace(
      el,
      h("p", { class: "muted" }, "Balance"),
      h("p", { class: "big", id: "balance-amount" }, fmt(verified ? balance : doc.balance)),
      verified
        ? h("p", { class: "ok", id: "balance-proof" }, `✓ verified: proven at block ${doc.height} under a certified header`)
        : h("p", { class: "error", id: "balance-proof" }, `not verified (${reason})`),
      trusted ? h("p", { class: "muted small" }, `trusting genesis ${trusted.slice(0, 16)}…`) : null,
    );
  } catch (err) {
    replace(el, errorBox(`Could not read the balance: ${err.message}`));
  }
}

function createForm(main) {
  const pass = h("input", { type: "password", id: "passphrase", autocomplete: "new-password", placeholder: "Passphrase (8 characters or more)", required: true });
  const again = h("input", { type: "password", id: "passphrase2", autocomplete: "new-password", placeholder: "Passphrase again", required: true });
  const msg = h("p", {});
  return h(
    "form",
    {
      class: "card",
      onsubmit: async (e) => {
        e.preventDefault();
        if (pass.value !== again.value) return replace(msg, errorBox("The two passphrases differ."));
        replace(msg, h("span", { class: "muted" }, "Making your key…"));
        try {
          await createWallet(pass.value);
          walletPage(main);
        } catch (err) {
          replace(msg, errorBox(err.message));
        }
      },
    },
    h("h1", {}, "Make your key"),
    h("p", { class: "muted" }, "Your key is made in this browser and kept here, encrypted under your passphrase. Nobody else holds a copy: if you lose the passphrase, the key is gone."),
    pass,
    again,
    h("button", { type: "submit", id: "create-key" }, "Make my key"),
    msg,
  );
}

function unlockForm(main) {
  const pass = h("input", { type: "password", id: "passphrase", autocomplete: "current-password", placeholder: "Passphrase", required: true });
  const msg = h("p", {});
  return h(
    "form",
    {
      class: "card",
      onsubmit: async (e) => {
        e.preventDefault();
        replace(msg, h("span", { class: "muted" }, "Unlocking…"));
        try {
          await unlock(pass.value);
          walletPage(main);
        } catch (err) {
          replace(msg, errorBox(err.message));
        }
      },
    },
    h("h1", {}, "Unlock your key"),
    h("p", { class: "mono small" }, stored().address),
    pass,
    h("button", { type: "submit", id: "unlock" }, "Unlock"),
    msg,
  );
}
