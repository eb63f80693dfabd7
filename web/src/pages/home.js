import { go, h, link, replace } from "../lib/ui.js";

export async function homePage(main) {
  const session = h("input", { name: "session", inputmode: "numeric", placeholder: "Session number", required: true });
  const gtin = h("input", { name: "gtin", inputmode: "numeric", placeholder: "GTIN (the barcode digits)", required: true });
  const serial = h("input", { name: "serial", placeholder: "Serial number", required: true });
  replace(
    main,
    h("h1", {}, "LiveLedger"),
    h("p", { class: "muted" }, "Watch live selling, buy with one tap, and check where an item comes from."),
    h(
      "form",
      { class: "card", onsubmit: (e) => (e.preventDefault(), go(`/live/${session.value.trim()}`)) },
      h("h2", {}, "Join a live session"),
      session,
      h("button", { type: "submit" }, "Watch"),
    ),
    h(
      "form",
      {
        class: "card",
        onsubmit: (e) => {
          e.preventDefault();
          go(`/01/${gtin.value.trim()}/21/${encodeURIComponent(serial.value.trim())}`);
        },
      },
      h("h2", {}, "Check an item"),
      h("p", { class: "muted" }, "Or scan the code on the package with your camera."),
      gtin,
      serial,
      h("button", { type: "submit" }, "Check"),
    ),
    h("p", {}, link("/wallet", "Your wallet"), " · ", link("/explorer", "Explorer"), " · ", link("/trust", "The chain you trust")),
  );
}
