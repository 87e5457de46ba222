"""Notifications: signed webhooks with retries and dead letters, SMTP email, work orders (real local servers)."""

from __future__ import annotations

import email
import email.policy
import json
import random
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import msgspec
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from edgeloop.alerts.incidents import Page
from edgeloop.alerts.notify import (
    REPLAY_TOLERANCE_S,
    EmailChannel,
    Notifier,
    PageDetails,
    WebhookChannel,
    WorkOrderChannel,
    backoff_delay,
    load_channels,
    sign,
    verify_signature,
)
from edgeloop.clock import ManualClock
from tests.conftest import SECRET, Receiver

PAGE = Page(ts=1_767_225_600_000, incident=42, kind="asset", scope="pump-7", title="pump-7: vibration-high",
            priority=73.3, route="urgent", alerts=(101, 102), assets=("pump-7",))
DETAILS = PageDetails(explanation="vibration RMS 3x its baseline for 10 min", contributions={"vib_rms": 0.8,
                      "temp": 0.2}, recommended_action="Inspect the drive-end bearing; check lubrication")


class Sleeps:
    """An injected sleep that only records what it was asked to wait."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def expected_sleeps(seed: int, n: int, base: float, cap: float) -> list[float]:
    rng = random.Random(seed)
    return [backoff_delay(i, base, cap, rng) for i in range(1, n + 1)]


def webhook(url: str, **kw: Any) -> WebhookChannel:
    return WebhookChannel(name="ops-hook", url=url, secret=SECRET, timeout_s=5.0, **kw)


# --- webhooks -------------------------------------------------------------------------------------------------


async def test_webhook_retries_twice_then_succeeds_signed(receiver: Receiver) -> None:
    receiver.statuses = [500, 500, 200]
    sleeps = Sleeps()
    clock = ManualClock()
    async with Notifier([webhook(receiver.url, max_attempts=5, backoff_base_s=1.0, backoff_cap_s=30.0)],
                        sleep=sleeps, rng=random.Random(7), clock=clock) as n:
        (d,) = await n.send(PAGE, DETAILS)
    assert d.ok and d.attempts == 3 and d.status == 200 and d.dead_letter is None
    assert len(receiver.requests) == 3
    assert receiver.verified == [True, True, True]  # the receiver checked every attempt's signature
    # the backoff follows the seeded schedule: 2 sleeps, each within [step/2, step] of 1 s, 2 s
    assert sleeps.calls == expected_sleeps(7, 2, 1.0, 30.0)
    assert 0.5 <= sleeps.calls[0] <= 1.0 and 1.0 <= sleeps.calls[1] <= 2.0
    headers, body = receiver.requests[-1]
    stamp = clock.now_ms() // 1000
    assert (headers["webhook-id"], headers["webhook-timestamp"]) == ("42:asset:page", str(stamp))
    assert headers["webhook-signature"] == sign(SECRET, "42:asset:page", stamp, body)
    # the same idempotency key and body on every retry, so the receiver can drop duplicates
    assert {h["idempotency-key"] for h, _ in receiver.requests} == {"42:asset:page"}
    assert len({b for _, b in receiver.requests}) == 1
    payload = json.loads(body)
    assert payload["event"] == "page" and payload["incident"] == 42 and payload["assets"] == ["pump-7"]
    assert payload["route"] == "urgent" and payload["recommended_action"].startswith("Inspect")
    # the receiver refuses a tampered body, a wrong secret, a re-stamped request and a replay
    assert verify_signature(SECRET, body, headers, now_s=stamp + REPLAY_TOLERANCE_S)
    assert not verify_signature(SECRET, body + b" ", headers, now_s=stamp)
    assert not verify_signature("other", body, headers, now_s=stamp)
    assert not verify_signature(SECRET, body, {**headers, "webhook-timestamp": str(stamp + 600)}, now_s=stamp + 600)
    assert not verify_signature(SECRET, body, headers, now_s=stamp + REPLAY_TOLERANCE_S + 1)
    assert not verify_signature(SECRET, body, {}, now_s=stamp)


def test_signature_matches_the_standard_webhooks_reference() -> None:
    """The example of the Standard Webhooks specification, so receivers can use any of its libraries."""
    secret, msg_id, stamp, body = ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
                                   1614265330, b'{"test": 2432232314}')
    signature = sign(secret, msg_id, stamp, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": f"v1,old= {signature}"}
    assert verify_signature(secret, body, headers, now_s=stamp)  # one of several signatures (a secret rotation)


async def test_webhook_always_failing_is_dead_lettered(receiver: Receiver) -> None:
    receiver.statuses = [503]
    sleeps = Sleeps()
    async with Notifier([webhook(receiver.url, max_attempts=4, backoff_base_s=2.0, backoff_cap_s=5.0)],
                        sleep=sleeps, rng=random.Random(1)) as n:
        (d,) = await n.send(PAGE, DETAILS)
    assert not d.ok and d.attempts == 4 and d.status == 503
    assert len(receiver.requests) == 4
    assert sleeps.calls == expected_sleeps(1, 3, 2.0, 5.0)
    assert 2.5 <= sleeps.calls[2] <= 5.0  # capped: the step would be 8 s
    dl = d.dead_letter
    assert dl is not None
    assert dl.attempts == 4 and dl.last_error == "HTTP 503: boom" and dl.target == receiver.url
    assert dl.idempotency_key == "42:asset:page" and dl.channel == "ops-hook" and dl.type == "webhook"
    assert dl.payload.encode() == receiver.requests[0][1]  # replayable as it was sent
    # a dead letter is data the platform can persist
    assert msgspec.json.decode(msgspec.json.encode(dl), type=type(dl)) == dl


async def test_webhook_4xx_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [400, 200]
    sleeps = Sleeps()
    async with Notifier([webhook(receiver.url, max_attempts=5)], sleep=sleeps, rng=random.Random(0)) as n:
        (d,) = await n.send(PAGE)
    assert not d.ok and d.attempts == 1 and d.status == 400 and sleeps.calls == []
    assert len(receiver.requests) == 1
    assert d.dead_letter is not None and "HTTP 400" in d.dead_letter.last_error
    assert "not retried" in d.dead_letter.last_error


async def test_webhook_429_is_retried(receiver: Receiver) -> None:
    receiver.statuses = [429, 200]
    sleeps = Sleeps()
    async with Notifier([webhook(receiver.url, max_attempts=3)], sleep=sleeps, rng=random.Random(0)) as n:
        (d,) = await n.send(PAGE)
    assert d.ok and d.attempts == 2 and len(sleeps.calls) == 1


async def test_connection_refused_is_retried_then_dead_lettered() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    async with Notifier([webhook(f"http://127.0.0.1:{port}/hook", max_attempts=3)], sleep=sleeps,
                        rng=random.Random(0)) as n:
        (d,) = await n.send(PAGE)
    assert not d.ok and d.attempts == 3 and len(sleeps.calls) == 2 and d.status is None
    assert d.dead_letter is not None and "ConnectError" in d.dead_letter.last_error


# --- work orders ----------------------------------------------------------------------------------------------


async def test_work_order_payload(receiver: Receiver) -> None:
    ch = WorkOrderChannel(name="cmms", url=receiver.url, secret=SECRET)
    async with Notifier([ch], sleep=Sleeps(), base_url="https://edgeloop.example/") as n:
        (d,) = await n.send(PAGE, DETAILS)
    assert d.ok and d.type == "work_order" and receiver.verified == [True]
    headers, body = receiver.requests[0]
    assert headers["idempotency-key"] == "42:asset:work-order"
    wo = json.loads(body)
    assert wo == {
        "event": "work_order",
        "external_id": "42:asset:work-order",
        "asset": "pump-7",
        "assets": ["pump-7"],
        "incident": 42,
        "title": "pump-7: vibration-high",
        "priority": 73.3,
        "priority_level": "urgent",
        "recommended_action": "Inspect the drive-end bearing; check lubrication",
        "explanation": "vibration RMS 3x its baseline for 10 min",
        "contributions": {"vib_rms": 0.8, "temp": 0.2},
        "opened_at_ms": PAGE.ts,
        "link": "https://edgeloop.example/incidents/42",
    }


async def test_channels_are_data_and_sent_concurrently(receiver: Receiver) -> None:
    channels = load_channels([
        {"type": "webhook", "name": "a", "url": receiver.url, "secret": SECRET, "max_attempts": 2},
        {"type": "work_order", "name": "b", "url": receiver.url, "secret": SECRET},
    ])
    assert isinstance(channels[0], WebhookChannel) and channels[0].max_attempts == 2
    async with Notifier(channels, sleep=Sleeps()) as n:
        ds = await n.send(PAGE, DETAILS)
    assert [(d.channel, d.type, d.ok) for d in ds] == [("a", "webhook", True), ("b", "work_order", True)]
    with pytest.raises(msgspec.ValidationError):
        load_channels([{"type": "pager", "name": "x"}])
    with pytest.raises(msgspec.ValidationError, match="duplicate"):
        load_channels([{"type": "webhook", "name": "a", "url": "u", "secret": "s"}] * 2)


# --- email ----------------------------------------------------------------------------------------------------


class Mailbox:
    """An aiosmtpd handler: answers DATA with the scripted replies in turn (the last repeats), keeps messages."""

    def __init__(self) -> None:
        self.replies = ["250 OK"]
        self.tries = 0
        self.received: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self.replies[min(self.tries, len(self.replies) - 1)]
        self.tries += 1
        if reply.startswith("250"):
            assert isinstance(envelope.content, bytes)
            msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            self.received.append((str(envelope.mail_from), list(envelope.rcpt_tos), msg))
        return reply


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def mail_channel(port: int, **kw: Any) -> EmailChannel:
    return EmailChannel(name="oncall-mail", host="127.0.0.1", port=port, from_addr="edgeloop@plant.example",
                        to=["alice@plant.example", "bob@plant.example"], timeout_s=5.0, **kw)


async def test_email_received(smtp_server: tuple[Mailbox, int]) -> None:
    box, port = smtp_server
    async with Notifier([mail_channel(port)], sleep=Sleeps(), base_url="https://edgeloop.example") as n:
        (d,) = await n.send(PAGE, DETAILS)
    assert d.ok and d.attempts == 1 and d.type == "email" and d.error == ""
    (mail_from, rcpts, msg) = box.received[0]
    assert mail_from == "edgeloop@plant.example"
    assert rcpts == ["alice@plant.example", "bob@plant.example"]
    assert msg["Subject"] == "[URGENT P73] pump-7: vibration-high"
    assert msg["To"] == "alice@plant.example, bob@plant.example"
    plain = msg.get_body(("plain",))
    rich = msg.get_body(("html",))
    assert plain is not None and rich is not None
    text, markup = plain.get_content(), rich.get_content()
    for part in (text, markup):
        assert "pump-7" in part
        assert "vibration RMS 3x its baseline for 10 min" in part
        assert "Inspect the drive-end bearing" in part
        assert "https://edgeloop.example/incidents/42" in part
    assert "vib_rms 80%" in text
    assert '<a href="https://edgeloop.example/incidents/42">' in markup


async def test_email_transient_error_retried_permanent_dead_lettered(smtp_server: tuple[Mailbox, int]) -> None:
    box, port = smtp_server
    box.replies = ["451 try again later", "250 OK"]
    sleeps = Sleeps()
    async with Notifier([mail_channel(port, max_attempts=3)], sleep=sleeps, rng=random.Random(3)) as n:
        (d,) = await n.send(PAGE, DETAILS)
    assert d.ok and d.attempts == 2 and sleeps.calls == expected_sleeps(3, 1, 1.0, 60.0)
    assert len(box.received) == 1

    box.replies, box.tries = ["554 rejected"], 0
    sleeps = Sleeps()
    async with Notifier([mail_channel(port, max_attempts=3)], sleep=sleeps) as n:
        (d,) = await n.send(PAGE, DETAILS)
    assert not d.ok and d.attempts == 1 and d.status == 554 and sleeps.calls == []
    assert d.dead_letter is not None and "SMTP 554" in d.dead_letter.last_error
    assert "Subject: [URGENT P73] pump-7: vibration-high" in d.dead_letter.payload


async def test_email_unreachable_dead_lettered_after_max_attempts() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    async with Notifier([mail_channel(port, max_attempts=2)], sleep=sleeps, rng=random.Random(0)) as n:
        (d,) = await n.send(PAGE)
    assert not d.ok and d.attempts == 2 and len(sleeps.calls) == 1
    assert d.dead_letter is not None and "ConnectionRefusedError" in d.dead_letter.last_error


async def test_email_login() -> None:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    seen: list[tuple[bytes, bytes]] = []

    def authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        seen.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"pw")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=port, authenticator=authenticator,
                            auth_require_tls=False)
    controller.start()
    try:
        async with Notifier([mail_channel(port, username="edgeloop", password="pw")], sleep=Sleeps()) as n:
            (d,) = await n.send(PAGE)
        assert d.ok and len(box.received) == 1 and seen == [(b"edgeloop", b"pw")]
    finally:
        controller.stop()
