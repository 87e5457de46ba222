"""The embedded MQTT broker (amqtt), run inside the platform process.

Devices connect to it exactly as they would to Mosquitto. Its sessions live in
memory, so it acknowledges nothing it could forget: with a ``handoff`` (the
platform's ingest, ``edgeloop.ingest.handoff``) every PUBLISH on a topic ingest
takes is handed straight to ingest, and the device's PUBACK (PUBCOMP at QoS 2)
is sent only after ingest has committed it. Until then the message stays in the
device's in-flight window, which bounds what a client has waiting (a client with
more than ``MAX_UNACKNOWLEDGED`` waiting PUBLISHes ignores any sane window and is
disconnected; nothing of it was acknowledged). QoS 2 PUBREC is still sent on
receipt: devices publish at QoS 1. Production uses Mosquitto with persistence
(see ``edgeloop.broker.mosquitto``).

With ``tls`` it enforces what the generated Mosquitto configuration does:

* mutual TLS only (TLS 1.2+): a client certificate issued by our CA is required; foreign,
  expired and absent certificates fail the handshake;
* the certificate's common name is the identity: it *replaces* the client id in the
  CONNECT packet before amqtt sees it (as ``use_username_as_clientid``), so a client can
  neither choose another identity nor take over another identity's session;
* a revoked certificate is refused (CONNACK "not authorised"), and revoking one closes its
  live session within a second (at once through ``refresh_revocations``);
* publish, subscribe and delivery follow ``edgeloop.broker.acl``, the rules Mosquitto gets; a refused
  publish or subscription is logged (at most one line per identity, kind and minute, with a count);
* every refused connection (failed handshake: no, foreign or expired certificate, garbage or
  plain MQTT on the port; a revoked certificate; no CONNECT) is reported to ``on_refused``
  (the platform writes it to the audit log, once per address and minute).

The TLS handshake is done here (``StreamWriter.start_tls``) rather than by the listener, because
asyncio drops failed handshakes silently and a refusal must be visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self, cast

from amqtt.adapters import ReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.session import ApplicationMessage, Session
from cryptography import x509
from cryptography.x509.oid import NameOID

from edgeloop.broker.acl import Access, IdentityKind, allowed
from edgeloop.errors import BrokerError
from edgeloop.identity.crl import RevocationList
from edgeloop.identity.tls import TlsIdentity
from edgeloop.log_limit import LogLimiter

log = logging.getLogger(__name__)

MAX_CONNECT_BYTES = 65_536
CONNECT_TIMEOUT_S = 10.0
OnRefused = Callable[[str, str, str], Awaitable[None]]  # (source address, identity or "anonymous", reason)
CONNACK_NOT_AUTHORISED = bytes([0x20, 0x02, 0x00, 0x05])
MAX_UNACKNOWLEDGED = 10_000  # PUBLISHes of one client waiting for commit (the edge agent's largest window)


class Handoff(Protocol):
    """Where the broker hands the platform's messages (``edgeloop.ingest.handoff.HandoffSource``)."""

    def wants(self, topic: str) -> bool: ...
    async def offer(self, topic: str, payload: bytes, *, qos: int, done: Callable[[], None] | None) -> None: ...


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """The broker's own certificate (``identity.cert``/``key``), the CA chain clients must chain to
    (``identity.ca``), and the revocation list to enforce."""

    identity: TlsIdentity
    revocations: RevocationList

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.identity.ca))
        ctx.load_cert_chain(str(self.identity.cert), str(self.identity.key))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    name: str
    kind: IdentityKind
    serial: int


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> PeerIdentity | None:
    """The identity in a verified client certificate: its common name, kind (OU) and serial."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if not cn:
        return None
    kind: IdentityKind = "service" if ou and ou[0].value == "service" else "device"
    return PeerIdentity(name=str(cn[0].value), kind=kind, serial=cert.serial_number)


_HANDSHAKE_REASONS = {
    "WRONG_VERSION_NUMBER": "not TLS (plain MQTT or another protocol on the TLS port)",
    "HTTP_REQUEST": "not TLS (an HTTP request on the MQTT TLS port)",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate",
    "unable to get local issuer certificate": "certificate not issued by this platform's CA",
    "certificate has expired": "certificate expired",
    "certificate is not yet valid": "certificate not yet valid",
}


def handshake_failure(exc: BaseException) -> str:
    """A plain-words reason for a failed TLS handshake (the OpenSSL one in brackets)."""
    raw = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc) or "timed out"
    plain = _HANDSHAKE_REASONS.get(str(raw))
    return f"{plain} [{raw}]" if plain else str(raw)


class _PrefixedReader(ReaderAdapter):  # type: ignore[misc]  # amqtt ships no type information
    """Serves ``prefix`` (the rewritten CONNECT) first, then the connection's own bytes."""

    def __init__(self, prefix: bytes, reader: asyncio.StreamReader) -> None:
        self._prefix = prefix
        self._reader = reader

    async def read(self, n: int = -1) -> bytes:
        if self._prefix:
            if n == -1 or n >= len(self._prefix):
                head, self._prefix = self._prefix, b""
                rest = n - len(head) if n != -1 else -1
                return head + (await self._read(rest) if rest else b"")
            head, self._prefix = self._prefix[:n], self._prefix[n:]
            return head
        return await self._read(n)

    async def _read(self, n: int) -> bytes:
        return await (self._reader.read(n) if n == -1 else self._reader.readexactly(n))

    def feed_eof(self) -> None:
        self._reader.feed_eof()


