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

from dataclasses import dataclass, replace

import numpy as np

from ..clock import clock_steps, utc_text
from ..energy import Energy, Method
from ..errors import PhprofError
from ..sources import add_measurements
from ..sources.sensors import (NOMINAL_AVERAGE, NOMINAL_INSTANT, SensorModel, nominal_sensor, phase_coverage,
                               published_power_limit_w)
from ..store import DEVICE_KINDS, Kind, ProfilerWork, phase_kind
from ..store.results import ComponentEnergy, DeviceEnergy, KernelEnergy, Layer, Leaf, PhaseEnergy, Results, Role
from .components import Component, Taxonomy
from .estimate import Estimate, estimate_label_power, instant_windows
from .passes import passes
from .runfit import fit_run_sensor, windows_of
from .timeline import interval_union, trace_timeline

_ROLE_OF_LABEL = {r.label: r for r in Role if r is not Role.MODULE}


def _inside_inferences(label: str) -> bool:
    """A label of the inferences' own (not phprof's work or the time between them)."""
    return not _ROLE_OF_LABEL.get(label, Role.MODULE).between_inferences
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

    Each GPU the run's kernels ran on is attributed against its own sensor
    (:func:`device_pairs`): its kernels' layers, its readings and counter, its
    sensor model; the run's figures are the devices' added up (``Results.devices``).
    ``device``: attribute against that power device only (default: every one
    that measured the run's kernels); ``sensor``: the instant power field's
    model (default: the nominal one of each GPU's family, or of A100/H100 with
    a note; a given one is used for every device of the first one's product);
    ``fit``: refit its lag and
    window to this run's updates; ``options`` go to ``estimate_label_power``.
    """
    if len(trace.inferences) == 0:
        raise AttributionError(f"{trace.path} holds no whole inference: nothing to attribute")
    notes: list[str] = []
    if not trace.complete:
        notes.append(f"the trace is {trace.status}: only its {len(trace.inferences)} whole inferences are used")
    _check_kernels(trace, notes)
    warmed = (trace.meta.get("options") or {}).get("window_warmup") or 0
    if warmed and not (trace.profiler_work["kind"] == int(ProfilerWork.WINDOW_WARMUP)).any():
        notes.append(f"{warmed} unrecorded warm-up inferences ran before each profiler window (--window-warmup), and "
                     "this trace does not say when (recorded by an older phprof): their energy lies between the "
                     "recorded inferences, read as idle time, so the idle row holds it and the fit's idle power mixes "
                     "theirs with the device's")
    inf = np.sort(trace.inferences, order="start_ns")
    span = (int(inf["start_ns"][0]), int(inf["end_ns"].max()))  # on a GPU, spans may overlap (several streams)
    log = trace.power
    why = _unusable_power(trace, span)
    if why is not None:
        timeline, what = trace_timeline(trace)
        return _with_passes(_results(trace, what, span, [_DeviceFit("", None, timeline)], why_no_energy=why),
                            trace, [])
    if device is not None and device not in log.devices:
        raise AttributionError(f"no device {device!r} in {trace.path} (devices: {', '.join(log.devices)})")
    said: list[str] = []
    pairs = device_pairs(trace, said)
    notes.extend(said)
    if not pairs and device is None:
        timeline, what = trace_timeline(trace)
        why = "none of the file's power readings measure a device the run's kernels ran on: " + "; ".join(said)
        return _with_passes(_results(trace, what, span, [_DeviceFit("", None, timeline)], why_no_energy=why,
                                     notes=notes), trace, [])
    if device is not None and not pairs:  # asked for: the busiest device's kernels against it (said above)
        pairs = [(None, device)]
    if device is not None:
        left = [f"cuda:{k} ({d})" for k, d in pairs if d != device and k is not None]
        mine = [p for p in pairs if p[1] == device]
        if not mine:  # another device's kernels are never read off this one's sensor
            raise AttributionError(f"{device} measures none of the devices the run's kernels ran on (those are "
                                   f"{', '.join(left)}): nothing of the run to attribute against it")
        pairs = mine
        if left:
            notes.append(f"attributed against {device} only: the kernels of {', '.join(left)} and their energy are "
                         "left out")
    ev = trace.events
    on_gpu = (np.isin(ev["kind"], DEVICE_KINDS) & (ev["device"] >= 0) & (ev["inference"] >= 0)).any()
    what = "device kernels" if on_gpu else "module scopes (CPU)"  # as trace_timeline names them
    t = log.readings["t_after_ns"]
    if t.min() > span[0] or t.max() < span[1]:
        notes.append("the power readings do not cover the whole run: its ends are clipped")
    for a, b, step in clock_steps(log.clock_pairs):
        notes.append(f"the system clock stepped by {step / 1e6:+.1f} ms between {utc_text(a)} and {utc_text(b)}: "
                     "readings and kernels near it may be misaligned by that much")
    several = len(pairs) > 1
    product = (trace.meta.get("sensor") or {}).get("devices") or {}
    fits = []
    for ordinal, dev in pairs:
        timeline = trace_timeline(trace, ordinal)[0] if ordinal is not None else trace_timeline(trace)[0]
        own: list[str] = []
        model = sensor
        if sensor is not None and product.get(dev) != product.get(pairs[0][1]):  # a calibration is of one product
            model = None
            own.append(f"the given sensor model is of {product.get(pairs[0][1]) or pairs[0][1]}'s kind, not of this "
                       f"{product.get(dev) or 'device'}: its published one is refitted instead")
        fitted = _fit_device(trace, timeline, span, dev, ordinal, model, fit, dict(options), own)
        notes.extend(f"{dev}: {n}" if several else n for n in own)
        fits.append(fitted)
    _waiting(fits)
    out = _results(trace, what, span, fits, notes=notes)
    if out.devices:
        _kept_whole(trace, fits, span, out)
    return _with_passes(out, trace, [f.device for f in fits])


def _why_kept_whole(on_gpu: bool) -> str:
    """Why a host zone measured beside the attributed devices is not split by layer."""
    if on_gpu:
        return ("the whole host's draw (every process and thread, the OS), and a GPU run's CPU work runs ahead of "
                "its kernels: no layer's share of it is measured")
    return ("the whole host's draw (every process and thread, the OS); a CPU run's layers are attributed against "
            "one zone's readings only")


def _kept_whole(trace, fits: list[_DeviceFit], span: tuple[int, int], out: Results) -> None:
    """Each host zone the log measured beside the attributed devices (a CPU package, DRAM:
    RAPL), over the same span (shifted as the first device's readings where its fit shifted
    the clock: one sampling thread stamps them all), as a row kept whole; and every device's
    energy added (``Results.run_total``). Nothing without such a zone."""
    log = trace.power
    attributed = {f.device for f in fits}
    zones = list(dict.fromkeys(c.device for c in log.channels
                               if c.name.startswith("rapl.") and c.device not in attributed))
    if not zones:
        return
    shift = fits[0].shift_ns
    names = (trace.meta.get("sensor") or {}).get("devices") or {}
    ids = trace.meta.get("device_ids") or {}
    beside = [log.energy_between(z, span[0] + shift, span[1] + shift) for z in zones]
    why = _why_kept_whole(fits[0].ordinal is not None)
    for m in beside:
        out.devices.append(DeviceEnergy(m.device, ids.get(m.device, ""), names.get(m.device, ""), "", m.energy,
                                        m.uncertainty_j, kept_whole=why))
        out.notes.extend(n for n in m.notes if n not in out.notes)
    gpus = ", ".join(f.device for f in fits)
    out.notes.append(f"{', '.join(zones)} measured beside {gpus} over the same span"
                     + (f" (shifted {shift / 1e6:+.0f} ms as {fits[0].device}'s counter)" if shift else "")
                     + f", shown apart and kept whole: {why}; all devices' energy is the sum of the "
                     f"{len(fits) + len(zones)}")
    parts = [f.measured for f in fits] + beside
    out.run_total = add_measurements(parts, "+".join(m.device for m in parts), seconds=out.span_s).energy


@dataclass
class _DeviceFit:
    """One device's attribution: its timeline (its kernels), the estimate against its sensor."""

    device: str  # the power device ("" : none)
    ordinal: int | None  # the CUDA device its kernels ran on (None: a CPU timeline)
    timeline: object
    est: Estimate | None = None
    total: Energy | None = None
    total_uncertainty_j: float | None = None
    sensor: SensorModel | None = None
    idle_w: float | None = None
    busy_s: float = 0.0
    waiting_s: float = 0.0
    measured: object = None  # its counter's Measurement over the span (shifted with the fit's clock)
    shift_ns: int = 0  # the clock shift the fit found between its readings and the kernels


def device_pairs(trace, notes: list[str] | None = None) -> list[tuple[int | None, str]]:
    """Each CUDA device the run's kernels ran on (its ordinal), with the power device that
    measures it, in the order of the ordinals: from the file's map of CUDA devices to the
    readings' devices (``meta["cuda_devices"]``, or the one device of ``device_identity``),
    else (an import, a file of one device) the first power device measures the device that
    ran the most kernels. A CPU timeline is ``[(None, first power device)]``. Devices with
    kernels that no readings measure, and measured devices that ran none, are said in
    ``notes``: neither is in the run's energy; [] where the map measures none of the devices
    the kernels ran on (another board's power is never given to them)."""
    notes = notes if notes is not None else []
    power = list(trace.power.devices) if trace.power is not None else []
    ev = trace.events
    work = np.isin(ev["kind"], DEVICE_KINDS) & (ev["device"] >= 0) & (ev["inference"] >= 0)
    counts = np.bincount(ev["device"][work].astype(np.int64)) if work.any() else np.zeros(0, np.int64)
    ordinals = [int(k) for k in np.flatnonzero(counts)]
    if not ordinals or not power:
        return [(None, power[0] if power else "")]
    mapping = {k: d for k, d in cuda_power_map(trace.meta).items() if d in power}
    pairs = [(k, mapping[k]) for k in ordinals if k in mapping]
    if not pairs and not mapping:  # a file without the map: its one power device measures the busiest CUDA device
        pairs = [(int(np.argmax(counts)), power[0])]
    measured = {k for k, _ in pairs}
    for k in ordinals:
        if k not in measured:
            notes.append(f"{int(counts[k])} kernels ran on cuda:{k}, which no power readings in the file measure: its "
                         f"energy is not in the run's (record it too: --gpus {','.join(map(str, ordinals))})")
    used = {d for _, d in pairs}
    idle = [d for d in dict.fromkeys(mapping.values()) if d not in used]
    if idle:
        notes.append(f"{', '.join(idle)} measured but ran none of the run's kernels: not in its energy")
    return pairs


def cuda_power_map(meta: dict) -> dict[int, str]:
    """The file's CUDA device ordinal -> the power device that measures it (its readings'
    name): ``meta["cuda_devices"]`` (``{"cuda:1": "gpu3"}``), else the one device matched
    at the start of a single-GPU session (``device_identity``); {} for neither."""
    found = meta.get("cuda_devices") or {}
    if not found and meta.get("device_identity"):
        d = meta["device_identity"]
        found = {d.get("cuda_device") or "cuda": f"gpu{d['nvml_index']}"}
    out = {}
    for cuda, dev in found.items():
        ordinal = cuda.split(":")[1] if ":" in cuda else "0"
        if ordinal.isdigit():
            out[int(ordinal)] = dev
    return out


def _fit_device(trace, timeline, span, device: str, ordinal, sensor, fit, options, notes) -> _DeviceFit:
    """One device's estimate: its timeline against its own readings, counter and sensor model."""
    log = trace.power
    measured = log.energy_between(device, *span)
    notes.extend(measured.notes)
    meta_sensor = trace.meta.get("sensor") or {}
    gpu_name = (meta_sensor.get("devices") or {}).get(device) or trace.meta.get("device_name") or ""
    updates = log.windowed_power(device)
    prior, fitted, shift_ns = None, None, 0
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
                shift = shift_ns = round(fitted.shift_s * 1e9)
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
        inf = trace.inferences
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
    notes.extend(est.notes)
    return _DeviceFit(device, ordinal, timeline, est, total, measured.uncertainty_j,
                      prior if updates is not None else None, idle_w, measured=measured, shift_ns=shift_ns)


def _waiting(fits: list[_DeviceFit]) -> None:
    """Each device's busy time (a kernel or copy on it) inside the inferences, and its
    waiting: the time with none on it while another device runs one (a model split over
    GPUs: the stage that waits for the other's output)."""
    busy = {}
    for f in fits:
        tl = f.timeline
        seg = tl.events >= 0 if tl.events is not None else np.zeros(len(tl.starts_ns), bool)
        busy[f.device] = interval_union(tl.starts_ns[seg], tl.ends_ns[seg])
        f.busy_s = _length(busy[f.device]) / 1e9
    for f in fits:
        others = [busy[g.device] for g in fits if g is not f]
        if not others:
            continue
        o = interval_union(np.concatenate([x[0] for x in others]), np.concatenate([x[1] for x in others]))
        both = interval_union(np.concatenate([o[0], busy[f.device][0]]), np.concatenate([o[1], busy[f.device][1]]))
        f.waiting_s = (_length(both) - _length(busy[f.device])) / 1e9


def _length(intervals: tuple[np.ndarray, np.ndarray]) -> int:
    return int((intervals[1] - intervals[0]).sum())


def _with_passes(out: Results, trace, devices: list[str]) -> Results:
    """The measurement pass and the profiled one beside it (``phprof.attribution.passes``)."""
    out.measurement_pass, out.profiled_pass = passes(trace, devices)
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


def _results(trace, what: str, span: tuple[int, int], fits: list[_DeviceFit], why_no_energy: str | None = None,
             notes=()) -> Results:
    """The results of a trace: each device's layers (with its estimate's energies, else
    times only) and everything summed from them over the devices."""
    meta = trace.meta
    inf = np.sort(trace.inferences, order="start_ns")
    types = module_types(trace)
    modules = {trace.strings[int(m["path"])]: m for m in trace.modules}
    taxonomy = Taxonomy.load()
    product = (meta.get("sensor") or {}).get("devices") or {}
    layers, leaves, classes = [], [], []
    for f in fits:
        timeline, est = f.timeline, f.est
        mine = [taxonomy.classify(name, types) for name in timeline.names]
        classes.append(mine)
        seconds = timeline.seconds_in(np.array([span[0]]), np.array([span[1]]))[0]
        inclusive = _inclusive_intervals(est, timeline.parents) if est is not None else [(None, None)] * len(seconds)
        for j, name in enumerate(timeline.names):
            row = est.labels[j] if est is not None else None
            module = modules.get(name)
            c = mine[j]
            layers.append(Layer(
                name, _ROLE_OF_LABEL.get(name, Role.MODULE), row.seconds if row else float(seconds[j]),
                row.energy if row else None, row.power_w if row else None, row.group if row else name,
                timeline.names[timeline.parents[j]] if timeline.parents[j] >= 0 else "",
                int(module["calls"]) if module is not None else -1, c.component, c.part, c.stack, c.unclassified,
                types.get(name, ""), int(module["parameters"]) if module is not None else 0, *inclusive[j],
                device=f.device))
        idle_s = (span[1] - span[0]) / 1e9 - float(timeline.covered_in(np.array([span[0]]), np.array([span[1]]))[0])
        idle = est.idle if est is not None else None
        layers.append(Layer(Role.BETWEEN_INFERENCES.label, Role.BETWEEN_INFERENCES, idle.seconds if idle else idle_s,
                            idle.energy if idle else None, idle.power_w if idle else None,
                            Role.BETWEEN_INFERENCES.label, inclusive_low_j=idle.energy.low_j if idle else None,
                            inclusive_high_j=idle.energy.high_j if idle else None, device=f.device))
        power = np.array([x.power_w for x in est.labels]) if est is not None else None
        leaves += _leaves(trace, timeline, seconds, power, what, f.device)
    first = fits[0]
    several = len(fits) > 1
    names = list(dict.fromkeys(product.get(f.device) or "" for f in fits))
    out = Results(
        model=meta.get("model"), task=meta.get("task"), device="+".join(f.device for f in fits),
        device_name=" + ".join(n for n in names if n) or meta.get("device_name"),
        trace_status=trace.status, inferences=len(inf), span_s=(span[1] - span[0]) / 1e9,
        inference_s=float((inf["end_ns"] - inf["start_ns"]).sum()) / 1e9,
        batch_size=(meta.get("options") or {}).get("batch_size"), timeline=what, layers=layers, leaves=leaves,
        why_no_energy=why_no_energy, notes=list(dict.fromkeys(notes)))
    if first.est is None:
        return out
    g_sec = [_group_seconds(f.est, f.timeline, inf["start_ns"], inf["end_ns"]) for f in fits]
    ids = meta.get("device_ids") or {}
    for f, g in zip(fits, g_sec):
        est = f.est
        out.devices.append(DeviceEnergy(
            f.device, ids.get(f.device, ""), product.get(f.device) or meta.get("device_name") or "",
            f"cuda:{f.ordinal}" if f.ordinal is not None else "", f.total, f.total_uncertainty_j,
            _summed([(est, g.sum(axis=0))])[0], est.method, f.sensor, est.updates,
            est.residual_w if np.isfinite(est.residual_w) else None, est.scale, f.idle_w, f.busy_s, f.waiting_s,
            _waiting_energy(f) if several else None))
    if several:
        out.total = _added([f.total for f in fits])
        u = [f.total_uncertainty_j for f in fits]
        out.total_uncertainty_j = None if any(x is None for x in u) else float(sum(u))
        idle = [f.idle_w for f in fits]
        out.idle_w = None if any(x is None for x in idle) else float(sum(idle))
        out.method = Method.WLS if all(f.est.method is Method.WLS for f in fits) else Method.TIME_PROPORTIONAL
        out.sensor, out.residual_w = None, None  # each device's: Results.devices
        out.sensor_updates = sum(f.est.updates for f in fits)
        modelled = sum(f.est.total_j / f.est.scale for f in fits if f.est.scale)
        out.scale = out.total.joules / modelled if modelled else 1.0
    else:
        est = first.est
        out.total, out.total_uncertainty_j, out.idle_w, out.sensor = (first.total, first.total_uncertainty_j,
                                                                       first.idle_w, first.sensor)
        out.method, out.scale = est.method, est.scale
        out.sensor_updates, out.residual_w = est.updates, est.residual_w if np.isfinite(est.residual_w) else None
    out.interval = first.est.interval
    # the inferences' labels: phprof's own work between windows has its own rows in the layers, not in these
    out.groups = [replace(g, device=f.device) for f in fits for g in f.est.groups if _inside_inferences(g.label)]
    parts = list(zip([f.est for f in fits], g_sec))
    out.per_inference = _summed(parts)
    out.inferences_energy = _summed([(e, g.sum(axis=0)) for e, g in parts])[0]
    out.phases = _phases(fits, trace)
    out.components = _components(fits, classes)
    out.stack_components = _components(fits, classes, by_stack=True)
    out.kernels = _kernels(leaves)
    return out


def _waiting_energy(f: _DeviceFit) -> Energy | None:
    """A device's draw while it waits for another: its waiting time at the power its estimate
    gives its time with no kernel running (where it waits)."""
    names = f.timeline.names
    if Role.NO_KERNEL.label not in names:
        return None
    row = f.est.labels[names.index(Role.NO_KERNEL.label)]
    return Energy(row.power_w * f.waiting_s, method=Method.AT_LAYER_POWER)


def _added(energies: list[Energy]) -> Energy:
    """Devices' energies added: the bounds add (an end unknown in one is unknown in the sum);
    one method, else each listed."""
    def total(values):
        return None if any(v is None for v in values) else float(sum(values))

    methods = {(e.method, e.detail) for e in energies}
    method, detail = methods.pop() if len(methods) == 1 else \
        (Method.MIXED, " + ".join(sorted({e.method_text for e in energies})))
    return Energy(total([e.joules for e in energies]), total([e.low_j for e in energies]),
                  total([e.high_j for e in energies]), method, detail, bound=all(e.bound for e in energies))


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


def _group_power(est: Estimate) -> np.ndarray:
    return np.array([g.power_w for g in est.groups] + [est.idle.power_w])


def _summed(parts: list[tuple[Estimate, np.ndarray]]) -> list[Energy]:
    """Energy of each row of the devices' ``g_sec`` (``parts``: each device's estimate and
    its seconds per group and idle, see :func:`_group_seconds`, a single vector one row),
    added over the devices: each group's (scaled) power times its time there; intervals
    from the bootstrap draws, added draw by draw over the devices (the k-th draw of each
    resamples the same blocks of time); NaN ends where a device has no draws."""
    rows = [np.atleast_2d(g) for _, g in parts]
    energy = sum(g @ _group_power(est) for (est, _), g in zip(parts, rows))
    draws = None
    for (est, _), g in zip(parts, rows):
        if est.boot_w is None or not len(est.boot_w) or not np.isfinite(est.boot_w).all():
            draws = None
            break
        d = g @ est.boot_w.T
        n = d.shape[1] if draws is None else min(d.shape[1], draws.shape[1])
        draws = d[:, :n] if draws is None else draws[:, :n] + d[:, :n]
    if draws is None:
        low = high = np.full(len(energy), np.nan)
    else:
        q = (1 - parts[0][0].interval) / 2
        low, high = np.quantile(draws, [q, 1 - q], axis=1)
    methods = {est.method for est, _ in parts}
    method = methods.pop() if len(methods) == 1 else Method.TIME_PROPORTIONAL
    return [Energy(float(e), float(lo), float(hi), method) for e, lo, hi in zip(energy, low, high)]


def _phases(fits: list[_DeviceFit], trace) -> list[PhaseEnergy]:
    """Energy of each kind of phase (decode.1, decode.2... count as decode), in order of
    appearance, over the devices."""
    ph = trace.phases
    if len(ph) == 0:
        return []
    kinds = np.array([phase_kind(trace.strings[n]) for n in ph["name"]])
    out = []
    for kind in dict.fromkeys(kinds.tolist()):
        rows = ph[kinds == kind]
        parts = [(f.est, _group_seconds(f.est, f.timeline, rows["start_ns"], rows["end_ns"]).sum(axis=0))
                 for f in fits]
        out.append(PhaseEnergy(kind, len(rows), _summed(parts)[0]))
    return out


def _kernels(leaves: list[Leaf]) -> list[KernelEnergy]:
    """Energy per kernel name on each device: the kernel leaves of every layer, summed by name."""
    by_name: dict[tuple[str, str], list] = {}
    for leaf in leaves:
        if leaf.kind == "kernel":
            row = by_name.setdefault((leaf.device, leaf.name), [0, 0.0, 0.0])
            row[0] += leaf.calls
            row[1] += leaf.seconds
            row[2] += leaf.energy.joules
    rows = sorted(by_name.items(), key=lambda kv: -kv[1][2])
    return [KernelEnergy(name, c, s, Energy(j, method=Method.AT_LAYER_POWER), device)
            for (device, name), (c, s, j) in rows]


def module_types(trace) -> dict[str, str]:
    """Class name by module path (scope name); the root also under "" ."""
    types = {trace.strings[int(m["path"])]: trace.strings[int(m["type"])] for m in trace.modules}
    if len(trace.modules):
        types[""] = trace.strings[int(trace.modules[0]["type"])]
    return types


def _components(fits: list[_DeviceFit], classes: list[list[Component]], by_stack: bool = False) \
        -> list[ComponentEnergy]:
    """Energy per component (``classes[d][j]`` of device d's layer j), or per (stack,
    component): the sum of its layers (those inside the inferences) over the devices; an
    interval where it is made of whole resolved groups on every device. Largest first."""
    keys = [[(c.stack if by_stack else "", c.component) if _inside_inferences(name) else None
             for c, name in zip(mine, f.timeline.names)] for mine, f in zip(classes, fits)]
    out = []
    for key in dict.fromkeys(k for mine in keys for k in mine if k is not None):
        energy = seconds = 0.0
        parts, whole = [], True
        for f, mine_keys in zip(fits, keys):
            est = f.est
            kinds = np.array([f"{k[0]}/{k[1]}" if k is not None else "" for k in mine_keys])
            mine = kinds == f"{key[0]}/{key[1]}"
            if not mine.any():
                continue
            groups = np.unique(est.group_of[mine])
            whole = whole and all((kinds[est.group_of == g] == kinds[mine][0]).all() for g in groups)
            energy += float(sum(x.energy.joules for x, m in zip(est.labels, mine) if m))
            seconds += float(sum(x.seconds for x, m in zip(est.labels, mine) if m))
            g_sec = np.zeros(len(est.groups) + 1)
            g_sec[groups] = [est.groups[g].seconds for g in groups]
            parts.append((est, g_sec))
        if whole:
            summed = _summed(parts)[0]
            low, high, how = summed.low_j, summed.high_j, summed.method
        else:
            low, high, how = None, None, Method.LAYERS_SUM
        out.append(ComponentEnergy(key[1], key[0], seconds, Energy(energy, low, high, how)))
    return sorted(out, key=lambda c: -c.energy.joules)


def _leaves(trace, timeline, own_s: np.ndarray, power: np.ndarray | None, what: str, device: str = "") -> list[Leaf]:
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
        out.append(Leaf(timeline.names[j], trace.strings[name], kind, int(calls[k]), float(s[k]), energy, device))
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
    amounts = _summed([(est, g_sec)])
    return [(e.low_j, e.high_j) if w else (None, None) for e, w in zip(amounts, whole)]


def _runs(keys: np.ndarray):
    """(start, end) of each run of equal consecutive keys."""
    edges = np.r_[0, np.flatnonzero(keys[1:] != keys[:-1]) + 1, len(keys)]
    return zip(edges[:-1], edges[1:])


def _innermost(trace, stack: int) -> str | None:
    return trace.strings[int(trace.stacks[stack]["scope"])] if stack else None
