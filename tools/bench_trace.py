#!/usr/bin/env python3
"""The cost of tracing, measured side by side in one run, against the fake GPU.

1. Time and (fake) energy per inference of the same model three ways, in
   alternating rounds (the median round of each is shown): a plain loop (the
   model's inferences, nothing else), `phprof trace`'s measurement pass (the
   profiler off: the power sampler and energy counter only, the same
   anti-aliasing pauses) and its profiled pass (module scopes, torch.profiler,
   the sampler), per inference of their own spans and per inference of the
   whole pass (the window saves included). The energy is the fake NVML's: the
   plain loop's is its true energy over the loop (the fake's ground truth), the
   passes' as phprof measured them off the fake's energy counter. On a CPU the
   fake GPU draws its default power whatever runs, so its energy follows time;
   what the table shows is that both passes measure it and how far apart they
   are. Targets: the measurement pass within a few % of the plain loop; the
   profiled pass per traced inference <= 1.10 on CPU, <= 1.05 on GPU.
2. The window saves: how many, their median and total time (torch stopping,
   reading its events, writing them to the file).
3. Peak memory (max RSS of a fresh process) tracing 1,000 and 10,000
   inferences of a tiny model with the fake NVML (`--memory`): streaming keeps
   it flat (target <= 500 MiB, ratio <= 1.2). The memory runs skip the
   measurement pass (it keeps nothing in memory) to halve their time.

    python tools/bench_trace.py [--model ID] [--size tiny] [--inferences 200] [--rounds 3]
                                [--memory 1000,10000] [--memory-model bert-base-uncased]

`--code DIR` runs the memory test against another checkout's `profiler/`
(the "before" of a change: its trace() may lack the measurement pass).
`--check-reader` (a GPU check): one profiler window of the model on
`--device` read both ways, torch's event list (what phprof reads) and the
JSON export (what it read before), column by column, with the kernels'
joins to their launching op; exits 1 where they differ.
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
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import fake_nvml  # noqa: E402

from phprof import load, models  # noqa: E402
from phprof.tracing.run import trace  # noqa: E402

warnings.filterwarnings("ignore")


def plain_loop(model, task, inputs, n: int, device: str, fake) -> tuple[float, float]:
    """Seconds and (fake) true joules per inference of the bare loop."""
    t0, began = time.time_ns(), time.perf_counter()
    for _ in range(n):
        models.infer(model, task, inputs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    s = (time.perf_counter() - began) / n
    return s, fake.true_energy(0, t0, time.time_ns()) / n


def traced(model_id: str, n: int, device: str, size: str, out: str) -> dict:
    """The two passes of one `phprof trace` run."""
    s = trace(model_id, inferences=n, warmup=2, output=out, size=size, device=device, idle_s=0.2, source="nvml",
              overwrite=True)
    inf = load(out).inferences
    m = s.measured
    return {"measure_s": m.seconds_per_inference, "measure_j": m.joules_per_inference,
            "measure_whole_s": m.span_s / m.inferences,
            "profiled_s": s.seconds_per_inference, "profiled_j": s.joules_per_inference,
            "profiled_whole_s": (inf["end_ns"].max() - inf["start_ns"].min()) / 1e9 / len(inf),
            "saves": s.window_saves_s}


PEAK = """
import inspect, json, resource, sys, warnings
warnings.filterwarnings("ignore")
from phprof.tracing.run import trace
extra = {"measure_pass": False} if "measure_pass" in inspect.signature(trace).parameters else {}
s = trace(sys.argv[1], inferences=int(sys.argv[2]), warmup=0, output=sys.argv[3], size="tiny", idle_s=0,
          source="nvml", device="cpu", overwrite=True, **extra)
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "status": s.status,
                  "inferences": s.inferences}))
