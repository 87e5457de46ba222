"""The revocation list as a broker reads it: the PKI's ``crl.pem``, verified, reloaded when it changes.

``CertificateAuthority.revoke`` (CLI or API) rewrites ``crl.pem`` atomically. The embedded
broker asks ``RevocationList.serials()`` on every connection and polls it once a second to
close live sessions of newly revoked certificates; Mosquitto reads the same file on reload.
A CRL whose signature does not verify against the issuing CA is not used: the last good one
stays in force and the error is logged once per change of the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography import x509

log = logging.getLogger(__name__)


class RevocationList:
    def __init__(self, crl_path: Path, issuer: x509.Certificate) -> None:
        self.path = crl_path
        self.issuer = issuer
        self._stamp: tuple[int, int] | None = None
        self._serials: frozenset[int] = frozenset()

    def serials(self) -> frozenset[int]:
        """The revoked serial numbers, reloading the file if it changed since the last call."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return self._serials
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._stamp = stamp
            self._load()
        return self._serials

    def _load(self) -> None:
        try:
            crl = x509.load_pem_x509_crl(self.path.read_bytes())
        except (OSError, ValueError) as exc:
            log.error("revocation list %s unreadable (%s); keeping the previous one", self.path, exc)
            return
        if crl.issuer != self.issuer.subject or not crl.is_signature_valid(self.issuer.public_key()):  # type: ignore[arg-type]
            log.error("revocation list %s is not signed by %s; keeping the previous one", self.path,
                      self.issuer.subject.rfc4514_string())
            return
        self._serials = frozenset(entry.serial_number for entry in crl)
