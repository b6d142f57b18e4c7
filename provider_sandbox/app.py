"""The sandbox's HTTP API: routes, request plumbing and background work.

Every POST goes through one pipeline, `SandboxApi._mutate`:

1. require the `Idempotency-Key` header where the product always sends one, and read the
   body;
2. refuse the key while another request with it is still being processed (`409
   idempotency_key_in_use`, as Stripe does), else mark it in flight until this one ends;
3. roll the injected faults that strike before any effect (503; a hang, then 503; or a
   slow answer: a hang, then the effect as usual);
4. validate the body (422 on anything odd);
5. in one transaction: settle due refunds, replay the stored answer for a key seen within
   the retention period (409 if the body differs), or apply the effect and store its answer
   under the key; a key older than the retention period (24 h by default, measured on the
   provider clock) is forgotten, so its retry is a new request and moves money again;
6. roll the fault that strikes after the effect (503, though the effect is committed).

Test-only routes besides the provider API: `PUT /v1/faults` (fault injection) and
`GET /v1/clock`, `POST /v1/clock/advance` `{"seconds"}` (the provider clock, see
`provider_sandbox.clock`).
"""

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import random
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Generic

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provider_sandbox.clock import Clock, ClockAnchor, ScaledClock, system_clock, to_iso
from provider_sandbox.errors import ApiError, ErrorCode, error_body
from provider_sandbox.models import (
    AdvanceClockRequest,
    CreatePaymentRequest,
    FaultsConfig,
    ModelT,
    RecaptureRequest,
    RefundRequest,
    VoidRequest,
    parse_body,
)
from provider_sandbox.operations import DEFAULT_ACCOUNT, JSONObject, Outcome, PaymentProvider
from provider_sandbox.storage import Store, StoredResponse
from provider_sandbox.webhooks import (
    DELIVERY_TIMEOUT,
    WebhookOutbox,
    WebhookPolicy,
    WebhookSender,
)

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
ACCOUNT_HEADER = "Provider-Account"
"""Names the merchant account a request acts in (Stripe Connect's `Stripe-Account`). Every
payment belongs to the account that created it; another account gets `404` for it, and
idempotency keys are kept per account. Without the header: the default account."""
_ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
REPLAYED_HEADER = "Idempotent-Replayed"
"""Set to `true` on answers replayed from an idempotency record, to help debugging."""

MAX_KEY_LENGTH = 255

BACKGROUND_INTERVAL_SECONDS = 0.5
"""How often pending refunds are settled and webhooks sent without anybody asking."""

DEFAULT_IDEMPOTENCY_RETENTION_SECONDS = 24 * 3600.0
"""Stripe forgets an idempotency key after 24 hours; so does the sandbox by default."""


@dataclass(frozen=True)
class SandboxOptions:
    """A real provider's rules, each adjustable for tests (see `python -m provider_sandbox -h`)."""

    idempotency_retention_seconds: float = DEFAULT_IDEMPOTENCY_RETENTION_SECONDS
    """How long a key's answer is replayed, in provider time; after that the key is new."""
    clock_speed: float = 1.0
    """Provider seconds per real second (ignored when a clock is injected)."""
    webhooks: WebhookPolicy = field(default_factory=WebhookPolicy)
    """Late, duplicated and shuffled webhook deliveries."""


@dataclass(frozen=True)
class _Mutation(Generic[ModelT]):
    """One POST route's contract with the pipeline."""

    scope: str
    """Idempotency keys are unique per scope: the route plus the payment it acts on."""
    model: type[ModelT]
    apply: Callable[[ModelT, str | None, datetime], Outcome]
    key_required: bool = True
    faulted: bool = True


