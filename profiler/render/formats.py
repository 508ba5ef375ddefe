"""Files other tools open: folded stacks, speedscope JSON, Chrome-trace JSON (Perfetto).

* :func:`to_folded`: one line per stack, ``all;transformer;h.0;attn 123456``,
  the count being the frame's own energy in integer microjoules (flamegraph.pl,
  inferno and speedscope reject or truncate fractions). :func:`parse_folded`
  reads it back.
* :func:`to_speedscope`: speedscope's file format
  (https://www.speedscope.app/file-format-schema.json), one ``sampled`` profile
  whose weights are the same integer microjoules; speedscope has no joule
  unit, so the unit is ``none`` and the profile's name says microjoules.
* :func:`to_perfetto`: a trace file's events as Chrome-trace JSON
  (chrome://tracing, ui.perfetto.dev): kernels, memcpys and memsets per device
  and stream, CPU ops and annotations per thread, the inferences and phases as
  annotations, and each device's power as a counter track. Times follow
  Kineto's convention (``baseTimeNanoseconds`` plus ``ts``/``dur`` in
  microseconds with three decimals), so :func:`phprof.tracing.kineto.load_kineto`
  reads every nanosecond back.

Each is a renderer of a :class:`~phprof.render.views.Flamegraph` (see
``phprof.render.base``). The frame tree (:mod:`phprof.render.frames`) is taken
as plain dicts; only ``name``, ``self_j`` (``self_s`` in a tree of times only)
and ``children`` of each frame, and ``title``, ``measure`` and ``total_j`` of the
tree, are read here. A tree of times only (a trace without energy) counts
integer microseconds instead of microjoules, and says so where the format can.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import __version__
from ..sources import sensor_updates
from ..store import CATEGORY, INFERENCE_PREFIX, ON_DEVICE, PHASE_PREFIX, Kind
from .base import Renderer, register
from .frames import frame_tree

__all__ = ["SPEEDSCOPE_SCHEMA", "parse_folded", "to_folded", "to_perfetto", "to_speedscope"]

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"

# ---------------------------------------------------------------- stacks


def _frame_name(name) -> str:
    """A frame name safe in a folded line: ';' separates frames, a newline ends
    the line; a name left empty would make an empty frame."""
    text = str(name).replace(";", ":").replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return text if text.strip() else "?"


def _micro(value) -> int:
    """Integer millionths of a frame's own energy (or time); 0 for None, NaN or below 0.5."""
    if value is None:
        return 0
    j = float(value)
    if j != j or j <= 0:  # NaN, zero, negative
        return 0
    return round(j * 1e6)


def _stacks(tree: dict) -> dict[tuple[str, ...], int]:
    """Every stack (frame names from the root) whose frames' own energy is > 0,
    in depth-first order, with its integer microjoules (microseconds in a tree of
    times only); equal stacks (two sibling frames of one name) are added together."""
    own = "self_s" if tree.get("measure") == "time" else "self_j"
    out: dict[tuple[str, ...], int] = {}
    todo = [((_frame_name(tree["root"]["name"]),), tree["root"])]
    while todo:
        names, frame = todo.pop()
        uj = _micro(frame.get(own))
        if uj > 0:
            out[names] = out.get(names, 0) + uj
        children = frame.get("children") or ()
        todo.extend(((*names, _frame_name(c["name"])), c) for c in reversed(children))
    return out


def to_folded(tree: dict) -> str:
    """Folded stacks: ``all;a;b;name <µJ>`` per frame with own energy, one per line.

    The counts are the frames' own energy (``self_j``) in integer microjoules,
    rounded; frames that round to 0 are left out, so the counts add up to the
    tree's total within half a microjoule per frame. ``;`` in a name becomes
    ``:``, a newline a space.
    """
    return "".join(f"{';'.join(names)} {uj}\n" for names, uj in _stacks(tree).items())


def parse_folded(text: str) -> dict[str, int]:
    """Folded stacks -> {stack: count}; counts of a stack seen twice are added.

    Blank lines are skipped; a line without a trailing integer count is a
    ValueError naming its line number.
    """
    out: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        try:
            value = int(count)
        except ValueError:
            raise ValueError(f"line {number} of the folded stacks has no integer count: {line[:80]!r}") from None
        if not stack:
            raise ValueError(f"line {number} of the folded stacks has no stack: {line[:80]!r}")
        out[stack] = out.get(stack, 0) + value
    return out


