"""Client-side TLS material: a CA chain to trust and the certificate and key that prove who we are."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.errors import ConfigError


@dataclass(frozen=True, slots=True)
class TlsIdentity:
    """``ca``: the chain to trust (our CA); ``cert``/``key``: this client's certificate and private key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_dir(cls, directory: Path, name: str) -> TlsIdentity:
        """The layout ``edgeloop pki issue`` and ``edgeloop provision`` write: NAME.crt, NAME.key, ca.crt."""
        ident = cls(directory / "ca.crt", directory / f"{name}.crt", directory / f"{name}.key")
        missing = [p for p in (ident.ca, ident.cert, ident.key) if not p.exists()]
        if missing:
            raise ConfigError(f"TLS identity {name!r} incomplete in {directory}: missing "
                              f"{', '.join(p.name for p in missing)}")
        return ident

    def apply(self, client: Any) -> None:
        """Configure a paho client for mutual TLS (server verified against our CA, TLS 1.2+)."""
        client.tls_set(ca_certs=str(self.ca), certfile=str(self.cert), keyfile=str(self.key),
                       cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
