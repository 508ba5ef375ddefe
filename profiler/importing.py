"""Traces recorded elsewhere: a torch.profiler (Kineto) trace plus a power log CSV.

Users of other tools bring the two files they already have and get a phprof
trace file (schema v1, what ``phprof trace`` writes), so that attribution and
reports run on it unchanged:

    from phprof.importing import import_trace
    import_trace("run.pt.trace.json.gz", "power.csv", "run.h5")

The data flows one way: this module reads the foreign formats
(:func:`phprof.tracing.kineto.load_kineto` for the Chrome-trace JSON,
:func:`read_power_csv` for the CSV) and writes through
:class:`phprof.store.TraceWriter` only.

What an imported trace holds, and what it cannot know:

* inferences are the ``ProfilerStep#N`` annotations of ``prof.step()``, one per
  step, numbered 0, 1, ... in time order (``meta["profiler_steps"]`` keeps the
  N's). CPU events belong to the step whose span holds them, device events to
  the step of the CPU op that launched them; the rest get inference -1. The
  step annotations themselves are not stored as events (like phprof's own
  inference scopes, they are the /inferences table). A trace without steps is
  one inference spanning the whole trace;
* one window holds everything; there are no phases, and the modules table is
  empty (the model is unknown); every ``record_function`` annotation is a scope;
* the power log is stored under /power as source ``csv``: each row is one
  reading per value column, stamped ``t_before_ns = t_after_ns =`` the row's
  time, because when the logger's read began and ended is unknown. A counter's
  updates are therefore placed halfway between rows (the uncertainty of
  :meth:`PowerLog.energy_between` covers it), and a power value is taken to
  hold from its row until the next. There are no idle readings and no
  (monotonic, realtime) clock pairs.
"""
from __future__ import annotations

import csv
import gzip
import json
import math
import time
import zlib
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from . import __version__
from .sources import READING_DTYPE, Channel, PowerLog, utc_text
from .store import INFERENCE_DTYPE, PHASE_DTYPE, STACK_DTYPE, TraceWriter, event_rows
from .tracing.kineto import Kind, KinetoTrace, load_kineto, span_of_events

__all__ = [
    "POWER_CSV_FORMAT",
    "ClockMismatchError",
    "PowerCsvError",
    "TraceImportError",
    "import_trace",
    "read_power_csv",
]

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
_STEP_PREFIX = "ProfilerStep#"
_SOURCE = "csv"


class TraceImportError(ValueError):
    """Input that cannot be imported: what is wrong, and in which file."""


class PowerCsvError(TraceImportError):
    """A power log CSV that cannot be read (missing, wrong columns, bad cells)."""


class ClockMismatchError(TraceImportError):
    """The power log and the Kineto trace do not overlap in time: different clocks."""


# ----------------------------------------------------------------- power CSV


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
        raise TraceImportError(f"device {device!r}: give a name like gpu0 (no dots)")
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
    times = [_parse_time(x, scale, path, line, time_col) for x, line in zip(t_text, lines)]
    values = [_parse_values(v_text[j], factor, path, lines, col) for j, (_, col, factor) in enumerate(value_cols)]
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
    return PowerLog(_SOURCE, channels, readings, np.empty((0, 2), np.int64), settings)


def _parse_time(text: str, scale: int, path: Path, line: int, column: str) -> int:
    """Decimal text in units of ``scale`` ns -> int ns, exactly (half up beyond the ns)."""
    s = text.strip()
    whole, dot, frac = s.partition(".")
    if whole.isdigit() and whole.isascii() and (not dot or (frac.isdigit() and frac.isascii())):
        digits = len(str(scale)) - 1  # decimals that are whole ns
        kept, rest = frac[:digits], frac[digits:]
        return int(whole) * scale + int(kept.ljust(digits, "0") or 0) + (rest[:1] >= "5")
    try:
        d = Decimal(s)  # signs, exponents
        if not d.is_finite():
            raise InvalidOperation
        return int((d * scale).to_integral_value(ROUND_HALF_UP))
    except InvalidOperation:
        raise PowerCsvError(f"{path}, line {line}: {column} = {text!r} is not a number") from None


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


# ---------------------------------------------------------------- the import


