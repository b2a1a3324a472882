"""Identifier checks: the standards' own examples, broken variants, and properties."""

from __future__ import annotations

import datetime
import itertools
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.cn import uscc as stdnum_uscc

from catalog import (
    InvalidIdentifier,
    mask_identifier,
    normalize_admin_division,
    normalize_org_code,
    normalize_ric,
    normalize_uscc,
    redact_identifiers,
    ric_full_age,
    shown_text,
)
from catalog.identifiers import USCC_ALPHABET, org_code_check_character
from tests.catalog.catalog_testdata import TODAY, make_ric, make_uscc, ric_check, uscc_check

# --- GB 11643 -------------------------------------------------------------------------------


def test_gb11643_appendix_example_is_valid() -> None:
    assert normalize_ric("11010519491231002X", today=TODAY) == "11010519491231002X"


def test_gb11643_historic_area_code_is_accepted() -> None:
    # stdnum refuses it (440524 listed only for 1983-1993); the area code is where the number
    # was issued, not the place of birth, so credex accepts it (docs/catalog.md).
    assert normalize_ric("440524188001010014", today=TODAY) == "440524188001010014"


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("11010519491231002x", "11010519491231002X"),
        (" 110105 19491231 002X ", "11010519491231002X"),
        ("110105-19491231-002X", "11010519491231002X"),
        ("１１０１０５１９４９１２３１００２Ｘ", "11010519491231002X"),  # full-width
        # what copying from a web page, a PDF or an IME leaves inside a number
        ("110105\u200b19491231002X", "11010519491231002X"),  # zero-width space
        ("\ufeff11010519491231002X", "11010519491231002X"),  # byte-order mark
        ("110105\u2060194912\u200d31002X", "11010519491231002X"),  # word joiner, ZWJ
        ("110105\u00ad19491231002X", "11010519491231002X"),  # soft hyphen
        ("110105\u201019491231\u2010002X", "11010519491231002X"),  # hyphen
        ("110105\u201319491231\u2014002X", "11010519491231002X"),  # en and em dash
        ("110105\u221219491231\uff0d002X", "11010519491231002X"),  # minus, full-width -
    ],
)
def test_ric_spellings_normalise_to_one(spelling: str, expected: str) -> None:
    assert normalize_ric(spelling, today=TODAY) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("110105194912310021", "check digit is wrong (expected 'X')"),
        ("11010519491231002", "length 17"),
        ("110105491231002", "15-digit"),
        ("1101051949123100XX", "character 17 is not a digit"),
        ("11010519491231002Y", "character 18"),
        ("99010519491231002X", "province"),
        ("", "length 0"),
    ],
)
def test_ric_refusals_say_what_is_wrong(value: str, fragment: str) -> None:
    with pytest.raises(InvalidIdentifier, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        normalize_ric(value, today=TODAY)


def test_ric_impossible_date_refused() -> None:
    with pytest.raises(InvalidIdentifier, match="not a real date"):
        normalize_ric(make_ric(born="19490230"), today=TODAY)


def test_ric_future_birth_date_refused_though_stdnum_accepts_it() -> None:
    future = make_ric(born="20261126")
    with pytest.raises(InvalidIdentifier, match="future"):
        normalize_ric(future, today=TODAY)
    assert normalize_ric(future, today=datetime.date(2026, 11, 26)) == future


def test_ric_error_never_echoes_the_number() -> None:
    value = "110105194912310021"
    with pytest.raises(InvalidIdentifier) as caught:
        normalize_ric(value, today=TODAY)
    assert value not in str(caught.value)
    assert "19491231" not in str(caught.value)


# --- GB 32100 -------------------------------------------------------------------------------


def test_gb32100_worked_example() -> None:
    assert normalize_uscc("91350100M000100Y43") == "91350100M000100Y43"
    with pytest.raises(InvalidIdentifier, match="character 18 is not allowed"):
        normalize_uscc("91350100M000100Y4Z")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("91350100M000100Y44", "expected '3'"),
        ("91350100M000100Y4", "length 17"),
        ("91350100M0001O0Y43", "character 14 is not allowed"),
        ("000000000000000000", "all zeros"),
        ("00000000000000000X", "placeholder"),
        ("B1350100M000100Y43", "character 1"),
        ("94350100M000100Y43", "character 2"),
        ("913A0100M000100Y43", "characters 3-8"),
    ],
)
def test_uscc_refusals(value: str, fragment: str) -> None:
    with pytest.raises(InvalidIdentifier, match=fragment):
        normalize_uscc(value)


