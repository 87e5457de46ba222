"""Zero-touch provisioning: enrollments, claims, and CSR-based device certificates.

An operator creates an *enrollment* for a batch of devices: where they go (tenant,
line, optional asset), their device profile, which serial numbers may join (or any,
up to ``max_devices``), and until when. It yields a *claim* ``GROUP.SECRET``, shown
once; the platform stores only its SHA-256.

On first power-on a device generates its own key pair, derives its id
``device_id_for(GROUP, SERIAL)`` (its certificate subject) and sends
``{claim, serial, csr}``. The platform checks, in this order, and refuses with a
reason (and an audit record) at the first failure:

1. the claim is well-formed and names an enrollment whose hash matches (constant-time);
2. the enrollment has not expired; the serial is allowed and the batch is not full;
3. the derived id is neither reserved for the platform itself (``identity.reserved``) nor a device (or the
   asset it would get) of another tenant: a certificate names an identity, so it must never name another's;
4. the CSR parses, its signature verifies, its subject is exactly the derived id, P-256;
5. the serial has not been used before (atomically, in the store);

then issues the certificate, registers the device (and its asset) and returns the
certificate and CA chain. The private key never leaves the device.

*Renewal* (before expiry, without downtime): the device generates a new key pair and sends
its current certificate, a CSR for the new key (same subject) and a signature over the CSR
made with its *current* key. The platform checks the certificate was issued by our CA, is
within its validity and not revoked, that the signature proves possession of its key, and
issues a new certificate; the old one stays valid until it expires, so the device switches
over whenever it reconnects.

Both routes are unauthenticated by design (the claim or the current key is the credential),
so they are rate limited per client address.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgeloop.assets import Asset, Device
from edgeloop.clock import Clock
from edgeloop.errors import ConflictError, EdgeLoopError
from edgeloop.identity.auth import OncePer, RateLimiter
from edgeloop.identity.crl import RevocationList
from edgeloop.identity.pki import MAX_CSR_BYTES, CertificateAuthority, PkiError, check_csr, pem
from edgeloop.identity.reserved import group_is_reserved, reserved_reason
from edgeloop.messages import ID_PATTERN
from edgeloop.registry import RegistryService
from edgeloop.store.base import AuditRecord, Enrollment, Store

MAX_SERIAL_LENGTH = 40
GROUP_PATTERN = r"^[a-z0-9][a-z0-9-]{0,22}$"


class ProvisioningError(EdgeLoopError):
    """A provisioning request was refused. ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, code: str, detail: str, *, retry_after_s: int = 0) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class EnrollmentRequest:
    group: str
    tenant: str
    line: str
    profile: str
    expires_in_ms: int = 24 * 3_600_000
    asset: str | None = None
    serials: tuple[str, ...] | None = None
    max_devices: int | None = None


@dataclass(frozen=True, slots=True)
class Provisioned:
    device_id: str
    certificate_pem: str
    ca_chain_pem: str


def claim_hash(claim: str) -> str:
    return hashlib.sha256(claim.encode()).hexdigest()


def normalise_serial(serial: str) -> str:
    return serial.strip()


def device_id_for(group: str, serial: str) -> str:
    """The device id (and certificate subject) of ``serial`` in enrollment ``group``: ``group-serial``, lower case,
    with any character outside ``[a-z0-9_.-]`` replaced by ``-``.

    >>> device_id_for("press-line-2", "SN 0042/B")
    'press-line-2-sn-0042-b'
    """
    cleaned = re.sub(r"[^a-z0-9_.-]", "-", normalise_serial(serial).lower())
    return f"{group}-{cleaned}"


def group_of_claim(claim: str) -> str:
    group, sep, secret = claim.partition(".")
    if not sep or not re.fullmatch(GROUP_PATTERN, group) or len(secret) < 16:
        raise ProvisioningError(401, "bad_claim", "the claim is not a valid EdgeLoop claim (GROUP.SECRET)")
    return group


def renewal_signature(key: ec.EllipticCurvePrivateKey, csr_pem: bytes) -> str:
    """The proof of possession a renewal carries: the CSR signed with the device's current key (base64)."""
    return base64.b64encode(key.sign(csr_pem, ec.ECDSA(hashes.SHA256()))).decode()


