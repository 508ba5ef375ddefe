#!/usr/bin/env python3
"""Compare every output of the `phprof` command between two versions of the code.

    python tools/compare_outputs.py --before REV [--after WORKTREE_OR_REV] [--work DIR]
                                    [--keep] [--strict] [--inputs DIR] [--jobs N]

Made for refactors that must not change what users see: it runs the same commands on the
same input files with the code of `--before` (a git revision) and of `--after` (a folder
read as it is, uncommitted changes included, or a git revision; default: the working tree
this script lives in) and prints one row per output, `identical` or `differs` with what
differs. The exit status is 0 unless the script itself fails; with `--strict` it is 1 when
any output differs or could not be compared (a side that cannot run; not the commands
`--no-diffusion` skips).

How
1. Pinned inputs, made once by the *before* code (`--inputs DIR` reuses those of an earlier
   `--keep` run instead). Traces depend on timing, so they are never regenerated per side:
   both sides get copies of the same files. On the CPU, against the fake NVML library
   (tools/fake_nvml, built from the before revision) with every module drawing a known
   power (`fake_nvml.power_per_module`), as the tests' `gpt2_trace` fixture does:
     gpt2.h5      tiny gpt2, text-generation, 60 inferences: enough sensor updates for the
                  windowed least-squares estimate (bootstrap intervals, merged groups);
     t5.h5        tiny google/flan-t5-base, zero-shot-summarization (encoder-decoder),
                  30 inferences (too few updates for its labels: the time-proportional
                  split, with bounds);
     sd.h5        tiny segmind/tiny-sd, 2 denoising steps, 3 inferences (`--no-diffusion`
                  skips it and the commands that use it);
     nopower.h5   tiny gpt2 with `source="none"`: the time-only report;
   plus resnet.json.gz (shared/data/kineto/v100-resnet-ns.json.gz) for `phprof attribute`
   with power.csv, a power log covering its span (a fixed-seed random power every 1 ms and
   its cumulative energy), broken CSVs for the error paths, a sensor calibration JSON and a
   junk file. Making them takes about a minute on 2 cores; the whole comparison about 4.
2. Each side gets its own folder with copies of the inputs and runs, from inside it with
   relative file names (so that names embedded in outputs are equal), the commands of
   STEPS below in order (a report stores its results in the trace file, later commands
   read them back: the order is part of what is compared). Stdout, stderr, the exit code
   and every file a command created, changed or deleted in the folder are captured.
   A side's CLI is the entry point its own pyproject.toml names (`[project.scripts]
   phprof = "module:func"`), with its `profiler/` folder imported as `phprof` through a
   symlink placed first on PYTHONPATH (checked: the installed editable phprof must not win).
   The native sampler (needed only to make the traces) is built in the worktrees this
   script creates, never in a folder given to it. Nothing is written into --after's folder
   (PYTHONDONTWRITEBYTECODE); the environment is pinned (COLUMNS for click's help, TZ,
   locale, offline Hugging Face, no PHPROF_* variables). The two sides run concurrently.
3. Comparison, per output: equal bytes are `identical`. Otherwise, by kind:
     text     a unified diff excerpt and the count of lines changed;
     JSON     both parsed: the paths of keys and values that differ (and whether only
              the formatting or key order differs when the parsed values are equal);
     HTML     the embedded data (<script type="application/json" id="phprof-data">,
              parsed), the visible text, the stylesheets, the scripts and the remaining
              markup (tags and attributes, SVG plots included) separately, so that e.g.
              "only the stylesheet changed" is visible;
     HDF5     every group, dataset (dtype, shape, values) and attribute (JSON text
              attributes parsed), by path; equal content in different bytes is reported.

Excluded, and why
- `phprof trace` (its output is a run's timing and measurements: never twice the same; it
  only makes the inputs here) and `phprof devices` (this machine's sensors, with measured
  read latencies). Their `--help` is compared.
- Normalised, because they differ between two runs of the same code: in HDF5 files the
  file's creation time (`/` attribute `created_ns`) and an import's time (`/meta`
  attribute `imported_ns`), both wall-clock stamps `phprof attribute` writes into the
  trace file it creates. Nothing else is normalised: in particular PYTHONHASHSEED is
  left random, and two runs of the same revision agree on every output all the same.
- The folders are read while the commands run: a tree edited during a run (the working
  tree, say) can give results of a mix of versions.

The work folder (`--work`, default a new temporary one) holds inputs/, and per side
run/ (the folder the commands ran in) and out/NN/ (stdout, stderr, exit code and the
files each step wrote). It is removed at the end, with the git worktrees this script
added, unless `--keep`.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import difflib
import gzip
import hashlib
import html.parser
import io
import json
import math
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KINETO = REPO.parent / "shared" / "data" / "kineto" / "v100-resnet-ns.json.gz"
MARKER = ".phprof-compare-outputs"  # marks a work folder made by this script (safe to delete)
STEP_TIMEOUT_S = 900
EXCERPT_LINES = 20


# ================================================================ the commands compared
@dataclasses.dataclass(frozen=True)
class Step:
    id: str
    args: tuple[str, ...]
    needs: frozenset[str]  # the inputs it reads (skipped when one was not made)

    @property
    def command(self) -> str:
        return "phprof " + shlex.join(self.args)


# Copies made in each side's folder before the first step, so that a command can start
# from a trace without stored results (each command that attributes stores what it
# computed, and every later command reads that back).
COPIES = {"gpt2-flame.h5": "gpt2.h5", "gpt2-sensor.h5": "gpt2.h5"}
# Each line is one step; the files it reads are found by name among the inputs.
STEPS = """
# report of a trace with power: the first attributes it and stores /results, the rest read them back
report gpt2.h5
report gpt2.h5
report gpt2.h5 --markdown
report gpt2.h5 --json
report gpt2.h5 --html report.html
report gpt2.h5 --region fr --pue 1.2 --training-kwh 100 --top 5
report gpt2.h5 --carbon-intensity 300 --markdown
report gpt2.h5 --region study:aws:us-west-2 --json --top 3
report gpt2.h5 --list-regions
report gpt2.h5 --recompute --json
report gpt2-sensor.h5 --sensor sensor.json --json
# report errors
report missing.h5
report junk.h5
report gpt2.h5 --region atlantis
report gpt2.h5 --region fr --carbon-intensity 300
report gpt2.h5 --pue 0.5
report gpt2.h5 --sensor missing.json
# diffusion: denoising steps, images, unet/vae stacks
report sd.h5
report sd.h5 --json
report sd.h5 --markdown --html sd-report.html
# no power source: time per layer only
report nopower.h5
report nopower.h5 --json
report nopower.h5 --markdown --top 3
report nopower.h5 --html nopower-report.html
# flamegraphs: the first attributes gpt2-flame.h5 (stored without roll-ups)
flamegraph gpt2-flame.h5 -o flame.html
flamegraph gpt2-flame.h5 -o flame.folded
flamegraph gpt2-flame.h5 -o flame.speedscope.json
flamegraph gpt2-flame.h5 -o flame.perfetto.json
flamegraph gpt2-flame.h5 -o flame.trace.json
flamegraph gpt2-flame.h5 -o flame-folded.txt --format folded
flamegraph gpt2-flame.h5 -o flame-page.out --format html
flamegraph gpt2-flame.h5 -o flame-min.html --min-share 0.01
flamegraph gpt2-flame.h5 -o flame-again.folded --recompute
flamegraph sd.h5 -o sd.html
flamegraph sd.h5 -o sd.folded
# flamegraph errors
flamegraph nopower.h5 -o nopower.html
flamegraph gpt2-flame.h5 -o flame.png
flamegraph gpt2-flame.h5 -o flame.json
flamegraph gpt2-flame.h5 -o missing/flame.html
flamegraph missing.h5 -o x.html
# compare: decoder-only against encoder-decoder (t5.h5 attributed by the first and stored)
compare gpt2.h5 t5.h5
compare gpt2.h5 t5.h5 --markdown
compare gpt2.h5 t5.h5 --json
compare gpt2.h5 t5.h5 --html compare.html
compare gpt2.h5 t5.h5 --html compare-min.html --min-share 0.01 --markdown
compare gpt2.h5 t5.h5 sd.h5
compare gpt2.h5 t5.h5 sd.h5 --json
compare gpt2.h5 gpt2.h5 t5.h5
compare gpt2.h5 gpt2-flame.h5
report t5.h5 --markdown
# compare errors
compare gpt2.h5
compare gpt2.h5 nopower.h5
compare gpt2.h5 missing.h5
compare gpt2.h5 t5.h5 --html missing/compare.html
# a foreign trace: a Kineto JSON from a V100 and a power log
attribute resnet.json.gz power.csv
attribute resnet.json.gz power.csv --json -o resnet-json.h5
attribute resnet.json.gz power.csv --overwrite --markdown --region fr
report resnet.h5
report resnet.h5 --html resnet-report.html
flamegraph resnet.h5 -o resnet.perfetto.json
flamegraph resnet.h5 -o resnet.folded
attribute resnet.json.gz power.csv --list-regions
# attribute errors
attribute resnet.json.gz power.csv
attribute resnet.json.gz power-badheader.csv -o bad-header.h5
attribute resnet.json.gz power-otherclock.csv -o bad-clock.h5
attribute resnet.json.gz power-empty.csv -o bad-empty.h5
attribute resnet.json.gz missing.csv -o bad-missing.h5
attribute missing.json.gz power.csv -o bad-nojson.h5
attribute resnet.json.gz power.csv -o bad-opts.h5 --region fr --carbon-intensity 1
# the model table
models
models --json
models --task text-generation
models --task nope
# help and version of every command
--help
--version
trace --help
report --help
flamegraph --help
compare --help
attribute --help
models --help
devices --help
"""


def steps() -> list[Step]:
    """STEPS with their ids; `needs` is the inputs (or copies) named in the arguments."""
    out = []
    for line in STEPS.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        args = tuple(shlex.split(line))
        needs = frozenset(COPIES.get(a, a) for a in args if COPIES.get(a, a) in INPUT_NAMES)
        out.append(Step(f"{len(out) + 1:02d}", args, needs))
    return out


# ================================================================ the pinned inputs
# (file, model, task, power source, trace options); made by the before revision's phprof.trace
TRACES = [
    ("gpt2.h5", "gpt2", None, "nvml", dict(inferences=60, new_tokens=4)),
    ("t5.h5", "google/flan-t5-base", "zero-shot-summarization", "nvml", dict(inferences=30, new_tokens=4)),
    ("sd.h5", "segmind/tiny-sd", None, "nvml", dict(inferences=3, steps=2)),
    ("nopower.h5", "gpt2", None, "none", dict(inferences=10, new_tokens=4)),
]
OTHER_INPUTS = ["resnet.json.gz", "power.csv", "power-badheader.csv", "power-otherclock.csv", "power-empty.csv",
                "sensor.json", "junk.h5"]
INPUT_NAMES = {t[0] for t in TRACES} | set(OTHER_INPUTS)

# Runs in a subprocess with the before revision's phprof and tools/ on the path: one trace.
_TRACE_CODE = r"""
import inspect, json, os, sys
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["tools"])
import fake_nvml
import phprof
fake = setup = None
if spec["source"] == "nvml":
    os.environ["PHPROF_NVML_LIB"] = spec["lib"]
    # as the tests' gpt2_trace fixture: one A100-like fake GPU, every module drawing its own power
    fake = fake_nvml.FakeNvml(spec["lib"], spec["state"], n_devices=1, preset="a100", seed=3,
                              ring_capacity=1 << 21)
    setup = fake_nvml.power_per_module(fake, {}, {}, dwell_s=0.0005)