def test_uscc_spellings_normalise() -> None:
    assert normalize_uscc("9135 0100-m000 100y43") == "91350100M000100Y43"
    assert normalize_uscc("\ufeff91350100\u200bM000100Y43\u2013") == "91350100M000100Y43"


@pytest.mark.parametrize("department", ["A", "N", "Y"])
def test_letter_departments_accepted_when_checksum_right(department: str) -> None:
    code = make_uscc(department + "1370303MA3C00001")
    assert normalize_uscc(code) == code
    wrong = code[:17] + ("0" if code[17] != "0" else "1")
    with pytest.raises(InvalidIdentifier, match="check character"):
        normalize_uscc(wrong)


def test_uscc_error_never_echoes_the_code() -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        normalize_uscc("91350100M000100Y44")
    assert "91350100M000100Y44" not in str(caught.value)


# --- masking --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("370303199001010017", "370303********0017"),
        ("91350100M000100Y43", "913501********0Y43"),
        ("E1234567", "E1****67"),
        ("abc", "***"),
        ("", ""),
    ],
)
def test_mask_identifier(value: str, masked: str) -> None:
    assert mask_identifier(value) == masked


@given(st.text(min_size=1, max_size=40))
def test_mask_never_returns_the_value(value: str) -> None:
    masked = mask_identifier(value)
    assert "*" in masked or not value.strip() or masked == ""
    if len(value.strip()) >= 5:
        assert masked != value


# --- properties -----------------------------------------------------------------------------

_bodies = st.builds(
    lambda area, days, seq: (area, datetime.date(1900, 1, 1) + datetime.timedelta(days=days), seq),
    st.sampled_from(["370303", "110105", "440524", "370300", "650102"]),
    st.integers(0, 40000),
    st.integers(0, 999),
)


@given(_bodies)
def test_every_well_formed_ric_is_accepted_and_stable(body: tuple[str, datetime.date, int]) -> None:
    area, born, seq = body
    value = make_ric(area, born.strftime("%Y%m%d"), f"{seq:03d}")
    assert normalize_ric(value, today=TODAY) == value
    assert normalize_ric(value.lower(), today=TODAY) == value


@given(_bodies, st.integers(0, 16), st.integers(1, 9))
def test_any_single_digit_change_is_caught(
    body: tuple[str, datetime.date, int], position: int, delta: int
) -> None:
    area, born, seq = body
    value = make_ric(area, born.strftime("%Y%m%d"), f"{seq:03d}")
    digits = list(value)
    digits[position] = str((int(digits[position]) + delta) % 10)
    changed = "".join(digits)
    with pytest.raises(InvalidIdentifier):
        # MOD 11-2 detects every single substitution; a changed date or province may fail first
        normalize_ric(changed, today=TODAY)


@given(st.text(alphabet="0123456789ABCDEFGHJKLMNPQRTUWXY", min_size=9, max_size=9))
def test_uscc_check_character_agrees_with_the_formula(tail: str) -> None:
    body = "91370303" + tail
    code = body + uscc_check(body)
    assert normalize_uscc(code) == code
    for wrong in (c for c in "0123456789ABCDEFGHJKLMNPQRTUWXY" if c != code[17]):
        with pytest.raises(InvalidIdentifier, match="check character"):
            normalize_uscc(code[:17] + wrong)


def test_independent_arithmetic_matches_the_standard_examples() -> None:
    assert ric_check("11010519491231002") == "X"
    assert uscc_check("91350100M000100Y4") == "3"


