"""Pauses between inferences, so a windowed sensor sees every part of them.

A sensor that averages a short window every ``period`` seconds keeps landing
on the same part of an inference whose period divides its own (see
``phprof.sources.sensors.phase_coverage``, which measures it). Now and then a
random pause makes the windows drift across the inference.
"""
from __future__ import annotations

import random


class AliasBreaker:
    """Pauses between inferences so a sensor's windows drift across them.

    After an inference, if at least one sensor period has passed since the
    last pause, pause for a random time up to one inference's duration (capped
    at the period): the next windows then fall at a new random phase. The cost
    is at most one inference per sensor period, half of that on average.
    """

    def __init__(self, period_s: float, seed: int | None = None) -> None:
        self.period_s = period_s
        self._rng = random.Random(seed)
        self._last = None
        self.paused_s = 0.0

    def pause_after(self, inference_s: float, now: float) -> float:
        """Seconds to pause now (0 when no pause is due)."""
        if self._last is None:
            self._last = now
            return 0.0
        if now - self._last < self.period_s:
            return 0.0
        self._last = now
        pause = self._rng.uniform(0.0, min(inference_s, self.period_s))
        self.paused_s += pause
        return pause
