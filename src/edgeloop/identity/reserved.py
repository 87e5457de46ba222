"""Identities the platform keeps for itself: no enrollment or provisioning may ever issue them to a device.

A certificate's CN *is* the identity the brokers act on (``broker/acl.py``): a device certificate named
like a platform service would get that service's rights on Mosquitto (its ACL is by name), and one named
like a simulated device would publish as it. So these names are refused before a certificate exists.
"""

from __future__ import annotations

import re

from edgeloop.broker.acl import API_IDENTITY, BROKER_IDENTITY, INGEST_IDENTITY, SERVICE_RULES

# The platform's own components and MQTT clients: ``edgeloop-ingest``, ``edgeloop-broker``, ``edgeloop-api``,
# the scenario's ``edgeloop-ingest-<hex>``, and whatever ``edgeloop-*`` comes next.
PLATFORM_PREFIX = "edgeloop"
SERVICE_IDENTITIES = frozenset({INGEST_IDENTITY, BROKER_IDENTITY, API_IDENTITY, *SERVICE_RULES})
# The simulated fleet's devices (``sim.fleet``: ``pump-0001``, ``motor-0002``, ...), which ``edgeloop up`` issues
# certificates to by itself (tests/test_provisioning.py checks that every simulated id matches).
SIMULATED_DEVICE = re.compile(r"(pump|motor)-[0-9]{4,}")


def reserved_reason(identity: str) -> str | None:
    """Why ``identity`` can never be a provisioned device's, or None when it may be."""
    if identity in SERVICE_IDENTITIES or identity == PLATFORM_PREFIX or identity.startswith(PLATFORM_PREFIX + "-"):
        return f"{identity!r} is reserved for the platform's own services (names starting with '{PLATFORM_PREFIX}')"
    if SIMULATED_DEVICE.fullmatch(identity):
        return f"{identity!r} is reserved for the simulated fleet (pump-NNNN, motor-NNNN)"
    return None


def group_is_reserved(group: str) -> bool:
    """Every id of an enrollment group spells a reserved name (``GROUP-SERIAL``)."""
    return group == PLATFORM_PREFIX or group.startswith(PLATFORM_PREFIX + "-")
