"""The results of an attribution, as typed rows: what analysis hands rendering.

:class:`Results` is everything ``phprof report``, ``flamegraph`` and
``compare`` show of one trace: the run's measured energy and its split by
layer (:class:`Layer`), resolved group, kernel or op inside a layer
(:class:`Leaf`), kernel name, component, phase and inference, each figure an
:class:`~phprof.energy.Energy` that says how it was obtained. A layer's
:class:`Role` tells a module's own time from the rows that are not modules
(time inside an inference outside every module, or with no kernel running;
the time between inferences), whatever their labels say.

:class:`Rollups` are what a reader derives from the results for a grid and a
facility (per inference, per 1,000, per token, carbon, training parity).

A trace without power readings still has results: its layers' times, every
energy None and :attr:`Results.why_no_energy` saying why.

The store writes these into a trace file's ``/results`` group and reads them
back (:func:`phprof.store.write_results`, :attr:`phprof.store.Trace.results`):
:func:`to_tables` and :func:`from_tables` are the one mapping between the
rows and the file's columns and attributes.
"""
from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass, field, fields, replace
from enum import Enum

import numpy as np

from ..carbon import joules_to_kwh, joules_to_wh
from ..energy import Energy, Method
from ..sources.sensors import SensorModel

RESULTS_VERSION = 9  # 9: devices measured beside the attributed ones, kept whole (a host's RAPL zones), run_total; 8: a device dimension (several GPUs, each against its own sensor); 7: the measurement pass and the profiled pass; 6: sensor models with intervals, fitted periods, bounded powers; 5: typed rows (roles, methods by name); 4: stack_components; 3: taxonomy


class Role(Enum):
    """What a row of the layers table stands for; ``label`` is how reports name
    the rows that are not modules."""

    MODULE = ""  # a module scope's own time; its label is the module's path
    OUTSIDE_MODULES = "(inference, outside modules)"  # in an inference, in no module (CPU timeline)
    NO_KERNEL = "(inference, no kernel running)"  # in an inference, no kernel on the device (GPU timeline)
    UNSCOPED = "(unscoped)"  # kernels launched outside every module scope (autograd and other threads)
    BETWEEN_INFERENCES = "(idle)"  # the run's time between inferences in no other row (loop, pauses)
    WINDOW_WARMUP = "(window warm-up)"  # inferences run as profiler warm-up steps before windows, not recorded
    WINDOW_SAVE = "(window save)"  # the profiler windows' saves

    @property
    def label(self) -> str:
        return self.value

    @property
    def between_inferences(self) -> bool:
        """A row of the run's time outside its inferences (idle, or phprof's own work between windows)."""
        return self in (Role.BETWEEN_INFERENCES, Role.WINDOW_WARMUP, Role.WINDOW_SAVE)


@dataclass(frozen=True)
class Layer:
    """A label of the timeline (a module's own time, or a row of another role)."""

    label: str
    role: Role
    seconds: float  # its own time over the run
    energy: Energy | None  # its own energy; None: no power readings
    power_w: float | None  # the power the estimate gives it
    group: str  # the resolved group it is estimated in (its own label where resolved alone)
    parent: str = ""  # the scope it first ran inside ("" : none)
    calls: int = -1  # forward calls while traced (-1: not a module)
    component: str = "other"  # phprof.attribution.components.COMPONENTS
    part: str = ""  # inside attention: projections | scores | output
    stack: str = ""  # encoder | decoder | unet | vae | text_encoder
    unclassified: bool = False  # no taxonomy rule reached it
    module_type: str = ""  # its class ("" : not a module)
    parameters: int = 0  # the module's own parameters
    # the interval of its inclusive energy (itself and every scope inside it); None where that
    # subtree holds only part of a merged group
    inclusive_low_j: float | None = None
    inclusive_high_j: float | None = None
    device: str = ""  # the power device whose sensor its energy is read from ("gpu1"; Results.devices)


