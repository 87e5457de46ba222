"""The one error hierarchy. Lower-layer errors are translated at the boundary with ``raise ... from``."""

from __future__ import annotations


class EdgeLoopError(Exception):
    """Base of every error EdgeLoop raises on purpose."""


class ConfigError(EdgeLoopError):
    """A setting is missing or wrong; the message says which and how to fix it."""


class NotFoundError(EdgeLoopError):
    """A referenced object (device, asset, alert) does not exist."""

    def __init__(self, kind: str, key: object) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key


class ConflictError(EdgeLoopError):
    """The request contradicts stored state (e.g. a device under an unknown asset)."""


class StoreError(EdgeLoopError):
    """The storage backend failed (connection lost, disk full, schema mismatch): retrying later may succeed."""


class StoreRejected(StoreError):
    """The store refused this data itself (a NUL character, an unencodable string, a number out of range):
    retrying the same data can never succeed. Ingest dead-letters what is refused (``store_rejected``)."""


class DuplicateKey(StoreRejected):
    """A row with this key is stored already (a unique constraint): the store turns it into ``ConflictError``
    where a caller creates something by id."""


class BrokerError(EdgeLoopError):
    """The MQTT broker could not be started or reached."""


class RejectReason(EdgeLoopError):
    """Why an inbound payload was refused; becomes a dead-letter record, never a crash."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class ModelRefused(EdgeLoopError):
    """A model artifact (or signed bundle) that must not be loaded: unsigned, tampered, signed by a key that is
    not a model signer of our CA, or revoked. ``code`` is stable (``unsigned``, ``bad_signature``,
    ``untrusted_signer``, ``not_a_signer``, ``revoked_signer``, ``tampered``, ``bad_manifest``, ``bad_bundle``)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"model refused ({code}): {detail}")
        self.code = code
        self.detail = detail
