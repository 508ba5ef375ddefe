"""Power logs recorded by other tools: a CSV of timestamped readings, as a :class:`PowerLog`.

Users bring the power log they already have (nvidia-smi's, a meter's, their
own) next to a torch.profiler trace; :func:`read_power_csv` reads it
(:data:`POWER_CSV_FORMAT` says what it accepts) into the same log the native
sampler writes, so energy totals and attribution read it unchanged. Its
channels are named and scaled like the NVML source's (``gpu0.energy`` in mJ,
``gpu0.power_instant`` in mW).
"""
from __future__ import annotations

import csv
import gzip
import math
import re
from decimal import Decimal
from pathlib import Path

import numpy as np

from ..clock import NotANumber, OutOfRange, decimal_text_to_ns, utc_text
from ..errors import PhprofError
from .base import READING_DTYPE, Channel, PowerLog, counter_drops

POWER_CSV_FORMAT = """\
Power log CSV: comma-separated, one header row, one row per reading, rows in time order.
  time column (one of, first found wins):
    timestamp_ns                        integer ns since the Unix epoch
    timestamp_us, timestamp_ms          us / ms since the Unix epoch (decimals allowed)
    timestamp_s, timestamp, time        s since the Unix epoch (decimals kept to the ns)
  Times must be wall-clock (CLOCK_REALTIME: time.time(), time.time_ns()), the clock of
  torch.profiler; monotonic or relative times (time.monotonic(), perf_counter, seconds
  since start) are rejected.
  value columns (at least one):
    power_w or power_mw                 power, held from its row until the next
    energy_j or energy_mj               a cumulative energy counter (preferred for totals)
  Other columns are ignored. Column names are case-insensitive.
Example:
  timestamp_ns,power_w,energy_j
  1712195495502094565,251.3,18234.118
"""

# time column -> ns per unit, in the order they are looked for
_TIME_COLUMNS = (
    ("timestamp_ns", 1),
    ("timestamp_us", 10**3),
    ("timestamp_ms", 10**6),
    ("timestamp_s", 10**9),
    ("timestamp", 10**9),
    ("time", 10**9),
)
_UNIT_OF_SCALE = {1: "ns", 10**3: "us", 10**6: "ms", 10**9: "s"}
# quantity -> (column, channel units per column unit), best first; the channels are
# named and scaled like the NVML source's (gpu0.energy in mJ, gpu0.power_instant in mW)
_VALUE_COLUMNS = {
    "energy": (("energy_j", 1000), ("energy_mj", 1)),
    "power": (("power_w", 1000), ("power_mw", 1)),
}
_CHANNEL_OF = {"energy": ("energy", "mJ"), "power": ("power_instant", "mW")}

# Unix times outside these bounds are not wall-clock times of a profiled run:
# before 2001-09-09 (1e9 s) they are relative or monotonic, after 2100 a wrong unit.
_EPOCH_MIN_NS = 10**18
_EPOCH_MAX_NS = 4_102_444_800 * 10**9
SOURCE = "csv"  # the source name of an imported log


class PowerCsvError(PhprofError, ValueError):
    """A power log CSV that cannot be read (missing, wrong columns, bad cells)."""


