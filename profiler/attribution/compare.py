"""Comparing attributed runs: where two (or more) models' joules differ.

:func:`compare` takes runs (each a trace's results, ``phprof.store.results``,
the trace's metadata and its parameter count) and returns a
:class:`Comparison`: per run, the energy per inference of every (stack,
component) of the network, its share, per generated token and per parameter;
the phases side by side; the differences of every run from the first (B - A,
signed); and warnings that name what differs between the runs besides the
model (task, input shapes, device, sensor, method). ``phprof.render.compare``
turns it into text, a markdown table for an issue, JSON, or the comparison
page (with the differential flamegraph of ``phprof.render.frames.diff_tree``).

Everything is per inference, so runs of different lengths compare. Intervals
of sums are the awkward part (the attribution's bootstrap draws are not
stored): see :func:`_sum_figure`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Sequence

import numpy as np

from ..energy import Energy, Method
from ..store.results import Results
from .components import COMPONENTS

OUTSIDE_PHASES = "(outside phases)"

# row order: stacks as data flows through a model, components as in the taxonomy
STACK_ORDER = ("text_encoder", "encoder", "unet", "decoder", "vae", "")  # "": outside every stack, or one stack
COMPONENT_ORDER = COMPONENTS
PHASE_ORDER = ("encode_prompt", "encode", "prefill", "decode", "denoise", "vae_decode", "forward")
SHAPE_OPTIONS = ("input_shapes", "seq_len", "new_tokens", "batch_size", "steps", "dtype", "size")


# ---- input -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One attributed trace: its ``results``, ``meta`` the trace's metadata
    (``Trace.meta``), ``parameters`` the model's parameter count (the sum of its
    modules' own parameters: a weight tied between two modules counts twice)."""

    name: str
    results: Results
    meta: dict
    parameters: int | None = None

    @classmethod
    def from_trace(cls, trace, results: Results, name: str | None = None) -> Run:
        modules = trace.modules
        return cls(name or str(results.model or trace.meta.get("model")), results, dict(trace.meta),
                   int(np.sum(modules["parameters"])) if len(modules) else None)


