"""Energy per layer, kernel, phase and inference of a trace file.

The steps, one way: check the clocks and what the file holds; take the
sensor's model (a calibration file, else the nominal one for the GPU family,
with its lag and window refitted to this run's updates); build the timeline
(device kernels on a GPU, module scopes on a CPU); estimate each label's power
(``estimate``); then every other figure is a sum of label power x label time
over some intervals (a phase, an inference, a kernel), so each comes with an
interval from the same bootstrap draws, and all of them add up to the
measured total.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..sources import utc_text
from ..tracing.kineto import Kind
from .aliasing import phase_coverage
from .estimate import (IDLE, TIME_PROPORTIONAL, Estimate, LabelEnergy, estimate_label_power, fit_lag,
                       instant_windows)
from .sensor import NOMINAL_INSTANT, SensorModel
from .components import KIND_OF, Component, Taxonomy
from .timeline import trace_timeline

CLOCK_STEP_TOLERANCE_NS = 1_000_000  # realtime vs monotonic offset change that counts as a clock step


class AttributionError(Exception):
    """A trace whose energy cannot be attributed at all (the message says why)."""


class NoPowerError(AttributionError):
    """A trace whose power readings cannot be used (none, or on another clock):
    only time can be reported."""


def layer_times(trace) -> tuple[str, list[tuple[str, float]]]:
    """Each label's own time over the trace's inferences, longest first, and what
    the timeline is made of: what can be said of a trace without power readings."""
    timeline, what = trace_timeline(trace)
    seconds = np.bincount(timeline.labels, (timeline.ends_ns - timeline.starts_ns) / 1e9, len(timeline.names))
    order = np.argsort(-seconds)
    return what, [(timeline.names[j], float(seconds[j])) for j in order if seconds[j] > 0]


@dataclass(frozen=True)
class Amount:
    """An energy with its interval (NaN bounds: none can be given) and how it was obtained."""

    joules: float
    low_j: float
    high_j: float
    method: str


@dataclass
class Attribution:
    """Where a trace's energy went, with how each figure was obtained."""

    path: str
    device: str
    status: str  # the trace file's status
    inferences: int
    span_s: float  # from the first inference's start to the last one's end
    inference_s: float  # the inferences' own time (the span less the pauses between them)
    total: Amount  # measured energy over the span (counter, else integrated power)
    total_measured: bool
    total_uncertainty_j: float | None
    idle_w: float | None  # the device's power before the run (static), measured
    estimate: Estimate
    sensor: SensorModel
    timeline: str  # "device kernels" or "module scopes (CPU)"
    phases: dict[str, Amount] = field(default_factory=dict)  # prefill, decode, encode, denoise...
    phase_counts: dict[str, int] = field(default_factory=dict)  # occurrences over the run
    kernels: list[tuple[str, int, float, Amount]] = field(default_factory=list)  # (name, calls, seconds, energy)
    components: dict[str, tuple[float, Amount]] = field(default_factory=dict)  # kind -> (seconds, energy)
    stack_components: dict[str, tuple[float, Amount]] = field(default_factory=dict)  # "stack/kind" -> the same
    parents: list[str] = field(default_factory=list)  # per layer: the scope it ran in ("": none)
    classes: list[Component] = field(default_factory=list)  # per layer: its component, part and stack
    module_types: list[str] = field(default_factory=list)  # per layer: its class ("": not a module)
    parameters: list[int] = field(default_factory=list)  # per layer: the module's own parameters
    calls: list[int] = field(default_factory=list)  # per layer: forward calls while traced (-1: not a module)
    # the kernels (GPU) or outermost ops (CPU) inside each layer's own time, at the layer's power:
    # (layer, name, "kernel" | "op", calls, seconds, joules)
    leaves: list[tuple[str, str, str, int, float, float]] = field(default_factory=list)
    # per layer: the interval of its inclusive energy (itself and every scope inside it); NaN where
    # that subtree holds only part of a merged group
    inclusive: list[tuple[float, float]] = field(default_factory=list)
    per_inference: list[Amount] = field(default_factory=list)
    inferences_energy: Amount | None = None  # the inferences' own energy: the total less the pauses between them
    notes: list[str] = field(default_factory=list)

    @property
    def static_j(self) -> float | None:
        """What the device would have drawn idle during the inferences: the idle
        power measured before the run times the inferences' own time."""
        return None if self.idle_w is None else self.idle_w * self.inference_s

    @property
    def layers(self) -> list[LabelEnergy]:
        return self.estimate.labels