async def _read_connect(reader: asyncio.StreamReader) -> bytes:
    """The body of the first packet, which must be a CONNECT (raises ValueError otherwise)."""
    if (await reader.readexactly(1))[0] != 0x10:
        raise ValueError("the first packet is not CONNECT")
    length, shift = 0, 0
    for _ in range(4):
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    else:
        raise ValueError("malformed remaining length")
    if length > MAX_CONNECT_BYTES:
        raise ValueError(f"CONNECT of {length} bytes")
    return await reader.readexactly(length)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def with_client_id(body: bytes, client_id: str) -> bytes:
    """A whole CONNECT packet equal to ``body`` but with ``client_id`` as its client identifier."""
    name_len = int.from_bytes(body[0:2], "big")
    start = 2 + name_len + 4  # protocol name, level, flags, keep-alive
    old_len = int.from_bytes(body[start:start + 2], "big")
    if len(body) < start + 2 + old_len:
        raise ValueError("truncated CONNECT")
    cid = client_id.encode()
    new = body[:start] + len(cid).to_bytes(2, "big") + cid + body[start + 2 + old_len:]
    return b"\x10" + _varint(len(new)) + new


class _AckAfterCommit(asyncio.Queue[ApplicationMessage]):
    """A session's received PUBLISHes (amqtt's ``delivered_message_queue``) whose acknowledgement waits for commit.

    amqtt sends a QoS 1 PUBLISH's PUBACK (a QoS 2 one's PUBCOMP) when ``put`` returns; here ``put`` returns only
    once the message is released: by ingest after commit, or at once when it is nothing for the platform."""

    def __init__(self) -> None:
        super().__init__()
        self.connection: WriterAdapter | None = None  # the session's current connection
        self._held: dict[int, asyncio.Future[None]] = {}  # id(message) -> released

    async def put(self, item: ApplicationMessage) -> None:
        if len(self._held) >= MAX_UNACKNOWLEDGED:
            log.warning("closing an MQTT connection with %d PUBLISHes waiting for their acknowledgement",
                        len(self._held))
            _abort(self.connection)
            await asyncio.Future()  # never acknowledged; cancelled with the connection
        released = asyncio.get_running_loop().create_future()
        self._held[id(item)] = released
        self.put_nowait(item)
        try:
            await released
        finally:
            if self._held.get(id(item)) is released:
                del self._held[id(item)]

    def release(self, item: ApplicationMessage) -> None:
        released = self._held.pop(id(item), None)
        if released is not None and not released.done():
            released.set_result(None)


def _abort(connection: WriterAdapter | None) -> None:
    stream = getattr(connection, "_writer", None)
    if isinstance(stream, asyncio.StreamWriter):
        stream.transport.abort()


@dataclass(slots=True)
class _Delivery:
    message: ApplicationMessage
    handed_over: bool = False


_DELIVERING: contextvars.ContextVar[_Delivery | None] = contextvars.ContextVar("edgeloop_delivering", default=None)


