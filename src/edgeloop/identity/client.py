"""The device side of zero-touch provisioning and renewal (also used by the edge agent).

The device generates its key pair locally, derives its id from the claim's group and
its serial number, and sends only a CSR. The key is written (0600) only once the
platform has issued the certificate.

Renewal swaps key and certificate without a moment of downtime or a torn state: the new
pair is written beside the old (``NAME.key.new``, ``NAME.crt.new``, fsynced), a commit
marker is written, then key and certificate are renamed into place; ``TlsIdentity.from_dir``
finishes a committed swap a crash interrupted and discards an uncommitted one. The old
certificate stays valid until it expires, so a device keeps its live connection and uses
the new identity from its next connection on.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509

from edgeloop.identity.pki import build_csr, load_private_key, new_private_key, pem, write_identity, write_private_key
from edgeloop.identity.provisioning import ProvisioningError, device_id_for, group_of_claim, renewal_signature
from edgeloop.identity.tls import TlsIdentity, finish_renewal


def provision_device(
    *, url: str, claim: str, serial: str, out_dir: Path, verify: bool | ssl.SSLContext = True,
    timeout_s: float = 30.0,
) -> TlsIdentity:
    """Provision this device; returns its TLS identity written into ``out_dir`` (DEVICE.key/.crt, ca.crt)."""
    device_id = device_id_for(group_of_claim(claim), serial)
    key = new_private_key()
    body = {"claim": claim, "serial": serial, "csr": build_csr(key, device_id).decode()}
    doc = _post(url, "/api/v1/provision", body, verify=verify, timeout_s=timeout_s)
    cert = _check_issued(doc, device_id, key.public_key())
    write_identity(out_dir, name=device_id, key=key, cert=cert, chain_pem=doc["ca_chain"].encode())
    return TlsIdentity.from_dir(out_dir, device_id)


def renew_device(
    *, url: str, identity: TlsIdentity, verify: bool | ssl.SSLContext = True, timeout_s: float = 30.0,
) -> TlsIdentity:
    """Renew ``identity`` in place: new key, certificate from the platform, crash-safe swap; returns it reloaded."""
    current = x509.load_pem_x509_certificate(identity.cert.read_bytes())
    device_id = identity.cert.stem
    key = new_private_key()
    csr = build_csr(key, device_id)
    body = {"certificate": pem(current).decode(), "csr": csr.decode(),
            "signature": renewal_signature(load_private_key(identity.key), csr)}
    doc = _post(url, "/api/v1/renew", body, verify=verify, timeout_s=timeout_s)
    cert = _check_issued(doc, device_id, key.public_key())
    new_key, new_cert = identity.key.with_name(identity.key.name + ".new"), identity.cert.with_name(
        identity.cert.name + ".new")
    write_private_key(new_key, key)
    new_cert.write_bytes(pem(cert))
    _fsync(new_key, new_cert)
    marker = identity.cert.with_name(f"{device_id}.renewing")
    marker.touch()
    _fsync(marker, identity.cert.parent)  # committed: from here on the swap completes, even after a crash
    finish_renewal(identity.cert.parent, device_id)
    return TlsIdentity.from_dir(identity.cert.parent, device_id)


def _fsync(*paths: Path) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _post(url: str, path: str, body: dict[str, Any], *, verify: bool | ssl.SSLContext, timeout_s: float) -> Any:
    try:
        resp = httpx.post(url.rstrip("/") + path, json=body, timeout=timeout_s, verify=verify)
    except httpx.HTTPError as exc:
        raise ProvisioningError(503, "unreachable", f"cannot reach the platform at {url}: {exc}") from exc
    if resp.status_code != 201:
        try:
            doc = resp.json()
            code, detail = doc.get("code", "refused"), doc.get("detail", resp.text)
        except ValueError:
            code, detail = "refused", resp.text
        raise ProvisioningError(resp.status_code, code, detail)
    return resp.json()


def _check_issued(doc: Any, device_id: str, public_key: Any) -> x509.Certificate:
    cert = x509.load_pem_x509_certificate(doc["certificate"].encode())
    if doc["device_id"] != device_id or cert.public_key() != public_key:
        raise ProvisioningError(502, "bad_response", "the platform returned a certificate for another identity")
    return cert
