"""Why the broker connection failed, in plain words, logged once per cause (not once per retry).

Three places a refusal shows up in paho:

* the broker answers CONNACK with a failure (``not authorised``: e.g. a revoked certificate on the embedded
  broker, or an identity the ACL refuses; ``bad user name or password``; ``server unavailable`` ...);
* the connection attempt raises: nothing listens (refused), the host is unreachable or unknown, a timeout, or
  the TLS handshake fails on our side (the broker's certificate is not from the CA in ``uplink.tls``, is expired,
  or does not name the host we dialled);
* the TLS handshake fails on the broker's side (TLS 1.3 finishes the client's half first): the broker's alert
  arrives when the first packet is read, which paho logs as an error before it reports the disconnect, or the
  broker just closes the connection before any CONNACK (the embedded broker does). Then the agent checks its own
  certificate against the CA it trusts (which is the broker's, or the handshake would have failed on our side):
  issued by another CA, expired or not yet valid, each said as such (``identity_cause``).

``RefusalLog`` writes one warning per cause per ``window_ms`` naming the device and the cause, and how many
further refusals of that cause it held back; a successful connection after a refusal is said once.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import ssl
import threading
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from edgeloop.identity.tls import TlsIdentity
from edgeloop.log_limit import LogLimiter

log = logging.getLogger("edgeloop.agent.uplink")

# OpenSSL alert names (what the broker told us about our certificate) and verify messages (what we found wrong
# with the broker's), each with the cause and what to do about it
_TLS_CAUSES: tuple[tuple[str, str, str], ...] = (
    ("CERTIFICATE_REVOKED", "certificate revoked",
     "the broker refused this device's certificate: it is revoked; provision the device again"),
    ("UNKNOWN_CA", "unknown CA",
     "the broker does not trust this device's certificate (issued by another CA); provision it with this "
     "platform"),
    ("CERTIFICATE_EXPIRED", "certificate expired",
     "the broker refused this device's certificate: it has expired; renew it (`edgeloop renew`)"),
    ("CERTIFICATE_REQUIRED", "no certificate",
     "the broker requires a client certificate (mutual TLS); set uplink.tls"),
    ("BAD_CERTIFICATE", "bad certificate", "the broker refused this device's certificate"),
    ("HANDSHAKE_FAILURE", "TLS handshake failure", "the broker and the agent agree on no TLS settings"),
    ("WRONG_VERSION_NUMBER", "not TLS",
     "the broker does not speak TLS on this port (plain MQTT?); remove uplink.tls or use the TLS port"),
    ("unable to get local issuer certificate", "broker certificate from an unknown CA",
     "the broker's certificate is not from the CA in uplink.tls (ca.crt); is this the right platform?"),
    ("self-signed certificate", "broker certificate from an unknown CA",
     "the broker's certificate is not from the CA in uplink.tls (ca.crt); is this the right platform?"),
    ("certificate has expired", "broker certificate expired", "the broker's certificate has expired"),
    ("Hostname mismatch", "hostname mismatch",
     "the broker's certificate does not name the host in uplink.mqtt; use a name or address it was issued for"),
    ("IP address mismatch", "hostname mismatch",
     "the broker's certificate does not name the address in uplink.mqtt; use a name or address it was "
     "issued for"),
)


def connack_cause(reason: Any) -> tuple[str, str]:
    """(cause, explanation) of a failed CONNACK (a paho ``ReasonCode``)."""
    name = str(reason)
    key = name.lower().replace("not authorized", "not authorised")
    if key == "not authorised":
        return key, ("the broker refused this identity (not authorised): its certificate may be revoked, or the "
                     "device is not registered for it")
    if key == "bad user name or password":
        return key, "the broker refused the credentials (bad user name or password)"
    return key, f"the broker refused the connection ({name})"


def error_cause(exc: BaseException | str | None, where: str) -> tuple[str, str]:
    """(cause, explanation) of a failed connection attempt: an exception, or the text paho logged."""
    text = str(exc) if exc is not None else ""
    for marker, cause, words in _TLS_CAUSES:
        if marker.lower() in text.lower():
            return cause, f"{words} [{text}]"
    if isinstance(exc, ConnectionRefusedError) or "Connection refused" in text:
        return "connection refused", f"nothing accepts connections at {where} (is the platform running there?)"
    if isinstance(exc, socket.gaierror):
        return "unknown host", f"the broker's host in {where} cannot be resolved [{text}]"
    if isinstance(exc, TimeoutError | socket.timeout) or "timed out" in text:
        return "timeout", f"no answer from {where} (timed out: a firewall, or the wrong address?)"
    if "unreachable" in text.lower():
        return "unreachable", f"{where} is unreachable [{text}]"
    if isinstance(exc, ssl.SSLError) or "SSL" in text:
        return "TLS error", f"the TLS handshake with {where} failed [{text}]"
    if "Connection reset" in text or "EOF" in text:
        return "connection closed", f"{where} closed the connection during the handshake [{text}]"
    return "connection failed", f"cannot connect to {where} [{text or 'no reason given'}]"


def identity_cause(identity: TlsIdentity | None, where: str) -> tuple[str, str]:
    """(cause, explanation) when the broker closed the connection before CONNACK: what is wrong with our
    certificate, if the agent can tell (another CA than the broker's, expired, not yet valid)."""
    closed = f"{where} closed the connection before answering"
    if identity is None:
        return "connection closed", f"{closed} (plain MQTT to a TLS port? set uplink.tls)"
    try:
        cert = x509.load_pem_x509_certificate(identity.cert.read_bytes())
        chain = x509.load_pem_x509_certificates(identity.ca.read_bytes())
    except (OSError, ValueError) as exc:
        return "connection closed", f"{closed}; this device's certificate cannot be read ({exc})"
    if not any(_issued_by(cert, ca) for ca in chain):
        return "unknown CA", ("the broker does not trust this device's certificate (issued by another CA: "
                              f"{cert.issuer.rfc4514_string()}); provision it with this platform")
    now = dt.datetime.now(dt.UTC)
    if now >= cert.not_valid_after_utc:
        return "certificate expired", (f"the broker refused this device's certificate: it expired on "
                                       f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; renew it (`edgeloop renew`)")
    if now < cert.not_valid_before_utc:
        return "certificate not yet valid", (f"the broker refused this device's certificate: it is valid only from "
                                             f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (is this clock right?)")
    return "connection closed", (f"{closed}: it refused this device's certificate (revoked?) or the connection; "
                                 "the platform's audit log says why")


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class RefusalLog:
    """Refusals written once per cause per ``window_ms`` (then with the count held back, by
    :class:`~edgeloop.log_limit.LogLimiter`); thread-safe (paho threads)."""

    def __init__(self, window_ms: int = 60_000) -> None:
        self._limit = LogLimiter(log, interval_s=window_ms / 1000)
        self._refused: set[str] = set()  # devices refused since their last successful connection
        self._lock = threading.Lock()

    def refused(self, device: str, cause: str, explanation: str) -> None:
        with self._lock:
            self._refused.add(device)
            self._limit.warning(cause, "%s cannot connect: %s; retrying", device, explanation)

    def connected(self, device: str) -> None:
        with self._lock:
            if device not in self._refused:
                return
            self._refused.discard(device)
        log.warning("%s connected", device)


__all__ = ["RefusalLog", "connack_cause", "error_cause", "identity_cause"]
