"""Power logs the tests write beside a trace, for `phprof attribute` / `phprof.import_trace`."""
from __future__ import annotations

import csv
from pathlib import Path


def power_csv(path: Path, t0_ns: int, t1_ns: int, watts=lambda i, t: 200.0, step_ns: int = 1_000_000) -> Path:
    """A power log on the trace's clock from 200 ms before `t0_ns` to 200 ms after `t1_ns`: the
    instant power ``watts(i, t_ns)`` of the i-th row every `step_ns`, and its cumulative energy."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp_ns", "power_w", "energy_j"])
        e = 0.0
        for i, t in enumerate(range(t0_ns - 200_000_000, t1_ns + 200_000_000, step_ns)):
            p = watts(i, t)
            e += p * step_ns / 1e9
            w.writerow([t, f"{p:.3f}", f"{e:.6f}"])
    return path