class _ClosingBroker(Broker):  # type: ignore[misc]
    """amqtt that closes every connection it accepted: when its session ends, and at shutdown; and that, with a
    ``handoff``, hands the platform's messages to ingest and acknowledges them after commit (module docstring).

    amqtt leaves some server-side streams open after a client goes away (seen when a client
    disconnects while the broker is stopping); they would linger until garbage collection.
    """

    def __init__(self, config: dict[str, Any], handoff: Handoff | None = None) -> None:
        super().__init__(config)
        self.writers: set[asyncio.StreamWriter] = set()
        self.handoff = handoff

    async def _initialize_client_session(self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str,
                                         remote_port: int) -> tuple[Any, Session]:
        handler, session = await super()._initialize_client_session(reader, writer, remote_address, remote_port)
        if self.handoff is not None:
            queue = session.delivered_message_queue
            if not isinstance(queue, _AckAfterCommit):  # a new session: its queue is still empty
                queue = _AckAfterCommit()
                session.delivered_message_queue = queue
            queue.connection = writer
        return handler, session

    async def _handle_message_delivery(self, client_session: Session, handler: Any,
                                       wait_deliver: asyncio.Future[Any]) -> bool:
        message = wait_deliver.result()
        queue = client_session.delivered_message_queue
        delivery = _Delivery(message) if message is not None else None
        token = _DELIVERING.set(delivery)
        try:
            return cast("bool", await super()._handle_message_delivery(client_session, handler, wait_deliver))
        finally:
            _DELIVERING.reset(token)
            if delivery is not None and not delivery.handed_over and isinstance(queue, _AckAfterCommit):
                queue.release(message)  # refused, or not the platform's: acknowledged as received

    async def _broadcast_message(self, session: Session | None, topic: str | None, data: bytes | bytearray | None,
                                 force_qos: int | None = None) -> None:
        if (self.handoff is not None and topic and data is not None and self.handoff.wants(topic)
                and (session is None or await self._topic_filtering(session, topic, Action.PUBLISH))):
            delivery = _DELIVERING.get()
            queue = session.delivered_message_queue if session is not None else None
            done: Callable[[], None] | None = None
            qos = force_qos or 0
            if (delivery is not None and not delivery.handed_over and delivery.message.topic == topic
                    and isinstance(queue, _AckAfterCommit)):
                delivery.handed_over = True
                qos = delivery.message.qos or 0
                done = _releaser(queue, delivery.message)
            await self.handoff.offer(topic, bytes(data), qos=qos, done=done)
        await super()._broadcast_message(session, topic, data, force_qos)

    async def stream_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               listener_name: str) -> None:
        self.writers.add(writer)
        try:
            await self._serve(reader, writer, listener_name)
        finally:
            self.writers.discard(writer)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str) -> None:
        await super().stream_connected(reader, writer, listener_name)

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int],
                                                          session: Session) -> None:
        """Retained messages go only to a session that holds the subscription itself.

        amqtt 0.12.1 replays, to every connecting client, the retained messages of every topic filter
        that *any* client subscribed to: a device would receive another gateway's retained
        configuration and other tenants' status. A subscription the ACL refused is never recorded,
        so holding it means the ACL allowed it."""
        holders = self._subscriptions.get(subscription[0], ())
        if any(s.client_id == session.client_id for s, _ in holders):
            await super()._publish_retained_messages_for_subscription(subscription, session)

    async def shutdown(self) -> None:
        await super().shutdown()
        for writer in list(self.writers):
            writer.close()
        self.writers.clear()


def _releaser(queue: _AckAfterCommit, message: ApplicationMessage) -> Callable[[], None]:
    return lambda: queue.release(message)


