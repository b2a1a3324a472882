"""Identifier checks: GB 11643 citizen ID numbers (RIC), GB 32100 unified social credit codes,
GB 11714 organisation codes and GB/T 2260 administrative division codes.

python-stdnum supplies the check-digit arithmetic; this module adds what it lacks and decides
what it gets wrong for us (docs/catalog.md, "Identifiers"):

- Input is normalised (NFKC, so full-width digits become ASCII; upper case; spaces, hyphens,
  dashes, dots and invisible format characters such as a zero-width space removed) so one
  subject never has two spellings.
- RIC: a future or impossible birth date is refused. The 6-digit area code is NOT checked
  against the birth year (stdnum does that, and so refuses GB 11643's own example
  440524188001010014): the area code is the county where the number was first issued (1984 or
  later), not the place at birth, so only the province prefix is required to be valid.
- RIC: 15-digit numbers (GB 11643-1989) are refused with a message saying to convert them; they
  have no check digit, so a typo in one cannot be caught.
- USCC: letter registration departments (A, N, Y) are accepted when the charset and check
  character are right (stdnum refuses any letter in positions 1-8); all-zero codes and the
  individual-business placeholder `00000000000000000X` are refused here (the placeholder is
  accepted only by `validate_record`, for 个体工商户 with a business registration number).

- Organisation code (组织机构代码, GB 11714-1997): python-stdnum has no module for it (stdnum.cn
  holds only ric and uscc), so the check is computed here: 8 body characters (digits and capital
  letters, value = base-36 digit), weights 3 7 9 10 5 8 4 2, C9 = 11 - (S mod 11) with 10 -> X
  and 11 -> 0. It is the code inside a USCC's positions 9-17 (facts §6.2: `91350100M000100Y43`
  holds `M000100Y4`); tests check it against real USCCs from python-stdnum's test data.
- Administrative division (GB/T 2260): exactly 6 digits with a known province prefix.

Errors are `InvalidIdentifier` and say what is wrong (length, character, date, check digit with
the expected character) without ever echoing the full value.
"""

from __future__ import annotations

import bisect
import datetime
import itertools
import re
import unicodedata

from stdnum.cn import ric as _ric

from catalog.errors import InvalidIdentifier

USCC_PLACEHOLDER = "00000000000000000X"
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_SET = frozenset(USCC_ALPHABET)

# GB/T 2260 province-level codes, plus 81/82/83 used by residence permits of Hong Kong, Macao
# and Taiwan residents (港澳台居民居住证, since 2018).
_PROVINCES = frozenset(
    {
        "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37",
        "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64",
        "65", "71", "81", "82", "83",
    }
)  # fmt: skip
_USCC_DEPARTMENTS = frozenset("123456789ANY")
# position-2 categories where GB 32100's table is known (S-USCCTAB); other departments: charset only
_USCC_CATEGORIES = {"1": frozenset("1239"), "5": frozenset("1239"), "9": frozenset("123")}
INVISIBLE_FORMAT_CHARS = "\u200b\u200c\u200d\u2060\ufeff"
"""Characters that show nothing and that str.strip() keeps: zero-width space, non-joiner and
joiner, word joiner, byte-order mark. Exports carry them inside and around values."""

DASH_CHARS = "\u00ad\u2010\u2012\u2013\u2014\u2015\u2212"
"""Dashes that NFKC leaves as they are, which word processors, PDFs and input methods put
where a hyphen was typed: soft hyphen, hyphen (also what NFKC makes of the non-breaking
hyphen), figure dash, en dash, em dash (also the small em dash's), horizontal bar, minus sign.
NFKC turns the full-width and small hyphen-minus into "-" itself."""

_SEPARATORS = str.maketrans("", "", " \t-.\u3000_" + INVISIBLE_FORMAT_CHARS + DASH_CHARS)
_EARLIEST_BIRTH_YEAR = 1800


def compact(value: str) -> str:
    """Return the identifier in its one canonical spelling: NFKC, upper case, no separators."""
    if value.isascii():
        if value.isalnum():  # the common case: nothing to remove
            return value.upper()
        return value.translate(_SEPARATORS).strip().upper()
    return unicodedata.normalize("NFKC", value).translate(_SEPARATORS).strip().upper()


