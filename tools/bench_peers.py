#!/usr/bin/env python3
"""phprof beside CodeCarbon and Zeus, in one run, on the same workload and the same fake GPU.

Everything runs in this one process against one fake NVML library (tools/fake_nvml) with two
GPUs that draw the same true power: a random level every 4 ms between 60 and 400 W, scheduled
ahead for the whole run (the workload runs on the CPU; the fake's truth is known exactly).
GPU 0's energy counter updates every 20 ms (the a100 preset), GPU 1's every 100 ms.

1. Overhead and energy over a run. The workload is N inferences of a tiny model on the CPU
   (one torch thread), N chosen so that a plain loop takes about --run-s seconds. Each tool
   runs the same N inferences: the plain loop; CodeCarbon's offline tracker with its default
   15 s interval and with 1 s; a Zeus window; a phprof recording (NvmlSource at 1 kHz); and
   `phprof trace` (the same model and inferences under torch.profiler and the sampler, to an
   HDF5 file, anti-aliasing pauses off: the library function the command calls). In ABBA order
   per tool and round (plain, tool, tool, plain), the tools' order rotated each round; each
   tool run is compared with the plain run next to it. Columns: the ratio of the workload's
   wall time to the adjacent plain loop's (median, and the range over all pairs); the tool's
   start and stop calls (s, outside the ratio); the CPU of every thread but the workload's,
   and of waited-for subprocesses, as a share of one core over the workload (the sampling
   thread's: the plain loop shows what is there without a tool); and the GPU 0 energy each
   reports against the fake's truth over the span it was given (the workload's, or the traced
   windows' for `phprof trace`), with phprof's bound.
2. Short windows. Windows of 10, 30, 60 and 150 ms (the body spins until its end), in random
   order with random gaps, each measured at once by a Zeus window and a window of one phprof
   recording running throughout (``rec.window``, the recommended way); then the same lengths
   again, each measured by a phprof recording of its own (``with recording(...)``: it waits for
   the counter's next update when it ends). Every window is read on both GPUs: one row per
   counter period and length. Columns: mean |error| against the truth (% of the true energy),
   windows that read 0 J, how often the truth lies inside the stated bound (Zeus states none:
   '-'; a bound with no upper end counts as missed), and windows stated as +-0 J.

Then issue 14's targets, each MET or NOT MET: phprof's time-ratio range includes 1.00 or lies
below every peer's (its upper end under each peer's lower end; for the recording and for
`phprof trace`); its short-window mean |error| no worse than Zeus's in every row; its bound
holding for >= 95% of the windows of every row; no window stated as +-0 J. CodeCarbon and Zeus are optional
(``pip install -e '.[peers]'``): the script says which it could not import and leaves their
columns out. Other processes share this machine's CPUs: the load average and the machine's
busy share over the run are printed with the tables.

    python tools/bench_peers.py [--rounds 2] [--run-s 1.5] [--windows 25] [--model ID]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one torch thread: the other threads are the tools'

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fake_nvml  # noqa: E402
import peers  # noqa: E402

from phprof import load, models  # noqa: E402
from phprof.sources import NvmlSource, recording  # noqa: E402
from phprof.tracing.run import trace  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(1)

MS = 1_000_000
LENGTHS_MS = (10, 30, 60, 150)
COUNTER_PERIODS_MS = {0: 20, 1: 100}  # GPU -> its energy counter's update period
TARGET_COVERAGE = 0.95


# ---- the fake GPU and its true power ----------------------------------------------------------------
class Signal:
    """The true power of both fake GPUs: a random level every ``step_s``, scheduled ahead."""

    def __init__(self, fake, devices, step_s: float = 0.004, seed: int = 0) -> None:
        self.fake, self.devices, self.step_ns = fake, devices, round(step_s * 1e9)
        self.rng = np.random.default_rng(seed)
        self.until = time.time_ns() + 50 * MS

    def ensure(self, seconds: float) -> None:
        """Schedules the signal at least ``seconds`` past now."""
        end = time.time_ns() + round(seconds * 1e9)
        while self.until < end:
            watts = float(self.rng.uniform(60, 400))
            for d in self.devices:
                self.fake.set_power_at(d, watts, self.until, tag=1)
            self.until += self.step_ns


def make_fake(workdir: Path):
    fake = fake_nvml.FakeNvml(fake_nvml.build(workdir), workdir / "state", n_devices=2, preset="a100", seed=0)
    a100 = fake_nvml.PRESETS["a100"]["energy"]
    for dev, period_ms in COUNTER_PERIODS_MS.items():
        fake.configure(dev, "energy", fake_nvml.SensorModel(period_s=period_ms / 1e3, window_s=period_ms / 1e3,
                                                            initial_mj=a100.initial_mj))
        fake.set_processes(dev, [(os.getpid(), 2 << 30)])
    return fake


# ---- the machine's load -------------------------------------------------------------------------------
def _cpu_ticks() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle, iowait
    return sum(v) - idle, sum(v)


class Load:
    """The load average at each mark, and the machine's busy share between the first and last."""

    def __init__(self) -> None:
        self.marks: list[float] = []
        self.t0 = _cpu_ticks()
        self.mark()

    def mark(self) -> None:
        with open("/proc/loadavg") as f:
            self.marks.append(float(f.read().split()[0]))

    def describe(self) -> str:
        self.mark()
        busy, total = (b - a for a, b in zip(self.t0, _cpu_ticks()))
        return (f"machine load: 1-min load average {min(self.marks):.2f}-{max(self.marks):.2f} over the run "
                f"(sampled at {len(self.marks)} points), all {os.cpu_count()} CPUs {100 * busy / max(total, 1):.0f}% "
                "busy on average (every process, this one included: more than this run's share means other work "
                "shared the CPUs)")


