"""Power sources behind one interface: ``nvml`` (GPUs, native sampler),
``rapl`` (CPU package and DRAM counters) and ``none`` (time only).

    from phprof.sources import NvmlSource, recording
    with recording(NvmlSource(gpus=[0])) as rec:
        run_the_model()
    print(rec.log.energy("gpu0"))
"""
from __future__ import annotations

from .base import (
    READING_DTYPE,
    Availability,
    BehaviourTally,
    Channel,
    EnergyTotal,
    ObservedBehaviour,
    PowerLog,
    PowerSource,
    Recording,
    observed_behaviour,
    recording,
    sensor_updates,
    utc_text,
    value_changes,
)
from .none import TimeOnlySource, assumed_energy
from .nvml import NvmlSource
from .rapl import RaplSource

SOURCES: dict[str, type[PowerSource]] = {
    NvmlSource.name: NvmlSource,
    RaplSource.name: RaplSource,
    TimeOnlySource.name: TimeOnlySource,
}


def probe_all() -> list[Availability]:
    """What each source can do on this machine, and why a missing one is missing."""
    return [cls.probe() for cls in SOURCES.values()]


def open_source(name: str, **options) -> PowerSource:
    try:
        cls = SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown power source {name!r} (known: {', '.join(SOURCES)})") from None
    return cls(**options)


__all__ = [
    "READING_DTYPE",
    "SOURCES",
    "Availability",
    "BehaviourTally",
    "Channel",
    "EnergyTotal",
    "NvmlSource",
    "ObservedBehaviour",
    "PowerLog",
    "PowerSource",
    "RaplSource",
    "Recording",
    "TimeOnlySource",
    "assumed_energy",
    "observed_behaviour",
    "open_source",
    "probe_all",
    "recording",
    "sensor_updates",
    "utc_text",
    "value_changes",
]
