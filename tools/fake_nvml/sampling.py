"""What phprof's native sampler would record from the fake, on a simulated clock.

The fake's readings are a deterministic function of time and of the power schedule: a read at
instant t returns the update the field shows at t (``update_index_at``), whose value the
controller computes for any t (``power_at``, ``counter_at``), past or future. So a test that
needs realistic sensor readings only to feed pure-Python logic (the estimator, the sensor fit,
energy curves) can schedule the signal with ``set_power_at`` and poll the fake at simulated
instants, without waiting for them to happen::

    start = fake.update_visible_at(0, "power_instant", k) + ...       # anywhere after now
    ...  fake.set_power_at(0, watts, t, tag)  ...                      # the schedule
    log = sampling.power_log(fake, start - 100_000_000, end + 300_000_000)
    log.energy("gpu0")                                                 # a phprof PowerLog

The polling mirrors ``poll_once`` of csrc/sampler.cpp with a perfect clock: poll p begins at
``t0 + p * interval`` (back to back when ``interval_ns`` is 0), reads each channel in turn
(devices in the order given, fields in phprof's canonical order), each read taking ``read_ns``
with the fake's read instant in its middle; every reading of a poll carries the poll number; a
field whose status is NOT_SUPPORTED (3) or FUNCTION_NOT_FOUND (13) gives one reading with that
status and value 0, and is not read again. The native sampler is late now and then (the OS);
this one never is. tests/test_sampler.py checks once, against a real sampling run, that the two
see the same updates, with the same values, inside brackets that agree.
"""
from __future__ import annotations

import numpy as np

FIELDS = ("energy", "power_instant", "power_average")  # csrc/sampler.cpp's order (kFieldNames)
NOT_POLLED_AGAIN = (3, 13)  # NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_FUNCTION_NOT_FOUND

# The native sampler's record layout (phprof.sources.READING_DTYPE; tests check they agree).
READING_DTYPE = np.dtype(
    {
        "names": ["t_before_ns", "t_after_ns", "value", "seq", "channel", "status"],
        "formats": ["<i8", "<i8", "<i8", "<u4", "<u2", "<u2"],
        "offsets": [0, 8, 16, 24, 28, 30],
        "itemsize": 32,
    }
)


def channels(devices=(0,), fields=None) -> list[tuple[int, str]]:
    """(device, field) of each channel, in the order the native sampler reads them."""
    return [(d, f) for d in devices for f in FIELDS if fields is None or f in fields]


def readings(fake, t0_ns: int, t1_ns: int, devices=(0,), fields=None, interval_ns: int = 1_000_000,
             read_ns: int = 2_000) -> np.ndarray:
    """The readings (READING_DTYPE, in poll order) of a sampler polling the fake every
    ``interval_ns`` from ``t0_ns`` while a poll can start at or before ``t1_ns``."""
    chans = channels(devices, fields)
    if not chans:
        raise ValueError("nothing to sample: no device or no known field")
    if read_ns < 2:
        raise ValueError("a read takes at least 2 ns (its instant lies inside it)")
    period = interval_ns if interval_ns > 0 else len(chans) * read_ns
    if period < len(chans) * read_ns:
        raise ValueError(f"{len(chans)} reads of {read_ns} ns do not fit in a {interval_ns} ns interval")
    n_polls = (int(t1_ns) - int(t0_ns)) // period + 1
    if n_polls < 1:
        raise ValueError("t1_ns is before t0_ns")
    poll_start = int(t0_ns) + period * np.arange(n_polls, dtype=np.int64)
    parts = []
    for i, (dev, field) in enumerate(chans):
        status = fake.get_model(dev, field).status
        n = 1 if status in NOT_POLLED_AGAIN else n_polls
        r = np.zeros(n, READING_DTYPE)
        r["t_before_ns"] = poll_start[:n] + i * read_ns
        r["t_after_ns"] = r["t_before_ns"] + read_ns
        r["seq"] = np.arange(n, dtype=np.uint32)
        r["channel"] = i
        r["status"] = status
        if status == 0:
            r["value"] = _values(fake, dev, field, r["t_before_ns"] + read_ns // 2)
        parts.append(r)
    out = np.concatenate(parts)
    return out[np.lexsort((out["channel"], out["seq"]))]


def _values(fake, dev: int, field: str, t_read: np.ndarray) -> np.ndarray:
    """The field's value at each read instant: one controller call per update shown (a read
    shows update k = update_index_at(t), whose value depends on k only)."""
    v0 = fake.update_visible_at(dev, field, 0)
    period = fake.update_visible_at(dev, field, 1) - v0
    k = (t_read - v0) // period  # the same floor division as the fake's grid_index_visible
    ks, first = np.unique(k, return_index=True)
    read = (lambda t: fake.counter_at(dev, t)) if field == "energy" else (lambda t: fake.power_at(dev, field, t))
    shown = np.array([read(int(t_read[j])) for j in first], dtype=np.int64)
    return shown[np.searchsorted(ks, k)]


def power_log(fake, t0_ns: int, t1_ns: int, gpus=(0,), fields=None, interval_ns: int = 1_000_000,
              read_ns: int = 2_000):
    """A phprof PowerLog of :func:`readings`, with the channels NvmlSource(gpus, fields) has
    and clock pairs at both ends (monotonic = realtime minus a constant)."""
    from phprof.sources import READING_DTYPE as PHPROF_DTYPE
    from phprof.sources import Channel, PowerLog
    from phprof.sources.nvml import FIELDS as DESCRIPTIONS

    r = readings(fake, t0_ns, t1_ns, gpus, fields, interval_ns, read_ns)
    if r.dtype != PHPROF_DTYPE:
        raise TypeError("the fake clock's record layout is not phprof's READING_DTYPE")
    chans = tuple(Channel(f"gpu{g}.{f}", f"gpu{g}", *DESCRIPTIONS[f]) for g, f in channels(gpus, fields))
    pairs = np.array([[t0_ns, t0_ns], [r["t_after_ns"].max(), r["t_after_ns"].max()]], np.int64) - [[10**12, 0]]
    settings = {"library": str(fake.lib_path), "gpus": list(gpus), "fields": [f for _, f in channels(gpus[:1], fields)],
                "interval_ns": interval_ns, "changed_only": False, "simulated": True}
    return PowerLog("nvml", chans, r.view(PHPROF_DTYPE), pairs, settings)


def settled_at(fake, device: int, field: str, t_ns: int) -> int:
    """The instant (ns) from which a power field shows only updates whose averaging window
    begins at or after ``t_ns``: after a change of the true power at t_ns, readings before this
    instant may still show (part of) the old level."""
    m = fake.get_model(device, field)
    window, lag = round(m.window_s * 1e9), round(m.lag_s * 1e9)
    # update k shows the window [u_k - window, u_k] from u_k + lag: the first k with u_k >= t + window
    k = fake.update_index_at(device, field, int(t_ns) + window + lag)  # the last k with u_k <= t + window
    if fake.update_visible_at(device, field, k) - lag < int(t_ns) + window:
        k += 1
    return fake.update_visible_at(device, field, k)