def load_sensor_model(path: str | Path) -> SensorModel:
    """A sensor model from a calibration file: JSON with ``period_s``,
    ``window_s``, ``lag_s`` (and optionally ``source``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        return SensorModel(float(data["period_s"]), float(data["window_s"]), float(data.get("lag_s", 0.0)),
                           str(data.get("source", f"calibration file {path}")))
    except FileNotFoundError:
        raise AttributionError(f"no such calibration file: {path}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise AttributionError(f"{path} is not a sensor calibration (JSON with period_s, window_s, lag_s): {e}") \
            from None


def nominal_sensor(device_name: str) -> SensorModel | None:
    """The published model of a GPU family's instant power field, if known."""
    if re.search(r"\b(A100|H100|H200|GH200)\b", device_name or ""):
        return NOMINAL_INSTANT
    return None


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


def attribute(trace, sensor: SensorModel | None = None, device: str | None = None, fit: bool = True,
              **options) -> Attribution:
    """Attributes a trace's measured energy to its layers (see the module's docstring).

    ``sensor``: the instant power field's model (default: the nominal one of
    the GPU family, or of A100/H100 with a note); ``fit``: refit its lag and
    window to this run's updates; ``options`` go to ``estimate_label_power``.
    """
    if len(trace.inferences) == 0:
        raise AttributionError(f"{trace.path} holds no whole inference: nothing to attribute")
    notes: list[str] = []
    if not trace.complete:
        notes.append(f"the trace is {trace.status}: only its {len(trace.inferences)} whole inferences are used")
    inf = np.sort(trace.inferences, order="start_ns")
    span = (int(inf["start_ns"][0]), int(inf["end_ns"][-1]))
    span_s = (span[1] - span[0]) / 1e9
    inference_s = float((inf["end_ns"] - inf["start_ns"]).sum()) / 1e9
    timeline, what = trace_timeline(trace)
    log = trace.power
    if log is None or not log.channels or len(log.readings) == 0:
        raise NoPowerError(f"{trace.path} has no power readings (source "
                           f"{(trace.meta.get('sensor') or {}).get('source', 'none')!r}): energy cannot be attributed")
    device = device or log.devices[0]
    if device not in log.devices:
        raise AttributionError(f"no device {device!r} in {trace.path} (devices: {', '.join(log.devices)})")
    t = log.readings["t_after_ns"]
    if t.max() < span[0] or t.min() > span[1]:
        raise NoPowerError(
            f"the power readings ({utc_text(t.min())} to {utc_text(t.max())}) do not overlap the inferences "
            f"({utc_text(span[0])} to {utc_text(span[1])}): the two were stamped by different clocks")
    if t.min() > span[0] or t.max() < span[1]:
        notes.append("the power readings do not cover the whole run: its ends are clipped")
    for a, b, step in clock_steps(log.clock_pairs):
        notes.append(f"the system clock stepped by {step / 1e6:+.1f} ms between {utc_text(a)} and {utc_text(b)}: "
                     "readings and kernels near it may be misaligned by that much")
    measured = log.energy_between(device, *span)
    notes.extend(measured.notes)
    idle_w = _idle_power(trace, device)
    updates = log.instant_power(device)
    if updates is not None:
        instants, watts = updates
    else:
        instants, watts = np.zeros(0, np.int64), np.zeros(0)
        notes.append(f"no instant power readings of {device} (channels: "
                     f"{', '.join(c.name for c in log.channels)}): the measured "
                     "total is split by time")
    if sensor is None:
        sensor_name = ((trace.meta.get("sensor") or {}).get("devices") or {}).get(device, "")
        sensor = nominal_sensor(sensor_name)
        if sensor is None:
            sensor = NOMINAL_INSTANT
            notes.append(f"no published sensor model for {sensor_name or 'this device'!r}: "
                         "the A100/H100 one is assumed, its lag and window refitted to this run")
    if fit and len(instants):
        fitted, res, base = fit_lag(timeline, instants, watts, sensor, span)
        if np.isfinite(res) and res < base:
            notes.append(f"sensor lag {fitted.lag_s * 1e3:+.0f} ms and window {fitted.window_s * 1e3:.0f} ms "
                         f"fitted to this run's updates (RMS residual {res:.2f} W, {base:.2f} W with "
                         f"{sensor.lag_s * 1e3:+.0f} ms / {sensor.window_s * 1e3:.0f} ms)")
            sensor = fitted
    windows = instant_windows(instants, watts, sensor, span)
    est = estimate_label_power(timeline, windows, span, measured_j=measured.joules if measured.joules else None,
                               **options)
    coverage = phase_coverage((windows.a_ns + windows.b_ns) // 2, inf["start_ns"], inf["end_ns"])
    notes.append(coverage.describe())
    if coverage.aliased and est.method != TIME_PROPORTIONAL:
        notes.append("per-layer figures of an aliased run are unreliable even where intervals are narrow")
    total_method = measured.method if measured.joules is not None else "sum of the estimate (no total measured)"
    bound = np.nan if measured.uncertainty_j is None else measured.uncertainty_j
    total = Amount(est.total_j, est.total_j - bound, est.total_j + bound, total_method)
    out = Attribution(str(trace.path), device, trace.status, len(inf), span_s, inference_s, total,
                      bool(measured.measured), measured.uncertainty_j, idle_w, est, sensor, what, notes=notes)
    out.notes.extend(est.notes)
    _phases(out, trace, timeline, span)
    g_sec = _group_seconds(est, timeline, inf["start_ns"], inf["end_ns"])
    out.per_inference = _amounts(est, g_sec)
    out.inferences_energy = _amounts(est, g_sec.sum(axis=0))[0]
    types = module_types(trace)
    modules = {trace.strings[int(m["path"])]: m for m in trace.modules}
    taxonomy = Taxonomy.load()
    out.classes = [taxonomy.classify(name, types) for name in timeline.names]
    out.components = _components(est, out.classes)
    out.stack_components = _components(est, out.classes, by_stack=True)
    out.module_types = [types.get(name, "") for name in timeline.names]
    out.parameters = [int(modules[name]["parameters"]) if name in modules else 0 for name in timeline.names]
    out.calls = [int(modules[name]["calls"]) if name in modules else -1 for name in timeline.names]
    out.parents = [timeline.names[p] if p >= 0 else "" for p in timeline.parents]
    out.leaves = _leaves(trace, timeline, est, what)
    out.kernels = _kernels(out.leaves)
    out.inclusive = _inclusive_intervals(est, timeline.parents)
    return out


def _idle_power(trace, device: str) -> float | None:
    """The device's mean power over the idle period sampled before the run."""
    if trace.idle is None or device not in trace.idle.devices or len(trace.idle.readings) < 2:
        return None
    e = trace.idle.energy(device)
    return e.joules / e.seconds if e.joules is not None and e.seconds > 0 else None


def _group_seconds(est: Estimate, timeline, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Seconds of each resolved group, and of idle (last column), in each interval [a_k, b_k]."""
    sec = timeline.grouped(timeline.seconds_in(a, b), est.group_of, len(est.groups))
    idle = np.maximum((np.asarray(b) - np.asarray(a)) / 1e9 - sec.sum(axis=1), 0.0)
    return np.column_stack([sec, idle])


def _interval(est: Estimate, g_sec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bootstrap interval of the energy of ``g_sec`` (seconds per group and idle;
    one row per amount, or a single vector); NaN where the estimate has no draws."""
    g_sec = np.atleast_2d(g_sec)
    if not np.isfinite(est.boot_w).all():
        return np.full(len(g_sec), np.nan), np.full(len(g_sec), np.nan)
    q = (1 - est.interval) / 2
    low, high = np.quantile(g_sec @ est.boot_w.T, [q, 1 - q], axis=1)
    return low, high


def _group_power(est: Estimate) -> np.ndarray:
    return np.array([g.power_w for g in est.groups] + [est.idle.power_w])


def _amounts(est: Estimate, g_sec: np.ndarray) -> list[Amount]:
    """Energy of each row of ``g_sec`` (seconds per group and idle, see
    :func:`_group_seconds`; a single vector is one row): each group's (scaled) power
    times its time there; intervals from the bootstrap draws."""
    g_sec = np.atleast_2d(g_sec)
    low, high = _interval(est, g_sec)
    return [Amount(float(e), float(lo), float(hi), est.method)
            for e, lo, hi in zip(g_sec @ _group_power(est), low, high)]


def _phases(out: Attribution, trace, timeline, span) -> None:
    """Energy of each kind of phase (decode.1, decode.2... count as decode)."""
    ph = trace.phases
    if len(ph) == 0:
        return
    kinds = np.array([trace.strings[n].split(".")[0] for n in ph["name"]])
    for kind in dict.fromkeys(kinds.tolist()):
        rows = ph[kinds == kind]
        g_sec = _group_seconds(out.estimate, timeline, rows["start_ns"], rows["end_ns"]).sum(axis=0)
        out.phases[kind] = _amounts(out.estimate, g_sec)[0]
        out.phase_counts[kind] = len(rows)


def _kernels(leaves) -> list[tuple[str, int, float, Amount]]:
    """Energy per kernel name: the kernel leaves of every layer, summed by name."""
    by_name: dict[str, list] = {}
    for _, name, kind, calls, seconds, joules in leaves:
        if kind == "kernel":
            row = by_name.setdefault(name, [0, 0.0, 0.0])
            row[0] += calls
            row[1] += seconds
            row[2] += joules
    rows = sorted(by_name.items(), key=lambda kv: -kv[1][2])
    return [(name, c, s, Amount(j, np.nan, np.nan, "its layer's power x its time")) for name, (c, s, j) in rows]


def module_types(trace) -> dict[str, str]:
    """Class name by module path (scope name); the root also under "" ."""
    types = {trace.strings[int(m["path"])]: trace.strings[int(m["type"])] for m in trace.modules}
    if len(trace.modules):
        types[""] = trace.strings[int(trace.modules[0]["type"])]
    return types


def _components(est: Estimate, classes: list[Component], by_stack: bool = False) -> dict[str, tuple[float, Amount]]:
    """Energy per component (``classes[j]`` of layer j), or per "stack/component":
    the sum of its layers; an interval where it is made of whole resolved groups."""
    kinds = np.array([f"{c.stack}/{c.component}" if by_stack else c.component for c in classes])
    out = {}
    for kind in dict.fromkeys(kinds.tolist()):
        mine = kinds == kind
        groups = np.unique(est.group_of[mine])
        whole = all((kinds[est.group_of == g] == kind).all() for g in groups)
        energy = float(sum(x.energy_j for x, m in zip(est.labels, mine) if m))
        seconds = float(sum(x.seconds for x, m in zip(est.labels, mine) if m))
        g_sec = np.zeros(len(est.groups) + 1)
        g_sec[groups] = [est.groups[g].seconds for g in groups]
        low, high = (x[0] for x in _interval(est, g_sec)) if whole else (np.nan, np.nan)
        how = est.method if whole else "sum of its layers (some split by time within a merged group)"
        out[kind] = (seconds, Amount(energy, float(low), float(high), how))
    return dict(sorted(out.items(), key=lambda kv: -kv[1][1].joules))


def _leaves(trace, timeline, est: Estimate, what: str) -> list[tuple[str, str, str, int, float, float]]:
    """What ran inside each layer's own time, at the layer's estimated power: its
    kernels' segments on a GPU timeline; on a CPU, its outermost ops (those not
    inside another op of the same thread), scaled down to the layer's own time
    where they overlap it imperfectly."""
    power = np.array([x.power_w for x in est.labels])
    if what == "device kernels":
        seg = timeline.events >= 0
        lab, ev_i = timeline.labels[seg], timeline.events[seg]
        secs = (timeline.ends_ns[seg] - timeline.starts_ns[seg]) / 1e9
        names, kind = trace.events["name"][ev_i], "kernel"
    else:
        ev = trace.events
        ops = np.flatnonzero((ev["kind"] == Kind.CPU_OP) & (ev["device"] < 0) & (ev["inference"] >= 0))
        ops = ops[np.lexsort((-ev["end_ns"][ops], ev["start_ns"][ops], ev["stream"][ops]))]
        start, end, thread = ev["start_ns"][ops], ev["end_ns"][ops], ev["stream"][ops]
        # outermost: starts at or after every earlier op of its thread has ended
        reach = np.empty_like(end)
        for lo, hi in _runs(thread):
            reach[lo:hi] = np.maximum.accumulate(end[lo:hi])
        new_thread = np.r_[True, thread[1:] != thread[:-1]]
        ops = ops[new_thread | (start >= np.r_[0, reach[:-1]])]
        index = {name: j for j, name in enumerate(timeline.names)}
        stacks, inv = np.unique(ev["stack"][ops], return_inverse=True)
        scope = np.array([index.get(_innermost(trace, int(s)), -1) for s in stacks], np.int64)[inv.reshape(-1)]
        keep = scope >= 0
        ops, lab = ops[keep], scope[keep]
        secs = (ev["end_ns"][ops] - ev["start_ns"][ops]) / 1e9
        own = np.array([x.seconds for x in est.labels])
        used = np.bincount(lab, secs, len(own))
        secs = secs * np.minimum(1.0, own / np.maximum(used, 1e-12))[lab]
        names, kind = ev["name"][ops], "op"
    key = lab.astype(np.int64) * (1 << 32) + names.astype(np.int64)
    uniq, inv = np.unique(key, return_inverse=True)
    inv = inv.reshape(-1)
    s = np.bincount(inv, secs, len(uniq))
    calls = np.bincount(inv, minlength=len(uniq))
    out = []
    for k, u in enumerate(uniq):
        j, name = int(u >> 32), int(u & 0xFFFFFFFF)
        out.append((timeline.names[j], trace.strings[name], kind, int(calls[k]), float(s[k]), float(power[j] * s[k])))
    return out


def _inclusive_intervals(est: Estimate, parents: np.ndarray) -> list[tuple[float, float]]:
    """Each layer's inclusive-energy interval, from the same bootstrap draws."""
    n = len(est.labels)
    inside = np.eye(n, dtype=bool)  # inside[j, k]: k is j or under it
    for k in range(n):
        p = parents[k]
        while p >= 0:
            inside[p, k] = True
            p = parents[p]
    g_sec = np.zeros((n, len(est.groups) + 1))
    whole = np.zeros(n, bool)
    for j in range(n):
        groups = np.unique(est.group_of[inside[j]])
        whole[j] = all(inside[j, est.group_of == g].all() for g in groups)
        g_sec[j, groups] = [est.groups[g].seconds for g in groups]
    low, high = _interval(est, g_sec)
    return [(float(lo), float(hi)) if w else (np.nan, np.nan) for lo, hi, w in zip(low, high, whole)]


def _runs(keys: np.ndarray):
    """(start, end) of each run of equal consecutive keys."""
    edges = np.r_[0, np.flatnonzero(keys[1:] != keys[:-1]) + 1, len(keys)]
    return zip(edges[:-1], edges[1:])


def _innermost(trace, stack: int) -> str | None:
    return trace.strings[int(trace.stacks[stack]["scope"])] if stack else None


def power_excerpt(trace, summary: dict, tables: dict, seconds: float = 1.5) -> dict:
    """A short stretch of the run, for a plot: the sensor's updates and the
    windows they averaged (with the sensor model the attribution used), the
    inferences, what ran (component kind per segment), and the power the
    estimate implies there (each label's power while it runs, idle between),
    binned to 1 ms. Times in seconds from the excerpt's start."""
    inf = np.sort(trace.inferences, order="start_ns")
    t0 = int(inf["start_ns"][len(inf) // 2])
    t1 = t0 + int(seconds * 1e9)
    device = summary["device"]
    sensor = summary["sensor"]
    out: dict = {"seconds": seconds, "device": device, "updates": [], "windows": [], "inferences": [],
                 "activity": [], "model_w": []}
    updates = None if trace.power is None else trace.power.instant_power(device)
    if updates is not None:
        u, watts = updates
        keep = (u >= t0) & (u <= t1)
        out["updates"] = [((a - t0) / 1e9, float(w)) for a, w in zip(u[keep], watts[keep])]
        b = u[keep] - round(sensor["lag_s"] * 1e9)
        out["windows"] = [((x - round(sensor["window_s"] * 1e9) - t0) / 1e9, (x - t0) / 1e9) for x in b]
    inside = (inf["end_ns"] > t0) & (inf["start_ns"] < t1)
    out["inferences"] = [((max(s, t0) - t0) / 1e9, (min(e, t1) - t0) / 1e9)
                         for s, e in zip(inf["start_ns"][inside], inf["end_ns"][inside])]
    timeline, _ = trace_timeline(trace)
    layers = tables["layers"]
    power = dict(zip(layers["label"], layers["power_w"]))
    kind = dict(zip(layers["label"], (KIND_OF[str(c)] for c in layers["component"])))
    idle_w = float(power.get(IDLE, 0.0))
    seg = (timeline.ends_ns > t0) & (timeline.starts_ns < t1)
    starts, ends = np.maximum(timeline.starts_ns[seg], t0), np.minimum(timeline.ends_ns[seg], t1)
    labels = timeline.labels[seg]
    kinds = [kind.get(name, "other") for name in timeline.names]
    out["activity"] = [((s - t0) / 1e9, (e - t0) / 1e9, kinds[j]) for s, e, j in zip(starts, ends, labels)
                       if e - s > 20_000 or len(starts) < 5000]
    # the implied power per 1 ms bin: each label's time in the bin at its power, idle power for the rest
    n_bins = int(seconds * 1000)
    bins = t0 + np.arange(n_bins + 1, dtype=np.int64) * (t1 - t0) // n_bins  # integer ns: exact edges
    sec = timeline.seconds_in(bins[:-1], bins[1:])
    label_w = np.array([float(power.get(name, idle_w)) for name in timeline.names])
    width = np.diff(bins) / 1e9
    modelled = (sec @ label_w + (width - sec.sum(axis=1)).clip(0) * idle_w) / width
    out["model_w"] = [((b - t0) / 1e9, float(w)) for b, w in zip(bins[:-1], modelled)]
    return out
