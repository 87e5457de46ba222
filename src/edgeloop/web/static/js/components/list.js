// Polled lists: loading one (its error and empty states) and keyed reconciliation, the one place where a polled
// list is merged into the DOM.

import { api, isAbort } from "../api.js";
import { $ } from "../dom.js";
import { stateBox } from "./widgets.js";

/**
 * The fetch of a polled list page, as `poll` calls it: `load(signal)` returns the list at `path`. Until the first
 * answer, a failure shows in `body` (`unavailable` for a 503 when given, else the error, "Retrying…") and the
 * error is thrown again (`poll` backs off); the first answer puts `table` in `body`. Then the table is hidden
 * while the list is empty, and the empty state (`empty`: title and hint) shows beside it.
 */
export function listLoader({ path, body, table, noun, empty, unavailable = null }) {
  let loaded = false;
  return async (signal) => {
    let list;
    try {
      list = await api(path, { signal });
    } catch (e) {
      if (!loaded && !isAbort(e)) {
        const why = e.status === 503 && unavailable ? unavailable : `${e.message}. Retrying…`;
        body.replaceChildren(stateBox("error", `Could not load ${noun}.`, why));
      }
      throw e;
    }
    if (!loaded) {
      loaded = true;
      body.replaceChildren(table);
    }
    table.hidden = !list.length;
    if (!list.length && !$(".state-empty", body)) {
      body.append(stateBox("empty", empty[0], empty[1]));
    } else if (list.length) {
      $(".state-empty", body)?.remove();
    }
    return list;
  };
}

/**
 * Make `parent`'s children one element per item, in the order of `items`, keeping the element of each key from
 * the last call, so that polling never rebuilds what the user is looking at (focus, hover, a half-typed form stay)
 * and an element is moved only when the order really changed.
 *
 * key(item): the item's identity. create(item): a new, empty element for a key not shown yet. update(el, item):
 * brings the element up to date (also right after create; it may leave a busy element alone). An element whose
 * key is gone is removed, unless keep(el) (an action on it is under way).
 */
export function syncKeyed(parent, items, { key, create, update, keep = () => false }) {
  const existing = new Map();
  for (const el of parent.children) if (el._key !== undefined) existing.set(el._key, el);
  let prev = null;
  for (const item of items) {
    const k = key(item);
    let el = existing.get(k);
    if (el) {
      existing.delete(k);
    } else {
      el = create(item);
      el._key = k;
    }
    update(el, item);
    const want = prev ? prev.nextSibling : parent.firstChild;
    if (want !== el) parent.insertBefore(el, want);
    prev = el;
  }
  for (const el of existing.values()) if (!keep(el)) el.remove();
}
