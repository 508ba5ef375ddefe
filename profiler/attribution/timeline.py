"""Which label (layer) was active when: the timeline the estimator needs.

On the CPU, a module's scope is active while its forward runs and none of its
children's does: the timeline is the exclusive time of each innermost scope,
from the annotation spans of the trace (:func:`scope_timeline`).

On a GPU the work is the kernels (and memory copies and sets), and a kernel
belongs to the innermost module scope of the CPU op that launched it
(:func:`kernel_timeline`); kernels launched outside every scope (autograd's
threads, ``torch.compile`` regions, CUDA graphs) are the label ``(unscoped)``,
never the time with no kernel running. The timeline's segments are cut so that
every instant belongs to one kernel (the one that started first keeps an overlap:
what a time line shows); the kernels themselves, uncut, are the timeline's
``work``, what the power model fits (overlapping kernels each draw their own power
above idle: ``phprof.attribution.kernelmodel``), each with its class
(:data:`KERNEL_CLASSES`). Time inside an inference with no kernel running is its
own label.

Between profiler windows phprof does work of its own, each span stored with its kind
(``/profiler_work``): the profiler's warm-up steps before a window (inferences that run,
not recorded) and the windows' saves. Each kind is a label of its own on both timelines
(:func:`trace_timeline`), so that the fit gives it a power of its own: read as idle
time, a warm-up step at full power would raise the idle power the fit finds and lower
every layer's energy.
"""
from __future__ import annotations

import re

import numpy as np

from ..store import DEVICE_KINDS, Kind, ProfilerWork
from ..store.results import Role
from .estimate import Timeline, Work

OUTSIDE = Role.OUTSIDE_MODULES.label
NO_KERNEL = Role.NO_KERNEL.label
UNSCOPED = Role.UNSCOPED.label
PROFILER_WORK_LABELS = {ProfilerWork.WINDOW_WARMUP: Role.WINDOW_WARMUP.label,
                        ProfilerWork.WINDOW_SAVE: Role.WINDOW_SAVE.label}
_OUTSIDE_ID = np.iinfo(np.uint32).max  # a name id no string table reaches
# Kernel classes by name, first match wins: the prior of a kernel's power (its own is fitted where the
# sensor's windows see enough of it). Memory copies and sets go by their kind.
KERNEL_CLASSES = (
    ("communication", re.compile(r"nccl|all_?reduce|all_?gather|reduce_?scatter|broadcast|alltoall", re.I)),
    ("attention", re.compile(r"flash|fmha|attention|sdpa|\bmha", re.I)),
    ("gemm", re.compile(r"gemm|xmma|cutlass|wgrad|dgrad|fprop|winograd|conv|implicit|scudnn|hmma|wmma|cublas|"
                        r"s884|s1688|h884|h1688|matmul", re.I)),
    ("reduction/norm", re.compile(r"reduce|norm|softmax|bn_|pool|mean|sum|argmax|topk|sort|scan", re.I)),
    ("elementwise", re.compile(r"elementwise|vectorized|copy|fill|cat|transpose|index|gather|scatter|dropout|"
                               r"relu|gelu|silu|add|mul|nchw|nhwc|embedding", re.I)),
)
MEMORY = "memory copy"
OTHER = "other"
CLASS_NAMES = [c for c, _ in KERNEL_CLASSES] + [MEMORY, OTHER]


def kernel_class(name: str, kind: int) -> int:
    """The class of a device event (an index into CLASS_NAMES)."""
    if kind in (int(Kind.MEMCPY), int(Kind.MEMSET)) or name.startswith(("Memcpy", "Memset")):
        return CLASS_NAMES.index(MEMORY)
    return next((i for i, (_, pattern) in enumerate(KERNEL_CLASSES) if pattern.search(name)), len(CLASS_NAMES) - 1)