@given(st.text(alphabet="0123456789ABCDEFGHJKLMNPQRTUWXY", min_size=9, max_size=9))
def test_uscc_check_character_agrees_with_stdnum(tail: str) -> None:
    # normalize_uscc computes the check character itself (a hot path of ingest); python-stdnum
    # is a second, independent implementation it must agree with.
    body = "91370303" + tail
    code = body + stdnum_uscc.calc_check_digit(body)
    assert normalize_uscc(code) == code


# --- GB 11714 organisation codes, GB/T 2260 division codes ------------------------------------

# Real USCCs from python-stdnum's tests/test_cn_uscc.doctest ("found online and should all be
# valid numbers", arthurdejong/python-stdnum) plus facts §6.2's worked example. Positions 9-17
# of a USCC are the holder's GB 11714 organisation code, so each is a real vector, with check
# characters 0-9 and X and letter bodies.
REAL_USCC = [
    "121200004013590816", "91110000600037341L", "91120224064012553U", "91152201078371135X",
    "9115220107837757XE", "9115220107839138X8", "9131012056010553X5", "91310115MA1K3BTP2B",
    "91340600MA2PBM9HXD", "91340603MA2UJXXCXF", "91371082775260043P", "9144030071526726XG",
    "91620105L015101280", "91620105MA73NBBLXE", "92340603MA2PBN17X5", "92340621MA2PBN0KXX",
    "92340621MA2UK3PJXE", "91350100M000100Y43",
]  # fmt: skip


@pytest.mark.parametrize("code", REAL_USCC)
def test_org_codes_inside_real_usccs_pass(code: str) -> None:
    assert normalize_uscc(code) == code
    assert normalize_org_code(code[8:17]) == code[8:17]
    assert org_code_check_character(code[8:16]) == code[16]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("M000100Y5", "expected '4'"),
        ("M000100Y", "length 8"),
        ("中文", "length 2"),
        ("M000100_4", "length 8"),  # "_" is a separator: compacts to 8 characters
        ("M0001#0Y4", "character 6"),
        ("M000100YA", "character 9"),
        ("000000000", "all zeros"),
    ],
)
def test_org_code_refusals_say_what_is_wrong(value: str, fragment: str) -> None:
    with pytest.raises(InvalidIdentifier, match=fragment) as caught:
        normalize_org_code(value)
    assert "M000100Y" not in str(caught.value)  # never the whole code


@pytest.mark.parametrize("value", ["ab", "37030", "3703031", "99030X", "990303", ""])
def test_admin_division_refusals(value: str) -> None:
    with pytest.raises(InvalidIdentifier):
        normalize_admin_division(value)
    assert normalize_admin_division(" 370303 ") == "370303"


# -- redact_identifiers: free text kept in logs never holds a full identifier ------------------


def test_redact_masks_an_id_number_and_a_uscc_in_free_text() -> None:
    ric = make_ric(seq="004")
    uscc = make_uscc("91370303MA3C0000X")
    text = f"行政许可法 第十二条 subject {ric}, company {uscc}."
    out = redact_identifiers(text)
    assert ric not in out
    assert uscc not in out
    assert (
        out
        == f"行政许可法 第十二条 subject {mask_identifier(ric)}, company {mask_identifier(uscc)}."
    )


def test_redact_sees_through_lower_case_and_full_width_spellings() -> None:
    ric = make_ric(born="19880808", seq="012")
    x_ric = next(r for r in (make_ric(seq=f"{n:03d}") for n in range(200)) if r.endswith("X"))
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in ric)
    for text in (x_ric.lower(), full_width, f"officer-{x_ric.lower()}"):
        out = redact_identifiers(text)
        assert x_ric.lower() not in out.lower()
        assert ric not in out
        assert out.count("*") == 8


