"""Users and API keys, for administrators (a tenant's administrator manages their tenant's only)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response

from edgeloop.api.bodies import body, body_doc, json_response, reply
from edgeloop.api.security import ROLE, Admin, Source, Svc
from edgeloop.errors import NotFoundError
from edgeloop.identity.auth import Role
from edgeloop.messages import ID_PATTERN
from edgeloop.store.base import User

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["auth"], dependencies=[ROLE[Role.ADMIN]])
RoleName = Literal["viewer", "technician", "operator", "admin"]


class UserBody(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
    password: Annotated[str, msgspec.Meta(min_length=12, max_length=200)]
    role: RoleName
    tenant: str | None = None


class PasswordBody(msgspec.Struct, forbid_unknown_fields=True):
    """A new password for a user; without one, the platform generates it and answers it once."""

    password: Annotated[str, msgspec.Meta(min_length=12, max_length=200)] | None = None


class ApiKeyBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    role: RoleName
    tenant: str | None = None


class UserView(msgspec.Struct):
    username: str
    role: str
    tenant: str | None
    disabled: bool
    created_ms: int


class NewUser(msgspec.Struct):
    username: str
    role: str
    tenant: str | None


class NewPassword(msgspec.Struct):
    username: str
    password: str | None  # the generated one (shown once); null when the request gave it


class TokensRevoked(msgspec.Struct):
    username: str
    revoked: int


class NewApiKey(msgspec.Struct):
    id: str
    key: str  # not stored: shown this once
    name: str
    role: str
    tenant: str | None


def _view(u: User) -> UserView:
    return UserView(username=u.username, role=u.role, tenant=u.tenant, disabled=u.disabled, created_ms=u.created_ms)


@router.get("/users", responses=reply(list[UserView]))
async def list_users(svc: Svc, who: Admin) -> Response:
    """Users an administrator manages: every one for a platform administrator, else their tenant's."""
    return json_response([_view(u) for u in await svc.access.list_users(by=who)])


@router.post("/users", status_code=201, openapi_extra=body_doc(UserBody), responses=reply(NewUser, 201))
async def create_user(svc: Svc, who: Admin, src: Source,
                      req: Annotated[UserBody, Depends(body(UserBody))]) -> Response:
    if not who.sees(req.tenant):
        raise HTTPException(403, f"{who.name} may not create users outside their own tenant")
    user = await svc.access.create_user(username=req.username, password=req.password, role=Role.parse(req.role),
                                        tenant=req.tenant, by=who, source=src)
    return json_response(NewUser(username=user.username, role=user.role, tenant=user.tenant), 201)


@router.post("/users/{username}/disable", responses=reply(UserView))
async def disable_user(username: str, svc: Svc, who: Admin, src: Source) -> Response:
    """The user can no longer log in, and every token it holds stops working at once."""
    return json_response(_view(await svc.access.set_disabled(username, True, by=who, source=src)))


@router.post("/users/{username}/enable", responses=reply(UserView))
async def enable_user(username: str, svc: Svc, who: Admin, src: Source) -> Response:
    return json_response(_view(await svc.access.set_disabled(username, False, by=who, source=src)))


@router.delete("/users/{username}", status_code=204)
async def delete_user(username: str, svc: Svc, who: Admin, src: Source) -> Response:
    """Delete a user and revoke its tokens (nobody deletes themselves)."""
    await svc.access.delete_user(username, by=who, source=src)
    return Response(status_code=204)


@router.post("/users/{username}/password", openapi_extra=body_doc(PasswordBody, required=False),
             responses=reply(NewPassword))
async def reset_password(username: str, svc: Svc, who: Admin, src: Source,
                         req: Annotated[PasswordBody, Depends(body(PasswordBody, 4096, optional=True))]) -> Response:
    """Set a user's password (or generate one: the answer holds it, shown once); its tokens are revoked."""
    generated = await svc.access.reset_password(username, req.password, by=who, source=src)
    return json_response(NewPassword(username=username, password=generated))


@router.post("/users/{username}/revoke-tokens", responses=reply(TokensRevoked))
async def revoke_user_tokens(username: str, svc: Svc, who: Admin, src: Source) -> Response:
    """End every session of a user: all its bearer tokens are revoked."""
    return json_response(TokensRevoked(username=username,
                                       revoked=await svc.access.revoke_tokens(username, by=who, source=src)))


@router.post("/api-keys", status_code=201, openapi_extra=body_doc(ApiKeyBody), responses=reply(NewApiKey, 201))
async def create_api_key(svc: Svc, who: Admin, src: Source,
                         req: Annotated[ApiKeyBody, Depends(body(ApiKeyBody))]) -> Response:
    """An API key for an integration; the response holds the key, which is not stored and never shown again."""
    if not who.sees(req.tenant):
        raise HTTPException(403, f"{who.name} may not create API keys outside their own tenant")
    key_id, key = await svc.access.create_api_key(name=req.name, role=Role.parse(req.role), tenant=req.tenant,
                                                  by=who, source=src)
    return json_response(NewApiKey(id=key_id, key=key, name=req.name, role=req.role, tenant=req.tenant), 201)


@router.delete("/api-keys/{key_id}", status_code=204)
async def revoke_api_key(key_id: str, svc: Svc, who: Admin, src: Source) -> Response:
    if not await svc.access.revoke_api_key(key_id, by=who, source=src):
        raise NotFoundError("api key", key_id)
    return Response(status_code=204)