def scope_timeline(trace) -> Timeline:
    """Exclusive-time segments of every module scope in a trace's inferences,
    labelled by scope path; a scope's parent is the scope it first ran inside."""
    ev = trace.events
    ann = ev[(ev["kind"] == Kind.USER_ANNOTATION) & (ev["device"] < 0) & (ev["inference"] >= 0)]
    # each inference is the outermost scope: its own time is the work outside any module
    # (generate()'s Python between forward calls, say)
    outside = np.zeros(len(trace.inferences), dtype=ann.dtype)
    outside["start_ns"], outside["end_ns"] = trace.inferences["start_ns"], trace.inferences["end_ns"]
    outside["name"] = _OUTSIDE_ID
    ann = np.concatenate([outside, ann])
    ann = ann[np.lexsort((-ann["end_ns"], ann["start_ns"]))]  # parents before their children
    names: list[str] = []
    parents: list[int] = []
    index: dict[int, int] = {}
    starts, ends, labels = [], [], []
    open_: list[tuple[int, int]] = []  # (end_ns, label) of the enclosing scopes
    cursor = None

    def emit(until: int) -> None:
        if open_ and cursor is not None and until > cursor:
            starts.append(cursor)
            ends.append(until)
            labels.append(open_[-1][1])

    for start, end, name in zip(ann["start_ns"].tolist(), ann["end_ns"].tolist(), ann["name"].tolist()):
        while open_ and open_[-1][0] <= start:  # scopes that closed before this one opens
            emit(open_[-1][0])
            cursor = open_.pop()[0]
        emit(start)
        label = index.get(name)
        if label is None:
            label = index[name] = len(names)
            names.append(OUTSIDE if name == _OUTSIDE_ID else trace.strings[name])
            parents.append(open_[-1][1] if open_ else -1)
        open_.append((end, label))
        cursor = start
    while open_:
        emit(open_[-1][0])
        cursor = open_.pop()[0]
    return Timeline(np.array(starts, np.int64), np.array(ends, np.int64), np.array(labels, np.int64), names,
                    np.array(parents, np.int64))


def kernel_timeline(trace, device: int | None = None) -> Timeline | None:
    """The device work of a trace's inferences labelled by module scope; None
    when the trace has no device events (a CPU run). ``device``: the CUDA
    device index (default: the one with the most events)."""
    ev = trace.events
    work = np.flatnonzero(np.isin(ev["kind"], DEVICE_KINDS) & (ev["device"] >= 0) & (ev["inference"] >= 0))
    if len(work) == 0:
        return None
    if device is None:
        device = int(np.bincount(ev["device"][work]).argmax())
    work = work[ev["device"][work] == device]
    work = work[np.lexsort((ev["end_ns"][work], ev["start_ns"][work]))]
    start, end = ev["start_ns"][work], ev["end_ns"][work]
    raw, raw_start, raw_end = work, start, end
    # cut overlaps (the timeline's own time): each kernel keeps only what no earlier kernel covered
    reach = np.maximum.accumulate(end)
    start = np.maximum(start, np.concatenate([[np.iinfo(np.int64).min], reach[:-1]]))
    keep = end > start
    work, start, end = work[keep], start[keep], end[keep]
    names: list[str] = [NO_KERNEL]
    parents: list[int] = [-1]
    of_stack: dict[int, int] = {}  # stack row -> label
    of_scope: dict[int, int] = {}

    def label_of(stack: int) -> int:
        if stack in of_stack:
            return of_stack[stack]
        if stack == 0:  # the root stack: launched outside every module scope
            of_stack[0] = len(names)
            names.append(UNSCOPED)
            parents.append(-1)
            return of_stack[0]
        parent_stack, scope = (int(x) for x in trace.stacks[stack])
        if scope not in of_scope:
            parent = label_of(parent_stack) if parent_stack else -1
            of_scope[scope] = len(names)
            names.append(trace.strings[scope])
            parents.append(parent)
        of_stack[stack] = of_scope[scope]
        return of_stack[stack]

    uniq, inv = np.unique(ev["stack"][raw], return_inverse=True)
    raw_labels = np.array([label_of(int(s)) for s in uniq], np.int64)[inv.reshape(-1)]
    labels = raw_labels[keep]
    names_u, kernel_of = np.unique(ev["name"][raw], return_inverse=True)
    kind_of = np.zeros(len(names_u), np.int64)
    kind_of[kernel_of.reshape(-1)] = ev["kind"][raw]
    kernel_names = [trace.strings[int(n)] for n in names_u]
    classes = np.array([kernel_class(n, int(k)) for n, k in zip(kernel_names, kind_of)], np.int64)
    work_table = Work(raw_start, raw_end, raw_labels, kernel_of.reshape(-1).astype(np.int64), kernel_names, classes,
                      list(CLASS_NAMES))
    # inside each inference, the gaps between kernels
    inf = np.sort(trace.inferences, order="start_ns")
    gaps_s, gaps_e = _gaps(start, end, inf["start_ns"], inf["end_ns"])
    starts = np.concatenate([start, gaps_s])
    ends = np.concatenate([end, gaps_e])
    all_labels = np.concatenate([labels, np.zeros(len(gaps_s), np.int64)])
    events = np.concatenate([work, np.full(len(gaps_s), -1)])
    order = np.argsort(starts, kind="stable")
    return Timeline(starts[order], ends[order], all_labels[order], names, np.array(parents, np.int64),
                    events[order], work_table)


