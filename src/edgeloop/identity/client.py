"""The device side of zero-touch provisioning (also used by the edge agent).

The device generates its key pair locally, derives its id from the claim's group and
its serial number, and sends only a CSR. The key is written (0600) only once the
platform has issued the certificate.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
from cryptography import x509

from edgeloop.identity.pki import build_csr, new_private_key, write_identity
from edgeloop.identity.provisioning import ProvisioningError, device_id_for, group_of_claim
from edgeloop.identity.tls import TlsIdentity


def provision_device(
    *, url: str, claim: str, serial: str, out_dir: Path, verify: bool | ssl.SSLContext = True,
    timeout_s: float = 30.0,
) -> TlsIdentity:
    """Provision this device; returns its TLS identity written into ``out_dir`` (DEVICE.key/.crt, ca.crt)."""
    device_id = device_id_for(group_of_claim(claim), serial)
    key = new_private_key()
    body = {"claim": claim, "serial": serial, "csr": build_csr(key, device_id).decode()}
    try:
        resp = httpx.post(url.rstrip("/") + "/api/v1/provision", json=body, timeout=timeout_s, verify=verify)
    except httpx.HTTPError as exc:
        raise ProvisioningError(503, "unreachable", f"cannot reach the platform at {url}: {exc}") from exc
    if resp.status_code != 201:
        try:
            doc = resp.json()
            code, detail = doc.get("code", "refused"), doc.get("detail", resp.text)
        except ValueError:
            code, detail = "refused", resp.text
        raise ProvisioningError(resp.status_code, code, detail)
    doc = resp.json()
    cert = x509.load_pem_x509_certificate(doc["certificate"].encode())
    if doc["device_id"] != device_id or cert.public_key() != key.public_key():
        raise ProvisioningError(502, "bad_response", "the platform returned a certificate for another identity")
    write_identity(out_dir, name=device_id, key=key, cert=cert, chain_pem=doc["ca_chain"].encode())
    return TlsIdentity.from_dir(out_dir, device_id)
