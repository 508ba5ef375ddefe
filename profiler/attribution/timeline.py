"""Which label (layer) was active when: the timeline the estimator needs.

On the CPU, a module's scope is active while its forward runs and none of its
children's does: the timeline is the exclusive time of each innermost scope,
from the annotation spans of the trace. (On a GPU, the kernels' own intervals
and their scopes will make the timeline; not built yet.)
"""
from __future__ import annotations

import numpy as np

from ..tracing.kineto import Kind

OUTSIDE = "(inference, outside modules)"
_OUTSIDE_ID = np.iinfo(np.uint32).max  # a name id no string table reaches


def scope_timeline(trace) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Exclusive-time segments of every module scope in a trace's inferences:
    ``(starts_ns, ends_ns, labels, names)``, labels indexing names (scope paths)."""
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
        open_.append((end, label))
        cursor = start
    while open_:
        emit(open_[-1][0])
        cursor = open_.pop()[0]
    return np.array(starts, np.int64), np.array(ends, np.int64), np.array(labels, np.int64), names
