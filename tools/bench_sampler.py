#!/usr/bin/env python3
"""Native sampler against a pure-Python pynvml polling thread, side by side in one run.

Both poll the same three fields (energy counter, instant power, 1 s average)
of the fake NVML library (tools/fake_nvml), while the main thread runs a
pure-Python loop. Printed per configuration:
  - polls/s achieved (target for the native sampler as fast as possible: >= 20 kHz);
  - CPU time of the sampling thread, as a share of one core (target at 1 kHz: <= 5%);
  - interval between poll starts: p50, and |interval - target| p50/p99 (jitter);
  - how much the sampling slows the concurrent Python loop.
The slowdown is measured in short paired segments, in ABBA order (no sampler,
sampler, sampler, no sampler), so each sampler segment is compared with
baselines taken right next to it; the median over all pairs is shown with a
bootstrap 95% interval. Two measures: the loop's rate (what a user feels, but
noisy where the CPU's speed drifts), and the share of wall time the loop's
thread was off the CPU (GIL waits, preemption), which CPU speed does not move.

    python tools/bench_sampler.py [--pairs 12] [--segment 0.25] [--latency-us 0]

--latency-us makes every fake NVML call busy-wait that long, to mimic a real
driver (real calls take microseconds to hundreds of microseconds).
"""
from __future__ import annotations

import argparse
import ctypes
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fake_nvml  # noqa: E402

from phprof.sources import NvmlSource  # noqa: E402

FIELD_IDS = {"power_instant": 186, "power_average": 185}


class Loop(float):
    """Iterations per second of the loop, with the share of its wall time it was off the CPU."""

    off_cpu: float


def python_loop(seconds: float) -> Loop:
    """A pure-Python workload (bytecode, dicts, small ints). Returns its rate, and how much of
    the wall time the thread was not running (waiting for the GIL, or preempted)."""
    d: dict[int, int] = {}
    n = 0
    c0 = time.thread_time()
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        for i in range(1000):
            d[i & 63] = d.get(i & 63, 0) + i * 3 % 7
        n += 1000
        t = time.perf_counter()
        if t >= end:
            rate = Loop(n / (t - t0))
            rate.off_cpu = 1 - (time.thread_time() - c0) / (t - t0)
            return rate


class NativeSampler:
    """phprof's native sampling thread."""

    def __init__(self, lib: str, interval_s: float | None) -> None:
        self.src = NvmlSource(gpus=[0], library=lib, interval_s=interval_s)

    def run(self, seconds: float) -> tuple[float, dict]:
        before = self.src.stats()
        self.src.start()
        ops = python_loop(seconds)
        log = self.src.stop()
        after = self.src.stats()
        r = log.readings
        return ops, {
            "polls": after["polls"] - before["polls"],
            "cpu_s": (after["thread_cpu_ns"] - before["thread_cpu_ns"]) / 1e9,
            "span_s": (log.clock_pairs[-1, 1] - log.clock_pairs[0, 1]) / 1e9,
            "dropped": log.dropped,
            # poll start times from the readings kept (the first ones, when the ring overflowed)
            "starts_ns": r["t_before_ns"][np.r_[True, np.diff(r["seq"].astype(np.int64)) != 0]],
        }


class PynvmlThread:
    """A Python thread polling the same fields through pynvml (ctypes)."""

    def __init__(self, lib: str, interval_s: float | None) -> None:
        import pynvml

        self.pynvml = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.interval_s = interval_s

    def run(self, seconds: float) -> tuple[float, dict]:
        nv, handle, interval_s = self.pynvml, self.handle, self.interval_s
        stop = threading.Event()
        out: dict = {}

        def poll() -> None:
            starts = []
            cpu0 = time.thread_time_ns()
            nxt = time.perf_counter()
            while not stop.is_set():
                starts.append(time.time_ns())
                nv.nvmlDeviceGetTotalEnergyConsumption(handle)
                nv.nvmlDeviceGetFieldValues(handle, [FIELD_IDS["power_instant"]])
                nv.nvmlDeviceGetFieldValues(handle, [FIELD_IDS["power_average"]])
                if interval_s:
                    nxt += interval_s
                    delay = nxt - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    else:
                        nxt = time.perf_counter()
            out["cpu_s"] = (time.thread_time_ns() - cpu0) / 1e9
            out["starts_ns"] = np.array(starts, dtype=np.int64)

        th = threading.Thread(target=poll)
        t0 = time.time_ns()
        th.start()
        ops = python_loop(seconds)
        stop.set()
        th.join()
        out.update(polls=len(out["starts_ns"]), span_s=(time.time_ns() - t0) / 1e9, dropped=0)
        return ops, out


