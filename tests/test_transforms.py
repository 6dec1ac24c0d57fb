"""The data-quality transforms, by class: phones, names, budgets, lengths.

Hypothesis generates each class (valid numbers in every usual spelling, budgets in every usual
wording, names in every case) so the rules hold for the class, not only the examples in
tests/fixtures.
"""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from connector.mapping.transforms import PARTICLES, Unusable, budget_bounds, e164, name_case, truncate

FAST = settings(max_examples=150, deadline=None)


# --- phones ---------------------------------------------------------------------------------------
@st.composite
def valid_numbers(draw: st.DrawFn, regions: tuple[str, ...] = ("ZA",)) -> phonenumbers.PhoneNumber:
    """A number phonenumbers calls valid: an example number of a region and type, its last digits varied."""
    region = draw(st.sampled_from(regions))
    kind = draw(st.sampled_from([phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE,
                                 phonenumbers.PhoneNumberType.TOLL_FREE]))
    example = phonenumbers.example_number_for_type(region, kind)
    assume(example is not None)
    national = str(example.national_number)
    tail = draw(st.integers(0, 999))
    number = phonenumbers.parse(f"+{example.country_code}{national[:-3]}{tail:03d}")
    assume(phonenumbers.is_valid_number(number))
    return number


ZA_SPELLINGS = [
    lambda n: phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.NATIONAL),  # 082 345 6789
    lambda n: phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.INTERNATIONAL),  # +27 82 345 6789
    lambda n: phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164),
    lambda n: f"0{n.national_number}",
    lambda n: f"27{n.national_number}",
    lambda n: f"0027{n.national_number}",
    lambda n: f"0027 {n.national_number}",
    lambda n: f"+27 (0) {n.national_number}",
    lambda n: f"+27(0){n.national_number}",
    lambda n: f"(0{str(n.national_number)[:2]}) {str(n.national_number)[2:5]} {str(n.national_number)[5:]}",
    lambda n: f"0{str(n.national_number)[:2]}-{str(n.national_number)[2:5]}-{str(n.national_number)[5:]}",
    lambda n: phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.NATIONAL).replace(" ", "\u00a0"),
    lambda n: f"  {phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.NATIONAL)}\t",
]


@FAST
@given(valid_numbers(), st.sampled_from(ZA_SPELLINGS))
def test_every_spelling_of_a_valid_sa_number_becomes_its_e164(number: phonenumbers.PhoneNumber, spell) -> None:
    assert e164(spell(number)) == phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@FAST
@given(valid_numbers(("GB", "US", "ZW", "NA", "BW", "DE", "IN", "AU", "NG", "KE")),
       st.sampled_from([phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.E164]))
def test_a_foreign_valid_number_keeps_its_own_country_code(number: phonenumbers.PhoneNumber, style: int) -> None:
    assert e164(phonenumbers.format_number(number, style)) == \
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@FAST
@given(st.one_of(st.text(max_size=30), st.from_regex(r"\+?[0-9 ()\-]{1,20}", fullmatch=True)))
def test_whatever_comes_in_only_a_valid_number_comes_out(raw: str) -> None:
    """Anything: a valid E.164 number, or empty (None / Unusable with a reason), never anything else."""
    try:
        out = e164(raw)
    except Unusable as unusable:
        assert unusable.reason
        return
    if out is not None:
        assert phonenumbers.is_valid_number(phonenumbers.parse(out)) and out.startswith("+")


@pytest.mark.parametrize("raw", ["12345", "082 345 6789 0", "+27 99 123 4567", "0000000000", "1234",
                                 "not a phone", "+999 123 4567", "+44 20 7946 095"])
def test_invalid_numbers_are_unusable(raw: str) -> None:
    with pytest.raises(Unusable):
        e164(raw)


@FAST
@given(valid_numbers(), st.integers(1, 3))
def test_extra_or_missing_digits_never_land(number: phonenumbers.PhoneNumber, extra: int) -> None:
    national = f"0{number.national_number}"
    for wrong in (national + "0" * extra, national[:-extra]):
        candidate = phonenumbers.parse(wrong, "ZA")
        if not phonenumbers.is_valid_number(candidate):
            with pytest.raises(Unusable):
                e164(wrong)


