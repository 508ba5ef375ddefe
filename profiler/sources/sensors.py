"""What a power sensor is: its model, the GPU families' published ones, and
whether its windows see every part of a periodic workload.

A GPU's instant power field is not instant: the driver refreshes it every
``period`` seconds with the mean power over a ``window`` ending ``lag`` before
the new value becomes visible (A100: ~101 ms period, ~25 ms window; see
../shared/docs/sensors.md). :class:`SensorModel` holds those three numbers;
:data:`FAMILIES` is the one table of what the literature says of each GPU
family's fields (used until a calibration of the GPU at hand says otherwise).

A sensor that averages a short window every ``period`` seconds samples a
periodic workload at the phases ``k * period mod T`` (T: the inference
period). When the period is close to a multiple of T (an inference of 25 ms
under a 100 ms sensor), the windows keep landing on the same part of the
inference: per-layer energy cannot be told apart, however long the run.
:func:`phase_coverage` measures this from the inferences' real spans.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SensorModel:
    """How a power field reports the true power."""

    period_s: float  # update period
    window_s: float  # averaging window ending at each update
    lag_s: float = 0.0  # from the window's end to the value becoming visible (as stamped)
    source: str = ""  # where these numbers come from (a publication, a fit, a calibration file)
    # the 90% intervals of window and lag, where a fit or a calibration measured them (None: not known)
    window_low_s: float | None = None
    window_high_s: float | None = None
    lag_low_s: float | None = None
    lag_high_s: float | None = None
    field: str = "power_instant"  # the NVML field it models
    period_fitted: bool = False  # the period was fitted from the updates themselves

    def describe(self) -> str:
        """``update 101 ms (fitted), window 25 ms [21, 29], lag +5 ms [+3, +7]``."""
        def ms(x, lo, hi, sign=""):
            # to 0.1 ms where the interval is that narrow (whole ms would print [25, 25])
            d = 1 if lo is not None and hi is not None and hi - lo < 0.01 else 0

            def f(v):
                return f"{round(v * 1e3, d) + 0.0:{sign}.{d}f}"  # + 0.0: no "-0"
            return f"{f(x)} ms" if lo is None or hi is None else f"{f(x)} ms [{f(lo)}, {f(hi)}]"

        return (f"{self.field}: update {self.period_s * 1e3:.1f} ms{' (fitted to its updates)' if self.period_fitted else ''}"
                f", window {ms(self.window_s, self.window_low_s, self.window_high_s)}, "
                f"lag {ms(self.lag_s, self.lag_low_s, self.lag_high_s, '+')}")


# The instant power field of A100/H100 GPUs as published (../shared/docs/sensors.md).
NOMINAL_INSTANT = SensorModel(0.100, 0.025, 0.0, "nominal A100/H100 instant power (Yang et al., arXiv 2312.02741)")
# The average power field (Ampere but GA100, and newer): a 1 s average, refreshed every ~100 ms.
NOMINAL_AVERAGE = SensorModel(0.100, 1.0, 0.0, "nominal 1 s average power field (../shared/docs/sensors.md)",
                              field="power_average")

# The ranges a fit searches: they hold every GPU family of ../shared/docs/sensors.md and
# ../shared/data (windows from a few ms to the ~1 s average; lags up to a period).
WINDOW_SEARCH_S = (0.002, 1.5)


@dataclass(frozen=True)
class GpuFamily:
    """What is published of one family's NVML fields (not measured on the GPU at hand)."""

    name: str  # as it appears in the product name: "A100", "H100"...
    instant: SensorModel | None  # the instant power field's model, where known
    behaviour: dict[str, str] = field(default_factory=dict)  # per field, in words (`phprof devices`)


# Per NVML field, what is known of any GPU (the families below say more).
DEFAULT_BEHAVIOUR = {
    "energy": "mJ counter, Volta and newer; updates every 10-100 ms (reported)",
    "power_instant": "update period and averaging window not characterised for this GPU",
    "power_average": "1 s average on Ampere (not GA100) and newer; the instant value on GA100 and older",
}
_HOPPER = {
    "power_instant": "refreshed every ~100 ms from a 21-25 ms window, rise time 75-120 ms (H100, Yang et al. 2023)",
    "power_average": "1 s average, rise time ~900 ms",
}
FAMILIES = (
    GpuFamily("A100", NOMINAL_INSTANT, {
        "power_instant": "refreshed every ~100 ms from a ~25 ms window: ~75% of the time is never seen "
        "(A100: 101 ms / 25 ms, Yang et al. 2023)",
    }),
    GpuFamily("H100", NOMINAL_INSTANT, _HOPPER),
    GpuFamily("H200", NOMINAL_INSTANT, _HOPPER),
    GpuFamily("GH200", NOMINAL_INSTANT, _HOPPER),
)


def gpu_family(gpu_name: str) -> GpuFamily | None:
    """The family a GPU's product name belongs to ("NVIDIA A100-SXM4-80GB": A100), if in the table."""
    words = set(re.findall(r"[A-Z0-9]+", (gpu_name or "").upper()))
    return next((f for f in FAMILIES if f.name in words), None)


def nominal_sensor(gpu_name: str) -> SensorModel | None:
    """The published model of a GPU's instant power field, if its family's is known."""
    family = gpu_family(gpu_name)
    return None if family is None else family.instant


def nominal_behaviour(gpu_name: str, field_name: str) -> str:
    """What the literature says of this NVML field on this GPU's family (not a measurement)."""
    family = gpu_family(gpu_name)
    if family is not None and field_name in family.behaviour:
        return family.behaviour[field_name]
    return DEFAULT_BEHAVIOUR[field_name]


# Published board power (TDP, W) by product-name words, most specific first: a device's power limit
# where NVML's enforced one was not recorded (an imported trace). Vendor data sheets.
PUBLISHED_POWER_LIMITS_W = (
    (("A100", "PCIE", "80GB"), 300.0), (("A100", "PCIE"), 250.0), (("A100",), 400.0),
    (("H100", "PCIE"), 350.0), (("H100", "NVL"), 400.0), (("H100",), 700.0),
    (("H200", "NVL"), 600.0), (("H200",), 700.0), (("GH200",), 1000.0),
    (("V100", "PCIE"), 250.0), (("V100", "SXM3"), 350.0), (("V100",), 300.0),
    (("A10G",), 300.0), (("A10",), 150.0), (("L4",), 72.0), (("L40S",), 350.0), (("L40",), 300.0),
    (("T4",), 70.0), (("4090",), 450.0), (("3090",), 350.0), (("A6000",), 300.0), (("A5000",), 230.0),
)


def published_power_limit_w(gpu_name: str) -> float | None:
    """The published board power of a GPU by its product name (None: not in the table)."""
    words = set(re.findall(r"[A-Z0-9]+", (gpu_name or "").upper()))
    return next((w for keys, w in PUBLISHED_POWER_LIMITS_W if set(keys) <= words), None)


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
