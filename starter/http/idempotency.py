"""``Idempotency-Key``: a repeated request answers like the first one and acts once.

Every POST and PUT that changes something takes the header. The first request with a
key inserts a *pending* row in ``idempotency_keys`` (insert-first, so two concurrent
requests can't both act), acts, and records its answer (status and body). After that:

- the same key with the same request (method, path, body and actor) gets the stored
  answer, with ``Idempotent-Replayed: true``, without acting again;
- the same key with another request is ``422 idempotency_key_reused``;
- while the first request still runs, a second one waits up to
  :data:`IN_PROGRESS_WAIT` for its answer, then gets ``409 invalid_transition``
  ("still in progress"; retry with the same key);
- a first request that failed (any error) records nothing: its claim is released, so a
  retry with the same key acts. Workflow actions pass the key on as the Temporal update
  id, so even then the workflow applies them once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Final

from fastapi import Depends, Header, Request
from starlette.responses import JSONResponse

from activities.admin_store import AdminStore, ClaimOutcome
from domain.errors import CancellationError, ErrorCode
from starter.http.auth import Principal, PrincipalDep
from starter.http.context import Hook, HookDep

log = logging.getLogger("starter.http")

IN_PROGRESS_WAIT: Final = 10.0
"""How long a repeat waits for the first request's answer; updates answer in about a
second, a start in a few."""
IN_PROGRESS_POLL: Final = 0.05
CLAIM_LEASE: Final = timedelta(minutes=2)
"""A pending claim older than this belongs to a request whose process died; a start waits
at most 30 s for its run, so no living request holds a claim this long."""
KEY_RETENTION: Final = timedelta(days=7)
"""Answers are kept this long; Temporal keeps update ids for the run's lifetime anyway."""

REPLAYED_HEADER: Final = "Idempotent-Replayed"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description=(
            "Repeat a request safely: the same key with the same body answers like the first"
            " time and acts once. For workflow actions it is the Temporal update id."
        ),
    ),
]
"""The ``Idempotency-Key`` header parameter of every changing route."""

Action = Callable[[], Awaitable[tuple[int, Any]]]
"""Performs the request; returns the status and the JSON-ready body."""


@dataclass(frozen=True)
class Write:
    """A request that changes something: where it came from, who sent it and its key."""

    request: Request
    hook: Hook
    caller: Principal
    key: str | None
    """The ``Idempotency-Key``, if the caller sent one."""

    async def once(self, fingerprint: Any, act: Action) -> JSONResponse:
        """Run ``act`` once per key (see :func:`respond_once`)."""
        return await respond_once(
            self.request, self.hook.admin_store, self.caller, self.key, fingerprint, act
        )


def write(
    request: Request,
    hook: HookDep,
    caller: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> Write:
    """The :class:`Write` of a changing route (a FastAPI dependency)."""
    return Write(request, hook, caller, idempotency_key)


WriteDep = Annotated[Write, Depends(write)]
"""What a changing route declares: the hook, the caller and the idempotency key."""


async def respond_once(
    request: Request,
    store: AdminStore,
    principal: Principal,
    key: str | None,
    fingerprint: Any,
    act: Action,
) -> JSONResponse:
    """Run ``act`` once per key and answer with its result (or the stored first answer).

    Args:
        request: For the method and path the key is bound to.
        store: Where claims and answers live.
        principal: The shop keys belong to; its actor is part of the request.
        key: The ``Idempotency-Key``; ``None`` acts without any bookkeeping.
        fingerprint: The validated body (JSON-ready); compared by hash with the first.
        act: The action.
    """
    if key is None:
        status, body = await act()
        return JSONResponse(body, status_code=status)
    shop, method, path = principal.shop_id, request.method, request.url.path
    body_hash = _hash({"body": fingerprint, "actor": principal.actor})
    deadline = asyncio.get_running_loop().time() + IN_PROGRESS_WAIT
    while True:
        claim = await store.claim_key(
            shop, key, method=method, path=path, body_hash=body_hash, lease=CLAIM_LEASE
        )
        match claim.outcome:
            case ClaimOutcome.CLAIMED:
                break
            case ClaimOutcome.REPLAY:
                assert claim.status is not None
                return JSONResponse(
                    claim.response, status_code=claim.status, headers={REPLAYED_HEADER: "true"}
                )
            case ClaimOutcome.REUSED:
                raise CancellationError(
                    ErrorCode.IDEMPOTENCY_KEY_REUSED,
                    "this Idempotency-Key was used with a different request;"
                    " use a new key for a new request",
                )
            case ClaimOutcome.IN_PROGRESS:
                if asyncio.get_running_loop().time() > deadline:
                    raise CancellationError(
                        ErrorCode.INVALID_TRANSITION,
                        "a request with this Idempotency-Key is still in progress;"
                        " retry with the same key shortly",
                    )
                await asyncio.sleep(IN_PROGRESS_POLL)
    try:
        status, body = await act()
    except BaseException:
        await _persist(lambda: store.release_key(shop, key), "release")
        raise
    # The action took effect: keep its answer, or a retry would act again once the lease ran
    # out. A database restart takes seconds, so try for a while before answering anyway.
    await _persist(lambda: store.complete_key(shop, key, status, body), "record the answer of")
    return JSONResponse(body, status_code=status)


BOOKKEEPING_PERSISTENCE: Final = 30.0
"""How long releasing a claim or recording an answer is retried through a database outage."""


async def _persist(write: Callable[[], Awaitable[None]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOOKKEEPING_PERSISTENCE
    delay = 0.2
    while True:
        try:
            # Shielded: a cancelled request must still free (or record) its key.
            await asyncio.shield(write())
            return
        except Exception as err:
            if loop.time() > deadline:
                log.warning("could not %s idempotency key claim: %s", what, type(err).__name__)
                return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


def _hash(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def forget_old_keys(store: AdminStore, every: timedelta = timedelta(hours=1)) -> None:
    """Delete answers older than :data:`KEY_RETENTION`, hourly, for as long as the hook runs."""
    while True:
        try:
            forgotten = await store.forget_keys(KEY_RETENTION)
            if forgotten:
                log.info("forgot %d idempotency keys older than %s", forgotten, KEY_RETENTION)
        except Exception as err:  # the database may be away for a while; try next time
            log.warning("could not forget old idempotency keys: %s", type(err).__name__)
        await asyncio.sleep(every.total_seconds())
