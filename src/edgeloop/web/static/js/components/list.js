// Keyed list reconciliation: the one place where a polled list is merged into the DOM.

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