def read_power_csv(path: str | Path, device: str = "gpu0") -> PowerLog:
    """Reads a power log CSV (see :data:`POWER_CSV_FORMAT`) as a :class:`PowerLog`.

    Channels are named like the NVML source's: ``{device}.energy`` (mJ counter)
    from ``energy_j``/``energy_mj``, ``{device}.power_instant`` (mW) from
    ``power_w``/``power_mw``; energy first, so that totals come from the counter
    when there is one. Each row gives one reading per channel with
    ``t_before_ns = t_after_ns =`` its time (the logger's read bracket is
    unknown) and ``seq`` = its row number. Raises :class:`PowerCsvError`.
    """
    path = Path(path)
    if not device or "." in device:
        raise PowerCsvError(f"device {device!r}: give a name like gpu0 (no dots)")
    if not path.is_file():
        raise PowerCsvError(f"no such power log CSV: {path}" if not path.exists() else f"{path} is not a file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return _parse_power_csv(csv.reader(f), path, device)
    except UnicodeDecodeError as e:
        raise PowerCsvError(f"{path} is not a UTF-8 text CSV ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise PowerCsvError(f"{path}: not a readable CSV ({e})") from None


def _parse_power_csv(reader, path: Path, device: str) -> PowerLog:
    header = next((row for row in reader if row), None)
    if header is None:
        raise PowerCsvError(f"{path} is empty: expected a header row, then one row per reading")
    names = [h.strip().lower() for h in header]
    position = {}
    for i, n in enumerate(names):
        position.setdefault(n, i)
    found = [(c, s) for c, s in _TIME_COLUMNS if c in position]
    if not found:
        raise PowerCsvError(
            f"{path}: no time column in the header ({', '.join(header)}); name one of "
            f"{', '.join(c for c, _ in _TIME_COLUMNS)} (Unix epoch time)"
        )
    time_col, scale = found[0]
    value_cols: list[tuple[str, str, int]] = []  # (quantity, column, factor)
    for quantity, options in _VALUE_COLUMNS.items():
        present = [(c, k) for c, k in options if c in position]
        if len(present) > 1:
            raise PowerCsvError(
                f"{path}: both {present[0][0]} and {present[1][0]} are present; keep one {quantity} column"
            )
        if present:
            value_cols.append((quantity, *present[0]))
    if not value_cols:
        raise PowerCsvError(
            f"{path}: no value column in the header ({', '.join(header)}); expected power_w or power_mw "
            "(power) and/or energy_j or energy_mj (a cumulative energy counter)"
        )

    width = len(header)
    t_col = position[time_col]
    v_pos = [position[c] for _, c, _ in value_cols]
    t_text: list[str] = []
    v_text: list[list[str]] = [[] for _ in value_cols]
    lines: list[int] = []
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != width:
            raise PowerCsvError(f"{path}, line {reader.line_num}: {len(row)} cells where the header has {width}")
        t_text.append(row[t_col])
        for j, p in enumerate(v_pos):
            v_text[j].append(row[p])
        lines.append(reader.line_num)
    if len(lines) < 2:
        raise PowerCsvError(f"{path}: {len(lines)} reading row(s); at least 2 are needed to measure anything")
    try:
        times = decimal_text_to_ns(np.asarray(t_text, dtype=str), scale).tolist()
    except NotANumber as e:
        raise PowerCsvError(f"{path}, line {lines[e.row]}: {time_col} = {t_text[e.row]!r} is not a number") from None
    except OutOfRange as e:  # beyond the year 2262: a wrong unit, which the epoch check names
        _check_epoch([e.ns], path, time_col, scale)
        raise
    values = [_parse_values(v_text[j], factor, path, lines, col) for j, (_, col, factor) in enumerate(value_cols)]
    for j, ((q, col, _), v) in enumerate(zip(value_cols, values)):
        bad = counter_drops(v)[1] if q == "energy" else ()
        if len(bad):
            k = int(bad[0])
            raise PowerCsvError(
                f"{path}, line {lines[k]}: {col} goes down from {v_text[j][k - 1].strip()} to {v_text[j][k].strip()}, "
                "not to near zero: a cumulative counter only restarts from zero (a driver reload), so this log's "
                "energy column is inconsistent")
    _check_epoch(times, path, time_col, scale)
    t = np.asarray(times, dtype=np.int64)
    back = np.flatnonzero(t[1:] <= t[:-1])
    if len(back):
        i = int(back[0]) + 1
        raise PowerCsvError(
            f"{path}, line {lines[i]}: time {t_text[i].strip()} is not after the previous row's "
            f"(line {lines[i - 1]}); rows must be in strictly increasing time order"
        )

    n, k = len(times), len(value_cols)
    readings = np.zeros(n * k, READING_DTYPE)  # row by row, channels in order within a row
    readings["t_before_ns"] = readings["t_after_ns"] = np.repeat(t, k)
    readings["value"] = np.stack(values, axis=1).reshape(-1)
    readings["seq"] = np.repeat(np.arange(n, dtype=np.uint32), k)
    readings["channel"] = np.tile(np.arange(k, dtype=np.uint16), n)
    channels = tuple(
        Channel(
            f"{device}.{_CHANNEL_OF[q][0]}", device, q, _CHANNEL_OF[q][1],
            f"imported from {path.name}, column {col}"
            + (" (a cumulative energy counter)" if q == "energy" else " (power; the sensor's averaging is unknown)"),
        )
        for q, col, _ in value_cols
    )
    settings = {
        "file": path.name,
        "time_column": time_col,
        "time_unit": _UNIT_OF_SCALE[scale],
        "value_columns": {c.name: col for c, (_, col, _) in zip(channels, value_cols)},
        "ignored_columns": [h for h, nm in zip(header, names) if nm not in {time_col, *(c for _, c, _ in value_cols)}],
        "rows": n,
        "read_bracket": "unknown: t_before_ns = t_after_ns = the row's time",
    }
    return PowerLog(SOURCE, channels, readings, np.empty((0, 2), np.int64), settings)


def _parse_values(texts: list[str], factor: int, path: Path, lines: list[int], column: str) -> np.ndarray:
    """A value column's texts -> int64 in the channel's unit (``factor`` per column unit)."""
    try:
        v = np.asarray(texts, dtype=np.float64)
    except ValueError:
        v = None
    if v is None or not np.isfinite(v).all() or (v < 0).any():
        for text, line in zip(texts, lines):  # the first bad cell, for its line number
            _check_value(text, path, line, column)
        v = np.array([float(x) for x in texts])  # numpy refused what Python's float() reads
    scaled = np.rint(v * factor)
    if (scaled >= 2.0**63).any():
        line = lines[int(np.argmax(scaled >= 2.0**63))]
        raise PowerCsvError(f"{path}, line {line}: {column} is too large")
    ints = scaled.astype(np.int64)
    exact = np.abs(v) < 2.0**53
    if not exact.all():  # integers beyond a double's 53 bits: from their text
        for i in np.flatnonzero(~exact):
            ints[i] = int(Decimal(texts[i].strip()) * factor)
    return ints


def _check_value(text: str, path: Path, line: int, column: str) -> None:
    try:
        v = float(text)
    except ValueError:
        raise PowerCsvError(f"{path}, line {line}: {column} = {text!r} is not a number") from None
    if not math.isfinite(v):
        raise PowerCsvError(f"{path}, line {line}: {column} = {text!r} is not a finite number")
    if v < 0:
        raise PowerCsvError(f"{path}, line {line}: {column} = {text!r} is negative")


def _check_epoch(times: list[int], path: Path, column: str, scale: int) -> None:
    first, last = min(times), max(times)
    unit = _UNIT_OF_SCALE[scale]
    if first >= _EPOCH_MIN_NS and last <= _EPOCH_MAX_NS:
        return
    if first < _EPOCH_MIN_NS:
        what = (
            f"{column} starts at {first / scale:g} {unit}, which as Unix epoch time is {utc_text(first)}: these look like "
            "relative or monotonic times (seconds since start, time.monotonic(), time.perf_counter())"
        )
    else:
        what = f"{column} ends at {last / scale:g} {unit}, which as Unix epoch time is after the year 2100"
    hint = ""
    for other in (1, 10**3, 10**6, 10**9):
        if other != scale and _EPOCH_MIN_NS <= first * other // scale <= _EPOCH_MAX_NS:
            u = _UNIT_OF_SCALE[other]
            hint = f" If the values are {u} since the epoch, name the column timestamp_{u}."
            break
    raise PowerCsvError(
        f"{path}: {what}. The power log must be stamped with wall-clock Unix time (CLOCK_REALTIME: "
        f"time.time() or time.time_ns()), the clock torch.profiler uses, so that it lines up with the trace.{hint}"
    )




# ---- logs for `phprof calibrate --from-log`: a driver's power fields, a meter, the load's marks --------

DRIVER_LOG_FORMAT = """\
Driver log (phprof calibrate --from-log): a CSV with one header row and one row per poll:
  a time column: epoch_ms, epoch_s, epoch_ns, timestamp_ns/_us/_ms/_s (Unix epoch), or nvidia-smi's
    `timestamp` ("2023/07/14 10:12:46.483", local time: see --utc-offset)
  one column per power field, in W: any column whose name holds "power" (power_draw_w,
    "power.draw [W]", "power.draw.instant [W]"...); cells "nan", "[N/A]" or "" are missing readings
  or a phprof trace file (.h5): its power readings, each with its exact read bracket.
  e.g. nvidia-smi --query-gpu=timestamp,power.draw,power.draw.instant --format=csv -lms 10
Meter log: a CSV with a time column as above and one power column (watts, power_w or W).
Schedule (load marks): a CSV with a time column as above; the load switched on at the first mark,
  then off, on... (a mark logged twice counts once) and is off after the last; or a `state`
  column (1/on, 0/off) for each mark.
"""

_EXTRA_TIME = (("epoch_ns", 1), ("epoch_us", 10**3), ("epoch_ms", 10**6), ("epoch_s", 10**9))
# the NVML field phprof samples that a log's field is; power.draw (GetPowerUsage) is the
# instant value on GA100 and older and the 1 s average on newer GPUs: no fixed field
NVML_FIELD_OF = {"power_draw_instant": "power_instant", "power_draw_average": "power_average",
                 "power_instant": "power_instant", "power_average": "power_average"}


def _table(path: Path, min_rows: int = 2) -> tuple[list[str], list[list[str]]]:
    """A CSV's normalised header (lower case, units and punctuation out) and its rows."""
    if not path.is_file():
        raise PowerCsvError(f"no such file: {path}" if not path.exists() else f"{path} is not a file")
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error, OSError, EOFError) as e:
        raise PowerCsvError(f"{path}: not a readable text CSV ({e})") from None
    if len(rows) < min_rows + 1:
        raise PowerCsvError(f"{path}: {max(len(rows) - 1, 0)} row(s) under the header: too few")
    header = [_column_name(h) for h in rows[0]]
    width = len(header)
    for i, r in enumerate(rows[1:], 2):
        if len(r) != width:
            raise PowerCsvError(f"{path}, row {i}: {len(r)} cells where the header has {width}")
    return header, rows[1:]


def _column_name(h: str) -> str:
    h = h.strip().lower()
    for unit in ("[w]", "[mw]", "(w)"):
        h = h.replace(unit, "")
    return "_".join(part for part in re.split(r"[^a-z0-9]+", h) if part).removesuffix("_w")


def _times_s(path: Path, header: list[str], rows: list[list[str]], utc_offset_h: float | None) -> np.ndarray:
    """The rows' times in s since the epoch, from the first time column found."""
    for name, scale in _EXTRA_TIME + _TIME_COLUMNS:
        if name in header:
            i = header.index(name)
            texts = [r[i].strip() for r in rows]
            if name == "timestamp" and texts and not _is_number(texts[0]):
                return _smi_times(path, texts, utc_offset_h)
            try:
                t = np.array([float(x) for x in texts]) * (scale / 1e9)
            except ValueError:
                bad = next(x for x in texts if not _is_number(x))
                raise PowerCsvError(f"{path}: {name} = {bad!r} is not a number") from None
            if not (t.min() > 1e9 and t.max() < _EPOCH_MAX_NS / 1e9):
                raise PowerCsvError(f"{path}: {name} is not Unix epoch time (it starts at {t.min():g} s): logs "
                                    "must be stamped with wall-clock time to line up")
            return t
    raise PowerCsvError(f"{path}: no time column (header: {', '.join(header)}); name one epoch_ms, timestamp_ms, "
                        "timestamp_s... or use nvidia-smi's timestamp")


def _smi_times(path: Path, texts: list[str], utc_offset_h: float | None) -> np.ndarray:
    from datetime import datetime, timedelta, timezone

    tz = None if utc_offset_h is None else timezone(timedelta(hours=utc_offset_h))
    out = np.empty(len(texts))
    for k, x in enumerate(texts):
        try:
            out[k] = datetime.strptime(x, "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=tz).timestamp()
        except ValueError:
            raise PowerCsvError(f"{path}: timestamp {x!r} is neither a number nor nvidia-smi's "
                                "YYYY/MM/DD HH:MM:SS.fff") from None
    return out


def _is_number(x: str) -> bool:
    try:
        float(x)
        return True
    except ValueError:
        return False


def _watts(texts: list[str]) -> np.ndarray:
    """Power cells in W: "56.12", "56.12 W", missing ("", "nan", "[N/A]", "N/A") as NaN."""
    out = np.empty(len(texts))
    for k, x in enumerate(texts):
        x = x.strip().removesuffix("W").strip()
        try:
            out[k] = float(x)
        except ValueError:
            out[k] = np.nan
    return out


def read_driver_fields(path: str | Path, utc_offset_h: float | None = None) \
        -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each power field of a driver log CSV (:data:`DRIVER_LOG_FORMAT`): name ->
    (t_lo_s, t_hi_s, watts), both times the row's (one stamp per poll); fields
    with no reading at all are left out."""
    path = Path(path)
    header, rows = _table(path)
    t = _times_s(path, header, rows, utc_offset_h)
    out = {}
    for i, name in enumerate(header):
        if "power" not in name or "limit" in name:
            continue
        w = _watts([r[i] for r in rows])
        if np.isfinite(w).any():
            out[name] = (t, t, w)
    if not out:
        raise PowerCsvError(f"{path}: no power column with a reading (header: {', '.join(header)})")
    return out


def read_meter(path: str | Path, utc_offset_h: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """An external meter's log: (s since the epoch, W), in time order."""
    path = Path(path)
    header, rows = _table(path)
    t = _times_s(path, header, rows, utc_offset_h)
    col = next((header.index(c) for c in ("watts", "power", "power_w", "w") if c in header), None)
    if col is None:
        raise PowerCsvError(f"{path}: no power column (watts, power_w) in the meter log ({', '.join(header)})")
    w = _watts([r[col] for r in rows])
    keep = np.isfinite(w)
    order = np.argsort(t[keep], kind="stable")
    return t[keep][order], w[keep][order]


def read_load_marks(path: str | Path, utc_offset_h: float | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A load's switching marks: (s since the epoch, on/off per mark or None: alternating from on)."""
    path = Path(path)
    header, rows = _table(path, min_rows=1)
    t = _times_s(path, header, rows, utc_offset_h)
    if "state" not in header:
        return t, None
    i = header.index("state")
    states = [r[i].strip().lower() for r in rows]
    known = {"1": True, "on": True, "true": True, "0": False, "off": False, "false": False}
    bad = [s for s in states if s not in known]
    if bad:
        raise PowerCsvError(f"{path}: state {bad[0]!r} is not on/off (1/0)")
    return t, np.array([known[s] for s in states])

