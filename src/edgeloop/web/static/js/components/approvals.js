// Decisions waiting for a person's approval (closed-loop actions, docs/actions.md), shown at the top of the phone
// inbox: what the policy wants to do to which machine, why, how many approvals it has, until when; Approve and
// Reject in one tap for operators. A second approval must come from another person: the API refuses the same one
// twice and the card says so.

import { api, isAbort } from "../api.js";
import { syncKeyed } from "./list.js";
import { toast } from "./toast.js";
import { assetLabel } from "./widgets.js";
import { append, h, setText } from "../dom.js";
import { fmtAgo, fmtTime, isoAttr } from "../format.js";
import { session } from "../session.js";

const ROLES = ["viewer", "technician", "operator", "admin"];

/** Whether the signed-in person may approve (an operator or more; without sign-in the API decides). */
export function canApprove() {
  return !session.user || ROLES.indexOf(session.user.role) >= ROLES.indexOf("operator");
}

function renderCard(card, d, refresh) {
  card._sig = JSON.stringify(d);
  card.dataset.decisionId = d.id;
  card.className = "incident-card approval-card route-urgent";
  const errorBox = h("p", { class: "incident-error", role: "alert", dataset: { testid: "approval-error" }, hidden: true });
  const buttons = [];
  const act = async (verb) => {
    for (const b of buttons) b.disabled = true;
    card.classList.add("is-busy");
    errorBox.hidden = true;
    try {
      const updated = await api(`/decisions/${encodeURIComponent(d.id)}/${verb}`, { method: "POST", body: {} });
      toast(verb === "reject" ? `Rejected: ${d.action} on ${assetLabel(d.asset)}`
        : updated.state === "awaiting_approval" ? `Approved (${updated.approvals} of ${updated.needed}): waiting for another person`
          : `Approved: ${d.action} on ${assetLabel(d.asset)} is ${updated.state}`, "ok");
      card.classList.remove("is-busy");
      renderCard(card, updated, refresh);
      refresh();
    } catch (e) {
      card.classList.remove("is-busy");
      for (const b of buttons) b.disabled = false;
      if (isAbort(e)) return;
      setText(errorBox, `Could not ${verb}: ${e.message}`);
      errorBox.hidden = false;
    }
  };
  if (canApprove() && d.state === "awaiting_approval") {
    buttons.push(
      h("button", { type: "button", class: "btn btn-primary btn-touch", dataset: { testid: "approval-approve" }, onclick: () => act("approve") }, "Approve"),
      h("button", { type: "button", class: "btn btn-secondary btn-touch", dataset: { testid: "approval-reject" }, onclick: () => act("reject") }, "Reject"));
  }
  card.replaceChildren();
  append(card, [
    h("div", { class: "incident-head" },
      h("span", { class: "incident-kind" }, `${d.policy} v${d.policy_version}`),
      h("span", { class: "status-pill", dataset: { testid: "approval-count" } }, `${d.approvals} of ${d.needed} approvals`)),
    h("div", { class: "incident-title", dataset: { testid: "approval-action" } }, `${d.action} on ${assetLabel(d.asset)}${d.device ? ` (${d.device})` : ""}`),
    h("dl", { class: "incident-meta" },
      h("div", null, h("dt", null, "Why"), h("dd", null, d.cause)),
      h("div", null, h("dt", null, "Decided"), h("dd", null,
        h("time", { datetime: isoAttr(d.created_ms), title: fmtTime(d.created_ms) }, fmtAgo(d.created_ms)))),
      h("div", null, h("dt", null, "Lapses"), h("dd", null, fmtTime(d.expires_ms)))),
    errorBox,
    buttons.length ? h("div", { class: "incident-actions" }, buttons) : null]);
  return card;
}

/** The approvals section: polls with the inbox (``load`` is called on each of its turns). */
export function approvalsSection(signal) {
  const list = h("div", { class: "incident-list", dataset: { testid: "approval-list" } });
  const heading = h("h2", { class: "section-title" }, "Waiting for approval");
  const section = h("section", { class: "approvals", dataset: { testid: "approvals" }, hidden: true }, heading, list);
  let refresh = () => {};
  const load = async () => {
    let waiting;
    try {
      waiting = await api("/decisions?state=awaiting_approval&limit=100", { signal });
    } catch (e) {
      if (isAbort(e)) throw e;
      return; // the inbox shows its own errors; approvals come back on the next turn
    }
    section.hidden = !waiting.length;
    setText(heading, `Waiting for approval (${waiting.length})`);
    syncKeyed(list, waiting, {
      key: (d) => d.id,
      create: () => h("article", { dataset: { testid: "approval-card" } }),
      update: (card, d) => { if (!card.classList.contains("is-busy") && card._sig !== JSON.stringify(d)) renderCard(card, d, refresh); },
      keep: (card) => card.classList.contains("is-busy"),
    });
  };
  return { section, load, onRefresh: (fn) => { refresh = fn; } };
}