try:  # a phprof with a measurement pass runs it before setup()'s hooks: not with them (older ones have none)
    from phprof.tracing.run import trace as _trace
    _own = {"measure_pass": False} if setup is not None and "measure_pass" in inspect.signature(_trace).parameters \
        else {}
except ImportError:
    _own = {}
s = phprof.trace(spec["model"], spec["task"], output=spec["output"], warmup=0, size="tiny",
                 idle_s=0.3 if fake else 0.0, source=spec["source"], setup=setup, **_own, **spec["options"])
if fake:
    fake.close()
print(f"{s.status}: {s.inferences} inferences, {s.inference_s:.1f} s")
"""


def make_inputs(side: Side, folder: Path, kineto: Path, diffusion: bool, jobs: int) -> dict:
    """The pinned inputs, made by `side`'s code; returns the manifest (also written)."""
    folder.mkdir(parents=True)
    t0 = time.monotonic()
    _power_inputs(folder, kineto)
    (folder / "sensor.json").write_text(json.dumps({"period_s": 0.101, "window_s": 0.025, "lag_s": 0.005}) + "\n")
    (folder / "junk.h5").write_text("not an HDF5 file\n")
    # the fake NVML library, compiled from the before revision's tools/
    build = "import sys; sys.path.insert(0, sys.argv[1]); import fake_nvml; print(fake_nvml.build(sys.argv[2]))"
    lib = _run_checked([sys.executable, "-c", build, str(side.tree / "tools"), str(folder.parent / "fake-nvml")],
                       side.env, "building the fake NVML library").strip()
    todo = [t for t in TRACES if diffusion or t[0] != "sd.h5"]

    def one(t):
        name, model, task, source, options = t
        spec = dict(tools=str(side.tree / "tools"), lib=lib, state=str(folder.parent / f"fake-state-{name}"),
                    model=model, task=task, source=source, output=name, options=options)
        start = time.monotonic()
        out = _run_checked([sys.executable, "-c", _TRACE_CODE, json.dumps(spec)], side.env, f"tracing {name}",
                           cwd=folder)
        _log(f"[inputs] {name}: {out.strip().splitlines()[-1]} ({time.monotonic() - start:.0f} s)")
        return name

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, todo))
    manifest = {"made_by": f"{side.spec} = {side.commit}" if side.commit else side.describe,
                "seconds": round(time.monotonic() - t0, 1),
                "files": {p.name: _sha256(p) for p in sorted(folder.iterdir())}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _power_inputs(folder: Path, kineto: Path) -> None:
    """resnet.json.gz and power logs over its span: good, shifted to another day, bad header, empty."""
    shutil.copyfile(kineto, folder / "resnet.json.gz")
    with gzip.open(kineto, "rt") as f:
        events = [e for e in json.load(f)["traceEvents"]
                  if e.get("ph") == "X" and isinstance(e.get("ts"), (int, float))]
    t0_ns = round(1e3 * min(e["ts"] for e in events))
    t1_ns = round(1e3 * max(e["ts"] + e.get("dur", 0) for e in events))
    step_ns, margin_ns = 1_000_000, 200_000_000
    rng = random.Random(20240403)  # fixed seed: the same log every time
    rows, energy = [], 0.0
    for t in range(t0_ns - margin_ns, t1_ns + margin_ns, step_ns):
        p = rng.uniform(120.0, 300.0)
        energy += p * step_ns / 1e9
        rows.append((t, f"{p:.3f}", f"{energy:.6f}"))

    def write(name, header, body):
        with open(folder / name, "w", newline="") as f:
            f.write(",".join(header) + "\n")
            f.writelines(",".join(map(str, r)) + "\n" for r in body)

    write("power.csv", ("timestamp_ns", "power_w", "energy_j"), rows)
    ten_days = 10 * 86400 * 10**9  # a log on another clock: refused, both ranges named
    write("power-otherclock.csv", ("timestamp_ns", "power_w", "energy_j"), [(t + ten_days, p, e) for t, p, e in rows])
    write("power-badheader.csv", ("when", "watts"), [(t, p) for t, p, _ in rows[:100]])
    write("power-empty.csv", ("timestamp_ns", "power_w"), [])


# ================================================================ the two sides
@dataclasses.dataclass
class Side:
    label: str  # "before" or "after"
    spec: str  # what was given on the command line
    tree: Path
    commit: str | None  # None: a folder read as it is
    ours: bool  # a git worktree this script added (removed at the end)
    pythonpath: Path
    entry: tuple[str, str] | None = None
    broken: str | None = None  # why this side's CLI cannot run at all
    env: dict = dataclasses.field(default_factory=dict)

    @property
    def describe(self) -> str:
        if self.commit:
            return f"{self.spec} = {self.commit[:12]} (worktree {self.tree})"
        head = _git(["rev-parse", "--short=12", "HEAD"], cwd=self.tree, check=False).strip() or "?"
        dirty = _git(["status", "--porcelain", "--untracked-files=normal", "--", "."], cwd=self.tree,
                     check=False).splitlines()
        return f"folder {self.tree} (HEAD {head}, {len(dirty)} paths changed or untracked)"


def make_side(label: str, spec: str, work: Path, build: bool) -> Side:
    """A side: `spec` is a folder (read as it is) or a revision (a new git worktree)."""
    if Path(spec).is_dir():
        tree, commit, ours = Path(spec).resolve(), None, False
    else:
        commit = _git(["rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}"], check=False).strip()
        if not commit:
            raise SystemExit(f"{spec!r} is neither a folder nor a git revision of {REPO}")
        tree, ours = work / f"{label}-tree", True
        _git(["worktree", "add", "--detach", "--quiet", str(tree), commit])
    side = Side(label, spec, tree, commit or None, ours, work / label / "pythonpath")
    side.pythonpath.mkdir(parents=True)
    (side.pythonpath / "phprof").symlink_to(tree / "profiler", target_is_directory=True)
    side.env = _environment(side.pythonpath)
    if ours and build:
        _build_sampler(side)
    try:
        side.entry = _entry_point(tree)
    except Exception as e:  # noqa: BLE001 - any failure means this side cannot run
        side.broken = f"no entry point: {e}"
        return side
    # the CLI must import, and as this tree's phprof (not the installed editable one)
    probe = subprocess.run([sys.executable, "-c", f"import phprof; from {side.entry[0]} import {side.entry[1]}; "
                            "print(phprof.__file__)"], env=side.env, capture_output=True, text=True)
    if probe.returncode != 0:
        side.broken = f"{side.entry[0]}:{side.entry[1]} fails to import: {_last_line(probe.stderr)}"
    elif not probe.stdout.strip().startswith(str(side.pythonpath)):
        side.broken = f"imports phprof from {probe.stdout.strip()}, not from {tree / 'profiler'}"
    return side


def _entry_point(tree: Path) -> tuple[str, str]:
    """`[project.scripts] phprof = "module:func"` of the tree's pyproject.toml."""
    with open(tree / "pyproject.toml", "rb") as f:
        target = tomllib.load(f)["project"]["scripts"]["phprof"]
    module, _, func = target.partition(":")
    if not module.startswith("phprof") or not func.isidentifier():
        raise ValueError(f"unexpected entry point {target!r}")
    return module, func


def _build_sampler(side: Side) -> None:
    """The native sampler, built in our worktree (only the inputs' traces need it); if that
    fails, the one built beside this script, copied."""
    p = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=side.tree, env=side.env,
                       capture_output=True, text=True)
    if p.returncode == 0:
        return
    built = sorted((REPO / "profiler").glob("_sampler*.so"))
    if not built:
        raise SystemExit(f"building the native sampler in {side.tree} failed:\n{p.stderr[-2000:]}")
    _log(f"[{side.label}] building the sampler failed; using a copy of {built[0]}")
    shutil.copy2(built[0], side.tree / "profiler" / built[0].name)


