"""Recording a calibration: a load schedule run on the GPU while every NVML field is sampled.

:func:`calibration_plan` is the schedule `phprof calibrate` runs: idle (no
kernel: the GPU's idle power), a long step (rise time, settling tail), then
square waves of several cycles (the window is seen from cycles near and below
the update period; cycles drift against the period so that every update sees a
different share of the load), each separated by idle. :func:`record_calibration`
runs a plan with any *load* (:class:`phprof.tracing.gpuload.CudaLoad` on a GPU;
tests drive the fake NVML, whose power follows the commanded load) under a
native NVML sampler at its full rate, keeping only the readings that bracket a
change (``changed_only``), and measures the cost of one NVML read per field
beforehand. It returns a :class:`CalibrationRecording`; the fit is
``phprof.attribution.sensor.calibrate``'s.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import PhprofError
from ..sources import BehaviourTally, NvmlSource, PowerLog


class CalibrationRunError(PhprofError):
    """A calibration run whose recording cannot be fitted (the message says why)."""


@dataclass(frozen=True)
class Plan:
    """Segments of the load: each lasts ``durations_s[k]``, busy or idle."""

    durations_s: np.ndarray
    busy: np.ndarray
    parts: tuple[str, ...] = ()  # what each stretch is for, in words

    @property
    def seconds(self) -> float:
        return float(self.durations_s.sum())


def calibration_plan(period_s: float = 0.1, quick: bool = False) -> Plan:
    """Idle, a step, then square waves at cycles of 5, 2, 1.04, 0.97 and 0.3 update
    periods (~60 s; ``quick``: ~15 s, fewer cycles)."""
    scale = 0.3 if quick else 1.0
    idle, step, wave = max(3.0 * scale, 1.5), max(6.0 * scale, 2.0), 6.0 * scale
    d, b, parts = [idle], [False], [f"idle {idle:.1f} s (no kernel: idle power)"]
    d += [step, step]
    b += [True, False]
    parts.append(f"a {step:.1f} s step and as long idle after it (rise time, settling tail)")
    cycles = (5.0, 1.04, 0.3) if quick else (5.0, 2.0, 1.04, 0.97, 0.3)
    for c in cycles:
        cycle = c * period_s
        n = max(4, int(wave / cycle))
        d += [cycle / 2, cycle / 2] * n + [1.0 * scale]
        b += [True, False] * n + [False]
        parts.append(f"{n} cycles of {cycle * 1e3:.1f} ms ({c:g} update periods), then idle")
    return Plan(np.array(d), np.array(b), tuple(parts))


@dataclass
class CalibrationRecording:
    """What a calibration run recorded: every field's readings, the load's actual
    switch instants, the GPU, and what the sampler measured of each read's cost."""

    log: PowerLog
    marks_ns: np.ndarray  # when each segment of the plan began, CLOCK_REALTIME
    busy: np.ndarray
    gpu: str
    driver: str
    idle_span_ns: tuple[int, int]  # the plan's first (idle) segment
    nvml_call_us: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def measure_read_cost(gpu: int, seconds: float = 1.0, library: str | None = None) -> dict[str, float]:
    """The median cost (us) of one NVML read per field, polling as fast as it answers."""
    src = NvmlSource(gpus=[gpu], interval_s=None, library=library)
    tally = BehaviourTally(src.channels)
    src.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)
        tally.add(src.drain())
    tally.add(src.stop())
    return {o.channel.split(".", 1)[1]: o.call_us_p50 for o in tally.result() if o.readings}


def record_calibration(load, plan: Plan, gpu: int = 0, library: str | None = None, progress=None) \
        -> CalibrationRecording:
    """Runs ``plan`` with ``load`` (``load.run(durations_s, busy, start_ns)`` -> the
    segments' start instants on CLOCK_REALTIME, within ``load.clock_uncertainty_ns``)
    while sampling every NVML field of GPU ``gpu``."""
    cost = measure_read_cost(gpu, library=library)
    src = NvmlSource(gpus=[gpu], interval_s=None, changed_only=True, library=library)
    names, driver = src.device_names()
    chunks = []
    src.start()
    try:
        start = time.time_ns() + 300_000_000
        if progress:
            progress(f"running the load schedule ({plan.seconds:.0f} s): " + "; ".join(plan.parts))
        marks = np.asarray(load.run(plan.durations_s, plan.busy, start), np.int64)
        time.sleep(1.0)  # the last windows and the averages' tails
    finally:
        chunks.append(src.stop())
    log = PowerLog.concat(chunks)
    if log.dropped:
        raise CalibrationRunError(f"the sampler dropped {log.dropped} readings: its buffer filled during the "
                                  "calibration run, so some updates are missing; run it again with less else on the "
                                  "machine")
    notes = []
    if load.clock_uncertainty_ns:
        notes.append(f"the load's switch instants are on the host clock within +-{load.clock_uncertainty_ns / 1e3:.0f} "
                     "us (the GPU timer read by a kernel, bracketed by host clock reads)")
    return CalibrationRecording(log, marks, np.asarray(plan.busy, bool), names.get(f"gpu{gpu}", ""), driver or "",
                                (int(marks[0]), int(marks[1])), cost, notes=notes)
