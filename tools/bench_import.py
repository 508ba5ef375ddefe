#!/usr/bin/env python3
"""Time and peak memory of importing (and attributing) large Kineto traces (issue 16's memory check).

The V100 ResNet trace of ../shared/data/kineto is tiled (tools/bench_real_traces.py's tiling: its
steps laid out one after another with random gaps, ids renumbered) to about each asked number of
events, written as plain JSON with a power log, then ``phprof.import_trace`` and
``phprof.attribution.attribute`` run in a fresh child process each, which reports its wall time and
peak resident memory (ru_maxrss). ``--compare DIR`` runs the same children on another checkout of
phprof too (a folder holding ``phprof/``, e.g. ``git archive`` of main with a ``phprof`` link to
``profiler``), so that the two are measured side by side on the same files and load.

    python tools/bench_import.py [--events 1e6,1e7] [--no-attribute] [--compare DIR] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
from bench_real_traces import KINETO, TRACES, power_log, tile  # noqa: E402

EVENTS_PER_S = 3_088_492 / 60.1  # the tiled V100 trace (bench_real_traces, seed 0)


def child(folder: Path, attribute: bool) -> dict:
    import phprof
    from phprof.store import load

    t = time.perf_counter()
    phprof.import_trace(folder / "trace.json", folder / "power.csv", folder / "out.h5", overwrite=True)
    out = {"import_s": time.perf_counter() - t,
           "import_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if attribute:
        from phprof.attribution import attribute as attribute_trace
        t = time.perf_counter()
        attribute_trace(load(folder / "out.h5"))
        out["attribute_s"] = time.perf_counter() - t
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", default="1e6,1e7", help="about how many events each trace holds")
    ap.add_argument("--no-attribute", action="store_true", help="import only")
    ap.add_argument("--compare", type=Path, help="another checkout's folder (holding phprof/) to run beside")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, not args.no_attribute)))
        return
    from phprof.sources.sensors import published_power_limit_w

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-import-"))
    load = os.getloadavg()
    print(f"work folder: {work}; load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs", flush=True)
    print("| events | JSON (MB) | phprof | import (s) | import peak (MB) | attribute (s) | peak (MB) |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for target in (float(x) for x in args.events.split(",")):
        folder = work / f"{int(target)}"
        folder.mkdir(parents=True, exist_ok=True)
        info = folder / "tile.json"
        if not info.exists():
            w = tile(KINETO / TRACES["v100"], target / EVENTS_PER_S, np.random.default_rng(0), folder / "trace.json")
            power_log(w, "a100", 0, published_power_limit_w(w["device_name"]), folder / "power.csv")
            info.write_text(json.dumps({"events": w["events"]}))
        events = json.loads(info.read_text())["events"]
        size = (folder / "trace.json").stat().st_size / 2**20
        runs = [("this", None)] + ([("compare", args.compare)] if args.compare else [])
        for what, path in runs:
            env = dict(os.environ)
            if path is not None:
                env["PYTHONPATH"] = str(path)
            cmd = [sys.executable, __file__, "--child", str(folder)] + (["--no-attribute"] if args.no_attribute else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode:
                print(f"| {events:,} | {size:.0f} | {what} | failed: {proc.stderr.strip().splitlines()[-1][:80]} |||| ")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            attr = f"{r['attribute_s']:.1f}" if "attribute_s" in r else "-"
            print(f"| {events:,} | {size:.0f} | {what if path is None else path} | {r['import_s']:.1f} | "
                  f"{r['import_peak_mb']:.0f} | {attr} | {r['peak_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
