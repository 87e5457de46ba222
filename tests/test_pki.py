"""The PKI: CA creation, certificate requests (and their refusals), revocation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeloop.errors import ConfigError
from edgeloop.identity.pki import CertificateAuthority, PkiError, build_csr, new_private_key


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "pki")


def test_init_writes_private_keys_for_the_owner_only(ca: CertificateAuthority) -> None:
    for name in ("root.key", "issuing.key"):
        assert stat.S_IMODE((ca.dir / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.dir.stat().st_mode) == 0o700
    with pytest.raises(ConfigError, match="already holds a PKI"):
        CertificateAuthority.init(ca.dir)


def test_open_a_missing_pki_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="edgeloop pki init"):
        CertificateAuthority.open(tmp_path / "nothing")


def test_device_certificate_chains_to_the_root(ca: CertificateAuthority) -> None:
    key = new_private_key()
    cert = CertificateAuthority.open(ca.dir).sign_csr(build_csr(key, "pump-7"), common_name="pump-7")
    cert.verify_directly_issued_by(ca.cert)
    ca.cert.verify_directly_issued_by(ca.root)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pump-7"
    assert cert.public_key() == key.public_key()
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH], "a device certificate cannot serve TLS"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert [e.subject for e in ca.issued()] == ["pump-7"]


def test_csr_for_another_identity_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(PkiError, match="asks for 'pump-8'"):
        ca.sign_csr(build_csr(new_private_key(), "pump-8"), common_name="pump-7")


def test_tampered_csr_is_refused(ca: CertificateAuthority) -> None:
    csr = x509.load_pem_x509_csr(build_csr(new_private_key(), "pump-7"))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-10] ^= 0x01  # flip one bit of the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(PkiError, match="does not verify"):
        ca.sign_csr(tampered, common_name="pump-7")


@pytest.mark.parametrize("garbage", [b"", b"hello", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                                     b"-----END CERTIFICATE REQUEST-----\n"])
def test_garbage_is_refused_clearly(ca: CertificateAuthority, garbage: bytes) -> None:
    with pytest.raises(PkiError, match="not a PEM certificate signing request"):
        ca.sign_csr(garbage, common_name="pump-7")


def test_oversized_request_is_refused_before_parsing(ca: CertificateAuthority) -> None:
    with pytest.raises(PkiError, match="over the 8192-byte limit"):
        ca.sign_csr(b"x" * 10_000, common_name="pump-7")


def test_only_p256_keys(ca: CertificateAuthority) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pump-7")]))
           .sign(rsa_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    with pytest.raises(PkiError, match="P-256"):
        ca.sign_csr(csr, common_name="pump-7")
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(PkiError, match="P-256"):
        ca.sign_csr(build_csr(p384, "pump-7"), common_name="pump-7")  # type: ignore[arg-type]


def test_invalid_identity_names_are_refused(ca: CertificateAuthority) -> None:
    for name in ("Pump 7", "../etc", "a" * 65, ""):
        with pytest.raises(PkiError, match="not a valid identity"):
            ca.issue(new_private_key().public_key(), name)


def test_revocation_lists_every_certificate_of_the_identity(ca: CertificateAuthority) -> None:
    first = ca.issue(new_private_key().public_key(), "pump-7")
    renewed = ca.issue(new_private_key().public_key(), "pump-7")
    other = ca.issue(new_private_key().public_key(), "pump-8")
    assert sorted(ca.revoke("pump-7")) == sorted([first.serial_number, renewed.serial_number])
    crl = x509.load_pem_x509_crl((ca.dir / "crl.pem").read_bytes())
    assert crl.is_signature_valid(ca.cert.public_key())
    revoked = {r.serial_number for r in crl}
    assert revoked == {first.serial_number, renewed.serial_number}
    assert other.serial_number not in revoked
    with pytest.raises(PkiError, match="no valid certificate"):
        ca.revoke("pump-7")


def test_pki_commands(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgeloop.cli import app

    run = CliRunner().invoke
    pki, dev = tmp_path / "pki", tmp_path / "dev"
    assert run(app, ["pki", "init", "--dir", str(pki)]).exit_code == 0
    again = run(app, ["pki", "init", "--dir", str(pki)])
    assert again.exit_code == 1
    assert "already holds a PKI" in " ".join(again.output.split())  # rich wraps long paths
    assert run(app, ["pki", "issue", "--dir", str(pki), "--device", "pump-1", "--out", str(dev)]).exit_code == 0
    cert = x509.load_pem_x509_certificate((dev / "pump-1.crt").read_bytes())
    assert stat.S_IMODE((dev / "pump-1.key").stat().st_mode) == 0o600
    cert.verify_directly_issued_by(CertificateAuthority.open(pki).cert)
    both = run(app, ["pki", "issue", "--dir", str(pki), "--out", str(dev)])
    assert both.exit_code == 1
    assert "exactly one of --device" in " ".join(both.output.split())
    assert run(app, ["pki", "revoke", "--dir", str(pki), "pump-1"]).exit_code == 0
    crl = x509.load_pem_x509_crl((pki / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    missing = run(app, ["pki", "issue", "--dir", str(tmp_path / "none"), "--device", "x", "--out", str(dev)])
    assert missing.exit_code == 1
    assert "edgeloop pki init" in " ".join(missing.output.split())


def test_crl_freshness_is_known(ca: CertificateAuthority) -> None:
    """The platform re-signs the CRL when less than 15 days are left (brokers refuse everyone on an expired one)."""
    import datetime as dt

    assert not ca.crl_expires_within(dt.timedelta(days=15))
    assert ca.crl_expires_within(dt.timedelta(days=31))
    (ca.dir / "crl.pem").write_text("garbage")
    assert ca.crl_expires_within(dt.timedelta(days=15)), "an unreadable CRL needs re-signing too"


def test_ledger_of_an_older_pki_is_converted(ca: CertificateAuthority) -> None:
    """PKIs from before the append-only ledger kept issued.json; their history survives the conversion."""
    import json

    (ca.dir / "issued.jsonl").unlink()
    (ca.dir / "issued.json").write_text(json.dumps([
        {"serial": 7, "subject": "pump-1", "kind": "device", "not_after": "2030-01-01T00:00:00+00:00",
         "revoked_at": None},
        {"serial": 8, "subject": "pump-2", "kind": "device", "not_after": "2030-01-01T00:00:00+00:00",
         "revoked_at": "2026-01-01T00:00:00+00:00"}]))
    ca = CertificateAuthority.open(ca.dir)  # opening a PKI converts its ledger
    assert [(e.serial, e.revoked_at is not None) for e in ca.issued()] == [(7, False), (8, True)]
    assert not (ca.dir / "issued.json").exists()
    ca.revoke("pump-1")
    assert ca.revoked_serials() == {7, 8}