# ---- output ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One run's figures in one row. Phase rows also have ``steps`` (per inference)
    and ``per_step``."""

    energy: Energy  # J per inference
    share: float | None  # of the run's inferences' own energy
    seconds: float | None  # per inference
    per_token: float | None  # J per generated token
    parameters: int | None  # own parameters of the row's modules
    per_parameter: float | None  # J per inference per parameter
    steps: float | None = None
    per_step: Energy | None = None


@dataclass(frozen=True)
class Delta:
    """A run's figures minus the first run's (B - A) in one row; a row a run lacks
    counts as 0 J there. [low_j, high_j] = [low_B - high_A, high_B - low_A]:
    conservative, the runs being independent measurements. ``relative`` is
    (B - A) / A (None where A is 0); ``share`` the difference of the shares."""

    joules: float
    low_j: float | None
    high_j: float | None
    relative: float | None
    share: float | None
    per_token: float | None
    per_step: float | None = None


@dataclass(frozen=True)
class Row:
    key: str  # "decoder self-attention", "mlp", "decode"...
    stack: str
    component: str  # the component, or the phase's name
    cells: tuple  # Cell | None per run (None: the run has no such modules or phase)
    deltas: tuple  # Delta | None per run; the first is None (each run against the first)


@dataclass(frozen=True)
class RunInfo:
    name: str
    model: str | None
    task: str | None
    device: str | None
    sensor: str | None
    method: Method | None
    interval: float | None
    inferences: int
    batch_size: int | None
    tokens_per_inference: float | None
    parameters: int | None
    energy: Energy  # the inferences' own energy, per inference
    per_token: Energy | None
    per_parameter: float | None
    static_j: float | None  # per inference: idle power x the inference's time
    seconds: float | None  # per inference
    options: dict = field(default_factory=dict)
    total_measured: bool = False  # the run's whole energy measured (a counter), else estimated
    # a run over several GPUs: each one's part of the inferences' own energy, per inference
    # ("gpu1 (cuda:1)" -> its estimate against its own sensor); {} for a run of one device
    devices: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison:
    runs: tuple  # RunInfo
    components: tuple  # Row per (stack, component)
    by_component: tuple  # Row per component, its stacks summed
    total: Row  # the inferences' own energy
    phases: tuple  # Row per phase kind, and what ran outside every phase
    warnings: tuple  # str
    notes: tuple  # str
    # the runs' own results, for views that draw them (the comparison page's flamegraph); not data
    results: tuple = field(default=(), repr=False, compare=False, metadata={"serialise": False})

    VIEW = "comparison"  # what phprof.render renders it as

    def to_dict(self) -> dict:
        """The comparison as JSON-able data: each energy as joules, range, method (its
        text) and bound; non-finite numbers as None."""
        return _plain(self)

    @classmethod
    def from_dict(cls, d: dict) -> Comparison:
        """The inverse of :meth:`to_dict` (and of ``json.loads(render_json(c))``)."""
        def fig(x):
            if x is None:
                return None
            method, detail = Method.parse(x["method"])
            return Energy(x["joules"], x["low_j"], x["high_j"], method, detail, x["bound"])

        def cell(x):
            if x is None:
                return None
            return Cell(**{**x, "energy": fig(x["energy"]), "per_step": fig(x.get("per_step"))})

        def row(x):
            return Row(x["key"], x["stack"], x["component"], tuple(cell(c) for c in x["cells"]),
                       tuple(None if y is None else Delta(**y) for y in x["deltas"]))

        runs = tuple(RunInfo(**{**r, "energy": fig(r["energy"]), "per_token": fig(r["per_token"]),
                                "method": None if r["method"] is None else Method.parse(r["method"])[0],
                                "devices": {k: fig(v) for k, v in (r.get("devices") or {}).items()}})
                     for r in d["runs"])
        return cls(runs, tuple(row(r) for r in d["components"]), tuple(row(r) for r in d["by_component"]),
                   row(d["total"]), tuple(row(r) for r in d["phases"]), tuple(d["warnings"]), tuple(d["notes"]))

    def row(self, key: str, table: str = "components") -> Row:
        """The row named ``key`` ("decoder mlp", "total", a phase...)."""
        if key == "total":
            return self.total
        for r in getattr(self, table):
            if r.key == key:
                return r
        raise KeyError(key)


# ---- the comparison ----------------------------------------------------------------------------
def compare(runs: Sequence[Run]) -> Comparison:
    """Every run's energy by (stack, component) and by phase, side by side, with
    each run's differences from the first (see the module's docstring)."""
    if len(runs) < 2:
        raise ValueError(f"a comparison needs at least two runs, got {len(runs)}")
    facts = [_Facts(r) for r in runs]
    keys = sorted({k for f in facts for k in f.rows}, key=lambda k: (_rank(STACK_ORDER, k[0]),
                                                                     _rank(COMPONENT_ORDER, k[1]), k))
    components = tuple(_row(_key(*k), k[0], k[1], [f.cell(k) for f in facts]) for k in keys)
    comps = sorted({k[1] for k in keys}, key=lambda c: (_rank(COMPONENT_ORDER, c), c))
    by_component = tuple(_row(c, "", c, [f.cell(c) for f in facts]) for c in comps)
    total = _row("total", "", "total", [f.total_cell() for f in facts])
    names = sorted({p for f in facts for p in f.phases} - {OUTSIDE_PHASES},
                   key=lambda p: (_rank(PHASE_ORDER, p), p))
    if any(OUTSIDE_PHASES in f.phases for f in facts):
        names.append(OUTSIDE_PHASES)
    phases = tuple(_row(p, "", p, [f.phases.get(p) for f in facts]) for p in names)
    level = {f.info.interval for f in facts if f.info.interval}
    pct = f"{level.pop():.0%}" if len(level) == 1 else "the attribution's"
    notes = (
        "Energies are the inferences' own (idle power included, the pauses between inferences not), per inference. "
        + _sources(facts) + _scaled(facts),
        f"Intervals: a row made of one layer, or of exactly the layers of a component the attribution resolved as "
        f"a whole, carries the attribution's {pct} bootstrap interval. Any other sum of layers carries the sum of "
        "its layers' lower and upper ends, narrowed by the run's total (the other layers cannot take less than "
        "their own lower ends): a conservative bound (marked †), wider than a "
        f"{pct} interval, because the bootstrap draws that would give the sum's own interval are not stored.",
        "Δ = a run minus the first run, per inference; its range is [low(B) - high(A), high(B) - low(A)], "
        "conservative. A row a run lacks counts as 0 J there.",
        "Parameters are each row's modules' own; a model's total is the sum over its modules, so a weight shared "
        "by two modules (tied embeddings and head) counts twice.",
    )
    return Comparison(tuple(f.info for f in facts), components, by_component, total, phases,
                      tuple(_warnings(runs, facts)), notes, tuple(r.results for r in runs))


def _scaled(facts: list[_Facts]) -> str:
    """Which runs' energies are their profiled split scaled to a measurement pass, for the notes."""
    scaled = [f"{f.info.name!r} (x {f.scale:.3f})" for f in facts if f.scale is not None]
    if not scaled:
        return ""
    who = "every run" if len(scaled) == len(facts) else ", ".join(scaled)
    return (f" In {who}, the energies are the profiled split scaled to the run's measurement pass (the profiler off)"
            + (f": {', '.join(scaled)}" if len(scaled) == len(facts) else "") + ", as `phprof report` gives them.")