def test_redact_leaves_other_text_alone() -> None:
    for text in (
        "administrative_licensing",
        "3f2a9c0d1e8b4a7c9d0e1f2a3b4c5d6e",  # a request id
        "依据 2026-11-26 决定 张市监罚〔2026〕12号 电话 13800138000",  # dates, numbers, a phone
        "",
    ):
        assert redact_identifiers(text) == text


def test_a_lookup_id_keeps_digit_runs_that_are_no_checked_identifier() -> None:
    ric = make_ric()
    wrong = ric[:17] + ("1" if ric[17] != "1" else "2")
    for text in (wrong, ric + "7", "req-1234567890123456789"):
        assert redact_identifiers(text, digit_runs=False) == text
        assert redact_identifiers(text) != text  # free text: masked all the same
    assert ric not in redact_identifiers(ric, digit_runs=False)


@pytest.mark.parametrize(
    "spelling",
    [
        "u{ric}",  # glued to letters
        "依据张三ID{ric}",
        "{ric_dashed}",  # 110105-19491231-002X
        "{ric_spaced}",  # 370303 19800101 9017
        "{ric_zero_width}",
        "{ric_en_dash}",  # 110105–19491231–002X, as word processors turn a hyphen
        "{ric_minus}",
        "{ric_soft_hyphen}",
        "{ric_wrong_check}",  # a wrong check digit
        "{old_15}",  # an old 15-digit ID number
    ],
)
def test_redact_masks_an_id_number_however_it_is_spelt(spelling: str) -> None:
    ric = make_ric(born="19491231", seq="002")
    forms = {
        "ric": ric,
        "ric_dashed": f"{ric[:6]}-{ric[6:14]}-{ric[14:]}",
        "ric_spaced": f"{ric[:6]} {ric[6:14]} {ric[14:]}",
        "ric_zero_width": f"{ric[:4]}\u200b{ric[4:12]}\u200b{ric[12:]}",
        "ric_en_dash": f"{ric[:6]}\u2013{ric[6:14]}\u2013{ric[14:]}",
        "ric_minus": f"{ric[:6]}\u2212{ric[6:14]}\uff0d{ric[14:]}",
        "ric_soft_hyphen": f"{ric[:6]}\u00ad{ric[6:]}",
        "ric_wrong_check": ric[:17] + ("1" if ric[17] != "1" else "2"),
        "old_15": ric[:6] + ric[8:14] + ric[14:17],
    }
    text = spelling.format(**forms)
    out = redact_identifiers(text)
    digits = "".join(c for c in out if c.isdigit())
    assert ric[6:14] not in digits  # the birth date part never survives
    assert "*" in out


@given(
    st.text(max_size=20),
    st.sampled_from(["001", "002", "017", "123"]),
    st.text(max_size=20),
)
def test_redact_never_leaves_an_embedded_id_number(before: str, seq: str, after: str) -> None:
    ric = make_ric(seq=seq)
    out = redact_identifiers(f"{before} {ric} {after}")
    assert ric not in out


def test_redact_changes_nothing_but_the_identifier() -> None:
    ric = make_ric(seq="031")
    text = f"《行政许可法》第二十二条（行政许可审查），经办：{ric}；ＡＢＣ１２３"
    out = redact_identifiers(text)
    assert out == text.replace(ric, mask_identifier(ric))
    long_text = "（行政许可审查），经办人员依照第二十二条规定办理，全角括号与标点不变。"
    assert redact_identifiers(long_text) == long_text


@pytest.mark.parametrize(
    ("born", "today", "age"),
    [
        ("20120615", datetime.date(2026, 6, 15), 13),  # the 14th birthday itself: still 13
        ("20120615", datetime.date(2026, 6, 16), 14),  # complete from the day after
        ("20120615", datetime.date(2026, 6, 14), 13),
        ("20120229", datetime.date(2026, 2, 28), 13),  # born on a leap day, in a common year
        ("20120229", datetime.date(2026, 3, 1), 14),
        ("20120229", datetime.date(2024, 2, 29), 11),
        ("20120229", datetime.date(2024, 3, 1), 12),
        ("19491231", datetime.date(2026, 11, 26), 76),
    ],
)
def test_ric_full_age_counts_a_year_from_the_day_after_the_birthday(
    born: str, today: datetime.date, age: int
) -> None:
    assert ric_full_age(make_ric("370303", born, "001"), today=today) == age