# ---- one run of the workload under one tool ------------------------------------------------------------
@dataclass
class Run:
    seconds: float  # the workload's wall time (for `phprof trace`: first inference's start to last one's end)
    other_cpu_s: float  # CPU of the other threads and waited-for children during the workload
    overhead_s: float = 0.0  # the tool's start and stop calls
    joules: float | None = None  # GPU 0 energy reported
    truth_j: float | None = None  # the fake's over the span the tool was given
    low_j: float | None = None
    high_j: float | None = None
    cpu_wall_s: float | None = None  # the wall time other_cpu_s was taken over, where not ``seconds``


class CpuClock:
    """CPU of everything but the calling thread (the workload's), and of waited-for children."""

    def __enter__(self):
        self.p, self.t, self.c = time.process_time(), time.thread_time(), self._children()
        return self

    def __exit__(self, *exc):
        self.other_s = (time.process_time() - self.p) - (time.thread_time() - self.t) + (self._children() - self.c)

    @staticmethod
    def _children() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime


class Workload:
    def __init__(self, model_id: str, run_s: float) -> None:
        self.model_id = model_id
        spec = models.resolve(model_id)
        self.task = spec.task
        self.model = models.build(spec, self.task, size="tiny")
        self.inputs = models.make_inputs(models.tiny(spec), self.task)
        self.loop(10)
        t0 = time.perf_counter()
        self.loop(20)
        per = (time.perf_counter() - t0) / 20
        self.n = max(20, round(run_s / per))

    def loop(self, n: int | None = None) -> None:
        for _ in range(self.n if n is None else n):
            models.infer(self.model, self.task, self.inputs)

    def timed(self) -> tuple[float, float, int, int]:
        """Runs the loop; its seconds, other threads' CPU, and its span (CLOCK_REALTIME)."""
        with CpuClock() as cpu:
            a = time.time_ns()
            t0 = time.perf_counter()
            self.loop()
            seconds = time.perf_counter() - t0
            b = time.time_ns()
        return seconds, cpu.other_s, a, b


