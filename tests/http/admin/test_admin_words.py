"""The merchants' words: every error code has a sentence, and the guide lists them all."""

from __future__ import annotations

from pathlib import Path

from domain.errors import ErrorCode
from starter.http.admin.words import ERROR_SENTENCES
from starter.http.errors import HTTP_STATUS

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "merchants.md"


def test_every_error_code_has_a_sentence_for_merchants():
    """The one table covers the API's every code, each a sentence."""
    assert set(ERROR_SENTENCES) == set(ErrorCode)
    assert all(s[0].isupper() and s.endswith(".") for s in ERROR_SENTENCES.values())


def test_the_merchants_guide_lists_every_sentence_as_the_pages_show_it():
    guide = GUIDE.read_text()
    for code, sentence in ERROR_SENTENCES.items():
        assert f"| `{code.value}` | {HTTP_STATUS[code]} | {sentence} |" in guide, code
