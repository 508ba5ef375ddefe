"""`phprof run` against plain `python` on the same script: overhead and peak memory.

    python tools/bench_run.py [--inferences 1000] [--repeats 3] [--memory 1000,10000] [--width 256] [--sampler]

The script (written to a temporary folder) runs N inferences of a small transformer encoder layer
(batch 8 x 64 tokens, `--width` wide) on the CPU, each inside `phprof.inference()`, with a little
Python work between them, and prints the time of its own loop and its peak resident memory. It runs
under plain `python` and under `phprof run --idle 0 --source none` alternately, `--repeats` times
each, in one run of this tool: the table gives each side's median loop time and their ratio (the
target: <= 1.10 on a CPU), then phprof run's peak memory at each of `--memory`'s inference counts
(the target: flat, since windows are streamed to the file and dropped). The loop time is the
script's own, so interpreter start-up, imports, the idle period and the final save are left out;
the wall time of each whole process is shown beside it.

`--sampler`: phprof run with the power sampler on, reading the fake NVML (tools/fake_nvml, one
A100) with its anti-aliasing pauses: the overhead a GPU user meets (the pauses are counted in the
loop time, as they are in the program's own run; the table says how long they were).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

SCRIPT = '''
import resource, sys, time
import torch
import phprof

torch.manual_seed(0)
n, width = int(sys.argv[1]), int(sys.argv[2])
layer = torch.nn.TransformerEncoderLayer(d_model=width, nhead=4, dim_feedforward=2 * width, batch_first=True).eval()
x = torch.randn(8, 64, width)
with torch.no_grad():
    layer(x)  # warm-up, outside the timed loop
    began = time.perf_counter()
    total = 0.0
    for i in range(n):
        with phprof.inference():
            y = layer(x)
        total += float(y[0, 0, 0])  # the program's own work between inferences
    loop_s = time.perf_counter() - began
print(f"loop_s={loop_s:.6f} peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")
'''


def _run(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float, float]:
    """(loop seconds, peak RSS MB, wall seconds) of one process."""
    began = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, **(env or {}), "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - began
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("loop_s="))
    values = dict(kv.split("=") for kv in line.split())
    return float(values["loop_s"]), float(values["peak_rss_mb"]), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inferences", type=int, default=1000, help="inferences per run for the overhead ratio")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each side, alternated")
    ap.add_argument("--memory", default="1000,10000", help="inference counts for phprof run's peak memory")
    ap.add_argument("--width", type=int, default=256, help="the encoder layer's width")
    ap.add_argument("--sampler", action="store_true", help="phprof run with the power sampler on, against the fake "
                    "NVML (default: --source none)")
    a = ap.parse_args()
    phprof = str(Path(sys.executable).parent / "phprof")
    with tempfile.TemporaryDirectory(prefix="phprof-bench-run-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        script = work / "workload.py"
        script.write_text(SCRIPT)
        env, source = {}, ["--source", "none"]
        if a.sampler:
            sys.path.insert(0, str(HERE))
            import fake_nvml

            fake = stack.enter_context(fake_nvml.FakeNvml(fake_nvml.build(work / "fake"), work / "fake" / "state",
                                                          n_devices=1, preset="a100", seed=1))
            env, source = fake.env, ["--source", "nvml", "--gpus", "none"]
        side = "phprof run --source nvml" if a.sampler else "phprof run --source none"

        def under_phprof(n: int, name: str) -> list[str]:
            return [phprof, "run", "--idle", "0", *source, "--overwrite", "-o", str(work / name),
                    str(script), str(n), str(a.width)]

        plain, profiled = [], []
        for _ in range(a.repeats):
            plain.append(_run([sys.executable, str(script), str(a.inferences), str(a.width)], work))
            profiled.append(_run(under_phprof(a.inferences, "ratio.h5"), work, env))
        p_loop = statistics.median(r[0] for r in plain)
        q_loop = statistics.median(r[0] for r in profiled)
        print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
              f"{a.inferences} inferences of a {a.width}-wide encoder layer (batch 8 x 64), {a.repeats} runs each")
        print(f"{'':24} {'loop (median)':>14} {'per inference':>14} {'whole process':>14} {'peak RSS':>10}")
        for name, runs, loop in (("python script.py", plain, p_loop), (side, profiled, q_loop)):
            print(f"{name:24} {loop:>12.2f} s {1e3 * loop / a.inferences:>11.3f} ms "
                  f"{statistics.median(r[2] for r in runs):>12.2f} s {max(r[1] for r in runs):>7.0f} MB")
        sampler = ("the power sampler on (the fake NVML), anti-aliasing pauses included" if a.sampler
                   else "no power sampler: --source none")
        print(f"ratio (phprof run / python): {q_loop / p_loop:.2f}   (target <= 1.10; {sampler}; peak RSS is the "
              "largest of the runs, the rest medians)")
        counts = [int(x) for x in a.memory.split(",") if x]  # '' : no memory runs
        if counts:
            print()
            print(f"{'phprof run, inferences':24} {'peak RSS':>10} {'loop':>10} {'file':>10}")
        for n in counts:
            loop, rss, _ = _run(under_phprof(n, f"mem{n}.h5"), work, env)
            size = (work / f"mem{n}.h5").stat().st_size / 1e6
            print(f"{n:>24,} {rss:>7.0f} MB {loop:>8.1f} s {size:>7.1f} MB")


if __name__ == "__main__":
    main()
