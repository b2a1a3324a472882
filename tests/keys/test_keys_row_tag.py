"""keys.RowTagger: the keyed integrity tag of a store row (docs/decisions/0018)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

import keys
from keys.at_rest import RowValue, row_encoding

STORAGE_KEY = bytes(range(32))
COLUMNS: list[tuple[str, RowValue]] = [
    ("producer", "node-a"),
    ("body", b"\x01sealed"),
    ("version", 2),
    ("objection", False),
    ("severity", None),
    ("decided_on", dt.date(2026, 1, 2)),
    ("created_at", dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)),
]


def test_tag_is_32_bytes_and_deterministic() -> None:
    tagger = keys.RowTagger(STORAGE_KEY)
    first = tagger.tag("records", "row-1", COLUMNS)
    assert len(first) == 32
    assert first == keys.RowTagger(STORAGE_KEY).tag("records", "row-1", COLUMNS)
    assert tagger.matches("records", "row-1", COLUMNS, first)


def test_pinned_vector() -> None:
    # Pinned so that a change of the encoding or the key derivation, which would turn every
    # stored tag into a tampering alarm, cannot pass unnoticed: a new encoding needs a new
    # version byte and an adoption rule (docs/decisions/0018).
    tag = keys.RowTagger(STORAGE_KEY).tag("records", "row-1", COLUMNS)
    assert tag.hex() == PINNED


# Computed by `test_vector_matches_an_independent_blake2b` (hashlib, not libsodium).
PINNED = "d633b1a3c13d777c6a4d72c8ac4bdb99d3fff5c43c9c4f33dc5208932e3bd42e"


def test_vector_matches_an_independent_blake2b() -> None:
    # hashlib's BLAKE2b is a second implementation of libsodium's generichash: the derivation
    # (crypto_kdf's construction) and the tag, recomputed with it, give the pinned bytes.
    import hashlib  # noqa: PLC0415

    tag_key = hashlib.blake2b(
        b"",
        digest_size=32,
        key=STORAGE_KEY,
        salt=b"row-tag-key-v1".ljust(16, b"\x00"),
        person=b"credex-subkey".ljust(16, b"\x00"),
    ).digest()
    encoded = row_encoding("records", "row-1", COLUMNS)
    assert (
        hashlib.blake2b(encoded, digest_size=32, key=tag_key, person=b"credex-rowtag").hexdigest()
        == PINNED
    )


def test_tag_key_is_not_the_storage_key() -> None:
    # The tag is not the keyed hash under the storage key itself: the key is derived.
    import nacl.bindings  # noqa: PLC0415 (test only: recompute with the raw key)

    encoded = row_encoding("records", "row-1", COLUMNS)
    raw = nacl.bindings.crypto_generichash_blake2b_salt_personal(
        encoded, digest_size=32, key=STORAGE_KEY, person=b"credex-rowtag"
    )
    assert keys.RowTagger(STORAGE_KEY).tag("records", "row-1", COLUMNS) != raw


def test_other_key_other_row_other_table() -> None:
    tag = keys.RowTagger(STORAGE_KEY).tag("records", "row-1", COLUMNS)
    assert keys.RowTagger(bytes(32)).tag("records", "row-1", COLUMNS) != tag
    assert keys.RowTagger(STORAGE_KEY).tag("records", "row-2", COLUMNS) != tag
    assert keys.RowTagger(STORAGE_KEY).tag("grants", "row-1", COLUMNS) != tag


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, "node-b"),
        (1, b"\x01sealee"),
        (2, 3),
        (3, True),
        (4, ""),  # None and empty differ
        (5, dt.date(2026, 1, 3)),
        (6, dt.datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=dt.UTC)),
        (3, 0),  # a bool and an int differ
        (2, "2"),  # an int and its text differ
    ],
)
def test_any_change_of_a_column_changes_the_tag(index: int, value: RowValue) -> None:
    tagger = keys.RowTagger(STORAGE_KEY)
    tag = tagger.tag("records", "row-1", COLUMNS)
    changed = list(COLUMNS)
    changed[index] = (changed[index][0], value)
    assert not tagger.matches("records", "row-1", changed, tag)


def test_same_instant_in_another_zone_has_the_same_tag() -> None:
    tagger = keys.RowTagger(STORAGE_KEY)
    tag = tagger.tag("records", "row-1", COLUMNS)
    shifted = list(COLUMNS)
    shifted[6] = ("created_at", COLUMNS[6][1].astimezone(dt.timezone(dt.timedelta(hours=8))))  # type: ignore[union-attr]
    assert tagger.matches("records", "row-1", shifted, tag)


def test_refuses_a_naive_time_a_bad_key_and_an_unknown_type() -> None:
    with pytest.raises(keys.KeysError):
        keys.RowTagger(bytes(31))
    tagger = keys.RowTagger(STORAGE_KEY)
    with pytest.raises(keys.KeysError):
        tagger.tag("records", "r", [("t", dt.datetime(2026, 1, 1))])
    with pytest.raises(keys.KeysError):
        tagger.tag("records", "r", [("f", 1.5)])  # type: ignore[list-item]


def test_missing_or_malformed_tag_does_not_match() -> None:
    tagger = keys.RowTagger(STORAGE_KEY)
    tag = tagger.tag("records", "row-1", COLUMNS)
    assert not tagger.matches("records", "row-1", COLUMNS, None)
    assert not tagger.matches("records", "row-1", COLUMNS, b"")
    assert not tagger.matches("records", "row-1", COLUMNS, tag[:31])
    assert not tagger.matches("records", "row-1", COLUMNS, tag + b"\x00")


def test_repr_hides_the_key() -> None:
    assert STORAGE_KEY.hex() not in repr(keys.RowTagger(STORAGE_KEY))


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.dates(),
    st.datetimes(timezones=st.just(dt.UTC)),
)
_Row = tuple[str, str, list[tuple[str, RowValue]]]
_ROWS = st.tuples(
    st.text(max_size=6),
    st.text(max_size=6),
    st.lists(st.tuples(st.text(max_size=6), _VALUES), max_size=5),
)


@given(_ROWS, _ROWS)
def test_encoding_is_injective(a: _Row, b: _Row) -> None:
    if _normal(a) != _normal(b):
        assert row_encoding(*a) != row_encoding(*b)
    else:
        assert row_encoding(*a) == row_encoding(*b)


def _normal(row: _Row) -> object:
    # what the encoding must tell apart: the value with its type (True is not 1)
    table, row_id, columns = row
    return table, row_id, [(n, type(v).__name__, v) for n, v in columns]


@given(st.lists(st.tuples(st.text(max_size=6), _VALUES), min_size=1, max_size=5), st.data())
def test_any_single_column_change_changes_the_tag(
    columns: list[tuple[str, RowValue]], data: st.DataObject
) -> None:
    tagger = keys.RowTagger(STORAGE_KEY)
    tag = tagger.tag("records", "row", columns)
    index = data.draw(st.integers(min_value=0, max_value=len(columns) - 1))
    new = data.draw(_VALUES)
    old = columns[index][1]
    if type(new) is type(old) and new == old:
        return
    changed = list(columns)
    changed[index] = (columns[index][0], new)
    assert not tagger.matches("records", "row", changed, tag)
