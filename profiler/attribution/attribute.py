"""Energy per layer, kernel, phase and inference of a trace file.

The steps, one way: check the clocks and what the file holds; take the
sensor's model (a calibration file, else the nominal one for the GPU family,
with its lag and window refitted to this run's updates); build the timeline
(device kernels on a GPU, module scopes on a CPU); estimate each label's power
(``estimate``); then every other figure is a sum of label power x label time
over some intervals (a phase, an inference, a kernel), so each comes with an
interval from the same bootstrap draws, and all of them add up to the
measured total. The result is a :class:`phprof.store.results.Results`.

A trace whose power readings cannot be used (none, or stamped by another
clock) still gets its layers' times, components and leaves: its results say
why there is no energy (``Results.why_no_energy``).
"""
from __future__ import annotations

import numpy as np

from ..clock import clock_steps, utc_text
from ..energy import Energy, Method
from ..errors import PhprofError
from ..sources.sensors import (NOMINAL_AVERAGE, NOMINAL_INSTANT, SensorModel, nominal_sensor, phase_coverage,
                               published_power_limit_w)
from ..store import DEVICE_KINDS, Kind, phase_kind
from ..store.results import ComponentEnergy, KernelEnergy, Layer, Leaf, PhaseEnergy, Results, Role
from .components import Component, Taxonomy
from .estimate import Estimate, estimate_label_power, instant_windows
from .passes import passes
from .runfit import fit_run_sensor, windows_of
from .timeline import trace_timeline

_ROLE_OF_LABEL = {r.label: r for r in Role if r is not Role.MODULE}
SCALE_WARNING = 0.15  # a counter-to-readings scale further from 1 than this is a warning
# How well a timeline's edges line up with the power: a module's work starts some tens of
# microseconds after its scope is stamped (Python hooks, op dispatch, a busy CPU's scheduling), and
# a GPU's power follows its kernels with a delay. Intervals hold, for each kind of edge (one label
# after another), the power running up to this much ahead of or behind the timeline.
EDGE_S = 50e-6


class AttributionError(PhprofError):
    """A trace whose energy cannot be attributed at all (the message says why)."""