@dataclass(frozen=True)
class Group:
    """A resolved label: one layer, or layers the sensor could only see together."""

    label: str  # "transformer.h.0.attn (+2 merged)" for a merged group
    seconds: float
    power_w: float
    energy: Energy
    device: str = ""


@dataclass(frozen=True)
class Leaf:
    """A kernel (GPU) or outermost op (CPU) inside a layer's own time, at the layer's power."""

    layer: str
    name: str
    kind: str  # "kernel" | "op"
    calls: int
    seconds: float
    energy: Energy | None
    device: str = ""


@dataclass(frozen=True)
class KernelEnergy:
    """One kernel name's energy over the run on one device: its leaves in every layer, summed."""

    name: str
    calls: int
    seconds: float
    energy: Energy
    device: str = ""


@dataclass(frozen=True)
class ComponentEnergy:
    """A component's layers summed (``stack`` "": over every stack)."""

    component: str
    stack: str
    seconds: float
    energy: Energy


@dataclass(frozen=True)
class PhaseEnergy:
    """One kind of phase (prefill, decode, encode, denoise...) over the run."""

    name: str
    count: int  # occurrences over the run
    energy: Energy


@dataclass(frozen=True)
class DeviceEnergy:
    """One power device of a run (a GPU), attributed against its own sensor: its kernels'
    layers (the :class:`Layer` rows with its ``device``) and its energy, measured or
    estimated as it is. The run's figures are these devices' added up. ``device`` is the
    name of its readings in the file, ``id`` its physical identity (a GPU's UUID), as in
    the rank merge's per-device rows (``phprof.attribution.ranks.DeviceRow``).

    Or a device measured beside them and kept whole (``kept_whole`` says why: a host's
    RAPL package or DRAM zone): its counter's energy over the same span in ``total``, no
    layers, no estimate (``cuda`` "", ``inferences_energy`` None); not in ``Results.total``,
    only in ``Results.run_total``."""

    device: str  # its readings' name in the file ("gpu2")
    id: str  # the GPU's UUID as NVML reports it ("" : not recorded)
    name: str  # the product ("NVIDIA A100-SXM4-80GB")
    cuda: str  # where its kernels ran ("cuda:1"); "" for a CPU timeline read off its sensor
    total: Energy | None  # over the run's span: its counter's (measured), else estimated
    total_uncertainty_j: float | None = None
    inferences_energy: Energy | None = None  # the inferences' own
    method: Method | None = None  # its estimate's: WLS, or TIME_PROPORTIONAL
    sensor: SensorModel | None = None  # its instant power field's model (fitted to this run)
    sensor_updates: int = 0
    residual_w: float | None = None
    scale: float = 1.0  # its measured / modelled energy
    idle_w: float | None = None  # its power before the run, measured
    busy_s: float = 0.0  # inside the inferences, time with a kernel (or copy) of the run on it
    waiting_s: float = 0.0  # inside the inferences, time with none on it while another device runs one
    waiting: Energy | None = None  # its draw while it waits: that time at its no-kernel power (estimated)
    kept_whole: str = ""  # why it is not split by layer, in words: a device measured beside the attributed ones
    # (a CPU package, DRAM: RAPL) has its energy only, no layers ("" for an attributed device)

    @property
    def attributed(self) -> bool:
        """Its energy is split by layer (a GPU of the run), not kept whole."""
        return not self.kept_whole


class PerInference:
    """Per-inference figures of a record with ``inferences``, ``inference_s`` (their own
    time, added up) and ``energy`` (anything with ``joules``, or None)."""

    @property
    def seconds_per_inference(self) -> float:
        return self.inference_s / self.inferences if self.inferences else float("nan")

    @property
    def joules_per_inference(self) -> float | None:
        e = self.energy
        return None if e is None or e.joules is None or not self.inferences else e.joules / self.inferences


@dataclass(frozen=True)
class PassEnergy(PerInference):
    """One pass of a run: the measurement pass (the profiler off) or the profiled
    one, its energy over its spans (the pauses between its inferences included,
    the profiler's window saves not)."""

    inferences: int
    inference_s: float  # their own time, added up
    span_s: float  # the time its energy covers
    energy: Energy | None  # None without power readings