def _environment(pythonpath: Path) -> dict:
    """The environment every command runs in, equal on both sides."""
    dropped = ("PYTHONPATH", "PYTHONSTARTUP", "COLUMNS", "LINES")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHPROF_") and k not in dropped}
    env.update(
        PYTHONPATH=str(pythonpath),  # this side's phprof first (before the installed editable one)
        PYTHONDONTWRITEBYTECODE="1",  # no __pycache__ written into the trees
        COLUMNS="100",  # click wraps help text to the terminal's width
        LC_ALL="C.UTF-8", LANG="C.UTF-8", TZ="UTC",
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
    )
    return env


def _launcher(entry: tuple[str, str]) -> str:
    module, func = entry
    return f"import sys; from {module} import {func}; sys.argv[0] = 'phprof'; {func}()"


# ================================================================ running a side
@dataclasses.dataclass
class Outcome:
    rc: int | str  # exit code, or "timeout" / "not run" / "skipped" (its input was not made)
    stdout: bytes = b""
    stderr: bytes = b""
    files: dict = dataclasses.field(default_factory=dict)  # relative name -> captured copy (None: deleted)
    seconds: float = 0.0
    why_not: str | None = None  # the step was not run: why


def run_side(side: Side, inputs: Path, all_steps: list[Step], available: set[str]) -> dict[str, Outcome]:
    run_dir, out_dir = inputs.parent / side.label / "run", inputs.parent / side.label / "out"
    run_dir.mkdir(parents=True)
    for p in inputs.iterdir():
        if p.name in INPUT_NAMES:
            shutil.copyfile(p, run_dir / p.name)
    for copy, source in COPIES.items():
        if (run_dir / source).exists():
            shutil.copyfile(run_dir / source, run_dir / copy)
    state = _Snapshot(run_dir)
    results = {}
    for n, step in enumerate(all_steps, 1):
        if not step.needs <= available:
            missing = ", ".join(sorted(step.needs - available))
            results[step.id] = Outcome("skipped", why_not=f"input {missing} not made (--no-diffusion)")
            continue
        start = time.monotonic()
        try:
            p = subprocess.run([sys.executable, "-c", _launcher(side.entry), *step.args], cwd=run_dir, env=side.env,
                               capture_output=True, timeout=STEP_TIMEOUT_S)
            rc, stdout, stderr = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            rc, stdout, stderr = "timeout", e.stdout or b"", e.stderr or b""
        seconds = time.monotonic() - start
        where = out_dir / step.id
        (where / "files").mkdir(parents=True)
        (where / "command").write_text(step.command + "\n")
        (where / "stdout").write_bytes(stdout)
        (where / "stderr").write_bytes(stderr)
        (where / "rc").write_text(f"{rc}\n")
        files = {}
        for rel, gone in state.changes().items():
            if gone:
                files[rel] = None
            else:
                dest = where / "files" / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run_dir / rel, dest)
                files[rel] = dest
        results[step.id] = Outcome(rc, stdout, stderr, files, seconds)
        _log(f"[{side.label}] {n}/{len(all_steps)} {step.command} -> {rc} ({seconds:.1f} s)")
    return results


