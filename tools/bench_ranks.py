"""A data-parallel job under `torchrun`, with and without `phprof run`: time per inference for 1 and 2 ranks.

    python tools/bench_ranks.py [--inferences 200] [--repeats 3] [--ranks 1,2] [--source none]

The job is tests/programs/data_parallel.py: each rank runs a small MLP (16 x 64 in, 256 wide) on its own
batch and all-reduces the output (gloo, on the CPU), each inference inside `phprof.inference()`; rank 0
prints its loop's time per inference (the all-reduce included, the first 5 inferences left out; start-up, the idle period and the final
save left out). Every configuration (ranks x plain / phprof) runs `--repeats` times, interleaved, in one
run of this tool; the table gives each one's median time per inference and phprof's ratio to plain, side
by side. `--source`: phprof's power source (default none: no GPU here; the sampler's cost is measured by
tools/bench_sampler.py). State the machine's load (printed) beside the figures.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROGRAM = Path(__file__).resolve().parent.parent / "tests" / "programs" / "data_parallel.py"


def _job(ranks: int, inferences: int, phprof: bool, out: Path, source: str) -> float:
    """Rank 0's seconds per inference of one launch."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--standalone"]
    if phprof:
        cmd += ["-m", "phprof", "run", "--idle", "0", "--source", source, "-o", str(out)]
    cmd += [str(PROGRAM), str(inferences)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PHPROF_FAKE_NVML_STATE", None)  # the job's modules draw no fake power here
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out.parent)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    line = next(x for x in p.stdout.splitlines() if x.startswith("seconds per inference:"))
    return float(line.split(":")[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inferences", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ranks", default="1,2", help="world sizes to run, comma-separated")
    ap.add_argument("--source", default="none", help="phprof run's --source")
    args = ap.parse_args()
    worlds = [int(x) for x in args.ranks.split(",")]
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    times: dict[tuple[int, bool], list[float]] = {(w, p): [] for w in worlds for p in (False, True)}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-ranks-") as tmp:
        for rep in range(args.repeats):
            for w in worlds:
                for p in (False, True):
                    out = Path(tmp) / f"job{rep}-{w}-{int(p)}.h5"
                    times[(w, p)].append(_job(w, args.inferences, p, out, args.source))
                    print(f"  repeat {rep + 1}/{args.repeats}, {w} rank(s), {'phprof' if p else 'plain'}: "
                          f"{times[(w, p)][-1] * 1e3:.3f} ms per inference", file=sys.stderr, flush=True)
    print(f"{args.inferences} inferences per rank, median of {args.repeats} launches each, "
          f"phprof run --source {args.source} ({time.perf_counter() - began:.0f} s in all)")
    print(f"load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'ranks':>5}  {'plain ms/inference':>18}  {'phprof ms/inference':>19}  {'ratio':>6}")
    for w in worlds:
        plain, prof = statistics.median(times[(w, False)]), statistics.median(times[(w, True)])
        print(f"{w:>5}  {plain * 1e3:>18.3f}  {prof * 1e3:>19.3f}  {prof / plain:>6.2f}")


if __name__ == "__main__":
    main()
