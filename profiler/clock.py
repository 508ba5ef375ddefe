"""The clock every time in phprof is on: CLOCK_REALTIME, in integer nanoseconds.

torch.profiler stamps its events with CLOCK_REALTIME and the power sampler
stamps its readings with it too, so the two line up without conversion. This
module holds what every stage needs of that clock: exact nanoseconds from the
decimal text of other tools' files (:func:`decimal_text_to_ns`), a readable
form (:func:`utc_text`), the (monotonic, realtime) pairs a source takes
(:func:`clock_pair`), and the steps of the wall clock they reveal
(:func:`clock_steps`).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

import numpy as np

CLOCK_STEP_TOLERANCE_NS = 1_000_000  # realtime vs monotonic offset change that counts as a clock step

_POW10 = 10 ** np.arange(19, dtype=np.int64)
_CHUNK = 4096


def utc_text(ns: int) -> str:
    """A CLOCK_REALTIME instant (ns) as a readable UTC time, to the microsecond."""
    try:
        return datetime.fromtimestamp(int(ns) / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    except (OverflowError, OSError, ValueError):
        return f"{ns} ns since the epoch"


def clock_pair() -> tuple[int, int]:
    """(CLOCK_MONOTONIC, CLOCK_REALTIME) ns taken together; the realtime read
    is bracketed by two monotonic reads and paired with their midpoint."""
    m0 = time.monotonic_ns()
    r = time.time_ns()
    m1 = time.monotonic_ns()
    return (m0 + m1) // 2, r


def clock_steps(pairs: np.ndarray) -> list[tuple[int, int, int]]:
    """Steps of CLOCK_REALTIME against CLOCK_MONOTONIC between consecutive
    clock pairs: (from_ns, to_ns, step_ns) where the offset moved by more than
    the tolerance (NTP slews far less than that over a run)."""
    if len(pairs) < 2:
        return []
    pairs = pairs[np.argsort(pairs[:, 0])]
    offset = pairs[:, 1] - pairs[:, 0]
    jumps = np.flatnonzero(np.abs(np.diff(offset)) > CLOCK_STEP_TOLERANCE_NS)
    return [(int(pairs[i, 1]), int(pairs[i + 1, 1]), int(offset[i + 1] - offset[i])) for i in jumps]


class NotANumber(ValueError):
    """A text that is not a number; ``row`` is its position."""

    def __init__(self, row: int, text: str) -> None:
        super().__init__(f"row {row}: {text!r} is not a number")
        self.row, self.text = row, text


class OutOfRange(OverflowError):
    """A number whose nanoseconds an int64 cannot hold (beyond the year 2262 as
    epoch time); ``row`` is its position, ``ns`` its value (a Python int)."""

    def __init__(self, row: int, text: str, ns: int) -> None:
        super().__init__(f"row {row}: {text!r} is {ns} ns, beyond an int64")
        self.row, self.text, self.ns = row, text, ns


def decimal_text_to_ns(texts: np.ndarray, ns_per_unit: int, invalid: int | None = None) -> np.ndarray:
    """Decimal texts of a time in some unit (``ns_per_unit``: 1 for ns, 1000 for
    us, 10**9 for s) -> int64 nanoseconds, exactly: no float ever holds the value.

    Kineto writes microseconds since the epoch with three decimals
    (``1712195495519689.047``), which no double holds to the nanosecond; power
    logs write seconds with nine. The texts (a numpy 'U' or 'S' array) are
    read as a byte matrix and each digit weighted by its place relative to the
    dot, in chunks to bound memory; digits beyond the nanosecond round half up.
    A text that is not plain digits with an optional sign and dot (an
    exponent, an empty cell) goes through Decimal; one that is not a number at
    all (NaN included) raises :class:`NotANumber`, and one whose nanoseconds
    an int64 cannot hold :class:`OutOfRange`; either becomes ``invalid`` when
    that is given.
    """
    n = len(texts)
    if n == 0:
        return np.zeros(0, np.int64)
    decimals = len(str(ns_per_unit)) - 1  # digits after the dot that are whole nanoseconds
    if 10**decimals != ns_per_unit:
        raise ValueError(f"ns_per_unit must be a power of 10, not {ns_per_unit}")
    raw = np.ascontiguousarray(np.asarray(texts).astype("S"))
    width = raw.dtype.itemsize
    m = raw.view(np.uint8).reshape(n, width)
    col = np.arange(width, dtype=np.int64)[None, :]
    weight = np.zeros(decimals + 2, np.int64)  # by place after the dot: 0 (the dot), 1..decimals, then rounding
    weight[1:decimals + 1] = ns_per_unit // 10 ** np.arange(1, decimals + 1)
    out = np.empty(n, np.int64)
    big = np.zeros(n, bool)
    for lo in range(0, n, _CHUNK):
        mm = m[lo:lo + _CHUNK]
        d = mm.astype(np.int64) - ord("0")
        d[(d < 0) | (d > 9)] = 0
        dot = mm == ord(".")
        dotpos = np.where(dot.any(axis=1), dot.argmax(axis=1), (mm != 0).sum(axis=1))[:, None]
        rel = col - dotpos  # < 0: the integer part; 1..decimals: whole ns; decimals + 1: rounding
        whole = (d * (_POW10[np.clip(-rel - 1, 0, 18)] * (rel < 0))).sum(axis=1)
        frac = (d * weight[np.clip(rel, 0, decimals + 1)]).sum(axis=1)
        frac += ((rel == decimals + 1) & (d >= 5)).any(axis=1)
        ns = whole * ns_per_unit + frac
        out[lo:lo + _CHUNK] = np.where(mm[:, 0] == ord("-"), -ns, ns)
        # more than 19 digits of ns, or 19 that wrapped round: through Decimal (exact, or OutOfRange)
        digits = dotpos[:, 0] - (mm[:, 0] == ord("-")) + decimals
        big[lo:lo + _CHUNK] = (digits > 19) | (ns < 0)
    # anything but [-]digits[.digits]: through Decimal, one by one
    plain = np.isin(m, np.frombuffer(b"0123456789.\0", np.uint8)) | ((col == 0) & (m == ord("-")))
    odd = np.flatnonzero(~plain.all(axis=1) | (m[:, 0] == 0) | ((m == ord(".")).sum(axis=1) > 1) | big)
    for i in odd:
        text = raw[i].decode(errors="replace").strip()
        try:
            d = Decimal(text)
            if not d.is_finite():
                raise InvalidOperation
        except InvalidOperation:
            if invalid is None:
                raise NotANumber(int(i), text) from None
            out[i] = invalid
            continue
        ns = int((d * ns_per_unit).to_integral_value(ROUND_HALF_UP))
        if not -(2**63) <= ns < 2**63:
            if invalid is None:
                raise OutOfRange(int(i), text, ns)
            ns = invalid
        out[i] = ns
    return out