class Tools:
    """Each tool as a user drives it around the workload: ``run(name)`` gives a :class:`Run`."""

    def __init__(self, fake, work: Workload, workdir: Path, have: set[str]) -> None:
        self.fake, self.work, self.workdir = fake, work, workdir
        self.names = ["plain loop"]
        if "codecarbon" in have:
            self.names += ["CodeCarbon, default (15 s)", "CodeCarbon, 1 s"]
        if "zeus" in have:
            self.names += ["Zeus window"]
            self.zeus = peers.zeus_monitor(gpu_indices=[0])
        self.names += ["phprof recording", "phprof trace"]

    def run(self, name: str) -> Run:
        w = self.work
        if name == "plain loop":
            s, cpu, _, _ = w.timed()
            return Run(s, cpu)
        if name.startswith("CodeCarbon"):
            tracker = peers.codecarbon_tracker(self.workdir, measure_power_secs=1 if "1 s" in name else None,
                                               gpu_ids=[0])
            t0 = time.perf_counter()
            with peers.quiet():
                tracker.start()
            t1 = time.perf_counter()
            s, cpu, a, b = w.timed()
            t2 = time.perf_counter()
            with peers.quiet():
                tracker.stop()
            cost = time.perf_counter() - t2 + t1 - t0
            return Run(s, cpu, cost, peers.codecarbon_gpu_joules(tracker), self.fake.true_energy(0, a, b))
        if name == "Zeus window":
            t0 = time.perf_counter()
            with peers.quiet():
                self.zeus.begin_window("run", sync_execution=False)
            t1 = time.perf_counter()
            s, cpu, a, b = w.timed()
            t2 = time.perf_counter()
            joules = peers.zeus_window_joules(self.zeus, "run")[0]
            cost = time.perf_counter() - t2 + t1 - t0
            return Run(s, cpu, cost, joules, self.fake.true_energy(0, a, b))
        if name == "phprof recording":
            t0 = time.perf_counter()
            with recording(NvmlSource(gpus=[0], library=str(self.fake.lib_path))) as rec:
                t1 = time.perf_counter()
                s, cpu, a, b = w.timed()
                t2 = time.perf_counter()
            cost = time.perf_counter() - t2 + t1 - t0
            m = rec.log.energy_between("gpu0", a, b)  # the workload's span, as the peers' truth
            return Run(s, cpu, cost, m.joules, self.fake.true_energy(0, a, b), m.low_j, m.high_j)
        if name == "phprof trace":
            out = self.workdir / "trace.h5"
            t0 = time.perf_counter()
            with CpuClock() as cpu:
                s = trace(w.model_id, inferences=w.n, warmup=0, output=out, size="tiny", source="nvml", idle_s=0,
                          anti_alias=False, overwrite=True)
            whole = time.perf_counter() - t0
            inf = load(out).inferences
            spans = [(inf["start_ns"][inf["window"] == k].min(), inf["end_ns"][inf["window"] == k].max())
                     for k in np.unique(inf["window"])]
            seconds = (inf["end_ns"].max() - inf["start_ns"].min()) / 1e9
            e = s.energy
            return Run(seconds, cpu.other_s, whole - seconds, e.joules,
                       sum(self.fake.true_energy(0, int(a), int(b)) for a, b in spans), e.low_j, e.high_j, whole)
        raise ValueError(name)


def overhead(tools: Tools, signal: Signal, rounds: int, load: Load) -> dict[str, dict]:
    """ABBA per tool and round; returns per tool its runs and its ratios to the adjacent plain runs."""
    out = {name: {"runs": [], "ratios": []} for name in tools.names}
    others = tools.names[1:]
    for r in range(rounds):
        order = others[r % len(others):] + others[:r % len(others)]
        for k, name in enumerate(order):
            print(f"\roverhead: round {r + 1}/{rounds}, {name:<28}", end="", file=sys.stderr, flush=True)
            signal.ensure(60)
            a1 = tools.run("plain loop")
            x1, x2 = tools.run(name), tools.run(name)
            a2 = tools.run("plain loop")
            out["plain loop"]["runs"] += [a1, a2]
            out[name]["runs"] += [x1, x2]
            out[name]["ratios"] += [x1.seconds / a1.seconds, x2.seconds / a2.seconds]
        load.mark()
    plain = out["plain loop"]["runs"]
    out["plain loop"]["ratios"] = [b.seconds / a.seconds for a, b in zip(plain[::2], plain[1::2])]
    return out


