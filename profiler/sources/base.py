"""What every power source produces: channels, readings and power logs.

A *channel* is one counter or gauge of one device (``gpu0.energy``,
``gpu0.power_instant``, ``rapl.package-0``). A *reading* is one call to the
sensor: the value, its status, and the CLOCK_REALTIME nanoseconds just before
and just after the call. Readings of all channels of a source share one numpy
record layout, declared once by the native sampler (``READING_DTYPE``).

A :class:`PowerLog` is a span of readings with the channel table and the
(monotonic, realtime) clock pairs taken around it. It knows how to turn a
device's readings into the energy over a span (a :class:`Measurement`),
and says how it did so: from an energy counter (measured, with a bound that
holds the truth), or by integrating a power gauge (an estimate when the
sensor only sees part of the time), or not at all.

Short spans: a counter updates every 10-100 ms, so a span of a few tens of
ms is known only to within the updates around its ends. The way to measure
many short spans is one recording and many windows (:meth:`Recording.window`,
or :meth:`PowerLog.energy_between` on one log): each window's estimate then
interpolates between updates the recording saw on both sides, and its bound
is as tight as the counter allows. A recording per window must wait, when it
ends, for the counter's next updates (``recording(settle_s=...)``).
"""
from __future__ import annotations

import errno
import os
import platform
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ..clock import clock_pair
from ..energy import Energy, Method
from ..errors import PhprofError
from .sensors import SensorModel

# How long stop(settle_s=...) and recording() wait at most for a counter's next update.
SETTLE_S = 1.0


class SourceError(PhprofError):
    """A power source, recording or window that cannot be used as asked."""

# The record layout of phprof._sampler, repeated here only as numpy needs it;
# tests check that the two agree field by field.
READING_DTYPE = np.dtype(
    {
        "names": ["t_before_ns", "t_after_ns", "value", "seq", "channel", "status"],
        "formats": ["<i8", "<i8", "<i8", "<u4", "<u2", "<u2"],
        "offsets": [0, 8, 16, 24, 28, 30],
        "itemsize": 32,
    }
)


# NVML return codes a reading may carry (nvml.h).
NVML_STATUS = {
    1: "NVML not initialised",
    2: "invalid argument",
    3: "not supported",
    4: "no permission",
    9: "driver not loaded",
    10: "timeout",
    13: "function not found in the NVML library",
    15: "GPU is lost",
    999: "unknown NVML error",
}


@dataclass(frozen=True)
class Channel:
    """One counter or gauge of one device."""

    name: str  # unique in a source: "gpu0.energy", "rapl.package-0"
    device: str  # "gpu0", "package-0"
    quantity: str  # "energy" (a cumulative counter) or "power" (a gauge)
    unit: str  # "mJ", "uJ", "mW"
    description: str  # what the sensor is, in words
    wrap: int | None = None  # counter range: it wraps to 0 after this value (RAPL)
    status_codes: str = "nvml"  # what a non-zero status means: an NVML return code, or an errno

    def status_text(self, status: int) -> str:
        if status == 0:
            return "ok"
        if self.status_codes == "errno":
            if status == errno.EINVAL:
                return "the counter file does not hold an integer"
            return os.strerror(status)
        return NVML_STATUS.get(status, f"NVML error {status}")

    @property
    def joules_per_unit(self) -> float:
        return {"mJ": 1e-3, "uJ": 1e-6, "J": 1.0}[self.unit]

    @property
    def watts_per_unit(self) -> float:
        return {"mW": 1e-3, "W": 1.0}[self.unit]


@dataclass(frozen=True)
class Measurement:
    """What a power log says of one device's energy over a span of time.

    ``joules`` is the best estimate; ``[low_j, high_j]`` bounds the truth (from
    an energy counter: see :meth:`PowerLog.energy_between`). A side that the
    readings cannot bound is None: ``high_j`` when the counter did not update
    after the span's end, both for an integrated power gauge.
    """

    device: str
    joules: float | None  # None: this source cannot give energy, or the readings cannot place it
    method: Method  # COUNTER (measured), INTEGRATED (an estimate), NONE
    seconds: float  # the span
    channel: str | None = None  # the channel read
    notes: tuple[str, ...] = ()
    counter_resets: int = 0
    low_j: float | None = None  # the truth lies in [low_j, high_j]
    high_j: float | None = None
    detail: str = ""  # of the method (the channel integrated)

    @property
    def uncertainty_j(self) -> float | None:
        """The farther end of the bound from ``joules``: ``joules +- uncertainty_j``
        holds ``[low_j, high_j]``. None without both ends."""
        if self.joules is None or self.low_j is None or self.high_j is None:
            return None
        return max(self.joules - self.low_j, self.high_j - self.joules)

    @property
    def energy(self) -> Energy:
        """The figure: the joules, its bound, and the method."""
        bounded = self.low_j is not None or self.high_j is not None
        return Energy(self.joules, self.low_j, self.high_j, self.method, self.detail, bound=bounded)

    @property
    def measured(self) -> bool:
        return self.method.measured

    @property
    def kind(self) -> str:
        return self.energy.kind


