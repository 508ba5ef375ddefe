#!/usr/bin/env python3
"""CodeCarbon and Zeus, the tools a user would otherwise pick, set up as a new user would.

The benchmark (tools/bench_peers.py) and the tests (tests/test_peers.py) drive both from
here, against the fake NVML library. They are optional (``pip install -e '.[peers]'``):
:func:`missing` says which cannot be imported and why.

    python tools/peers.py --record > tests/data/peer_nvml_calls.json

runs each peer's energy path against a fresh fake GPU under the pynvml recorder
(tools/fake_nvml/recorder.py) and prints the distinct NVML calls they made, which the fake
must answer (tests/test_fake_nvml.py replays them without the peers installed).
"""
from __future__ import annotations

import argparse
import ctypes
import importlib
import importlib.metadata
import io
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fake_nvml  # noqa: E402

PEERS = ("codecarbon", "zeus")
RECORDED = Path(__file__).resolve().parent.parent / "tests" / "data" / "peer_nvml_calls.json"
J_PER_KWH = 3.6e6


def missing() -> dict[str, str]:
    """Each peer that cannot be imported here, with the reason. Call after :func:`use_fake`:
    CodeCarbon initialises NVML once, when it is imported."""
    out = {}
    for name in PEERS:
        try:
            with quiet():
                importlib.import_module(name)
        except Exception as e:  # ImportError, or a peer failing at import
            out[name] = f"{type(e).__name__}: {e}"
    return out


def versions() -> dict[str, str]:
    out = {}
    for dist in ("codecarbon", "zeus", "nvidia-ml-py"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


class quiet:
    """Silences what the peers print (banners, AMD library probes, their loggers)."""

    def __enter__(self):
        self._out, self._err = redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO())
        self._out.__enter__(), self._err.__enter__()
        self._warn = warnings.catch_warnings()
        self._warn.__enter__()
        warnings.simplefilter("ignore")
        self._levels = {n: logging.getLogger(n).level for n in PEERS}
        for n in PEERS:
            logging.getLogger(n).setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc):
        for n, level in self._levels.items():
            logging.getLogger(n).setLevel(level)
        self._warn.__exit__(*exc)
        self._err.__exit__(*exc)
        self._out.__exit__(*exc)


def use_fake(fake: fake_nvml.FakeNvml) -> None:
    """Points this process and its children at the fake: pynvml loads the fake library (the
    peers import pynvml, which loads libnvidia-ml.so.1 by name, once per process), and
    subprocesses and nvidia-smi calls get the fake's environment. Call before importing a peer."""
    import pynvml

    if pynvml.nvmlLib is not None and Path(pynvml.nvmlLib._name).resolve() != fake.lib_path:
        raise RuntimeError(f"pynvml already loaded {pynvml.nvmlLib._name}, not the fake {fake.lib_path}")
    pynvml.nvmlLib = ctypes.CDLL(str(fake.lib_path))
    os.environ.update(fake.env)


def codecarbon_tracker(output_dir, measure_power_secs: float | None = None, gpu_ids: list[int] | None = None):
    """CodeCarbon's tracker as a user without network starts it (offline, a country's grid),
    writing nothing; ``measure_power_secs`` None keeps its default (15 s); ``gpu_ids`` None
    tracks every GPU (its default)."""
    with quiet():
        from codecarbon import OfflineEmissionsTracker

        kw = {} if measure_power_secs is None else {"measure_power_secs": measure_power_secs}
        if gpu_ids is not None:
            kw["gpu_ids"] = gpu_ids
        return OfflineEmissionsTracker(country_iso_code="USA", output_dir=str(output_dir), save_to_file=False,
                                       log_level="error", **kw)


def codecarbon_gpu_joules(tracker) -> float | None:
    """The GPU energy CodeCarbon measured between start() and stop() (None: it did not)."""
    data = getattr(tracker, "final_emissions_data", None)
    return None if data is None else data.gpu_energy * J_PER_KWH


def zeus_monitor(approx_instant_energy: bool = False, gpu_indices: list[int] = (0,)):
    """Zeus's monitor of the GPUs given (no CPU: no RAPL here), for begin/end windows."""
    with quiet():
        from zeus.monitor import ZeusMonitor

        return ZeusMonitor(gpu_indices=list(gpu_indices), cpu_indices=[], approx_instant_energy=approx_instant_energy)


def zeus_window_joules(monitor, name: str) -> dict[int, float]:
    """Ends a Zeus window (no CUDA sync: the workload runs on the CPU) and returns its energy per GPU index."""
    with quiet():
        return dict(monitor.end_window(name, sync_execution=False).gpu_energy)


def exercise(output_dir) -> dict[str, list[dict]]:
    """Each peer's energy path once (CodeCarbon: import, tracker, start, 1 s monitoring,
    a task, stop; Zeus: import, monitor, a window with and without approximation), under the
    pynvml recorder. Returns the distinct calls per peer, and raises if one was not answered."""
    from fake_nvml.recorder import recording_pynvml

    calls = {}
    with recording_pynvml() as rec:
        tracker = codecarbon_tracker(output_dir, measure_power_secs=1)
        with quiet():
            tracker.start()
            time.sleep(2.3)  # two measurements and the 1 s monitoring thread
            tracker.start_task("task")
            time.sleep(0.1)
            tracker.stop_task()
            tracker.stop()
    calls["codecarbon"] = rec
    with recording_pynvml() as rec:
        for approx in (False, True):
            monitor = zeus_monitor(approx_instant_energy=approx)
            with quiet():
                monitor.begin_window("w", sync_execution=False)
            time.sleep(0.05)
            zeus_window_joules(monitor, "w")
    calls["zeus"] = rec
    bad = {peer: [(c.call, c.symbols, c.returns) for c in rec.failed()] for peer, rec in calls.items()}
    if any(bad.values()):
        raise RuntimeError(f"NVML calls the fake did not answer: {bad}")
    return {peer: [c.as_dict() for c in rec.distinct()] for peer, rec in calls.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--record", action="store_true", help="print the peers' distinct NVML calls as JSON")
    args = ap.parse_args()
    if not args.record:
        ap.print_help()
        return
    work = Path(tempfile.mkdtemp(prefix="phprof-peers-"))
    fake = fake_nvml.FakeNvml(fake_nvml.build(work), work / "state", n_devices=1, preset="a100", seed=0)
    fake.set_processes(0, [(os.getpid(), 2 << 30)])
    use_fake(fake)
    gone = missing()
    if gone:
        sys.exit("cannot record without every peer: " + "; ".join(f"{k}: {v}" for k, v in gone.items()) +
                 "\ninstall them with: pip install -e '.[peers]'")
    calls = exercise(work)
    print(json.dumps({"recorded_with": versions(), **calls}, indent=1))


if __name__ == "__main__":
    main()