# ---- short windows -----------------------------------------------------------------------------------
@dataclass
class Windows:
    """Per (GPU, length): each window's truth and what a tool said of it."""

    truth: dict = field(default_factory=dict)
    joules: dict = field(default_factory=dict)
    low: dict = field(default_factory=dict)
    high: dict = field(default_factory=dict)

    def add(self, dev, length, truth, joules, low=None, high=None) -> None:
        for d, v in ((self.truth, truth), (self.joules, joules), (self.low, low), (self.high, high)):
            d.setdefault((dev, length), []).append(v)

    def row(self, dev, length, bounded: bool) -> dict:
        t = np.array(self.truth[(dev, length)])
        j = np.array(self.joules[(dev, length)], dtype=float)
        out = {"err": float(np.mean(np.abs(j - t) / t)), "zeros": int((j == 0).sum()), "n": len(t)}
        if bounded:
            lo = np.array([np.nan if v is None else v for v in self.low[(dev, length)]], dtype=float)
            hi = np.array([np.nan if v is None else v for v in self.high[(dev, length)]], dtype=float)
            out["inside"] = float(np.mean((lo <= t) & (t <= hi)))  # NaN (no bound) compares False: missed
            out["pm0"] = int((hi - lo == 0).sum())
            out["unbounded"] = int(np.isnan(hi).sum())
        return out


def _spin_until(t_perf: float) -> None:
    while time.perf_counter() < t_perf:
        pass


def short_windows(fake, signal: Signal, n: int, zeus, load: Load) -> tuple[Windows, Windows, Windows]:
    """Zeus windows and windows of one phprof recording, side by side; then phprof recordings of their own."""
    rng = np.random.default_rng(1)
    lengths = rng.permutation(np.repeat(LENGTHS_MS, n))
    devices = list(COUNTER_PERIODS_MS)
    in_one, zeus_w, own = Windows(), Windows(), Windows()
    lib = str(fake.lib_path)
    signal.ensure(len(lengths) * 0.25 + 30)
    with recording(NvmlSource(gpus=devices, library=lib)) as rec:
        for i, length in enumerate(lengths):
            print(f"\rwindows: {i + 1}/{len(lengths)} (Zeus and one recording)  ", end="", file=sys.stderr, flush=True)
            _spin_until(time.perf_counter() + rng.uniform(0.0, 0.05))  # a random phase against the updates
            name = f"w{i}"
            if zeus is not None:
                with peers.quiet():
                    zeus.begin_window(name, sync_execution=False)
            za = time.time_ns()
            with rec.window(name):
                _spin_until(time.perf_counter() + length / 1e3)
            zb = time.time_ns()
            if zeus is not None:
                got = peers.zeus_window_joules(zeus, name)
                for d in devices:
                    zeus_w.add(d, length, fake.true_energy(d, za, zb), got[d])
    for d in devices:
        measured = rec.energies(f"gpu{d}")
        for i, length in enumerate(lengths):
            m, (a, b) = measured[f"w{i}"], rec.windows[f"w{i}"]
            in_one.add(d, length, fake.true_energy(d, a, b), m.joules, m.low_j, m.high_j)
    load.mark()
    signal.ensure(len(lengths) * 0.5 + 30)
    source = NvmlSource(gpus=devices, library=lib)
    for i, length in enumerate(rng.permutation(lengths)):
        print(f"\rwindows: {i + 1}/{len(lengths)} (a recording each)      ", end="", file=sys.stderr, flush=True)
        _spin_until(time.perf_counter() + rng.uniform(0.0, 0.05))
        with recording(source) as r:
            _spin_until(time.perf_counter() + length / 1e3)
        for d in devices:
            m = r.energy(f"gpu{d}")
            own.add(d, length, fake.true_energy(d, r.start_ns, r.end_ns), m.joules, m.low_j, m.high_j)
    load.mark()
    return in_one, zeus_w, own


# ---- the tables ------------------------------------------------------------------------------------------
def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]

    def line(r):
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def _pct(x: float | None, signed=False) -> str:
    return "-" if x is None else (f"{100 * x:+.1f}%" if signed else f"{100 * x:.1f}%")