def _gaps(start, end, inf_start, inf_end) -> tuple[np.ndarray, np.ndarray]:
    """The parts of the inferences [inf_start, inf_end) that no [start, end) covers
    (the busy intervals must not overlap each other and be sorted)."""
    # walk the boundaries: a gap runs from an inference start or a busy end to the
    # next busy start or inference end, while inside an inference
    points = np.concatenate([inf_start, inf_end, start, end])
    kinds = np.concatenate([np.full(len(inf_start), 0), np.full(len(inf_end), 1),
                            np.full(len(start), 2), np.full(len(end), 3)])
    order = np.lexsort((kinds, points))
    points, kinds = points[order], kinds[order]
    inside = np.cumsum(np.where(kinds == 0, 1, np.where(kinds == 1, -1, 0)))
    busy = np.cumsum(np.where(kinds == 2, 1, np.where(kinds == 3, -1, 0)))
    free = (inside > 0) & (busy == 0)
    s, e = points[:-1][free[:-1]], points[1:][free[:-1]]
    keep = e > s
    return s[keep], e[keep]


def trace_timeline(trace, device: int | None = None) -> tuple[Timeline, str]:
    """The timeline attribution uses, and what it is made of: the device's
    kernels when the trace has any (``device``: the CUDA ordinal, default the one
    with the most), else the module scopes on the CPU; with phprof's own work
    between windows as labels of their own."""
    kernels = kernel_timeline(trace, device)
    if kernels is not None:
        return with_profiler_work(kernels, trace), "device kernels"
    return with_profiler_work(scope_timeline(trace), trace), "module scopes (CPU)"


def with_profiler_work(timeline: Timeline, trace) -> Timeline:
    """``timeline`` with each kind of the trace's ``profiler_work`` spans (warm-up steps,
    window saves) as a label of its own, outside every inference (a span is cut where an
    inference's, on a GPU its kernels', overlaps it)."""
    work = getattr(trace, "profiler_work", None)
    if work is None or not len(work):
        return timeline
    inf = trace.inferences
    if not len(inf):
        return timeline
    busy_s, busy_e = interval_union(inf["start_ns"], inf["end_ns"])
    # inside the inferences' span only (the warm-up steps before the first window lie before it)
    work = work[(work["end_ns"] > busy_s[0]) & (work["start_ns"] < busy_e[-1])]
    names, parents = list(timeline.names), list(timeline.parents)
    starts, ends, labels = [timeline.starts_ns], [timeline.ends_ns], [timeline.labels]
    for kind, label in PROFILER_WORK_LABELS.items():
        mine = work[work["kind"] == int(kind)]
        if not len(mine):
            continue
        s, e = _gaps(busy_s, busy_e, mine["start_ns"].astype(np.int64), mine["end_ns"].astype(np.int64))
        if not len(s):
            continue
        starts.append(s)
        ends.append(e)
        labels.append(np.full(len(s), len(names), np.int64))
        names.append(label)
        parents.append(-1)
    if len(names) == len(timeline.names):
        return timeline
    s, e, lab = np.concatenate(starts), np.concatenate(ends), np.concatenate(labels)
    events = None if timeline.events is None else \
        np.concatenate([timeline.events, np.full(len(s) - len(timeline.events), -1, timeline.events.dtype)])
    order = np.argsort(s, kind="stable")
    return Timeline(s[order], e[order], lab[order], names, np.array(parents, np.int64),
                    None if events is None else events[order], timeline.work)


def interval_union(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The union of intervals [start, end) (they may overlap), as sorted disjoint intervals."""
    if not len(start):
        return start.astype(np.int64), end.astype(np.int64)
    order = np.argsort(start, kind="stable")
    s, e = start[order].astype(np.int64), end[order].astype(np.int64)
    reach = np.maximum.accumulate(e)
    new = np.r_[True, s[1:] > reach[:-1]]
    last = np.r_[np.flatnonzero(new)[1:] - 1, len(s) - 1]
    return s[new], reach[last]