@pytest.mark.parametrize("number", ["91370303MA3C0YKA0Q", "P1234567", "37030320121315001X"])
def test_ric_full_age_of_something_else_is_none(number: str) -> None:
    assert ric_full_age(number, today=datetime.date(2026, 11, 26)) is None


@pytest.mark.parametrize(
    ("typed", "masked"),
    [
        ("张三11010519491231002X", "**1101**********002X"),
        ("110105194912310021 张三", "110105**********21**"),
        ("11010519491231002X", "110105********002X"),
    ],
)
def test_a_mask_shows_only_letters_and_digits_of_what_was_typed(typed: str, masked: str) -> None:
    assert mask_identifier(typed) == masked


@given(st.integers(0, 80))
def test_shown_text_never_shows_an_id_number_the_cut_goes_through(offset: int) -> None:
    number = "11010519491231002X"
    shown = shown_text("x" * offset + number + " tail", 64)
    assert len(shown) <= 64
    # whatever part of the number survives the cut, its birth date and sequence never do
    assert "19491231" not in shown
    assert "1231002" not in shown


def test_shown_text_keeps_short_text_as_it_is() -> None:
    assert shown_text("admin_penalty") == "admin_penalty"
    assert shown_text("a" * 100, 10) == "a" * 10


# -- a credit code split by separators in free text ---------------------------------------------

USCC_SEPARATORS = ["-", " ", "\u2013", "\u2014", "\u2212", "\uff0d", "\u3000", "\u200b", "\u00ad",
                   "_", ".", "/", " - "]  # fmt: skip


def _compact_shown(text: str) -> str:
    """The letters and digits a reader sees, in order, upper case (what a reader could copy)."""
    return "".join(c for c in unicodedata.normalize("NFKC", text).upper() if c.isalnum())


@pytest.mark.parametrize(
    "spelling",
    [
        "统一社会信用代码 9131-0115-MA1K-3BTP-2B",
        "统一社会信用代码：913101 15MA1K3 BTP2B；",
        "code 91310115–MA1K3BTP–2B, issued",  # en dash, as a word processor makes of "-"
        "913101\u200b15MA1K3BTP2B",  # zero-width space
        "９１３１０１１５－ＭＡ１Ｋ３ＢＴＰ－２Ｂ",  # full-width, with full-width hyphens
        "9131 0115 ma1k 3btp 2b",  # lower case
        "91310115MA1K3BTP2B-2026-03-01",  # glued by a dash to a date
        "9-1-3-1-0-1-1-5-M-A-1-K-3-B-T-P-2-B",
    ],
)
def test_a_uscc_split_by_separators_is_masked(spelling: str) -> None:
    code = "91310115MA1K3BTP2B"
    for out in (redact_identifiers(spelling), shown_text(spelling)):
        assert code not in _compact_shown(out)
        assert "*" in out
    assert code[8:14] not in _compact_shown(redact_identifiers(spelling))


@pytest.mark.parametrize(
    "separator",
    ["\n", "\r\n", "\u2009", "\u202f", "\u2002", "\u2011", "\u2028",
     "\u200e", "\u2063", "\ufe0f", "\u202c", "\u2066", "\u034f", "\u180e"],
    ids=["newline", "crlf", "thin-space", "narrow-nbsp", "en-space", "nb-hyphen", "line-sep",
         "lrm", "invisible-separator", "variation-selector", "pop-directional", "lr-isolate",
         "grapheme-joiner", "mongolian-vowel-sep"],
)  # fmt: skip
def test_an_identifier_split_by_a_line_break_or_an_odd_space_dash_or_invisible_is_masked(
    separator: str,
) -> None:
    # Line breaks, the typographic spaces and the non-breaking hyphen are spaces and dashes
    # too, and every default-ignorable character shows nothing: free text (an officer field,
    # a legal basis) carries them as easily as " ", "-" or a zero-width space.
    for code in ("91310115MA1K3BTP2B", "11010519491231002X"):
        for size in (1, 4):
            text = f"代码 {separator.join(code[i : i + size] for i in range(0, 18, size))} 完"
            for out in (redact_identifiers(text), shown_text(text)):
                assert code not in _compact_shown(out)
                assert "*" in out