def measure(sampler, pairs: int, segment: float) -> dict:
    """ABBA pairs: the change of the Python loop's rate with the sampler running."""
    ratios, off_cpu, runs, baselines = [], [], [], []
    for _ in range(pairs):
        a1 = python_loop(segment)
        ops1, run1 = sampler.run(segment)
        ops2, run2 = sampler.run(segment)
        a2 = python_loop(segment)
        ratios += [ops1 / a1, ops2 / a2]
        baselines += [a1, a2]
        off_cpu += [ops1.off_cpu - a1.off_cpu, ops2.off_cpu - a2.off_cpu]
        runs += [run1, run2]
    span = sum(r["span_s"] for r in runs)
    gaps = np.concatenate([np.diff(r["starts_ns"]) for r in runs]) / 1e3  # us
    return {
        "polls_per_s": sum(r["polls"] for r in runs) / span,
        "cpu_share": sum(r["cpu_s"] for r in runs) / span,
        "gaps_us": gaps,
        "dropped": sum(r["dropped"] for r in runs),
        "change": np.array(ratios) - 1,
        "off_cpu": np.array(off_cpu),
        "baselines": baselines,
    }


def median_ci(x: np.ndarray, rng=np.random.default_rng(0)) -> tuple[float, float, float]:
    """Median and its bootstrap 95% confidence interval."""
    boot = np.median(rng.choice(x, size=(2000, len(x))), axis=1)
    return float(np.median(x)), *np.percentile(boot, [2.5, 97.5])


def row(name: str, m: dict, interval_s: float | None) -> list[str]:
    gaps = m["gaps_us"]
    jitter = np.abs(gaps - interval_s * 1e6) if interval_s else None
    med, lo, hi = (100 * v for v in median_ci(m["change"]))
    off, off_lo, off_hi = (100 * v for v in median_ci(m["off_cpu"]))
    return [
        name,
        f"{m['polls_per_s']:,.0f}",
        f"{100 * m['cpu_share']:.1f}%",
        f"{np.percentile(gaps, 50):.1f} us",
        f"{np.percentile(jitter, 50):.1f} us" if interval_s else "-",
        f"{np.percentile(jitter, 99):.1f} us" if interval_s else "-",
        f"{m['dropped']:,}",
        f"{med:+.1f}% [{lo:+.1f}, {hi:+.1f}]",
        f"{off:+.2f} pt [{off_lo:+.2f}, {off_hi:+.2f}]",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=12, help="ABBA pairs per configuration (default 12)")
    ap.add_argument("--segment", type=float, default=0.25, help="seconds per segment (default 0.25)")
    ap.add_argument("--latency-us", type=float, default=0.0, help="busy-wait per fake NVML call (default 0)")
    args = ap.parse_args()

    try:
        import pynvml
    except ImportError:
        sys.exit("this benchmark compares against pynvml: pip install nvidia-ml-py")

    workdir = Path(tempfile.mkdtemp(prefix="phprof-bench-"))
    lib = str(fake_nvml.build(workdir))
    fake = fake_nvml.FakeNvml(lib, workdir / "state", n_devices=1, preset="a100", seed=0)
    fake.set_call_latency(0, args.latency_us * 1e-6)
    pynvml.nvmlLib = ctypes.CDLL(lib)  # pynvml would otherwise load the driver's libnvidia-ml.so.1
    pynvml.nvmlInit()

    configs = [
        ("native, 1 kHz", NativeSampler, 1e-3),
        ("native, as fast as NVML answers", NativeSampler, None),
        ("pynvml thread, 1 kHz", PynvmlThread, 1e-3),
        ("pynvml thread, as fast as NVML answers", PynvmlThread, None),
    ]
    rows = []
    baseline_rates = []
    for name, cls, interval in configs:
        print(f"\r{name:<45}", end="", file=sys.stderr, flush=True)
        m = measure(cls(lib, interval), args.pairs, args.segment)
        baseline_rates += m["baselines"]
        rows.append(row(name, m, interval))
    cv = 100 * np.std(baseline_rates) / np.mean(baseline_rates)
    print("\r" + " " * 45 + "\r", end="", file=sys.stderr)

    header = ["sampler", "polls/s", "thread CPU", "interval p50", "|jitter| p50", "|jitter| p99", "dropped",
              "loop rate [95% CI]",
              "loop off-CPU [95% CI]"]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"

    print(
        f"phprof sampler benchmark: fake NVML (a100 preset, {args.latency_us:g} us per call), 3 fields per poll, "
        f"{args.pairs} ABBA pairs x {args.segment:g} s per configuration, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs"
    )
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    print(
        "polls/s and thread CPU: the sampling thread's own counters over the sampled time. Interval and jitter: "
        "between poll starts; where 'dropped' > 0 the ring was full (nothing drained it during a segment) and "
        "only the readings kept count.\nloop rate: change of the main thread's pure-Python iterations/s against the "
        f"adjacent no-sampler segments (negative = slower); the no-sampler segments alone varied by {cv:.0f}% "
        "(coefficient of variation) in this run, hence the wide intervals.\nloop off-CPU: change of the share of wall time the main thread was not "
        "running (waiting for the GIL or preempted), in percentage points: insensitive to CPU speed."
    )
    pynvml.nvmlShutdown()
    fake.close()


if __name__ == "__main__":
    main()
