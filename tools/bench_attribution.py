#!/usr/bin/env python3
"""Per-module energy of a real model, estimated from a windowed sensor, against the truth.

A tiny gpt2 runs on this CPU under `phprof trace`; hooks make every module draw
its own known power in the fake NVML (a100 sensor model: 101 ms update, 25 ms
window, 1% noise), and the fake keeps each module's true energy. Printed per
module: true energy, phprof's estimate (windowed least squares) with its
interval, and the naive time-proportional split, each error as a share of the
run's total energy.

    python tools/bench_attribution.py [--inferences 450] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fake_nvml  # noqa: E402
from fake_nvml import power_per_module  # noqa: E402

from phprof import load  # noqa: E402
from phprof.attribution.attribute import attribute  # noqa: E402
from phprof.attribution.timeline import OUTSIDE  # noqa: E402
from phprof.tracing.run import trace  # noqa: E402

warnings.filterwarnings("ignore")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inferences", type=int, default=450)
    ap.add_argument("--seed", type=int, default=0, help="the fake sensor's seed (noise, phase)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="phprof-bench-"))
    lib = fake_nvml.build(work)
    fake = fake_nvml.FakeNvml(lib, work / "state", n_devices=1, preset="a100", seed=args.seed)
    os.environ["PHPROF_NVML_LIB"] = str(lib)
    levels, tags = {}, {}
    out = work / "t.h5"
    trace("gpt2", inferences=args.inferences, warmup=0, output=out, size="tiny", idle_s=0.2, source="nvml",
          setup=power_per_module(fake, levels, tags))
    fake.set_power(0, 60.0, tag=0)
    t = load(out)
    est = attribute(t)
    total = est.total_j
    active = total - est.idle.energy_j
    seconds = sum(x.seconds for x in est.labels)
    rows = []
    for x in est.labels:
        if x.label == OUTSIDE:
            continue
        truth = fake.tag_energy(0, tags[x.label])
        naive = active * x.seconds / seconds
        rows.append((x.label, x.seconds, truth, x.energy_j, x.low_j, x.high_j, naive))
    rows.sort(key=lambda r: -r[2])
    print(f"tiny gpt2, {len(t.inferences)} inferences, {est.updates} sensor updates, {len(est.labels)} labels; "
          f"total {total:.1f} J (energy counter); method: {est.method}")
    print("| module | time (s) | true (J) | phprof (J) [90% interval] | err % total | naive (J) | err % total |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, sec, truth, e, lo, hi, naive in rows:
        print(f"| {name} | {sec:.3f} | {truth:.2f} | {e:.2f} [{lo:.2f}, {hi:.2f}] | {100 * (e - truth) / total:+.2f} "
              f"| {naive:.2f} | {100 * (naive - truth) / total:+.2f} |")
    err = np.array([abs(r[3] - r[2]) for r in rows]) / total
    nerr = np.array([abs(r[6] - r[2]) for r in rows]) / total
    inside = np.mean([r[4] <= r[2] <= r[5] for r in rows])
    print(f"worst error: phprof {err.max():.2%}, naive {nerr.max():.2%}; sum of |errors|: phprof {err.sum():.2%}, "
          f"naive {nerr.sum():.2%}; truth inside phprof's 90% interval for {inside:.0%} of modules")


if __name__ == "__main__":
    main()
