"""Form fields into the domain's requests; anything malformed is a ``validation_error``.

HTML forms send strings only, and an unchecked box sends nothing; these helpers turn them
into the same pydantic requests the JSON routes take, so the rules live in one place.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Final

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData

from domain.bank import BankAccount
from domain.cancellation import CanceledItem
from domain.errors import CancellationError, ErrorCode
from domain.order import Order
from domain.refund_plan import RefundMethod
from domain.requests import AcceptRequest
from starter.http.errors import validation_message

_KEY = re.compile(r"^admin-[0-9a-f]{32}$")
TRUE_VALUES: Final = frozenset({"1", "on", "true", "yes"})


def text(form: FormData, name: str) -> str:
    """A text field, stripped; ``""`` when absent (or a file, which no form of ours sends)."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def optional_text(form: FormData, name: str) -> str | None:
    """A text field, ``None`` when empty."""
    return text(form, name) or None


def checked(form: FormData, name: str) -> bool:
    """A checkbox (or the hidden ``1``/``0`` a review page carries it as)."""
    return text(form, name).lower() in TRUE_VALUES


def new_key() -> str:
    """An idempotency key for one rendering of a form: sent twice, it acts once.

    The client uses it as the Temporal update id, so the server itself drops a repeat.
    """
    return f"admin-{uuid.uuid4().hex}"


def key_of(form: FormData) -> str | None:
    """The form's idempotency key, if it is one we made."""
    key = text(form, "key")
    return key if _KEY.match(key) else None


def parse(model: type[BaseModel], values: dict[str, Any]) -> Any:
    """Validate ``values`` as ``model``; a refusal names the fields, never their values.

    Raises:
        CancellationError: ``validation_error``.
    """
    try:
        return model.model_validate(values)
    except ValidationError as err:
        raise CancellationError(
            ErrorCode.VALIDATION_ERROR, validation_message(err.errors(include_input=False))
        ) from None


def bank_account(form: FormData) -> BankAccount | None:
    """The customer's bank account when any of its fields is filled in."""
    values = {name: text(form, name) for name in ("bank", "account_number", "holder")}
    if not any(values.values()):
        return None
    account: BankAccount = parse(BankAccount, values)
    return account


def refund_method(form: FormData, name: str = "refund_method") -> RefundMethod:
    """The refund method field (``original`` when absent)."""
    raw = text(form, name) or RefundMethod.ORIGINAL.value
    try:
        return RefundMethod(raw)
    except ValueError:
        raise CancellationError(
            ErrorCode.VALIDATION_ERROR, f"{name}: choose one of the refund methods"
        ) from None


def accept_request(form: FormData) -> AcceptRequest:
    """The acceptance the merchant filled in (Accept cancellation request, or Cancel)."""
    request: AcceptRequest = parse(
        AcceptRequest,
        {
            "reason_code": text(form, "reason_code") or None,
            "reason": text(form, "reason"),
            "customer_note": optional_text(form, "customer_note"),
            "refund_method": refund_method(form),
            "bank_account": bank_account(form),
            "restock": checked(form, "restock"),
            "notify_customer": checked(form, "notify_customer"),
        },
    )
    return request


def chosen_items(form: FormData, order: Order) -> list[CanceledItem] | None:
    """The items and quantities chosen on Order details; ``None`` for the whole order.

    Raises:
        CancellationError: ``validation_error`` for a quantity that is not a whole number,
            or chosen items that add up to nothing.
    """
    if text(form, "scope") != "items":
        return None
    items: list[CanceledItem] = []
    for item in order.items:
        raw = text(form, f"qty-{item.item_id}")
        if not raw or raw == "0":
            continue
        if not raw.isdigit() or len(raw) > 7:
            raise CancellationError(
                ErrorCode.VALIDATION_ERROR, f"the quantity of {item.item_id} is not a number"
            )
        items.append(parse(CanceledItem, {"item_id": item.item_id, "quantity": int(raw)}))
    if not items:
        raise CancellationError(
            ErrorCode.VALIDATION_ERROR, "choose at least one item and its quantity to cancel"
        )
    return items
