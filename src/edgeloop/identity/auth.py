"""People and integrations: users with roles in a tenant, bearer tokens, API keys, login rate limiting.

- Passwords are stored as scrypt hashes (``scrypt$N$r$p$salt$hash``), never in clear.
- Bearer tokens (people, after ``POST /api/v1/auth/token``) are opaque random strings;
  the store keeps only their SHA-256, with an expiry, and logout revokes them.
- API keys (integrations) look like ``elk_<id>_<secret>``; the store keeps the id and the
  SHA-256 of the secret, and compares in constant time.
- Roles are ordered: viewer < technician < operator < admin. A user with ``tenant=None`` is
  a platform administrator who sees every tenant; everyone else sees only their own.
"""

from __future__ import annotations

import base64
import collections
import enum
import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass

TOKEN_TTL_MS = 12 * 3_600_000
API_KEY_PREFIX = "elk_"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class Role(enum.IntEnum):
    VIEWER = 0
    TECHNICIAN = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown role {name!r}: one of viewer, technician, operator, admin") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (bearer token), an integration (API key), or ``anonymous`` (auth disabled)."""

    name: str
    role: Role
    tenant: str | None  # None: every tenant
    kind: str  # "user" | "api_key" | "anonymous" | "local" (a shell on the platform's host, e.g. `edgeloop admin`)

    def sees(self, tenant: str | None) -> bool:
        return self.tenant is None or self.tenant == tenant


ANONYMOUS_ADMIN = Principal(name="anonymous", role=Role.ADMIN, tenant=None, kind="anonymous")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def new_api_key() -> tuple[str, str, str]:
    """(key id, full key to hand out once, hash of its secret to store)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{API_KEY_PREFIX}{key_id}_{secret}", sha256(secret)


def split_api_key(key: str) -> tuple[str, str] | None:
    """(id, secret) of an ``elk_<id>_<secret>`` key, or None."""
    if not key.startswith(API_KEY_PREFIX):
        return None
    key_id, sep, secret = key[len(API_KEY_PREFIX):].partition("_")
    return (key_id, secret) if sep and key_id and secret else None


def new_password() -> str:
    return secrets.token_urlsafe(18)


class LoginLimiter:
    """Refuses logins after repeated failures: per (user, address) and per address, in a sliding window."""

    def __init__(self, *, per_user: int = 5, per_address: int = 30, window_ms: int = 300_000) -> None:
        self.per_user = per_user
        self.per_address = per_address
        self.window_ms = window_ms
        self._failures: dict[tuple[str, str], collections.deque[int]] = {}

    def _recent(self, key: tuple[str, str], now_ms: int) -> collections.deque[int]:
        q = self._failures.setdefault(key, collections.deque())
        while q and q[0] <= now_ms - self.window_ms:
            q.popleft()
        return q

    def retry_after_s(self, user: str, address: str, now_ms: int) -> int:
        """0 if a login may be tried now, else the seconds until it may."""
        for key, limit in (((user, address), self.per_user), (("", address), self.per_address)):
            q = self._recent(key, now_ms)
            if len(q) >= limit:
                return max(1, (q[0] + self.window_ms - now_ms + 999) // 1000)
        return 0

    def failed(self, user: str, address: str, now_ms: int) -> None:
        for key in ((user, address), ("", address)):
            self._recent(key, now_ms).append(now_ms)
        if len(self._failures) > 100_000:  # bounded: forget the quietest entries
            for key in [k for k, q in self._failures.items() if not q][:50_000]:
                del self._failures[key]

    def succeeded(self, user: str, address: str, at_ms: int | None = None) -> None:
        """Forget the user's failures from this address; ``at_ms``: the attempt counted up front (``failed``)
        turned out right, so it no longer counts against the address either."""
        self._failures.pop((user, address), None)
        q = self._failures.get(("", address))
        if at_ms is not None and q is not None and at_ms in q:
            q.remove(at_ms)


class RateLimiter:
    """A token bucket per client address: ``rate_per_s`` sustained, bursts up to ``burst``.

    Guards the unauthenticated, CPU-costly routes (provisioning, renewal) against floods;
    ``take`` answers 0 when a request may proceed, else the seconds to wait.
    """

    def __init__(self, *, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._buckets: dict[str, tuple[float, int]] = {}  # address -> (tokens, at_ms)

    def take(self, address: str, now_ms: int) -> int:
        tokens, at = self._buckets.get(address, (float(self.burst), now_ms))
        tokens = min(float(self.burst), tokens + (now_ms - at) / 1000 * self.rate_per_s)
        if tokens < 1:
            self._buckets[address] = (tokens, now_ms)
            return max(1, math.ceil((1 - tokens) / self.rate_per_s))
        self._buckets[address] = (tokens - 1, now_ms)
        if len(self._buckets) > 100_000:  # bounded: forget the full buckets (their addresses are quiet)
            for key in [k for k, (t, _) in self._buckets.items() if t >= self.burst - 1][:50_000]:
                del self._buckets[key]
        return 0


class OncePer:
    """``due(key, now_ms)`` is True at most once per ``window_ms`` per key: audit a flood once, not per packet."""

    def __init__(self, window_ms: int = 60_000, max_keys: int = 10_000) -> None:
        self.window_ms = window_ms
        self.max_keys = max_keys
        self._last: dict[str, int] = {}

    def due(self, key: str, now_ms: int) -> bool:
        last = self._last.get(key)
        if last is not None and now_ms - last < self.window_ms:
            return False
        if len(self._last) >= self.max_keys:
            self._last.clear()
        self._last[key] = now_ms
        return True
