"""Notifications for pages: signed webhooks, SMTP email and a work-order webhook for CMMS/ERP (issue 6).

:class:`Notifier` turns a :class:`~edgeloop.alerts.incidents.Page` into one delivery per configured channel.
Channels are data (msgspec structs, a tagged union under ``type``), so they load from YAML/JSON with
:func:`load_channels`:

- ``webhook``: a JSON body (:class:`PagePayload`), signed as `Standard Webhooks <https://www.standardwebhooks.com>`_
  specify, so a receiver can refuse forgeries and replays with any Standard Webhooks library. Headers:

  - ``webhook-id``: ``<incident>:<page kind>:<notification>``, the same on every retry (also sent as
    ``Idempotency-Key``), so a receiver can drop the duplicates a retry after a lost response makes;
  - ``webhook-timestamp``: the send time of this attempt, in seconds since the Unix epoch;
  - ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``. The key is the channel's
    ``secret``: its bytes, or for a ``whsec_<base64>`` secret (the Standard Webhooks form) the decoded bytes.

  The signature covers the timestamp: receivers check it, and that the timestamp is recent, with
  :func:`verify_signature` (constant-time; 5 minutes' tolerance).
- ``work_order``: the same signing and retries, with a :class:`WorkOrderPayload` (asset, incident, title,
  priority, recommended action, explanation) for a CMMS/ERP to open a work order.
- ``email``: a plain-text + HTML message over SMTP (stdlib ``smtplib`` in a worker thread), optional STARTTLS
  and login. Its ``Message-ID`` is derived from the idempotency key.

Retries: connection errors, timeouts, HTTP 5xx and 429 (and SMTP 4xx / connection errors) are retried up to
``max_attempts`` in all, sleeping ``backoff_delay`` between tries: exponential from ``backoff_base_s``, capped
at ``backoff_cap_s``, with "equal jitter" (between half and all of the step) drawn from a seeded RNG; a 429
or 503 ``Retry-After`` (in seconds) lengthens the wait, up to the cap. Any other answer (HTTP 3xx/4xx, SMTP
5xx, an invalid URL) is not retried. A delivery that does not succeed becomes a :class:`DeadLetter` (the
payload, the last error, the attempts) returned in its :class:`Delivery`; persisting it is the caller's job.

The sleep function, the RNG, the clock and the HTTP client are injectable, so tests neither wait nor guess.
What the page does not carry (the explanation, the recommended action, a link) comes in
:class:`PageDetails`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import html
import random
import smtplib
import ssl
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Literal

import httpx
import msgspec

from edgeloop.alerts.incidents import Page
from edgeloop.clock import Clock, SystemClock

__all__ = [
    "ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Channel",
    "DeadLetter",
    "Delivery",
    "EmailChannel",
    "Notifier",
    "PageDetails",
    "PagePayload",
    "WebhookChannel",
    "WorkOrderChannel",
    "WorkOrderPayload",
    "backoff_delay",
    "email_subject",
    "idempotency_key",
    "load_channels",
    "sign",
    "verify_signature",
]

ID_HEADER = "webhook-id"
SIGNATURE_HEADER = "webhook-signature"
TIMESTAMP_HEADER = "webhook-timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAY_TOLERANCE_S = 300
_USER_AGENT = "edgeloop-notifier/1"


# --- configuration ------------------------------------------------------------------------------------------


class _HttpChannel(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"):
    """What the HTTP channels share: where to POST, the signing secret, timeout and retries."""

    name: str
    url: str
    secret: str
    timeout_s: float = 10.0
    max_attempts: int = 5
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    routes: tuple[Literal["urgent", "normal"], ...] = ("urgent", "normal")  # the pages it gets (by route)


class WebhookChannel(_HttpChannel, frozen=True, tag="webhook"):
    """POST the page as signed JSON to ``url``."""


class WorkOrderChannel(_HttpChannel, frozen=True, tag="work_order"):
    """POST a signed work-order request (asset, incident, action, explanation) to a CMMS/ERP at ``url``."""


class EmailChannel(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="email",
                   tag_field="type"):
    """Send the page by SMTP to ``to``; ``starttls`` upgrades the connection, ``username`` logs in."""

    name: str
    host: str
    port: int = 25
    from_addr: str
    to: list[str]
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    timeout_s: float = 30.0
    max_attempts: int = 5
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    routes: tuple[Literal["urgent", "normal"], ...] = ("urgent", "normal")


Channel = WebhookChannel | WorkOrderChannel | EmailChannel


def load_channels(data: Any) -> list[Channel]:
    """Channels from decoded YAML/JSON (a list of mappings with ``type``); ``msgspec.ValidationError`` if bad."""
    channels = msgspec.convert(data, list[Channel])
    names = [c.name for c in channels]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise msgspec.ValidationError(f"duplicate channel names: {', '.join(dup)}")
    for c in channels:
        if c.max_attempts < 1:
            raise msgspec.ValidationError(f"channel {c.name!r}: max_attempts must be at least 1")
        if isinstance(c, EmailChannel) and not c.to:
            raise msgspec.ValidationError(f"channel {c.name!r}: no recipients")
    return channels


# --- payloads and results -----------------------------------------------------------------------------------


class PageDetails(msgspec.Struct, frozen=True, kw_only=True):
    """What a page does not carry itself: the why, what to do, and where to look."""

    explanation: str = ""
    contributions: dict[str, float] = {}  # channel -> share of the anomaly (sums to 1, or empty)
    recommended_action: str = ""
    link: str = ""


class PagePayload(msgspec.Struct, frozen=True, kw_only=True):
    """The JSON body of a ``webhook`` delivery."""

    event: Literal["page"] = "page"
    incident: int
    kind: str
    scope: str
    title: str
    priority: float
    route: str
    ts: int
    alerts: list[int]
    assets: list[str]
    explanation: str
    contributions: dict[str, float]
    recommended_action: str
    link: str


class WorkOrderPayload(msgspec.Struct, frozen=True, kw_only=True):
    """The JSON body of a ``work_order`` delivery: enough for a CMMS/ERP to open a work order."""

    event: Literal["work_order"] = "work_order"
    external_id: str  # the idempotency key: a CMMS can use it to refuse a second work order for one incident
    asset: str  # the asset concerned (for a line or gateway incident: the line or gateway)
    assets: list[str]
    incident: int
    title: str
    priority: float
    priority_level: str  # "urgent" | "normal"
    recommended_action: str
    explanation: str
    contributions: dict[str, float]
    opened_at_ms: int
    link: str


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery given up on: everything needed to replay it by hand or later."""

    channel: str
    type: str  # "webhook" | "work_order" | "email"
    target: str  # the URL, or the recipients
    incident: int
    idempotency_key: str
    payload: str  # the JSON body, or the whole email message
    attempts: int
    last_error: str
    first_attempt_ms: int
    last_attempt_ms: int


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one page on one channel."""

    channel: str
    type: str
    ok: bool
    attempts: int
    status: int | None = None  # the last HTTP status or SMTP reply code, when there was one
    error: str = ""  # the last error; when ok, a note (e.g. recipients an SMTP server refused) or ""
    dead_letter: DeadLetter | None = None


# --- signing ------------------------------------------------------------------------------------------------


def sign(secret: str, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp_s}.{body}">``."""
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp_s}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify_signature(secret: str, body: bytes, headers: Mapping[str, str], *, now_s: int,
                     tolerance_s: int = REPLAY_TOLERANCE_S) -> bool:
    """Whether ``headers`` (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``; a mapping that finds
    them by these lower-case names) sign ``body`` with ``secret``, sent within ``tolerance_s`` of ``now_s``.
    A replayed request (an old timestamp) or a re-stamped one (the signature no longer matches) is refused."""
    msg_id, stamp, signatures = (headers.get(h) for h in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER))
    if not msg_id or not stamp or not signatures or not stamp.isdigit() or abs(now_s - int(stamp)) > tolerance_s:
        return False
    expected = sign(secret, msg_id, int(stamp), body).encode()
    return any(hmac.compare_digest(expected, s.encode()) for s in signatures.split())  # several during a rotation


