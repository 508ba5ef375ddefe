"""Kineto (torch.profiler) Chrome-trace JSON as numpy tables.

:func:`load_kineto` reads the JSON that ``torch.profiler`` writes
(``prof.export_chrome_trace(path)``, or an ``on_trace_ready`` handler) and
returns a :class:`KinetoTrace`: one structured array with a row per duration
event (CPU ops, ``record_function`` annotations, CUDA runtime/driver calls,
kernels, memcpys, memsets, GPU-side annotations), a string table, and a trie of
scope stacks. No Python object per event survives the load.

Clock. Every time is absolute CLOCK_REALTIME nanoseconds (``time.time_ns()``):
``baseTimeNanoseconds + ts * 1000`` where ``ts``/``dur`` are microseconds with
up to three decimals. Older traces have no base and hold absolute
microseconds, so the base is 0. ``1712195495519689.047`` us does not fit a
float64 to the nanosecond (the spacing of doubles there is 0.25 us), so the
file is parsed with the decimal text of every number kept, and the text is
turned into integer nanoseconds with integer arithmetic only. A dict parsed
with ``parse_float=str`` (or ``decimal.Decimal``) is as exact. One parsed
with plain floats has lost that precision where the times are absolute: its
floats are read back through their shortest ``repr``, exact only while the
double still carries every written digit (the relative ``ts`` of recent torch
versions), and :attr:`KinetoTrace.exact_ns` says whether that held.

Joins (all vectorised):

* a kernel, memcpy or memset joins its launching runtime (or driver) call on
  ``args.correlation`` (:attr:`KinetoTrace.launch`);
* the launch joins its CPU op on ``args["External id"]``: among the CPU ops
  with that id, the innermost (shortest) one on the launching thread that
  contains the launch in time; when the id names a ``record_function``
  annotation rather than an op, that annotation. Some traces carry ids that
  name nothing useful (older Kineto wrote the correlation there); then the
  innermost CPU op containing the launch on its thread is taken instead. A
  device event without a launch falls back to its own External id;
* ``gpu_user_annotation`` spans join the ``user_annotation`` they mirror on
  External id.

Scopes. ``user_annotation`` events (``record_function`` spans, e.g. module
scopes ``transformer.h.3.attn`` or phase scopes ``phprof.phase.decode.3``)
nest in time on one CPU thread. A sweep with a stack over each thread's
sorted annotations gives every annotation its parent and a node in a trie of
stacks; every other CPU-side event gets the innermost annotation enclosing it,
and each device event inherits the stack of its CPU op (or of its launch when
the op is unknown). ``scope_filter`` chooses which annotation names are scopes.
"""
from __future__ import annotations

import gc
import gzip
from array import array
import json
import os
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from ..clock import decimal_text_to_ns
from ..store.schema import CATEGORY, DEVICE_KINDS, ON_DEVICE, STACK_DTYPE, Kind, stack_path

__all__ = ["KINETO_EVENT_DTYPE", "KinetoTrace", "device_spans", "load_kineto", "read_profiler_result",
           "span_of_events"]

#: The events of one parsed trace, with the ids the joins need (the trace file's
#: ``phprof.store.schema.EVENT_DTYPE`` keeps less: see ``phprof.store.schema.event_rows``).
KINETO_EVENT_DTYPE = np.dtype(
    [
        ("start_ns", "<i8"),  # CLOCK_REALTIME ns
        ("end_ns", "<i8"),
        ("name", "<u4"),  # id in KinetoTrace.names
        ("kind", "u1"),  # Kind
        ("device", "<i2"),  # device index; -1 for CPU-side events
        ("stream", "<i4"),  # CUDA stream for device events; CPU thread id otherwise
        ("correlation", "<i8"),  # args.correlation; -1 if none
        ("external_id", "<i8"),  # args["External id"]; -1 if none
        ("op", "<i4"),  # kernel/memcpy/memset: row of the launching CPU op (gpu annotation:
        # of the user_annotation it mirrors); -1 if not joined or not a device event
        ("stack", "<u4"),  # row in KinetoTrace.stacks; 0 = no scope
    ]
)

# Chrome-trace "cat" -> Kind: the categories Kineto writes today, CUDA driver calls,
# and the capitalised ones of the first torch.profiler releases (1.8). Plain ints
# for the hot loop.
_KIND_OF_CAT: dict[str, int] = {
    **{cat: int(k) for k, cat in CATEGORY.items()},
    "cuda_driver": int(Kind.RUNTIME),
    **{cat: int(k) for cat, k in (("Operator", Kind.CPU_OP), ("Kernel", Kind.KERNEL), ("Memcpy", Kind.MEMCPY),
                                  ("Memset", Kind.MEMSET), ("Runtime", Kind.RUNTIME))},
}

# An External id shared by more candidate events than this is ambiguous, and
# left to the time-containment join (guards the pairwise expansion below).
_MAX_SHARED_EXTERNAL_ID = 16


class _NumberText(str):
    """A JSON number with a fraction or exponent, kept as its text."""

    __slots__ = ()


def _plain(obj: Any) -> Any:
    """Metadata with the number texts turned back into floats."""
    if isinstance(obj, _NumberText):
        return float(obj)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


