#!/usr/bin/env python3
"""Per-layer energy estimated from a windowed sensor, against the truth.

A tiny gpt2 runs on this CPU under `phprof trace`; hooks make every module
draw its own known power in the fake NVML (a100 sensor model: 101 ms update,
25 ms window, a lag, 1% noise). A layer's true energy is the fake's true
power integrated over the layer's own time on phprof's timeline (what phprof
claims to estimate; the hooks switch power a few microseconds away from the
scopes' edges, so the fake's per-module tags differ slightly, also printed).
For each seed (a new sensor phase and noise, a new run), the layers phprof
reports (resolved modules; a module merged with its children counts as one)
are compared with the truth: phprof's estimate and its 90% interval, and the
naive time-proportional split, each error as a share of the inferences' energy.
Beside the total: the counter's, and the naive "integrate the samples" one
(mean of the instant power readings times the time, what a 1 s poller does).

The adversarial case: a text classifier whose forward passes start exactly
50 ms apart (half an h100 sensor's 100 ms update, so every 25 ms window falls
at the same phase), traced with and without the anti-aliasing pauses.

`--script`: the same, on a user's program under `phprof run` instead of phprof's own loop
(issue 18's check): tests/programs/generate_text.py loads a tiny GPT-2 saved with save_pretrained
(in the work folder) through a Hugging Face pipeline, cleans and tokenises a context document in
Python before each call and counts its words after it, with `prof.inference()` marks and without
them (each generate() call is then an inference); every module the script's model calls draws its
own known power (fake_nvml.power_per_module_everywhere). A second table scores the time between
inferences (the script's own Python work, phprof's pauses and saves: the report's "(idle)" row)
against the fake's true energy there. tests/test_run.py runs the same at a short length.

Each run is traced once and attributed twice: from the run alone (the period fitted from its
updates, lag and window searched over every family's range), and with the calibration file
`phprof calibrate` wrote on a fake GPU of the same sensor.

    python tools/bench_attribution.py [--inferences 200] [--seeds 0,1,2,3,4] [--sensors a100,p50,p200,avg1s]
                                      [--no-calibration] [--no-adversarial] [--work DIR [--reattribute]] [--script]

Every run keeps its trace, the fake's state (the truth) and its modules' tags in the work folder
(--work, else a new temporary one, printed), and each sensor's calibration file, which later runs
there use again; --reattribute attributes the traces found there again instead of running them
(after a change of the estimator: nothing runs in real time), and runs only what is missing. The check of issue 17 asks for runs of >= 60 s: the summary says how long
the shortest run of each row was, and the price of the coverage: the median half-width of the
layers' 90% intervals, as a share of their estimate.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fake_nvml  # noqa: E402
from fake_nvml import OUTSIDE_TAG, power_per_module  # noqa: E402
from fake_nvml.truth import compare, errors, run_program  # noqa: E402

import phprof  # noqa: E402

warnings.filterwarnings("ignore")
LAG_S = 0.005  # the fake sensor's lag: phprof is not told, it fits it
PADDED_PERIOD_S = 0.050  # the adversarial case's inference period: half the h100 sensor's
DWELL_S = 0.0003  # each module's forward lasts at least this (see fake_nvml.power_per_module)
FULL_LENGTH_S = 60.0  # the check: runs of at least this long
# --script: tests/programs/generate_text.py and how tests/test_run.py runs it (a longer run here)
PROGRAMS = Path(__file__).resolve().parent.parent / "tests" / "programs"
SCRIPT_NEW_TOKENS, SCRIPT_CONTEXT_WORDS = 4, 40_000  # ~0.1 s of the script's own Python around each call
SCRIPT_DWELL_S = 0.0015  # 260 waits per call of 4 tokens: >= 0.39 s a call, on however fast a machine


# Sensors unlike the nominal one, each on the fake a100 (400 W limit): (field, changes to its model),
# and the fields made NOT_SUPPORTED. phprof is told none of it: it fits the run (or uses a calibration).
SENSORS = {
    "a100": ({"power_instant": {"lag_s": LAG_S}}, ()),  # 101 ms update, 25 ms window, 1% noise
    "p50": ({"power_instant": {"period_s": 0.050, "window_s": 0.020, "lag_s": 0.040, "noise": 0.03}}, ()),
    "p200": ({"power_instant": {"period_s": 0.200, "window_s": 0.100, "lag_s": 0.0}}, ()),
    # only a 1 s average, refreshed every 100 ms (an RTX 3090's power.draw; no instant field)
    "avg1s": ({"power_average": {"period_s": 0.100, "window_s": 1.0, "lag_s": 0.0}}, ("power_instant",)),
}
SENSOR_TEXT = {"a100": "101 ms update / 25 ms window / 5 ms lag / 1% noise",
               "p50": "50 ms / 20 ms / 40 ms lag / 3% noise", "p200": "200 ms / 100 ms / 0 lag / 1% noise",
               "avg1s": "1 s average only, every 100 ms / 1% noise"}


def fake_gpu(work: Path, preset: str, seed: int, sensor: str = "a100", attach: bool = False, run: str = ""):
    """The fake GPU of a run (``run``: which of the runs of this sensor and seed), its state kept in ``work``."""
    lib = fake_nvml.build(work)
    os.environ["PHPROF_NVML_LIB"] = str(lib)
    state = work / (f"state-{sensor}-{seed}" + (f"-{run}" if run else ""))
    if attach:  # an earlier run's fake, its truth kept in the state file
        return fake_nvml.FakeNvml.attach(lib, state)
    # a large ring: true energies are read back for every segment of the run
    fake = fake_nvml.FakeNvml(lib, state, n_devices=1, preset=preset, seed=seed, ring_capacity=1 << 22)
    changes, unsupported = SENSORS[sensor] if preset == "a100" else ({"power_instant": {"lag_s": LAG_S}}, ())
    for field, change in changes.items():
        fake.configure(0, field, dataclasses.replace(fake.get_model(0, field), **change))
    for field in unsupported:
        fake.configure(0, field, dataclasses.replace(fake.get_model(0, field), status=3))
    return fake


def calibration_file(work: Path, sensor: str) -> Path:
    """`phprof calibrate` (quick schedule) on a fake GPU with this sensor: the file it writes
    (kept in ``work``, and used again by later runs there)."""
    from phprof.api import calibrate_gpu

    path = work / f"calibration-{sensor}.json"
    if path.exists():
        return path
    fake = fake_gpu(work, "a100", 99, sensor)
    calibrate_gpu(0, quick=True, output=path, load=fake_nvml.FakeLoad(fake), library=os.environ["PHPROF_NVML_LIB"])
    fake.close()
    return path


def run_gpt2(work: Path, seed: int, inferences: int, sensor: str = "a100", calibrations=(None,),
             reuse: bool = False) -> list[dict]:
    """One traced run; its results without calibration, and with each of ``calibrations``.
    ``reuse``: an earlier run of this sensor and seed in ``work`` is attributed again."""
    out = work / f"gpt2-{sensor}-{seed}.h5"
    tags_file = out.with_suffix(".tags.json")
    if reuse and out.exists() and tags_file.exists():
        fake = fake_gpu(work, "a100", seed, sensor, attach=True)
        tags = json.loads(tags_file.read_text())
    else:
        fake = fake_gpu(work, "a100", seed, sensor)
        levels, tags = {}, {}
        phprof.trace("gpt2", inferences=inferences, warmup=0, output=out, size="tiny", idle_s=0.5, source="nvml",
                     setup=power_per_module(fake, levels, tags, dwell_s=DWELL_S), measure_pass=False, overwrite=True)
        fake.set_power(0, fake_nvml.OUTSIDE_W, tag=OUTSIDE_TAG)
        tags_file.write_text(json.dumps(tags))
    results = [compare(out, fake, tags, c) for c in calibrations]
    fake.close()
    return results


def run_script(work: Path, seed: int, inferences: int, marks: bool, sensor: str = "a100", calibrations=(None,),
               reuse: bool = False) -> list[dict]:
    """tests/programs/generate_text.py under `phprof run`, with or without its marks: its results
    without calibration, and with each of ``calibrations``."""
    variant = "script-marks" if marks else "script-calls"
    out = work / f"{variant}-{sensor}-{seed}.h5"
    tags_file = out.with_suffix(".tags.json")
    if reuse and out.exists() and tags_file.exists():
        fake = fake_gpu(work, "a100", seed, sensor, attach=True, run=variant)
        tags = json.loads(tags_file.read_text())
    else:
        sys.path.insert(0, str(PROGRAMS))
        import tiny_lm

        sys.path.remove(str(PROGRAMS))
        model = work / "tiny-lm"
        if not (model / "config.json").exists():
            tiny_lm.save(model)
        os.environ["HF_HUB_OFFLINE"] = "1"
        fake = fake_gpu(work, "a100", seed, sensor, run=variant)
        args = [model, "-n", inferences, "--new-tokens", SCRIPT_NEW_TOKENS, "--context-words", SCRIPT_CONTEXT_WORDS]
        ended, tags = run_program(fake, PROGRAMS / "generate_text.py", args + ([] if marks else ["--no-marks"]), out,
                                  SCRIPT_DWELL_S, idle_s=0.5, overwrite=True)
        if ended.code != 0:
            raise SystemExit(f"generate_text.py ended with status {ended.code}")
        tags_file.write_text(json.dumps(tags))
    results = [compare(out, fake, tags, c) for c in calibrations]
    fake.close()
    return results


def padded(fake, levels, tags, period_s: float):
    """power_per_module, plus: each inference starts exactly ``period_s`` after
    the previous one did (a busy-wait before the model's forward), unless
    something paused the loop in between (then the period restarts from there)."""
    per_module = power_per_module(fake, levels, tags)  # no dwell: the forward must fit in the period
    state = {"start": None, "end": None}

    def setup(model):
        per_module(model)

        def pre(mod, args):
            if state["end"] is not None and time.perf_counter() - state["end"] < 0.005:  # not paused
                while time.perf_counter() < state["start"] + period_s:
                    pass
            state["start"] = time.perf_counter()

        def post(mod, args, out):
            state["end"] = time.perf_counter()

        model.register_forward_pre_hook(pre, prepend=True)
        model.register_forward_hook(post)

    return setup


def run_adversarial(work: Path, anti_alias: bool, inferences: int) -> dict:
    fake = fake_gpu(work, "h100", 7)
    levels, tags = {}, {}
    out = work / f"padded-{anti_alias}.h5"
    # one profiler window for the whole run: saving a window pauses the loop, which would shift the phase
    phprof.trace("distilbert-base-uncased-finetuned-sst-2-english", inferences=inferences, warmup=0, output=out,
                 size="tiny", idle_s=0.5, source="nvml", anti_alias=anti_alias, events_per_window=10**8,
                 setup=padded(fake, levels, tags, PADDED_PERIOD_S), measure_pass=False, overwrite=True)
    fake.set_power(0, fake_nvml.OUTSIDE_W, tag=OUTSIDE_TAG)
    result = compare(out, fake, tags)
    fake.close()
    return result


def summarise(label: str, r: dict) -> tuple[float, float, float, list[bool], list[float]]:
    total = r["inferences_j"]
    err, inside = errors(r)
    naive = [abs(n - t) / total for _, t, _, _, _, n in r["rows"]]
    widths = [(hi - lo) / 2 / max(e, 1e-12) for _, _, e, lo, hi, _ in r["rows"]]
    res = r["results"]
    print(f"| {label} | {r['n']} | {r['span_s']:.0f} | {len(r['rows'])}/{len(res.layers) - 2} | "
          f"{max(err):.2%} | {max(naive):.2%} | {np.mean(inside):.0%} | "
          f"{100 * (r['counter_total'] / r['true_total'] - 1):+.2f}% | "
          f"{100 * (r['integrated_total'] / r['true_total'] - 1):+.2f}% | "
          f"{res.sensor.period_s * 1e3:.0f} ms / {res.sensor.lag_s * 1e3:+.0f} ms / {res.sensor.window_s * 1e3:.0f} ms | "
          f"{r['max_power_w']:.0f} W / {r['limit_w']:.0f} W | {res.method.text()} | {r['tag_gap']:.2%} |")
    return max(err), max(naive), float(np.mean(inside)), inside, widths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inferences", type=int,
                    help="per run (default 200 tiny gpt2 inferences of 10 tokens: ~75 s of run on a quiet 2-core VM; "
                    "with --script 160 pipeline calls of 4 tokens: >= 62 s on any machine)")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="the fake sensor's seeds (phase, noise), one run each")
    ap.add_argument("--sensors", default=",".join(SENSORS),
                    help=f"fake sensors to run ({', '.join(f'{k}: {v}' for k, v in SENSOR_TEXT.items())})".replace("%", "%%"))
    ap.add_argument("--no-calibration", action="store_true",
                    help="skip the second attribution of each run with `phprof calibrate`'s file of its sensor")
    ap.add_argument("--no-adversarial", action="store_true")
    ap.add_argument("--detail", action="store_true", help="print every layer of the first run")
    ap.add_argument("--work", type=Path, help="folder for the runs' traces, fake states and tags (default: a new "
                    "temporary one)")
    ap.add_argument("--reattribute", action="store_true",
                    help="attribute the runs already in --work again instead of running them (missing ones run)")
    ap.add_argument("--script", action="store_true", help="a user's pipeline script under `phprof run`, with and "
                    "without its prof.inference() marks, instead of gpt2 under `phprof trace` (no adversarial rows)")
    ap.add_argument("--edge-us", type=float, help="the intervals' allowance for the timeline's edges against the "
                    "power (phprof.attribution.attribute.EDGE_S; default phprof's)")
    args = ap.parse_args()
    if args.reattribute and args.work is None:
        ap.error("--reattribute needs --work DIR (an earlier run's folder)")
    if args.edge_us is not None:
        from phprof.attribution import attribute as attribute_module

        attribute_module.EDGE_S = args.edge_us * 1e-6
    work = args.work or Path(tempfile.mkdtemp(prefix="phprof-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs; {'re-attributing earlier runs' if args.reattribute else 'running'}\n")
    head = ("| run | inferences | span (s) | layers resolved/all | worst error, phprof | worst error, naive split "
            "| truth in 90% interval | total, counter | total, integrated samples | fitted period / lag / window "
            "| highest layer power / limit | method | truth ambiguity (fake's tags vs timeline) |")
    print(head)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|")
    tally: dict[tuple[str, str, str], list] = {}
    between: list[tuple[str, dict]] = []
    first = None
    inferences = args.inferences or (160 if args.script else 200)
    variants = (("prof.inference() marks", True), ("no marks", False)) if args.script else (("", None),)
    for sensor in [x for x in args.sensors.split(",") if x]:
        cal = None if args.no_calibration else calibration_file(work, sensor)
        calibrations = (None, cal) if cal else (None,)
        for seed in [int(s) for s in args.seeds.split(",") if s]:
            for variant, marks in variants:
                runs = run_script(work, seed, inferences, marks, sensor, calibrations, reuse=args.reattribute) \
                    if args.script else run_gpt2(work, seed, inferences, sensor, calibrations, reuse=args.reattribute)
                for how, r in zip(("none", "calibrated"), runs):
                    first = first or r
                    label = f"{sensor}, seed {seed}, calibration {how}" + (f", script, {variant}" if variant else "")
                    e, _, _, inside, widths = summarise(label, r)
                    row = tally.setdefault((sensor, how, variant), [[], [], [], [], []])
                    row[0].append(e)
                    row[1] += inside
                    row[2].append(r["max_power_w"] <= r["limit_w"] * (1 + 1e-9))  # at the limit, to float rounding
                    row[3].append(r["span_s"])
                    row[4] += widths
                    between.append((label, r))
    if not args.no_adversarial and not args.script:
        for anti_alias in (False, True):
            r = run_adversarial(work, anti_alias, 1300)
            summarise(f"{PADDED_PERIOD_S * 1e3:.0f} ms inferences, h100 100 ms sensor, anti-alias "
                      f"{'on' if anti_alias else 'off'}", r)
            print("|  | " + "; ".join(n for n in r["results"].notes if "windows" in n) + " |||||||||||")
    print()
    print("sensors: " + "; ".join(f"{k}: {v}" for k, v in SENSOR_TEXT.items()) + " (fake a100 otherwise, "
          "400 W limit); the adversarial rows use the fake h100 preset; errors are shares of the inferences' own "
          "energy; totals against the fake's true energy over the run; truth ambiguity: the largest gap between a "
          "layer's energy by the fake's power tags and by phprof's timeline, as a share of the inferences' energy; "
          "calibrated: attributed with the file `phprof calibrate` (quick schedule) wrote on a fake GPU of the "
          "same sensor")
    print()
    print("| sensor | calibration |" + (" script |" if args.script else "") + " seeds | shortest run (target >= "
          "60 s) | worst layer error (target <= 3%) | truth in 90% interval (target >= 85%) | median half-width of "
          "the interval | no layer above the limit |")
    print("|---|---|" + ("---|" if args.script else "") + "---:|---:|---:|---:|---:|---|")
    for (sensor, how, variant), (worst, inside, below, spans, widths) in tally.items():
        length = f"{min(spans):.0f} s" + ("" if min(spans) >= FULL_LENGTH_S else " (SHORT)")
        print(f"| {SENSOR_TEXT[sensor]} | {how} |" + (f" {variant} |" if args.script else "") + f" {len(worst)} | "
              f"{length} | {max(worst):.2%} | {np.mean(inside):.1%} of {len(inside)} | {np.median(widths):.1%} | "
              f"{'yes' if all(below) else 'NO'} |")
    if args.script:
        print("\nbetween inferences (the script's own Python work, phprof's pauses and window saves: the report's "
              "(idle) row), and in an inference outside every module (the pipeline's and generate()'s own Python; "
              "- : merged with modules), against the fake's true energy there; errors as shares of the inferences' "
              "energy\n")
        print("| run | between: time (s) | true (J) | phprof (J) [90% interval] | error | truth inside "
              "| outside modules: true (J) | phprof (J) [90% interval] |")
        print("|---|---:|---:|---:|---:|---|---:|---:|")
        for label, r in between:
            _, truth, e, lo, hi = r["between"]
            out = r["outside"]
            outside = f"{out[1]:.1f} | {out[2]:.1f} [{out[3]:.1f}, {out[4]:.1f}]" if out else "- | -"
            print(f"| {label} | {r['between_s']:.1f} | {truth:.1f} | {e:.1f} [{lo:.1f}, {hi:.1f}] | "
                  f"{abs(e - truth) / r['inferences_j']:.2%} | {'yes' if lo <= truth <= hi else 'NO'} | {outside} |")
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.detail and first:
        print("\n| layer | true (J) | phprof (J) [90% interval] | naive (J) |\n|---|---:|---:|---:|")
        for name, truth, e, lo, hi, naive in sorted(first["rows"], key=lambda x: -x[1]):
            print(f"| {name} | {truth:.1f} | {e:.1f} [{lo:.1f}, {hi:.1f}] | {naive:.1f} |")


if __name__ == "__main__":
    main()
