"""phprof.clock: exact nanoseconds from other tools' decimal texts."""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest

from phprof.clock import NotANumber, OutOfRange, decimal_text_to_ns


def ns(texts, ns_per_unit, **kw) -> list[int]:
    return decimal_text_to_ns(np.asarray(texts, dtype=str), ns_per_unit, **kw).tolist()


def reference(text: str, ns_per_unit: int) -> int:
    return int((Decimal(text.strip()) * ns_per_unit).to_integral_value(ROUND_HALF_UP))


def test_microseconds_with_three_decimals_and_the_fourth_rounded_half_up():
    texts = ["1712195495519689.047", "1712195495519689.0474", "1712195495519689.0475", "1712195495519689.0479",
             "1712195495519689.9995", "1712195495519689", "1712195495519689.5", "0.001", "0.0005", "0.0004999"]
    assert ns(texts, 1000) == [1712195495519689047, 1712195495519689047, 1712195495519689048, 1712195495519689048,
                               1712195495519690000, 1712195495519689000, 1712195495519689500, 1, 1, 0]


def test_seconds_with_nine_decimals():
    texts = ["1712195495.502094565", "1712195495.5020945655", "1712195495.6", "1712195495.", "1712195495"]
    assert ns(texts, 10**9) == [1712195495502094565, 1712195495502094566, 1712195495600000000, 1712195495000000000,
                                1712195495000000000]
    assert ns(["1712195495502.094565"], 10**6) == [1712195495502094565]  # ms


def test_nanosecond_integers_to_the_last_digit():
    texts = ["1712195495502094565", "0", "7", "9223372036854775807"]
    assert ns(texts, 1) == [1712195495502094565, 0, 7, 2**63 - 1]
    assert ns(["1712195495502094565.5", "1712195495502094565.4"], 1) == [1712195495502094566, 1712195495502094565]


def test_negative_values():
    assert ns(["-1.5", "-1712195495519689.047", "-0.0005", "-0"], 1000) == [-1500, -1712195495519689047, -1, 0]
    assert ns(["-1712195495.000000001"], 10**9) == [-1712195495000000001]
    assert ns(["-9223372036854775808"], 1) == [-(2**63)]


def test_exponents_and_spaces_go_through_decimal():
    assert ns(["1.7121954958e9", "17121954958E-1", "+1712195495.5"], 10**9) == [
        1712195495800000000, 1712195495800000000, 1712195495500000000]
    assert ns(["1712195495519689047e-3", "1.5e-3"], 1000) == [1712195495519689047, 2]  # 1.5 ns rounds half up
    assert ns([" 1712195495.5", "1712195495.25 ", "\t12\t"], 10**9) == [
        1712195495500000000, 1712195495250000000, 12 * 10**9]


def test_bytes_and_an_empty_array():
    assert decimal_text_to_ns(np.array([b"1.5", b"2"]), 1000).tolist() == [1500, 2000]
    out = decimal_text_to_ns(np.array([], dtype=str), 1000)
    assert out.dtype == np.int64 and len(out) == 0


def test_every_row_matches_decimal_across_chunks():
    """Thousands of texts of every shape (more than one chunk): each the same as Decimal gives."""
    rng = np.random.default_rng(7)
    texts = []
    for _ in range(10_000):
        whole = str(int(rng.integers(0, 10**int(rng.integers(1, 16)))))
        frac = "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(0, 6))))
        sign = "-" if rng.random() < 0.1 else ""
        texts.append(sign + whole + ("." + frac if frac or rng.random() < 0.2 else ""))
    got = ns(texts, 1000)
    assert got == [reference(t, 1000) for t in texts]


def test_a_non_number_raises_with_its_row():
    for bad in ("yesterday", "nan", "NaN", "inf", "", "1.2.3", "12:00", "0x10"):
        with pytest.raises(NotANumber) as info:
            ns(["1712195495.5", "1712195495.6", bad, "1712195495.7"], 10**9)
        assert info.value.row == 2 and info.value.text == bad.strip(), bad
        assert isinstance(info.value, ValueError) and "row 2" in str(info.value)


def test_invalid_replaces_what_is_not_a_number():
    texts = ["1.5", "n/a", "", "nan", "2"]
    assert ns(texts, 1000, invalid=0) == [1500, 0, 0, 0, 2000]
    assert ns(texts, 1000, invalid=-1) == [1500, -1, -1, -1, 2000]


def test_nanoseconds_beyond_an_int64_are_out_of_range():
    """No silent wrap: ms read as seconds are 10**21 ns."""
    for big in ("1712195495502", "9223372036854775808", "99999999999999999999", "-9223372036854775809", "1e19"):
        unit = 10**9 if big == "1712195495502" else 1
        with pytest.raises(OutOfRange) as info:
            ns(["1", big], unit)
        assert info.value.row == 1 and info.value.ns == reference(big, unit), big
    assert ns(["1", "1712195495502"], 10**9, invalid=0) == [10**9, 0]


def test_the_unit_must_be_a_power_of_ten():
    with pytest.raises(ValueError, match="power of 10"):
        ns(["1"], 1024)