class _Stream:
    """A Chrome trace read as a stream: :meth:`events` yields the ``traceEvents`` one at a time
    while the file is read in slices, so that memory holds one slice and one event, never the whole
    file nor a dict per event (a 60 s trace of 10 M events is ~3 GB of JSON). Every other top-level
    key lands in :attr:`metadata` as it passes (before or after the events). The parser is the
    standard library's (``JSONDecoder.raw_decode`` on each value: the C scanner), with the decimal
    text of every number kept (:class:`_NumberText`)."""

    SLICE = 1 << 24  # characters read at a time

    def __init__(self, path: Path):
        self.path = path
        self.metadata: dict = {}
        self._decode = json.JSONDecoder(parse_float=_NumberText).raw_decode
        self._space = re.compile(r"\s*")

    def events(self):
        opener = gzip.open if self.path.name.endswith(".gz") else open
        with opener(self.path, "rt", encoding="utf-8") as f:
            self._f, self._buf, self._pos = f, "", 0
            self._expect("{")
            if self._peek() == "}":
                return
            while True:
                key = self._value()
                self._expect(":")
                if key == "traceEvents" and self._peek() == "[":
                    self._expect("[")
                    if self._peek() != "]":
                        while True:
                            yield self._value()
                            if self._expect(",]") == "]":
                                break
                    else:
                        self._expect("]")
                else:
                    self.metadata[key] = self._value()
                if self._expect(",}") == "}":
                    return

    def _fill(self) -> bool:
        more = self._f.read(self.SLICE)
        self._buf = self._buf[self._pos:] + more
        self._pos = 0
        return bool(more)

    def _peek(self) -> str:
        while True:
            self._pos = self._space.match(self._buf, self._pos).end()
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill():
                raise json.JSONDecodeError("unexpected end of the file", self._buf, self._pos)

    def _expect(self, chars: str) -> str:
        c = self._peek()
        if c not in chars:
            raise json.JSONDecodeError(f"expected {' or '.join(chars)}", self._buf, self._pos)
        self._pos += 1
        return c

    def _value(self):
        self._peek()
        while True:
            try:
                value, end = self._decode(self._buf, self._pos)
                if end < len(self._buf):  # a value at the slice's very end may be cut (a number)
                    self._pos = end
                    return value
            except json.JSONDecodeError:
                pass
            if not self._fill():  # the last slice: what it holds is all there is
                value, self._pos = self._decode(self._buf, self._pos)
                return value


@contextmanager
def _gc_paused():
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# ----------------------------------------------------------------- numbers


# Below 2**43 us (~100 days) doubles are spaced under 0.001 us, so the shortest
# repr of a parsed float gives back the three written decimals exactly.
_FLOAT_EXACT_US = 2.0**43


def _us_to_ns(values: list) -> tuple[np.ndarray, bool]:
    """JSON microsecond values (ints, number texts, floats) -> (int64 ns, exact).

    ``exact`` is False when some value came as a binary float too large to
    carry its nanoseconds.
    """
    if not values:
        return np.zeros(0, np.int64), True
    a = np.asarray(values)
    if a.dtype.kind in "iu":
        return a.astype(np.int64) * 1000, True
    if a.dtype.kind == "U":
        return decimal_text_to_ns(a, 1000, invalid=0), True
    # floats (a dict parsed with plain floats), Decimals, or a mix: through text
    exact = True
    texts = []
    for v in values:
        if isinstance(v, float):
            exact = exact and abs(v) < _FLOAT_EXACT_US
            texts.append(repr(v))
        else:
            texts.append(str(v))
    return decimal_text_to_ns(np.asarray(texts, dtype=str), 1000, invalid=0), exact


_INT_IN_TEXT = re.compile(r"-?\d+")


def _int_column(values: list, default: int = -1) -> np.ndarray:
    """JSON ints -> int64; anything else through int() or the last integer in its text."""
    if not values:
        return np.zeros(0, np.int64)
    try:
        a = np.asarray(values)
        if a.dtype.kind in "iu":
            return a.astype(np.int64)
    except (OverflowError, ValueError):
        pass
    out = np.empty(len(values), np.int64)
    for i, v in enumerate(values):
        if isinstance(v, bool) or v is None:
            out[i] = default
        elif isinstance(v, int):
            out[i] = v
        elif isinstance(v, float):
            out[i] = int(v) if v == v else default
        else:
            found = _INT_IN_TEXT.findall(str(v))
            out[i] = int(found[-1]) if found else default
    return out


# --------------------------------------------------------------- intervals