def to_speedscope(tree: dict) -> dict:
    """The tree as a speedscope file (a JSON-ready dict): one ``sampled`` profile,
    a sample per stack of :func:`to_folded`, weighted by the same microjoules.

    Frames are shared by name (speedscope's "sandwich" view then adds up, say,
    every ``attn`` or every launch of a kernel).
    """
    index: dict[str, int] = {}
    samples, weights = [], []
    for names, uj in _stacks(tree).items():
        samples.append([index.setdefault(n, len(index)) for n in names])
        weights.append(uj)
    title = str(tree.get("title") or "phprof")
    what = "time (µs)" if tree.get("measure") == "time" else "energy (µJ)"
    return {
        "$schema": SPEEDSCOPE_SCHEMA,
        "shared": {"frames": [{"name": n} for n in index]},
        "profiles": [
            {
                "type": "sampled",
                "name": f"{what}, {title}",
                "unit": "none",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }
        ],
        "name": title,
        "activeProfileIndex": 0,
        "exporter": f"phprof {__version__}",
    }


# ---------------------------------------------------------------- timeline

# Process ids. Devices are their index, as in Kineto's files; the CPU side and
# the power tracks get numbers no device has (Perfetto keeps pids as uint32).
CPU_PID = 1_000_000
POWER_PID = 2_000_000  # + the power device's position in the log
# Track order (process_sort_index): power above everything, then the CPU, then the devices.
_SORT_POWER, _SORT_CPU, _SORT_DEVICE = 0, 100, 200

#: a power channel with at most this many readings gets a counter value per
#: reading; a longer one, one per sensor update (plus its first and last reading)
FEW_READINGS = 256


class _Times:
    """ns -> Kineto's relative microseconds: exact to the ns as long as the
    span stays under 2**43 us (~100 days), where a double still holds three
    decimals and its shortest repr (what json writes) gives them back."""

    def __init__(self, base_ns: int) -> None:
        self.base_ns = int(base_ns)

    def us(self, t_ns: np.ndarray) -> list[float]:
        return ((np.asarray(t_ns, np.int64) - self.base_ns) / 1000.0).tolist()

    def dur(self, d_ns: np.ndarray) -> list[float]:
        return (np.maximum(np.asarray(d_ns, np.int64), 0) / 1000.0).tolist()