def _sources(facts: list[_Facts]) -> str:
    """Which figures are measured and which estimated, for the notes."""
    said = (
        (True, "its whole energy is measured (the device's energy counter) and the inferences' own estimated "
               "from it (the run's energy less the estimated pauses between inferences)"),
        (False, "every figure is an estimate (the sensor model's; its energy was not measured)"),
    )
    parts = []
    for flag, text in said:
        names = [f.info.name for f in facts if f.info.total_measured is flag]
        if names:
            who = "every run" if len(names) == len(facts) else ", ".join(repr(x) for x in names)
            parts.append(f"in {who}, {text}")
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + ". Per component and per phase they are estimates of the attribution " \
        "(`phprof report`)."


class _Facts:
    """One run's per-inference figures, ready to put in rows."""

    def __init__(self, run: Run):
        r = run.results
        self.n = n = int(r.inferences)
        # energies per inference, scaled to the measurement pass where there is one (as the report's)
        self.scale = r.split_scale
        e = 1 / n
        layers = [x for x in r.layers if not x.role.between_inferences]
        self.labels = [x.label for x in layers]
        self.layers = [r.scaled_split(x.energy, e) for x in layers]
        self.energy = np.array([e.joules for e in self.layers])
        self.seconds = np.array([x.seconds for x in layers]) / n
        self.low = np.array([np.nan if e.low_j is None else e.low_j for e in self.layers])
        self.high = np.array([np.nan if e.high_j is None else e.high_j for e in self.layers])
        self.params = np.asarray([x.parameters for x in layers], np.int64)
        self.rows: dict[tuple[str, str], list[int]] = {}
        for i, x in enumerate(layers):
            self.rows.setdefault((x.stack, x.component), []).append(i)
        # per component, its stacks summed; and the one (stack, component) it is, where it is in one stack
        self.by_component: dict[str, list[int]] = {}
        self.only_pair: dict[str, tuple[str, str] | None] = {}
        for key, idx in self.rows.items():
            self.by_component.setdefault(key[1], []).extend(idx)
            self.only_pair[key[1]] = key if key[1] not in self.only_pair else None
        self.by_component = {c: sorted(idx) for c, idx in self.by_component.items()}
        # the attribution's own per-component intervals (bootstrap over whole resolved groups)
        self.resolved = {}
        for c in r.components:
            if c.energy.has_range:
                self.resolved[c.component] = r.scaled_split(c.energy, e)
        for c in r.stack_components:
            if c.energy.has_range:
                self.resolved[(c.stack, c.component)] = r.scaled_split(c.energy, e)
        self.total = r.scaled_split(r.inferences_energy, e)
        # what bounds any sum of layers: the inferences' own interval, else (above only) the whole
        # run's measured energy, which holds the inferences' and the pauses between them
        self.cap_low = self.total.low_j
        self.cap_high = self.total.high_j if self.total.high_j is not None else r.scaled_split(r.total, e).high_j
        tokens = r.generated_tokens
        self.tokens = tokens / n if tokens else None
        opts = run.meta.get("options") or {}
        sensor = run.meta.get("sensor") or {}
        self.info = RunInfo(
            name=run.name, model=r.model, task=r.task, device=r.device_name or run.meta.get("device_name") or r.device,
            sensor=sensor.get("source") or (r.sensor.source if r.sensor else None), method=r.method,
            interval=r.interval, inferences=n, batch_size=r.batch_size or opts.get("batch_size"),
            tokens_per_inference=self.tokens, parameters=run.parameters, energy=self.total,
            per_token=None if self.tokens is None else self.total.scaled(1 / self.tokens),
            per_parameter=self.total.joules / run.parameters if run.parameters else None,
            static_j=_mul(r.static_j, (r.split_scale or 1.0) * e), seconds=r.inference_s / n,
            options={k: opts.get(k) for k in SHAPE_OPTIONS if k in opts}, total_measured=r.total_measured,
            devices={(f"{d.device} ({d.cuda})" if d.cuda else d.device): r.scaled_split(d.inferences_energy, e)
                     for d in r.devices if d.inferences_energy is not None} if r.several_devices else {})
        self.phases = {}
        in_phases = 0.0
        for p in r.phases:
            fig = r.scaled_split(p.energy, e)
            in_phases += fig.joules
            self.phases[p.name] = Cell(fig, fig.joules / self.total.joules if self.total.joules else None, None,
                                       self._per_token(fig.joules), None, None, steps=p.count / n,
                                       per_step=fig.scaled(n / p.count) if p.count else None)
        if self.phases:
            rest = self.total.joules - in_phases
            self.phases[OUTSIDE_PHASES] = Cell(
                Energy(rest, method=Method.PHASES_REST),
                rest / self.total.joules if self.total.joules else None, None, self._per_token(rest), None, None)

    def _per_token(self, joules: float) -> float | None:
        return None if not self.tokens else joules / self.tokens

    def cell(self, key: tuple[str, str] | str) -> Cell | None:
        """The row of ``key``: a (stack, component), or a component (its stacks summed)."""
        idx = self.rows.get(key) if isinstance(key, tuple) else self.by_component.get(key)
        if not idx:
            return None
        fig = _sum_figure(self, idx, key)
        params = int(self.params[idx].sum())
        return Cell(fig, fig.joules / self.total.joules if self.total.joules else None,
                    float(self.seconds[idx].sum()), self._per_token(fig.joules), params,
                    fig.joules / params if params else None)

    def total_cell(self) -> Cell:
        p = self.info.parameters
        return Cell(self.total, 1.0, self.info.seconds, self._per_token(self.total.joules), p,
                    self.total.joules / p if p else None)