def add_measurements(parts: list[Measurement], device: str, seconds: float | None = None) -> Measurement:
    """Energies of disjoint spans or distinct devices, added: the bounds add too (an end
    unknown in one part is unknown in the sum, and so is the sum of a part without joules);
    one method, else mixed. ``seconds``: the span (default: the parts' spans added, as for
    pieces of one span)."""
    def total(values):
        return None if any(v is None for v in values) else float(sum(values))

    methods = {(p.method, p.detail) for p in parts}
    method, detail = methods.pop() if len(methods) == 1 else \
        (Method.MIXED, " + ".join(sorted({p.energy.method_text for p in parts})))
    return Measurement(device, total([p.joules for p in parts]), method,
                       sum(p.seconds for p in parts) if seconds is None else seconds,
                       notes=tuple(dict.fromkeys(n for p in parts for n in p.notes)),
                       counter_resets=sum(p.counter_resets for p in parts),
                       low_j=total([p.low_j for p in parts]), high_j=total([p.high_j for p in parts]), detail=detail)


def value_changes(readings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where a channel's value changed, bracketed by the two readings around it.

    The sensor updated after the earlier reading's call began and before the
    later one's ended, so each change lies in ``[lo, hi]``. Takes the readings
    of one channel in time order (status 0 only); returns ``(lo, hi)`` arrays.
    """
    r, changed = _changes(readings)
    return r["t_before_ns"][changed - 1], r["t_after_ns"][changed]


def sensor_updates(readings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each change of one channel's value: its instant (the middle of the bracket
    of :func:`value_changes`, ns) and the new value (in the channel's unit)."""
    r = readings[readings["status"] == 0]
    return change_instants(r["t_before_ns"], r["t_after_ns"], r["value"])


def change_instants(t_lo: np.ndarray, t_hi: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where a polled value changed, and the new values: each change lies between
    the start of the last read that showed the old value (``t_lo``) and the end of
    the first that shows the new one (``t_hi``); its instant is the middle of that
    bracket (integer times stay integers). Readings whose time is one instant
    pass it as both ``t_lo`` and ``t_hi``."""
    changed = np.flatnonzero(np.diff(values) != 0) + 1
    lo, hi = t_lo[changed - 1], t_hi[changed]
    middle = (lo + hi) // 2 if np.issubdtype(np.asarray(lo).dtype, np.integer) else (lo + hi) / 2
    return middle, values[changed]


def _changes(readings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The readings with status 0, and the index of each one that shows a new value."""
    r = readings[readings["status"] == 0]
    return r, np.flatnonzero(np.diff(r["value"]) != 0) + 1


@dataclass
class PowerLog:
    """Readings of a source over a span of time, with what is needed to read them."""

    source: str
    channels: tuple[Channel, ...]
    readings: np.ndarray = field(default_factory=lambda: np.empty(0, READING_DTYPE))
    clock_pairs: np.ndarray = field(default_factory=lambda: np.empty((0, 2), np.int64))
    settings: dict = field(default_factory=dict)
    dropped: int = 0  # readings lost because the buffer was full

    def __post_init__(self) -> None:
        if self.readings.dtype != READING_DTYPE:
            raise TypeError(f"readings must have dtype READING_DTYPE, not {self.readings.dtype}")
        self.clock_pairs = np.asarray(self.clock_pairs, dtype=np.int64).reshape(-1, 2)

    @classmethod
    def concat(cls, logs: Iterable[PowerLog]) -> PowerLog:
        logs = list(logs)
        if not logs:
            raise ValueError("no logs to join")
        first = logs[0]
        for log in logs[1:]:
            if log.source != first.source or log.channels != first.channels:
                raise ValueError("cannot join logs of different sources or channels")
        return cls(
            source=first.source,
            channels=first.channels,
            readings=np.concatenate([log.readings for log in logs]),
            clock_pairs=np.concatenate([log.clock_pairs for log in logs]),
            settings=first.settings,
            dropped=sum(log.dropped for log in logs),
        )

    def channel_index(self, name: str) -> int:
        for i, c in enumerate(self.channels):
            if c.name == name:
                return i
        known = ", ".join(c.name for c in self.channels) or "none"
        raise KeyError(f"no channel {name!r} in this {self.source} log (channels: {known})")

    def of(self, name: str) -> np.ndarray:
        """The readings of one channel, in time order."""
        return self.readings[self.readings["channel"] == self.channel_index(name)]

    def instant_power(self, device: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Each update of ``device``'s instant power field (see :func:`sensor_updates`):
        its instant (ns) and the new power (W); None where the log has no such field."""
        name = f"{device}.power_instant"
        if name not in [c.name for c in self.channels]:
            return None
        instants, values = sensor_updates(self.of(name))
        return instants, values * self.channels[self.channel_index(name)].watts_per_unit

    def windowed_power(self, device: str) -> tuple[str, np.ndarray, np.ndarray] | None:
        """The power field attribution reads: the instant field where it answered, else the
        average field (a GPU that has only that, like an RTX 4090's ``power.draw``): its
        name and each update (instant ns, W); None where neither has a reading."""
        for name in ("power_instant", "power_average"):
            channel = f"{device}.{name}"
            if channel not in [c.name for c in self.channels]:
                continue
            r = self.of(channel)
            if not (r["status"] == 0).any():
                continue
            instants, values = sensor_updates(r)
            return name, instants, values * self.channels[self.channel_index(channel)].watts_per_unit
        return None

    def update_bracket_ns(self, device: str) -> int | None:
        """How closely the readings of :meth:`windowed_power`'s field bracket its updates: the
        median span (ns) from the last read showing an old value to the first showing the new
        one (about the polling interval: ~1 ms for phprof's sampler, a log's row gap for a
        CSV, whose reads have no bracket of their own). None without updates."""
        brackets = self.update_brackets(device)
        if brackets is None or not len(brackets[0]):
            return None
        return int(np.median(brackets[1] - brackets[0]))

    def update_brackets(self, device: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Each update of :meth:`windowed_power`'s field bracketed (``value_changes``): the
        (lo, hi) instants (ns) it lies between, in the order of its updates. None without updates."""
        found = self.windowed_power(device)
        if found is None:
            return None
        return value_changes(self.of(f"{device}.{found[0]}"))

    @property
    def devices(self) -> list[str]:
        return list(dict.fromkeys(c.device for c in self.channels))

    def energy(self, device: str) -> Measurement:
        """Energy of one device over the log. With an energy counter: between the
        counter's first and last updates in the log, the instants at which its value
        is the energy (the same convention at both ends; the counter's difference, to
        one unit); ``seconds`` is that span, at most two updates shorter than the log.
        Without one: its best power gauge integrated from the first reading to the last.
        For a span of your own (a recording's body, a window), use :meth:`energy_between`."""
        curve = self._energy_curve(device)
        if curve.method is Method.NONE:
            return Measurement(device, None, Method.NONE, 0.0, None, curve.notes)
        if curve.steps is not None and len(curve.steps.change_j) >= 2:
            return curve.between_updates(device)
        r = curve.readings
        return curve.total(device, int(r["t_after_ns"][0]), int(r["t_before_ns"][-1]))

    def energy_between(self, device: str, t0_ns: int, t1_ns: int) -> Measurement:
        """Energy of one device between two CLOCK_REALTIME instants.

        From an energy counter (measured): the estimate reads the cumulative energy
        at each instant, linear between the counter's updates. The bound uses only
        that energy never decreases: at each instant it lies between the value of
        the last reading that ended before it and the value of the first update
        known to come after it (plus one unit of the counter), so ``[low_j,
        high_j]`` holds the truth whatever the power did in between (the counter's
        lag taken as zero). Its width is the energy of the counter updates around
        each end; a span with no update inside reads ``[0, that]``, never +-0. The
        upper end needs an update after ``t1_ns`` in the log: a recording waits for
        one when it ends (:func:`recording`); without one ``high_j`` is None.

        Short spans: measure them as windows of one long recording (this method,
        :meth:`energies_between`, or :meth:`Recording.window`), not one recording each.
        """
        return self.energies_between(device, [(t0_ns, t1_ns)])[0]

    def energies_between(self, device: str, spans: Iterable[tuple[int, int]]) -> list[Measurement]:
        """:meth:`energy_between` of each ``(t0_ns, t1_ns)``, the readings read once for all."""
        spans = [(int(a), int(b)) for a, b in spans]
        for a, b in spans:
            if b < a:
                raise ValueError(f"the span ends ({b}) before it starts ({a})")
        curve = self._energy_curve(device)
        if curve.method is Method.NONE:
            return [Measurement(device, None, Method.NONE, (b - a) / 1e9, None, curve.notes) for a, b in spans]
        return [curve.total(device, a, b) for a, b in spans]

    def _energy_curve(self, device: str) -> _EnergyCurve:
        chans = [c for c in self.channels if c.device == device]
        if not chans:
            raise KeyError(f"no device {device!r} in this log (devices: {', '.join(self.devices) or 'none'})")
        notes: list[str] = []
        # channels are listed best first: the counter, then instant before average power
        for quantity in ("energy", "power"):
            for c in chans:
                if c.quantity != quantity:
                    continue
                r = self.of(c.name)
                ok = r[r["status"] == 0]
                if len(ok) >= 2:
                    curve = (_counter_curve if quantity == "energy" else _power_curve)(c, ok, notes)
                    if curve is not None:
                        return curve
                    continue
                notes.append(_why_unusable(c, r))
        return _EnergyCurve(None, None, None, None, Method.NONE, tuple(notes))


@dataclass(frozen=True)
class _CounterSteps:
    """What the readings of a cumulative counter say for certain about the energy.

    A reading's value is the energy up to the counter's last update before the
    read, and energy never decreases: at any instant after a read ended, the
    energy is at least what it showed. An update that came after a read began
    (the first change of value after that read) showed at most the energy at its
    instant plus one unit: the energy at any instant before that read began is
    below it. Energies are the counted joules since the log's first reading.
    """

    read_end_ns: np.ndarray  # t_after_ns of each reading
    read_j: np.ndarray  # what each reading showed
    change_lo_ns: np.ndarray  # per change of value: t_before_ns of the last read of the old value
    change_j: np.ndarray  # the value it changed to
    change_ns: np.ndarray  # its instant (the middle of its bracket)
    unit_j: float  # one unit of the counter: it floors the energy to this

    def at_least(self, t_ns: int) -> float | None:
        j = int(np.searchsorted(self.read_end_ns, t_ns, side="right")) - 1
        return None if j < 0 else float(self.read_j[j])

    def at_most(self, t_ns: int) -> float | None:
        k = int(np.searchsorted(self.change_lo_ns, t_ns, side="left"))
        return None if k >= len(self.change_j) else float(self.change_j[k]) + self.unit_j

    def bound(self, t0_ns: int, t1_ns: int) -> tuple[float, float | None]:
        """The energy in [t0, t1] lies in [low, high]; high None: no update after t1."""
        lo1, hi0 = self.at_least(t1_ns), self.at_most(t0_ns)
        lo0, hi1 = self.at_least(t0_ns), self.at_most(t1_ns)
        low = max(0.0, lo1 - hi0) if lo1 is not None and hi0 is not None else 0.0
        high = hi1 - lo0 if hi1 is not None and lo0 is not None else None
        return low, high


@dataclass(frozen=True)
class _EnergyCurve:
    """Cumulative energy (J) of a device at known instants, linear in between: the
    estimate of an energy over a span.

    For a counter the instants are its updates (each found between the two
    readings around a change of value), so the curve is exact at every update;
    its bound is the counter's (``steps``, see :class:`_CounterSteps`). With
    fewer than two updates there is no period to interpolate with: ``t`` is None
    and a span's estimate is the middle of its bound. (The counter's lag behind
    the true energy is taken as 0 until calibration measures it.) A power curve
    (method INTEGRATED: an estimate) has no bound.
    """

    channel: Channel | None
    readings: np.ndarray | None  # the channel's usable readings
    t: np.ndarray | None  # ns
    joules: np.ndarray | None
    method: Method  # COUNTER (measured), INTEGRATED (of the channel: an estimate), NONE
    notes: tuple[str, ...]
    counter_resets: int = 0
    steps: _CounterSteps | None = None  # a counter's

    def total(self, device: str, t0_ns: int, t1_ns: int) -> Measurement:
        notes = self.notes
        r = self.readings
        if t0_ns < r["t_after_ns"][0] or t1_ns > r["t_before_ns"][-1]:
            notes += (f"{self.channel.name} readings do not cover the whole span: its ends are clipped",)
        low = high = joules = None
        if self.t is not None:
            e0, e1 = np.interp([t0_ns, t1_ns], self.t, self.joules)
            joules = float(e1 - e0)
        if self.steps is not None:
            low, high = self.steps.bound(t0_ns, t1_ns)
            if high is None:
                notes += (f"{self.channel.name} did not update after the span's end in these readings: no upper "
                          "bound (record past the end: a recording waits for the next update when it stops)",)
            if joules is None:
                joules = None if high is None else (low + high) / 2
                notes += (f"{self.channel.name} changed fewer than twice: no update period to interpolate with"
                          + ("; the figure is the middle of its bound" if high is not None else ""),)
            else:  # the interpolation never leaves what the counter proves (it can, by the update instants' error)
                joules = max(low, joules if high is None else min(joules, high))
            if joules is not None and high is not None and high - low > 0.2 * max(joules, 1e-12):
                notes += (f"the span covers few updates of {self.channel.name}: the energy lies in "
                          f"[{low:.3g}, {high:.3g}] J (the updates around each end)",)
        return Measurement(device, joules, self.method, (t1_ns - t0_ns) / 1e9, self.channel.name, notes,
                           self.counter_resets, low, high,
                           self.channel.name if self.method is Method.INTEGRATED else "")

    def between_updates(self, device: str) -> Measurement:
        """The counter's own measurement: the energy between its first and last updates."""
        s = self.steps
        joules = float(s.change_j[-1] - s.change_j[0])
        return Measurement(device, joules, self.method, float(s.change_ns[-1] - s.change_ns[0]) / 1e9,
                           self.channel.name, self.notes, self.counter_resets, max(0.0, joules - s.unit_j),
                           joules + s.unit_j)


def _mid_times(r: np.ndarray) -> np.ndarray:
    return r["t_before_ns"] + (r["t_after_ns"] - r["t_before_ns"]) // 2


RESET_SHARE = 0.1  # a counter that goes down restarted (a reset) if its new value is at most this share of the old


def counter_drops(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where a cumulative counter went down: (resets, bad drops), indices of the first
    reading after. A reset restarts near zero (driver reload); a drop to more than
    RESET_SHARE of the old value is no reset but an error in the log."""
    v = np.asarray(values)
    down = np.flatnonzero(v[1:] < v[:-1]) + 1
    near_zero = v[down] <= RESET_SHARE * v[down - 1]
    return down[near_zero], down[~near_zero]


def _counter_curve(c: Channel, r: np.ndarray, notes: list[str]) -> _EnergyCurve | None:
    """The energy curve of a counter's readings; None (with a note) for a counter whose
    drops are not resets."""
    v = r["value"]
    d = np.diff(v)
    neg = d < 0
    resets = 0
    _, bad = counter_drops(v) if not c.wrap else (None, np.zeros(0, int))
    if len(bad):
        k = int(bad[0])
        notes.append(f"{c.name} went down from {v[k - 1] * c.joules_per_unit:.6g} J to {v[k] * c.joules_per_unit:.6g} J "
                     "(not to near zero, so not a reset): the counter is inconsistent and is not used")
        return None
    if neg.any():
        if c.wrap:
            d = np.where(neg, d + c.wrap + 1, d)  # a wrapping counter (RAPL) went round
        else:
            # A 64-bit counter that goes down was reset (driver reload): it
            # counts again from 0, so the new value is the energy since then.
            resets = int(neg.sum())
            d = np.where(neg, v[1:], d)
            notes.append(
                f"{c.name} was reset {resets} time(s) during the run (driver reload?); energy between the "
                "last reading before a reset and the reset itself is lost"
            )
    cum = np.concatenate([[0.0], np.cumsum(d) * c.joules_per_unit])
    # the changes of the counted energy (cum), not of the raw values: a reading of 0 just
    # after a reset is a change of value but no update
    changed = np.flatnonzero(np.diff(cum) != 0) + 1  # first reading showing each new value
    u = change_instants(r["t_before_ns"], r["t_after_ns"], cum)[0]
    steps = _CounterSteps(r["t_after_ns"], cum, r["t_before_ns"][changed - 1], cum[changed], u, c.joules_per_unit)
    if len(changed) < 2:
        return _EnergyCurve(c, r, None, None, Method.COUNTER, tuple(notes), resets, steps)
    # The counter's value at each update instant u_k is the energy up to u_k. The
    # first value read belongs to the update one period before the first change, and
    # came no later than that read (a period estimated from few, late-polled changes can
    # be short: a span after the first read would otherwise fall before the curve and
    # read 0 J); after the last change, a period (and a quarter) without a change means
    # no energy (the curve stays flat), and a span ending within it is extended at the
    # power of the last period.
    u = u.astype(float)
    period = float(np.median(np.diff(u)))
    t = np.concatenate([[min(u[0] - period, float(r["t_after_ns"][0]))], u])
    e = np.concatenate([[cum[0]], cum[changed]])
    t_last = float(r["t_after_ns"][-1])
    if t_last >= u[-1] + 1.25 * period:  # a margin for the error of the estimated instants
        t, e = np.append(t, u[-1] + period), np.append(e, e[-1])
    elif t_last > u[-1]:
        slope = (e[-1] - e[-2]) / (t[-1] - t[-2])
        t, e = np.append(t, t_last), np.append(e, e[-1] + slope * (t_last - u[-1]))
    return _EnergyCurve(c, r, t, e, Method.COUNTER, tuple(notes), resets, steps)


def _power_curve(c: Channel, r: np.ndarray, notes: list[str]) -> _EnergyCurve:
    # Each value holds from its reading until the next: integrate the steps.
    t = _mid_times(r)
    joules = np.concatenate([[0.0], np.cumsum(r["value"][:-1] * c.watts_per_unit * np.diff(t) / 1e9)])
    notes.append(
        f"no usable energy counter: integrated {c.name} ({c.description}); the sensor averages only part "
        "of the time, so this is an estimate"
    )
    return _EnergyCurve(c, r, t, joules, Method.INTEGRATED, tuple(notes))


def _why_unusable(c: Channel, r: np.ndarray) -> str:
    bad = r[r["status"] != 0]
    if len(bad):
        return f"{c.name} unusable: {c.status_text(int(bad['status'][0]))}"
    return f"{c.name} unusable: fewer than two readings"


@dataclass(frozen=True)
class Availability:
    """What `phprof devices` says about a source on this machine."""

    source: str
    available: bool
    measures: str  # what it measures, in words
    reason: str = ""  # why it is missing, or how it was found
    devices: tuple[dict, ...] = ()  # per device: name and details
    unreadable: tuple[dict, ...] = ()  # devices it sees but cannot read: index and error


class PowerSource(ABC):
    """A sensor read in the background while a workload runs.

    ``start()`` begins sampling and returns once the first reading is taken;
    ``drain()`` takes the readings gathered since the last drain as a
    :class:`PowerLog` while sampling goes on; ``stop()`` ends sampling and
    returns what was left. Each of the three records a clock pair. Use
    :func:`recording` to keep everything in one log.
    """

    name: str = ""

    def __init__(self, channels: tuple[Channel, ...], settings: dict) -> None:
        self.channels = channels
        self.settings = settings
        self._pairs: list[tuple[int, int]] = []
        self._last_status: dict[int, int] = {}  # per channel index, of its last reading taken
        self._running = False
        self._lock = threading.Lock()  # start, drain and stop may come from several threads

    @classmethod
    @abstractmethod
    def probe(cls) -> Availability:
        """Whether this source works on this machine, and what it would measure."""

    @abstractmethod
    def _start(self) -> None: ...

    @abstractmethod
    def _stop(self) -> None: ...

    @abstractmethod
    def _take(self) -> tuple[np.ndarray, int]:
        """Readings gathered since the last call, and how many were dropped."""

    @property
    def running(self) -> bool:
        return self._running

    @classmethod
    def for_measuring(cls, found: Availability, interval_s: float | None = None) -> PowerSource | None:
        """A source that samples everything ``found`` (its probe) lists, for
        ``phprof devices --measure``; None when it has nothing to sample."""
        return None

    @classmethod
    def device_lines(cls, device: dict) -> list[str]:
        """One device of :meth:`probe`'s, described for a person (``phprof devices``)."""
        return [str(device)]

    def windowed_sensor(self) -> SensorModel | None:
        """The model of the averaging power field this source reads (a GPU's instant
        power), for the pauses that keep its windows from aliasing with the
        inferences; None for a source of counters only."""
        return None

    def device_names(self) -> tuple[dict[str, str], str | None]:
        """Each measured device's product name (which says what sensor it has), and
        the driver's version; ({}, None) where the source cannot tell."""
        return {}, None

    def device_ids(self) -> dict[str, str]:
        """Each measured device's physical identity, the same in every process that
        measures it (ranks of one job merge their files by it): for a device of the
        host (a CPU package, its DRAM) the host's name and the device's."""
        host = platform.node()
        return {d: f"{host}/{d}" for d in dict.fromkeys(c.device for c in self.channels)}

    def power_limits(self) -> dict[str, float]:
        """Each measured device's power limit (W), where the source can tell: no
        estimate of a device's power may exceed it."""
        return {}

    def start(self) -> None:
        with self._lock:
            if self.running:
                raise RuntimeError(f"{self.name} source is already running")
            self._pairs.append(clock_pair())
            self._last_status = {}
            self._start()
            self._running = True

    def drain(self) -> PowerLog:
        with self._lock:
            self._pairs.append(clock_pair())
            return self._chunk()

    def stop(self, settle_s: float = 0.0) -> PowerLog:
        """Ends sampling. ``settle_s`` > 0: first keep sampling, for at most that
        long, until every energy counter that answers has updated after this call
        (and twice in the readings returned), so that a span ending now has an
        update after it to bound it (see :meth:`PowerLog.energy_between`)."""
        with self._lock:
            taken: list[tuple[np.ndarray, int]] = []
            if self.running:
                if settle_s > 0:
                    taken = self._settle(time.time_ns(), settle_s)
                self._stop()
                self._running = False
            self._pairs.append(clock_pair())
            return self._chunk(taken)

    def _settle(self, after_ns: int, settle_s: float) -> list[tuple[np.ndarray, int]]:
        """Samples on until each counter whose last reading answered has changed
        after ``after_ns``, and twice in what is taken, or ``settle_s`` passed;
        returns what it took."""
        deadline = time.monotonic() + settle_s
        taken = [self._take_tracked()]
        progress = {i: _Changes() for i, c in enumerate(self.channels)
                    if c.quantity == "energy" and self._last_status.get(i) == 0}
        while True:
            readings = taken[-1][0]
            for i, p in progress.items():
                p.add(readings[readings["channel"] == i], after_ns)
            if all(p.settled for p in progress.values()) or time.monotonic() >= deadline:
                return taken
            time.sleep(0.002)
            taken.append(self._take_tracked())

    def _take_tracked(self) -> tuple[np.ndarray, int]:
        """:meth:`_take`, noting each channel's last status (whether it still answers)."""
        readings, dropped = self._take()
        for i in np.unique(readings["channel"]):
            self._last_status[int(i)] = int(readings["status"][readings["channel"] == i][-1])
        return readings, dropped

    def _chunk(self, taken: list[tuple[np.ndarray, int]] = ()) -> PowerLog:
        taken = [*taken, self._take_tracked()]
        pairs, self._pairs = self._pairs, []
        return PowerLog(self.name, self.channels, np.concatenate([r for r, _ in taken]), np.array(pairs),
                        dict(self.settings), sum(d for _, d in taken))

    def __enter__(self) -> PowerSource:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class _Changes:
    """How often one counter's value changed in readings fed in order, and how often
    after an instant (the read before the change began after it)."""

    def __init__(self) -> None:
        self.last: tuple[int, int] | None = None  # (value, t_before_ns) of the last usable reading
        self.total = self.after = 0

    def add(self, r: np.ndarray, after_ns: int) -> None:
        r = r[r["status"] == 0]
        if not len(r):
            return
        values, starts = r["value"], r["t_before_ns"]
        if self.last is not None:
            values, starts = np.r_[self.last[0], values], np.r_[self.last[1], starts]
        changed = np.flatnonzero(np.diff(values) != 0)  # the read before each change
        self.total += len(changed)
        self.after += int((starts[changed] >= after_ns).sum())
        self.last = (int(values[-1]), int(starts[-1]))

    @property
    def settled(self) -> bool:
        return self.after >= 1 and self.total >= 2


class Recording:
    """Everything a source read between entering and leaving :func:`recording`,
    the span of the ``with`` body, and the named windows marked inside it.

    One recording with many windows is how to measure short spans::

        with recording(NvmlSource(gpus=[0])) as rec:
            for i, batch in enumerate(batches):
                with rec.window(f"batch{i}"):
                    run(batch)
        for name, m in rec.energies().items():
            print(name, m.joules, m.low_j, m.high_j)

    Every window's energy is read off the same readings, between updates the
    recording saw before and after it (:meth:`PowerLog.energy_between`).
    """

    def __init__(self, source: PowerSource) -> None:
        self.source = source
        self._chunks: list[PowerLog] = []
        self.start_ns: int | None = None  # the body's span, CLOCK_REALTIME
        self.end_ns: int | None = None
        self.windows: dict[str, tuple[int, int | None]] = {}  # name -> (start_ns, end_ns); end None: open

    def drain(self) -> PowerLog:
        chunk = self.source.drain()
        self._chunks.append(chunk)
        return chunk

    @property
    def log(self) -> PowerLog:
        return PowerLog.concat(self._chunks)

    def begin_window(self, name: str) -> None:
        if name in self.windows:
            raise SourceError(f"a window named {name!r} was already begun in this recording")
        if self.end_ns is not None:
            raise SourceError("this recording has ended: begin windows inside its `with` body")
        self.windows[name] = (time.time_ns(), None)

    def end_window(self, name: str) -> None:
        start, end = self.windows.get(name, (None, None))
        if start is None:
            raise SourceError(f"no window named {name!r} was begun in this recording")
        if end is not None:
            raise SourceError(f"the window {name!r} has already ended")
        self.windows[name] = (start, time.time_ns())

    @contextmanager
    def window(self, name: str) -> Iterator[None]:
        """``with rec.window("prefill"): ...`` marks a named span of the recording."""
        self.begin_window(name)
        try:
            yield
        finally:
            self.end_window(name)

    def energy(self, device: str | None = None, window: str | None = None) -> Measurement:
        """The energy of the recording's body (or of a named window) on ``device``
        (default: the only device). See :meth:`PowerLog.energy_between`."""
        log, device = self._ended(device)
        if window is None:
            return log.energy_between(device, self.start_ns, self.end_ns)
        start, end = self.windows.get(window, (None, None))
        if start is None or end is None:
            raise SourceError(f"no ended window named {window!r} in this recording "
                              f"(windows: {', '.join(self.windows) or 'none'})")
        return log.energy_between(device, start, end)

    def energies(self, device: str | None = None) -> dict[str, Measurement]:
        """Every ended window's energy, by name, in the order they began."""
        log, device = self._ended(device)
        ended = {name: span for name, span in self.windows.items() if span[1] is not None}
        return dict(zip(ended, log.energies_between(device, ended.values())))

    def _ended(self, device: str | None) -> tuple[PowerLog, str]:
        """The log of an ended recording, and the device named (default: its only one)."""
        if self.end_ns is None:
            raise SourceError("the recording has not ended: read its energy after the `with` block")
        log = self.log
        if device is None:
            if len(log.devices) != 1:
                raise SourceError(f"name the device: this recording has {', '.join(log.devices) or 'none'}")
            device = log.devices[0]
        return log, device


@contextmanager
def recording(source: PowerSource, settle_s: float = SETTLE_S) -> Iterator[Recording]:
    """``with recording(src) as rec: ...`` then ``rec.log`` holds every reading and
    ``rec.energy()`` the energy of the body. The body starts after the source's
    first reading; when it ends, sampling goes on (at most ``settle_s``) until each
    energy counter has updated after it, so that its end is bounded too: up to two
    counter periods (20-200 ms) spent after the body."""
    rec = Recording(source)
    source.start()
    rec.start_ns = time.time_ns()
    try:
        yield rec
    finally:
        rec.end_ns = time.time_ns()
        rec._chunks.append(source.stop(settle_s=settle_s))


@dataclass(frozen=True)
class ObservedBehaviour:
    """How one channel behaved in a log: the cost of a read and how often its value changed."""

    channel: str
    readings: int
    errors: int
    reads_per_s: float
    call_us_p50: float
    call_us_p99: float
    changes: int
    change_interval_ms_median: float | None  # None: fewer than two changes seen
    change_interval_ms_p10: float | None
    change_interval_ms_p90: float | None


class BehaviourTally:
    """Accumulates :class:`ObservedBehaviour` over the chunks of a long sampling run,
    keeping only each read's cost (4 bytes) and the two readings around each
    value change, instead of every 32-byte reading."""

    def __init__(self, channels: tuple[Channel, ...]) -> None:
        self.channels = channels
        self.dropped = 0
        self._costs: dict[str, list[np.ndarray]] = {c.name: [] for c in channels}
        self._errors = dict.fromkeys(self._costs, 0)
        self._span: dict[str, list[int]] = {}
        self._around_changes: dict[str, list[np.ndarray]] = {c.name: [] for c in channels}
        self._last: dict[str, np.ndarray] = {}

    def add(self, log: PowerLog) -> None:
        self.dropped += log.dropped
        for c in self.channels:
            r = log.of(c.name)
            if not len(r):
                continue
            self._costs[c.name].append(((r["t_after_ns"] - r["t_before_ns"]) / 1e3).astype(np.float32))
            self._errors[c.name] += int((r["status"] != 0).sum())
            span = self._span.setdefault(c.name, [int(r["t_before_ns"][0]), 0])
            span[1] = int(r["t_after_ns"][-1])
            ok, changed = _changes(np.concatenate([self._last[c.name], r]) if c.name in self._last else r)
            if len(ok):
                self._around_changes[c.name].append(ok[np.sort(np.r_[changed - 1, changed])])
                self._last[c.name] = ok[-1:]

    def result(self) -> list[ObservedBehaviour]:
        out = []
        for c in self.channels:
            costs = np.concatenate(self._costs[c.name]) if self._costs[c.name] else np.empty(0)
            t0, t1 = self._span.get(c.name, (0, 0))
            kept = self._around_changes[c.name]
            lo, hi = value_changes(np.unique(np.concatenate(kept))) if kept else (np.empty(0), np.empty(0))
            gaps = np.diff((lo + hi) / 2) / 1e6
            pct = (lambda q: float(np.percentile(gaps, q))) if len(gaps) else (lambda q: None)
            out.append(
                ObservedBehaviour(
                    c.name,
                    len(costs),
                    self._errors[c.name],
                    len(costs) / ((t1 - t0) / 1e9) if t1 > t0 else 0.0,
                    float(np.percentile(costs, 50)) if len(costs) else float("nan"),
                    float(np.percentile(costs, 99)) if len(costs) else float("nan"),
                    len(lo),
                    pct(50),
                    pct(10),
                    pct(90),
                )
            )
        return out


def observed_behaviour(log: PowerLog) -> list[ObservedBehaviour]:
    """Per channel: read cost (t_after - t_before) and the intervals between
    value changes (midpoints of the brackets from :func:`value_changes`).
    Meaningful on a log taken without ``changed_only``."""
    tally = BehaviourTally(log.channels)
    tally.add(log)
    return tally.result()