class _Snapshot:
    """The files of a folder by content: `changes()` names those created, changed or
    deleted since the last call (stat first, then a hash, so rewriting equal bytes is no change)."""

    def __init__(self, root: Path):
        self.root = root
        self.keys = {rel: self._key(p) for rel, p in self._scan().items()}  # rel -> ((size, mtime), sha256)

    def _scan(self) -> dict:
        return {str(p.relative_to(self.root)): p for p in sorted(self.root.rglob("*")) if p.is_file()}

    def _key(self, p: Path, old=None):
        st = p.stat()
        stat = (st.st_size, st.st_mtime_ns)
        if old is not None and old[0] == stat:
            return old
        return stat, _sha256(p)

    def changes(self) -> dict[str, bool]:
        now = self._scan()
        changed = {}
        for rel, p in now.items():
            key = self._key(p, self.keys.get(rel))
            if rel not in self.keys or key[1] != self.keys[rel][1]:
                changed[rel] = False
            self.keys[rel] = key
        for rel in set(self.keys) - set(now):
            changed[rel] = True
            del self.keys[rel]
        return dict(sorted(changed.items()))


# ================================================================ comparing outputs
@dataclasses.dataclass
class Row:
    step: Step
    output: str
    status: str  # identical, differs, not run (a side cannot run), skipped (--no-diffusion)
    detail: str = ""
    excerpt: list[str] = dataclasses.field(default_factory=list)


