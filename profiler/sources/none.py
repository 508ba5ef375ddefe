"""The source of last resort: wall-clock time only, no sensor.

It reads nothing; its logs hold only the clock pairs of start and stop.
Energy can only be *assumed* (a constant power times the time), and every
figure made that way is marked estimated.
"""
from __future__ import annotations

import numpy as np

from .base import READING_DTYPE, Availability, EnergyTotal, PowerLog, PowerSource

MEASURES = "wall-clock time only: no power sensor is read, so energy is never measured"


class TimeOnlySource(PowerSource):
    name = "none"

    def __init__(self) -> None:
        super().__init__((), {})

    def _start(self) -> None:
        pass

    def _stop(self) -> None:
        pass

    def _take(self) -> tuple[np.ndarray, int]:
        return np.empty(0, READING_DTYPE), 0

    @classmethod
    def probe(cls) -> Availability:
        return Availability(cls.name, True, MEASURES, "always available; any energy shown with it is an estimate")


def assumed_energy(log: PowerLog, watts: float, device: str = "assumed") -> EnergyTotal:
    """Energy if the device drew a constant ``watts`` over the log's span: an estimate, never a measurement."""
    if len(log.clock_pairs) < 2:
        raise ValueError("the log needs a start and a stop clock pair")
    seconds = (log.clock_pairs[-1, 0] - log.clock_pairs[0, 0]) / 1e9  # monotonic: immune to clock steps
    return EnergyTotal(
        device,
        watts * seconds,
        seconds,
        f"assumed constant {watts:g} W",
        False,
        None,
        ("no power sensor: energy is the assumed power times wall-clock time",),
    )
