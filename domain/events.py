"""Events out (spec 7.4): event types, their payload, endpoint rules and signatures.

Pure: which audit event announces which event type, what a delivery's body and headers
are (Standard Webhooks), and which endpoint URLs and event filters a shop may register.
The relay (``starter/relay.py``) and the hook's routes use these; docs/events.md has the
whole design.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final
from urllib.parse import urlsplit

from domain.cancellation import CancellationStatus
from domain.errors import CancellationError, ErrorCode


class EventType(StrEnum):
    """What a webhook announces; the values are public."""

    REQUESTED = "cancellation.requested"
    """A cancellation was requested (or a merchant's started, already accepted)."""
    REMINDER = "cancellation.reminder"
    """Nobody decided within the shop's ``request_reminder_after``."""
    ACCEPTED = "cancellation.accepted"
    """The merchant accepted; refunds start."""
    REJECTED = "cancellation.rejected"
    """The merchant rejected the request (or the acceptance a merchant started with was
    refused, e.g. the order shipped)."""
    WITHDRAWN = "cancellation.withdrawn"
    """The customer took the request back."""
    REFUND_SUCCEEDED = "cancellation.refund_succeeded"
    """A provider refund settled, or the merchant confirmed a bank deposit."""
    REFUND_FAILED = "cancellation.refund_failed"
    """A refund failed for good; a person must retry it or switch its method."""
    COMPLETED = "cancellation.completed"
    """Everything is refunded: the order is canceled."""
    UNDONE = "cancellation.undone"
    """The cancellation was undone; the order is back as it was."""
    REPAYMENT_DUE = "cancellation.repayment_due"
    """An undo waits for the customer to pay again."""
    CLOSED = "cancellation.closed"
    """The run finished: nothing more can happen to this cancellation."""


AUDIT_EVENT_TYPES: Final[Mapping[str, EventType]] = {
    "requested": EventType.REQUESTED,
    "reminder_sent": EventType.REMINDER,
    "accepted": EventType.ACCEPTED,
    "rejected": EventType.REJECTED,
    "acceptance_refused": EventType.REJECTED,
    "withdrawn": EventType.WITHDRAWN,
    "refund_succeeded": EventType.REFUND_SUCCEEDED,
    "refund_confirmed": EventType.REFUND_SUCCEEDED,
    "refund_failed": EventType.REFUND_FAILED,
    "canceled": EventType.COMPLETED,
    "undone": EventType.UNDONE,
    "repayment_requested": EventType.REPAYMENT_DUE,
}
"""The audit event (``HistoryEntry.event``) each event type announces. Audit events not
listed (``refund_retried``, ``undo_started``, ``repayment_received``, ``undo_rolled_back``,
``repayment_lapsed``) are steps inside a state the events already announce; their effect
shows in the next event's view."""

CLOSING_STATUSES: Final = frozenset(
    {CancellationStatus.REJECTED, CancellationStatus.WITHDRAWN, CancellationStatus.UNDONE}
)
"""The run ends as soon as it reaches one of these, so ``closed`` follows at once. A
``canceled`` one closes when its undo window runs out."""

FILTER_PATTERN: Final = re.compile(r"^(\*|cancellation\.\*|cancellation\.[a-z_]+)$")
MAX_FILTERS: Final = 20
MAX_URL_LENGTH: Final = 2048
_HOST_NAME: Final = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")

SECRET_PREFIX: Final = "whsec_"
SECRET_BYTES: Final = 32
"""256-bit secrets, as Standard Webhooks recommends (between 24 and 64 bytes)."""


def event_type_for(audit_event: str) -> EventType | None:
    """The event type announcing this audit event, or ``None`` when none does."""
    return AUDIT_EVENT_TYPES.get(audit_event)


# ---------------------------------------------------------------------------- the payload


def event_data(cancellation_json: str, *, notify_customer: bool, customer_note: str | None) -> str:
    """The stored part of an event's ``data`` as JSON; the sequence is added when it is sent.

    ``cancellation_json`` is the view as JSON (``model_dump_json``), put in as it is: a
    transition's worker pays for no second serialization. Bank accounts in the view are
    references with masked numbers only (:class:`~domain.bank.BankAccountRef`).
    """
    return (
        f'{{"cancellation":{cancellation_json},"notify_customer":{json.dumps(notify_customer)},'
        f'"customer_note":{json.dumps(customer_note)}}}'
    )


def event_body(event_type: str, occurred_at: datetime, sequence: int, data_json: str) -> bytes:
    """The delivery's body: ``{"type", "timestamp", "data": {"sequence", …}}``.

    ``data_json`` is the stored ``data`` (:func:`event_data`), a JSON object; the sequence
    goes in front of its members, so the view is never parsed and written again.
    """
    members = data_json.strip()
    if not (members.startswith("{") and members.endswith("}")):
        raise ValueError("an event's data is a JSON object")
    rest = members[1:].strip()
    data = f'{{"sequence":{sequence}' + ("," + rest if rest != "}" else "}")
    head = json.dumps(event_type, ensure_ascii=False)
    when = json.dumps(occurred_at.isoformat())
    return f'{{"type":{head},"timestamp":{when},"data":{data}}}'.encode()


# ---------------------------------------------------------------------------- filters


def check_filters(patterns: Sequence[str]) -> list[str]:
    """An endpoint's event filter: event types, ``cancellation.*`` or ``*``.

    Raises:
        CancellationError: ``validation_error`` naming the first bad pattern.
    """
    if not patterns or len(patterns) > MAX_FILTERS:
        raise CancellationError(
            ErrorCode.VALIDATION_ERROR, f"events: name 1 to {MAX_FILTERS} event types or patterns"
        )
    known = {t.value for t in EventType}
    for pattern in patterns:
        if not FILTER_PATTERN.match(pattern) or ("*" not in pattern and pattern not in known):
            raise CancellationError(
                ErrorCode.VALIDATION_ERROR,
                f"events: {pattern[:80]!r} is neither an event type nor `cancellation.*`",
            )
    return sorted(set(patterns))


def matches(patterns: Iterable[str], event_type: str) -> bool:
    """Whether an endpoint with these filters receives events of this type."""
    return any(
        p == event_type or p == "*" or (p.endswith(".*") and event_type.startswith(p[:-1]))
        for p in patterns
    )


# ---------------------------------------------------------------------------- endpoint URLs


def check_endpoint_url(url: str, *, allow_http: bool) -> str:
    """An endpoint URL a shop may register; the URL itself when it may.

    ``https`` only, to a host name or a public address. With ``allow_http`` (development,
    tests: ``WEBHOOKS_ALLOW_HTTP=1``) ``http`` is allowed too, and loopback addresses and
    ``localhost`` with it, so a receiver on the developer's machine works. Private,
    link-local and other special addresses are refused either way: a shop must not reach
    the deployment's own network through the relay. Host names are checked again, resolved,
    when the relay connects (:func:`is_forbidden_address`).

    Raises:
        CancellationError: ``validation_error`` saying what is wrong.
    """
    if len(url) > MAX_URL_LENGTH:
        raise _bad_url(f"is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise _bad_url("contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _bad_url("is not a URL") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".").lower()
    if scheme not in ("https", "http") or not host or not parts.netloc:
        raise _bad_url("is not an http(s) URL with a host")
    if parts.username is not None or parts.password is not None:
        raise _bad_url("must not carry a user name or password")
    if port == 0:
        raise _bad_url("has port 0")
    if parts.fragment:
        raise _bad_url("must not have a #fragment")
    if scheme == "http" and not allow_http:
        raise _bad_url("must use https (http is allowed only with WEBHOOKS_ALLOW_HTTP=1)")
    if _is_loopback_name(host):
        if not allow_http:
            raise _bad_url("points at this machine (loopback); use a public https endpoint")
        return url
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None:
        if not _HOST_NAME.fullmatch(host):
            raise _bad_url("has a malformed host name")
        if "." not in host or host.endswith((".local", ".internal", ".localdomain")):
            raise _bad_url("names a host of a private network; use a public host name")
        return url
    if is_forbidden_address(address, allow_loopback=allow_http):
        raise _bad_url("points at a private, loopback or link-local address")
    return url


def is_forbidden_address(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_loopback: bool
) -> bool:
    """Whether the relay must not connect to this address (anything but a public one)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return not allow_loopback
    return not address.is_global or address.is_multicast


def _is_loopback_name(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")


def _bad_url(why: str) -> CancellationError:
    return CancellationError(ErrorCode.VALIDATION_ERROR, f"url {why}")


# ---------------------------------------------------------------------------- signatures


def new_secret(random_bytes: bytes) -> str:
    """A signing secret as Standard Webhooks writes it: ``whsec_<base64>``."""
    return SECRET_PREFIX + base64.b64encode(random_bytes).decode()


def sign(secrets: Iterable[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: ``v1,<base64 HMAC-SHA256>`` per secret, space-separated.

    Signed is ``"{webhook-id}.{webhook-timestamp}.{body}"``; during a rotation every valid
    secret signs, so a receiver holding either verifies.
    """
    signed = f"{message_id}.{timestamp}.".encode() + body
    signatures = []
    for secret in secrets:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
        digest = hmac.new(key, signed, hashlib.sha256).digest()
        signatures.append("v1," + base64.b64encode(digest).decode())
    return " ".join(signatures)


# ---------------------------------------------------------------------------- retries

RETRY_SCHEDULE: Final = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
"""The wait after each failed attempt (Standard Webhooks' suggested schedule): eight
attempts over 27 h 35 min, so a receiver that is down for a whole day still gets every
event. After the last one the delivery is ``failed`` and waits for a redelivery."""


def next_retry(attempts: int, scale: float = 1.0) -> timedelta | None:
    """How long to wait after ``attempts`` failed attempts; ``None``: give up (``failed``).

    ``scale`` shrinks the schedule for tests (``WEBHOOKS_RETRY_SCALE``).
    """
    if attempts < 1 or attempts > len(RETRY_SCHEDULE):
        return None
    return RETRY_SCHEDULE[attempts - 1] * scale
