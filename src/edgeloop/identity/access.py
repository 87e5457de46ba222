"""Access control service: logins, tokens, API keys, users; every security-relevant step audited.

Password hashing (scrypt, tens of milliseconds) runs on a worker thread, never on the event loop. A login
attempt counts as a failure from the moment it starts, so concurrent guesses cannot all pass the limiter's
check before the first one fails. Bearer tokens are housekept at each login: expired ones are deleted (a
bounded number per login) and a user keeps at most ``MAX_TOKENS_PER_USER``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import re

from edgeloop.clock import Clock
from edgeloop.errors import ConflictError, EdgeLoopError, NotFoundError
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
MAX_TOKENS_PER_USER = 50  # the newest; an older session ends when a user opens more
EXPIRED_TOKENS_PER_LOGIN = 1000  # deleted at each login: more than one login ever creates
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
        self.limiter.failed(username, source, now)  # counted up front; taken back below if it was right
        user = await self.store.get_user(username)
        ok = await asyncio.to_thread(verify_password, password, user.password_hash if user else _DUMMY_HASH)
        if user is None or not ok or user.disabled:
            await self._audit(username, "login", username, "refused",
                              "disabled" if user is not None and ok else "wrong username or password", source)
            raise AuthError(401, "wrong username or password")
        self.limiter.succeeded(username, source, now)
        token = new_token()
        await self.store.put_credential(Credential(id=sha256(token), kind="token", subject=username, role=user.role,
                                                   tenant=user.tenant, created_ms=now,
                                                   expires_ms=now + TOKEN_TTL_MS))
        await self.store.delete_expired_tokens(now, limit=EXPIRED_TOKENS_PER_LOGIN)
        await self.store.trim_tokens(username, keep=MAX_TOKENS_PER_USER)
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
        user = User(username=username, role=role.label, tenant=tenant,
                    password_hash=await asyncio.to_thread(hash_password, password), created_ms=self.clock.now_ms())
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

    # -- managing users -------------------------------------------------------------------------
    async def list_users(self, *, by: Principal) -> list[User]:
        """The users ``by`` may manage: every one for a platform administrator, else their own tenant's."""
        return [u for u in await self.store.list_users() if by.sees(u.tenant)]

    async def _managed(self, username: str, by: Principal, *, action: str, self_ok: bool = True) -> User:
        """The user ``by`` may manage (404 for one outside their tenant, as for one that does not exist)."""
        user = await self.store.get_user(username)
        if user is None or not by.sees(user.tenant):
            raise NotFoundError("user", username)
        self._check_grant(by, Role.parse(user.role), user.tenant)
        if not self_ok and by.kind == "user" and by.name == username:
            raise ConflictError(f"you may not {action} yourself; another administrator can")
        return user

    async def set_disabled(self, username: str, disabled: bool, *, by: Principal, source: str) -> User:
        """Disable (it cannot log in, and its tokens stop working at once) or enable a user."""
        user = await self._managed(username, by, action="disable", self_ok=not disabled)
        user = dataclasses.replace(user, disabled=disabled)
        await self.store.put_user(user)
        revoked = await self.store.revoke_tokens(username, self.clock.now_ms()) if disabled else 0
        await self._audit(by.name, "user.disable" if disabled else "user.enable", username, "ok",
                          f"{revoked} tokens revoked" if disabled else "", source)
        return user

    async def delete_user(self, username: str, *, by: Principal, source: str) -> None:
        await self._managed(username, by, action="delete", self_ok=False)
        revoked = await self.store.revoke_tokens(username, self.clock.now_ms())  # a new user of that name
        await self.store.delete_user(username)                                   # gets none of them
        await self._audit(by.name, "user.delete", username, "ok", f"{revoked} tokens revoked", source)

    async def reset_password(self, username: str, password: str | None, *, by: Principal, source: str,
                             enable: bool = False) -> str | None:
        """Set a new password (``None``: generate one, returned to be shown once); the user's tokens are revoked.
        ``enable``: also enable a disabled user (the local recovery of a locked-out administrator)."""
        user = await self._managed(username, by, action="reset the password of")
        secret = new_password() if password is None else password
        if len(secret) < MIN_PASSWORD:
            raise ConflictError(f"the password must have at least {MIN_PASSWORD} characters")
        user = dataclasses.replace(user, password_hash=await asyncio.to_thread(hash_password, secret),
                                   disabled=user.disabled and not enable)
        await self.store.put_user(user)
        revoked = await self.store.revoke_tokens(username, self.clock.now_ms())
        await self._audit(by.name, "user.reset_password", username, "ok",
                          f"{'generated' if password is None else 'given'} password, {revoked} tokens revoked"
                          + (", enabled" if enable else ""), source)
        return secret if password is None else None

    async def revoke_tokens(self, username: str, *, by: Principal, source: str) -> int:
        """End every session (bearer token) of a user. API keys belong to integrations, not to users: each is
        revoked by its id."""
        await self._managed(username, by, action="revoke the tokens of")
        revoked = await self.store.revoke_tokens(username, self.clock.now_ms())
        await self._audit(by.name, "user.revoke_tokens", username, "ok", f"{revoked} tokens revoked", source)
        return revoked

    @staticmethod
    def _check_grant(by: Principal, role: Role, tenant: str | None) -> None:
        """Nobody grants more than they have, nor outside their own tenant."""
        if by.tenant is not None and tenant != by.tenant:
            raise ConflictError("you may only create credentials in your own tenant")
        if role > by.role:
            raise ConflictError(f"you may not grant {role.label}")