"""


def peak_memory(model_id: str, n: int, out: str, env: dict, code: str | None) -> dict:
    env = {**os.environ, **env, "HF_HUB_OFFLINE": "1"}
    if code:
        shim = Path(tempfile.mkdtemp(prefix="phprof-code-"))
        (shim / "phprof").symlink_to(Path(code).resolve() / "profiler")
        env["PYTHONPATH"] = str(shim)
    began = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", PEAK, model_id, str(n), out], capture_output=True, text=True, env=env,
                       cwd=tempfile.gettempdir())
    if p.returncode:
        sys.exit(f"tracing {n} inferences failed:\n{p.stderr[-2000:]}")
    return {**json.loads(p.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - began}


def check_reader(model_id: str, size: str, device: str) -> bool:
    """One window read both ways (see the module's docstring); True where they agree."""
    import numpy as np

    from phprof.tracing.kineto import load_kineto, read_profiler_result

    spec = models.resolve(model_id)
    model = models.build(spec, spec.task, size=size, device=device)
    inputs = models.make_inputs(models.tiny(spec) if size == "tiny" else spec, spec.task, device=device)
    got = {}

    def ready(prof):
        path = Path(tempfile.mkdtemp(prefix="phprof-reader-")) / "w.json"
        prof.export_chrome_trace(str(path))
        got["json"], got["direct"] = load_kineto(path), read_profiler_result(prof.profiler.kineto_results)

    activities = [torch.profiler.ProfilerActivity.CPU] + \
        ([torch.profiler.ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with torch.profiler.profile(activities=activities, on_trace_ready=ready,
                                schedule=torch.profiler.schedule(wait=0, warmup=1, active=3, repeat=1)) as p:
        for i in range(5):
            with torch.profiler.record_function(f"phprof.inference.{i}"):
                models.infer(model, spec.task, inputs)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            p.step()
    a, b = got["json"], got["direct"]
    print(f"reader check, {model_id} ({size}) on {device}: {len(a.events)} events in the export, "
          f"{len(b.events)} in torch's list")
    print("| column | agrees |")
    print("|---|---|")
    ok = len(a.events) == len(b.events)
    if ok:
        for column in ("start_ns", "end_ns", "kind", "device", "correlation", "external_id", "op"):
            same = bool(np.array_equal(a.events[column], b.events[column]))
            ok &= same
            print(f"| {column} | {same} |")
        same = [a.names[i] for i in a.events["name"]] == [b.names[i] for i in b.events["name"]]
        stacks = all(a.stack_path(x) == b.stack_path(y) for x, y in zip(a.events["stack"], b.events["stack"]))
        print(f"| name | {same} |\n| scope stack | {stacks} |")
        ok &= same and stacks
    print(f"kernels: {len(a.kernels())} / {len(b.kernels())}; joined to their op: {a.joined_fraction:.1%} / "
          f"{b.joined_fraction:.1%}; join stats: {a.join_stats} / {b.join_stats}")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--size", default="tiny", choices=["full", "tiny"])
    ap.add_argument("--inferences", type=int, default=200, help="per round and pass (default 200)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--memory", default="1000,10000", help="inference counts of the memory test ('' to skip)")
    ap.add_argument("--memory-model", default="bert-base-uncased", help="tiny model for the memory test")
    ap.add_argument("--code", help="a checkout whose profiler/ the memory test runs (default: this one)")
    ap.add_argument("--check-reader", action="store_true", help="only compare the two ways of reading a window")
    args = ap.parse_args()
    if args.check_reader:
        sys.exit(0 if check_reader(args.model, args.size, args.device) else 1)

    tmp = Path(tempfile.mkdtemp(prefix="phprof-bench-"))
    lib = fake_nvml.build(tmp / "fake")
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; torch {torch.__version__}")
    with fake_nvml.FakeNvml(lib, tmp / "fake" / "state", n_devices=1, preset="a100", seed=1) as fake:
        os.environ["PHPROF_NVML_LIB"] = str(lib)
        if args.rounds:
            spec = models.resolve(args.model)
            task = spec.task
            model = models.build(spec, task, size=args.size, device=args.device)
            inputs = models.make_inputs(models.tiny(spec) if args.size == "tiny" else spec, task, device=args.device)
            plain_loop(model, task, inputs, 5, args.device, fake)  # warm up
            plain, runs = [], []
            for r in range(args.rounds):
                print(f"\rround {r + 1}/{args.rounds}", end="", file=sys.stderr, flush=True)
                plain.append(plain_loop(model, task, inputs, args.inferences, args.device, fake))
                runs.append(traced(args.model, args.inferences, args.device, args.size, str(tmp / "t.h5")))
            print("\r" + " " * 30 + "\r", end="", file=sys.stderr)
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "saves"}
            p_s, p_j = statistics.median(x[0] for x in plain), statistics.median(x[1] for x in plain)
            print(f"\nphprof trace: {args.model} ({args.size}, {task}) on {args.device}, fake A100 (NVML), "
                  f"{args.inferences} inferences per pass x {args.rounds} alternating rounds (median)")
            print("| run | ms per inference | ratio | J per inference (fake) | ratio |")
            print("|---|---:|---:|---:|---:|")
            rows = [("plain loop (fake's true energy)", p_s, p_j),
                    ("measurement pass, profiler off (own spans; J over the pass)", med["measure_s"],
                     med["measure_j"]),
                    ("measurement pass, whole pass (anti-aliasing pauses incl.)", med["measure_whole_s"], None),
                    ("profiled pass (own spans; J over the windows' spans)", med["profiled_s"], med["profiled_j"]),
                    ("profiled pass, whole pass incl. window saves", med["profiled_whole_s"], None)]
            for name, s, j in rows:
                js = "-" if j is None else f"{j:.4g}"
                jr = "-" if j is None else f"{j / p_j:.2f}"
                print(f"| {name} | {1e3 * s:.2f} | {s / p_s:.2f} | {js} | {jr} |")
            saves = [x for r in runs for x in r["saves"]]
            print(f"\nwindow saves: {len(saves)} over {args.rounds} runs, median {statistics.median(saves):.3f} s, "
                  f"max {max(saves):.3f} s, {sum(saves) / args.rounds:.2f} s per run")
        counts = [int(x) for x in args.memory.split(",") if x]
        if counts:
            print(f"\npeak memory, tiny {args.memory_model}, fresh process each, fake NVML, no measurement pass"
                  + (f", code of {args.code}" if args.code else ""))
            print("| inferences | max RSS (MiB) | wall (s) | status |")
            print("|---:|---:|---:|---|")
            peaks = []
            for n in counts:
                r = peak_memory(args.memory_model, n, str(tmp / f"m{n}.h5"), fake.env, args.code)
                peaks.append(r["peak_kib"] / 1024)
                print(f"| {n:,} | {peaks[-1]:.0f} | {r['wall_s']:.0f} | {r['status']} |", flush=True)
            if len(peaks) > 1:
                print(f"ratio {counts[-1]:,} / {counts[0]:,}: {peaks[-1] / peaks[0]:.2f}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
