"""The README's Python blocks run as written.

The blocks of its "Python" section run in order in one namespace, in a fresh
folder, with a fake RAPL tree whose package counter a thread advances (30 W),
so that the CPU has a power sensor and the comparison has energy to compare.
"Recording from Python" runs too, against the fake NVML, with a
``run_the_model`` that is the workload it stands for.
"""
from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # real (tiny) models, and the fake GPU sampled in real time

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end >= 0 else None], re.S)


@pytest.fixture
def rapl_at_30_watts(tmp_path, monkeypatch):
    root = tmp_path / "powercap"
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    counter = zone / "energy_uj"
    counter.write_text(f"{0:020d}\n")
    stop = threading.Event()

    def burn():  # fixed-width writes in place, as a counter file changes under a reader
        fd = os.open(counter, os.O_WRONLY)
        start = time.monotonic()
        try:
            while not stop.is_set():
                os.pwrite(fd, f"{round(30e6 * (time.monotonic() - start)):020d}\n".encode(), 0)
                time.sleep(0.001)
        finally:
            os.close(fd)

    writer = threading.Thread(target=burn, daemon=True)
    writer.start()
    monkeypatch.setenv("PHPROF_POWERCAP_ROOT", str(root))
    yield
    stop.set()
    writer.join()


def test_the_python_section_runs_as_written(tmp_path, monkeypatch, rapl_at_30_watts, capsys):
    blocks = _blocks("Python")
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    results, comparison = namespace["results"], namespace["comparison"]
    # the CPU's (fake) RAPL counter measured the run, and the blocks printed and wrote what they say
    assert results.has_energy and results.total.measured
    assert results.total.joules == pytest.approx(30.0 * results.span_s, rel=0.05)
    out = capsys.readouterr().out
    assert "per 1,000 inferences" in out and "| component |" in out
    for name in ("report.html", "flame.html", "flame.folded", "flame.speedscope.json", "flame.perfetto.json",
                 "compare.html"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert [r.model for r in comparison.runs] == ["gpt2", "google/flan-t5-base"]


def test_recording_from_python_runs_as_written(fake, fake_lib, monkeypatch):
    (block,) = _blocks("Recording from Python")
    monkeypatch.setenv("PHPROF_NVML_LIB", str(fake_lib))
    fake.set_power(0, 250.0)
    namespace = {"run_the_model": lambda: time.sleep(0.5), "run_a_step": lambda: time.sleep(0.03)}
    exec(compile(block, str(README), "exec"), namespace)
    total, rec = namespace["total"], namespace["rec"]
    assert total.measured and total.energy.method_text == "energy counter"
    assert total.low_j <= fake.true_energy(0, rec.start_ns, rec.end_ns) <= total.high_j
    windows = rec.energies("gpu0")
    assert list(windows) == ["step0", "step1", "step2"]
    for name, m in windows.items():
        assert m.low_j <= fake.true_energy(0, *rec.windows[name]) <= m.high_j