# --- names ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "cased"), [
    ("thabo", "Thabo"), ("THABO MOKOENA", "Thabo Mokoena"), ("van der merwe", "van der Merwe"),
    ("VAN DER MERWE", "van der Merwe"), ("du plessis", "du Plessis"), ("le roux", "le Roux"),
    ("mcdonald", "McDonald"), ("o'neil", "O'Neil"), ("smith-jones", "Smith-Jones"), ("JP", "JP"),
    ("j.p. de villiers", "J.P. de Villiers"),
    # anything already mixed is how the person wrote it
    ("McDonald", "McDonald"), ("van der Merwe", "van der Merwe"), ("JP Smit", "JP Smit"), ("DeVilliers", "DeVilliers"),
    ("Zoë", "Zoë"), ("李小龙", "李小龙"), ("Ндлову", "Ндлову"), ("  Sipho ", "Sipho"),
])
def test_name_case(raw: str, cased: str) -> None:
    assert name_case(raw) == cased


@FAST
@given(st.text(alphabet=st.characters(categories=("L", "Zs", "Pd")), max_size=30))
def test_name_case_only_touches_single_case_names_and_only_their_case(raw: str) -> None:
    out = name_case(raw)
    text = raw.strip()
    if not (text.islower() or text.isupper()):
        assert out == text
    else:
        assert out.upper().casefold() == text.upper().casefold()
    for word in out.split(" "):
        if word.lower() in PARTICLES and not all(w.lower() in PARTICLES for w in out.split(" ") if w):
            assert word == word.lower()


# --- budgets --------------------------------------------------------------------------------------
def rand(amount: int, style: str) -> str:
    if style == "comma":
        return f"R{amount:,}"
    if style == "space":
        return "R" + f"{amount:,}".replace(",", " ")
    if style == "nbsp":
        return "R" + f"{amount:,}".replace(",", "\u00a0")
    if style == "bare":
        return f"R{amount}"
    if style == "k" and amount % 1000 == 0:
        return f"R{amount // 1000}k"
    if style == "m" and amount % 100_000 == 0:
        millions = amount / 1_000_000
        return f"R{millions:g}m"
    return f"R{amount:,}"


AMOUNTS = st.integers(1, 500).map(lambda n: n * 10_000)
STYLES = st.sampled_from(["comma", "space", "nbsp", "bare", "k", "m"])


@FAST
@given(AMOUNTS, AMOUNTS, STYLES, STYLES, st.sampled_from(["–", "-", " – ", " - ", " to ", "—"]))
def test_a_range_in_any_wording_gives_both_ends(low: int, high: int, s1: str, s2: str, dash: str) -> None:
    low, high = min(low, high), max(low, high)
    assert budget_bounds(f"{rand(low, s1)}{dash}{rand(high, s2)}") == (low, high)


@FAST
@given(AMOUNTS, STYLES, st.sampled_from(["Under {}", "under {}", "Up to {}", "Less than {}", "Below {}",
                                         "{} or less", "< {}"]))
def test_an_open_lower_end_is_empty_not_zero(amount: int, style: str, wording: str) -> None:
    assert budget_bounds(wording.format(rand(amount, style))) == (None, amount)


@FAST
@given(AMOUNTS, STYLES, st.sampled_from(["{}+", "{} +", "Over {}", "More than {}", "Above {}", "{} or more",
                                         "From {}"]))
def test_an_open_upper_end_is_empty(amount: int, style: str, wording: str) -> None:
    assert budget_bounds(wording.format(rand(amount, style))) == (amount, None)


@pytest.mark.parametrize(("raw", "bounds"), [
    ("R100,000–R150,000", (100000, 150000)), ("R100 000 - R150 000", (100000, 150000)),
    ("R100k-R150k", (100000, 150000)), ("R100-150k", (100000, 150000)), ("R1.5m", (1500000, 1500000)),
    ("R1,5m", (1500000, 1500000)), ("R1m - R1.5m", (1000000, 1500000)), ("R1m+", (1000000, None)),
    ("R2,000,000+", (2000000, None)), ("Under R50,000", (None, 50000)), ("R75,000", (75000, 75000)),
    ("Not sure", (None, None)), ("", (None, None)), (None, (None, None)), ("R0 - R50k", (0, 50000)),
])
def test_budget_examples(raw: str | None, bounds: tuple[int | None, int | None]) -> None:
    assert budget_bounds(raw) == bounds


# --- lengths --------------------------------------------------------------------------------------
@FAST
@given(st.text(max_size=60), st.integers(1, 45))
def test_truncate_counts_characters_and_never_splits_an_accent(text: str, length: int) -> None:
    out = truncate(text, length)
    assert out is not None and len(out) <= length and text.startswith(out)


def test_truncate_multibyte_at_the_limit() -> None:
    assert truncate("É" * 40, 40) == "É" * 40  # 80 bytes in UTF-8, 40 characters: fits
    assert truncate("Nomvula" + "e\u0301" * 40, 40).endswith("e\u0301")  # the accent stays with its e
