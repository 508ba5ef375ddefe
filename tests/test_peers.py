"""CodeCarbon and Zeus against the fake GPU, driven as tools/peers.py drives them for the
benchmark. They are optional (``pip install -e '.[test,peers]'``): without them these tests skip,
and tests/test_fake_nvml.py still replays the calls they were recorded making.

Each peer runs in a subprocess started with the fake's environment: CodeCarbon initialises
NVML once, when it is imported, so a fresh process is the only clean way to give it a GPU.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RECORDED = REPO / "tests" / "data" / "peer_nvml_calls.json"
MISSING = [name for name in ("codecarbon", "zeus") if importlib.util.find_spec(name) is None]
pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    bool(MISSING),
    reason=f"{' and '.join(MISSING)} not installed (pip install -e '.[peers]'); the fake's answers to their "
           "recorded NVML calls are tested without them in tests/test_fake_nvml.py",
)]


def _key(call: dict) -> tuple:
    return call["call"], json.dumps(call["args"]), tuple(call["symbols"])


def test_the_peers_make_exactly_the_recorded_nvml_calls():
    p = subprocess.run([sys.executable, str(REPO / "tools" / "peers.py"), "--record"], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]  # it fails when a call was not answered
    now, stored = json.loads(p.stdout), json.loads(RECORDED.read_text())
    assert now["recorded_with"] == stored["recorded_with"], (
        "other versions of the peers: re-record with `python tools/peers.py --record > "
        "tests/data/peer_nvml_calls.json` and check the fake answers every new call")
    for peer in ("codecarbon", "zeus"):
        assert {_key(c) for c in now[peer]} == {_key(c) for c in stored[peer]}, peer


MEASURE = """
import json, sys, tempfile, time
sys.path.insert(0, {tools!r})
import peers
out = {{}}
tracker = peers.codecarbon_tracker(tempfile.mkdtemp(), measure_power_secs=1)
with peers.quiet():
    out["cc"] = [time.time_ns()]
    tracker.start()
    out["cc"].append(time.time_ns())
    time.sleep(1.5)
    out["cc"].append(time.time_ns())
    tracker.stop()
    out["cc"].append(time.time_ns())
out["cc_j"] = peers.codecarbon_gpu_joules(tracker)
monitor = peers.zeus_monitor()
with peers.quiet():
    out["zeus"] = [time.time_ns()]
    monitor.begin_window("w", sync_execution=False)
    out["zeus"].append(time.time_ns())
    time.sleep(0.5)
    out["zeus"].append(time.time_ns())
    out["zeus_j"] = peers.zeus_window_joules(monitor, "w")[0]
    out["zeus"].append(time.time_ns())
print(json.dumps(out))
"""


def test_the_peers_measure_the_fake_gpu(fake):
    """A constant 250 W: each peer's counter difference lies between the truth over the calls'
    inner span and over their outer span, give or take one counter update (20 ms) at each end."""
    fake.set_power(0, 250.0)
    env = {**os.environ, **fake.env}
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(MEASURE.format(tools=str(REPO / "tools")))],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    update_j = 250.0 * 0.02
    for name in ("cc", "zeus"):
        before_start, after_start, before_stop, after_stop = out[name]
        joules = out[f"{name}_j"]
        assert joules is not None, f"{name} measured nothing"
        inner = fake.true_energy(0, after_start, before_stop)
        outer = fake.true_energy(0, before_start, after_stop)
        assert inner - 2 * update_j <= joules <= outer + 2 * update_j, (name, joules, inner, outer)
