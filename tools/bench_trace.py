#!/usr/bin/env python3
"""The cost of tracing, measured side by side in one run.

1. Time per inference of a plain loop (the model's inferences, nothing else)
   against the same model under `phprof.trace` (module scopes, torch.profiler,
   power sampler), in alternating rounds; the median round of each is shown.
   Two ratios: per traced inference (the inferences' own spans, as the trace
   records them: what the profiler adds to the measured work; target <= 1.10 on
   CPU, <= 1.05 on GPU) and per inference of the whole run (also the pauses in
   which each window is saved).
2. Peak memory (max RSS of a fresh process) tracing 1,000 and 10,000
   inferences of a tiny model: streaming keeps it flat (target: ratio <= 1.2).

    python tools/bench_trace.py [--model ID] [--inferences 300] [--rounds 3] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import torch

from phprof import load, models
from phprof.tracing.run import trace

warnings.filterwarnings("ignore")


def plain_loop(model, task, inputs, n: int, device: str) -> float:
    """Seconds per inference of the bare loop."""
    t0 = time.perf_counter()
    for _ in range(n):
        models.infer(model, task, inputs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def traced(model_id: str, n: int, device: str, size: str, out: str) -> tuple[float, float]:
    """Seconds per traced inference (their spans), and per inference from the first
    inference's start to the last one's end (the pauses that save windows included)."""
    s = trace(model_id, inferences=n, warmup=0, output=out, size=size, device=device, idle_s=0,
              source="none", overwrite=True)
    inf = load(out).inferences
    return s.seconds_per_inference, (inf["end_ns"].max() - inf["start_ns"].min()) / 1e9 / n


PEAK = """
import json, resource, sys, warnings
warnings.filterwarnings("ignore")
from phprof.tracing.run import trace
s = trace(sys.argv[1], inferences=int(sys.argv[2]), warmup=0, output=sys.argv[3], size="tiny", idle_s=0,
          source="none", overwrite=True)
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "status": s.status}))
"""


def peak_memory(model_id: str, n: int, out: str) -> int:
    p = subprocess.run([sys.executable, "-c", PEAK, model_id, str(n), out], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if p.returncode:
        sys.exit(f"tracing {n} inferences failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])["peak_kib"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="distilbert-base-uncased-finetuned-sst-2-english")
    ap.add_argument("--size", default="full", choices=["full", "tiny"])
    ap.add_argument("--inferences", type=int, default=300, help="per round (default 300)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--memory-model", default="bert-base-uncased", help="tiny model for the memory test")
    args = ap.parse_args()

    spec = models.resolve(args.model)
    task = spec.task
    model = models.build(spec, task, size=args.size, device=args.device)
    inputs = models.make_inputs(models.tiny(spec) if args.size == "tiny" else spec, task, device=args.device)
    plain_loop(model, task, inputs, 10, args.device)  # warm up
    tmp = tempfile.mkdtemp(prefix="phprof-bench-")
    plain, spans, whole = [], [], []
    for r in range(args.rounds):
        print(f"\rround {r + 1}/{args.rounds}", end="", file=sys.stderr, flush=True)
        plain.append(plain_loop(model, task, inputs, args.inferences, args.device))
        s, w = traced(args.model, args.inferences, args.device, args.size, os.path.join(tmp, "t.h5"))
        spans.append(s)
        whole.append(w)
    print("\r" + " " * 30 + "\r", end="", file=sys.stderr)
    p, s, w = statistics.median(plain), statistics.median(spans), statistics.median(whole)

    print(f"phprof trace overhead: {args.model} ({args.size}, {task}) on {args.device}, {args.inferences} "
          f"inferences x {args.rounds} alternating rounds (median), torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs")
    print("| run | ms per inference | ratio to plain loop |")
    print("|---|---:|---:|")
    print(f"| plain loop | {1e3 * p:.2f} | 1.00 |")
    print(f"| phprof trace, per traced inference (spans) | {1e3 * s:.2f} | {s / p:.2f} |")
    print(f"| phprof trace, whole run incl. saving windows | {1e3 * w:.2f} | {w / p:.2f} |")

    print(f"\npeak memory tracing a tiny {args.memory_model} (fresh process each):", file=sys.stderr)
    k1 = peak_memory(args.memory_model, 1000, os.path.join(tmp, "m1.h5"))
    k10 = peak_memory(args.memory_model, 10000, os.path.join(tmp, "m10.h5"))
    print(f"\npeak memory, tiny {args.memory_model}, fresh process each")
    print("| inferences | max RSS (MiB) |")
    print("|---:|---:|")
    print(f"| 1,000 | {k1 / 1024:.0f} |")
    print(f"| 10,000 | {k10 / 1024:.0f} |")
    print(f"ratio 10,000 / 1,000: {k10 / k1:.2f}")


if __name__ == "__main__":
    main()
