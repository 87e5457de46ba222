// Small widgets shared by the pages: status badges, loading/empty/error boxes, segmented buttons.

import { h } from "../dom.js";
import { state } from "../state.js";

export function badge(status, text, extraClass = "") {
  return h("span", { class: `badge badge-${status} ${extraClass}`.trim() }, h("span", { class: "dot", "aria-hidden": "true" }), text ?? status);
}

export function stateBox(kind, title, detail) {
  return h("div", { class: `state state-${kind}` }, h("strong", null, title), detail ? h("span", null, detail) : null);
}

export function segmented(label, options, active, onSelect) {
  return h("div", { class: "segmented", role: "group", "aria-label": label },
    options.map((o) => h("button", {
      type: "button",
      class: o.key === active ? "is-active" : "",
      "aria-pressed": o.key === active ? "true" : "false",
      dataset: { key: o.key },
      onclick: () => onSelect(o.key),
    }, o.label)));
}

export function assetLabel(id) {
  const a = state.assets.get(id);
  return a && a.name ? a.name : id;
}
