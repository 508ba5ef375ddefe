"""phprof's per-layer energies against the fake GPU's truth: how errors and interval coverage are scored.

A run whose modules each drew a known power (``fake_nvml.power_per_module``, or
``power_per_module_everywhere`` for a user's script) is compared, layer by layer, with the fake's
true power integrated over each label's own time on phprof's timeline (what phprof claims to
estimate; the hooks switch power a few microseconds away from the scopes' edges, so the fake's
per-module tags differ slightly: ``tag_gap``). Shared by tools/bench_attribution.py and the tests
that hold phprof to the same targets.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def compare(path: Path, fake, tags: dict, calibration: Path | None = None) -> dict:
    """phprof's layers against the truth, and the naive figures.

    ``rows``: (group, true J, phprof J, low J, high J, naive time split J) of each resolved
    group of modules (a label by itself when the run was split by time), the rows holding the
    time in an inference outside every module left out; ``between`` and ``outside``: the same
    (without the naive figure) for the time between inferences (the ``(idle)`` row: the
    program's own work between calls, phprof's pauses and window saves) and for the time in an
    inference outside every module (``None`` when that label is not resolved on its own)."""
    import phprof
    from phprof.attribution.timeline import trace_timeline
    from phprof.energy import Method
    from phprof.store.results import Role

    t = phprof.load(path)
    results = phprof.results(path, store=False, calibration=calibration)
    timeline = trace_timeline(t)[0]
    true_j = np.array([fake.true_energy(0, int(a), int(b)) for a, b in zip(timeline.starts_ns, timeline.ends_ns)])
    label_truth = np.bincount(timeline.labels, true_j, len(timeline.names))
    inferences_j = results.inferences_energy.joules
    # the inferences' labels, in the timeline's order (phprof's own work between windows, warm-up steps and
    # saves, follows them there, and has rows of its own outside the inferences, as the time between them)
    layers = [x for x in results.layers if not x.role.between_inferences]
    # each resolved group and its labels; without resolved groups (a split by time) each label with its bounds
    by_time = results.method is Method.TIME_PROPORTIONAL
    members: dict[str, list[int]] = {}
    for j, x in enumerate(layers):
        members.setdefault(x.label if by_time else x.group, []).append(j)
    groups = {g.label: g for g in results.groups}
    seconds = sum(x.seconds for x in layers)
    idle = next(x for x in results.layers if x.role is Role.BETWEEN_INFERENCES)
    active = results.total.joules - sum(x.energy.joules for x in results.layers if x.role.between_inferences)
    rows = []
    tag_gap = []
    outside = None
    for group, labels in members.items():
        names = [timeline.names[j] for j in labels]
        truth = float(label_truth[labels].sum())
        row = layers[labels[0]] if by_time else groups[group]
        e = row.energy
        if any(layers[j].role is Role.OUTSIDE_MODULES for j in labels):
            if len(labels) == 1:
                outside = (group, truth, e.joules, e.low_j, e.high_j)
            continue
        tag_gap.append(abs(sum(fake.tag_energy(0, tags[n]) for n in names) - truth) / inferences_j)
        naive = active * row.seconds / seconds
        rows.append((group, truth, e.joules, e.low_j, e.high_j, naive))
    span = (int(t.inferences["start_ns"].min()), int(t.inferences["end_ns"].max()))
    true_total = fake.true_energy(0, *span)
    between = (idle.label, true_total - float(true_j.sum()), idle.energy.joules, idle.energy.low_j,
               idle.energy.high_j)
    _, updates, w = t.power.windowed_power("gpu0")
    inside = (updates >= span[0]) & (updates <= span[1])
    integrated = float(np.mean(w[inside])) * (span[1] - span[0]) / 1e9
    limit = (t.meta["sensor"].get("power_limits_w") or {}).get("gpu0")
    return {"results": results, "rows": rows, "tag_gap": max(tag_gap), "inferences_j": inferences_j,
            "true_total": true_total, "counter_total": results.total.joules, "integrated_total": integrated,
            "between": between, "outside": outside, "between_s": idle.seconds,
            "n": len(t.inferences), "span_s": (span[1] - span[0]) / 1e9, "limit_w": limit,
            "max_power_w": max(x.power_w for x in results.layers if x.power_w is not None)}


def errors(r: dict) -> tuple[list[float], list[bool]]:
    """Each row's error as a share of the inferences' energy, and whether its 90% interval holds the truth."""
    total = r["inferences_j"]
    return ([abs(e - t) / total for _, t, e, *_ in r["rows"]],
            [bool(lo <= t <= hi) for _, t, _, lo, hi, _ in r["rows"]])


def run_program(fake, program, args, output: Path, dwell_s: float, **options):
    """A user's program (a script's path) run with ``args`` under ``phprof run`` (the
    library's :func:`phprof.api.run`, in this process: the fake's hooks reach the models
    the program builds), every module it calls drawing its own known power
    (``fake_nvml.power_per_module_everywhere``), read off the fake's GPU 0 from the CPU;
    ``options``: more of ``phprof run``'s. Returns how the program ended and the modules' tags."""
    import os

    from phprof.api import run

    from . import power_per_module_everywhere

    os.environ["PHPROF_NVML_LIB"] = str(fake.lib_path)
    levels, tags = {}, {}
    with power_per_module_everywhere(fake, levels, tags, dwell_s=dwell_s):
        ended = run(str(program), [str(a) for a in args], output=output, source="nvml", gpus="none", sensor_gpu=0,
                    **options)
    return ended, tags
