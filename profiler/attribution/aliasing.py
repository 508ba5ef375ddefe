"""Does a sensor see every part of an inference, or always the same part?

A sensor that averages a short window every ``period`` seconds samples a
periodic workload at the phases ``k * period mod T`` (T: the inference
period). When the period is close to a multiple of T (an inference of 25 ms
under a 100 ms sensor), the windows keep landing on the same part of the
inference: per-layer energy cannot be told apart, however long the run.
:func:`phase_coverage` measures this from the inferences' real spans, and
:class:`AliasBreaker` is what the tracer does against it: now and then a
random pause, so the windows drift across the inference.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PhaseCoverage:
    """Where in their inference the sensor's windows fell."""

    windows: int  # sensor windows whose centre fell inside an inference
    bins: int  # the inference's duration cut into this many equal parts
    covered: float  # share of the parts that at least one window's centre fell in
    aliased: bool  # fewer parts covered than the number of windows allows

    def describe(self) -> str:
        if self.aliased:
            return (
                f"aliasing: the sensor's {self.windows} windows fell in only {self.covered:.0%} of the "
                "inference's duration; per-layer estimates there are unreliable (use the trace's "
                "anti-aliasing pauses, or a run whose inference period does not divide the sensor's)"
            )
        return f"the sensor's {self.windows} windows covered {self.covered:.0%} of the inference's duration"


def phase_coverage(window_centres_ns, inference_starts_ns, inference_ends_ns, bins: int = 20) -> PhaseCoverage:
    """Which parts of their inference the sensor's windows saw.

    Each window centre inside an inference is placed at its relative position
    (0: the inference's start, 1: its end) and binned. With n windows spread at
    random, about ``bins * (1 - exp(-n / bins))`` bins get one; a run that
    covers much less than that is aliased.
    """
    starts = np.asarray(inference_starts_ns)
    ends = np.asarray(inference_ends_ns)
    order = np.argsort(starts)
    starts, ends = starts[order], ends[order]
    c = np.asarray(window_centres_ns)
    i = np.searchsorted(starts, c, side="right") - 1
    inside = (i >= 0) & (c < ends[np.clip(i, 0, None)])
    pos = (c[inside] - starts[i[inside]]) / (ends[i[inside]] - starts[i[inside]])
    n = len(pos)
    if n == 0:
        return PhaseCoverage(0, bins, 0.0, False)
    covered = len(np.unique(np.minimum((pos * bins).astype(int), bins - 1))) / bins
    expected = 1 - np.exp(-n / bins)
    return PhaseCoverage(n, bins, covered, n >= bins and covered < 0.5 * expected)


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