@dataclass
class Results:
    """Where one trace's energy went (see the module's docstring)."""

    model: str | None
    task: str | None
    device: str  # the power device attributed ("gpu0"), or "" without power readings
    device_name: str | None
    trace_status: str
    inferences: int
    span_s: float  # from the first inference's start to the last one's end
    inference_s: float  # the inferences' own time
    batch_size: int | None
    timeline: str  # what the labels' time is: "device kernels" or "module scopes (CPU)"
    layers: list[Layer]
    leaves: list[Leaf]
    why_no_energy: str | None = None  # set: no power readings, every energy is None
    total: Energy | None = None  # the run's energy over its span: the counter's (measured), else estimated
    total_uncertainty_j: float | None = None  # the measured total's +-: the farther end of its bound
    inferences_energy: Energy | None = None  # the inferences' own: the total less the time between them
    idle_w: float | None = None  # the device's power before the run, measured
    method: Method | None = None  # the estimate's as a whole: WLS, or TIME_PROPORTIONAL
    interval: float = 0.90  # the level of every confidence interval
    sensor: SensorModel | None = None  # the instant power field's model the estimate used
    sensor_updates: int = 0
    residual_w: float | None = None  # RMS of the updates around the fitted model
    scale: float = 1.0  # measured / modelled energy
    groups: list[Group] = field(default_factory=list)
    per_inference: list[Energy] = field(default_factory=list)
    phases: list[PhaseEnergy] = field(default_factory=list)
    components: list[ComponentEnergy] = field(default_factory=list)  # by component, stacks summed
    stack_components: list[ComponentEnergy] = field(default_factory=list)  # by (stack, component)
    kernels: list[KernelEnergy] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    measurement_pass: PassEnergy | None = None  # the inferences run with the profiler off, if any
    profiled_pass: PassEnergy | None = None  # the same figures of the profiled inferences, beside it
    devices: list[DeviceEnergy] = field(default_factory=list)  # each power device: attributed, its own sensor,
    # then any measured beside them and kept whole (``kept_whole``: a host's RAPL zones)
    run_total: Energy | None = None  # every device's energy added (None without a device kept whole: ``total``)

    @property
    def attributed_devices(self) -> list[DeviceEnergy]:
        """The devices whose energy is split by layer (``total`` is theirs)."""
        return [d for d in self.devices if d.attributed]

    @property
    def kept_whole(self) -> list[DeviceEnergy]:
        """The devices measured beside the attributed ones, their energy whole, not per layer."""
        return [d for d in self.devices if not d.attributed]

    @property
    def several_devices(self) -> bool:
        """Attributed over several devices: every row says which (``device``), the run's figures add them up."""
        return len(self.attributed_devices) > 1

    def device_row(self, device: str) -> DeviceEnergy | None:
        return next((d for d in self.devices if d.device == device), None)

    @property
    def has_energy(self) -> bool:
        return self.total is not None

    @property
    def total_measured(self) -> bool:
        return self.total is not None and self.total.measured

    @property
    def between_inferences_j(self) -> float | None:
        return None if self.total is None else self.total.joules - self.inferences_energy.joules

    @property
    def static_j(self) -> float | None:
        """What the device would have drawn idle during the inferences: the idle
        power measured before the run times the inferences' own time, and never more
        than the inferences drew (an idle measured while the device still cooled down)."""
        if self.idle_w is None:
            return None
        static = self.idle_w * self.inference_s
        return static if self.inferences_energy is None else min(static, max(self.inferences_energy.joules, 0.0))

    @property
    def active_j(self) -> float | None:
        s = self.static_j
        return None if s is None or self.inferences_energy is None else self.inferences_energy.joules - s

    @property
    def split_scale(self) -> float | None:
        """The measurement pass's energy per inference over the profiled pass's: what
        the profiled split is scaled by to give the run without the profiler (None
        without both)."""
        m, p = self.measurement_pass, self.profiled_pass
        if m is None or p is None or m.joules_per_inference is None or not p.joules_per_inference:
            return None
        return m.joules_per_inference / p.joules_per_inference

    def scaled_split(self, e: Energy, factor: float = 1.0) -> Energy:
        """A part ``e`` of the profiled split (a layer, a phase, the inferences) as the
        run without the profiler drew it, times ``factor`` (1/n for per inference):
        ``e x split_scale``. The split is shares of the profiled pass's energy, whose
        uncertainty is already in ``e``'s range; the measurement pass's own bound is
        not, so the range is widened by it: ``[low x m_low / p, high x m_high / p]``; an
        end the pass's bound lacks (no counter) is lacking here too. Without a measurement
        pass, ``e x factor``."""
        k = self.split_scale
        if k is None:
            return e.scaled(factor)
        m, p = self.measurement_pass, self.profiled_pass
        per_p = p.joules_per_inference

        def times(x, m_j):  # x scaled by the measurement pass's figure m_j (an end of its bound; None: unknown)
            return None if x is None or m_j is None else x * factor * (m_j / m.inferences) / per_p

        return replace(e, joules=None if e.joules is None else e.joules * k * factor,
                       low_j=times(e.low_j, m.energy.low_j), high_j=times(e.high_j, m.energy.high_j))

    def phase(self, name: str) -> PhaseEnergy | None:
        return next((p for p in self.phases if p.name == name), None)

    @property
    def generated_tokens(self) -> int | None:
        """Tokens the run generated in all: one per prefill (its sequence's first) and
        one per decode step, per sequence of the batch; None for a run without them."""
        counted = [p.count for p in self.phases if p.name in ("prefill", "decode")]
        return sum(counted) * (self.batch_size or 1) if counted else None