def _sum_figure(f: _Facts, idx: list[int], key: tuple[str, str] | str) -> Energy:
    """The energy of layers ``idx`` (per inference), the layers of row ``key`` (a
    (stack, component), or a component), and its range.

    The attribution's bootstrap gives each layer an interval, but the interval of
    a sum needs the draws themselves (the layers' errors are correlated: the
    conservation step makes them add up to the measured total), and they are not
    stored. So: one layer keeps its own interval; layers that are exactly a
    component the attribution resolved as a whole keep that component's
    bootstrap interval (per component, or per stack and component); any other
    sum gets the sum of the layers' ends, narrowed by the total (the rest of the
    layers cannot take less than their lower ends, nor more than their upper
    ends): a conservative bound."""
    energy = float(f.energy[idx].sum())
    if len(idx) == 1:
        return f.layers[idx[0]]
    if isinstance(key, tuple):  # a (stack, component); its component's interval where it is the whole component
        pair, comp = key, key[1]
        whole = len(f.by_component[comp]) == len(idx)
    else:  # a component, stacks summed: one (stack, component)'s interval where it is in one stack
        pair, comp, whole = f.only_pair[key], key, True
    for k in (pair, comp if whole else None):
        if k is not None and k in f.resolved:
            c = f.resolved[k]
            return Energy(energy, c.low_j, c.high_j, Method.COMPONENT_BOOTSTRAP, c.method_text)
    lows, highs = f.low[idx], f.high[idx]
    if not (np.isfinite(lows).all() and np.isfinite(highs).all()):
        return Energy(energy, method=Method.LAYERS_WITHOUT_INTERVAL)
    low, high = float(lows.sum()), float(highs.sum())
    rest = np.ones(len(f.energy), bool)
    rest[idx] = False
    r_low, r_high = f.low[rest], f.high[rest]
    if np.isfinite(r_low).all() and f.cap_high is not None:
        high = min(high, f.cap_high - float(r_low.sum()))
    if np.isfinite(r_high).all() and f.cap_low is not None:
        low = max(low, f.cap_low - float(r_high.sum()))
    return Energy(energy, min(low, energy), max(high, energy), Method.LAYERS_BOUNDS, bound=True)


def _row(key: str, stack: str, component: str, cells: list[Cell | None]) -> Row:
    first = cells[0]
    deltas = [None] + [_delta(c, first) for c in cells[1:]]
    return Row(key, stack, component, tuple(cells), tuple(deltas))


