"""Delivering a signed edge model to a gateway: the ``ModelPush`` message and its topic (platform side; pure).

The platform publishes the result QoS 1, **retained**, on ``edgeloop/v1/{tenant}/{gateway}/model``: a gateway
that is offline gets the latest push when it reconnects, and the agent acts on a push id once (a retained push
seen again does nothing). Only the platform may publish there and only that gateway may subscribe
(``broker/acl.py``). The agent answers with a ``model`` device event (``data``: id, name, action, status
``applied`` / ``refused`` / ``rolled_back``, version, reason, running) on its event topic.

>>> topic_, payload = push_message("acme", "gw-1", name="edge.press", action="rollback", push_id="c7-w2",
...                                now_ms=1000, to_version=2)
>>> topic_
'edgeloop/v1/acme/gw-1/model'
"""

from __future__ import annotations

from typing import Literal, TypeVar

import msgspec

from edgeloop.errors import ConfigError, ModelRefused
from edgeloop.messages import MAX_MODEL_BUNDLE_BYTES, DeviceEvent, ModelPush, TopicKind, encode, topic
from edgeloop.models.manifest import decode_manifest
from edgeloop.models.signing import read_bundle
from edgeloop.store.records import StoredEvent

__all__ = ["MAX_PAYLOAD_BYTES", "PushAnswer", "Reverted", "push_answer", "push_message", "reverted"]

_T = TypeVar("_T")

# Mosquitto's max_packet_size (broker/mosquitto.py) is 1 MiB; keep room for the topic and the packet's header.
MAX_PAYLOAD_BYTES = 2**20 - 4096


def push_message(tenant: str, gateway: str, *, name: str, action: Literal["install", "rollback"], push_id: str,
                 now_ms: int, bundle: bytes = b"", to_version: int | None = None, issued_by: str = "system",
                 max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> tuple[str, bytes]:
    """The topic and payload that install ``bundle`` (a signed ``.elm`` of model ``name``) on ``gateway``, or
    roll it back to ``to_version`` (the version it kept as previous). ``push_id`` makes it idempotent on the
    gateway (e.g. the campaign, wave and target). Raises ``ConfigError`` for a push that cannot work: no bundle
    or a bundle of another model or kind, no version to roll back to, or a message over the broker's limit."""
    if action == "install":
        if not bundle:
            raise ConfigError("an install push needs the signed model file (.elm)")
        try:
            signed, _ = read_bundle(bundle)
            if signed is None:
                raise ModelRefused("unsigned", "the model file carries no signature")
            manifest = decode_manifest(signed.manifest_bytes)
        except ModelRefused as exc:
            raise ConfigError(f"cannot push this file to {gateway}: {exc}") from None
        if manifest.kind != "edge" or manifest.name != name:
            raise ConfigError(f"cannot push {manifest.ref} ({manifest.kind}) as edge model {name!r}")
        if len(bundle) > MAX_MODEL_BUNDLE_BYTES:
            raise ConfigError(f"the model file is {len(bundle)} bytes; a push carries at most "
                              f"{MAX_MODEL_BUNDLE_BYTES}")
        to_version = None
    else:
        if to_version is None:
            raise ConfigError("a rollback push needs the version to go back to")
        bundle = b""
    try:
        push = ModelPush(id=push_id, name=name, action=action, ts=now_ms, bundle=bundle, to_version=to_version,
                         issued_by=issued_by)
        payload = encode(push)
        msgspec.json.decode(payload, type=ModelPush)  # the limits the agent checks (id, name, sizes)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ConfigError(f"not a valid model push: {exc}") from None
    if len(payload) > max_payload_bytes:
        raise ConfigError(f"the push is {len(payload)} bytes (the model file base64-encoded); the broker takes at "
                          f"most {max_payload_bytes} per message")
    return topic(tenant, gateway, TopicKind.MODEL), payload


class PushAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """A gateway's answer to a ``ModelPush`` (its ``model`` event), as the platform reads it."""

    gateway: str
    ts: int
    id: str
    name: str
    action: str
    status: Literal["applied", "refused", "rolled_back"]
    version: int | None = None
    reason: str = ""
    running: int | None = None  # the version the gateway runs after it (None: none)


class Reverted(msgspec.Struct, frozen=True, kw_only=True):
    """A gateway went back from a version on probation by itself (its ``model_reverted`` event)."""

    gateway: str
    ts: int
    name: str
    from_version: int
    to_version: int  # 0: there was no previous version; the model stopped
    reason: Literal["alarm_rate", "errors"]
    alarm_rate: float
    limit: float
    windows: int
    errors: int


def push_answer(event: DeviceEvent | StoredEvent) -> PushAnswer | None:
    """The answer in a ``model`` event; None for any other event or one that does not hold an answer."""
    if event.kind != "model":
        return None
    return _convert(event, PushAnswer)


def reverted(event: DeviceEvent | StoredEvent) -> Reverted | None:
    """The figures of a ``model_reverted`` event; None for any other event."""
    if event.kind != "model_reverted":
        return None
    return _convert(event, Reverted)


def _convert(event: DeviceEvent | StoredEvent, kind: type[_T]) -> _T | None:
    ts = event.ts if isinstance(event, DeviceEvent) else event.ts_ms
    try:
        return msgspec.convert({**event.data, "gateway": event.device, "ts": ts}, kind, strict=False)
    except msgspec.ValidationError:
        return None
