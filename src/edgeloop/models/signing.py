"""Signing model versions with a key issued by the platform's own CA, and the checks every loader makes.

The platform holds a **model-signing** certificate (``PKI_DIR/signers/model-signing.{crt,key}``, ``OU=signer``,
EKU codeSigning only: it can sign artifacts but never authenticate a connection). A version's canonical manifest
(:func:`edgeloop.models.manifest.canonical`, which holds the artifact's SHA-256 and size) is signed with
ECDSA P-256 / SHA-256. :func:`verify_signed` is the one check the platform and the agent make before loading
anything, in this order, each failure a :class:`~edgeloop.errors.ModelRefused` with a stable code:

1. ``unsigned``: no signature or no signer certificate;
2. ``untrusted_signer``: the signer certificate is not issued by our issuing CA (chained to our root), or is
   outside its validity;
3. ``not_a_signer``: a certificate of our CA, but not a signer's (a device's or a service's);
4. ``revoked_signer``: its serial is revoked;
5. ``bad_signature``: the signature does not match the manifest bytes;
6. ``bad_manifest``: the signed bytes are not a manifest;
7. ``tampered``: the artifact's size or SHA-256 differs from what the manifest says.

A **signed model file** (``.elm``; :func:`write_bundle` / :func:`read_bundle`) carries all four parts in one zip
(stored, not compressed: ONNX and pickles barely compress): ``manifest.json``, ``signature.der``, ``signer.pem``,
``artifact.bin``. It is what ``edgeloop models export`` writes and what the agent loads.
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeloop.errors import ModelRefused
from edgeloop.identity.pki import CertificateAuthority, ensure_identity, load_private_key
from edgeloop.models.manifest import ModelManifest, canonical, decode_manifest, sha256_hex

__all__ = ["MAX_ARTIFACT_BYTES", "SIGNER_NAME", "ModelSigner", "SignedModel", "read_bundle", "verify_signed",
           "write_bundle"]

SIGNER_NAME = "model-signing"
MAX_ARTIFACT_BYTES = 512 * 1024 * 1024  # a bundle's artifact larger than this is refused before it is read
_MAX_PART_BYTES = 1024 * 1024  # manifest, signature and certificate
_PARTS = ("manifest.json", "signature.der", "signer.pem", "artifact.bin")


@dataclass(frozen=True, slots=True)
class SignedModel:
    """A manifest as signed: its canonical bytes, the DER signature over them, the signer's certificate (PEM)."""

    manifest_bytes: bytes
    signature: bytes
    signer_pem: bytes


class ModelSigner:
    """The platform's model-signing key and certificate."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert_pem: bytes) -> None:
        self._key = key
        self.cert_pem = cert_pem

    @classmethod
    def ensure(cls, ca: CertificateAuthority, *, directory: Path | None = None) -> ModelSigner:
        """The signer of ``ca``'s PKI (issued on first use, renewed near expiry, in ``PKI_DIR/signers``)."""
        out = directory if directory is not None else ca.dir / "signers"
        ensure_identity(ca, out, SIGNER_NAME, kind="signer")
        return cls(load_private_key(out / f"{SIGNER_NAME}.key"), (out / f"{SIGNER_NAME}.crt").read_bytes())

    def sign(self, manifest: ModelManifest) -> SignedModel:
        data = canonical(manifest)
        return SignedModel(data, self._key.sign(data, ec.ECDSA(hashes.SHA256())), self.cert_pem)