class SandboxApi:
    """Route handlers over one database.

    Args:
        store: The database.
        clock: Provider time, for settling, windows, key retention and timestamps.
        wall_clock: Real time, for webhook deliveries and their signatures.
        webhook_url: Where to send webhook events; None sends nothing.
        webhook_secret: Signs webhook bodies.
        options: The provider's rules.
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        wall_clock: Clock,
        webhook_url: str | None,
        webhook_secret: str | None,
        options: SandboxOptions,
    ) -> None:
        self._store = store
        self._clock = clock
        self._wall_clock = wall_clock
        self._webhook_url = webhook_url
        self._webhook_secret = webhook_secret
        self._retention = timedelta(seconds=options.idempotency_retention_seconds)
        self._random = random.Random()
        outbox = None
        if webhook_url is not None:
            outbox = WebhookOutbox(store, options.webhooks, wall_clock, self._random)
        self._provider = PaymentProvider(store, outbox)
        self._in_flight: set[tuple[str, str]] = set()
        """(scope, key) of the POSTs being processed right now."""

    def routes(self) -> list[Route]:
        """The API's routes."""
        return [
            Route("/healthz", self.health, methods=["GET"]),
            Route("/v1/payments", self.create_payment, methods=["POST"]),
            Route("/v1/payments/{payment_id}", self.get_payment, methods=["GET"]),
            Route("/v1/payments/{payment_id}/refunds", self.refund_payment, methods=["POST"]),
            Route("/v1/payments/{payment_id}/refunds", self.list_refunds, methods=["GET"]),
            Route("/v1/payments/{payment_id}/void", self.void_payment, methods=["POST"]),
            Route("/v1/payments/{payment_id}/recapture", self.check_recapture, methods=["GET"]),
            Route("/v1/payments/{payment_id}/recapture", self.recapture, methods=["POST"]),
            Route("/v1/refunds/{refund_id}", self.get_refund, methods=["GET"]),
            Route("/v1/faults", self.get_faults, methods=["GET"]),
            Route("/v1/faults", self.put_faults, methods=["PUT"]),
            Route("/v1/clock", self.get_clock, methods=["GET"]),
            Route("/v1/clock/advance", self.advance_clock, methods=["POST"]),
        ]

    # Handlers

    async def health(self, request: Request) -> Response:
        """`GET /healthz`."""
        return JSONResponse({"status": "ok"})

    async def create_payment(self, request: Request) -> Response:
        """`POST /v1/payments`: faulted like every POST; callers retry with the same key."""
        account = _account(request)
        mutation = _Mutation(
            scope=_scoped(account, "payments"),
            model=CreatePaymentRequest,
            apply=functools.partial(self._provider.create_payment, account=account),
            key_required=False,
        )
        return await self._mutate(request, mutation)

    async def refund_payment(self, request: Request) -> Response:
        """`POST /v1/payments/{payment_id}/refunds`."""
        return await self._mutate_payment(
            request, "refunds", RefundRequest, self._provider.refund_payment
        )

    async def void_payment(self, request: Request) -> Response:
        """`POST /v1/payments/{payment_id}/void`."""
        return await self._mutate_payment(request, "void", VoidRequest, self._provider.void_payment)

    async def recapture(self, request: Request) -> Response:
        """`POST /v1/payments/{payment_id}/recapture`."""
        return await self._mutate_payment(
            request, "recapture", RecaptureRequest, self._provider.recapture_payment
        )

    async def get_payment(self, request: Request) -> Response:
        """`GET /v1/payments/{payment_id}`."""
        payment_id = request.path_params["payment_id"]
        account = _account(request)
        return self._read(lambda now: self._provider.get_payment(payment_id, account))

    async def check_recapture(self, request: Request) -> Response:
        """`GET /v1/payments/{payment_id}/recapture`."""
        payment_id = request.path_params["payment_id"]
        account = _account(request)
        return self._read(lambda now: self._provider.get_recapture_check(payment_id, now, account))

    async def list_refunds(self, request: Request) -> Response:
        """`GET /v1/payments/{payment_id}/refunds`: newest first, metadata included."""
        payment_id = request.path_params["payment_id"]
        account = _account(request)
        return self._read(lambda now: self._provider.list_refunds(payment_id, account))

    async def get_refund(self, request: Request) -> Response:
        """`GET /v1/refunds/{refund_id}`."""
        refund_id = request.path_params["refund_id"]
        account = _account(request)
        return self._read(lambda now: self._provider.get_refund(refund_id, account))

    async def get_faults(self, request: Request) -> Response:
        """`GET /v1/faults`."""
        return JSONResponse(self._store.load_faults().model_dump())

    async def put_faults(self, request: Request) -> Response:
        """`PUT /v1/faults`: replaces the whole configuration; omitted fields reset to defaults."""
        faults = parse_body(FaultsConfig, await _read_json_object(request))
        with self._store.transaction():
            self._store.save_faults(faults)
        return JSONResponse(faults.model_dump())

    async def get_clock(self, request: Request) -> Response:
        """`GET /v1/clock`: provider time and how fast it runs."""
        return JSONResponse(self._clock_json())

    async def advance_clock(self, request: Request) -> Response:
        """`POST /v1/clock/advance` `{"seconds"}`: jump provider time forward (tests only).

        Whatever falls due in the jump (settlements, failures, expired keys) happens at once.
        """
        command = parse_body(AdvanceClockRequest, await _read_json_object(request))
        if not isinstance(self._clock, ScaledClock):
            message = "this sandbox runs on an injected clock; move that one instead"
            raise ApiError(422, ErrorCode.VALIDATION_ERROR, message)
        self._clock.advance(command.seconds)
        with self._store.transaction():
            self._provider.settle_due_refunds(self._clock())
        return JSONResponse(self._clock_json())

    def _clock_json(self) -> JSONObject:
        speed = self._clock.speed if isinstance(self._clock, ScaledClock) else None
        return {"now": to_iso(self._clock()), "speed": speed}

    # Plumbing

    def _read(self, view: Callable[[datetime], JSONObject]) -> Response:
        """Answer a GET, after settling refunds that are due so nobody sees stale state."""
        now = self._clock()
        with self._store.transaction():
            self._provider.settle_due_refunds(now)
            body = view(now)
        return JSONResponse(body)

    async def _mutate_payment(
        self,
        request: Request,
        action: str,
        model: type[ModelT],
        apply: Callable[..., Outcome],
    ) -> Response:
        """Run a POST on one payment; its idempotency keys are scoped to that payment."""
        payment_id = request.path_params["payment_id"]
        account = _account(request)
        mutation = _Mutation(
            scope=_scoped(account, f"payments/{payment_id}/{action}"),
            model=model,
            apply=functools.partial(apply, payment_id, account=account),
        )
        return await self._mutate(request, mutation)

    async def _mutate(self, request: Request, mutation: _Mutation[ModelT]) -> Response:
        """Run a POST through faults, idempotency and validation (see the module docstring)."""
        key = _idempotency_key(request, required=mutation.key_required)
        body = await _read_json_object(request)
        with self._processing(mutation.scope, key):
            faults = self._store.load_faults() if mutation.faulted else FaultsConfig()
            await self._fault_before_effect(faults)
            command = parse_body(mutation.model, body)
            outcome, replayed = self._apply_once(mutation, command, key, body)
            if self._strikes(faults.error_after_effect_rate):
                raise _injected_fault("after the effect")
        headers = {REPLAYED_HEADER: "true"} if replayed else None
        return JSONResponse(outcome.body, outcome.status_code, headers=headers)

    @contextlib.contextmanager
    def _processing(self, scope: str, key: str | None) -> Iterator[None]:
        """Hold the key while its request is processed; a second one meanwhile gets `409`.

        Only an await inside (an injected hang) lets another request see the key held:
        everything else runs on the event loop without yielding.
        """
        if key is None:
            yield
            return
        if (scope, key) in self._in_flight:
            message = "another request with this Idempotency-Key is still being processed"
            raise ApiError(409, ErrorCode.IDEMPOTENCY_KEY_IN_USE, message)
        self._in_flight.add((scope, key))
        try:
            yield
        finally:
            self._in_flight.discard((scope, key))

    async def _fault_before_effect(self, faults: FaultsConfig) -> None:
        if self._strikes(faults.error_rate):
            raise _injected_fault("before the effect")
        if self._strikes(faults.hang_rate):
            await asyncio.sleep(faults.hang_seconds)
            raise _injected_fault("after hanging, before the effect")
        if self._strikes(faults.slow_rate):
            # A slow provider: the request goes on to its effect and answer, but only after
            # the client may have given up on it and sent its retry (which meets the key
            # still in use).
            await asyncio.sleep(faults.hang_seconds)

    def _strikes(self, rate: float) -> bool:
        return self._random.random() < rate

    def _apply_once(
        self,
        mutation: _Mutation[ModelT],
        command: ModelT,
        key: str | None,
        body: JSONObject,
    ) -> tuple[Outcome, bool]:
        """Apply the effect at most once per key; a known key gets its stored answer back.

        Returns:
            The outcome, and whether it was replayed from an earlier request.
        """
        now = self._clock()
        with self._store.transaction():
            self._provider.settle_due_refunds(now)
            if key is None:
                return _decide(mutation, command, None, now), False
            fingerprint = _fingerprint(body)
            stored = self._store.find_response(mutation.scope, key, since=now - self._retention)
            if stored is not None:
                if stored.request_hash != fingerprint:
                    message = "this Idempotency-Key was used with a different body"
                    raise ApiError(409, ErrorCode.IDEMPOTENCY_KEY_REUSED, message)
                return Outcome(stored.status_code, stored.body), True
            outcome = _decide(mutation, command, key, now)
            record = StoredResponse(fingerprint, outcome.status_code, outcome.body)
            self._store.save_response(mutation.scope, key, record, now)
            return outcome, False

    # Background work

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Run the background loop while the app serves; close the database afterwards."""
        # trust_env=False: a developer's HTTP_PROXY must not capture webhooks meant for a
        # local receiver.
        async with httpx.AsyncClient(timeout=DELIVERY_TIMEOUT, trust_env=False) as client:
            sender = None
            if self._webhook_url is not None:
                sender = WebhookSender(
                    self._store, client, self._webhook_url, self._webhook_secret, self._wall_clock
                )
            task = asyncio.create_task(self._background(sender))
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                self._store.close()

    async def _background(self, sender: WebhookSender | None) -> None:
        while True:
            try:
                now = self._clock()
                with self._store.transaction():
                    self._provider.settle_due_refunds(now)
                    self._store.forget_responses(before=now - self._retention)
                if sender is not None:
                    await sender.deliver_due()
            except Exception:
                # A locked database or a bug in one round must not stop settling for good.
                logger.exception("background round failed; trying again")
            await asyncio.sleep(BACKGROUND_INTERVAL_SECONDS)


def create_app(
    db_path: str | Path,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    clock: Clock | None = None,
    *,
    options: SandboxOptions | None = None,
    wall_clock: Clock = system_clock,
) -> Starlette:
    """Build the sandbox app over a database file.

    Args:
        db_path: The SQLite file; created when missing, reused (with all its state) when not.
        webhook_url: Where `refund.succeeded` and `refund.failed` events go; None sends none.
        webhook_secret: Key for the `X-Signature` HMAC of each webhook delivery.
        clock: Provider time; tests pass a fake one to settle refunds, fail them, expire
            windows and keys. Without one, provider time is real time run at
            `options.clock_speed`, anchored in the database.
        options: The provider's rules (key retention, clock speed, webhook delivery).
        wall_clock: Real time, which schedules and signs webhook deliveries.

    The database opens here, so the app also works without its lifespan (as under
    `httpx.ASGITransport`); the lifespan adds the background loop and closes the database.
    """
    options = options or SandboxOptions()
    store = Store(Path(db_path))
    if clock is None:
        clock = _provider_clock(store, options.clock_speed, wall_clock)
    api = SandboxApi(store, clock, wall_clock, webhook_url, webhook_secret, options)
    return Starlette(
        routes=api.routes(),
        lifespan=api.lifespan,
        exception_handlers={
            ApiError: _api_error_response,
            HTTPException: _http_error_response,
            Exception: _internal_error_response,
        },
    )


def _provider_clock(store: Store, speed: float, wall_clock: Clock) -> ScaledClock:
    def save(anchor: ClockAnchor) -> None:
        with store.transaction():
            store.save_clock(anchor)

    return ScaledClock(store.load_clock(), speed, save, wall_clock)


def _decide(
    mutation: _Mutation[ModelT], command: ModelT, key: str | None, now: datetime
) -> Outcome:
    """Apply a mutation; a business rejection is an outcome too, stored like a success."""
    try:
        return mutation.apply(command, key, now)
    except ApiError as error:
        if not error.is_outcome:
            raise
        return Outcome(error.status_code, error.body)


def _scoped(account: str, scope: str) -> str:
    """Idempotency keys are kept per account (the default account's as they always were)."""
    return scope if account == DEFAULT_ACCOUNT else f"accounts/{account}/{scope}"


def _account(request: Request) -> str:
    account = request.headers.get(ACCOUNT_HEADER)
    if account is None:
        return DEFAULT_ACCOUNT
    if not _ACCOUNT.match(account):
        message = f"{ACCOUNT_HEADER} must be an account id of letters, digits, '_', '.', '-'"
        raise ApiError(400, ErrorCode.VALIDATION_ERROR, message)
    return account


def _idempotency_key(request: Request, *, required: bool) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None and not required:
        return None
    if not key or len(key) > MAX_KEY_LENGTH:
        message = f"send an {IDEMPOTENCY_HEADER} header of 1 to {MAX_KEY_LENGTH} characters"
        raise ApiError(400, ErrorCode.IDEMPOTENCY_KEY_REQUIRED, message)
    return key


async def _read_json_object(request: Request) -> JSONObject:
    """Decode the body as a JSON object; an empty body counts as `{}`."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ApiError(422, ErrorCode.VALIDATION_ERROR, "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(422, ErrorCode.VALIDATION_ERROR, "the body must be a JSON object")
    return value


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity, which are not JSON and never money.
    raise ValueError(f"{name} is not valid JSON")


def _fingerprint(body: JSONObject) -> str:
    """A digest of the body that ignores key order and whitespace."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _injected_fault(when: str) -> ApiError:
    return ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, f"injected fault {when}")


async def _api_error_response(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return JSONResponse(error.body, error.status_code)


_HTTP_ERROR_CODES = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}
"""Starlette raises HTTPException for unknown routes and methods; anything else is a bad request."""


async def _http_error_response(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = _HTTP_ERROR_CODES.get(error.status_code, ErrorCode.VALIDATION_ERROR)
    return JSONResponse(
        error_body(code, str(error.detail)), error.status_code, headers=error.headers
    )


async def _internal_error_response(request: Request, error: Exception) -> Response:
    return JSONResponse(error_body(ErrorCode.INTERNAL_ERROR, "internal error"), 500)