def compare_step(step: Step, b: Outcome, a: Outcome) -> list[Row]:
    if b.why_not or a.why_not:
        if b.why_not and a.why_not and b.why_not == a.why_not:
            return [Row(step, "all outputs", "skipped" if b.rc == "skipped" else "not run", b.why_not)]
        which = "before" if b.why_not else "after"
        return [Row(step, "all outputs", "not run", f"{which}: {b.why_not or a.why_not}")]
    rows = []
    same, detail, excerpt = compare_blob("stdout", b.stdout, a.stdout)
    if b.rc != a.rc:
        detail = f"exit code {b.rc} -> {a.rc}" + (f"; {detail}" if detail else "; stdout identical")
        same = False
    rows.append(Row(step, f"stdout, exit {b.rc}" if b.rc == a.rc else "stdout, exit code",
                    "identical" if same else "differs", detail, excerpt))
    if b.stderr or a.stderr:
        same, detail, excerpt = compare_blob("stderr", b.stderr, a.stderr)
        if not same and b"Traceback" in a.stderr and b"Traceback" not in b.stderr:
            detail = f"after raised {_last_line(a.stderr.decode(errors='replace'))}; {detail}"
        rows.append(Row(step, "stderr", "identical" if same else "differs", detail, excerpt))
    for rel in sorted(set(b.files) | set(a.files)):
        label = f"file {rel}"
        if rel not in a.files or rel not in b.files:  # None: deleted
            side, kept = ("before", b.files[rel]) if rel in b.files else ("after", a.files[rel])
            rows.append(Row(step, label, "differs", f"{'written' if kept else 'deleted'} by {side} only"))
        elif b.files[rel] is None or a.files[rel] is None:
            both = b.files[rel] is None and a.files[rel] is None
            rows.append(Row(step, label, "identical" if both else "differs",
                            "deleted" if both else f"deleted by {'before' if b.files[rel] is None else 'after'} only"))
        else:
            same, detail, excerpt = compare_blob(rel, b.files[rel].read_bytes(), a.files[rel].read_bytes())
            rows.append(Row(step, label, "identical" if same else "differs", detail, excerpt))
    return rows


def compare_blob(name: str, b: bytes, a: bytes) -> tuple[bool, str, list[str]]:
    """(identical, what differs, excerpt lines): by the kind of `name` (a file, stdout, stderr)."""
    if b == a:
        return True, "", []
    lower = name.lower()
    if lower.endswith(".h5"):
        return compare_hdf5(b, a)  # wall-clock stamps normalised: may still be identical
    if lower.endswith((".html", ".htm")) or _looks_html(b) and _looks_html(a):
        return False, *compare_html(b, a)
    tb, ta = _text(b), _text(a)
    if tb is None or ta is None:
        return False, f"binary: {len(b)} -> {len(a)} bytes", []
    jb, ja = _json(tb), _json(ta)
    if jb is not _NOT_JSON and ja is not _NOT_JSON:
        return False, *compare_json(jb, ja, tb, ta)
    return False, *compare_text(tb, ta)


def compare_text(b: str, a: str, what: str = "text") -> tuple[str, list[str]]:
    bl, al = b.splitlines(), a.splitlines()
    diff = list(difflib.unified_diff(bl, al, "before", "after", n=1, lineterm=""))[2:]
    removed = sum(1 for d in diff if d.startswith("-"))
    added = sum(1 for d in diff if d.startswith("+"))
    if not diff:  # same lines: line endings or the final newline differ
        return f"{what}: same lines, line endings or final newline differ", [repr(b[-40:]), repr(a[-40:])]
    return f"{what}: {removed} lines removed, {added} added (of {len(bl)} -> {len(al)})", _clip(diff)


def compare_json(b, a, tb: str, ta: str) -> tuple[str, list[str]]:
    d = _Diff()
    d.json(b, a, "$")
    if d.lines:
        return f"JSON: {d.summary()}", d.excerpt()
    detail, excerpt = compare_text(tb, ta)
    return "JSON: equal values, but the formatting (or key order) differs; " + detail, excerpt


