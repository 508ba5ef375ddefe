"""The source of last resort: wall-clock time only, no sensor.

It reads nothing; its logs hold only the clock pairs of start and stop, and
no energy is ever measured with it.
"""
from __future__ import annotations

import numpy as np

from .base import READING_DTYPE, Availability, PowerSource

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
