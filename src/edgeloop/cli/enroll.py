"""Zero-touch provisioning, both sides: ``edgeloop enroll create`` (an operator makes a batch's claim) and the
device's ``edgeloop provision`` and ``edgeloop renew``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeloop.cli.client import DEFAULT_URL, Url, api, verify
from edgeloop.cli.durations import parse_duration
from edgeloop.cli.output import fail, out, ts
from edgeloop.errors import EdgeLoopError

__all__ = ["device_app", "enroll_app"]

enroll_app = typer.Typer(no_args_is_help=True, help="Enrollments for zero-touch device provisioning.")
device_app = typer.Typer()
"""The device-side commands, at the top level: ``provision`` and ``renew``."""


@enroll_app.command("create")
def enroll_create(
    group: Annotated[str, typer.Option(help="Enrollment name; devices become GROUP-SERIAL.")],
    profile: Annotated[str, typer.Option(help="Device profile of the batch.")],
    tenant: Annotated[str, typer.Option(help="Tenant the devices belong to.")],
    line: Annotated[str, typer.Option(help="Line the devices' assets are placed on.")],
    asset: Annotated[str | None, typer.Option(help="Put every device under this asset (default: one each).")] = None,
    serials: Annotated[Path | None, typer.Option(help="File with the allowed serial numbers, one per line.")] = None,
    max_devices: Annotated[int | None, typer.Option(help="Without --serials: at most this many devices.")] = None,
    expires: Annotated[str, typer.Option(help="How long the claim is valid: 30m, 24h, 7d.")] = "24h",
    by: Annotated[str, typer.Option(help="Who creates it (audit log).")] = "operator",
    url: Url = DEFAULT_URL,
) -> None:
    """Create an enrollment and print its claim credential (shown once; give it to the devices' installer)."""
    listed = None
    if serials is not None:
        if not serials.exists():
            raise fail(f"serials file {serials} does not exist")
        listed = [ln.strip() for ln in serials.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    body = {"group": group, "tenant": tenant, "line": line, "profile": profile, "asset": asset,
            "serials": listed, "max_devices": max_devices, "expires_in_s": int(parse_duration(expires, "--expires")),
            "by": by}
    doc = api("POST", url, "/api/v1/enrollments", body)
    out.print(f"enrollment {doc['group']}: {doc['serials'] if doc['serials'] is not None else 'any'} serials, "
              f"expires {ts(doc['expires_ms'])} UTC")
    out.print("claim (shown once, store it safely):")
    out.print(doc["claim"], highlight=False, soft_wrap=True)


@device_app.command()
def provision(
    url: Annotated[str, typer.Option(help="The platform's base URL.")],
    claim: Annotated[str, typer.Option(help="The enrollment's claim credential.")],
    serial: Annotated[str, typer.Option(help="This device's serial number.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Where DEVICE.key (0600), DEVICE.crt and ca.crt go.")],
) -> None:
    """Device side of zero-touch provisioning: make a key here, send a CSR, store the certificate."""
    from edgeloop.identity.client import provision_device

    try:
        ident = provision_device(url=url, claim=claim, serial=serial, out_dir=out_dir, verify=verify())
    except EdgeLoopError as exc:
        raise fail(str(exc)) from None
    out.print(f"provisioned as {ident.cert.stem}: {ident.key} (private key, never sent), {ident.cert}, {ident.ca}")


@device_app.command()
def renew(
    url: Annotated[str, typer.Option(help="The platform's base URL.")],
    identity_dir: Annotated[Path, typer.Option("--dir", help="The device's identity folder (from `provision`).")],
    device: Annotated[str | None, typer.Option(help="Device id (default: the only certificate in --dir).")] = None,
    if_expires_within: Annotated[str | None, typer.Option(help="Renew only if the certificate expires within "
                                                          "this long (30d, 12h); for a daily timer.")] = None,
) -> None:
    """Device side of renewal: a new key, proven with the current certificate; swapped in without downtime."""
    import datetime as dt

    from cryptography import x509

    from edgeloop.identity.client import renew_device
    from edgeloop.identity.tls import TlsIdentity

    due_within = None if if_expires_within is None else parse_duration(if_expires_within, "--if-expires-within")
    if device is None:
        found = sorted(p.stem for p in identity_dir.glob("*.crt") if p.name != "ca.crt")
        if len(found) != 1:
            raise fail(f"{identity_dir} holds {len(found)} device certificates; name one with --device")
        device = found[0]
    try:
        ident = TlsIdentity.from_dir(identity_dir, device)
        expires = x509.load_pem_x509_certificate(ident.cert.read_bytes()).not_valid_after_utc
        if due_within is not None:
            left = expires - dt.datetime.now(dt.UTC)
            if left > dt.timedelta(seconds=due_within):
                out.print(f"{device}: certificate valid until {expires:%Y-%m-%d}; not due for renewal")
                return
        ident = renew_device(url=url, identity=ident, verify=verify())
    except EdgeLoopError as exc:
        raise fail(str(exc)) from None
    new_expiry = x509.load_pem_x509_certificate(ident.cert.read_bytes()).not_valid_after_utc
    out.print(f"renewed {device}: new key and certificate in {identity_dir}, valid until {new_expiry:%Y-%m-%d}; "
              "the old certificate stays valid until it expires")


