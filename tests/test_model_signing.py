"""Model signing: a version loads only when signed by our CA's model-signing key and its artifact is the one
signed. Each refusal has its own code, so an operator (and the audit log) can tell tampering from a wrong key."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from edgeloop.errors import ModelRefused
from edgeloop.identity.pki import CertificateAuthority, new_private_key, pem
from edgeloop.models.manifest import ModelManifest, ModelRef, Trigger, canonical, sha256_hex
from edgeloop.models.signing import ModelSigner, SignedModel, read_bundle, verify_signed, write_bundle

ARTIFACT = b"\x08\x07onnx-model-bytes" * 100


def _manifest(artifact: bytes = ARTIFACT, version: int = 1) -> ModelManifest:
    return ModelManifest(name="edge.pump", kind="edge", version=version, format="onnx",
                         artifact_sha256=sha256_hex(artifact), artifact_size=len(artifact), created_ms=1,
                         created_by="ana", code_version="test", trigger=Trigger(kind="person", by="ana"))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path_factory.mktemp("pki") / "pki")


def _refused(code: str, signed: SignedModel | None, artifact: bytes, ca: CertificateAuthority,
             revoked: frozenset[int] = frozenset()) -> None:
    with pytest.raises(ModelRefused) as err:
        verify_signed(signed, artifact, chain_pem=ca.chain_pem, revoked=revoked)
    assert err.value.code == code, err.value


def test_a_signed_bundle_round_trips_and_verifies(ca: CertificateAuthority) -> None:
    signer = ModelSigner.ensure(ca)
    blob = write_bundle(signer.sign(_manifest()), ARTIFACT)
    signed, artifact = read_bundle(blob)
    manifest = verify_signed(signed, artifact, chain_pem=ca.chain_pem)
    assert manifest.ref == ModelRef("edge.pump", 1) and artifact == ARTIFACT
    assert write_bundle(signer.sign(_manifest()), ARTIFACT)[:200] == blob[:200]  # deterministic layout


def test_the_signer_can_sign_but_never_connect(ca: CertificateAuthority) -> None:
    cert = x509.load_pem_x509_certificate(ModelSigner.ensure(ca).cert_pem)
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CODE_SIGNING]
    assert (ca.dir / "signers" / "model-signing.key").stat().st_mode & 0o077 == 0


def test_one_changed_artifact_byte_is_tampering(ca: CertificateAuthority) -> None:
    signed = ModelSigner.ensure(ca).sign(_manifest())
    bad = bytearray(ARTIFACT)
    bad[len(bad) // 2] ^= 0x01
    _refused("tampered", signed, bytes(bad), ca)
    _refused("tampered", signed, ARTIFACT + b"\0", ca)


def test_a_changed_manifest_breaks_the_signature(ca: CertificateAuthority) -> None:
    signed = ModelSigner.ensure(ca).sign(_manifest())
    forged = msgspec.structs.replace(_manifest(), version=2)  # e.g. to pass an old artifact off as a new version
    _refused("bad_signature", SignedModel(canonical(forged), signed.signature, signed.signer_pem), ARTIFACT, ca)


def test_unsigned_models_are_refused(ca: CertificateAuthority) -> None:
    signed = ModelSigner.ensure(ca).sign(_manifest())
    _refused("unsigned", None, ARTIFACT, ca)
    _refused("unsigned", SignedModel(signed.manifest_bytes, b"", signed.signer_pem), ARTIFACT, ca)
    parts, artifact = read_bundle(write_bundle(SignedModel(signed.manifest_bytes, b"", b""), ARTIFACT))
    _refused("unsigned", parts, artifact, ca)


def test_a_signer_of_another_ca_is_untrusted(ca: CertificateAuthority, tmp_path: Path) -> None:
    other = CertificateAuthority.init(tmp_path / "other", name="Other")
    _refused("untrusted_signer", ModelSigner.ensure(other).sign(_manifest()), ARTIFACT, ca)


def test_a_device_certificate_of_our_ca_is_not_a_signer(ca: CertificateAuthority) -> None:
    key = new_private_key()
    device = ca.issue(key.public_key(), "pump-7", kind="device")

    _refused("not_a_signer", ModelSigner(key, pem(device)).sign(_manifest()), ARTIFACT, ca)


def test_a_revoked_signer_is_refused(ca: CertificateAuthority) -> None:
    signed = ModelSigner.ensure(ca).sign(_manifest())
    serial = x509.load_pem_x509_certificate(signed.signer_pem).serial_number
    _refused("revoked_signer", signed, ARTIFACT, ca, revoked=frozenset({serial}))


@pytest.mark.parametrize("blob", [b"", b"PK\x03\x04garbage", b"not a zip at all" * 10])
def test_garbage_is_not_a_bundle(blob: bytes) -> None:
    with pytest.raises(ModelRefused) as err:
        read_bundle(blob)
    assert err.value.code == "bad_bundle"
