// The session: the bearer token (kept in sessionStorage, never localStorage) and the signed-in user.

const SESSION_KEY = "edgeloop.session";

export const session = {
  token: null,
  expiresAt: null, // browser ms; the server decides, this only drops stale tokens early
  user: null, // {username, role, tenant, kind} from the token response or GET /auth/me
  load() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
      if (saved && typeof saved.token === "string" && !(saved.expiresAt && saved.expiresAt <= Date.now())) {
        this.token = saved.token;
        this.expiresAt = saved.expiresAt || null;
      } else if (saved) {
        sessionStorage.removeItem(SESSION_KEY);
      }
    } catch {
      /* storage unavailable or garbage: start signed out */
    }
  },
  save(token, expiresIn) {
    this.token = token;
    this.expiresAt = Number.isFinite(expiresIn) && expiresIn > 0 ? Date.now() + expiresIn * 1000 : null;
    try {
      sessionStorage.setItem(SESSION_KEY, JSON.stringify({ token, expiresAt: this.expiresAt }));
    } catch {
      /* storage unavailable: the token lives as long as this page */
    }
  },
  clear() {
    this.token = null;
    this.expiresAt = null;
    this.user = null;
    try {
      sessionStorage.removeItem(SESSION_KEY);
    } catch {
      /* ignore */
    }
  },
};