def import_trace(
    kineto_path: str | Path,
    power_csv: str | Path,
    output: str | Path,
    *,
    device: str = "gpu0",
    overwrite: bool = False,
    model: str | None = None,
) -> Path:
    """Converts a torch.profiler Chrome trace (``.json`` or ``.json.gz``) and a
    power log CSV into a phprof trace file at ``output``; returns its path.

    ``device`` names the power log's device (``gpu0``: its channels become
    ``gpu0.energy`` / ``gpu0.power_instant``). ``model``: a name to record, as
    the trace cannot tell. Raises :class:`TraceImportError` (or a subclass:
    :class:`PowerCsvError`, :class:`ClockMismatchError` when the two files do
    not overlap in time) before anything is written; an existing ``output``
    without ``overwrite``, or an unwritable one, is a :class:`TraceImportError` too.
    See the module docstring for what the file holds.
    """
    kineto_path, power_csv, output = Path(kineto_path), Path(power_csv), Path(output)
    log = read_power_csv(power_csv, device)
    kt = _read_kineto(kineto_path)
    ev = kt.events
    k0, k1 = int(ev["start_ns"].min()), int(ev["end_ns"].max())
    t = log.readings["t_after_ns"]
    p0, p1 = int(t.min()), int(t.max())
    if p1 < k0 or p0 > k1:
        gap = (k0 - p1) if p1 < k0 else (p0 - k1)
        raise ClockMismatchError(
            f"the power log and the trace do not overlap in time: {kineto_path.name} runs from {utc_text(k0)} to "
            f"{utc_text(k1)}, {power_csv.name} from {utc_text(p0)} to {utc_text(p1)} ({_seconds(gap)} apart). Were they "
            "recorded on different machines or clocks, or is the power log's time zone or unit wrong?"
        )
    notes: list[str] = []
    if p0 > k0 or p1 < k1:
        covered = min(p1, k1) - max(p0, k0)
        notes.append(
            f"the power log ({utc_text(p0)} to {utc_text(p1)}) covers only {_seconds(covered)} of the trace's "
            f"{_seconds(k1 - k0)} ({utc_text(k0)} to {utc_text(k1)}): energy outside it is not measured"
        )

    events, inferences, window, steps, table_notes = _tables(kt)
    notes += table_notes
    span = (int(inferences["start_ns"].min()), int(inferences["end_ns"].max()))
    if p0 > span[0] or p1 < span[1]:
        notes.append(f"the power log does not cover every inference ({utc_text(span[0])} to {utc_text(span[1])})")
    gpu_index = int(device[3:]) if device.startswith("gpu") and device[3:].isdigit() else None
    devices_in_trace = sorted({int(d) for d in np.unique(ev["device"]) if d >= 0})
    if gpu_index is not None and devices_in_trace and gpu_index not in devices_in_trace:
        notes.append(
            f"the power log is for {device}, but the trace's device events ran on device(s) "
            f"{', '.join(map(str, devices_in_trace))}"
        )
    meta = _meta(kt, log, kineto_path, power_csv, device, gpu_index, model, steps, notes)
    summary = _summary(log, device, model, inferences, notes)

    try:
        writer = TraceWriter(output, meta, overwrite=overwrite)
    except (OSError, FileExistsError) as e:
        raise TraceImportError(str(e)) from None
    try:
        writer.append_strings(kt.names[1:])  # string 0 ("") and stack 0 (the root) the writer has
        writer.append_stacks(np.asarray(kt.stacks[1:]).astype(STACK_DTYPE))
        writer.append_window(events, inferences, np.empty(0, PHASE_DTYPE), window)
        writer.append_power(log)
    except BaseException:
        writer.close("failed")
        output.unlink(missing_ok=True)  # half an import is of no use to anyone
        raise
    writer.close("complete", summary)
    return output


