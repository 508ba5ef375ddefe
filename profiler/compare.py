"""Comparing attributed runs: where two (or more) models' joules differ.

:func:`compare` takes runs (each a trace's attribution results: the summary and
tables of ``phprof.attribution.results``, the trace's metadata and its parameter
count) and returns a :class:`Comparison`: per run, the energy per inference of
every (stack, component) of the network, its share, per generated token and per
parameter; the phases side by side; the differences of every run from the first
(B - A, signed); and warnings that name what differs between the runs besides
the model (task, input shapes, device, sensor, method). The renderers below
turn it into text, a markdown table for an issue, JSON, or the comparison page
(with the differential flamegraph of ``phprof.render.frames.diff_tree``).

Everything is per inference, so runs of different lengths compare. Intervals
of sums are the awkward part (the attribution's bootstrap draws are not
stored): see :func:`_sum_figure`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .attribution.estimate import IDLE  # the layers table's last row: idle between inferences, not part of them
from .attribution.results import finite, generated_tokens, plain

OUTSIDE_PHASES = "(outside phases)"

# row order: stacks as data flows through a model, components as in the taxonomy
STACK_ORDER = ("text_encoder", "encoder", "unet", "decoder", "vae", "")  # "": outside every stack, or one stack
COMPONENT_ORDER = ("embeddings", "embedding", "self-attention", "cross-attention", "attention", "mlp", "norm",
                   "head", "convolution", "other")
PHASE_ORDER = ("encode_prompt", "encode", "prefill", "decode", "denoise", "vae_decode", "forward")
SHAPE_OPTIONS = ("input_shapes", "seq_len", "new_tokens", "batch_size", "steps", "dtype", "size")


# ---- input -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One attributed trace: ``summary`` and ``tables`` as ``to_results`` makes them,
    ``meta`` the trace's metadata (``Trace.meta``), ``parameters`` the model's
    parameter count (the sum of its modules' own parameters: a weight tied between
    two modules counts twice). ``module_parameters`` (own parameters by module path)
    is only needed for tables without a ``parameters`` column."""

    name: str
    summary: dict
    tables: dict
    meta: dict
    parameters: int | None = None
    module_parameters: Mapping[str, int] | None = None

    @classmethod
    def from_trace(cls, trace, summary: dict, tables: dict, name: str | None = None) -> Run:
        modules = trace.modules
        params = {trace.strings[int(m["path"])]: int(m["parameters"]) for m in modules}
        return cls(name or str(summary.get("model") or trace.meta.get("model")), summary, tables, dict(trace.meta),
                   int(np.sum(modules["parameters"])) if len(modules) else None, params)


# ---- output ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Figure:
    """An energy (J, per inference unless said otherwise) and its range. ``bound``:
    [low_j, high_j] is a conservative bound (wider than a confidence interval),
    not an interval at the attribution's level."""

    joules: float
    low_j: float | None = None
    high_j: float | None = None
    method: str = ""
    bound: bool = False

    def scaled(self, factor: float) -> Figure:
        return Figure(self.joules * factor, _mul(self.low_j, factor), _mul(self.high_j, factor), self.method,
                      self.bound)


@dataclass(frozen=True)
class Cell:
    """One run's figures in one row. Phase rows also have ``steps`` (per inference)
    and ``per_step``."""

    energy: Figure  # J per inference
    share: float | None  # of the run's inferences' own energy
    seconds: float | None  # per inference
    per_token: float | None  # J per generated token
    parameters: int | None  # own parameters of the row's modules
    per_parameter: float | None  # J per inference per parameter
    steps: float | None = None
    per_step: Figure | None = None


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
    method: str | None
    interval: float | None
    inferences: int
    batch_size: int | None
    tokens_per_inference: float | None
    parameters: int | None
    energy: Figure  # the inferences' own energy, per inference
    per_token: Figure | None
    per_parameter: float | None
    static_j: float | None  # per inference: idle power x the inference's time
    seconds: float | None  # per inference
    options: dict = field(default_factory=dict)
    total_measured: bool | None = None  # the run's whole energy measured (a counter), else estimated