def verify_signed(signed: SignedModel | None, artifact: bytes | None, *, chain_pem: bytes,
                  revoked: frozenset[int] = frozenset(), now: dt.datetime | None = None) -> ModelManifest:
    """The manifest, once the signature, the signer and the artifact check out (see the module doc).

    ``chain_pem``: our issuing CA then our root (``ca-chain.pem``, the agent's ``ca.crt``). ``artifact`` None
    checks the signature and the signer only (a version whose artifact is read later, in pieces).
    """
    if signed is None or not signed.signature or not signed.signer_pem:
        raise ModelRefused("unsigned", "the model carries no signature; only models signed by the platform's "
                           "model-signing key are loaded")
    signer = _signer_cert(signed.signer_pem, chain_pem, revoked, now or dt.datetime.now(dt.UTC))
    public = signer.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise ModelRefused("not_a_signer", "the signer's key is not an EC key")
    try:
        public.verify(signed.signature, signed.manifest_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ModelRefused("bad_signature", "the signature does not match the manifest: it was changed after "
                           "signing, or signed by another key") from None
    manifest = decode_manifest(signed.manifest_bytes)
    if artifact is not None and (len(artifact) != manifest.artifact_size
                                 or sha256_hex(artifact) != manifest.artifact_sha256):
        raise ModelRefused("tampered", f"the artifact of {manifest.ref} ({len(artifact)} bytes) is not the one "
                           f"signed ({manifest.artifact_size} bytes, sha256 {manifest.artifact_sha256[:12]}…)")
    return manifest


def _signer_cert(signer_pem: bytes, chain_pem: bytes, revoked: frozenset[int], now: dt.datetime) -> x509.Certificate:
    try:
        cert = x509.load_pem_x509_certificate(signer_pem)
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise ModelRefused("untrusted_signer", f"unreadable certificate: {exc}") from None
    if len(chain) < 2:
        raise ModelRefused("untrusted_signer", "the trust chain must hold the issuing CA and the root")
    issuing, root = chain[0], chain[-1]
    try:
        issuing.verify_directly_issued_by(root)
        cert.verify_directly_issued_by(issuing)
    except (ValueError, TypeError, InvalidSignature):
        raise ModelRefused("untrusted_signer", f"the signer {_cn(cert)!r} is not issued by this platform's CA") \
            from None
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ModelRefused("untrusted_signer", f"the signer's certificate is not valid at {now:%Y-%m-%d %H:%M}Z")
    units = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = x509.ExtendedKeyUsage([])
    if units != ["signer"] or ExtendedKeyUsageOID.CODE_SIGNING not in usages:
        raise ModelRefused("not_a_signer", f"{_cn(cert)!r} ({', '.join(map(str, units)) or 'no unit'}) is not a "
                           "model-signing certificate")
    if cert.serial_number in revoked:
        raise ModelRefused("revoked_signer", f"the signer's certificate (serial {cert.serial_number:x}) is revoked")
    return cert


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else "?"


def write_bundle(signed: SignedModel, artifact: bytes) -> bytes:
    """One ``.elm`` file: the signed manifest, its signer and the artifact."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in zip(_PARTS, (signed.manifest_bytes, signed.signature, signed.signer_pem, artifact),
                              strict=True):
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def read_bundle(data: bytes) -> tuple[SignedModel | None, bytes]:
    """The parts of a ``.elm`` file (``None`` for the signature when it has none: :func:`verify_signed` then
    refuses it as ``unsigned``). Not a bundle, or parts over their size limits: ``ModelRefused("bad_bundle")``."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = {i.filename: i for i in z.infolist()}
            if "manifest.json" not in infos or "artifact.bin" not in infos:
                raise ModelRefused("bad_bundle", "not a signed model file (manifest.json and artifact.bin expected)")
            for name, info in infos.items():
                limit = MAX_ARTIFACT_BYTES if name == "artifact.bin" else _MAX_PART_BYTES
                if info.file_size > limit:
                    raise ModelRefused("bad_bundle", f"{name} is {info.file_size} bytes (limit {limit})")
            parts = {name: z.read(name) for name in _PARTS if name in infos}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ModelRefused("bad_bundle", f"not a signed model file: {exc}") from None
    signature, signer = parts.get("signature.der", b""), parts.get("signer.pem", b"")
    signed = SignedModel(parts["manifest.json"], signature, signer) if signature and signer else None
    return signed, parts["artifact.bin"]