def _read_kineto(path: Path) -> KinetoTrace:
    if not path.is_file():
        raise TraceImportError(f"no such Kineto trace: {path}" if not path.exists() else f"{path} is not a file")
    try:
        kt = load_kineto(path, scope_filter=lambda name: not name.startswith(_STEP_PREFIX))
    except (json.JSONDecodeError, UnicodeDecodeError, gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise TraceImportError(
            f"{path} is not a torch.profiler Chrome trace (.json or .json.gz): {type(e).__name__}: {e}"
        ) from None
    except (AttributeError, TypeError) as e:  # valid JSON of another shape
        raise TraceImportError(f"{path} is JSON but not a Chrome trace with traceEvents ({e})") from None
    if not len(kt.events):
        raise TraceImportError(
            f"{path} holds no duration events of torch.profiler (cpu_op, kernel, ...); skipped: {kt.skipped or 'none'}"
        )
    if kt.names[:1] != [""] or len(kt.stacks) == 0 or tuple(kt.stacks[0]) != (0, 0):
        raise AssertionError("load_kineto's tables no longer start with the root string and stack")
    return kt


def _tables(kt: KinetoTrace):
    """Events, inferences and the one window, in the store's layout; the step numbers; notes."""
    ev = kt.events
    n = len(ev)
    is_step_name = np.array([s.startswith(_STEP_PREFIX) for s in kt.names], dtype=bool)[ev["name"]]
    steps_mask = is_step_name & (ev["kind"] == Kind.USER_ANNOTATION)
    drop = is_step_name & ((ev["kind"] == Kind.USER_ANNOTATION) | (ev["kind"] == Kind.GPU_ANNOTATION))
    notes: list[str] = []

    inference = np.full(n, -1, np.int32)
    if steps_mask.any():
        st = ev[steps_mask]  # already in start order
        numbers = [_step_number(kt.names[i]) for i in st["name"]]
        infs = np.zeros(len(st), INFERENCE_DTYPE)
        infs["index"] = np.arange(len(st))
        infs["start_ns"], infs["end_ns"] = st["start_ns"], st["end_ns"]
        inference[:] = span_of_events(ev, st["start_ns"], st["end_ns"])
        steps = {"inferences_from": "ProfilerStep annotations", "profiler_steps": numbers}
    else:
        infs = np.zeros(1, INFERENCE_DTYPE)
        infs["start_ns"], infs["end_ns"] = int(ev["start_ns"].min()), int(ev["end_ns"].max())
        inference[:] = 0
        steps = {"inferences_from": "the whole trace (no ProfilerStep annotations)", "profiler_steps": []}
        notes.append(
            "the trace has no ProfilerStep#N annotations (prof.step() was not called): the whole trace is "
            "one inference, so per-inference figures are for the whole trace"
        )

    keep = ~drop
    out = event_rows(ev, keep, inference)
    k = ev[keep]

    outside = int((out["inference"] < 0).sum())
    if outside:
        notes.append(f"{outside} of {len(out)} events lie outside every ProfilerStep (inference -1)")
    unjoined = int((np.isin(k["kind"], [Kind.KERNEL, Kind.MEMCPY, Kind.MEMSET]) & (k["op"] < 0)).sum())
    if unjoined:
        notes.append(f"{unjoined} device events could not be joined to the CPU op that launched them")
    window = (0, 0, len(infs) - 1, int(infs["start_ns"].min()), int(infs["end_ns"].max()), len(out))
    steps["step_annotations_dropped"] = int(drop.sum())
    return out, infs, window, steps, notes


def _step_number(name: str) -> int:
    tail = name[len(_STEP_PREFIX):]
    return int(tail) if tail.isdigit() else -1


def _seconds(ns: int) -> str:
    s = ns / 1e9
    if s >= 86400:
        return f"{s / 86400:.1f} days"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s:.3f} s" if s < 60 else f"{s / 60:.1f} min"


def _meta(kt, log, kineto_path, power_csv, device, gpu_index, model, steps, notes) -> dict:
    s = kt.summary()
    props = kt.device_properties
    device_name = "unknown"
    if gpu_index is not None:
        named = [p for p in props if isinstance(p, dict) and p.get("id", None) == gpu_index]
        if named and named[0].get("name"):
            device_name = str(named[0]["name"])
    unknown = [
        "task", "model configuration", "input shapes", "dtype", "module structure (no modules table)",
        "phases", "idle power", "the power logger's read brackets and sensor behaviour",
        "clock pairs (NTP steps during the run cannot be detected)",
    ]
    if model is None:
        unknown.insert(0, "model")
    return {
        "imported": True,
        "imported_ns": time.time_ns(),
        "model": model or "unknown",
        "task": "unknown",
        "device": f"cuda:{gpu_index}" if gpu_index is not None else device,
        "power_device": device,
        "device_name": device_name,
        "source_files": {"kineto": kineto_path.name, "power_csv": power_csv.name},
        "kineto": {
            "schema_version": s["schema_version"],
            "trace_name": str(kt.metadata.get("traceName", "")),
            "base_time_ns": s["base_time_ns"],
            "events": s["events"],
            "kinds": s["kinds"],
            "start_ns": s["start_ns"],
            "end_ns": s["end_ns"],
            "devices": s["devices"],
            "device_names": [str(p.get("name", "")) for p in props if isinstance(p, dict)],
            "join": s["join"],
            "skipped": s["skipped"],
        },
        **steps,
        "sensor": {
            "source": log.source,
            "settings": log.settings,
            "channels": [c.name for c in log.channels],
        },
        "units": {"time": "ns, CLOCK_REALTIME", "energy_counter": "per channel (mJ/uJ)", "power": "mW"},
        "versions": {"phprof": __version__},
        "unknown": unknown,
        "notes": list(notes),
    }


def _summary(log: PowerLog, device: str, model, inferences, notes) -> dict:
    """The end-of-run summary phprof trace writes, from what an import knows."""
    span = (int(inferences["start_ns"].min()), int(inferences["end_ns"].max()))
    own = float((inferences["end_ns"] - inferences["start_ns"]).sum()) / 1e9
    e = log.energy_between(device, *span)
    n = len(inferences)
    summary = {
        "status": "complete",
        "model": model or "unknown",
        "task": "unknown",
        "inferences": n,
        "inference_s": own,
        "span_s": (span[1] - span[0]) / 1e9,
        "seconds_per_inference": own / n,
        "energy_j": e.joules,
        "energy_method": e.method,
        "energy_kind": e.kind,
        "energy_uncertainty_j": e.uncertainty_j,
        "joules_per_inference": None if e.joules is None else e.joules / n,
        "notes": list(notes) + list(e.notes) + ["imported trace: the device's whole draw, idle power included"],
    }
    return summary
