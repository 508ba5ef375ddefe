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

`--sampler`: the power sampler on too, reading the fake NVML (tools/fake_nvml, one A100). Then
phprof run's cost is shown piece by piece, each row adding one to the row above it, all in one run:
`--source none` (torch.profiler, the module and inference scopes, the window saves), `--source nvml
--no-anti-alias` (the native sampler polling the sensor: a thread of its own on a busy machine's
cores), and `--source nvml` as a GPU user runs it, with the anti-aliasing pauses (a random idle of
up to one inference once per sensor period, that phprof adds on purpose so that the sensor's windows
fall on every part of the inferences: `phprof.tracing.aliasing`). Each row gives the time of the
window saves and pauses inside its loop, as the trace file's summary records them, and the ratio
without the pauses beside the ratio with them.
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
    began, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
    total = 0.0
    for i in range(n):
        with phprof.inference():
            y = layer(x)
        total += float(y[0, 0, 0])  # the program's own work between inferences
    loop_s = time.perf_counter() - began
    cpu_s, main_s = time.process_time() - cpu, time.thread_time() - main
print(f"loop_s={loop_s:.6f} cpu_s={cpu_s:.6f} main_s={main_s:.6f} "
      f"peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")
'''


def _run(cmd: list[str], cwd: Path, env: dict | None = None, trace: Path | None = None) -> dict:
    """The loop seconds, peak RSS MB and wall seconds of one process; with ``trace`` (the file
    phprof run wrote), the anti-aliasing pauses and window saves its summary records."""
    began = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, **(env or {}), "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - began
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("loop_s="))
    values = dict(kv.split("=") for kv in line.split())
    run = {"loop": float(values["loop_s"]), "cpu": float(values["cpu_s"]), "main": float(values["main_s"]),
           "rss": float(values["peak_rss_mb"]), "wall": wall, "paused": 0.0, "saves": 0.0}
    if trace is not None:
        from phprof.store import load_header

        summary = load_header(trace).summary
        run["paused"], run["saves"] = summary["paused_s"], summary["window_saves_s"]
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inferences", type=int, default=1000, help="inferences per run for the overhead ratio")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each side, alternated")
    ap.add_argument("--memory", default="1000,10000", help="inference counts for phprof run's peak memory "
                    "('': none)")
    ap.add_argument("--width", type=int, default=256, help="the encoder layer's width")
    ap.add_argument("--sampler", action="store_true", help="the power sampler on too, against the fake NVML: "
                    "phprof run's cost piece by piece (default: --source none only)")
    a = ap.parse_args()
    phprof = str(Path(sys.executable).parent / "phprof")
    with tempfile.TemporaryDirectory(prefix="phprof-bench-run-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        script = work / "workload.py"
        script.write_text(SCRIPT)
        env = {}
        sides = {"phprof run --source none": ["--source", "none"]}
        if a.sampler:
            sys.path.insert(0, str(HERE))
            import fake_nvml

            fake = stack.enter_context(fake_nvml.FakeNvml(fake_nvml.build(work / "fake"), work / "fake" / "state",
                                                          n_devices=1, preset="a100", seed=1))
            env = fake.env
            nvml = ["--source", "nvml", "--gpus", "none", "--sensor-gpu", "0"]
            sides["  + sampler (--no-anti-alias)"] = [*nvml, "--no-anti-alias"]
            sides["  + pauses (--source nvml)"] = nvml
        memory_side = list(sides.values())[-1]

        def under_phprof(options: list[str], n: int, name: str) -> list[str]:
            return [phprof, "run", "--idle", "0", *options, "--overwrite", "-o", str(work / name),
                    str(script), str(n), str(a.width)]

        runs: dict[str, list[dict]] = {"python script.py": [], **{side: [] for side in sides}}
        for _ in range(a.repeats):
            runs["python script.py"].append(_run([sys.executable, str(script), str(a.inferences), str(a.width)], work))
            for side, options in sides.items():
                runs[side].append(_run(under_phprof(options, a.inferences, "ratio.h5"), work, env, work / "ratio.h5"))
        def median(rs, key) -> float:
            return statistics.median(r[key] for r in rs)

        base = runs["python script.py"]
        plain, plain_cpu, plain_main = median(base, "loop"), median(base, "cpu"), median(base, "main")
        print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
              f"{a.inferences} inferences of a {a.width}-wide encoder layer (batch 8 x 64), {a.repeats} runs each, "
              "alternated")
        print(f"{'':31} {'loop (median)':>14} {'per inference':>14} {'ratio':>6} {'saves':>7} {'pauses':>7} "
              f"{'ratio less pauses':>18} {'CPU ratio':>10} {'main thread':>12} {'whole process':>14} {'peak RSS':>9}")
        for name, rs in runs.items():
            loop = median(rs, "loop")
            less = statistics.median(r["loop"] - r["paused"] for r in rs) / plain
            print(f"{name:31} {loop:>12.2f} s {1e3 * loop / a.inferences:>11.3f} ms {loop / plain:>6.3f} "
                  f"{median(rs, 'saves'):>5.2f} s {median(rs, 'paused'):>5.2f} s {less:>18.3f} "
                  f"{median(rs, 'cpu') / plain_cpu:>10.3f} {median(rs, 'main') / plain_main:>12.3f} "
                  f"{median(rs, 'wall'):>12.2f} s {max(r['rss'] for r in rs):>6.0f} MB")
        print("ratio: phprof run's loop (wall clock) over plain python's (target <= 1.10 on a CPU); saves, pauses: the "
              "window saves and anti-aliasing pauses inside phprof run's loop (its file's summary); ratio less pauses: "
              "the loop without the pauses, over plain python's; CPU ratio: the CPU time of the loop, all the "
              "process's threads (the sampler's included; a pause costs none), over plain python's; main thread: the "
              "program's own thread's CPU time alone (the CPU ratios hold on a busy machine, where wall clocks wander); "
              "medians of the runs, peak RSS the largest")
        counts = [int(x) for x in a.memory.split(",") if x]
        if counts:
            print()
            print(f"{'phprof run ' + ' '.join(memory_side):24} {'peak RSS':>10} {'loop':>10} {'file':>10}")
        for n in counts:
            r = _run(under_phprof(memory_side, n, f"mem{n}.h5"), work, env)
            size = (work / f"mem{n}.h5").stat().st_size / 1e6
            print(f"{n:>24,} {r['rss']:>7.0f} MB {r['loop']:>8.1f} s {size:>7.1f} MB")


if __name__ == "__main__":
    main()
