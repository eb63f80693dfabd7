// The shopper's wallet: a key made here, its balance proven against a certified header,
// the shipping address one-tap orders seal to the merchant.
import { renderSVG } from "uqr";
import { api } from "../lib/api.js";
import { provenBalances } from "../lib/balances.js";
import { isVerificationFailure } from "../lib/light.js";
import { lightClient } from "../lib/trust.js";
import { errorBox, fmt, go, h, link, replace, units } from "../lib/ui.js";
import { createWallet, current, exportKey, forget, importKey, lock, setShipTo, stored, unlock } from "../lib/wallet.js";

export async function walletPage(main) {
  const params = new URLSearchParams(location.search);
  const next = params.get("next");
  const w = current();
  if (!w) return replace(main, stored() ? unlockForm(main) : [createForm(main), importForm(main)]);
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
    exportCard(),
    h("p", {}, h("button", { class: "secondary", onclick: () => (lock(), walletPage(main)) }, "Lock"), " ", h("button", { class: "secondary danger", onclick: () => confirm("Forget this key? Funds on it are lost without it.") && (forget(), walletPage(main)) }, "Forget key")),
  );
  showBalance(balanceEl, w.address);
}

async function showBalance(el, address) {
  try {
    const doc = await api(`/v1/accounts/${address}?proof=true`);
    // The genesis trusted is the one hashed here, not the hash the node names.
    let light = null;
    let failure = "";
    try {
      light = await lightClient();
    } catch (err) {
      if (!isVerificationFailure(err)) throw err;
      failure = err.message;
    }
    // Without a trusted genesis nothing is proven: said once, below, in full.
    const { native, list, currencies } = await provenBalances(light, address, doc, "the genesis is not trusted");
    const proofLine = (b, id) =>
      b.verified
        ? h("p", { class: "ok small", id }, `✓ verified: proven at block ${doc.height} under a certified header`)
        : h("p", { class: "error small", id }, `not verified (${b.reason})`);
    replace(
      el,
      h("p", { class: "muted" }, "Balance"),
      h("p", { class: native.verified ? "big" : "big unproven", id: "balance-amount" }, fmt(native.verified ? native.amount : doc.balance)),
      proofLine(native, "balance-proof"),
      currencies.length
        ? h(
            "ul",
            { class: "balances", id: "currency-balances" },
            currencies.map((b) =>
              h(
                "li",
                { "data-currency": b.currency, "data-verified": b.verified ? "yes" : "no" },
                h("span", { class: b.verified ? "amount" : "amount unproven" }, `${units(b.amount, b.decimals)} ${b.currency}`),
                b.verified ? h("span", { class: "ok small proof" }, "✓ verified") : h("span", { class: "error small proof" }, `not verified (${b.reason})`),
              ),
            ),
          )
        : null,
      list.verified
        ? h("p", { class: "muted small", id: "currency-list" }, currencies.length ? "Every currency is listed (the list is proven too)." : "No other currency is issued on this chain (proven).")
        : h("p", { class: "error small", id: "currency-list" }, `not verified: the list of currencies (${list.reason})`),
      light
        ? h("p", { class: "muted small", id: "genesis-line" }, `trusting genesis ${light.genesisHash.slice(0, 16)}… `, link("/trust", light.entered ? "(the hash you entered)" : "· enter the hash you were given"))
        : h("p", { class: "error small", id: "genesis-line" }, `✗ No genesis is trusted: ${failure}. `, link("/trust", "Check the genesis hash")),
    );
  } catch (err) {
    replace(el, errorBox(`Could not read the balance: ${err.message}`));
  }
}

// The key as a file to keep (still sealed under its passphrase), for another browser.
function exportCard() {
  const out = h("div", {});
  return h(
    "section",
    { class: "card" },
    h("h2", {}, "Move your key"),
    h("p", { class: "muted small" }, "The file holds your key sealed under your passphrase: import it in another browser with the same passphrase. Keep it as you would the passphrase's paper."),
    h(
      "button",
      {
        class: "secondary",
        id: "export-key",
        onclick: () => {
          const text = exportKey();
          const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
          const name = `liveledger-key-${stored().address.slice(0, 12)}.json`;
          replace(
            out,
            h("textarea", { id: "exported-key", class: "mono small", rows: 6, readonly: true }, text),
            h("p", {}, h("a", { href: url, download: name, id: "download-key" }, `Save ${name}`)),
          );
        },
      },
      "Export key",
    ),
    out,
  );
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

// A key exported from another browser: the file (or its text) and its passphrase.
function importForm(main) {
  const text = h("textarea", { id: "import-text", class: "mono small", rows: 4, placeholder: "Paste the exported key here, or choose its file" });
  const file = h("input", {
    type: "file",
    id: "import-file",
    accept: ".json,application/json",
    onchange: async () => {
      const f = file.files?.[0];
      if (f) text.value = await f.text();
    },
  });
  const pass = h("input", { type: "password", id: "import-passphrase", autocomplete: "current-password", placeholder: "Its passphrase", required: true });
  const msg = h("p", {});
  return h(
    "form",
    {
      class: "card",
      id: "import-form",
      onsubmit: async (e) => {
        e.preventDefault();
        replace(msg, h("span", { class: "muted" }, "Opening the key…"));
        try {
          await importKey(text.value, pass.value);
          await walletPage(main);
          window.scrollTo(0, 0);
        } catch (err) {
          replace(msg, errorBox(err.message));
        }
      },
    },
    h("h2", {}, "Already have a key?"),
    h("p", { class: "muted small" }, "Import the key you exported from another browser."),
    file,
    text,
    pass,
    h("button", { type: "submit", id: "import-key" }, "Import my key"),
    msg,
  );
}