def mask_identifier(value: str) -> str:
    """Return a masked form safe for logs and messages: `370303********0001` for an 18-character
    value (first 6, last 4 kept); shorter values keep a quarter on each side, values of 4
    characters or fewer are fully masked. Never returns the full value."""
    text = compact(value) if value.strip() else value
    n = len(text)
    if n <= 4:
        return "*" * n
    if n >= 11:
        head, tail = text[:6], text[-4:]
    else:
        keep = max(1, n // 4)
        head, tail = text[:keep], text[-keep:]
    # Only letters and digits of an identifier are ever shown: a value typed with a name in
    # front (张三110105...) keeps its shape, not the name.
    return _shown(head) + "*" * (n - len(head) - len(tail)) + _shown(tail)


def _shown(part: str) -> str:
    if part.isascii() and part.isalnum():
        return part
    return "".join(c if c.isascii() and c.isalnum() else "*" for c in part)


# An 18-character run that could be a citizen ID number or a USCC, not inside a longer token.
# An 18-character run that could be a citizen ID number or a USCC (ASCII or full-width letters
# and digits), not inside a longer run of such characters.
_RUN_CHARS = "0-9A-Za-z\uff10-\uff19\uff21-\uff3a\uff41-\uff5a"
_IDENTIFIER_RUN = re.compile(rf"(?<![{_RUN_CHARS}])[{_RUN_CHARS}]{{18}}(?![{_RUN_CHARS}])")


# A long run of digits, however it is spelt: ASCII or full-width digits, with the separators
# people type inside numbers (spaces, hyphens, dots, underscores, slashes, zero-width and
# full-width spaces, and any other white space: line breaks, typographic spaces; the
# non-breaking hyphen; any character that shows nothing) between them, glued to letters or
# not, and an ID number's check character X at the end. 15 digits or more: an old or new
# citizen ID number, also with a wrong check digit, or an account number; never a date, a
# phone number or a decision number.
_DIGIT = "0-9\uff10-\uff19"
# Unicode's default-ignorable characters (shown as nothing): joiners, direction marks and
# embeddings, invisible operators, variation selectors, fillers.
_IGNORABLE = (
    "\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\uffa0"
)
_GAP = r"\s\-._/" + "\ufe63\uff0d\u2011" + INVISIBLE_FORMAT_CHARS + DASH_CHARS + _IGNORABLE
_DIGIT_RUN = re.compile(
    rf"(?<![{_DIGIT}])[{_DIGIT}](?:[{_GAP}]*[{_DIGIT}]){{14,}}(?:[{_GAP}]*[Xx\uff38\uff58])?"
)
_SHORTEST_RUN = 15

# Pieces of letters and digits joined by one to `_MAX_GAP` separators: where a credit code
# split by dashes, spaces or invisible characters may hide (`_masked_split_codes`).
_MAX_GAP = 6
_SPLIT_RUN = re.compile(
    rf"(?<![{_RUN_CHARS}])[{_RUN_CHARS}]+(?:[{_GAP}]{{1,{_MAX_GAP}}}[{_RUN_CHARS}]+)+(?![{_RUN_CHARS}])"
)
_PIECE = re.compile(rf"[{_RUN_CHARS}]+")
# shown_text scans this far past its limit: a code of 18 characters that starts before the
# cut, split at every character by the most separators a split may have, is seen whole.
_SCAN_MARGIN = 17 * (1 + _MAX_GAP)
_CODE_LENGTH = 18


def redact_identifiers(text: str, *, digit_runs: bool = True) -> str:
    """Return `text` with every embedded citizen ID number or USCC masked (`mask_identifier`).

    Masked are: an 18-character run of letters and digits whose check character is right for
    either scheme; and, with `digit_runs`, any run of 15 or more digits, whatever its check
    digit and however it is spelt (full-width, split by spaces, hyphens or zero-width
    characters, glued to letters as in `ID110105...`), with a trailing X; and, with
    `digit_runs` too, a credit code split by separators (`9131-0115-MA1K-...`: whole pieces of
    letters and digits, joined by up to six separators each, that together make an
    18-character USCC of a registration department, a region code in digits and the right
    check character). Everything else in
    `text` is returned exactly as it was. For free text that other parties supply and that is
    kept (an access-log entry's officer and legal basis, the item ids a refused caller asked
    for): no full identifier may be stored there, even one spelt to slip past a check. Ids
    that must stay findable as they were given (request and grant ids: random hex may hold
    15 digits in a row) take `digit_runs=False`."""
    if len(text) < _SHORTEST_RUN:
        return text
    if digit_runs:
        text = _DIGIT_RUN.sub(_masked_run, text)
        text = _SPLIT_RUN.sub(_masked_split_codes, text)
    return _IDENTIFIER_RUN.sub(_masked_if_identifier, text)


def shown_text(text: str, limit: int = 64) -> str:
    """`text` that another party wrote (an id, a name it sent), for an error message or a log
    line: at most `limit` characters, with every ID number or credit code in it masked
    (`redact_identifiers`). Only the first `limit` + 119 characters are scanned, so a caller
    cannot make the redaction scan megabytes, yet an identifier the cut goes through is seen
    whole and masked before it is cut (cut first, its first 14 digits would show), even a
    credit code split by separators."""
    return redacted_prefix(text, limit)[0]


def redacted_prefix(text: str, limit: int, *, digit_runs: bool = True) -> tuple[str, bool]:
    """The first `limit` characters of `text` with identifiers masked (`redact_identifiers`),
    and whether anything of it was left off. Like `shown_text`, it scans only the first
    `limit` + 119 characters: text of any size costs what its kept part costs, and an
    identifier the cut goes through, even split, is seen whole and masked before the cut."""
    window = text[: limit + _SCAN_MARGIN]
    kept = redact_identifiers(window, digit_runs=digit_runs)
    return kept[:limit], len(kept) > limit or len(window) < len(text)


def _masked_run(match: re.Match[str]) -> str:
    # the run's digits and check character, without the gaps it was spelt with
    return mask_identifier("".join(ch for ch in match.group(0) if ch.isalnum()))


def _masked_split_codes(match: re.Match[str]) -> str:
    """The run with every USCC made of whole consecutive pieces masked. Whole pieces only: a
    window that started or ended inside a piece would find codes in longer tokens (hex ids).
    Overlapping codes are masked as one: a code written to end with another's first piece
    must not take that piece and leave the rest of the other shown."""
    run = match.group(0)
    spans = [piece.span() for piece in _PIECE.finditer(run)]
    ends = list(itertools.accumulate(b - a for a, b in spans))  # letters and digits so far
    if ends[-1] < _CODE_LENGTH:  # the common case: a few short words
        return run
    found: list[list[int]] = []  # [first, last] pieces of overlapping codes, merged
    for first in range(len(spans)):
        before = ends[first - 1] if first else 0
        last = bisect.bisect_left(ends, before + _CODE_LENGTH, lo=first)
        if last == len(spans):
            break
        if ends[last] == before + _CODE_LENGTH:
            code = _upper_ascii("".join(run[a:b] for a, b in spans[first : last + 1]))
            if _is_split_uscc(code):
                if found and first <= found[-1][1]:
                    found[-1][1] = last  # `last` only grows with `first`
                else:
                    found.append([first, last])
    out: list[str] = []
    shown_up_to = 0
    for first, last in found:
        joined = _upper_ascii("".join(run[a:b] for a, b in spans[first : last + 1]))
        out += (run[shown_up_to : spans[first][0]], mask_identifier(joined))
        shown_up_to = spans[last][1]
    out.append(run[shown_up_to:])
    return "".join(out)


def _upper_ascii(piece: str) -> str:
    return (piece if piece.isascii() else unicodedata.normalize("NFKC", piece)).upper()


def _is_split_uscc(code: str) -> bool:
    # Stricter than the unsplit check (department, region digits): separators join ordinary
    # words and numbers too, and those must not be masked by a chance check character.
    return (
        code[0] in _USCC_DEPARTMENTS
        and code[2:8].isdigit()
        and all(c in _USCC_SET for c in code)
        and _uscc_check_character(code) == code[17]
    )


def _masked_if_identifier(match: re.Match[str]) -> str:
    run = match.group(0)
    upper = (run if run.isascii() else unicodedata.normalize("NFKC", run)).upper()
    body = upper[:17]
    if (
        body.isascii()
        and body.isdigit()
        and upper[17] in "0123456789X"
        and _ric.calc_check_digit(upper) == upper[17]
    ):
        return mask_identifier(upper)
    if all(c in _USCC_SET for c in upper) and _uscc_check_character(upper) == upper[17]:
        return mask_identifier(upper)
    return run


class _Masked:
    """Formats as the masked identifier, computed only when an error message needs it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __format__(self, spec: str) -> str:
        return mask_identifier(self._value)


def normalize_ric(value: str, *, today: datetime.date) -> str:
    """Return the canonical 18-character citizen ID number, or raise InvalidIdentifier.

    Refuses: a length other than 18 (15-digit numbers with a hint to convert), a non-digit in
    positions 1-17 or a last character other than a digit or X, an unknown province prefix, an
    impossible birth date, a birth date after `today` or before 1800, and a wrong check
    character (naming the expected one). Historic county codes are accepted (module docstring).
    """
    number = compact(value)
    masked = _Masked(number)
    if len(number) == 15 and number.isdigit():
        raise InvalidIdentifier(
            f"ID number {masked}: 15-digit number (GB 11643-1989) is not accepted; "
            "convert it to the 18-digit form (insert the century, add the check digit)"
        )
    if len(number) != 18:
        raise InvalidIdentifier(f"ID number {masked}: length {len(number)}, expected 18")
    body = number[:17]
    if not (body.isascii() and body.isdigit()):
        position = next(i for i, c in enumerate(body, 1) if not (c.isascii() and c.isdigit()))
        raise InvalidIdentifier(f"ID number {masked}: character {position} is not a digit")
    if number[17] not in "0123456789X":
        raise InvalidIdentifier(f"ID number {masked}: character 18 must be a digit or X")
    if number[:2] not in _PROVINCES:
        raise InvalidIdentifier(
            f"ID number {masked}: area code does not start with a valid province code"
        )
    try:
        born = datetime.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise InvalidIdentifier(f"ID number {masked}: birth date part is not a real date") from None
    if born > today:
        raise InvalidIdentifier(f"ID number {masked}: birth date is in the future")
    if born.year < _EARLIEST_BIRTH_YEAR:
        raise InvalidIdentifier(f"ID number {masked}: birth year before {_EARLIEST_BIRTH_YEAR}")
    expected = _ric.calc_check_digit(number)
    if number[17] != expected:
        raise InvalidIdentifier(f"ID number {masked}: check digit is wrong (expected {expected!r})")
    return number


# GB 11714-1997 organisation code: 8 body characters from 0-9A-Z (value = base-36 digit) and a
# check character 0-9 or X.
_ORG_BODY = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def org_code_check_character(body: str) -> str:
    """Return the GB 11714 check character of an 8-character organisation-code body."""
    remainder = 11 - sum(int(c, 36) * w for c, w in zip(body, _ORG_WEIGHTS, strict=True)) % 11
    return "X" if remainder == 10 else "0" if remainder == 11 else str(remainder)


def normalize_org_code(value: str) -> str:
    """Return the canonical 9-character organisation code (组织机构代码), or raise
    InvalidIdentifier.

    Accepts the printed form with a hyphen before the check character (`M000100Y-4`). Refuses:
    a length other than 9, a body character that is not a digit or capital letter, a check
    character other than a digit or X, the all-zero code, and a wrong check character (naming
    the expected one).
    """
    code = compact(value)
    masked = _Masked(code)
    if len(code) != 9:
        raise InvalidIdentifier(f"organisation code {masked}: length {len(code)}, expected 9")
    for position, char in enumerate(code[:8], start=1):
        if char not in _ORG_BODY:
            raise InvalidIdentifier(
                f"organisation code {masked}: character {position} is not a digit or capital letter"
            )
    if code[8] not in "0123456789X":
        raise InvalidIdentifier(f"organisation code {masked}: character 9 must be a digit or X")
    if code[:8] == "00000000":
        raise InvalidIdentifier("organisation code is all zeros")
    expected = org_code_check_character(code[:8])
    if code[8] != expected:
        raise InvalidIdentifier(
            f"organisation code {masked}: check character is wrong (expected {expected!r})"
        )
    return code


def normalize_admin_division(value: str) -> str:
    """Return the 6-digit GB/T 2260 administrative division code, or raise InvalidIdentifier
    for anything that is not exactly 6 digits or does not start with a known province code."""
    code = compact(value)
    if len(code) != 6 or not (code.isascii() and code.isdigit()):
        raise InvalidIdentifier(
            f"administrative division code {_Masked(code)}: expected exactly 6 digits"
        )
    if code[:2] not in _PROVINCES:
        raise InvalidIdentifier(
            f"administrative division code {_Masked(code)}: not a known province code"
        )
    return code


def ric_birth_date(number: str) -> datetime.date | None:
    """Return the birth date inside a canonical 18-character RIC (positions 7-14), or None when
    the number is not one (another document type)."""
    if len(number) != 18 or not number[:17].isdigit():
        return None
    try:
        return datetime.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return None


def ric_full_age(number: str, *, today: datetime.date) -> int | None:
    """The holder's age in full years (周岁) on `today`, from the birth date inside a canonical
    RIC; None when `number` is not one. A year counts as complete from the day after the
    birthday (how Chinese courts count 周岁), so on the 14th birthday itself the holder is
    still 13: the reading that protects a child longer."""
    born = ric_birth_date(number)
    if born is None:
        return None
    return today.year - born.year - ((today.month, today.day) <= (born.month, born.day))


# GB 32100 check character: weights 3^(i-1) mod 31 over the code values of characters 1-17.
_USCC_VALUE = {c: i for i, c in enumerate(USCC_ALPHABET)}
_USCC_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))


def _uscc_check_character(code: str) -> str:
    # The same sum as python-stdnum's uscc.calc_check_digit, without its per-call compact()
    # and str.index scans (a tenth of the cost on every record of an ingest). Only called with
    # 18 characters already checked against the alphabet; a test compares it with stdnum.
    value = _USCC_VALUE
    total = sum(value[c] * w for c, w in zip(code[:17], _USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total) % 31]


def normalize_uscc(value: str) -> str:
    """Return the canonical 18-character unified social credit code, or raise InvalidIdentifier.

    Refuses: a length other than 18; a character outside GB 32100's set (I, O, S, V, Z are never
    used); an unknown registration department (position 1) or category (position 2 where the
    standard's table is known); a non-digit region code (positions 3-8); the all-zero code and
    the `00000000000000000X` placeholder; a wrong check character (naming the expected one).
    Letter departments A, N, Y are accepted (stdnum refuses them).
    """
    code = compact(value)
    masked = _Masked(code)
    if len(code) != 18:
        raise InvalidIdentifier(f"USCC {masked}: length {len(code)}, expected 18")
    for position, char in enumerate(code, start=1):
        if char not in _USCC_SET:
            raise InvalidIdentifier(
                f"USCC {masked}: character {position} is not allowed "
                "(digits and capital letters except I, O, S, V, Z)"
            )
    if code == USCC_PLACEHOLDER:
        raise InvalidIdentifier(
            "USCC 00000000000000000X is the placeholder of an individual business without a "
            "code; it is accepted only in a 个体工商户 record that carries 工商注册号"
        )
    if set(code) == {"0"}:
        raise InvalidIdentifier("USCC is all zeros")
    if code[0] not in _USCC_DEPARTMENTS:
        raise InvalidIdentifier(f"USCC {masked}: character 1 is not a registration department code")
    categories = _USCC_CATEGORIES.get(code[0])
    if categories is not None and code[1] not in categories:
        raise InvalidIdentifier(
            f"USCC {masked}: character 2 is not an organisation category of department {code[0]}"
        )
    if not code[2:8].isdigit():
        raise InvalidIdentifier(f"USCC {masked}: characters 3-8 (region code) must be digits")
    expected = _uscc_check_character(code)
    if code[17] != expected:
        raise InvalidIdentifier(f"USCC {masked}: check character is wrong (expected {expected!r})")
    return code