def _delta(b: Cell | None, a: Cell | None) -> Delta | None:
    if a is None and b is None:
        return None
    zero = Energy(0.0, 0.0, 0.0)
    ea, eb = (a.energy if a else zero), (b.energy if b else zero)
    low = None if eb.low_j is None or ea.high_j is None else eb.low_j - ea.high_j
    high = None if eb.high_j is None or ea.low_j is None else eb.high_j - ea.low_j
    sa, sb = (a.share if a else 0.0), (b.share if b else 0.0)
    ta, tb = (a.per_token if a else None), (b.per_token if b else None)
    step = None
    if a is not None and b is not None and a.per_step is not None and b.per_step is not None:
        step = b.per_step.joules - a.per_step.joules
    return Delta(eb.joules - ea.joules, low, high, (eb.joules - ea.joules) / ea.joules if ea.joules else None,
                 None if sa is None or sb is None else sb - sa,
                 None if ta is None or tb is None else tb - ta, step)


def _warnings(runs: Sequence[Run], facts: list[_Facts]) -> list[str]:
    """What differs between each run and the first, besides the model."""
    out = []
    a, fa = runs[0], facts[0]
    for b, fb in zip(runs[1:], facts[1:]):
        ia, ib = fa.info, fb.info
        pair = f"{a.name!r} and {b.name!r}"
        if ia.task != ib.task:
            out.append(f"task differs: {a.name!r} ran {ia.task!r}, {b.name!r} ran {ib.task!r}: the inputs and "
                       "the work of one inference are not the same")
        oa, ob = (a.meta.get("options") or {}), (b.meta.get("options") or {})
        for k in SHAPE_OPTIONS:
            if oa.get(k) != ob.get(k):
                what = "input shapes differ" if k == "input_shapes" else f"{k} differs"
                out.append(f"{what}: {a.name!r} {_option(k, oa.get(k))}; {b.name!r} {_option(k, ob.get(k))}")
        if ia.device != ib.device or oa.get("device") != ob.get("device"):
            out.append(f"device differs: {a.name!r} ran on {ia.device} ({oa.get('device')}), {b.name!r} on "
                       f"{ib.device} ({ob.get('device')})")
        sa, sb = _sensor(a), _sensor(b)
        pa, pb = (r.results.sensor.period_s if r.results.sensor is not None else None for r in (a, b))
        # two fits of one sensor's period differ by a few tenths of a ms (a poll's jitter): not a different sensor
        same_period = pa == pb or (pa and pb and abs(pa - pb) <= PERIOD_TOLERANCE * max(pa, pb))
        if sa != sb or not same_period:
            out.append(f"sensor differs: {a.name!r} {sa}{_period(pa)}; {b.name!r} {sb}{_period(pb)}")
        if ia.method != ib.method:
            ma, mb = (None if m is None else m.text() for m in (ia.method, ib.method))
            out.append(f"attribution method differs between {pair}: {ma!r} vs {mb!r}" +
                       ("; a time-proportional split follows each layer's time, not its power"
                        if any(m is not None and m.by_time for m in (ia.method, ib.method)) else ""))
        if ia.interval != ib.interval:
            out.append(f"interval level differs between {pair}: {ia.interval} vs {ib.interval}")
    return out


def _sensor(run: Run) -> str:
    s = run.meta.get("sensor") or {}
    model = run.results.sensor
    devices = ", ".join(f"{k}: {v}" for k, v in (s.get("devices") or {}).items())
    parts = [f"source {s.get('source') or (model.source if model else None)!r}"]
    if devices:
        parts.append(devices)
    return ", ".join(parts)


PERIOD_TOLERANCE = 0.05  # fitted update periods this close (relative) are one sensor's


def _period(period_s: float | None) -> str:
    return f", update {period_s * 1e3:.0f} ms" if period_s else ""


def _option(key: str, v) -> str:
    if key == "input_shapes" and isinstance(v, dict):
        return ", ".join(f"{k} {'x'.join(str(x) for x in s) if isinstance(s, (list, tuple)) else s}"
                         for k, s in v.items()) or "none"
    return "unset" if v is None else str(v)


# ---- helpers -----------------------------------------------------------------------------------
def _mul(x, factor: float) -> float | None:
    return None if x is None else x * factor


def _plain(v):
    """JSON-able data of the comparison's dataclasses: an energy as joules, range,
    method text and bound; a method as its text; non-finite floats None; fields
    marked not to serialise left out."""
    if isinstance(v, Energy):
        return {"joules": v.joules, "low_j": v.low_j, "high_j": v.high_j, "method": v.method_text, "bound": v.bound}
    if isinstance(v, Method):
        return v.text()
    if hasattr(v, "__dataclass_fields__"):
        return {f.name: _plain(getattr(v, f.name)) for f in fields(v) if f.metadata.get("serialise", True)}
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _rank(order: tuple, x: str) -> int:
    return order.index(x) if x in order else len(order)


def _key(stack: str, component: str) -> str:
    return f"{stack} {component}" if stack else component