def _power_series(log, device: str | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(device, t_ns, watts) per device with a power gauge: its instant power
    channel when it has one, else its first power channel."""
    if log is None or not log.channels:
        if device is not None:
            raise ValueError(f"no power device {device!r}: the trace has no power readings")
        return []
    devices = log.devices
    if device is not None and device not in devices:
        raise ValueError(f"no power device {device!r} in the trace (devices: {', '.join(devices)})")
    out = []
    for d in devices if device is None else [device]:
        gauges = [c for c in log.channels if c.device == d and c.quantity == "power"]
        if not gauges:
            if device is not None:
                raise ValueError(f"power device {device!r} has no power gauge (only energy counters)")
            continue
        instant = [c for c in gauges if c.name.endswith(".power_instant")]
        c = (instant or gauges)[0]
        r = log.of(c.name)
        r = r[r["status"] == 0]
        if not len(r):
            continue
        mid = (r["t_before_ns"] + r["t_after_ns"]) // 2
        if len(r) <= FEW_READINGS:
            t, v = mid, r["value"]
        else:
            ut, uv = sensor_updates(r)
            t = np.concatenate([mid[:1], ut, mid[-1:]])
            v = np.concatenate([r["value"][:1], uv, r["value"][-1:]])
        order = np.argsort(t, kind="stable")
        out.append((d, t[order], v[order] * c.watts_per_unit))
    return out


def _main_threads(events: np.ndarray) -> dict[int, int]:
    """{inference: the CPU thread most of its CPU events ran on}."""
    cpu = events[(events["device"] < 0) & (events["inference"] >= 0)]
    if not len(cpu):
        return {}
    pairs, counts = np.unique(np.stack([cpu["inference"].astype(np.int64), cpu["stream"].astype(np.int64)]),
                              axis=1, return_counts=True)
    order = np.lexsort((-counts, pairs[0]))  # per inference, the most common thread first
    pairs = pairs[:, order]
    first = np.ones(pairs.shape[1], bool)
    first[1:] = pairs[0, 1:] != pairs[0, :-1]
    return dict(zip(pairs[0, first].tolist(), pairs[1, first].tolist()))


def to_perfetto(trace, tree: dict | None = None, device: str | None = None) -> dict:
    """A trace file's timeline as Chrome-trace JSON (a JSON-ready dict) for
    ui.perfetto.dev and chrome://tracing.

    ``trace``: a :class:`phprof.store.Trace` (``phprof.load(path)``).
    Complete events (``"ph": "X"``) with Kineto's categories: kernels, memcpys,
    memsets and GPU annotations on ``pid`` = device, ``tid`` = stream; CPU ops,
    ``record_function`` annotations (module scopes) and runtime calls on
    ``pid`` = :data:`CPU_PID`, ``tid`` = thread; each inference and phase as an
    annotation ``phprof.inference.<i>`` / ``phprof.phase.<name>`` on the
    thread that ran it. A device event carries its launching op's row as
    ``args["External id"]``, and each CPU event its own row, so the link
    survives a round trip through :func:`~phprof.tracing.kineto.load_kineto`.
    Power: a counter track ``"power (W)"`` (``"ph": "C"``, ``args.W``) per
    power device (``device``, e.g. ``"gpu0"``: that one only; a name the log
    lacks is a ValueError), on a process of its own sorted above the others;
    one value per sensor update, or per reading for a short log. ``tree``,
    when given, adds its title and total to the file's ``"phprof"`` metadata.
    """
    ev = trace.events
    strings = trace.strings
    power = _power_series(trace.power, device)
    inferences = trace.inferences
    phases = trace.phases

    firsts = [int(ev["start_ns"].min())] if len(ev) else []
    firsts += [int(inferences["start_ns"].min())] if len(inferences) else []
    firsts += [int(t[0]) for _, t, _ in power if len(t)]
    times = _Times(min(firsts) if firsts else 0)

    out: list[dict] = []
    names = np.asarray(strings, dtype=object)

    # --- metadata: process and thread names, track order
    dev_ids = sorted({int(d) for d in np.unique(ev["device"]) if d >= 0}) if len(ev) else []
    cpu_threads = sorted({int(s) for s in np.unique(ev["stream"][ev["device"] < 0])}) if len(ev) else []

    def meta(name: str, pid: int, args: dict, tid: int = 0) -> None:
        out.append({"name": name, "ph": "M", "pid": pid, "tid": tid, "args": args})

    meta("process_name", CPU_PID, {"name": "CPU"})
    meta("process_sort_index", CPU_PID, {"sort_index": _SORT_CPU})
    for t in cpu_threads:
        meta("thread_name", CPU_PID, {"name": f"thread {t}"}, t)
    for d in dev_ids:
        meta("process_name", d, {"name": f"GPU {d}"})
        meta("process_sort_index", d, {"sort_index": _SORT_DEVICE + d})
        for s in sorted({int(s) for s in np.unique(ev["stream"][ev["device"] == d])}):
            meta("thread_name", d, {"name": f"stream {s}"}, s)
    for k, (dname, _, _) in enumerate(power):
        meta("process_name", POWER_PID + k, {"name": f"power {dname}"})
        meta("process_sort_index", POWER_PID + k, {"sort_index": _SORT_POWER + k})

    # --- events, in time order (enclosing before enclosed)
    order = np.lexsort((-(ev["end_ns"] - ev["start_ns"]), ev["start_ns"]))
    ts = times.us(ev["start_ns"][order])
    dur = times.dur(ev["end_ns"][order] - ev["start_ns"][order])
    kind = ev["kind"][order].tolist()
    dev = ev["device"][order].tolist()
    stream = ev["stream"][order].tolist()
    op = ev["op"][order].tolist()
    name = names[ev["name"][order]].tolist() if len(ev) else []
    on_device = {int(k) for k in ON_DEVICE}
    cats = {int(k): c for k, c in CATEGORY.items()}
    for row, k, d, s, o, nm, t0, du in zip(order.tolist(), kind, dev, stream, op, name, ts, dur):
        e = {"ph": "X", "cat": cats.get(k, "cpu_op"), "name": nm, "ts": t0, "dur": du}
        if k in on_device and d >= 0:
            e["pid"], e["tid"] = d, s
            args = {"device": d, "stream": s}
            if o >= 0:
                args["External id"] = o
        else:
            e["pid"], e["tid"] = CPU_PID, s
            args = {"External id": row} if k != Kind.RUNTIME else {}
        if args:
            e["args"] = args
        out.append(e)

    # --- inferences and phases: annotations on the thread that ran them
    thread_of = _main_threads(ev)
    for i, t0, t1 in zip(inferences["index"].tolist(), inferences["start_ns"].tolist(),
                         inferences["end_ns"].tolist()):
        tid = thread_of.get(i, 0)
        out.append({"ph": "X", "cat": "user_annotation", "name": f"{INFERENCE_PREFIX}{i}", "pid": CPU_PID,
                    "tid": tid, "ts": times.us([t0])[0], "dur": times.dur([t1 - t0])[0],
                    "args": {"inference": i}})
    for i, nm, t0, t1 in zip(phases["inference"].tolist(), phases["name"].tolist(), phases["start_ns"].tolist(),
                             phases["end_ns"].tolist()):
        tid = thread_of.get(i, 0)
        out.append({"ph": "X", "cat": "user_annotation", "name": f"{PHASE_PREFIX}{strings[nm]}", "pid": CPU_PID,
                    "tid": tid, "ts": times.us([t0])[0], "dur": times.dur([t1 - t0])[0],
                    "args": {"inference": i}})

    # --- power counters
    for k, (dname, t, watts) in enumerate(power):
        for t_us, w in zip(times.us(t), np.round(watts, 3).tolist()):
            out.append({"ph": "C", "cat": "power", "name": "power (W)", "pid": POWER_PID + k, "tid": 0,
                        "ts": t_us, "args": {"W": w}})

    info = {
        "exporter": f"phprof {__version__}",
        "source": str(getattr(trace, "path", "")),
        "model": (getattr(trace, "meta", None) or {}).get("model"),
        "power_devices": [d for d, _, _ in power],
        "cpu_pid": CPU_PID,
        "power_pid": POWER_PID,
    }
    if tree is not None:
        info.update(title=tree.get("title"), total_j=tree.get("total_j"), inferences=tree.get("inferences"))
    return {
        "schemaVersion": 1,
        "traceName": Path(str(getattr(trace, "path", "") or "phprof")).name,
        "displayTimeUnit": "ns",
        "baseTimeNanoseconds": times.base_ns,
        "phprof": info,
        "traceEvents": out,
    }


# ---------------------------------------------------------------- renderers


@register
class FoldedRenderer(Renderer):
    """Folded stacks (flamegraph.pl, inferno, speedscope)."""

    view, name, suffixes = "flamegraph", "folded", (".folded",)

    def render(self, view) -> str:
        return to_folded(frame_tree(view.results, view.title))


@register
class SpeedscopeRenderer(Renderer):
    """speedscope's own file format."""

    view, name, suffixes = "flamegraph", "speedscope", (".speedscope.json",)

    def render(self, view) -> str:
        return json.dumps(to_speedscope(frame_tree(view.results, view.title)), ensure_ascii=False)


@register
class PerfettoRenderer(Renderer):
    """The trace's timeline with the power as a counter track (ui.perfetto.dev, chrome://tracing)."""

    view, name, suffixes = "flamegraph", "perfetto", (".perfetto.json", ".trace.json")

    def render(self, view) -> str:
        if view.trace is None:
            raise ValueError("the perfetto format needs the trace (phprof.load(path))")
        tree = frame_tree(view.results, view.title)
        return json.dumps(to_perfetto(view.trace, tree), separators=(",", ":"), ensure_ascii=False)
