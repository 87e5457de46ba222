"""Client-side TLS material: a CA chain to trust and the certificate and key that prove who we are."""

from __future__ import annotations

import os
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
        finish_renewal(directory, name)
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


def finish_renewal(directory: Path, name: str) -> None:
    """Complete or discard an interrupted renewal, so key and certificate never stay mismatched.

    A renewal writes ``NAME.key.new`` and ``NAME.crt.new`` (fsynced), then the commit marker
    ``NAME.renewing``, then renames key and certificate into place and removes the marker. With the
    marker present the swap is finished; without it, leftover ``.new`` files are discarded.
    """
    marker = directory / f"{name}.renewing"
    committed = marker.exists()
    for suffix in (".key", ".crt"):
        pending = directory / f"{name}{suffix}.new"
        if pending.exists():
            if committed:
                os.replace(pending, directory / f"{name}{suffix}")
            else:
                pending.unlink()
    marker.unlink(missing_ok=True)