def overhead_table(results: dict) -> str:
    rows = []
    for name, res in results.items():
        runs, ratios = res["runs"], res["ratios"]
        wall = sum(r.seconds if r.cpu_wall_s is None else r.cpu_wall_s for r in runs)
        errs = [(r.joules - r.truth_j) / r.truth_j for r in runs if r.joules is not None and r.truth_j]
        bounded = [r for r in runs if r.low_j is not None]  # an open upper end counts as a miss
        inside = sum(r.high_j is not None and r.low_j <= r.truth_j <= r.high_j for r in bounded)
        rows.append([
            name, f"{statistics.median(ratios):.3f}", f"[{min(ratios):.3f}, {max(ratios):.3f}]", str(len(ratios)),
            "-" if name == "plain loop" else f"{statistics.median(r.overhead_s for r in runs):.2f}",
            f"{100 * sum(r.other_cpu_s for r in runs) / wall:.1f}%".replace("-0.0%", "0.0%"),  # clocks' granularity
            "-" if not errs else f"{_pct(statistics.median(errs), True)} [{_pct(min(errs), True)}, {_pct(max(errs), True)}]",
            "-" if not bounded else f"{inside}/{len(bounded)}",
        ])
    return table(["run", "time ratio (median)", "range", "pairs", "start+stop s", "other threads' CPU",
                  "GPU 0 energy error (median [range])", "truth in bound"], rows)


def windows_table(in_one: Windows, zeus: Windows | None, own: Windows) -> tuple[str, list[dict]]:
    rows, facts = [], []
    for d, period in COUNTER_PERIODS_MS.items():
        for length in LENGTHS_MS:
            a, c = in_one.row(d, length, True), own.row(d, length, True)
            z = zeus.row(d, length, False) if zeus is not None and zeus.truth else None
            facts.append({"row": f"{length} ms, {period} ms counter", "one": a, "own": c, "zeus": z})
            rows.append([f"{length} ms", f"{period} ms", str(a["n"]),
                         _pct(a["err"]), str(a["zeros"]), _pct(a["inside"]), str(a["pm0"]),
                         _pct(c["err"]), str(c["zeros"]), _pct(c["inside"]), str(c["pm0"]),
                         "-" if z is None else _pct(z["err"]), "-" if z is None else str(z["zeros"]), "-"])
    header = ["window", "counter", "n",
              "phprof windows: mean |err|", "0 J", "truth in bound", "+-0 J",
              "phprof recording each: mean |err|", "0 J", "truth in bound", "+-0 J",
              "Zeus: mean |err|", "0 J", "truth in bound"]
    return table(header, rows), facts