@dataclass(frozen=True)
class Comparison:
    runs: tuple  # RunInfo
    components: tuple  # Row per (stack, component)
    by_component: tuple  # Row per component, its stacks summed
    total: Row  # the inferences' own energy
    phases: tuple  # Row per phase kind, and what ran outside every phase
    warnings: tuple  # str
    notes: tuple  # str

    def to_dict(self) -> dict:
        return plain(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> Comparison:
        """The inverse of :meth:`to_dict` (and of ``json.loads(render_json(c))``)."""
        def fig(x):
            return None if x is None else Figure(**x)

        def cell(x):
            if x is None:
                return None
            return Cell(**{**x, "energy": fig(x["energy"]), "per_step": fig(x.get("per_step"))})

        def row(x):
            return Row(x["key"], x["stack"], x["component"], tuple(cell(c) for c in x["cells"]),
                       tuple(None if y is None else Delta(**y) for y in x["deltas"]))

        runs = tuple(RunInfo(**{**r, "energy": fig(r["energy"]), "per_token": fig(r["per_token"])})
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
        + _sources(facts),
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
                      tuple(_warnings(runs, facts)), notes)


def _sources(facts: list[_Facts]) -> str:
    """Which figures are measured and which estimated, for the notes."""
    said = (
        (True, "its whole energy is measured (the device's energy counter) and the inferences' own estimated "
               "from it (the run's energy less the estimated pauses between inferences)"),
        (False, "every figure is an estimate (the sensor model's; its energy was not measured)"),
        (None, "whether its energy was measured is not recorded"),
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
        from .attribution.components import component_of

        s, layers = run.summary, run.tables["layers"]
        self.n = n = int(s["inferences"])
        labels = [str(x) for x in layers["label"]]
        keep = [i for i, lab in enumerate(labels) if lab != IDLE]
        self.labels = [labels[i] for i in keep]
        col = lambda name: np.asarray([layers[name][i] for i in keep], float)  # noqa: E731
        self.energy, self.seconds = col("energy_j") / n, col("seconds") / n
        self.low, self.high = col("low_j") / n, col("high_j") / n
        self.methods = [str(layers["method"][i]) for i in keep]
        comp = ([str(layers["component"][i]) for i in keep] if "component" in layers
                else [component_of(lab) for lab in self.labels])
        stack = [str(layers["stack"][i]) for i in keep] if "stack" in layers else [""] * len(keep)
        if "parameters" in layers:
            self.params = np.asarray([int(layers["parameters"][i]) for i in keep], np.int64)
        elif run.module_parameters is not None:
            self.params = np.asarray([int(run.module_parameters.get(lab, 0)) for lab in self.labels], np.int64)
        else:
            self.params = None
        self.rows: dict[tuple[str, str], list[int]] = {}
        for i, key in enumerate(zip(stack, comp)):
            self.rows.setdefault(key, []).append(i)
        # per component, its stacks summed; and the one (stack, component) it is, where it is in one stack
        self.by_component: dict[str, list[int]] = {}
        self.only_pair: dict[str, tuple[str, str] | None] = {}
        for key, idx in self.rows.items():
            self.by_component.setdefault(key[1], []).extend(idx)
            self.only_pair[key[1]] = key if key[1] not in self.only_pair else None
        self.by_component = {c: sorted(idx) for c, idx in self.by_component.items()}
        # the attribution's own per-component intervals (bootstrap over whole resolved groups)
        self.resolved = {}
        ct = run.tables.get("components") or {}
        for j, name in enumerate(ct.get("component", [])):
            lo, hi = finite(ct["low_j"][j]), finite(ct["high_j"][j])
            if lo is not None and hi is not None:
                self.resolved[str(name)] = (lo / n, hi / n, str(ct["method"][j]))
        st = run.tables.get("stack_components") or {}
        for j, name in enumerate(st.get("component", [])):
            lo, hi = finite(st["low_j"][j]), finite(st["high_j"][j])
            if lo is not None and hi is not None:
                self.resolved[(str(st["stack"][j]), str(name))] = (lo / n, hi / n, str(st["method"][j]))
        inf = s["inferences_energy"]
        self.total = Figure(inf["joules"] / n, _mul(inf.get("low_j"), 1 / n), _mul(inf.get("high_j"), 1 / n),
                            inf.get("method") or s.get("method") or "")
        # what bounds any sum of layers: the inferences' own interval, else (above only) the whole
        # run's measured energy, which holds the inferences' and the pauses between them
        self.cap_low = self.total.low_j
        self.cap_high = self.total.high_j if self.total.high_j is not None else \
            _mul((s.get("total") or {}).get("high_j"), 1 / n)
        tokens = generated_tokens(s)
        self.tokens = tokens / n if tokens else None
        opts = run.meta.get("options") or {}
        sensor = run.meta.get("sensor") or {}
        device = s.get("device_name") or run.meta.get("device_name") or s.get("device")
        self.info = RunInfo(
            name=run.name, model=s.get("model"), task=s.get("task"), device=device,
            sensor=sensor.get("source") or (s.get("sensor") or {}).get("source"), method=s.get("method"),
            interval=s.get("interval"), inferences=n, batch_size=s.get("batch_size") or opts.get("batch_size"),
            tokens_per_inference=self.tokens, parameters=run.parameters, energy=self.total,
            per_token=None if self.tokens is None else self.total.scaled(1 / self.tokens),
            per_parameter=self.total.joules / run.parameters if run.parameters else None,
            static_j=_mul(s.get("static_j"), 1 / n), seconds=_mul(s.get("inference_s"), 1 / n),
            options={k: opts.get(k) for k in SHAPE_OPTIONS if k in opts},
            total_measured=None if s.get("total_measured") is None else bool(s["total_measured"]))
        self.phases = {}
        in_phases = 0.0
        for name, p in (s.get("phases") or {}).items():
            fig = Figure(p["joules"] / n, _mul(p.get("low_j"), 1 / n), _mul(p.get("high_j"), 1 / n),
                         p.get("method") or "")
            count = p.get("count") or 0
            in_phases += fig.joules
            self.phases[name] = Cell(fig, fig.joules / self.total.joules if self.total.joules else None, None,
                                     self._per_token(fig.joules), None, None, steps=count / n,
                                     per_step=fig.scaled(n / count) if count else None)
        if self.phases:
            rest = self.total.joules - in_phases
            self.phases[OUTSIDE_PHASES] = Cell(
                Figure(rest, method="the inferences' energy minus their phases'"),
                rest / self.total.joules if self.total.joules else None, None, self._per_token(rest), None, None)

    def _per_token(self, joules: float) -> float | None:
        return None if not self.tokens else joules / self.tokens

    def cell(self, key: tuple[str, str] | str) -> Cell | None:
        """The row of ``key``: a (stack, component), or a component (its stacks summed)."""
        idx = self.rows.get(key) if isinstance(key, tuple) else self.by_component.get(key)
        if not idx:
            return None
        fig = _sum_figure(self, idx, key)
        params = None if self.params is None else int(self.params[idx].sum())
        return Cell(fig, fig.joules / self.total.joules if self.total.joules else None,
                    float(self.seconds[idx].sum()), self._per_token(fig.joules), params,
                    fig.joules / params if params else None)

    def total_cell(self) -> Cell:
        p = self.info.parameters
        return Cell(self.total, 1.0, self.info.seconds, self._per_token(self.total.joules), p,
                    self.total.joules / p if p else None)


def _sum_figure(f: _Facts, idx: list[int], key: tuple[str, str] | str) -> Figure:
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
        i = idx[0]
        method = f.methods[i]
        return Figure(energy, finite(f.low[i]), finite(f.high[i]), method, method.startswith("time-proportional"))
    if isinstance(key, tuple):  # a (stack, component); its component's interval where it is the whole component
        pair, comp = key, key[1]
        whole = len(f.by_component[comp]) == len(idx)
    else:  # a component, stacks summed: one (stack, component)'s interval where it is in one stack
        pair, comp, whole = f.only_pair[key], key, True
    for k in (pair, comp if whole else None):
        if k is not None and k in f.resolved:
            lo, hi, how = f.resolved[k]
            return Figure(energy, lo, hi, f"{how} (bootstrap of the component's sum)", False)
    lows, highs = f.low[idx], f.high[idx]
    if not (np.isfinite(lows).all() and np.isfinite(highs).all()):
        return Figure(energy, None, None, "sum of its layers (some without an interval)", False)
    low, high = float(lows.sum()), float(highs.sum())
    rest = np.ones(len(f.energy), bool)
    rest[idx] = False
    r_low, r_high = f.low[rest], f.high[rest]
    if np.isfinite(r_low).all() and f.cap_high is not None:
        high = min(high, f.cap_high - float(r_low.sum()))
    if np.isfinite(r_high).all() and f.cap_low is not None:
        low = max(low, f.cap_low - float(r_high.sum()))
    return Figure(energy, min(low, energy), max(high, energy), "sum of its layers' bounds (conservative)", True)


def _row(key: str, stack: str, component: str, cells: list[Cell | None]) -> Row:
    first = cells[0]
    deltas = [None] + [_delta(c, first) for c in cells[1:]]
    return Row(key, stack, component, tuple(cells), tuple(deltas))


def _delta(b: Cell | None, a: Cell | None) -> Delta | None:
    if a is None and b is None:
        return None
    zero = Figure(0.0, 0.0, 0.0)
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
        if sa != sb:
            out.append(f"sensor differs: {a.name!r} {sa}; {b.name!r} {sb}")
        if ia.method != ib.method:
            out.append(f"attribution method differs between {pair}: {ia.method!r} vs {ib.method!r}" +
                       ("; a time-proportional split follows each layer's time, not its power"
                        if "time-proportional" in f"{ia.method}{ib.method}" else ""))
        if ia.interval != ib.interval:
            out.append(f"interval level differs between {pair}: {ia.interval} vs {ib.interval}")
    return out


def _sensor(run: Run) -> str:
    s = run.meta.get("sensor") or {}
    model = run.summary.get("sensor") or {}
    devices = ", ".join(f"{k}: {v}" for k, v in (s.get("devices") or {}).items())
    fields_ = [f"source {s.get('source') or model.get('source')!r}"]
    if devices:
        fields_.append(devices)
    if model.get("period_s"):
        fields_.append(f"update {model['period_s'] * 1e3:.0f} ms")
    return ", ".join(fields_)


def _option(key: str, v) -> str:
    if key == "input_shapes" and isinstance(v, dict):
        return ", ".join(f"{k} {'x'.join(str(x) for x in s) if isinstance(s, (list, tuple)) else s}"
                         for k, s in v.items()) or "none"
    return "unset" if v is None else str(v)


# ---- helpers -----------------------------------------------------------------------------------
def _mul(x, factor: float) -> float | None:
    x = finite(x)
    return None if x is None else x * factor


def _rank(order: tuple, x: str) -> int:
    return order.index(x) if x in order else len(order)


def _key(stack: str, component: str) -> str:
    return f"{stack} {component}" if stack else component


# ---- rendering ---------------------------------------------------------------------------------
def _j(x: float | None, signed: bool = False) -> str:
    from .report import _j as j

    if x is None:
        return "-"
    s = j(x)
    return ("+" + s if x > 0 else s) if signed else s


def _range(lo, hi, bound: bool = False, signed: bool = False) -> str:
    if lo is None or hi is None:
        return ""
    return f" [{_j(lo, signed)}, {_j(hi, signed)}]" + ("†" if bound else "")


def _fig(f: Figure | None) -> str:
    if f is None:
        return "-"
    return _j(f.joules) + _range(f.low_j, f.high_j, f.bound)


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.1%}" if signed else f"{x:.1%}"


def _delta_text(d: Delta | None, with_range: bool = True) -> str:
    if d is None:
        return "-"
    rel = "" if d.relative is None else f" ({d.relative:+.0%})"
    return _j(d.joules, True) + rel + (_range(d.low_j, d.high_j, signed=True) if with_range else "")


def _per_param(x: float | None) -> str:
    """J per parameter (per inference): small numbers, down to pJ."""
    if x is None:
        return "-"
    for factor, unit in ((1, "J"), (1e-3, "mJ"), (1e-6, "µJ"), (1e-9, "nJ")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {unit}"
    return f"{x / 1e-12:.3g} pJ"


def _count(x: int | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1e6:.3g} M" if x >= 1e5 else f"{x:,}"


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _letter(i: int) -> str:
    return LETTERS[i] if i < len(LETTERS) else f"R{i + 1}"


def key_line(c: Comparison) -> str:
    """Which letter is which run: "A = gpt2 (text-generation), B = ..."."""
    return ", ".join(f"{_letter(i)} = {r.name} ({r.task or 'no task'})" for i, r in enumerate(c.runs))


def headline(c: Comparison) -> list[str]:
    """One sentence per run against the first: the total, per token, and where most
    of the difference is."""
    a = c.runs[0]
    out = []
    for i, r in enumerate(c.runs[1:], 1):
        d = c.total.deltas[i]
        if d is None or d.joules == 0:
            how = "the same energy per inference as"
        else:
            rel = "" if d.relative is None else f" ({abs(d.relative):.0%})"
            how = f"{_j(abs(d.joules))}{rel} {'more' if d.joules > 0 else 'less'} energy per inference than"
        text = f"{r.name} uses {how} {a.name} ({_j(r.energy.joules)} against {_j(a.energy.joules)}"
        if d is not None and _delta_class(d) == "unsure":
            text += f"; the difference's range{_range(d.low_j, d.high_j, signed=True)} includes 0"
        text += ")"
        if r.per_token is not None and a.per_token is not None:
            text += f"; per generated token {_j(r.per_token.joules)} against {_j(a.per_token.joules)}"
        big = sorted((row for row in c.components if row.deltas[i] is not None and row.deltas[i].joules),
                     key=lambda row: -abs(row.deltas[i].joules))[:3]
        if big:
            text += ". Largest differences: " + ", ".join(f"{row.key} {_j(row.deltas[i].joules, True)}" for row in big)
        out.append(text + ".")
    return out


def tables(c: Comparison) -> list[tuple[str, list[str], list[list[str]]]]:
    """The comparison as (title, header, rows) tables of strings: what the text,
    markdown and HTML renderers lay out. Runs are columns named by letter
    (:func:`key_line`); the first column of a total row is "**total**"."""
    return [(title, head, [[_text(x) for x in r] for r in rows]) for title, head, rows in _tables(c)]


def _text(x) -> str:
    return x if isinstance(x, str) else x[0]


def _dcell(d: Delta | None, with_range: bool = True) -> tuple[str, str]:
    """A Δ cell: its text and its colour class (:func:`_delta_class`; none where the
    cell shows no range)."""
    return _delta_text(d, with_range), (_delta_class(d) if with_range else "")


def _tables(c: Comparison) -> list[tuple[str, list[str], list[list]]]:
    """:func:`tables` with each energy Δ cell as (text, colour class)."""
    n = len(c.runs)
    L = [_letter(i) for i in range(n)]
    others = list(range(1, n))
    dname = [f"Δ {L[i]} - A" for i in others]
    blank = [""] * len(others)
    out = []

    head = [""] + [f"{L[i]}: {r.name}" for i, r in enumerate(c.runs)] + dname
    rows = [
        ["task"] + [r.task or "-" for r in c.runs] + blank,
        ["device"] + [r.device or "-" for r in c.runs] + blank,
        ["inferences"] + [f"{r.inferences:,}" for r in c.runs] + blank,
        ["energy / inference"] + [_fig(r.energy) for r in c.runs] + [_dcell(c.total.deltas[i]) for i in others],
        ["static (idle) / inference"] + [_j(r.static_j) for r in c.runs] + blank,
        ["time / inference"] + [_secs(r.seconds) for r in c.runs] + blank,
        ["tokens / inference"] + [_num(r.tokens_per_inference) for r in c.runs] + blank,
        ["energy / token"] + [_fig(r.per_token) for r in c.runs] +
        [_j(c.total.deltas[i].per_token, True) if c.total.deltas[i] else "-" for i in others],
        ["parameters"] + [_count(r.parameters) for r in c.runs] + blank,
        ["energy / parameter"] + [_per_param(r.per_parameter) for r in c.runs] + blank,
        ["attribution"] + [(r.method or "-").split(" (")[0] for r in c.runs] + blank,
    ]
    out.append(("Runs, per inference", head, rows))

    def component_rows(rows_in, total=True):
        rows = []
        for r in list(rows_in) + ([c.total] if total else []):
            rows.append(["**total**" if r is c.total else r.key] + [_fig(x.energy) if x else "-" for x in r.cells] +
                        [_dcell(r.deltas[i]) for i in others] + [_pct(x.share) if x else "-" for x in r.cells])
        return rows

    head = ["component"] + L + dname + [f"share {x}" for x in L]
    out.append(("Energy by component, J per inference", head, component_rows(c.components)))
    if len(c.by_component) < len(c.components):
        out.append(("By component, stacks summed, J per inference", head,
                    component_rows(c.by_component, total=False)))

    head = (["component"] + [f"{x} / token" for x in L] + [f"{d} / token" for d in dname] +
            [f"{x} / parameter (parameters)" for x in L])
    rows = []
    for r in list(c.components) + [c.total]:
        rows.append(["**total**" if r is c.total else r.key] +
                    [_j(x.per_token) if x else "-" for x in r.cells] +
                    [_j(r.deltas[i].per_token, True) if r.deltas[i] else "-" for i in others] +
                    [f"{_per_param(x.per_parameter)} ({_count(x.parameters)})" if x else "-" for x in r.cells])
    out.append(("Per generated token and per parameter, J", head, rows))

    if c.phases:
        head = (["phase"] + L + [f"{x} steps x J / step" for x in L] + dname + [f"{d} / step" for d in dname])
        rows = []
        for r in c.phases:
            rows.append([r.key] + [_fig(x.energy) if x else "-" for x in r.cells] +
                        [(f"{_num(x.steps)} x {_j(x.per_step.joules)}" if x and x.per_step else "-")
                         for x in r.cells] +
                        [_dcell(r.deltas[i], with_range=False) for i in others] +
                        [_j(r.deltas[i].per_step, True) if r.deltas[i] and r.deltas[i].per_step is not None else "-"
                         for i in others])
        out.append(("Phases, J per inference and per step", head, rows))
    return out


def _secs(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1e3:.3g} ms" if x < 1 else f"{x:.3g} s"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def render_text(c: Comparison, warnings: bool = True) -> str:
    """Aligned tables for a terminal; ``warnings=False`` leaves the warnings out
    (the command prints them on stderr)."""
    out = headline(c) + [key_line(c)]
    for w in c.warnings if warnings else ():
        out.append(f"warning: {w}")
    for title, head, rows in tables(c):
        out += ["", f"{title}:"] if out else [f"{title}:"]
        plain = [[x.replace("**", "") for x in r] for r in rows]
        widths = [max(len(x) for x in col) for col in zip(head, *plain)]
        out.append("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths))))
        for r in plain:
            out.append("  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths))))
    out.append("")
    out += [f"note: {n}" for n in c.notes]
    return "\n".join(out) + "\n"


def render_markdown(c: Comparison) -> str:
    """Markdown that reads well pasted into a GitHub issue."""
    def cell(x: str) -> str:
        return x.replace("|", "\\|")

    out = [f"**{h}**" for h in headline(c)] + ["", key_line(c), ""]
    if c.warnings:
        out += [f"> **warning:** {cell(w)}" for w in c.warnings] + [""]
    for title, head, rows in tables(c):
        out += [f"**{title}**", "", "| " + " | ".join(cell(h) for h in head) + " |",
                "|---|" + "---:|" * (len(head) - 1)]
        for r in rows:
            out.append("| " + " | ".join(cell(x) for x in r) + " |")
        out.append("")
    out += [f"- {n}" for n in c.notes]
    return "\n".join(out) + "\n"


def render_json(c: Comparison) -> str:
    return json.dumps(c.to_dict(), indent=1, allow_nan=False) + "\n"


def render_html(c: Comparison, tree_a: dict, tree_b: dict, *, min_share: float = 0.001) -> str:
    """The comparison page: the headline and tables, the differential flamegraph of
    the first two runs (``tree_a``, ``tree_b``: their frame trees), the phases, the
    notes. One self-contained file."""
    from html import escape

    from .render.html import diff_flamegraph_html

    def td(x) -> str:
        text, cls = (x, "") if isinstance(x, str) else x
        attr = f' class="{cls}"' if cls else ""
        return f"<td{attr}>{escape(text)}</td>"

    def table(title, head, rows):
        h = "".join(f"<th>{escape(x)}</th>" for x in head)
        body = []
        for r in rows:
            total = r[0].startswith("**")
            cells = [f"<th>{escape(r[0].strip('*'))}</th>"] + [td(x) for x in r[1:]]
            body.append(f"<tr{' class=total' if total else ''}>{''.join(cells)}</tr>")
        return (f'<h2>{escape(title)}</h2><table class="cmp"><thead><tr>{h}</tr></thead>'
                f'<tbody>{"".join(body)}</tbody></table>')

    parts = _tables(c)
    # the first two tables above the flamegraph; under it, the phases first
    rest = sorted(parts[2:], key=lambda t: not t[0].startswith("Phases"))
    first = [table(*t) for t in parts[:2]]
    rest = [table(*t) for t in rest]
    warn = "".join(f"<li>{escape(w)}</li>" for w in c.warnings)
    notes = "".join(f"<li>{escape(n)}</li>" for n in c.notes)
    names = [r.name for r in c.runs]
    more = "" if len(names) == 2 else (f"<p class='explain'>The flamegraph compares B ({escape(names[1])}) with "
                                       f"A ({escape(names[0])}); compare the other runs in pairs for theirs.</p>")
    heads = "".join(f"<p class='headline'>{escape(h)}</p>" for h in headline(c))
    before = f"""
<style>{_STYLE}</style>
<section class="cmp">
  <h1>{escape(' vs '.join(names))} <span class="tool">comparison · phprof</span></h1>
  {heads}
  <p class="explain">{escape(key_line(c))}. Δ with a range: red where a run spends more than A, blue where less,
  when the range excludes 0, grey when it includes 0; a Δ shown without a range is not coloured. † a conservative
  bound (a sum of layers' bounds), not an interval (see the notes).</p>
  {f'<ul class="warnings">{warn}</ul>' if warn else ''}
  {''.join(first)}
</section>{more}"""
    after = f"""
<section class="cmp">
  {''.join(rest)}
  <h2>Notes</h2><ul class="notes">{notes}</ul>
</section>"""
    return diff_flamegraph_html(tree_a, tree_b, names[:2], title=f"B: {names[1]} against A: {names[0]}",
                                min_share=min_share, before=before, after=after)


def _delta_class(d: Delta | None) -> str:
    """The colour of a difference by its range: "more" (B > A) or "less" where the
    range excludes 0, "unsure" where it includes 0, "" where it has no range."""
    if d is None or d.low_j is None or d.high_j is None:
        return ""
    if d.low_j > 0:
        return "more"
    if d.high_j < 0:
        return "less"
    return "unsure"


_STYLE = """
section.cmp { font: 14px/1.45 system-ui, sans-serif; margin: 12px 16px; color: #1f2933; }
section.cmp h1 { font-size: 20px; margin: 4px 0 8px; }
section.cmp h1 .tool { font-size: 13px; font-weight: normal; color: #777; margin-left: 8px; }
section.cmp h2 { font-size: 15px; margin: 16px 0 6px; }
table.cmp { border-collapse: collapse; font-variant-numeric: tabular-nums; }
table.cmp th, table.cmp td { padding: 3px 10px; border-bottom: 1px solid #e4e7eb; white-space: nowrap; }
table.cmp thead th { background: #f5f7fa; text-align: right; font-weight: 600; }
table.cmp thead th:first-child, table.cmp tbody th { text-align: left; }
table.cmp tbody th { font-weight: 500; font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; }
table.cmp td { text-align: right; }
table.cmp tr.total th, table.cmp tr.total td { font-weight: 700; border-top: 1px solid #9aa5b1; }
table.cmp td.more { color: #b3261e; }
table.cmp td.less { color: #1f5fbf; }
table.cmp td.unsure { color: #52606d; }
p.headline { font-size: 16px; margin: 4px 0; max-width: 90em; }
ul.warnings { background: #fff4e5; border: 1px solid #f0b45b; border-radius: 4px; padding: 6px 10px 6px 28px;
  margin: 6px 0; max-width: 90em; }
ul.notes, .explain { color: #52606d; max-width: 90em; }
"""