class _SecureBroker(_ClosingBroker):
    """amqtt with certificate identities, revocation and EdgeLoop's ACL (see the module docstring)."""

    def __init__(self, config: dict[str, Any], tls: BrokerTls, on_refused: OnRefused | None,
                 handoff: Handoff | None = None) -> None:
        super().__init__(config, handoff)
        self.tls = tls
        self.on_refused = on_refused
        self.context = tls.server_context()
        self.connections: dict[str, tuple[PeerIdentity, asyncio.StreamWriter]] = {}
        self._identities: dict[str, PeerIdentity] = {}
        self.refusals = LogLimiter(log)

    async def _refuse(self, writer: asyncio.StreamWriter, source: str, actor: str, reason: str) -> None:
        log.warning("MQTT connection from %s refused: %s", source, reason)
        writer.close()
        if self.on_refused is not None:
            try:
                await self.on_refused(source, actor, reason)
            except Exception:  # reporting must never take the broker down
                log.exception("reporting a refused MQTT connection failed")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str) -> None:
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else ""
        try:
            await writer.start_tls(self.context, ssl_handshake_timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            await self._refuse(writer, source, "anonymous", f"TLS handshake failed: {handshake_failure(exc)}")
            return
        ident = peer_identity(cast("ssl.SSLObject | None", writer.get_extra_info("ssl_object")))
        try:
            body = await asyncio.wait_for(_read_connect(reader), CONNECT_TIMEOUT_S)
        except (ValueError, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            await self._refuse(writer, source, ident.name if ident else "anonymous",
                               f"no valid CONNECT: {exc or 'timeout'}")
            return
        if ident is None or ident.serial in self.tls.revocations.serials():
            with contextlib.suppress(OSError):
                writer.write(CONNACK_NOT_AUTHORISED)
                await writer.drain()
            await self._refuse(writer, source, ident.name if ident else "anonymous",
                               "no identity in the certificate" if ident is None else "certificate revoked")
            return
        try:
            packet = with_client_id(body, ident.name)
        except (ValueError, IndexError) as exc:
            await self._refuse(writer, source, ident.name, f"malformed CONNECT: {exc}")
            return
        self._identities[ident.name] = ident
        self.connections[ident.name] = (ident, writer)
        try:
            await self._client_connected(listener_name, _PrefixedReader(packet, reader), StreamWriterAdapter(writer))
        finally:
            if self.connections.get(ident.name, (None, None))[1] is writer:
                del self.connections[ident.name]

    async def _authenticate(self, session: Session, _: Any) -> bool:
        ident = self._identities.get(session.client_id or "")
        return ident is not None and peer_identity(session.ssl_object) == ident

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        ident = self._identities.get(session.client_id or "")
        name = ident.name if ident is not None else repr(session.client_id)
        access: Access = "write" if action == Action.PUBLISH else "read"
        if ident is not None and allowed(ident.name, ident.kind, access, topic):
            return True
        if action != Action.RECEIVE:  # a delivery filtered out is not a client's attempt
            self.refusals.warning(f"{name}:{action.value}", "MQTT %s by %s on %r refused: %s", action.value, name,
                                  topic[:200], "not allowed by the ACL" if ident else "no identity")
        return False

    def disconnect_revoked(self) -> list[str]:
        """Close the live connection of every identity whose certificate is now revoked; returns their names."""
        revoked = self.tls.revocations.serials()
        closed = []
        for name, (ident, writer) in list(self.connections.items()):
            if ident.serial in revoked:
                log.warning("closing the MQTT session of %r: its certificate was revoked", name)
                writer.transport.abort()
                closed.append(name)
        return closed


class EmbeddedBroker:
    """``async with EmbeddedBroker(port=1883): ...`` serves MQTT 3.1.1 on ``host:port`` (mutual TLS with ``tls``);
    with ``handoff``, the platform's messages go there and are acknowledged after commit."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 1883, max_connections: int = 10_000,
                 tls: BrokerTls | None = None, on_refused: OnRefused | None = None,
                 handoff: Handoff | None = None) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.on_refused = on_refused
        self.handoff = handoff
        listener: dict[str, Any] = {"type": "tcp", "bind": f"{host}:{port}", "max_connections": max_connections}
        self._config: dict[str, Any] = {
            "listeners": {"default": listener},
            "plugins": {} if tls else {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._broker: Broker | None = None
        self._watch: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(max(logging.getLogger(name).level, logging.WARNING))
        broker: Broker = (_ClosingBroker(self._config, self.handoff) if self.tls is None
                          else _SecureBroker(self._config, self.tls, self.on_refused, self.handoff))
        self._broker = broker
        broker_log = logging.getLogger("amqtt.broker")
        level = broker_log.level
        broker_log.setLevel(logging.CRITICAL)  # a failed start is reported once, below, without amqtt's traceback
        try:
            await broker.start()
        except Exception as exc:
            raise BrokerError(f"embedded MQTT broker cannot listen on {self.host}:{self.port}: {exc}") from exc
        finally:
            broker_log.setLevel(level)
        if self.tls is not None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_revocations(), name="crl-watch")
        log.info("embedded MQTT broker listening on %s:%d%s", self.host, self.port,
                 " (mutual TLS)" if self.tls else "")
        return self

    def refresh_revocations(self) -> list[str]:
        """Apply the revocation list now: close the sessions of revoked certificates; returns their identities."""
        if isinstance(self._broker, _SecureBroker):
            return self._broker.disconnect_revoked()
        return []

    async def _watch_revocations(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.refresh_revocations()
            except Exception:  # the watch must outlive a bad CRL file; RevocationList logs why
                log.exception("checking the revocation list failed")

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
