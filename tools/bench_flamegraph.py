#!/usr/bin/env python3
"""Rendering a flamegraph of 1,000,000 kernel events: time and file size.

Uses bench_scale's synthetic trace (a 48-layer model's kernels on one GPU, 1,000
inferences, 100,000 sensor polls). In a fresh process each: attribute and store
the results, then render every format from the stored results
(`phprof.render(phprof.flamegraph(path), out)`, what `phprof flamegraph` runs),
timing each step and reading the output's size. Targets
(HTML): <= 10 s and <= 20 MB.

    python tools/bench_flamegraph.py [--kernels 1000000]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import write_trace  # noqa: E402

STEP = """
import json, os, resource, sys, time
import phprof
path, out, recompute = sys.argv[1], sys.argv[2], sys.argv[3] == "recompute"
t = time.perf_counter()
phprof.render(phprof.flamegraph(path, recompute=recompute), out)
print(json.dumps({"s": time.perf_counter() - t, "bytes": os.path.getsize(out),
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(path: Path, out: Path, recompute: bool) -> dict:
    p = subprocess.run([sys.executable, "-c", STEP, str(path), str(out), "recompute" if recompute else "read"],
                       capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(p.stderr[-2000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", type=int, default=1_000_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="phprof-flame-"))
    path = work / "scale.h5"
    write_trace(path, args.kernels, 100_000)
    print(f"synthetic trace: {args.kernels:,} kernels; each row a fresh process")
    print("| output | results | time (s) | size (MB) | peak RSS (MiB) |")
    print("|---|---|---:|---:|---:|")
    rows = [("flame.html", "attributed and stored first", True),
            ("flame.html", "read from the file", False),
            ("flame.folded", "read from the file", False),
            ("flame.speedscope.json", "read from the file", False),
            ("flame.perfetto.json", "read from the file", False)]
    for name, how, recompute in rows:
        r = run(path, work / name, recompute)
        print(f"| {name} | {how} | {r['s']:.2f} | {r['bytes'] / 1e6:.2f} | {r['rss_mib']:.0f} |")
    print(f"targets (HTML): <= 10 s, <= 20 MB; files in {work}")


if __name__ == "__main__":
    main()
