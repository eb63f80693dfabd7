// Which chain this browser trusts: the genesis hash the consortium gave the user out of
// band (on paper, in person, on its own site), against the genesis the node serves,
// hashed here. Every proof the pages check starts from this document.
import { genesis } from "../lib/api.js";
import { hex, unhex } from "../lib/codec.js";
import { Domain, hashBytes } from "../lib/crypto.js";
import { trustedGenesis } from "../lib/light.js";
import { enterGenesisHash, forgetGenesisHash, lightClient } from "../lib/trust.js";
import { errorBox, h, replace } from "../lib/ui.js";

export async function trustPage(main) {
  const entered = trustedGenesis();
  let served = "";
  try {
    served = hex(hashBytes(Domain.GENESIS, unhex((await genesis()).encoded)));
  } catch {
    served = "";
  }
  let light = null;
  let reason = "";
  try {
    light = await lightClient();
  } catch (err) {
    reason = err.message;
  }
  const input = h("input", { id: "genesis-hash", class: "mono", autocomplete: "off", spellcheck: "false", placeholder: "64 hexadecimal digits", required: true });
  const msg = h("p", {});
  replace(
    main,
    h("h1", {}, "The chain you trust"),
    verdict(entered, light, reason),
    h(
      "dl",
      { class: "card facts" },
      h("dt", {}, "You entered"), h("dd", { class: "mono small", id: "entered-genesis" }, entered ?? "nothing yet"),
      h("dt", {}, "This node's"), h("dd", { class: "mono small", id: "node-genesis" }, served || "unreadable"),
      light ? [h("dt", {}, "Chain"), h("dd", {}, light.chainId)] : null,
    ),
    h(
      "form",
      {
        class: "card",
        onsubmit: (e) => {
          e.preventDefault();
          try {
            enterGenesisHash(input.value);
          } catch (err) {
            return replace(msg, errorBox(err.message));
          }
          trustPage(main);
        },
      },
      h("h2", {}, "Enter the genesis hash"),
      h("p", { class: "muted small" }, "Balances, items and blocks are proven from the chain's genesis document. Paste the genesis hash your consortium gave you: this browser then trusts only a node whose genesis hashes to it, and says so plainly when it does not."),
      input,
      h("button", { type: "submit", id: "trust-genesis" }, "Trust this hash"),
      msg,
    ),
    entered
      ? h("p", {}, h("button", { class: "secondary", id: "forget-genesis", onclick: () => (forgetGenesisHash(), trustPage(main)) }, "Forget the hash I entered"))
      : null,
  );
}

function verdict(entered, light, reason) {
  if (entered && light) {
    return h("div", { class: "verdict ok", id: "genesis-verdict", "data-verified": "yes" }, h("strong", {}, "✓ matches"), h("p", {}, "This node's genesis document hashes to the hash you entered: what the pages prove, they prove from it."));
  }
  if (light) {
    return h("div", { class: "verdict", id: "genesis-verdict", "data-verified": "pinned" }, h("strong", {}, "No hash entered"), h("p", {}, `This browser trusts the first genesis it saw for ${light.chainId} (${light.genesisHash.slice(0, 16)}…). Enter the hash you were given to be sure it is the consortium's.`));
  }
  return h(
    "div",
    { class: "verdict bad", id: "genesis-verdict", "data-verified": "no" },
    h("strong", {}, entered ? "✗ does not match: not verified" : "✗ not verified"),
    h("p", {}, `${reason || "the node's genesis cannot be read"}. Balances, items and blocks from this node read "not verified", and your wallet signs nothing on it.`),
  );
}
