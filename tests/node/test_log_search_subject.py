"""`credex log search --subject`: the identifier's kind is told by its shape when not given."""

from __future__ import annotations

import datetime as dt

import pytest

from node.cli.log_cmds import _normalised
from node.errors import InputError

TODAY = dt.date(2026, 11, 26)
PERSON = "11010519491231002X"
COMPANY = "91350100M000100Y43"


def test_an_id_number_and_a_credit_code_need_no_kind() -> None:
    assert _normalised(PERSON.lower(), None, TODAY) == PERSON
    assert _normalised(COMPANY.lower(), None, TODAY) == COMPANY


def test_a_given_kind_is_obeyed() -> None:
    assert _normalised(COMPANY, "organisation", TODAY) == COMPANY
    with pytest.raises(Exception, match="ID number"):
        _normalised(COMPANY, "natural_person", TODAY)


def test_neither_is_refused_without_echoing_the_value() -> None:
    bad = "91350100M000100Y44"  # a wrong check character
    with pytest.raises(InputError, match="neither a valid ID number") as caught:
        _normalised(bad, None, TODAY)
    assert bad not in str(caught.value)
