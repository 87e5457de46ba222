"""Access control service: logins, tokens, API keys, users; every security-relevant step audited."""

from __future__ import annotations

import hmac
import re

from edgeloop.clock import Clock
from edgeloop.errors import ConflictError, EdgeLoopError
from edgeloop.identity.auth import (
    TOKEN_TTL_MS,
    LoginLimiter,
    Principal,
    Role,
    hash_password,
    new_api_key,
    new_password,
    new_token,
    sha256,
    split_api_key,
    verify_password,
)
from edgeloop.messages import ID_PATTERN
from edgeloop.store.base import AuditRecord, Credential, Store, User

MIN_PASSWORD = 12
# A fixed hash to verify against when the user does not exist, so that timing does not reveal which names exist.
_DUMMY_HASH = hash_password("edgeloop-no-such-user")


class AuthError(EdgeLoopError):
    def __init__(self, status: int, detail: str, retry_after_s: int = 0) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after_s = retry_after_s


class AccessService:
    def __init__(self, *, store: Store, clock: Clock, limiter: LoginLimiter | None = None) -> None:
        self.store = store
        self.clock = clock
        self.limiter = limiter or LoginLimiter()

    async def _audit(self, actor: str, action: str, target: str, outcome: str, detail: str = "",
                     source: str = "") -> None:
        await self.store.audit(AuditRecord(ts_ms=self.clock.now_ms(), actor=actor, action=action, target=target,
                                           outcome=outcome, detail=detail, source=source))

    async def bootstrap_admin(self, password: str | None) -> str | None:
        """With no user at all, create ``admin`` (every tenant). Returns a generated password (show it once),
        or None when ``password`` was given or users already exist."""
        if await self.store.list_users():
            return None
        generated = password is None
        secret = new_password() if password is None else password
        if len(secret) < MIN_PASSWORD:
            raise ConflictError(f"the admin password must have at least {MIN_PASSWORD} characters")
        await self.store.put_user(User(username="admin", role=Role.ADMIN.label, tenant=None,
                                       password_hash=hash_password(secret), created_ms=self.clock.now_ms()))
        await self._audit("system", "user.create", "admin", "ok", "first start: platform administrator")
        return secret if generated else None

    async def login(self, username: str, password: str, *, source: str) -> tuple[str, Principal]:
        now = self.clock.now_ms()
        wait = self.limiter.retry_after_s(username, source, now)
        if wait:
            await self._audit(username, "login", username, "refused", "rate limited", source)
            raise AuthError(429, f"too many failed logins; try again in {wait} s", retry_after_s=wait)
        user = await self.store.get_user(username)
        ok = verify_password(password, user.password_hash if user else _DUMMY_HASH)
        if user is None or not ok or user.disabled:
            self.limiter.failed(username, source, now)
            await self._audit(username, "login", username, "refused",
                              "disabled" if user is not None and ok else "wrong username or password", source)
            raise AuthError(401, "wrong username or password")
        self.limiter.succeeded(username, source)
        token = new_token()
        await self.store.put_credential(Credential(id=sha256(token), kind="token", subject=username, role=user.role,
                                                   tenant=user.tenant, created_ms=now,
                                                   expires_ms=now + TOKEN_TTL_MS))
        await self._audit(username, "login", username, "ok", "", source)
        return token, Principal(username, Role.parse(user.role), user.tenant, "user")

    async def authenticate(self, bearer: str) -> Principal | None:
        """The principal behind a bearer token or API key, or None (unknown, expired, revoked, disabled)."""
        now = self.clock.now_ms()
        parts = split_api_key(bearer)
        if parts is not None:
            cred = await self.store.get_credential(parts[0])
            if cred is None or cred.kind != "api_key" or not hmac.compare_digest(cred.secret_hash, sha256(parts[1])):
                return None
        else:
            cred = await self.store.get_credential(sha256(bearer))
            if cred is None or cred.kind != "token":
                return None
        if cred.revoked_ms is not None or (cred.expires_ms is not None and now >= cred.expires_ms):
            return None
        if cred.kind == "token":  # a person: their current role, and not if disabled since
            user = await self.store.get_user(cred.subject)
            if user is None or user.disabled:
                return None
            return Principal(user.username, Role.parse(user.role), user.tenant, "user")
        return Principal(cred.subject, Role.parse(cred.role), cred.tenant, "api_key")

    async def logout(self, bearer: str, who: Principal, *, source: str) -> None:
        if split_api_key(bearer) is None:
            await self.store.revoke_credential(sha256(bearer), self.clock.now_ms())
            await self._audit(who.name, "logout", who.name, "ok", "", source)

    async def create_user(self, *, username: str, password: str, role: Role, tenant: str | None, by: Principal,
                          source: str) -> User:
        if not re.fullmatch(ID_PATTERN, username):
            raise ConflictError(f"username {username!r}: lowercase letters, digits, '.', '_', '-'")
        if len(password) < MIN_PASSWORD:
            raise ConflictError(f"the password must have at least {MIN_PASSWORD} characters")
        self._check_grant(by, role, tenant)
        if await self.store.get_user(username) is not None:
            raise ConflictError(f"user {username!r} already exists")
        user = User(username=username, role=role.label, tenant=tenant, password_hash=hash_password(password),
                    created_ms=self.clock.now_ms())
        await self.store.put_user(user)
        await self._audit(by.name, "user.create", username, "ok", f"role {role.label}, tenant {tenant or '*'}", source)
        return user

    async def create_api_key(self, *, name: str, role: Role, tenant: str | None, by: Principal,
                             source: str) -> tuple[str, str]:
        """Returns (key id, the key itself: shown once)."""
        self._check_grant(by, role, tenant)
        key_id, key, secret_hash = new_api_key()
        await self.store.put_credential(Credential(id=key_id, kind="api_key", subject=name, role=role.label,
                                                   tenant=tenant, created_ms=self.clock.now_ms(),
                                                   secret_hash=secret_hash))
        await self._audit(by.name, "api_key.create", key_id, "ok", f"{name}: role {role.label}, "
                          f"tenant {tenant or '*'}", source)
        return key_id, key

    async def revoke_api_key(self, key_id: str, *, by: Principal, source: str) -> bool:
        cred = await self.store.get_credential(key_id)
        if cred is None or cred.kind != "api_key" or not by.sees(cred.tenant):
            return False
        done = await self.store.revoke_credential(key_id, self.clock.now_ms())
        await self._audit(by.name, "api_key.revoke", key_id, "ok" if done else "refused", "", source)
        return done

    @staticmethod
    def _check_grant(by: Principal, role: Role, tenant: str | None) -> None:
        """Nobody grants more than they have, nor outside their own tenant."""
        if by.tenant is not None and tenant != by.tenant:
            raise ConflictError("you may only create credentials in your own tenant")
        if role > by.role:
            raise ConflictError(f"you may not grant {role.label}")
