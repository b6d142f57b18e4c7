"""Customers' bank accounts for manual refunds.

An account number is personal data: it lives in the store database only. Workflow
payloads, logs, errors and API answers carry a reference and a masked number.
"""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class BankAccount(BaseModel):
    """A bank account as the merchant enters it."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    bank: Annotated[str, Field(min_length=1, max_length=100)]
    account_number: Annotated[str, Field(min_length=4, max_length=34, pattern=r"^[0-9A-Za-z -]+$")]
    holder: Annotated[str, Field(min_length=1, max_length=100)]

    def __repr__(self) -> str:
        return f"BankAccount(bank={self.bank!r}, account_number={self.masked_number!r})"

    __str__ = __repr__

    @property
    def masked_number(self) -> str:
        """Only the last four characters stay visible."""
        return mask_account_number(self.account_number)


class BankAccountRef(BaseModel):
    """What workflows carry instead of a bank account: a reference and a masked number."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ref: Annotated[str, Field(min_length=1, max_length=64)]
    bank: Annotated[str, Field(max_length=100)]
    masked_number: Annotated[str, Field(max_length=40)]


def mask_account_number(number: str) -> str:
    """``110-123-456789`` → ``**********6789``."""
    compact = number.strip()
    return "*" * max(len(compact) - 4, 0) + compact[-4:]