def _key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        with contextlib.suppress(binascii.Error):
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    return secret.encode()


def idempotency_key(page: Page, notification: str) -> str:
    """The same on every retry of one notification of one page: ``<incident>:<page kind>:<notification>``."""
    return f"{page.incident}:{page.kind}:{notification}"


def backoff_delay(retry: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``retry`` (1 = the second attempt): equal jitter over an exponential
    step, ``step/2 + U(0, step/2)`` with ``step = min(cap, base * 2**(retry-1))``."""
    step = min(cap_s, base_s * 2.0 ** (retry - 1))
    return step / 2 + rng.uniform(0.0, step / 2)


# --- the notifier -------------------------------------------------------------------------------------------


class _Failure(Exception):
    """One failed attempt: ``retry`` says whether another attempt may succeed."""

    def __init__(self, message: str, *, retry: bool, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.status = status
        self.retry_after = retry_after


Sleep = Callable[[float], Awaitable[None]]


class Notifier:
    """Send each page to every channel, concurrently; never raises for a failed delivery (see module doc).

    Use as ``async with Notifier(channels) as n: deliveries = await n.send(page, details)``, or call
    :meth:`aclose`. ``client`` is closed only if the notifier created it.
    """

    def __init__(self, channels: Sequence[Channel], *, clock: Clock | None = None,
                 sleep: Sleep | None = None, rng: random.Random | None = None,
                 client: httpx.AsyncClient | None = None, base_url: str = "") -> None:
        self.channels = list(channels)
        self._clock: Clock = clock or SystemClock()
        self._sleep: Sleep = sleep or asyncio.sleep
        self._rng = rng or random.Random()  # jitter, not security
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(headers={"User-Agent": _USER_AGENT}, follow_redirects=False)
        self.base_url = base_url.rstrip("/")

    async def __aenter__(self) -> Notifier:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def send(self, page: Page, details: PageDetails | None = None, *, only: Collection[str] | None = None,
                   escalation: int = 0) -> list[Delivery]:
        """Deliver ``page`` on every channel of its route (``only``: on the channels so named, whatever their
        routes: an escalation's); one :class:`Delivery` per channel used, in channel order. An escalation
        (``escalation`` = its level) is a notification of its own: its idempotency keys end in ``:esc<level>``."""
        d = details or PageDetails()
        if not d.link and self.base_url:
            d = msgspec.structs.replace(d, link=f"{self.base_url}/incidents/{page.incident}")
        chosen = [c for c in self.channels if (c.name in only if only is not None else page.route in c.routes)]
        suffix = f":esc{escalation}" if escalation else ""
        return list(await asyncio.gather(*(self._deliver(c, page, d, suffix) for c in chosen)))

    # --- per channel ----------------------------------------------------------------------------------------

    async def _deliver(self, ch: Channel, page: Page, d: PageDetails, suffix: str = "") -> Delivery:
        if isinstance(ch, EmailChannel):
            key = idempotency_key(page, "email") + suffix
            msg = _email_message(ch, page, d, key, self._clock.now_ms())
            payload = msg.as_string()
            target = ", ".join(ch.to)

            async def attempt() -> tuple[int, str]:
                return await asyncio.to_thread(_smtp_send, ch, msg)
        else:
            notification = "page" if isinstance(ch, WebhookChannel) else "work-order"
            key = idempotency_key(page, notification) + suffix
            body = msgspec.json.encode(_page_payload(page, d) if isinstance(ch, WebhookChannel)
                                       else _work_order_payload(page, d, key))
            payload = body.decode()
            target = ch.url

            async def attempt() -> tuple[int, str]:
                return await self._post(ch, body, key), ""
        return await self._retrying(ch, page, key, target, payload, attempt)

    async def _retrying(self, ch: Channel, page: Page, key: str, target: str, payload: str,
                        attempt: Callable[[], Awaitable[tuple[int, str]]]) -> Delivery:
        first = self._clock.now_ms()
        failure: _Failure | None = None
        n = 0
        while n < ch.max_attempts:
            if n > 0:
                wait = backoff_delay(n, ch.backoff_base_s, ch.backoff_cap_s, self._rng)
                if failure is not None and failure.retry_after is not None:
                    wait = max(wait, min(failure.retry_after, ch.backoff_cap_s))
                await self._sleep(wait)
            n += 1
            try:
                status, note = await attempt()
            except _Failure as f:
                failure = f
                if not f.retry:
                    break
                continue
            return Delivery(channel=ch.name, type=_type(ch), ok=True, attempts=n, status=status, error=note)
        assert failure is not None
        error = str(failure) if failure.retry else f"{failure} (not retried)"
        dead = DeadLetter(channel=ch.name, type=_type(ch), target=target, incident=page.incident,
                          idempotency_key=key, payload=payload, attempts=n, last_error=error,
                          first_attempt_ms=first, last_attempt_ms=self._clock.now_ms())
        return Delivery(channel=ch.name, type=_type(ch), ok=False, attempts=n, status=failure.status, error=error,
                        dead_letter=dead)

    async def _post(self, ch: WebhookChannel | WorkOrderChannel, body: bytes, key: str) -> int:
        stamp = self._clock.now_ms() // 1000
        headers = {
            "Content-Type": "application/json",
            ID_HEADER: key,
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: sign(ch.secret, key, stamp, body),
            IDEMPOTENCY_HEADER: key,
        }
        try:
            r = await self._client.post(ch.url, content=body, headers=headers, timeout=ch.timeout_s)
        except httpx.InvalidURL as e:
            raise _Failure(f"invalid URL {ch.url!r}: {e}", retry=False) from e
        except httpx.HTTPError as e:
            raise _Failure(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__, retry=True) from e
        if 200 <= r.status_code < 300:
            return r.status_code
        retry = r.status_code == 429 or r.status_code >= 500
        text = r.text[:200].strip()
        raise _Failure(f"HTTP {r.status_code}" + (f": {text}" if text else ""), retry=retry, status=r.status_code,
                       retry_after=_retry_after(r) if retry else None)


def _type(ch: Channel) -> str:
    return "email" if isinstance(ch, EmailChannel) else "webhook" if isinstance(ch, WebhookChannel) else "work_order"


def _retry_after(r: httpx.Response) -> float | None:
    v = r.headers.get("Retry-After")
    if v is None:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        return None  # an HTTP date: the exponential backoff applies


def _page_payload(page: Page, d: PageDetails) -> PagePayload:
    return PagePayload(incident=page.incident, kind=page.kind, scope=page.scope, title=page.title,
                       priority=page.priority, route=page.route, ts=page.ts, alerts=list(page.alerts),
                       assets=list(page.assets), explanation=d.explanation, contributions=dict(d.contributions),
                       recommended_action=d.recommended_action, link=d.link)


def _work_order_payload(page: Page, d: PageDetails, key: str) -> WorkOrderPayload:
    asset = page.assets[0] if page.kind == "asset" and page.assets else page.scope
    return WorkOrderPayload(external_id=key, asset=asset, assets=list(page.assets), incident=page.incident,
                            title=page.title, priority=page.priority, priority_level=page.route,
                            recommended_action=d.recommended_action, explanation=d.explanation,
                            contributions=dict(d.contributions), opened_at_ms=page.ts, link=d.link)


# --- email --------------------------------------------------------------------------------------------------


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def email_subject(page: Page) -> str:
    """``[URGENT P73] pump-7: vibration-high``: the route, the priority and the title."""
    return f"[{page.route.upper()} P{page.priority:.0f}] {page.title}"


def _email_message(ch: EmailChannel, page: Page, d: PageDetails, key: str, now_ms: int) -> EmailMessage:
    rows: list[tuple[str, str]] = [
        ("Incident", f"#{page.incident} ({page.kind} {page.scope})"),
        ("Priority", f"{page.priority:.0f} ({page.route})"),
        ("Since", _iso(page.ts)),
        ("Assets", ", ".join(page.assets) or page.scope),
    ]
    if d.explanation:
        rows.append(("Why", d.explanation))
    if d.contributions:
        rows.append(("Contributions", ", ".join(f"{k} {v:.0%}" for k, v in
                                                sorted(d.contributions.items(), key=lambda kv: -kv[1]))))
    if d.recommended_action:
        rows.append(("Recommended action", d.recommended_action))
    if d.link:
        rows.append(("Link", d.link))
    text = page.title + "\n\n" + "\n".join(f"{k}: {v}" for k, v in rows) + "\n"
    cells = "".join(
        f"<tr><th align=\"left\">{html.escape(k)}</th><td>"
        + (f"<a href=\"{html.escape(v, quote=True)}\">{html.escape(v)}</a>" if k == "Link" else html.escape(v))
        + "</td></tr>"
        for k, v in rows)
    body_html = (f"<html><body><h2>{html.escape(page.title)}</h2><table>{cells}</table></body></html>")
    msg = EmailMessage()
    msg["Subject"] = email_subject(page)
    msg["From"] = ch.from_addr
    msg["To"] = ", ".join(ch.to)
    msg["Date"] = formatdate(now_ms / 1000, usegmt=True)
    domain = ch.from_addr.rpartition("@")[2] or "edgeloop.invalid"
    msg["Message-ID"] = f"<edgeloop.{key.replace(':', '.')}@{domain}>"
    msg[IDEMPOTENCY_HEADER] = key
    msg.set_content(text)
    msg.add_alternative(body_html, subtype="html")
    return msg


def _smtp_send(ch: EmailChannel, msg: EmailMessage) -> tuple[int, str]:
    """Send in the calling (worker) thread: (250, a note on refused recipients) or :class:`_Failure`."""
    try:
        with smtplib.SMTP(ch.host, ch.port, timeout=ch.timeout_s) as smtp:
            if ch.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if ch.username is not None:
                smtp.login(ch.username, ch.password or "")
            refused = smtp.send_message(msg, from_addr=ch.from_addr, to_addrs=ch.to)
    except smtplib.SMTPRecipientsRefused as e:
        codes = [c for c, _ in e.recipients.values()]
        raise _Failure(f"SMTP recipients refused: {e.recipients}", retry=any(c < 500 for c in codes),
                       status=max(codes) if codes else None) from e
    except smtplib.SMTPResponseException as e:
        why = e.smtp_error.decode(errors="replace") if isinstance(e.smtp_error, bytes) else str(e.smtp_error)
        raise _Failure(f"SMTP {e.smtp_code}: {why}", retry=e.smtp_code < 500, status=e.smtp_code) from e
    except (smtplib.SMTPException, OSError) as e:
        raise _Failure(f"{type(e).__name__}: {e}", retry=True) from e
    # some recipients refused while others took it: delivered (a retry would duplicate it), but say who not
    return 250, (f"SMTP refused some recipients: {refused}" if refused else "")