def test_a_decoy_code_cannot_take_a_piece_of_a_split_uscc_and_leave_the_rest_shown() -> None:
    # Fourteen characters written before the code so that they and its first piece make
    # another valid code: masking that one alone would leave all 18 of the real code readable
    # (its first piece as the decoy's last four, then the rest as written).
    code = "91310115MA1K3BTP2B"
    decoy = next(
        head
        for a, b in itertools.product(USCC_ALPHABET, repeat=2)
        if stdnum_uscc.calc_check_digit((head := f"91000000ABCD{a}{b}") + code[:3]) == code[3]
    )
    text = f"{decoy[:7]} {decoy[7:]} {code[:4]} {code[4:8]} {code[8:12]} {code[12:16]} {code[16:]}"
    for out in (redact_identifiers(text), shown_text(text)):
        assert code not in _compact_shown(out)
    assert redact_identifiers(f"{code[:9]} {code[9:]} {code[:9]} {code[9:]}") == (
        f"{mask_identifier(code)} {mask_identifier(code)}"
    )


def test_a_split_uscc_keeps_the_text_around_it() -> None:
    code = "91310115MA1K3BTP2B"
    text = f"依据 2026-03-01 决定，许〔2026〕12号，代码 {code[:8]}-{code[8:]}，完"
    assert redact_identifiers(text) == text.replace(f"{code[:8]}-{code[8:]}", mask_identifier(code))


@pytest.mark.parametrize(
    "text",
    [
        "依据 2026-03-01 决定 张市监罚〔2026〕12号",
        "许〔2026〕12号 2026-03-01 至 2027-03-01",
        "ADMIN PENALTY CASE REVIEW FOR THE MARKET DEPARTMENT OF ZHANGDIAN",
        "3f2a9c0d-1e8b-4a7c-9d0e-1f2a3b4c5d6e",  # a UUID
        "admin_penalty, admin_license, dishonest_person, tax_a_grade",
        "room 12-3 building 45 floor 6 unit 7-8 no 9 block A-B",
        "credex-node zd-market zd-tax zd-platform v2.3.18-rc1",
    ],
)
def test_ordinary_text_with_separators_is_left_alone(text: str) -> None:
    assert redact_identifiers(text) == text
    assert shown_text(text, 200) == text


_USCC_BODY = st.tuples(
    st.sampled_from("123456789ANY"),
    st.sampled_from(USCC_ALPHABET),
    st.text(alphabet="0123456789", min_size=6, max_size=6),
    st.text(alphabet=USCC_ALPHABET, min_size=9, max_size=9),
).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    body=_USCC_BODY,
    cuts=st.lists(st.integers(1, 17), max_size=17, unique=True),
    separators=st.lists(st.lists(st.sampled_from(USCC_SEPARATORS), min_size=1, max_size=2)
                        .map("".join), min_size=17, max_size=17),
    before=st.text(max_size=20),
    after=st.text(max_size=20),
)  # fmt: skip
def test_a_valid_uscc_split_anywhere_never_survives_shown_text(
    body: str, cuts: list[int], separators: list[str], before: str, after: str
) -> None:
    code = body + stdnum_uscc.calc_check_digit(body)
    pieces, start = [], 0
    for n, cut in enumerate(sorted(cuts)):
        pieces.append(code[start:cut] + separators[n])
        start = cut
    split = "".join(pieces) + code[start:]
    for out in (
        shown_text(f"{before} {split} {after}"),
        redact_identifiers(f"{before} {split} {after}"),
    ):
        assert code not in _compact_shown(out)
