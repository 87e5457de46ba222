"""``edgeloop pki ...``: EdgeLoop's own certificate authority, on its directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeloop.cli.output import fail, out
from edgeloop.errors import EdgeLoopError

__all__ = ["pki_app"]

pki_app = typer.Typer(no_args_is_help=True, help="EdgeLoop's own certificate authority.")
PKI_DIR = typer.Option("--dir", help="The PKI directory (created by `edgeloop pki init`).")


@pki_app.command("init")
def pki_init(directory: Annotated[Path, PKI_DIR]) -> None:
    """Create a root CA and an issuing CA (ECDSA P-256); private keys are written 0600."""
    from edgeloop.identity.pki import CertificateAuthority

    try:
        ca = CertificateAuthority.init(directory)
    except EdgeLoopError as exc:
        raise fail(str(exc)) from None
    out.print(f"PKI created in {directory}: root CA and issuing CA; devices and brokers trust "
              f"{ca.dir / 'ca-chain.pem'}")
    out.print("Keep root.key offline once the issuing CA exists: only issuing.key is needed day to day.")


@pki_app.command("issue")
def pki_issue(
    directory: Annotated[Path, PKI_DIR],
    out_dir: Annotated[Path, typer.Option("--out", help="Where NAME.key, NAME.crt and ca.crt are written.")],
    device: Annotated[str | None, typer.Option(help="Issue a device certificate for this device id.")] = None,
    service: Annotated[str | None, typer.Option(help="Issue a service certificate (e.g. edgeloop-ingest).")] = None,
    days: Annotated[int, typer.Option(min=1, max=3650)] = 365,
    hostname: Annotated[list[str] | None, typer.Option(help="DNS name(s) a service answers on (HTTPS).")] = None,
    ip: Annotated[list[str] | None, typer.Option(help="IP address(es) a service answers on (HTTPS).")] = None,
) -> None:
    """Issue a certificate directly (for operators; devices normally provision themselves with a CSR)."""
    from edgeloop.identity.pki import CertificateAuthority, new_private_key, write_identity

    if (device is None) == (service is None):
        raise fail("give exactly one of --device ID or --service NAME")
    name = device or service or ""
    try:
        ca = CertificateAuthority.open(directory)
        key = new_private_key()
        cert = ca.issue(key.public_key(), name, kind="device" if device else "service", days=days,
                        dns_names=hostname or (), ip_addresses=ip or ())
    except EdgeLoopError as exc:
        raise fail(str(exc)) from None
    write_identity(out_dir, name=name, key=key, cert=cert, chain_pem=ca.chain_pem)
    out.print(f"issued {name} (serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc:%Y-%m-%d}) "
              f"into {out_dir}: {name}.key (0600), {name}.crt, ca.crt")


@pki_app.command("revoke")
def pki_revoke(directory: Annotated[Path, PKI_DIR], name: Annotated[str, typer.Argument(help="Device id.")]) -> None:
    """Revoke every certificate of a device or service and rewrite the CRL."""
    from edgeloop.identity.pki import CertificateAuthority

    try:
        serials = CertificateAuthority.open(directory).revoke(name)
    except EdgeLoopError as exc:
        raise fail(str(exc)) from None
    out.print(f"revoked {len(serials)} certificate(s) of {name}; CRL {directory / 'crl.pem'} updated. "
              "Mosquitto: reload it (kill -HUP) to refuse new connections.")


@pki_app.command("crl")
def pki_crl(directory: Annotated[Path, PKI_DIR]) -> None:
    """Re-sign the CRL; run at least every 30 days (e.g. daily from cron), or brokers refuse every client."""
    from edgeloop.identity.pki import CRL_VALID_DAYS, CertificateAuthority

    try:
        CertificateAuthority.open(directory).write_crl()
    except EdgeLoopError as exc:
        raise fail(str(exc)) from None
    out.print(f"CRL {directory / 'crl.pem'} re-signed; valid for {CRL_VALID_DAYS} days")