def attribute(trace, sensor: SensorModel | None = None, device: str | None = None, fit: bool = True,
              **options) -> Results:
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
    _check_kernels(trace, notes)
    warmed = (trace.meta.get("options") or {}).get("window_warmup") or 0
    if warmed:
        notes.append(f"{warmed} unrecorded warm-up inferences ran before each profiler window (--window-warmup): "
                     "their energy lies between the recorded inferences, read as idle, so the power under the kernels "
                     "is estimated high and every layer's energy low")
    inf = np.sort(trace.inferences, order="start_ns")
    span = (int(inf["start_ns"][0]), int(inf["end_ns"].max()))  # on a GPU, spans may overlap (several streams)
    timeline, what = trace_timeline(trace)
    log = trace.power
    why = _unusable_power(trace, span)
    if why is not None:
        return _with_passes(_results(trace, timeline, what, span, why_no_energy=why), trace, "")
    device = device or log.devices[0]
    if device not in log.devices:
        raise AttributionError(f"no device {device!r} in {trace.path} (devices: {', '.join(log.devices)})")
    t = log.readings["t_after_ns"]
    if t.min() > span[0] or t.max() < span[1]:
        notes.append("the power readings do not cover the whole run: its ends are clipped")
    for a, b, step in clock_steps(log.clock_pairs):
        notes.append(f"the system clock stepped by {step / 1e6:+.1f} ms between {utc_text(a)} and {utc_text(b)}: "
                     "readings and kernels near it may be misaligned by that much")
    measured = log.energy_between(device, *span)
    notes.extend(measured.notes)
    meta_sensor = trace.meta.get("sensor") or {}
    gpu_name = (meta_sensor.get("devices") or {}).get(device) or trace.meta.get("device_name") or ""
    updates = log.windowed_power(device)
    prior, fitted = None, None
    if updates is None:
        field, instants, watts = "", np.zeros(0, np.int64), np.zeros(0)
        notes.append(f"no power readings of {device} that a sensor model could place (channels: "
                     f"{', '.join(c.name for c in log.channels)}): the measured total is split by time")
    else:
        field, instants, watts = updates
        prior = sensor if sensor is not None else default_sensor(gpu_name, field, notes)
        if fit:
            fitted = fit_run_sensor(timeline, instants, watts, prior, span, calibrated=sensor is not None,
                                    bracket_ns=log.update_bracket_ns(device), brackets=log.update_brackets(device))
            notes.extend(fitted.notes)
            if np.isfinite(fitted.residual_w) and np.isfinite(fitted.prior_residual_w):
                notes.append(f"RMS residual of the power updates: {fitted.residual_w:.2f} W around the sensor "
                             f"fitted to this run, {fitted.prior_residual_w:.2f} W around the one it started "
                             f"from ({prior.source})")
            prior, instants = fitted.model, fitted.update_ns
            if fitted.shift_s:  # the log's counter is on the same shifted clock as its power readings
                shift = round(fitted.shift_s * 1e9)
                measured = log.energy_between(device, span[0] + shift, span[1] + shift)
                notes.extend(n for n in measured.notes if n not in notes)
                notes.append(f"the energy counter is read over the inferences' span shifted the same "
                             f"{fitted.shift_s * 1e3:+.0f} ms")
    windows = instant_windows(instants, watts, prior or NOMINAL_INSTANT, span)
    alternatives = None
    if fitted is not None:
        # the updates whose windows lie inside the span (those of `windows`), each alternative's from the same
        b = np.asarray(instants, np.int64) - round(prior.lag_s * 1e9)
        keep = (b - round(prior.window_s * 1e9) >= span[0]) & (b <= span[1])
        alternatives = [windows_of(instants[keep], watts[keep], m) for m in fitted.alternatives]
    limit = (meta_sensor.get("power_limits_w") or {}).get(device)
    limit_from = "the device's power limit, from NVML"
    if not limit and published_power_limit_w(gpu_name):
        limit, limit_from = published_power_limit_w(gpu_name), f"the published board power of {gpu_name}"
    idle_w = _idle_power(trace, device)
    bounds = (idle_w or 0.0, limit) if limit else (idle_w or 0.0, np.inf)
    options.setdefault("edge_s", EDGE_S)
    measured_j = measured.joules if measured.joules else None
    est = estimate_label_power(timeline, windows, span, measured_j=measured_j, alternatives=alternatives,
                               power_bounds_w=bounds, **options)
    if bounds is not None and measured_j is not None and est.method is Method.WLS:  # where the fit applied them
        notes.append("every label's power bounded to " + (f"{bounds[0]:.0f} W (the idle power measured before the run)"
                                                          if bounds[0] else "0 W") +
                     (f" .. {limit:.0f} W ({limit_from})" if limit else " and above (no power limit known)"))
    if updates is not None:
        coverage = phase_coverage((windows.a_ns + windows.b_ns) // 2, inf["start_ns"], inf["end_ns"])
        notes.append(coverage.describe())
        if coverage.aliased and est.method != Method.TIME_PROPORTIONAL:
            notes.append("per-layer figures of an aliased run are unreliable even where intervals are narrow")
    if measured.joules and len(windows.watts) and abs(est.scale - 1) > SCALE_WARNING:
        notes.append(f"the {field or 'power'} readings and the energy counter disagree by {est.scale - 1:+.0%} over "
                     "the run: a sensor with a gain or offset error (calibrate it against a meter: `phprof calibrate "
                     "--from-log ... --meter`), a sensor model that does not fit (see the residual), or a power log "
                     "that is not of this device")
    if measured.joules is None:
        total = Energy(est.total_j, method=Method.ESTIMATE_SUM)
    else:  # the estimate is scaled to the measured total: the measurement's bound is the total's
        total = Energy(est.total_j, measured.low_j, measured.high_j, measured.method, measured.detail, bound=True)
    sensor = prior if updates is not None else None
    return _with_passes(_results(trace, timeline, what, span, est=est, device=device, total=total,
                                 total_uncertainty_j=measured.uncertainty_j, sensor=sensor, idle_w=idle_w,
                                 notes=notes + est.notes), trace, device)


def _with_passes(out: Results, trace, device: str) -> Results:
    """The measurement pass and the profiled one beside it (``phprof.attribution.passes``)."""
    out.measurement_pass, out.profiled_pass = passes(trace, device)
    if out.measurement_pass is None and (trace.meta.get("options") or {}).get("measure_inferences") == 0:
        out.notes.append("no measurement pass (the run was traced with --no-measure-pass): the energies include "
                         "the profiler's own cost")
    return out


def _check_kernels(trace, notes: list[str]) -> None:
    """A CUDA run's kernels: a trace with none is refused (its energy would be split by CPU
    time, which is not where a GPU spends it); inferences without any, and windows where Kineto
    stopped recording device activity, are said."""
    if not str(trace.meta.get("device", "")).startswith("cuda"):
        return
    if not np.isin(trace.events["kind"], DEVICE_KINDS).any():
        raise AttributionError(f"{trace.path} is of a CUDA run ({trace.meta.get('device')}) but holds no device event "
                               "(kernel, memcpy, memset): torch.profiler recorded no GPU activity, so its energy cannot "
                               "be split by kernels")
    kernelless = int((trace.inferences["kernels"] == 0).sum())
    if kernelless:
        stopped = trace.windows["index"][trace.windows["capture_stopped"] > 0].tolist()
        notes.append(f"{kernelless} of {len(trace.inferences)} inferences hold no kernel event"
                     + (f" (Kineto stopped recording device activity in window {', '.join(map(str, stopped))})"
                        if stopped else "")
                     + f": their time counts as {Role.NO_KERNEL.label}, their energy is not split by layer")


def default_sensor(gpu_name: str, field: str, notes: list[str]) -> SensorModel:
    """The model a run's fit starts from: the GPU family's published one for the field, else
    a generic one (the fit searches every family's range from there, so it is only a start)."""
    if field == "power_average":
        return NOMINAL_AVERAGE
    model = nominal_sensor(gpu_name)
    if model is None:
        notes.append(f"no published sensor model for {gpu_name or 'this device (its name is not in the trace)'}: "
                     "the fit starts from the A100/H100 one and searches every family's range")
        return NOMINAL_INSTANT
    return model


def _unusable_power(trace, span: tuple[int, int]) -> str | None:
    """Why a trace's power readings cannot be attributed (None: they can)."""
    log = trace.power
    if log is None or not log.channels or len(log.readings) == 0:
        return (f"{trace.path} has no power readings (source "
                f"{(trace.meta.get('sensor') or {}).get('source', 'none')!r}): energy cannot be attributed")
    t = log.readings["t_after_ns"]
    if t.max() < span[0] or t.min() > span[1]:
        return (f"the power readings ({utc_text(t.min())} to {utc_text(t.max())}) do not overlap the inferences "
                f"({utc_text(span[0])} to {utc_text(span[1])}): the two were stamped by different clocks")
    return None


def _results(trace, timeline, what: str, span: tuple[int, int], est: Estimate | None = None,
             why_no_energy: str | None = None, device: str = "", total: Energy | None = None,
             total_uncertainty_j: float | None = None, sensor: SensorModel | None = None,
             idle_w: float | None = None, notes=()) -> Results:
    """The results of a trace: its layers (with ``est``'s energies, else times only) and everything summed from them."""
    meta = trace.meta
    inf = np.sort(trace.inferences, order="start_ns")
    types = module_types(trace)
    modules = {trace.strings[int(m["path"])]: m for m in trace.modules}
    taxonomy = Taxonomy.load()
    classes = [taxonomy.classify(name, types) for name in timeline.names]
    seconds = timeline.seconds_in(np.array([span[0]]), np.array([span[1]]))[0]
    inclusive = _inclusive_intervals(est, timeline.parents) if est is not None else [(None, None)] * len(seconds)
    layers = []
    for j, name in enumerate(timeline.names):
        row = est.labels[j] if est is not None else None
        module = modules.get(name)
        c = classes[j]
        layers.append(Layer(
            name, _ROLE_OF_LABEL.get(name, Role.MODULE), row.seconds if row else float(seconds[j]),
            row.energy if row else None, row.power_w if row else None, row.group if row else name,
            timeline.names[timeline.parents[j]] if timeline.parents[j] >= 0 else "",
            int(module["calls"]) if module is not None else -1, c.component, c.part, c.stack, c.unclassified,
            types.get(name, ""), int(module["parameters"]) if module is not None else 0, *inclusive[j]))
    idle_s = (span[1] - span[0]) / 1e9 - float(timeline.covered_in(np.array([span[0]]), np.array([span[1]]))[0])
    idle = est.idle if est is not None else None
    layers.append(Layer(Role.BETWEEN_INFERENCES.label, Role.BETWEEN_INFERENCES, idle.seconds if idle else idle_s,
                        idle.energy if idle else None, idle.power_w if idle else None, Role.BETWEEN_INFERENCES.label,
                        inclusive_low_j=idle.energy.low_j if idle else None,
                        inclusive_high_j=idle.energy.high_j if idle else None))
    power = np.array([x.power_w for x in est.labels]) if est is not None else None
    leaves = _leaves(trace, timeline, seconds, power, what)
    out = Results(
        model=meta.get("model"), task=meta.get("task"), device=device,
        device_name=((meta.get("sensor") or {}).get("devices") or {}).get(device) or meta.get("device_name"),
        trace_status=trace.status, inferences=len(inf), span_s=(span[1] - span[0]) / 1e9,
        inference_s=float((inf["end_ns"] - inf["start_ns"]).sum()) / 1e9,
        batch_size=(meta.get("options") or {}).get("batch_size"), timeline=what, layers=layers, leaves=leaves,
        why_no_energy=why_no_energy, notes=list(dict.fromkeys(notes)))
    if est is None:
        return out
    g_sec = _group_seconds(est, timeline, inf["start_ns"], inf["end_ns"])
    out.total, out.total_uncertainty_j, out.idle_w, out.sensor = total, total_uncertainty_j, idle_w, sensor
    out.method, out.interval, out.scale = est.method, est.interval, est.scale
    out.sensor_updates, out.residual_w = est.updates, est.residual_w if np.isfinite(est.residual_w) else None
    out.groups = est.groups
    out.per_inference = _amounts(est, g_sec)
    out.inferences_energy = _amounts(est, g_sec.sum(axis=0))[0]
    out.phases = _phases(est, trace, timeline)
    out.components = _components(est, classes)
    out.stack_components = _components(est, classes, by_stack=True)
    out.kernels = _kernels(leaves)
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
    idle = np.maximum((np.asarray(b) - np.asarray(a)) / 1e9 - timeline.covered_in(a, b), 0.0)
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


def _amounts(est: Estimate, g_sec: np.ndarray) -> list[Energy]:
    """Energy of each row of ``g_sec`` (seconds per group and idle, see
    :func:`_group_seconds`; a single vector is one row): each group's (scaled) power
    times its time there; intervals from the bootstrap draws."""
    g_sec = np.atleast_2d(g_sec)
    low, high = _interval(est, g_sec)
    return [Energy(float(e), float(lo), float(hi), est.method) for e, lo, hi in zip(g_sec @ _group_power(est), low, high)]


def _phases(est: Estimate, trace, timeline) -> list[PhaseEnergy]:
    """Energy of each kind of phase (decode.1, decode.2... count as decode), in order of appearance."""
    ph = trace.phases
    if len(ph) == 0:
        return []
    kinds = np.array([phase_kind(trace.strings[n]) for n in ph["name"]])
    out = []
    for kind in dict.fromkeys(kinds.tolist()):
        rows = ph[kinds == kind]
        g_sec = _group_seconds(est, timeline, rows["start_ns"], rows["end_ns"]).sum(axis=0)
        out.append(PhaseEnergy(kind, len(rows), _amounts(est, g_sec)[0]))
    return out


def _kernels(leaves: list[Leaf]) -> list[KernelEnergy]:
    """Energy per kernel name: the kernel leaves of every layer, summed by name."""
    by_name: dict[str, list] = {}
    for leaf in leaves:
        if leaf.kind == "kernel":
            row = by_name.setdefault(leaf.name, [0, 0.0, 0.0])
            row[0] += leaf.calls
            row[1] += leaf.seconds
            row[2] += leaf.energy.joules
    rows = sorted(by_name.items(), key=lambda kv: -kv[1][2])
    return [KernelEnergy(name, c, s, Energy(j, method=Method.AT_LAYER_POWER)) for name, (c, s, j) in rows]


def module_types(trace) -> dict[str, str]:
    """Class name by module path (scope name); the root also under "" ."""
    types = {trace.strings[int(m["path"])]: trace.strings[int(m["type"])] for m in trace.modules}
    if len(trace.modules):
        types[""] = trace.strings[int(trace.modules[0]["type"])]
    return types


def _components(est: Estimate, classes: list[Component], by_stack: bool = False) -> list[ComponentEnergy]:
    """Energy per component (``classes[j]`` of layer j), or per (stack, component):
    the sum of its layers; an interval where it is made of whole resolved groups.
    Largest first."""
    keys = [(c.stack if by_stack else "", c.component) for c in classes]
    kinds = np.array([f"{s}/{c}" for s, c in keys])
    out = []
    for key in dict.fromkeys(keys):
        mine = kinds == f"{key[0]}/{key[1]}"
        groups = np.unique(est.group_of[mine])
        whole = all((kinds[est.group_of == g] == kinds[mine][0]).all() for g in groups)
        energy = float(sum(x.energy.joules for x, m in zip(est.labels, mine) if m))
        seconds = float(sum(x.seconds for x, m in zip(est.labels, mine) if m))
        g_sec = np.zeros(len(est.groups) + 1)
        g_sec[groups] = [est.groups[g].seconds for g in groups]
        low, high = (x[0] for x in _interval(est, g_sec)) if whole else (None, None)
        how = est.method if whole else Method.LAYERS_SUM
        out.append(ComponentEnergy(key[1], key[0], seconds, Energy(energy, low, high, how)))
    return sorted(out, key=lambda c: -c.energy.joules)


def _leaves(trace, timeline, own_s: np.ndarray, power: np.ndarray | None, what: str) -> list[Leaf]:
    """What ran inside each layer's own time (``own_s``), at the layer's estimated
    power (None: times only): its kernels' segments on a GPU timeline; on a CPU,
    its outermost ops (those not inside another op of the same thread), scaled
    down to the layer's own time where they overlap it imperfectly."""
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
        used = np.bincount(lab, secs, len(own_s))
        secs = secs * np.minimum(1.0, own_s / np.maximum(used, 1e-12))[lab]
        names, kind = ev["name"][ops], "op"
    key = lab.astype(np.int64) * (1 << 32) + names.astype(np.int64)
    uniq, inv = np.unique(key, return_inverse=True)
    inv = inv.reshape(-1)
    s = np.bincount(inv, secs, len(uniq))
    calls = np.bincount(inv, minlength=len(uniq))
    out = []
    for k, u in enumerate(uniq):
        j, name = int(u >> 32), int(u & 0xFFFFFFFF)
        energy = None if power is None else Energy(float(power[j] * s[k]), method=Method.AT_LAYER_POWER)
        out.append(Leaf(timeline.names[j], trace.strings[name], kind, int(calls[k]), float(s[k]), energy))
    return out


def _inclusive_intervals(est: Estimate, parents: np.ndarray) -> list[tuple[float | None, float | None]]:
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
    return [(_finite(lo), _finite(hi)) if w else (None, None) for lo, hi, w in zip(low, high, whole)]


def _finite(x) -> float | None:
    return float(x) if np.isfinite(x) else None


def _runs(keys: np.ndarray):
    """(start, end) of each run of equal consecutive keys."""
    edges = np.r_[0, np.flatnonzero(keys[1:] != keys[:-1]) + 1, len(keys)]
    return zip(edges[:-1], edges[1:])


def _innermost(trace, stack: int) -> str | None:
    return trace.strings[int(trace.stacks[stack]["scope"])] if stack else None