@dataclass(frozen=True)
class Carbon:
    """A per-1,000 energy as gCO2eq at a grid's intensity and a facility's PUE."""

    region: str
    name: str
    g_co2eq_per_kwh: float
    year: int | None
    source: str
    per_1000_g: float
    per_1000_low_g: float | None
    per_1000_high_g: float | None


@dataclass(frozen=True)
class Rollups:
    """What a reader derives from a run's results (``phprof.attribution.rollups``).
    Energies are the device's whole draw during the inferences (idle included,
    the time between them not); the PUE scales the carbon and parity only."""

    per_inference: Energy
    per_1000: Energy
    pue: float
    carbon: Carbon
    tokens: int | None = None
    per_token: Energy | None = None
    per_prefill: Energy | None = None
    per_decode_step: Energy | None = None
    per_image: Energy | None = None
    per_denoising_step: Energy | None = None
    training_kwh: float | None = None
    parity_inferences: float | None = None  # inferences that use as much as training

    @property
    def per_1000_wh(self) -> float:
        return joules_to_wh(self.per_1000.joules)

    @property
    def per_1000_kwh(self) -> float:
        return joules_to_kwh(self.per_1000.joules)


# ---- the mapping to the file's tables --------------------------------------------------------
_ROWS = {"layers": Layer, "groups": Group, "leaves": Leaf, "kernels": KernelEnergy, "components": ComponentEnergy,
         "stack_components": ComponentEnergy, "phases": PhaseEnergy}
_ENERGY_PARTS = ("j", "low_j", "high_j", "method", "detail", "bound")


def to_tables(results: Results, rollups: Rollups | None = None) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """(attributes, tables) to store: the scalars as JSON-able values, every list of
    rows as columns (an energy as six columns: value, interval, method, detail, bound)."""
    attrs = {"results_version": RESULTS_VERSION}
    tables = {}
    for f in fields(Results):
        value = getattr(results, f.name)
        if f.name in _ROWS:
            tables[f.name] = _columns(value, _ROWS[f.name])
        elif f.name == "per_inference":
            tables["inferences"] = _columns_of("energy", Energy, value)
        else:
            attrs[f.name] = _plain(value)
    if rollups is not None:
        attrs["rollups"] = _plain(rollups)
    return attrs, tables