def _nesting_parents(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Parent of each interval in a properly nested set, vectorised.

    ``start``/``end`` must be sorted by start ascending, end descending, and
    every interval must have positive length. Depth = intervals begun before
    minus those ended by its start; the parent is the last earlier interval one
    level up. Where nesting is broken the parent found is checked to contain
    the child, and replaced by its own parent until one does (or none is left).
    """
    n = len(start)
    if n == 0:
        return np.zeros(0, np.int64)
    pos = np.arange(n, dtype=np.int64)
    closed = np.searchsorted(np.sort(end), start, side="right")
    depth = pos - closed
    key = depth * n + pos
    keys = np.sort(key)
    j = np.searchsorted(keys, (depth - 1) * n + pos, side="left") - 1
    cand = np.where(j >= 0, keys[np.maximum(j, 0)], -1)
    parent = np.where((depth > 0) & (j >= 0) & (cand // max(n, 1) == depth - 1), cand % n, -1)
    return _climb(parent, parent.copy(), end, end)


def _climb(idx: np.ndarray, parent: np.ndarray, end: np.ndarray, target_end: np.ndarray) -> np.ndarray:
    """Moves each candidate ``idx`` up its ``parent`` chain until it ends at or
    after ``target_end`` (so that it contains the target), or -1. In place."""
    bad = np.flatnonzero((idx >= 0) & (end[np.maximum(idx, 0)] < target_end))
    while bad.size:
        idx[bad] = parent[idx[bad]]
        keep = (idx[bad] >= 0) & (end[np.maximum(idx[bad], 0)] < target_end[bad])
        bad = bad[keep]
    return idx


def _innermost(
    start: np.ndarray, end: np.ndarray, parent: np.ndarray, q_start: np.ndarray, q_end: np.ndarray
) -> np.ndarray:
    """Innermost interval containing each query interval, or -1.

    Intervals are sorted by (start asc, end desc) with ``parent`` pointers into
    the same order. The candidate is the last interval starting at or before
    the query; it or one of its ancestors is the innermost container.
    """
    return _climb(np.searchsorted(start, q_start, side="right") - 1, parent, end, q_end)


def _expand_ranges(lo: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query index, position) for every position in lo[i]:lo[i]+count[i]."""
    total = int(count.sum())
    q = np.repeat(np.arange(len(lo)), count)
    first = np.cumsum(count) - count
    p = np.arange(total) - np.repeat(first, count) + np.repeat(lo, count)
    return q, p


def span_of_events(events: np.ndarray, starts_ns: np.ndarray, ends_ns: np.ndarray,
                   launch: np.ndarray | None = None) -> np.ndarray:
    """Per event of a Kineto event table, the row of the span that holds it (spans
    sorted by start, not overlapping), -1 for none: a CPU event by its own start
    and end, a device event by the CPU op that launched it, else (a kernel launched
    outside any op: Triton's ``cuLaunchKernelEx``, a custom op) by its launching
    runtime call (``launch``: :attr:`KinetoTrace.launch`)."""
    is_cpu = events["device"] < 0
    pos = np.searchsorted(starts_ns, events["start_ns"], side="right") - 1
    ok = is_cpu & (pos >= 0)
    ok[ok] &= events["end_ns"][ok] <= ends_ns[pos[ok]]
    out = np.full(len(events), -1, np.int64)
    out[ok] = pos[ok]
    launched = ~is_cpu & (events["op"] >= 0)
    out[launched] = out[events["op"][launched]]
    if launch is not None:
        by_launch = ~is_cpu & (events["op"] < 0) & (launch >= 0)
        out[by_launch] = out[launch[by_launch]]
    return out


def device_spans(events: np.ndarray, launch: np.ndarray, pos: np.ndarray, cpu_starts_ns: np.ndarray,
                 cpu_ends_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each span's work ran on the device: ``(starts_ns, ends_ns, kernels)``.

    ``pos``: each event's span (:func:`span_of_events`); spans sorted by CPU
    start. A span with device events runs from its first launch (the launching
    runtime call of its first device event; the event itself without one) to
    its last device event's end: kernels run on after the CPU span that
    launched them, so the CPU span would give their energy to the next span. A
    span whose launches ran ahead of the device starts when the device finished
    the span before, but never after its own first device event, so that
    spans on one stream do not overlap and each holds its own kernels. A span
    without device events keeps its CPU span. ``kernels``: its kernel events."""
    n = len(cpu_starts_ns)
    starts, ends = np.array(cpu_starts_ns, np.int64), np.array(cpu_ends_ns, np.int64)
    rows = np.flatnonzero(np.isin(events["kind"], np.asarray(DEVICE_KINDS, np.uint8)) & (pos >= 0))
    kernels = np.bincount(pos[rows][events["kind"][rows] == Kind.KERNEL], minlength=n).astype(np.int32)
    if not len(rows):
        return starts, ends, kernels
    p, ln = pos[rows], launch[rows].astype(np.int64)
    launched_ns = np.where(ln >= 0, events["start_ns"][np.maximum(ln, 0)], events["start_ns"][rows])
    big, small = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    first_launch, first_work, last_end = np.full(n, big), np.full(n, big), np.full(n, small)
    np.minimum.at(first_launch, p, launched_ns)
    np.minimum.at(first_work, p, events["start_ns"][rows])
    np.maximum.at(last_end, p, events["end_ns"][rows])
    busy = last_end > small
    starts[busy], ends[busy] = first_launch[busy], last_end[busy]
    if n > 1:
        before = np.maximum.accumulate(np.where(busy, ends, small))[:-1]  # the device's end so far
        later = busy[1:] & (before > starts[1:])
        starts[1:][later] = np.minimum(before[later], first_work[1:][later])
    return starts, ends, kernels


# ------------------------------------------------------------------- trace


@dataclass(eq=False)
class KinetoTrace:
    """A Kineto trace as tables. See the module docstring for the joins.

    ``events`` is sorted by ``start_ns`` ascending, then ``end_ns`` descending
    (an enclosing event comes before what it encloses); ``op`` and
    :attr:`launch` are row indices into it.
    """

    events: np.ndarray = field(repr=False)  # KINETO_EVENT_DTYPE
    names: list[str] = field(repr=False)  # string table; names[0] == ""
    stacks: np.ndarray = field(repr=False)  # STACK_DTYPE; row 0 is the root
    #: per event row: for a device event, the row of its launching runtime call; else -1
    launch: np.ndarray = field(repr=False)
    base_time_ns: int = 0
    schema_version: int | None = None
    device_properties: list[dict] = field(default_factory=list, repr=False)
    #: every top-level key of the JSON except traceEvents, numbers as floats
    metadata: dict = field(default_factory=dict, repr=False)
    #: counts: device events, launches found, ops found and by which rule
    join_stats: dict = field(default_factory=dict, repr=False)
    #: categories of duration events not kept ("cuda_sync", "python_function"...), with counts
    skipped: dict = field(default_factory=dict, repr=False)
    source: str | None = None
    #: False when times came from a dict parsed with plain floats too large to
    #: hold nanoseconds (absolute microseconds): they may be off by up to 0.125 us
    exact_ns: bool = True

    # ---- strings and stacks
    def name_of(self, name_id: int) -> str:
        return self.names[int(name_id)]

    def names_of(self, name_ids) -> np.ndarray:
        """Names for an array of ids (object array)."""
        return self._name_array()[np.asarray(name_ids, dtype=np.int64)]

    def name_id(self, name: str) -> int:
        """Id of a name in the string table; KeyError if absent."""
        index = self.__dict__.get("_name_index")
        if index is None:
            index = self.__dict__["_name_index"] = {s: i for i, s in enumerate(self.names)}
        return index[name]

    def stack_path(self, stack: int) -> list[str]:
        """Scope names from the outermost to ``stack``'s own scope; [] for the root."""
        return stack_path(self.stacks, self.names, stack)

    def stack_id(self, path) -> int:
        """Row of the stack with these scope names (outermost first); KeyError if absent."""
        children = self.__dict__.get("_children")
        if children is None:
            children = {
                (int(p), int(s)): i
                for i, (p, s) in enumerate(zip(self.stacks["parent"], self.stacks["scope"]))
                if i
            }
            self.__dict__["_children"] = children
        node = 0
        for scope in path:
            node = children[(node, self.name_id(scope))]
        return node

    # ---- views
    def rows(self, *kinds: Kind) -> np.ndarray:
        """Row indices of the events of these kinds, in table order."""
        return np.flatnonzero(np.isin(self.events["kind"], np.asarray(kinds, dtype=np.uint8)))

    def cpu_ops(self) -> np.ndarray:
        return self.events[self.rows(Kind.CPU_OP)]

    def kernels(self) -> np.ndarray:
        """Kernels, memcpys and memsets: everything that runs on a device and has a launch."""
        return self.events[self.rows(*DEVICE_KINDS)]

    def annotations(self, gpu: bool = False) -> np.ndarray:
        """record_function spans: on CPU threads, or (gpu=True) mirrored on streams."""
        return self.events[self.rows(Kind.GPU_ANNOTATION if gpu else Kind.USER_ANNOTATION)]

    def runtime_calls(self) -> np.ndarray:
        return self.events[self.rows(Kind.RUNTIME)]

    @property
    def joined_fraction(self) -> float:
        """Share of kernels/memcpys/memsets joined to a CPU op (1.0 when there are none)."""
        dev = np.isin(self.events["kind"], np.asarray(DEVICE_KINDS, dtype=np.uint8))
        n = int(dev.sum())
        return float((self.events["op"][dev] >= 0).sum() / n) if n else 1.0

    def summary(self) -> dict:
        """Counts per kind, time span, table sizes and join rates (JSON-ready)."""
        ev = self.events
        counts = np.bincount(ev["kind"], minlength=len(Kind))
        span = (int(ev["start_ns"].min()), int(ev["end_ns"].max())) if len(ev) else (0, 0)
        devices = sorted({int(d) for d in np.unique(ev["device"]) if d >= 0})
        return {
            "source": self.source,
            "events": int(len(ev)),
            "kinds": {k.name: int(counts[k]) for k in Kind},
            "start_ns": span[0],
            "end_ns": span[1],
            "span_ns": span[1] - span[0],
            "names": len(self.names),
            "stacks": int(len(self.stacks)),
            "devices": devices,
            "joined_fraction": self.joined_fraction,
            "join": dict(self.join_stats),
            "skipped": dict(self.skipped),
            "base_time_ns": self.base_time_ns,
            "schema_version": self.schema_version,
            "exact_ns": self.exact_ns,
        }

    def _name_array(self) -> np.ndarray:
        arr = self.__dict__.get("_names_arr")
        if arr is None or len(arr) != len(self.names):
            arr = np.empty(len(self.names), dtype=object)
            arr[:] = self.names
            self.__dict__["_names_arr"] = arr
        return arr

    def __repr__(self) -> str:
        s = self.summary()
        kinds = ", ".join(f"{k.lower()}={v}" for k, v in s["kinds"].items() if v)
        return (
            f"KinetoTrace({s['events']} events: {kinds}; {s['span_ns'] / 1e9:.3f} s; "
            f"joined {s['joined_fraction']:.1%})"
        )


# -------------------------------------------------------------------- load


def load_kineto(
    source: str | os.PathLike | dict,
    scope_filter: Callable[[str], bool] | None = None,
) -> KinetoTrace:
    """Read a torch.profiler Chrome trace (``.json``, ``.json.gz``, or a parsed dict).

    A dict keeps nanoseconds exactly when it was parsed with
    ``json.loads(text, parse_float=str)``; see the module docstring.
    ``scope_filter(name)`` says which ``user_annotation`` names form scopes
    (default: all); the others stay as events but enter no stack.
    """
    if isinstance(source, dict):
        origin, stream = None, None
        with _gc_paused():
            names, columns, skipped = _collect(source.get("traceEvents") or [])
        doc = source
    else:
        path = Path(source)
        origin, stream = str(path), _Stream(path)
        with _gc_paused():  # millions of short-lived dicts would trigger many useless collections
            names, columns, skipped = _collect(stream.events())
        doc = stream.metadata
    base = doc.get("baseTimeNanoseconds")
    base_ns = int(Decimal(str(base))) if base is not None else 0
    metadata = _plain({k: v for k, v in doc.items() if k != "traceEvents"})
    events, exact = _build_table(columns, base_ns)
    schema = metadata.get("schemaVersion")
    return _assemble(events, names, scope_filter, base_time_ns=base_ns,
                     schema_version=int(schema) if isinstance(schema, (int, float)) else None,
                     device_properties=list(metadata.get("deviceProperties") or []), metadata=metadata,
                     skipped=skipped, source=origin, exact_ns=exact)


def _assemble(events: np.ndarray, names: list[str], scope_filter, **fields) -> KinetoTrace:
    """The joins and the scope stacks of an event table, as a KinetoTrace."""
    launch, stats = _join(events)
    trie = _assign_stacks(events, names, scope_filter, launch)
    stacks = np.zeros(len(trie), STACK_DTYPE)
    stacks["parent"], stacks["scope"] = zip(*trie)
    return KinetoTrace(events=events, names=names, stacks=stacks, launch=launch, join_stats=stats, **fields)


def read_profiler_result(result, scope_filter: Callable[[str], bool] | None = None) -> KinetoTrace:
    """The events torch.profiler holds after a window (``prof.profiler.kineto_results``,
    a ``torch._C._autograd._ProfilerResult``) as a KinetoTrace, with no JSON export:
    the same table :func:`load_kineto` makes of that window's export.

    The events' fields map to the export's: ``start_ns``/``end_ns`` (absolute
    CLOCK_REALTIME ns, exact), ``activity_type`` (the export's ``cat``),
    ``correlation_id`` (a device event's or runtime call's ``args.correlation``;
    a CPU op's or annotation's ``External id``), ``linked_correlation_id`` (a
    device event's or runtime call's ``External id``), ``device_index`` and
    ``device_resource_id`` (a device event's device and stream), and
    ``start_thread_id`` (a CPU-side event's thread). A runtime call takes the
    thread of the CPU op it links to (its own may be a placeholder). Hidden
    events (``is_hidden_event``) are left out, as the export leaves them out.
    """
    index: dict[str, int] = {"": 0}
    intern = index.setdefault
    kind_of = _KIND_OF_CAT.get
    # 8 bytes a value, not a Python int's 28 (a window holds tens of thousands of events)
    ts, end, corr, ext, tid = (array("q") for _ in range(5))
    name, dev, stream, kind = array("L"), array("l"), array("l"), array("B")
    skipped: dict[str, int] = {}
    on_device = {int(k) for k in ON_DEVICE}
    cpu_side = (int(Kind.CPU_OP), int(Kind.USER_ANNOTATION))
    with _gc_paused():
        for e in result.events():
            if e.is_hidden_event():
                continue
            cat = e.activity_type()
            k = kind_of(cat)
            if k is None:
                skipped[cat] = skipped.get(cat, 0) + 1
                continue
            ts.append(e.start_ns())
            end.append(e.end_ns())
            name.append(intern(e.name(), len(index)))
            kind.append(k)
            if k in cpu_side:
                corr.append(-1)
                ext.append(e.correlation_id())
            else:
                corr.append(e.correlation_id())
                ext.append(e.linked_correlation_id() or -1)
            if k in on_device:
                dev.append(e.device_index())
                stream.append(e.device_resource_id())
                tid.append(-1)
            else:
                dev.append(-1)
                stream.append(-1)
                tid.append(e.start_thread_id())
    start = np.array(ts, np.int64)  # integer ns already: exact
    columns = dict(start=start, dur=np.maximum(np.asarray(end, np.int64) - start, 0), exact=True,
                   name=np.asarray(name, np.uint32), kind=np.asarray(kind, np.uint8),
                   pid=np.full(len(start), -1, np.int32), tid=np.asarray(tid, np.int64),
                   corr=np.asarray(corr, np.int64), ext=np.asarray(ext, np.int64),
                   dev=np.asarray(dev, np.int64), stream=np.asarray(stream, np.int64))
    events, exact = _build_table(columns, 0)
    _runtime_threads_from_ops(events)
    return _assemble(events, list(index), scope_filter, base_time_ns=0, skipped=skipped, source="kineto_results",
                     exact_ns=exact)


def _runtime_threads_from_ops(events: np.ndarray) -> None:
    """A runtime (or driver) call on the thread of the CPU op its External id names."""
    kind, ext = events["kind"], events["external_id"]
    ops = np.flatnonzero(np.isin(kind, np.array([Kind.CPU_OP, Kind.USER_ANNOTATION], np.uint8)) & (ext >= 0))
    calls = np.flatnonzero((kind == Kind.RUNTIME) & (ext >= 0))
    if not len(ops) or not len(calls):
        return
    order = ops[np.argsort(ext[ops], kind="stable")]
    at = np.clip(np.searchsorted(ext[order], ext[calls]), 0, len(order) - 1)
    found = ext[order[at]] == ext[calls]
    events["stream"][calls[found]] = events["stream"][order[at[found]]]


_BATCH = 1 << 18  # events turned into numpy columns at a time


def _collect(raw_events) -> tuple[list[str], dict[str, np.ndarray], dict[str, int]]:
    """The one pass over the JSON events (a list, or a stream of them): numpy columns, built a
    batch at a time so that no Python object per event outlives its batch."""
    index: dict[str, int] = {"": 0}
    intern = index.setdefault
    kind_of = _KIND_OF_CAT.get
    skipped: dict[str, int] = {}
    empty: dict = {}
    parts: list[dict[str, np.ndarray]] = []
    ts, dur, name, kind, pid, tid = [], [], [], [], [], []
    corr, ext, dev, stream = [], [], [], []

    def flush():
        parts.append(_columns(ts, dur, name, kind, pid, tid, corr, ext, dev, stream))
        for column in (ts, dur, name, kind, pid, tid, corr, ext, dev, stream):
            column.clear()

    for e in raw_events:
        if e.get("ph") != "X":
            continue
        cat = e.get("cat")
        k = kind_of(cat)
        if k is None:
            key = str(cat)
            skipped[key] = skipped.get(key, 0) + 1
            continue
        args = e.get("args") or empty
        ts.append(e.get("ts", 0))
        dur.append(e.get("dur", 0))
        nm = e.get("name", "")
        name.append(intern(nm, len(index)) if type(nm) is str else intern(str(nm), len(index)))
        kind.append(k)
        pid.append(e.get("pid", -1))
        tid.append(e.get("tid", -1))
        corr.append(args.get("correlation", -1))
        ext.append(args.get("External id", -1))
        dev.append(args.get("device", -1))
        stream.append(args.get("stream", -1))
        if len(ts) >= _BATCH:
            flush()
    flush()
    columns: dict = {"exact": all(p.pop("exact") for p in parts)}
    for k in list(parts[0]):  # a column at a time, each batch's freed as it is joined
        columns[k] = np.concatenate([p.pop(k) for p in parts])
    return list(index), columns, skipped


def _columns(ts, dur, name, kind, pid, tid, corr, ext, dev, stream) -> dict[str, np.ndarray]:
    """One batch of events' columns as numpy arrays (times in ns, without the trace's base)."""
    start, exact_ts = _us_to_ns(ts)
    length, exact_dur = _us_to_ns(dur)
    # the table's own widths where they hold every value (devices and streams are small; process and
    # thread ids fit int32 on Linux), so the columns cost no more than the table
    return dict(start=start, dur=np.maximum(length, 0), exact=exact_ts and exact_dur,
                name=np.asarray(name, dtype=np.uint32) if name else np.zeros(0, np.uint32),
                kind=np.asarray(kind, dtype=np.uint8) if kind else np.zeros(0, np.uint8),
                pid=_narrow(_int_column(pid)), tid=_narrow(_int_column(tid)), corr=_int_column(corr),
                ext=_int_column(ext), dev=_narrow(_int_column(dev)), stream=_narrow(_int_column(stream)))


def _narrow(a: np.ndarray) -> np.ndarray:
    """int64 -> int32 where every value fits (else unchanged)."""
    info = np.iinfo(np.int32)
    return a.astype(np.int32) if not len(a) or (a.min() >= info.min and a.max() <= info.max) else a


def _build_table(c: dict[str, np.ndarray], base_ns: int) -> tuple[np.ndarray, bool]:
    """The events table, in time order; ``c``'s columns are consumed (freed as they are used)."""
    n = len(c["start"])
    start = c.pop("start")
    start += np.int64(base_ns)
    dur = c.pop("dur")
    order = np.lexsort((-dur, start))
    ev = np.zeros(n, KINETO_EVENT_DTYPE)
    ev["start_ns"] = start[order]
    start += dur
    del dur
    ev["end_ns"] = start[order]
    del start
    kind = c.pop("kind")
    on_device = np.isin(kind, np.asarray(ON_DEVICE, dtype=np.uint8))
    ev["kind"] = kind[order]
    del kind
    ev["name"] = c.pop("name")[order] if n else 0
    pid, dev_arg = c.pop("pid"), c.pop("dev")
    ev["device"] = np.where(on_device, np.where(dev_arg >= 0, dev_arg, pid), -1)[order]
    del pid, dev_arg
    tid, stream_arg = c.pop("tid"), c.pop("stream")
    ev["stream"] = np.where(on_device & (stream_arg >= 0), stream_arg, tid)[order]  # ids beyond int32 wrap
    del tid, stream_arg
    ev["correlation"] = c.pop("corr")[order]
    ev["external_id"] = c.pop("ext")[order]
    ev["op"] = -1
    return ev, c["exact"]


# -------------------------------------------------------------------- joins


def _join(events: np.ndarray) -> tuple[np.ndarray, dict]:
    """Fill events['op'] for device events and GPU annotations; return the launch rows and counts."""
    kind = events["kind"]
    start = events["start_ns"]
    end = events["end_ns"]
    thread = events["stream"].astype(np.int64)
    ext = events["external_id"]
    corr = events["correlation"]
    n = len(events)

    # --- device event -> runtime call on correlation
    dev_rows = np.flatnonzero(np.isin(kind, np.asarray(DEVICE_KINDS, dtype=np.uint8)))
    rt_rows = np.flatnonzero((kind == Kind.RUNTIME) & (corr >= 0))
    rt_rows = rt_rows[np.argsort(corr[rt_rows], kind="stable")]
    rt_corr = corr[rt_rows]
    launch = np.full(n, -1, np.int32)
    dup_corr = int(len(rt_corr) - len(np.unique(rt_corr)))
    if len(rt_rows) and len(dev_rows):
        i = np.searchsorted(rt_corr, corr[dev_rows])
        i_ok = np.minimum(i, len(rt_rows) - 1)
        hit = (i < len(rt_rows)) & (rt_corr[i_ok] == corr[dev_rows]) & (corr[dev_rows] >= 0)
        launch[dev_rows[hit]] = rt_rows[i_ok[hit]]
    dev_launch = launch[dev_rows].astype(np.int64)
    has_launch = dev_launch >= 0

    # --- launch (or the device event itself) -> CPU op
    op = np.full(len(dev_rows), -1, np.int64)
    q_row = np.where(has_launch, dev_launch, dev_rows)  # whose External id, thread and time
    by_ext = _match_external_id(events, q_row, has_launch)
    op[:] = by_ext
    via_ext = int(((by_ext >= 0) & has_launch).sum())
    via_ext_only = int(((by_ext >= 0) & ~has_launch).sum())

    # time containment for launches the External id did not place
    need = np.flatnonzero((op < 0) & has_launch)
    via_time = 0
    if need.size:
        cpu_rows = np.flatnonzero((kind == Kind.CPU_OP) & (end > start))
        found = _enclose_by_thread(cpu_rows, start, end, thread, q_row[need])
        op[need] = found
        via_time = int((found >= 0).sum())
    events["op"][dev_rows] = op

    # gpu_user_annotation -> the user_annotation it mirrors
    ga_rows = np.flatnonzero(kind == Kind.GPU_ANNOTATION)
    ua_rows = np.flatnonzero(kind == Kind.USER_ANNOTATION)
    if len(ga_rows) and len(ua_rows):
        ua_sorted = ua_rows[np.argsort(ext[ua_rows], kind="stable")]
        ua_ext = ext[ua_sorted]
        i = np.searchsorted(ua_ext, ext[ga_rows])
        i_ok = np.minimum(i, len(ua_sorted) - 1)
        hit = (i < len(ua_sorted)) & (ua_ext[i_ok] == ext[ga_rows]) & (ext[ga_rows] >= 0)
        events["op"][ga_rows[hit]] = ua_sorted[i_ok[hit]]

    stats = {
        "device_events": int(len(dev_rows)),
        "with_launch": int(has_launch.sum()),
        "op_by_external_id": via_ext,
        "op_by_time": via_time,
        "op_by_external_id_without_launch": via_ext_only,
        "unjoined": int((op < 0).sum()),
        "duplicate_correlations": dup_corr,
        "gpu_annotations_joined": int((events["op"][ga_rows] >= 0).sum()),
    }
    return launch, stats


def _match_external_id(events: np.ndarray, q_row: np.ndarray, has_launch: np.ndarray) -> np.ndarray:
    """For each query row: the CPU op (or annotation) with its External id, or -1.

    With a launch, only a candidate on the launch's thread that contains it in
    time counts (CPU ops before annotations, then the shortest). Without one,
    any candidate does (CPU ops first, then the shortest).
    """
    kind = events["kind"]
    ext = events["external_id"]
    result = np.full(len(q_row), -1, np.int64)
    cand = np.flatnonzero(((kind == Kind.CPU_OP) | (kind == Kind.USER_ANNOTATION)) & (ext >= 0))
    if not len(cand) or not len(q_row):
        return result
    cand = cand[np.argsort(ext[cand], kind="stable")]
    c_ext = ext[cand]
    q_ext = ext[q_row]
    lo = np.searchsorted(c_ext, q_ext, side="left")
    hi = np.searchsorted(c_ext, q_ext, side="right")
    count = np.where((q_ext >= 0) & (hi - lo <= _MAX_SHARED_EXTERNAL_ID), hi - lo, 0)
    qi, p = _expand_ranges(lo, count)
    if not len(qi):
        return result
    ci = cand[p]
    qr = q_row[qi]
    contains = (
        has_launch[qi]
        & (events["stream"][ci] == events["stream"][qr])
        & (events["start_ns"][ci] <= events["start_ns"][qr])
        & (events["end_ns"][ci] >= events["end_ns"][qr])
    )
    not_op = kind[ci] != Kind.CPU_OP
    acceptable = contains | ~has_launch[qi]
    score = np.where(contains, 0, 2) + not_op
    length = events["end_ns"][ci] - events["start_ns"][ci]
    qi, ci, score, length = qi[acceptable], ci[acceptable], score[acceptable], length[acceptable]
    order = np.lexsort((length, score, qi))
    qi, ci = qi[order], ci[order]
    first = np.ones(len(qi), bool)
    first[1:] = qi[1:] != qi[:-1]
    result[qi[first]] = ci[first]
    return result


def _enclose_by_thread(
    rows: np.ndarray, start: np.ndarray, end: np.ndarray, thread: np.ndarray, q_rows: np.ndarray
) -> np.ndarray:
    """Innermost row of ``rows`` on the query's thread containing each query row, or -1.

    Times are doubled and zero-length intervals given half a nanosecond, so
    that every interval has positive length and touching intervals do not nest.
    """
    out = np.full(len(q_rows), -1, np.int64)
    if not len(rows) or not len(q_rows):
        return out
    s2 = start * 2
    e2 = np.maximum(end * 2, s2 + 1)
    rows_of = dict(_groups(thread[rows]))
    for t, qsel in _groups(thread[q_rows]):
        if t not in rows_of:
            continue
        mine = rows[rows_of[t]]
        mine = mine[np.lexsort((-e2[mine], s2[mine]))]
        ms, me = s2[mine], e2[mine]
        parent = _nesting_parents(ms, me)
        q = q_rows[qsel]
        idx = _innermost(ms, me, parent, s2[q], e2[q])
        out[qsel] = np.where(idx >= 0, mine[np.maximum(idx, 0)], -1)
    return out


def _groups(keys: np.ndarray):
    """(key, positions) for each distinct key; positions ascending within a group."""
    if not len(keys):
        return
    order = np.argsort(keys, kind="stable")
    cuts = np.flatnonzero(np.diff(keys[order])) + 1
    for part in np.split(order, cuts):
        yield int(keys[part[0]]), part


def _assign_stacks(events: np.ndarray, names: list[str], scope_filter, launch: np.ndarray) -> list:
    """Fill events['stack']; return the trie rows [(parent, scope name id)]."""
    kind = events["kind"]
    start = events["start_ns"]
    end = events["end_ns"]
    thread = events["stream"].astype(np.int64)
    stack = np.zeros(len(events), np.int64)
    trie: list[tuple[int, int]] = [(0, 0)]
    children: dict[tuple[int, int], int] = {}

    ua = np.flatnonzero(kind == Kind.USER_ANNOTATION)
    if scope_filter is not None and len(ua):
        ids = np.unique(events["name"][ua])
        chosen = np.asarray([bool(scope_filter(names[i])) for i in ids], dtype=bool)
        is_scope = np.zeros(len(names), bool)
        is_scope[ids[chosen]] = True
        scopes = ua[is_scope[events["name"][ua]]]
    else:
        scopes = ua

    cpu_side = np.flatnonzero(
        np.isin(kind, np.asarray([Kind.CPU_OP, Kind.USER_ANNOTATION, Kind.RUNTIME], dtype=np.uint8))
    )
    scope_set = np.zeros(len(events), bool)
    scope_set[scopes] = True
    queries = cpu_side[~scope_set[cpu_side]]

    queries_of = dict(_groups(thread[queries]))
    for t, pos in _groups(thread[scopes]):
        mine = scopes[pos]  # table order: start asc, end desc
        e, nm = end[mine].tolist(), events["name"][mine].tolist()
        parent = [-1] * len(mine)
        node = [0] * len(mine)
        open_: list[int] = []
        for i in range(len(mine)):
            ei = e[i]
            while open_ and e[open_[-1]] < ei:  # ended, or overlaps without containing
                open_.pop()
            p = open_[-1] if open_ else -1
            pnode = node[p] if p >= 0 else 0
            key = (pnode, nm[i])
            nd = children.get(key)
            if nd is None:
                nd = children[key] = len(trie)
                trie.append(key)
            parent[i] = p
            node[i] = nd
            open_.append(i)
        node_arr = np.asarray(node, dtype=np.int64)
        stack[mine] = node_arr
        if t in queries_of:
            qsel = queries[queries_of[t]]
            idx = _innermost(start[mine], end[mine], np.asarray(parent, np.int64), start[qsel], end[qsel])
            stack[qsel] = np.where(idx >= 0, node_arr[np.maximum(idx, 0)], 0)

    # device events: the stack of their CPU op, else of their launch
    dev = np.flatnonzero(np.isin(kind, np.asarray(ON_DEVICE, dtype=np.uint8)))
    op = events["op"][dev].astype(np.int64)
    ln = launch[dev].astype(np.int64)
    src = np.where(op >= 0, op, ln)
    stack[dev] = np.where(src >= 0, stack[np.maximum(src, 0)], 0)
    events["stack"] = stack
    return trie
