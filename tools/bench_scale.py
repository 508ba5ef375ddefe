#!/usr/bin/env python3
"""Attribution at scale: 1,000,000 kernel events and 100,000 power samples.

Writes a synthetic trace file (a 48-layer model's kernels on one GPU, 1,000
inferences of ~75 ms with random pauses, ~90 s, a 1 kHz poll of the instant power field and the energy
counter of a 100 ms / 25 ms sensor), then, in a fresh process each, times
loading it, attributing it, and storing the results, and reads the process's
peak resident memory. Targets: <= 10 s and <= 2 GiB.

    python tools/bench_scale.py [--kernels 1000000] [--samples 100000]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_trace(path: Path, kernels: int, samples: int, inferences: int = 1000, layers: int = 48) -> None:
    from phprof.sources import READING_DTYPE, Channel, PowerLog
    from phprof.store import EVENT_DTYPE, INFERENCE_DTYPE, PHASE_DTYPE, STACK_DTYPE, Kind, TraceWriter

    rng = np.random.default_rng(0)
    scopes = ["Model"] + [f"layers.{i}" for i in range(layers)]
    scopes += [f"layers.{i}.{part}" for i in range(layers) for part in ("attn", "mlp", "norm")]
    strings = scopes + [f"kernel_{k}" for k in range(64)]
    # stacks: root -> Model -> layers.i -> layers.i.part
    stacks = [(0, 1)]  # stack 1: Model (string ids are offset by 1: string 0 is the root's "")
    part_stack = {}
    for i in range(layers):
        stacks.append((1, 2 + i))
        layer_stack = len(stacks)
        for j, part in enumerate(("attn", "mlp", "norm")):
            stacks.append((layer_stack, 2 + layers + 3 * i + j))
            part_stack[(i, j)] = len(stacks)
    leaf_stacks = np.array(list(part_stack.values()), np.uint32)
    level_w = rng.uniform(120, 650, len(leaf_stacks))
    per_inf = kernels // inferences
    t0 = time.time_ns()
    ev = np.zeros(kernels, EVENT_DTYPE)
    inf = np.zeros(inferences, INFERENCE_DTYPE)
    k = 0
    start = t0
    for i in range(inferences):
        durations = rng.uniform(20_000, 120_000, per_inf).astype(np.int64)  # 20-120 us kernels
        gaps = rng.uniform(1_000, 10_000, per_inf).astype(np.int64)
        ends = start + np.cumsum(durations + gaps)
        sl = slice(k, k + per_inf)
        ev["start_ns"][sl], ev["end_ns"][sl] = ends - durations, ends
        ev["stack"][sl] = leaf_stacks[np.arange(per_inf) * len(leaf_stacks) // per_inf]
        ev["name"][sl] = 1 + len(scopes) + rng.integers(0, 64, per_inf)
        ev["inference"][sl], ev["device"][sl], ev["kind"][sl], ev["op"][sl] = i, 0, Kind.KERNEL, -1
        inf[i] = (i, start, ends[-1] + 50_000, 0, start, ends[-1] + 50_000, per_inf)
        k += per_inf
        start = int(ends[-1]) + int(rng.uniform(2e6, 25e6))  # a random pause: the windows see every phase
    # the sensor: mean true power over 25 ms windows every 100 ms, polled at 1 kHz
    poll = t0 + np.arange(samples, dtype=np.int64) * 1_000_000
    updates = poll[::100]
    label_of = np.searchsorted(leaf_stacks, ev["stack"])
    idle_w = 80.0
    # windows' mean power from the kernels (vectorised per window through sorted starts)
    order = np.argsort(ev["start_ns"])
    s_all, e_all, p_all = ev["start_ns"][order], ev["end_ns"][order], level_w[label_of[order]]
    cum_e = np.concatenate([[0.0], np.cumsum((e_all - s_all) * (p_all - idle_w))])
    lo, hi = np.searchsorted(s_all, updates - 25_000_000), np.searchsorted(s_all, updates)
    busy = (cum_e[hi] - cum_e[lo]) / 25_000_000  # approximate at the edges: the benchmark is about time
    watts = idle_w + busy
    value = np.repeat(watts * 1000, 100)[:samples]
    energy_mj = np.cumsum(np.repeat(watts, 100)[:samples] * 1e-3 * 1000)
    readings = np.zeros(2 * samples, READING_DTYPE)
    readings["t_before_ns"][0::2] = readings["t_before_ns"][1::2] = poll
    readings["t_after_ns"][0::2] = readings["t_after_ns"][1::2] = poll + 20_000
    readings["value"][0::2], readings["channel"][0::2] = energy_mj.astype(np.int64), 0
    readings["value"][1::2], readings["channel"][1::2] = value.astype(np.int64), 1
    readings["seq"] = np.arange(2 * samples) // 2
    channels = (Channel("gpu0.energy", "gpu0", "energy", "mJ", "synthetic counter", None, "nvml"),
                Channel("gpu0.power_instant", "gpu0", "power", "mW", "synthetic instant power", None, "nvml"))
    meta = {"model": "synthetic-48-layers", "task": "text-classification", "options": {"batch_size": 1},
            "sensor": {"source": "nvml", "devices": {"gpu0": "NVIDIA H100 80GB HBM3"}}}
    w = TraceWriter(path, meta, overwrite=True)
    w.append_strings(strings)
    w.append_stacks(np.array(stacks, dtype=STACK_DTYPE))
    w.append_window(ev, inf, np.zeros(0, dtype=PHASE_DTYPE),
                    (0, 0, inferences - 1, int(inf["start_ns"][0]), int(inf["end_ns"][-1]), kernels))
    w.append_power(PowerLog("nvml", channels, readings))
    w.close("complete")


STEP = """
import json, resource, sys, time
t = time.perf_counter()
from phprof import load
from phprof.attribution import attribute
from phprof.store import write_results
imported = time.perf_counter()
trace = load(sys.argv[1])
loaded = time.perf_counter()
results = attribute(trace)
attributed = time.perf_counter()
write_results(sys.argv[1], results)
stored = time.perf_counter()
print(json.dumps({"import": imported - t, "load": loaded - imported, "attribute": attributed - loaded,
                  "store": stored - attributed, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "method": results.method.text(), "updates": results.sensor_updates,
                  "labels": len(results.layers) - 1, "groups": len(results.groups),
                  "kernels": len(results.kernels)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=100_000, help="sampler polls (each reads 2 fields)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    path = Path(tempfile.mkdtemp(prefix="phprof-scale-")) / "scale.h5"
    t = time.perf_counter()
    write_trace(path, args.kernels, args.samples)
    print(f"synthetic trace: {args.kernels:,} kernels, {args.samples:,} polls x 2 fields, "
          f"{path.stat().st_size / 2**20:.0f} MiB, written in {time.perf_counter() - t:.1f} s")
    print("| run | load (s) | attribute (s) | store results (s) | load+attribute+store (s) | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for i in range(args.repeat):
        out = subprocess.run([sys.executable, "-c", STEP, str(path)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        total = r["load"] + r["attribute"] + r["store"]
        print(f"| {i + 1} | {r['load']:.2f} | {r['attribute']:.2f} | {r['store']:.2f} | {total:.2f} | "
              f"{r['rss_mib']:.0f} |")
    print(f"method: {r['method']}; {r['updates']} sensor updates, {r['labels']} labels, {r['groups']} resolved, "
          f"{r['kernels']} kernel names; targets: <= 10 s, <= 2048 MiB (python and imports excluded from the "
          f"times, included in the memory; import took {r['import']:.1f} s)")


if __name__ == "__main__":
    main()