def from_tables(attrs: dict, tables: dict[str, dict[str, np.ndarray]]) -> Results | None:
    """The inverse of :func:`to_tables`; None for results of another version (recompute them)."""
    if attrs.get("results_version") != RESULTS_VERSION:
        return None
    hints = typing.get_type_hints(Results)
    values = {}
    for f in fields(Results):
        if f.name in _ROWS:
            values[f.name] = _rows(tables.get(f.name, {}), _ROWS[f.name])
        elif f.name == "per_inference":
            values[f.name] = _values_of("energy", Energy, tables.get("inferences", {}))
        elif f.name in attrs:
            values[f.name] = _typed(attrs[f.name], hints[f.name])
    return Results(**values)


def _plain(v):
    """A value as JSON-able data: dataclasses as dicts, enums by name, non-finite floats None."""
    if isinstance(v, Enum):
        return v.name
    if hasattr(v, "__dataclass_fields__"):
        return {f.name: _plain(getattr(v, f.name)) for f in fields(v)}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _typed(v, hint):
    """The inverse of :func:`_plain` for a value of type ``hint``."""
    if v is None:
        return None
    hint = _unoptional(hint)
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return [_typed(x, item) for x in v]
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint[v]
    if hasattr(hint, "__dataclass_fields__"):
        sub = typing.get_type_hints(hint)
        return hint(**{k: _typed(x, sub[k]) for k, x in v.items()})
    return v


def _unoptional(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return args[0]
    return hint


def _columns(rows: list, cls) -> dict[str, np.ndarray]:
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        out.update(_columns_of(name, _unoptional(hint), [getattr(r, name) for r in rows]))
    return out


def _columns_of(name: str, kind, values: list) -> dict[str, np.ndarray]:
    """The column(s) of one field; an Energy (or None) spreads over six."""
    if kind is Energy:
        e = [x if x is not None else Energy(None, method=Method.NONE) for x in values]
        return {
            f"{name}_j": _floats([x.joules for x in e]), f"{name}_low_j": _floats([x.low_j for x in e]),
            f"{name}_high_j": _floats([x.high_j for x in e]),
            f"{name}_method": _strings(["" if x is None else x.method.name for x in values]),
            f"{name}_detail": _strings([x.detail for x in e]), f"{name}_bound": np.array([x.bound for x in e], bool),
        }
    if isinstance(kind, type) and issubclass(kind, Enum):
        return {name: _strings([x.name for x in values])}
    if kind is str:
        return {name: _strings(values)}
    if kind is bool:
        return {name: np.array(values, bool)}
    if kind is int:
        return {name: np.array(values, np.int64)}
    return {name: _floats(values)}


def _rows(columns: dict[str, np.ndarray], cls) -> list:
    hints = typing.get_type_hints(cls)
    values = {name: _values_of(name, _unoptional(hint), columns) for name, hint in hints.items()}
    n = len(next(iter(values.values()))) if values else 0
    return [cls(**{k: v[i] for k, v in values.items()}) for i in range(n)]


def _values_of(name: str, kind, columns: dict[str, np.ndarray]) -> list:
    if kind is Energy:
        methods = [str(m) for m in columns[f"{name}_method"]]
        parts = [columns[f"{name}_{p}"] for p in _ENERGY_PARTS]
        return [None if not m else Energy(_float(j), _float(lo), _float(hi), Method[m], str(d), bool(b))
                for m, j, lo, hi, _, d, b in zip(methods, *parts)]
    column = columns[name]
    if isinstance(kind, type) and issubclass(kind, Enum):
        return [kind[str(x)] for x in column]
    if kind is str:
        return [str(x) for x in column]
    if kind is bool:
        return [bool(x) for x in column]
    if kind is int:
        return [int(x) for x in column]
    return [_float(x) for x in column]


def _floats(values) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in values], np.float64)


def _strings(values) -> np.ndarray:
    return np.array([str(x) for x in values], dtype=object)


def _float(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None