def targets(results: dict, facts: list[dict], have_zeus: bool) -> list[str]:
    lines = []

    def verdict(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    peer_names = [n for n in results if n not in ("plain loop", "phprof recording", "phprof trace")]
    floor = results["plain loop"]["ratios"]
    lines.append(f"(the plain loop against itself: [{min(floor):.3f}, {max(floor):.3f}]; overhead differences "
                 "inside that noise are not resolved by this run)")
    for ours in ("phprof recording", "phprof trace"):
        r = results[ours]["ratios"]
        lo, hi = min(r), max(r)
        below = [n for n in peer_names if hi < min(results[n]["ratios"])]
        ok = lo <= 1.0 <= hi or (peer_names and len(below) == len(peer_names))
        lines.append(f"overhead ({ours}): range [{lo:.3f}, {hi:.3f}] "
                     f"{'includes' if lo <= 1.0 <= hi else 'excludes'} 1.00; below "
                     f"{len(below)}/{len(peer_names)} peers' ranges: {verdict(ok)}")
    for key, what in (("one", "phprof windows of one recording"), ("own", "phprof, a recording each")):
        if have_zeus:
            worse = [f["row"] for f in facts if f[key]["err"] > f["zeus"]["err"]]
            lines.append(f"short-window error ({what}) no worse than Zeus's in every row: {verdict(not worse)}"
                         + (f" (worse in: {'; '.join(worse)})" if worse else ""))
        else:
            lines.append(f"short-window error ({what}) against Zeus's: not evaluated (Zeus not installed)")
        low = [f"{f['row']}: {100 * f[key]['inside']:.0f}%" for f in facts if f[key]["inside"] < TARGET_COVERAGE]
        lines.append(f"stated bound holds for >= 95% of windows in every row ({what}): {verdict(not low)}"
                     + (f" (below in: {'; '.join(low)})" if low else ""))
        pm0 = sum(f[key]["pm0"] for f in facts)
        lines.append(f"no window reported +-0 J ({what}): {verdict(pm0 == 0)} ({pm0} windows stated +-0 J; "
                     f"{sum(f[key]['unbounded'] for f in facts)} had no upper bound)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="ABBA rounds per tool (default 2: 4 runs of each tool)")
    ap.add_argument("--run-s", type=float, default=1.5, help="seconds of one plain loop (default 1.5)")
    ap.add_argument("--windows", type=int, default=25, help="windows of each length (default 25)")
    ap.add_argument("--model", default="distilbert-base-uncased-finetuned-sst-2-english",
                    help="the workload: a built-in model, built tiny (default: the study's DistilBERT)")
    args = ap.parse_args()
    if args.rounds < 1 or args.windows < 1 or args.run_s <= 0:
        sys.exit("Error: --rounds and --windows must be >= 1 and --run-s > 0")

    load = Load()
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="phprof-bench-peers-"))
    fake = make_fake(workdir)
    peers.use_fake(fake)
    missing = peers.missing()
    have = {p for p in peers.PEERS if p not in missing}
    signal = Signal(fake, list(COUNTER_PERIODS_MS))
    signal.ensure(30)
    work = Workload(args.model, args.run_s)
    tools = Tools(fake, work, workdir, have)
    results = overhead(tools, signal, args.rounds, load)
    zeus = peers.zeus_monitor(gpu_indices=list(COUNTER_PERIODS_MS)) if "zeus" in have else None
    in_one, zeus_w, own = short_windows(fake, signal, args.windows, zeus, load)
    print("\r" + " " * 60 + "\r", end="", file=sys.stderr)

    versions = {k: v for k, v in peers.versions().items() if k not in missing}
    print(f"phprof beside its peers: fake NVML, 2 GPUs drawing the same random 60-400 W level every 4 ms, "
          f"GPU 0's counter every {COUNTER_PERIODS_MS[0]} ms, GPU 1's every {COUNTER_PERIODS_MS[1]} ms; "
          f"Python {sys.version.split()[0]}, torch {torch.__version__}, "
          + ", ".join(f"{k} {v}" for k, v in versions.items()))
    for name, why in missing.items():
        print(f"not compared: {name} could not be imported ({why}); pip install -e '.[peers]'")
    print(f"\n1. overhead: {work.n} inferences of a tiny {args.model} ({work.task}) on the CPU per run, "
          f"{args.rounds} ABBA rounds per tool")
    print(overhead_table(results))
    print("time ratio: the workload's wall time against the adjacent plain loop's (plain loop: its two runs of "
          "a round, one against the other: the noise floor). `phprof trace`: from the first inference's start to "
          "the last one's end (the pauses that save each profiler window included), its model build outside; "
          "its energy is over its windows' spans. other threads' CPU: % of one core over the workload. "
          "energy error: (reported - true) / true, GPU 0 (20 ms counter). `phprof trace`'s start+stop and CPU share "
          "cover the whole call (building the model and writing the file included).")
    table_w, facts = windows_table(in_one, zeus_w if zeus is not None else None, own)
    print(f"\n2. short windows: {args.windows} of each length, read on both GPUs")
    print(table_w)
    print("mean |err|: of each window's figure against the fake's true energy over the window, as a share of "
          "it. 0 J: windows whose figure was 0. truth in bound: share of windows whose [low_j, high_j] holds "
          "the truth. +-0 J: windows stated with a bound of zero width. Zeus states no uncertainty.")
    print("\ntargets:")
    for line in targets(results, facts, zeus is not None):
        print(f"  {line}")
    print(f"\n{load.describe()}; the benchmark took {time.perf_counter() - started:.0f} s")
    fake.close()


if __name__ == "__main__":
    main()