class ProvisioningService:
    def __init__(self, *, store: Store, registry: RegistryService, ca: CertificateAuthority, clock: Clock,
                 limiter: RateLimiter | None = None) -> None:
        self.store = store
        self.registry = registry
        self.ca = ca
        self.clock = clock
        self.limiter = limiter or RateLimiter(rate_per_s=20, burst=200)
        self.revocations = RevocationList(ca.dir / "crl.pem", ca.cert)
        self._limited_audited = OncePer(60_000)

    async def admit(self, action: str, source: str) -> None:
        """Rate limit per address (429 with Retry-After); the first refusal per address per minute is audited."""
        now = self.clock.now_ms()
        wait = self.limiter.take(source, now)
        if not wait:
            return
        if self._limited_audited.due(source, now):
            await self.store.audit(AuditRecord(ts_ms=now, actor="anonymous", action=action, target=source,
                                               outcome="refused", detail="rate limited", source=source))
        raise ProvisioningError(429, "rate_limited", f"too many requests from {source}; retry in {wait} s",
                                retry_after_s=wait)

    async def create_enrollment(self, req: EnrollmentRequest, *, by: str, source: str = "") -> tuple[Enrollment, str]:
        """Create an enrollment; returns it and its claim (the only time the claim is available)."""
        if not re.fullmatch(GROUP_PATTERN, req.group):
            raise ConflictError(f"group {req.group!r}: use 1-23 lowercase letters, digits or '-'")
        reg = self.registry.registry
        if req.tenant not in reg.tenants:
            raise ConflictError(f"tenant {req.tenant!r} does not exist")
        if reg.tenant_of("line", req.line) != req.tenant:
            raise ConflictError(f"line {req.line!r} does not exist in tenant {req.tenant!r}")
        if req.profile not in reg.profiles:
            raise ConflictError(f"device profile {req.profile!r} does not exist")
        if req.asset is not None and reg.tenant_of("asset", req.asset) != req.tenant:
            raise ConflictError(f"asset {req.asset!r} does not exist in tenant {req.tenant!r}")
        serials = None if req.serials is None else tuple(sorted({normalise_serial(s) for s in req.serials if s}))
        for sn in serials or ():
            self._check_serial(req.group, sn)
        try:
            if group_is_reserved(req.group):
                raise ProvisioningError(409, "identity_reserved", f"group {req.group!r}: every device id it spells is "
                                        "reserved for the platform's own services")
            for sn in serials or ():
                self._check_identity(device_id_for(req.group, sn), req.tenant, req.asset)
        except ProvisioningError as exc:
            await self.store.audit(AuditRecord(ts_ms=self.clock.now_ms(), actor=by, action="enrollment.create",
                                               target=req.group, outcome="refused", source=source,
                                               detail=f"{exc.code}: {exc.detail}"))
            raise
        claim = f"{req.group}.{secrets.token_urlsafe(24)}"
        now = self.clock.now_ms()
        enrollment = Enrollment(id=req.group, tenant=req.tenant, line=req.line, profile=req.profile,
                                claim_hash=claim_hash(claim), expires_ms=now + req.expires_in_ms, created_ms=now,
                                created_by=by, asset=req.asset, serials=serials, max_devices=req.max_devices)
        await self.store.put_enrollment(enrollment)
        await self.store.audit(AuditRecord(ts_ms=now, actor=by, action="enrollment.create", target=req.group,
                                           outcome="ok", source=source,
                                           detail=f"{len(serials) if serials else 'any'} serials"))
        return enrollment, claim

    async def provision(self, *, claim: str, serial: str, csr_pem: bytes, source: str = "") -> Provisioned:
        """Check everything, then issue and register; every refusal is audited and raised as ProvisioningError."""
        await self.admit("provision", source)
        try:
            return await self._provision(claim, serial, csr_pem, source)
        except ProvisioningError as exc:
            await self.store.audit(AuditRecord(
                ts_ms=self.clock.now_ms(), actor="anonymous", action="provision", target=serial[:MAX_SERIAL_LENGTH],
                outcome="refused", detail=f"{exc.code}: {exc.detail}", source=source))
            raise

    async def _provision(self, claim: str, serial: str, csr_pem: bytes, source: str) -> Provisioned:
        group = group_of_claim(claim)
        enrollment = await self.store.get_enrollment(group)
        if enrollment is None or not hmac.compare_digest(enrollment.claim_hash, claim_hash(claim)):
            raise ProvisioningError(401, "unknown_claim", "the claim is not valid")
        now = self.clock.now_ms()
        if now >= enrollment.expires_ms:
            raise ProvisioningError(403, "expired_claim", "the claim has expired; ask for a new enrollment")
        serial = normalise_serial(serial)
        device_id = self._check_serial(group, serial, status=403)
        if enrollment.serials is not None and serial not in enrollment.serials:
            raise ProvisioningError(403, "serial_not_allowed", f"serial {serial!r} is not part of this enrollment")
        if enrollment.max_devices is not None and await self.store.provisioned_count(group) >= enrollment.max_devices:
            raise ProvisioningError(403, "enrollment_full", f"all {enrollment.max_devices} devices have provisioned")
        self._check_identity(device_id, enrollment.tenant, enrollment.asset)
        try:
            public_key = check_csr(csr_pem, common_name=device_id)
        except PkiError as exc:
            raise ProvisioningError(422, "bad_csr", str(exc)) from exc
        if not await self.store.claim_serial(group, serial, device_id, now):
            raise ProvisioningError(409, "serial_used", f"serial {serial!r} has already provisioned; a device renews "
                                    "its certificate with its current one instead")
        self._check_identity(device_id, enrollment.tenant, enrollment.asset)  # again: the registry may have moved
        cert = self.ca.issue(public_key, device_id, kind="device")
        asset = enrollment.asset or device_id
        if asset not in self.registry.registry.assets:
            await self.registry.put_asset(Asset(id=asset, line=enrollment.line, kind=enrollment.profile,
                                                name=f"{device_id} (serial {serial})"))
        await self.registry.put_device(Device(id=device_id, tenant=enrollment.tenant, asset=asset,
                                              profile=enrollment.profile, name=serial))
        await self.store.audit(AuditRecord(ts_ms=now, actor=f"device:{device_id}", action="provision", target=serial,
                                           outcome="ok", source=source,
                                           detail=f"certificate serial {cert.serial_number:x}"))
        return Provisioned(device_id=device_id, certificate_pem=pem(cert).decode(),
                           ca_chain_pem=self.ca.chain_pem.decode())

    async def renew(self, *, certificate_pem: bytes, csr_pem: bytes, signature: str, source: str = "") -> Provisioned:
        """Issue a new certificate to the holder of a current one (see the module docstring); audited either way."""
        await self.admit("certificate.renew", source)
        try:
            device_id, public_key = self._check_renewal(certificate_pem, csr_pem, signature)
        except ProvisioningError as exc:
            await self.store.audit(AuditRecord(
                ts_ms=self.clock.now_ms(), actor="anonymous", action="certificate.renew", target="",
                outcome="refused", detail=f"{exc.code}: {exc.detail}", source=source))
            raise
        cert = self.ca.issue(public_key, device_id, kind="device")
        await self.store.audit(AuditRecord(ts_ms=self.clock.now_ms(), actor=f"device:{device_id}",
                                           action="certificate.renew", target=device_id, outcome="ok", source=source,
                                           detail=f"new certificate serial {cert.serial_number:x}"))
        return Provisioned(device_id=device_id, certificate_pem=pem(cert).decode(),
                           ca_chain_pem=self.ca.chain_pem.decode())

    def _check_renewal(
        self, certificate_pem: bytes, csr_pem: bytes, signature: str
    ) -> tuple[str, ec.EllipticCurvePublicKey]:
        if len(certificate_pem) > MAX_CSR_BYTES:
            raise ProvisioningError(413, "bad_certificate", "the certificate is too large")
        try:
            current = x509.load_pem_x509_certificate(certificate_pem)
            current.verify_directly_issued_by(self.ca.cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise ProvisioningError(401, "bad_certificate", "the certificate was not issued by this platform") from exc
        now = dt.datetime.now(dt.UTC)  # certificates live in real time, as the CA that issued them does
        if not current.not_valid_before_utc <= now < current.not_valid_after_utc:
            raise ProvisioningError(401, "expired_certificate", "the certificate is not valid now; an expired "
                                    "device must be provisioned again (new enrollment)")
        if current.serial_number in self.revocations.serials():
            raise ProvisioningError(403, "revoked_certificate", "the certificate is revoked")
        names = current.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        units = current.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
        if not names or not units or units[0].value != "device":
            raise ProvisioningError(403, "not_a_device", "only device certificates renew here; services use "
                                    "`edgeloop pki issue`")
        device_id = str(names[0].value)
        reason = reserved_reason(device_id)
        if reason is not None:  # issued before such names were refused: it must not live on
            raise ProvisioningError(409, "identity_reserved", reason)
        key = current.public_key()
        try:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise ValueError("not an EC key")
            key.verify(base64.b64decode(signature, validate=True), csr_pem, ec.ECDSA(hashes.SHA256()))
        except (ValueError, InvalidSignature) as exc:
            raise ProvisioningError(401, "bad_signature", "the signature does not prove possession of the "
                                    "certificate's key") from exc
        if device_id not in self.registry.registry.devices:
            raise ProvisioningError(403, "unknown_device", f"device {device_id!r} is not registered")
        try:
            return device_id, check_csr(csr_pem, common_name=device_id)
        except PkiError as exc:
            raise ProvisioningError(422, "bad_csr", str(exc)) from exc

    def _check_identity(self, device_id: str, tenant: str, asset: str | None) -> None:
        """Refuse (409) an id the platform keeps for itself, or one that names another tenant's device, or whose
        own asset (an enrollment without ``asset`` gives each device one of its id) is another tenant's."""
        reason = reserved_reason(device_id)
        if reason is not None:
            raise ProvisioningError(409, "identity_reserved", reason)
        reg = self.registry.registry
        existing = reg.devices.get(device_id)
        owner = existing.tenant if existing is not None else reg.tenant_of("asset", asset or device_id)
        if owner is not None and owner != tenant:
            raise ProvisioningError(409, "identity_taken", f"device id {device_id!r} is already in use; choose "
                                    "another group or serial")

    @staticmethod
    def _check_serial(group: str, serial: str, status: int = 409) -> str:
        device_id = device_id_for(group, serial)
        if not serial or len(serial) > MAX_SERIAL_LENGTH or not re.fullmatch(ID_PATTERN, device_id):
            raise ProvisioningError(status, "bad_serial", f"serial {serial[:MAX_SERIAL_LENGTH]!r} is not usable "
                                    f"(1-{MAX_SERIAL_LENGTH} characters)")
        return device_id
