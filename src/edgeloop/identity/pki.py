"""EdgeLoop's own PKI: a root CA, an issuing CA, device and service certificates, revocation.

Layout of a PKI directory (private keys are written 0600, the directory 0700)::

    root.key root.crt          offline trust anchor (ECDSA P-256, 10 years, may sign one level of CAs)
    issuing.key issuing.crt    signs every device and service certificate (5 years)
    ca-chain.pem               issuing + root: what brokers and devices trust
    crl.pem                    revoked certificates, signed by the issuing CA
    issued.jsonl               append-only ledger: one line per certificate issued (serial, subject, kind,
                               expiry) and one per revocation; appended with fsync, never rewritten

A certificate's subject common name *is* the identity: the device id for a device
(``OU=device``), the component name for a platform service (``OU=service``), the purpose of an artifact
signer (``OU=signer``: EKU codeSigning only, so it can never open a connection). Brokers
use it as the MQTT username and the ACLs are written against it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Self

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeloop.errors import ConfigError, EdgeLoopError
from edgeloop.file_modes import write_private
from edgeloop.messages import ID_PATTERN

Kind = Literal["device", "service", "signer"]  # signer: signs model artifacts and releases, never connects
ORG = "EdgeLoop"
MAX_CSR_BYTES = 8192
CRL_VALID_DAYS = 30
LEDGER = "issued.jsonl"


class PkiError(EdgeLoopError):
    """A certificate request or PKI operation was refused; the message says why."""


@dataclass(frozen=True, slots=True)
class IssuedCert:
    serial: int
    subject: str
    kind: str
    not_after: str  # ISO 8601 UTC
    revoked_at: str | None = None


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key, generated where it will live (the device, the service)."""
    return ec.generate_private_key(ec.SECP256R1())


def build_csr(key: ec.EllipticCurvePrivateKey, common_name: str) -> bytes:
    """A PEM certificate signing request for ``common_name``, signed with ``key``."""
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write a key readable by its owner only (0600), created with that mode (never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    write_private(path, data)


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path} is not an ECDSA private key")
    return key


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(common_name: str, unit: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _ca_cert(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, signer: ec.EllipticCurvePrivateKey,
    *, days: int, path_length: int, issuer_key: ec.EllipticCurvePublicKey,
) -> x509.Certificate:
    now = _now()
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), critical=False)
            .sign(signer, hashes.SHA256()))


