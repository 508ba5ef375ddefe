"""One type for every energy phprof reports: :class:`Energy`.

An energy is a value in joules, the range it is known to lie in, and how it
was obtained (:class:`Method`). The method says whether the figure was
*measured* (read off an energy counter) or *estimated* (a sensor model, a
split by time, a product of a fitted power and a time), so no figure can be
shown without saying which it is.

The range is either a confidence interval (the attribution's bootstrap, at the
level its results state) or, with ``bound=True``, a conservative bound: the
counter's one update at each end of a span, a split by time that only knows
each part's floor and ceiling, a sum of parts' bounds. ``low_j`` and
``high_j`` are None where no range can be given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum


class Method(Enum):
    """How a figure was obtained. The value is the text reports print; ``{detail}``
    is filled from :attr:`Energy.detail` (a channel, a group, an inner method)."""

    # measurements and estimates of a device's whole energy (phprof.sources)
    COUNTER = "energy counter"
    INTEGRATED = "integrated {detail}"  # a power gauge integrated over time (detail: the channel)
    NONE = "none"  # the source gives no energy
    # the attribution's (phprof.attribution)
    WLS = "windowed least squares"
    WITHIN_GROUP = "time-proportional within {detail} (the sensor cannot tell its members apart)"
    TIME_PROPORTIONAL = "time-proportional (the sensor's updates cannot tell the labels apart)"
    ESTIMATE_SUM = "sum of the estimate (no total measured)"
    AT_LAYER_POWER = "its layer's power x its time"
    LAYERS_SUM = "sum of its layers (some split by time within a merged group)"
    # sums made when comparing runs (phprof.attribution.compare)
    COMPONENT_BOOTSTRAP = "{detail} (bootstrap of the component's sum)"
    LAYERS_WITHOUT_INTERVAL = "sum of its layers (some without an interval)"
    LAYERS_BOUNDS = "sum of its layers' bounds (conservative)"
    PHASES_REST = "the inferences' energy minus their phases'"
    MIXED = "{detail}"  # several methods, listed in the detail

    @property
    def measured(self) -> bool:
        """Whether a figure obtained this way is a measurement (else an estimate)."""
        return self is Method.COUNTER

    @property
    def by_time(self) -> bool:
        """A split in proportion to time (each part's power not known on its own)."""
        return self in (Method.WITHIN_GROUP, Method.TIME_PROPORTIONAL)

    def text(self, detail: str = "") -> str:
        return self.value.format(detail=detail) if "{detail}" in self.value else self.value

    @classmethod
    def parse(cls, text: str) -> tuple[Method, str]:
        """The method and detail a text was made from (the inverse of :meth:`text`):
        exact texts first, then templates, MIXED for anything else."""
        for m in cls:
            if m.value == text:
                return m, ""
        for m in cls:
            head, sep, tail = m.value.partition("{detail}")
            if m is not cls.MIXED and sep and text.startswith(head) and text.endswith(tail) \
                    and len(text) > len(head) + len(tail):
                return m, text[len(head):len(text) - len(tail)]
        return cls.MIXED, text


@dataclass(frozen=True)
class Energy:
    """An energy (J), the range it lies in, and how it was obtained (see the module)."""

    joules: float | None  # None: no energy can be given (no sensor)
    low_j: float | None = None
    high_j: float | None = None
    method: Method = Method.NONE
    detail: str = ""  # fills the method's text (see Method)
    bound: bool = False  # [low_j, high_j] is a conservative bound, not a confidence interval

    def __post_init__(self) -> None:
        # no figure: NaN and infinities are stored as None
        for name in ("joules", "low_j", "high_j"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                object.__setattr__(self, name, None)
            elif v is not None:
                object.__setattr__(self, name, float(v))

    @property
    def measured(self) -> bool:
        return self.method.measured

    @property
    def kind(self) -> str:
        """ "measured" or "estimated": what every figure must say of itself."""
        return "measured" if self.measured else "estimated"

    @property
    def method_text(self) -> str:
        return self.method.text(self.detail)

    @property
    def has_range(self) -> bool:
        return self.low_j is not None and self.high_j is not None

    def scaled(self, factor: float) -> Energy:
        """The same figure times ``factor`` (per inference, per token...): same method and range kind."""
        def mul(x):
            return None if x is None else x * factor

        return replace(self, joules=mul(self.joules), low_j=mul(self.low_j), high_j=mul(self.high_j))
