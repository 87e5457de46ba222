// The sign-in form: POST /api/v1/auth/token, with the server's refusals (wrong password, rate limit) shown at
// the form.

import { API, detailText } from "./api.js";
import { $, h, setText } from "./dom.js";
import { fmtClock, fmtDuration } from "./format.js";
import { session } from "./session.js";

/** Retry-After (seconds or an HTTP date) -> whole seconds, or null. */
function retryAfterSeconds(value) {
  if (!value) return null;
  const n = Number(value);
  if (Number.isFinite(n)) return Math.max(1, Math.ceil(n));
  const at = Date.parse(value);
  return Number.isFinite(at) ? Math.max(1, Math.ceil((at - Date.now()) / 1000)) : null;
}

/** Replace the page with the sign-in form; onSignedIn() shows the dashboard once the server issued a token. */
export function showLogin({ notice = null, noticeKind = "warn", onSignedIn }) {
  document.body.dataset.auth = "signed-out";
  document.title = "Sign in · EdgeLoop";
  for (const a of document.querySelectorAll(".mainnav a")) {
    a.classList.remove("is-active");
    a.removeAttribute("aria-current");
  }
  const errorBox = h("div", { class: "login-error", id: "login-error", role: "alert", dataset: { testid: "login-error" }, hidden: true });
  const user = h("input", {
    id: "login-username", name: "username", type: "text", class: "input", autocomplete: "username",
    autocapitalize: "none", spellcheck: "false", required: true, maxlength: "200", dataset: { testid: "login-username" },
  });
  const pass = h("input", {
    id: "login-password", name: "password", type: "password", class: "input", autocomplete: "current-password",
    required: true, maxlength: "1000", dataset: { testid: "login-password" },
  });
  const submit = h("button", { type: "submit", class: "btn btn-primary login-submit", dataset: { testid: "login-submit" } }, "Sign in");
  let lockTimer = null;

  const showError = (text, fields = []) => {
    setText(errorBox, text);
    errorBox.hidden = false;
    for (const f of [user, pass]) {
      if (fields.includes(f)) {
        f.setAttribute("aria-invalid", "true");
        f.setAttribute("aria-describedby", "login-error");
      } else {
        f.removeAttribute("aria-invalid");
        f.removeAttribute("aria-describedby");
      }
    }
  };

  const lockFor = (seconds) => {
    clearInterval(lockTimer);
    const until = Date.now() + seconds * 1000;
    const tick = () => {
      const left = Math.ceil((until - Date.now()) / 1000);
      if (left <= 0 || !form.isConnected) {
        clearInterval(lockTimer);
        submit.disabled = false;
        setText(submit, "Sign in");
        return;
      }
      submit.disabled = true;
      setText(submit, `Try again in ${left} s`);
    };
    tick();
    lockTimer = setInterval(tick, 1000);
  };

  const onSubmit = async (ev) => {
    ev.preventDefault();
    if (submit.disabled) return;
    const username = user.value.trim();
    if (!username || !pass.value) {
      showError("Enter your username and password.", [!username ? user : pass]);
      (!username ? user : pass).focus();
      return;
    }
    submit.disabled = true;
    form.setAttribute("aria-busy", "true");
    setText(submit, "Signing in…");
    let res = null;
    let data = null;
    try {
      res = await fetch(`${API}/auth/token`, {
        method: "POST",
        headers: { Accept: "application/json", "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ grant_type: "password", username, password: pass.value }),
        cache: "no-store",
      });
      try {
        data = await res.json();
      } catch {
        data = null;
      }
    } catch {
      res = null;
    }
    form.removeAttribute("aria-busy");
    submit.disabled = false;
    setText(submit, "Sign in");
    if (res && res.ok && data && typeof data.access_token === "string") {
      session.save(data.access_token, Number(data.expires_in));
      session.user = { username: data.username || username, role: data.role || "", tenant: data.tenant ?? null, kind: "user" };
      pass.value = "";
      onSignedIn();
      $("#view").focus({ preventScroll: true });
      return;
    }
    if (!res) {
      showError("The server did not respond. Check the connection and try again.");
    } else if (res.status === 401) {
      showError("Wrong username or password.", [user, pass]);
      pass.select();
      pass.focus();
    } else if (res.status === 429) {
      const wait = retryAfterSeconds(res.headers.get("Retry-After"));
      showError(wait
        ? `Too many failed sign-in attempts. Try again in ${fmtDuration(wait * 1000)} (at ${fmtClock(Date.now() + wait * 1000)}).`
        : "Too many failed sign-in attempts. Try again later.");
      if (wait) lockFor(wait);
    } else if (res.status === 404) {
      showError("This server does not offer sign-in. Reload the page.");
    } else {
      showError(`Sign-in failed: ${detailText(data, `${res.status} ${res.statusText || "error"}`)}.`);
    }
  };

  const form = h("form", {
    class: "login-card", method: "post", action: "#", novalidate: true, "aria-labelledby": "login-title",
    dataset: { testid: "login-form" }, onsubmit: onSubmit,
  },
  h("div", { class: "login-head" },
    h("h1", { id: "login-title" }, "Sign in"),
    h("p", { class: "muted" }, "EdgeLoop operator dashboard")),
  notice ? h("p", { class: `login-notice login-notice-${noticeKind}`, role: "status", dataset: { testid: "login-notice" } }, notice) : null,
  errorBox,
  h("div", { class: "field" }, h("label", { for: "login-username" }, "Username"), user),
  h("div", { class: "field" }, h("label", { for: "login-password" }, "Password"), pass),
  submit);

  $("#view").replaceChildren(h("div", { class: "login-wrap" }, form));
  window.scrollTo(0, 0);
  user.focus();
}
