#!/usr/bin/env python3
"""Validation by isolation on a real GPU (tools/gpu_check.sh runs it), and the check's README.

A tiny DistilBERT is traced with three of its Linear layers doing far more, inside their own
module scopes (forward pre-hooks, which run inside the scope): a large bf16 matmul (compute
bound, high power), a memory-bound elementwise block (mid power), and a spin kernel
(torch.cuda._sleep: low power). They dominate the GPU's time, so the model's modules differ
strongly in power. Each workload is then run alone, looped for a few seconds, and its energy
per call read off the energy counter (the truth: energy the GPU spent per call, idle power
included, as phprof's per-layer figures are). The table sets phprof's attributed energy per
call of each of the three layers beside it, and the time-proportional split (the inferences'
energy shared by time), each as an error against the isolated figure; the target is 10%.

    python tools/gpu_validate.py --out DIR [--calibration CAL.json] [--quick]
    python tools/gpu_validate.py --readme DIR        # the README of a gpu_check.sh folder

Needs a CUDA GPU with NVML; without one it exits with a one-line error.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

MODEL = "distilbert-base-uncased-finetuned-sst-2-english"
TARGET = 0.10


def workloads(torch, quick: bool):
    """name -> a callable that launches one call's kernels (sized for ~3-6 ms each on a large GPU)."""
    dev = torch.device("cuda")
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    x = torch.randn(64 * 1024 * 1024, device=dev)  # 256 MB: every pass streams it from memory
    cycles = int(torch.cuda.get_device_properties(0).clock_rate * 1e3 * 0.004)  # ~4 ms of spin (clock_rate: kHz)

    def matmul():
        for _ in range(2):
            torch.mm(a, b)

    def elementwise():
        for _ in range(4):
            x.mul_(0.999).add_(0.001)

    def spin():
        torch.cuda._sleep(cycles)

    return {"matmul (bf16, compute-bound)": matmul, "elementwise (memory-bound)": elementwise,
            "spin (low power)": spin}


def isolated_energy(torch, work, seconds: float) -> tuple[float, float]:
    """(J per call, s per call) of one workload looped alone, from the energy counter."""
    from phprof.sources import NvmlSource, recording

    work()
    torch.cuda.synchronize()
    with recording(NvmlSource(gpus=[0], fields=["energy"], interval_s=1e-3)) as rec:
        time.sleep(0.3)
        t0, calls = time.time_ns(), 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            work()
            calls += 1
            if calls % 20 == 0:
                torch.cuda.synchronize()
        torch.cuda.synchronize()
        t1 = time.time_ns()
        time.sleep(0.3)
    e = rec.log.energy_between("gpu0", t0, t1)
    return e.joules / calls, (t1 - t0) / 1e9 / calls


def validate(out: Path, calibration: Path | None, quick: bool) -> None:
    import torch

    import phprof

    if not torch.cuda.is_available():
        sys.exit("gpu_validate: no CUDA GPU (torch sees none)")
    work = workloads(torch, quick)
    chosen: dict[str, str] = {}  # workload -> module path

    def setup(model):
        linears = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)][:len(work)]
        for (label, fn), name in zip(work.items(), linears):
            chosen[label] = name
            model.get_submodule(name).register_forward_pre_hook(lambda mod, args, fn=fn: fn())

    path = out / "validation.h5"
    phprof.trace(MODEL, inferences=60 if quick else 400, warmup=5, output=path, size="tiny", device="cuda",
                 idle_s=1.0, setup=setup, measure_pass=False, overwrite=True)
    results = phprof.results(path, calibration=calibration)
    layers = {x.label: x for x in results.layers}
    per_inference_active = results.inferences_energy.joules
    own_time = sum(x.seconds for x in results.layers if not x.role.between_inferences)
    rows = []
    for label, fn in work.items():
        alone_j, alone_s = isolated_energy(torch, fn, 2.0 if quick else 6.0)
        layer = layers[chosen[label]]
        calls = max(layer.calls, 1)
        phprof_j = layer.energy.joules / calls
        naive_j = per_inference_active * layer.seconds / own_time / calls
        lo = None if layer.energy.low_j is None else layer.energy.low_j / calls
        hi = None if layer.energy.high_j is None else layer.energy.high_j / calls
        rows.append((label, chosen[label], alone_j, alone_s, phprof_j, lo, hi, naive_j, layer.seconds / calls))
    print("| workload | module | alone: J per call (counter) | alone: ms per call | phprof: J per call [90%] "
          "| error | time-proportional: J per call | error | traced ms per call |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    ok = True
    for label, module, aj, as_, pj, lo, hi, nj, ts in rows:
        err, nerr = pj / aj - 1, nj / aj - 1
        ok &= abs(err) <= TARGET
        rng = "" if lo is None else f" [{lo:.3g}, {hi:.3g}]"
        print(f"| {label} | {module} | {aj:.3g} | {as_ * 1e3:.2f} | {pj:.3g}{rng} | {err:+.1%} | {nj:.3g} | "
              f"{nerr:+.1%} | {ts * 1e3:.2f} |")
    print()
    print(f"target: each within {TARGET:.0%} of the isolated figure: {'met' if ok else 'NOT met'}; sensor: "
          f"{results.sensor.describe() if results.sensor else 'none'} ({results.sensor.source if results.sensor else ''})")
    (out / "validation.json").write_text(json.dumps({"rows": rows, "target_met": ok}, indent=1))


def readme(folder: Path) -> str:
    """The README of a gpu_check.sh folder: calibration, validation and reference traces as tables."""
    lines = [f"# GPU check: {folder.name}", "", "Written by tools/gpu_check.sh.", ""]
    devices = folder / "devices.txt"
    if devices.exists():
        lines += ["## phprof devices --measure", "", "```", devices.read_text().rstrip(), "```", ""]
    cal = folder / "calibration.txt"
    if cal.exists():
        lines += ["## phprof calibrate", "", "```", cal.read_text().rstrip(), "```", ""]
    val = folder / "validation.md"
    if val.exists():
        lines += ["## Validation by isolation", "", val.read_text().rstrip(), ""]
    reports = sorted(folder.glob("*.report.json"))
    if reports:
        lines += ["## Reference traces", "", "| model | inferences | energy over the run | per inference | method "
                  "| sensor |", "|---|---:|---:|---:|---|---|"]
        for p in reports:
            r = json.loads(p.read_text())
            res = r["summary"]  # `phprof report --json`: summary, rollups, tables
            total = res.get("total") or {}
            per = (r.get("rollups") or {}).get("per_inference") or {}
            sensor = res.get("sensor") or {}
            lines.append(f"| {p.name.removesuffix('.report.json')} | {res.get('inferences')} | "
                         f"{total.get('joules', float('nan')):.4g} J | {per.get('joules', float('nan')):.4g} J | "
                         f"{res.get('method')} | {sensor.get('period_s', 0) * 1e3:.0f} ms / "
                         f"{sensor.get('window_s', 0) * 1e3:.0f} ms / {sensor.get('lag_s', 0) * 1e3:+.0f} ms |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="folder for the validation's trace and table")
    ap.add_argument("--calibration", type=Path, help="a `phprof calibrate` file to attribute with")
    ap.add_argument("--quick", action="store_true", help="shorter runs (a smoke test)")
    ap.add_argument("--readme", type=Path, metavar="DIR", help="print the README of a gpu_check.sh folder")
    args = ap.parse_args()
    if args.readme:
        print(readme(args.readme), end="")
    elif args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        validate(args.out, args.calibration, args.quick)
    else:
        ap.error("give --out DIR or --readme DIR")


if __name__ == "__main__":
    main()