class _Diff:
    """The differences found between two values, one line each, and the largest relative
    difference among the floating-point numbers that differ (to tell a change of rounding,
    e.g. of summation order, from a change of value)."""

    def __init__(self):
        self.lines: list[str] = []
        self.floats = 0  # floats that differ (floats on both sides)
        self.max_rel = 0.0

    def add(self, line: str) -> None:
        self.lines.append(line)

    def add_float(self, x: float, y: float) -> None:
        self.floats += 1
        rel = abs(x - y) / max(abs(x), abs(y)) if math.isfinite(x) and math.isfinite(y) else math.inf
        self.max_rel = max(self.max_rel, rel)

    def json(self, b, a, path: str) -> None:
        """Two parsed JSON values (or attribute values), recursively."""
        if isinstance(b, dict) and isinstance(a, dict):
            for k in b:
                if k not in a:
                    self.add(f"{path}.{k}: only before ({_short(b[k])})")
            for k in a:
                if k not in b:
                    self.add(f"{path}.{k}: only after ({_short(a[k])})")
            for k in b:
                if k in a:
                    self.json(b[k], a[k], f"{path}.{k}")
            if [k for k in b if k in a] != [k for k in a if k in b]:
                self.add(f"{path}: key order differs")
        elif isinstance(b, list) and isinstance(a, list):
            if len(b) != len(a):
                self.add(f"{path}: length {len(b)} -> {len(a)}")
            for i, (x, y) in enumerate(zip(b, a)):
                self.json(x, y, f"{path}[{i}]")
        elif not _same_scalar(b, a):
            if isinstance(b, float) and isinstance(a, float):
                self.add_float(b, a)
            self.add(f"{path}: {_short(b)} -> {_short(a)}")

    def summary(self) -> str:
        text = f"{len(self.lines)} paths differ"
        if self.floats:
            text += f" ({self.floats} floats, largest relative difference {self.max_rel:.2g})"
        return text

    def excerpt(self) -> list[str]:
        shown = self.lines[:EXCERPT_LINES]
        return shown + ([f"... and {len(self.lines) - len(shown)} more"] if len(self.lines) > len(shown) else [])


def _same_scalar(x, y) -> bool:
    if type(x) is not type(y):  # 1 and 1.0 print differently
        return False
    if isinstance(x, float) and math.isnan(x) and math.isnan(y):
        return True
    return x == y


