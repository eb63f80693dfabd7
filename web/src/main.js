// The web app the node serves at / : routes are paths, pages render into <main>.
import { current, onWalletChange, stored } from "./lib/wallet.js";
import { go, h, replace } from "./lib/ui.js";
import { homePage } from "./pages/home.js";
import { livePage } from "./pages/live.js";
import { walletPage } from "./pages/wallet.js";
import { itemPage } from "./pages/item.js";
import { trustPage } from "./pages/trust.js";
import { explorerPage, blockPage, txPage, accountPage } from "./pages/explorer.js";

const ROUTES = [
  [/^\/$/, homePage],
  [/^\/live\/(\d{1,19})$/, livePage],
  [/^\/wallet$/, walletPage],
  [/^\/trust$/, trustPage],
  // GS1 Digital Link: the path a code on the package points to.
  [/^\/01\/(\d{8,14})\/21\/([^/]{1,20})$/, itemPage],
  [/^\/explorer$/, explorerPage],
  [/^\/explorer\/blocks\/(\d{1,19})$/, blockPage],
  [/^\/explorer\/txs\/([0-9a-f]{64})$/, txPage],
  [/^\/explorer\/accounts\/(ll1[0-9a-z]{6,90})$/, accountPage],
];

const main = document.querySelector("main");
let cleanup = null;

async function render() {
  cleanup?.();
  cleanup = null;
  const path = decodeURIComponent(location.pathname);
  for (const [pattern, page] of ROUTES) {
    const m = pattern.exec(path);
    if (!m) continue;
    replace(main, h("p", { class: "muted" }, "Loading…"));
    try {
      const done = await page(main, ...m.slice(1));
      // A page that holds a feed or a timer returns what stops it.
      cleanup = typeof done === "function" ? done : null;
    } catch (err) {
      replace(main, h("p", { class: "error", role: "alert" }, `This page could not load: ${err.message}`));
    }
    navHighlight(path);
    return;
  }
  replace(main, h("h1", {}, "Not found"), h("p", {}, "There is no page at this address."));
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-link]");
  if (!a || e.metaKey || e.ctrlKey) return;
  e.preventDefault();
  go(a.getAttribute("href"));
});
window.addEventListener("popstate", render);

function navHighlight(path) {
  for (const a of document.querySelectorAll("nav a")) {
    const href = a.getAttribute("href");
    a.classList.toggle("on", href === "/" ? path === "/" : path.startsWith(href));
  }
}

function walletChip() {
  const chip = document.getElementById("wallet-chip");
  const w = current();
  chip.textContent = w ? "● unlocked" : stored() ? "locked" : "no key";
  chip.className = w ? "chip ok" : "chip";
}
onWalletChange(walletChip);
walletChip();
render();
