"""The CUDA path, checked without a GPU: which GPU is measured, whether kernels were recorded,
each inference's span on the device, kernels launched outside any op, and a missing NVML.
Synthetic Kineto traces (the layout of ../shared/data/kineto, see its README) and the fake
NVML library stand in for the GPU."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import phprof
from phprof import load
from phprof.attribution.timeline import trace_timeline
from phprof.store import DEVICE_KINDS, Kind
from phprof.store.results import Role
from power_logs import power_csv

MS = 1_000_000
BASE_NS = 1_750_000_000 * 10**9  # a CLOCK_REALTIME epoch, as torch.profiler writes it
NO_KERNEL = Role.NO_KERNEL.label


def _x(cat, name, ts_ns, dur_ns, pid=100, tid=10, **args):
    args = {("External id" if k == "ext" else k): v for k, v in args.items()}
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": f"{(ts_ns - BASE_NS) / 1e3:.3f}",
            "dur": f"{dur_ns / 1e3:.3f}", "args": args}


def lagging_kernels(n=4, step_ms=12, cpu_ms=10, lag_ms=8, kernel_ms=6):
    """``n`` ProfilerSteps of ``cpu_ms`` every ``step_ms``; step k runs in module ``layer{k}``
    and launches two kernels of ``kernel_ms`` that the GPU runs back to back from ``lag_ms`` after
    the step began, on after the step's CPU span. The second kernel of step 2 is launched by
    a driver call outside any CPU op (cuLaunchKernelEx: Triton, a custom op).
    Returns (events, kernel intervals per step)."""
    events, kernels, corr = [], {}, 0
    gpu = BASE_NS + lag_ms * MS
    for k in range(n):
        t = BASE_NS + k * step_ms * MS
        events += [_x("user_annotation", f"ProfilerStep#{k}", t, cpu_ms * MS, ext=1000 + k),
                   _x("user_annotation", f"layer{k}", t + MS // 2, cpu_ms * MS - MS, ext=2000 + k)]
        for j in range(2):
            corr += 1
            launch_ns = t + MS + j * 3 * MS
            orphan = k == 2 and j == 1
            if not orphan:
                events.append(_x("cpu_op", "aten::mm", launch_ns - MS // 4, MS, ext=corr))
            events.append(_x("cuda_driver" if orphan else "cuda_runtime", "cuLaunchKernelEx" if orphan else
                             "cudaLaunchKernel", launch_ns, MS // 10, correlation=corr,
                             **({} if orphan else {"ext": corr})))
            events.append(_x("kernel", f"gemm_{k}_{j}", gpu, kernel_ms * MS, pid=0, tid=7, correlation=corr,
                             device=0, stream=7, **({} if orphan else {"ext": corr})))
            kernels.setdefault(k, []).append((gpu, gpu + kernel_ms * MS))
            gpu += kernel_ms * MS
    return events, kernels


def write_kineto(path: Path, events) -> Path:
    path.write_text(json.dumps({"schemaVersion": 1, "baseTimeNanoseconds": BASE_NS, "traceEvents": events}))
    return path


def test_each_inference_spans_its_own_kernels_and_gets_their_energy(tmp_path):
    """Kernels that run past their step's CPU span: each inference's span runs from its first
    launch to its last kernel's end (never into the next one's kernels), the kernel launched
    outside any op keeps its inference, and what each inference's energy is made of (the
    timeline's time inside its span, the counter's energy over it) is its own kernels'."""
    events, kernels = lagging_kernels()
    watts = {0: 100.0, 1: 400.0, 2: 150.0, 3: 350.0}  # the GPU's power while each step's kernels run
    busy = [(a, b, watts[k]) for k, spans in kernels.items() for a, b in spans]

    def power(i, t):
        return next((w for a, b, w in busy if a <= t < b), 60.0)

    t0, t1 = BASE_NS, max(b for a, b, _ in busy)
    out = phprof.import_trace(write_kineto(tmp_path / "t.json", events),
                              power_csv(tmp_path / "p.csv", t0, t1, power, step_ns=MS // 10), tmp_path / "t.h5")
    t = load(out)
    inf = np.sort(t.inferences, order="index")
    first_launch = [BASE_NS + k * 12 * MS + MS for k in range(4)]
    assert inf["cpu_end_ns"].tolist() == [BASE_NS + k * 12 * MS + 10 * MS for k in range(4)]
    assert inf["end_ns"].tolist() == [spans[-1][1] for spans in kernels.values()]  # the last kernel's end
    # the first launch, or the end of the device's previous work when that is later
    assert inf["start_ns"].tolist() == [max(first_launch[k], kernels[k - 1][-1][1] if k else 0) for k in range(4)]
    assert (inf["start_ns"][1:] >= inf["end_ns"][:-1]).all() and inf["kernels"].tolist() == [2, 2, 2, 2]
    ev = t.events
    orphan = ev[ev["name"] == t.strings.index("gemm_2_1")]
    assert orphan["inference"].tolist() == [2] and orphan["op"].tolist() == [-1]  # by its launch, not -1
    assert (ev["inference"][np.isin(ev["kind"], DEVICE_KINDS)] >= 0).all()
    w = t.windows
    assert (w["kernels"], w["device_events"], w["without_op"], w["kernelless"]).__eq__(([8], [8], [1], [0]))
    assert (w["start_ns"][0], w["end_ns"][0]) == (inf["start_ns"][0], inf["end_ns"][-1])

    # per-inference energy is each label's power times its time inside the inference's span:
    # inference k's span holds layer k's kernels, whole, and nothing of another layer
    timeline, what = trace_timeline(t)
    assert what == "device kernels"
    seconds = timeline.seconds_in(inf["start_ns"], inf["end_ns"])
    for k in range(4):
        own = {timeline.names[j]: s for j, s in enumerate(seconds[k]) if s > 0 and timeline.names[j] != NO_KERNEL}
        assert own == {f"layer{k}": pytest.approx(12e-3)}
    # the counter's energy over each span (what a window's energy and the report's total read) is
    # the inference's own kernels' energy, and the idle draw of the gap before inference 0's
    truth = [sum((b - a) / 1e9 * watts[k] for a, b in kernels[k]) for k in range(4)]
    truth[0] += (kernels[0][0][0] - first_launch[0]) / 1e9 * 60.0
    measured = [t.power.energy_between("gpu0", int(a), int(b)).joules for a, b in zip(inf["start_ns"], inf["end_ns"])]
    assert measured == pytest.approx(truth, abs=0.1)  # the log's rows: 0.1 ms of up to 400 W at each edge
    # the CPU spans would have mixed them: inference 1's CPU span holds step 0's kernels mostly
    on_cpu = t.power.energy_between("gpu0", int(inf["cpu_start_ns"][1]), int(inf["cpu_end_ns"][1])).joules
    assert on_cpu == pytest.approx(8e-3 * watts[0] + 2e-3 * watts[1], rel=0.05)
    assert phprof.report(out, recompute=True).results.inferences == 4