class _HtmlParts(html.parser.HTMLParser):
    """An HTML page split into the embedded data, the visible text, the stylesheets, the
    scripts and the rest of the markup (tags with their attributes)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = {"data": [], "text": [], "style": [], "script": [], "markup": []}
        self._inside = None

    def handle_starttag(self, tag, attrs):
        self.parts["markup"].append(self.get_starttag_text())
        if tag in ("script", "style"):
            a = dict(attrs)
            data = tag == "script" and a.get("type") == "application/json" and a.get("id") == "phprof-data"
            self._inside = "data" if data else tag

    def handle_startendtag(self, tag, attrs):
        self.parts["markup"].append(self.get_starttag_text())

    def handle_endtag(self, tag):
        self.parts["markup"].append(f"</{tag}>")
        if tag in ("script", "style"):
            self._inside = None

    def handle_data(self, data):
        if self._inside:
            self.parts[self._inside].append(data)
        elif text := " ".join(data.split()):  # as a browser shows it: runs of white space collapsed
            self.parts["text"].append(text)

    def handle_decl(self, decl):
        self.parts["markup"].append(f"<!{decl}>")

    def handle_comment(self, data):
        self.parts["markup"].append(f"<!--{data}-->")

    @classmethod
    def split(cls, page: str) -> dict[str, str]:
        p = cls()
        p.feed(page)
        p.close()
        sep = {"data": "", "style": "\n", "script": "\n", "text": "\n", "markup": "\n"}
        return {k: sep[k].join(v) for k, v in p.parts.items()}


def compare_html(b: bytes, a: bytes) -> tuple[str, list[str]]:
    tb, ta = _text(b), _text(a)
    if tb is None or ta is None:
        return f"HTML, not UTF-8: {len(b)} -> {len(a)} bytes", []
    pb, pa = _HtmlParts.split(tb), _HtmlParts.split(ta)
    same, differ, excerpt = [], [], []
    for part in ("data", "text", "style", "script", "markup"):
        x, y = pb[part], pa[part]
        if x == y:
            same.append(part)
            continue
        jx, jy = _json(x), _json(y)
        if part == "data" and jx is not _NOT_JSON and jy is not _NOT_JSON:
            detail, lines = compare_json(jx, jy, x, y)
        else:
            detail, lines = compare_text(x, y, part)
        differ.append(part)
        excerpt += [f"[{part}] {detail}"] + ["  " + line for line in lines[:8]]
    if not differ:  # the parts are equal: white space between tags differs
        detail, lines = compare_text(tb, ta, "page")
        return "HTML: data, text, style, script and markup equal; white space differs; " + detail, lines
    return (f"HTML: {', '.join(differ)} differ" + (f"; {', '.join(same)} identical" if same else ""),
            _clip(excerpt))


# HDF5 attributes that hold the wall-clock time of a run (see the module docstring)
_WALL_CLOCK_ATTRS = {("/", "created_ns"), ("/meta", "imported_ns")}


def compare_hdf5(b: bytes, a: bytes) -> tuple[bool, str, list[str]]:
    """Structural: every group, dataset (dtype, shape, values) and attribute (JSON text
    parsed), by path; then, if those are equal, the bytes."""
    try:
        import h5py  # noqa: F401
    except ImportError:
        return False, f"HDF5 (h5py missing: bytes only): {len(b)} -> {len(a)} bytes", []
    try:
        cb, nb = _hdf5_contents(b)
        ca, na = _hdf5_contents(a)
    except OSError as e:
        return False, f"not readable as HDF5 ({e}): {len(b)} -> {len(a)} bytes", []
    normalised = sorted(k for k in set(nb) | set(na) if nb.get(k) != na.get(k))
    note = f" (wall-clock stamps ignored: {', '.join(normalised)})" if normalised else ""
    d, only = _Diff(), {"before": 0, "after": 0}
    for key in sorted(set(cb) | set(ca)):
        x, y = cb.get(key, _ABSENT), ca.get(key, _ABSENT)
        if x is _ABSENT or y is _ABSENT:
            side = "before" if y is _ABSENT else "after"
            only[side] += 1
            d.add(f"{key}: only {side} ({_hdf5_kind(cb.get(key, y))})")
        elif isinstance(x, _Dataset) and isinstance(y, _Dataset):
            if (x.dtype, x.shape) != (y.dtype, y.shape):
                d.add(f"{key}: {_hdf5_kind(x)} -> {_hdf5_kind(y)}")
            elif isinstance(x.values, list) or isinstance(y.values, list):
                d.json(x.values, y.values, key)
            else:
                _array_diff(key, x.values, y.values, d)
        elif isinstance(x, _Dataset) or isinstance(y, _Dataset):
            d.add(f"{key}: {_hdf5_kind(x)} -> {_hdf5_kind(y)}")
        else:
            d.json(x, y, key)
    if d.lines:
        counts = ", ".join(f"{n} only {side}" for side, n in only.items() if n)
        return False, f"HDF5: {d.summary()}{'; ' + counts if counts else ''}{note}", d.excerpt()
    if not normalised:  # equal content; the bytes were not (compare_blob compares them first)
        return False, f"HDF5: equal content, but the file's bytes differ ({len(b)} -> {len(a)} bytes)", []
    return True, f"HDF5 content; wall-clock stamps ignored: {', '.join(normalised)}", []


_ABSENT = object()


@dataclasses.dataclass
class _Dataset:
    dtype: str
    shape: tuple
    values: object  # a numpy array of numbers or records; a list for strings


def _hdf5_kind(v) -> str:
    if isinstance(v, _Dataset):
        return f"dataset {v.dtype} {v.shape}"
    return "group" if v == "group" else f"attribute {_short(v, 40)}"


def _hdf5_contents(blob: bytes) -> tuple[dict, dict]:
    """{path: value} for every group, dataset and attribute of a file ('path@name' for
    attributes, JSON text parsed); and the wall-clock attributes taken out of it."""
    import h5py
    import numpy as np

    out, clock = {}, {}

    def attrs(path, obj):
        for k in sorted(obj.attrs):
            v = _plain(obj.attrs[k])
            if (path, k) in _WALL_CLOCK_ATTRS:
                clock[f"{path}@{k}"] = v
                continue
            if isinstance(v, str) and (v[:1] in "[{\"" or v == "null"):
                try:
                    v = json.loads(v)
                except ValueError:
                    pass
            out[f"{path}@{k}"] = v

    def visit(name, obj):
        path = "/" + name
        if isinstance(obj, h5py.Dataset):
            data = obj[()]
            if obj.dtype.kind == "O" or h5py.check_string_dtype(obj.dtype):
                values = _plain(np.asarray(data, dtype=object))
            else:
                values = np.asarray(data)
            out[path] = _Dataset(str(obj.dtype), tuple(obj.shape), values)
        else:
            out[path] = "group"
        attrs(path, obj)

    with h5py.File(io.BytesIO(blob), "r") as f:
        attrs("/", f)
        f.visititems(visit)
    return out, clock


def _array_diff(path: str, b, a, d: _Diff) -> None:
    """Two numeric (or record) arrays of one dtype and shape: per field, how many values
    differ, the first of them, and (for floats) the largest relative difference."""
    import numpy as np

    for name in b.dtype.names or (None,):
        x, y = (b, a) if name is None else (b[name], a[name])
        x, y = np.ascontiguousarray(x).reshape(-1), np.ascontiguousarray(y).reshape(-1)
        # bit for bit, element by element (so that NaN equals NaN and -0.0 differs from 0.0)
        differ = np.flatnonzero((_bits(x) != _bits(y)).any(axis=1))
        if not len(differ):
            continue
        if x.dtype.kind == "f":
            xd, yd = x[differ].astype(float), y[differ].astype(float)
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                rel = np.abs(xd - yd) / np.maximum(np.abs(xd), np.abs(yd))
            d.floats += len(differ)
            d.max_rel = max(d.max_rel, float(np.where(np.isfinite(rel), rel, np.inf).max()))
        first = int(differ[0])
        d.add(f"{path if name is None else f'{path}.{name}'}: {len(differ)} of {len(x)} values differ, "
              f"first [{first}]: {_short(x[first].tolist())} -> {_short(y[first].tolist())}")


def _bits(v):
    """A 1-D array's elements as rows of bytes."""
    import numpy as np

    return v.view(np.uint8).reshape(len(v), v.dtype.itemsize)


def _plain(v):
    """An attribute or string dataset's value as plain Python (bytes decoded)."""
    import numpy as np

    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()] if v.dtype.kind == "O" else v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


# ================================================================ small helpers
_NOT_JSON = object()


def _json(text: str):
    s = text.strip()
    if not s or s[0] not in "[{":
        return _NOT_JSON
    try:
        return json.loads(s)
    except ValueError:
        return _NOT_JSON


def _text(blob: bytes) -> str | None:
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _looks_html(blob: bytes) -> bool:
    return blob.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html"))


def _short(v, width: int = 70) -> str:
    s = json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list, str)) else repr(v)
    return s if len(s) <= width else s[: width - 3] + "..."


