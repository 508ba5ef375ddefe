"""Power sources behind one interface: ``nvml`` (GPUs, native sampler),
``rapl`` (CPU package and DRAM counters) and ``none`` (time only), and power
logs recorded elsewhere (``csvlog``).

    from phprof.sources import NvmlSource, recording
    with recording(NvmlSource(gpus=[0])) as rec:
        run_the_model()
        with rec.window("step"):        # short spans: windows of the one recording
            run_a_step()
    print(rec.energy("gpu0"), rec.energy("gpu0", "step"))

What is known of each GPU family's sensors, and the model of a windowed
sensor, are in ``phprof.sources.sensors``.
"""
from __future__ import annotations

import time

from .base import (
    READING_DTYPE,
    SETTLE_S,
    Availability,
    BehaviourTally,
    Channel,
    Measurement,
    ObservedBehaviour,
    PowerLog,
    PowerSource,
    Recording,
    SourceError,
    add_measurements,
    change_instants,
    observed_behaviour,
    recording,
    sensor_updates,
    value_changes,
)
from .none import TimeOnlySource
from .nvml import NvmlSource
from .rapl import RaplSource, default_zones
from .sensors import NOMINAL_INSTANT, SensorModel

SOURCES: dict[str, type[PowerSource]] = {
    NvmlSource.name: NvmlSource,
    RaplSource.name: RaplSource,
    TimeOnlySource.name: TimeOnlySource,
}


def probe_all() -> list[Availability]:
    """What each source can do on this machine, and why a missing one is missing."""
    return [cls.probe() for cls in SOURCES.values()]


def open_source(name: str, device: str = "cpu", interval_s: float | None = 1e-3, gpu: int | list[int] | None = None) \
        -> PowerSource:
    """The power source ``name`` for a run on ``device`` (``cpu``, ``cuda``,
    ``cuda:N``). ``auto``: NVML for a CUDA device (an error when NVML is missing
    or fails: a GPU run measured by nothing is asked for with ``none``), with the
    host's RAPL package and DRAM counters beside it, read by the same thread, where
    they are readable (``phprof.sources.rapl.default_zones`` says why not); RAPL for the CPU when
    its counters are readable, else time only. ``nvml`` is the GPU alone. ``gpu``: the NVML
    index that measures the device (for a CUDA device ``phprof.tracing.cudadevice``
    finds it; default: the CUDA ordinal; a list: the boards of a model split over
    GPUs, each sampled), or the GPU whose sensor reads a CPU run
    (then ``auto`` is NVML, and must work, too)."""
    several = list(gpu) if isinstance(gpu, (list, tuple)) else None  # a model split over GPUs: each board
    if several:
        gpu = several[0]
    read_off_a_gpu = gpu is not None and not device.startswith("cuda")
    if gpu is None:
        gpu = int(device.split(":")[1]) if device.startswith("cuda:") else 0
    if name == "auto":
        if device.startswith("cuda") or read_off_a_gpu:
            found = NvmlSource.probe()
            if not found.available:
                raise SourceError(f"--source auto on {device}" + (f" read off GPU {gpu}" if read_off_a_gpu else "")
                                  + f": NVML cannot measure it: {found.reason} (--source none records time only)")
            return NvmlSource(gpus=several or [gpu], interval_s=interval_s, host_zones=default_zones()[0])
        elif device == "cpu" and RaplSource.probe().available:
            name = "rapl"
        else:
            name = "none"
    if name == "nvml":
        return NvmlSource(gpus=several or [gpu], interval_s=interval_s)
    if name == "rapl":
        return RaplSource(interval_s=interval_s)
    if name == "none":
        return TimeOnlySource()
    raise SourceError(f"unknown power source {name!r} (choose auto, {', '.join(SOURCES)})")


def measure(seconds: float, found: list[Availability] | None = None, progress=None) \
        -> dict[str, tuple[list[ObservedBehaviour], int]]:
    """Samples every available sensor as fast as it answers for ``seconds`` (one
    source after the other, draining as it goes) and returns, per source, each
    channel's observed behaviour (cost of a read, how often its value changes)
    and the readings dropped. ``found``: the probe to use (default: a new one);
    ``progress(source, done_share)`` is called as it goes."""
    observed = {}
    for a in found if found is not None else probe_all():
        src = SOURCES[a.source].for_measuring(a, interval_s=None) if a.available else None
        if src is None:
            continue
        tally = BehaviourTally(src.channels)
        src.start()
        start = time.monotonic()
        end = start + seconds
        while (now := time.monotonic()) < end:
            time.sleep(min(0.05, end - now))
            tally.add(src.drain())
            if progress is not None:
                progress(a.source, min(1.0, (time.monotonic() - start) / seconds))
        tally.add(src.stop())
        observed[a.source] = (tally.result(), tally.dropped)
    return observed


__all__ = [
    "NOMINAL_INSTANT",
    "READING_DTYPE",
    "SETTLE_S",
    "SOURCES",
    "Availability",
    "BehaviourTally",
    "Channel",
    "Measurement",
    "add_measurements",
    "NvmlSource",
    "ObservedBehaviour",
    "PowerLog",
    "PowerSource",
    "RaplSource",
    "Recording",
    "SensorModel",
    "SourceError",
    "TimeOnlySource",
    "change_instants",
    "measure",
    "observed_behaviour",
    "open_source",
    "probe_all",
    "recording",
    "sensor_updates",
    "value_changes",
]
