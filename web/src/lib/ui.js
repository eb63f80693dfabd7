// A few DOM helpers (no framework: the pages are small and mostly text).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    // Through the CSSOM: the page's CSP allows no inline style attribute.
    else if (k === "style") el.style.cssText = v;
    else if (k === "html") el.innerHTML = v; // only for markup the page built itself
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const fmt = (n) => (typeof n === "number" || typeof n === "bigint" ? n.toLocaleString("en-US") : String(n));
// An integer amount of a currency's smallest unit, shown with its decimals (exact for
// any size: BigInt arithmetic).
export function units(amount, decimals = 0) {
  let n;
  try {
    n = BigInt(amount);
  } catch {
    return String(amount); // a node's figure that is no integer, shown as it came
  }
  const d = Number(decimals);
  if (!Number.isSafeInteger(d) || d <= 0) return n.toLocaleString("en-US");
  const base = 10n ** BigInt(d);
  return `${(n / base).toLocaleString("en-US")}.${(n % base).toString().padStart(d, "0")}`;
}
export const short = (text, n = 10) => (text && text.length > n + 4 ? `${text.slice(0, n)}…${text.slice(-4)}` : text);
export const time = (ms) => new Date(Number(ms)).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");

export function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - Number(ms)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

export function countdown(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const mm = String(Math.floor(s / 60)).padStart(2, "0");
  const ss = String(s % 60).padStart(2, "0");
  return s >= 3600 ? `${Math.floor(s / 3600)}:${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

export function link(href, ...children) {
  return h("a", { href, "data-link": true }, ...children);
}

export function errorBox(text) {
  return h("p", { class: "error", role: "alert" }, text);
}

// Client-side navigation: the router (main.js) renders on popstate.
export function go(path) {
  history.pushState(null, "", path);
  window.dispatchEvent(new PopStateEvent("popstate"));
  window.scrollTo(0, 0);
}