def _clip(lines: list[str]) -> list[str]:
    lines = [line if len(line) <= 160 else line[:157] + "..." for line in lines]
    if len(lines) > EXCERPT_LINES:
        lines = lines[:EXCERPT_LINES] + [f"... ({len(lines) - EXCERPT_LINES} more lines)"]
    return lines


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no message)"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _git(args: list[str], cwd: Path = REPO, check: bool = True) -> str:
    p = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed: {p.stderr.strip()}")
    return p.stdout


def _run_checked(cmd: list[str], env: dict, what: str, cwd: Path | None = None) -> str:
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{what} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return p.stdout


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ================================================================ the table
def print_table(rows: list[Row]) -> None:
    width = min(80, max(len(r.step.command) for r in rows))
    out_width = max(len(r.output) for r in rows)
    print(f"{'step':<4}  {'command':<{width}}  {'output':<{out_width}}  result")
    print(f"{'-' * 4}  {'-' * width}  {'-' * out_width}  {'-' * 9}")
    last = None
    for r in rows:
        cmd = r.step.command if r.step.id != last else ""
        if len(cmd) > width:
            cmd = cmd[: width - 3] + "..."
        status = r.status + (f": {r.detail}" if r.detail and r.status != "identical" else "")
        if r.status == "identical" and r.detail:
            status += f" ({r.detail})"
        print(f"{r.step.id if r.step.id != last else '':<4}  {cmd:<{width}}  {r.output:<{out_width}}  {status}")
        for line in r.excerpt:
            print(f"{'':<6}    | {line}")
        last = r.step.id


# ================================================================ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="git revision (or folder) of the code before the change")
    ap.add_argument("--after", default=str(REPO),
                    help="a folder (read as it is) or a git revision (default: %(default)s)")
    ap.add_argument("--work", type=Path, help="work folder (default: a new temporary one); must be new, empty, or "
                    "one this script made")
    ap.add_argument("--keep", action="store_true", help="keep the work folder and the worktrees")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any output differs or was not compared")
    ap.add_argument("--inputs", type=Path, help="pinned inputs of an earlier run (its WORK/inputs) instead of "
                    "making new ones")
    ap.add_argument("--no-diffusion", action="store_true", help="skip the diffusion trace and its commands")
    ap.add_argument("--kineto", type=Path, default=KINETO, help="Kineto trace for `attribute` (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=2, help="processes at once (default: %(default)s)")
    args = ap.parse_args(argv)

    started = time.monotonic()
    work = _work_folder(args.work)
    sides: list[Side] = []
    try:
        before = make_side("before", args.before, work, build=args.inputs is None)
        sides.append(before)
        after = make_side("after", args.after, work, build=False)
        sides.append(after)
        if before.broken:
            raise SystemExit(f"the before side cannot run: {before.broken}")
        inputs = work / "inputs"
        if args.inputs:
            shutil.copytree(args.inputs, inputs)
            manifest = json.loads((inputs / "manifest.json").read_text())
            changed = [n for n, sha in manifest["files"].items() if _sha256(inputs / n) != sha]
            if changed:
                raise SystemExit(f"{args.inputs}: {', '.join(changed)} changed since they were made")
        else:
            manifest = make_inputs(before, inputs, args.kineto, not args.no_diffusion, args.jobs)
        available = {p.name for p in inputs.iterdir()} & INPUT_NAMES
        all_steps = steps()
        if after.broken:  # nothing can be compared: neither side runs
            why = "the after side cannot run (see above)"
            outcomes = [{s.id: Outcome("not run", why_not=why) for s in all_steps}] * 2
        else:
            with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(2, args.jobs))) as pool:
                futures = [pool.submit(run_side, s, inputs, all_steps, available) for s in sides]
                outcomes = [f.result() for f in futures]
        rows = [row for step in all_steps for row in compare_step(step, outcomes[0][step.id], outcomes[1][step.id])]

        print(f"before: {before.describe}, entry point {':'.join(before.entry)}")
        print(f"after:  {after.describe}, entry point {':'.join(after.entry) if after.entry else '-'}")
        if after.broken:
            print(f"        the after side cannot run: {after.broken}")
        print(f"inputs: {', '.join(sorted(available))} (made by {manifest['made_by']} in {manifest['seconds']} s)")
        print("excluded: `phprof trace` and `phprof devices` output (timing- and machine-dependent)\n")
        print_table(rows)
        counts = {s: sum(r.status == s for r in rows) for s in ("identical", "differs", "not run", "skipped")}
        print(f"\n{len(rows)} outputs of {len(all_steps)} commands: {counts['identical']} identical, "
              f"{counts['differs']} differ, {counts['not run']} not run, {counts['skipped']} skipped; "
              f"{time.monotonic() - started:.0f} s"
              + (f"; work folder kept: {work}" if args.keep else ""))
        return 1 if args.strict and (counts["differs"] or counts["not run"]) else 0
    finally:
        if not args.keep:
            for label in ("before", "after"):  # the worktrees make_side adds (even if it failed later)
                if (work / f"{label}-tree").exists():
                    _git(["worktree", "remove", "--force", str(work / f"{label}-tree")], check=False)
            shutil.rmtree(work, ignore_errors=True)
            _git(["worktree", "prune"], check=False)


def _work_folder(path: Path | None) -> Path:
    if path is None:
        work = Path(tempfile.mkdtemp(prefix="phprof-compare-"))
    else:
        work = path.resolve()
        if work.exists() and any(work.iterdir()):
            if not (work / MARKER).exists():
                raise SystemExit(f"{work} is not empty and was not made by this script: choose another --work")
            for tree in ("before-tree", "after-tree"):  # worktrees a kept earlier run left
                if (work / tree).exists():
                    _git(["worktree", "remove", "--force", str(work / tree)], check=False)
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("a work folder of tools/compare_outputs.py; safe to delete\n")
    return work


if __name__ == "__main__":
    sys.exit(main())