class CertificateAuthority:
    """The issuing CA of a PKI directory. ``CertificateAuthority.init(dir)`` creates one; ``open(dir)`` loads it."""

    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate,
                 root: x509.Certificate) -> None:
        self.dir = directory
        self._key = key
        self.cert = cert
        self.root = root

    @classmethod
    def init(cls, directory: Path, *, name: str = "EdgeLoop") -> Self:
        """Create a root CA and an issuing CA in ``directory``; refuses to overwrite an existing PKI."""
        if (directory / "issuing.key").exists() or (directory / "root.key").exists():
            raise ConfigError(f"{directory} already holds a PKI; refusing to overwrite it")
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        root_key, issuing_key = new_private_key(), new_private_key()
        root_name = _name(f"{name} Root CA", "pki")
        root = _ca_cert(root_name, root_name, root_key.public_key(), root_key, days=3650, path_length=1,
                        issuer_key=root_key.public_key())
        issuing_name = _name(f"{name} Issuing CA", "pki")
        issuing = _ca_cert(issuing_name, root_name, issuing_key.public_key(), root_key, days=1825, path_length=0,
                           issuer_key=root_key.public_key())
        write_private_key(directory / "root.key", root_key)
        write_private_key(directory / "issuing.key", issuing_key)
        (directory / "root.crt").write_bytes(pem(root))
        (directory / "issuing.crt").write_bytes(pem(issuing))
        (directory / "ca-chain.pem").write_bytes(pem(issuing) + pem(root))
        ca = cls(directory, issuing_key, issuing, root)
        (directory / LEDGER).touch(0o600)
        ca.write_crl()
        return ca

    @classmethod
    def open(cls, directory: Path) -> Self:
        for name in ("issuing.key", "issuing.crt", "root.crt"):
            if not (directory / name).exists():
                raise ConfigError(f"{directory} is not an EdgeLoop PKI ({name} missing); run: edgeloop pki init "
                                  f"--dir {directory}")
        ca = cls(directory, load_private_key(directory / "issuing.key"),
                 x509.load_pem_x509_certificate((directory / "issuing.crt").read_bytes()),
                 x509.load_pem_x509_certificate((directory / "root.crt").read_bytes()))
        ca._migrate_ledger()
        return ca

    @property
    def chain_pem(self) -> bytes:
        return pem(self.cert) + pem(self.root)

    # -- issuing --------------------------------------------------------------------------------
    def issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        common_name: str,
        *,
        kind: Kind = "device",
        days: int = 365,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        not_before: dt.datetime | None = None,
    ) -> x509.Certificate:
        """A certificate binding ``public_key`` to ``common_name``; recorded in the ledger."""
        _check_name(common_name)
        start = not_before or _now() - dt.timedelta(minutes=5)
        if kind == "signer":  # signs artifacts; cannot authenticate a connection (no client/server auth)
            usages = [ExtendedKeyUsageOID.CODE_SIGNING]
        else:
            usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
            if kind == "service":
                usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (x509.CertificateBuilder()
                   .subject_name(_name(common_name, kind)).issuer_name(self.cert.subject).public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False,
                                                key_agreement=kind != "signer",
                                                key_cert_sign=False, crl_sign=False, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                                  critical=False))
        alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        self._append({"serial": cert.serial_number, "subject": common_name, "kind": kind,
                      "not_after": cert.not_valid_after_utc.isoformat()})
        return cert

    def sign_csr(self, csr_pem: bytes, *, common_name: str, kind: Kind = "device", days: int = 365) -> x509.Certificate:
        """Issue a certificate for a CSR whose subject must be exactly ``common_name`` (see ``check_csr``)."""
        return self.issue(check_csr(csr_pem, common_name=common_name), common_name, kind=kind, days=days)

    # -- revocation -----------------------------------------------------------------------------
    def revoke(self, common_name: str) -> list[int]:
        """Revoke every unrevoked certificate of ``common_name`` and rewrite the CRL; returns their serials."""
        serials = [e.serial for e in self._load_ledger() if e.subject == common_name and e.revoked_at is None]
        if not serials:
            raise PkiError(f"no valid certificate of {common_name!r} to revoke")
        now = _now().isoformat()
        for serial in serials:
            self._append({"revoked": serial, "at": now})
        self.write_crl()
        return serials

    def write_crl(self) -> bytes:
        """Re-sign the CRL (also to renew it before its next update, ``CRL_VALID_DAYS``)."""
        now = _now()
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=CRL_VALID_DAYS))
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                                  critical=False))
        for entry in self._load_ledger():
            if entry.revoked_at is not None:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder().serial_number(entry.serial)
                    .revocation_date(dt.datetime.fromisoformat(entry.revoked_at)).build())
        data = builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        _atomic_write(self.dir / "crl.pem", data)
        return data

    def crl_expires_within(self, margin: dt.timedelta) -> bool:
        """True if ``crl.pem`` is missing, unreadable, or its next update is less than ``margin`` away."""
        try:
            crl = x509.load_pem_x509_crl((self.dir / "crl.pem").read_bytes())
        except (OSError, ValueError):
            return True
        next_update = crl.next_update_utc
        return next_update is None or next_update - _now() < margin

    def revoked_serials(self) -> frozenset[int]:
        return frozenset(e.serial for e in self._load_ledger() if e.revoked_at is not None)

    def issued(self) -> list[IssuedCert]:
        return self._load_ledger()

    def _load_ledger(self) -> list[IssuedCert]:
        """The ledger folded: every certificate in issue order, with its revocation time if revoked."""
        path = self.dir / LEDGER
        entries: dict[int, IssuedCert] = {}
        if not path.exists():
            return []
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:  # a line cut short by a crash: it was never acknowledged
                continue
            if "revoked" in rec:
                if rec["revoked"] in entries:
                    entries[rec["revoked"]] = replace(entries[rec["revoked"]], revoked_at=rec["at"])
            else:
                entries[rec["serial"]] = IssuedCert(**rec)
        return list(entries.values())

    def _append(self, record: dict[str, object]) -> None:
        """Append one ledger line and fsync it: a certificate is never handed out unrecorded."""
        fd = os.open(self.dir / LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, json.dumps(record, separators=(",", ":")).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _migrate_ledger(self) -> None:
        """PKIs created before the append-only ledger kept ``issued.json``; convert it once."""
        old = self.dir / "issued.json"
        if not old.exists():
            return
        lines = []
        for e in json.loads(old.read_text()):
            lines.append({k: v for k, v in e.items() if k != "revoked_at"})
            if e.get("revoked_at"):
                lines.append({"revoked": e["serial"], "at": e["revoked_at"]})
        _atomic_write(self.dir / LEDGER, b"".join(json.dumps(x).encode() + b"\n" for x in lines))
        old.unlink()


def check_csr(csr_pem: bytes, *, common_name: str) -> ec.EllipticCurvePublicKey:
    """The public key of a valid CSR for ``common_name``.

    Refused (``PkiError``): unparsable or oversized requests, a signature that does not
    verify (tampered), a subject other than the identity being issued, keys other than P-256.
    """
    if len(csr_pem) > MAX_CSR_BYTES:
        raise PkiError(f"certificate request of {len(csr_pem)} bytes is over the {MAX_CSR_BYTES}-byte limit")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate signing request: {exc}") from exc
    try:
        valid = csr.is_signature_valid
    except InvalidSignature:
        valid = False
    if not valid:
        raise PkiError("the certificate request's signature does not verify (tampered or corrupt)")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    asked = str(names[0].value) if names else ""
    if asked != common_name:
        raise PkiError(f"the certificate request asks for {asked!r}, but this identity is {common_name!r}")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise PkiError("only ECDSA P-256 keys are accepted")
    return key


def write_identity(out_dir: Path, *, name: str, key: ec.EllipticCurvePrivateKey | None,
                   cert: x509.Certificate, chain_pem: bytes) -> None:
    """Write ``NAME.key`` (0600, if given), ``NAME.crt`` and ``ca.crt`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if key is not None:
        write_private_key(out_dir / f"{name}.key", key)
    (out_dir / f"{name}.crt").write_bytes(pem(cert))
    (out_dir / "ca.crt").write_bytes(chain_pem)


def _check_name(common_name: str) -> None:
    if not re.fullmatch(ID_PATTERN, common_name):
        raise PkiError(f"{common_name!r} is not a valid identity (lowercase letters, digits, '.', '_', '-')")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def ensure_identity(
    ca: CertificateAuthority, out_dir: Path, name: str, *, kind: Kind = "service", dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (), renew_within_days: int = 30, revoked: frozenset[int] | None = None,
) -> Path:
    """Make sure ``out_dir`` holds a usable ``NAME.crt``/``NAME.key`` issued by ``ca`` (and ``ca.crt``).

    An existing certificate is kept while it is from this CA, unrevoked and valid for more than
    ``renew_within_days``; otherwise a new key and certificate are issued. Returns ``out_dir``.
    ``revoked``: the revoked serials, when the caller checks many identities (read from the ledger if not given).
    """
    cert_path = out_dir / f"{name}.crt"
    if cert_path.exists() and (out_dir / f"{name}.key").exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if revoked is None:
            revoked = ca.revoked_serials()
        fresh = cert.not_valid_after_utc - _now() > dt.timedelta(days=renew_within_days)
        if cert.issuer == ca.cert.subject and cert.serial_number not in revoked and fresh:
            try:
                cert.verify_directly_issued_by(ca.cert)
            except (ValueError, TypeError, InvalidSignature):
                pass
            else:
                chain = out_dir / "ca.crt"
                if not chain.exists() or chain.read_bytes() != ca.chain_pem:
                    chain.write_bytes(ca.chain_pem)
                return out_dir
    key = new_private_key()
    cert = ca.issue(key.public_key(), name, kind=kind, dns_names=dns_names, ip_addresses=ip_addresses)
    write_identity(out_dir, name=name, key=key, cert=cert, chain_pem=ca.chain_pem)
    return out_dir
