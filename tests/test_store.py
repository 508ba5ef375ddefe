"""The trace file: what is written is what is read, and a run cut short stays readable."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from phprof.sources import READING_DTYPE, Channel, PowerLog
from phprof.store import EVENT_DTYPE, INFERENCE_DTYPE, PHASE_DTYPE, STACK_DTYPE, TraceFileError, TraceWriter, load

CHANNELS = (Channel("gpu0.energy", "gpu0", "energy", "mJ", "NVML total energy counter"),)


def power_chunk(t0: int, n: int, mj0: int) -> PowerLog:
    r = np.zeros(n, READING_DTYPE)
    r["t_before_ns"] = t0 + np.arange(n) * 1_000_000
    r["t_after_ns"] = r["t_before_ns"] + 500
    r["value"] = mj0 + np.arange(n) * 100
    return PowerLog("nvml", CHANNELS, r, np.array([[1, t0]]), {"interval_ns": 1_000_000})


def window(writer: TraceWriter, first: int, n: int) -> None:
    writer.append_strings([f"op{first}"])
    writer.append_stacks(np.array([(0, 1)], STACK_DTYPE) if first == 0 else np.empty(0, STACK_DTYPE))
    ev = np.zeros(n, EVENT_DTYPE)
    ev["inference"] = np.arange(first, first + n)
    ev["start_ns"] = ev["inference"] * 10
    ev["end_ns"] = ev["start_ns"] + 5
    inf = np.zeros(n, INFERENCE_DTYPE)
    inf["index"] = ev["inference"]
    ph = np.zeros(n, PHASE_DTYPE)
    ph["inference"] = ev["inference"]
    writer.append_window(ev, inf, ph, (first // n, first, first + n - 1, 0, 1, n))


def test_round_trip(tmp_path):
    path = tmp_path / "t.h5"
    w = TraceWriter(path, {"model": "gpt2", "config": {"n_layer": 12}, "units": {"time": "ns"}})
    w.append_power(power_chunk(1_000, 5, 7_000), group="idle")
    for first in (0, 3):
        window(w, first, 3)
        w.append_power(power_chunk(10_000_000 * (first + 1), 4, 8_000 + 1_000 * first))
    odd = {"none": None, "null_text": "null", "json_text": "[1, 2]", "quoted": '"x"', "nested": {"a": [None, 1.5]}}
    w.close("complete", {"energy_j": 1.5, **odd})
    t = load(path)
    assert t.complete and t.status == "complete" and t.schema_version == 1
    assert t.meta["model"] == "gpt2" and t.meta["config"] == {"n_layer": 12}
    assert t.strings == ["", "op0", "op3"]
    assert t.stack_path(1) == ["op0"]
    assert list(t.events["inference"]) == list(range(6)) and len(t.windows) == 2
    assert len(t.power.readings) == 8 and t.power.channels == CHANNELS and len(t.power.clock_pairs) == 2
    assert len(t.idle.readings) == 5
    assert t.summary == {"energy_j": 1.5, **odd}  # None stays None, text stays text
    expected = np.concatenate([power_chunk(10_000_000 * (f + 1), 4, 8_000 + 1_000 * f).readings for f in (0, 3)])
    assert np.array_equal(t.power.readings, expected)


def test_every_table_is_chunked_and_compressed(tmp_path):
    path = tmp_path / "t.h5"
    w = TraceWriter(path, {})
    window(w, 0, 2)
    w.close("complete")
    with h5py.File(path) as f:
        for name in ("strings", "stacks", "events", "inferences", "phases", "windows"):
            assert f[name].chunks and f[name].compression == "gzip", name


def test_a_killed_writer_leaves_the_finished_windows_marked_incomplete(tmp_path):
    path = tmp_path / "t.h5"
    code = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from phprof.store import TraceWriter
        from test_store_helpers import window
        w = TraceWriter({str(path)!r}, {{"model": "m"}})
        window(w, 0, 3)
        w.flush()
        os._exit(9)   # no close(): killed mid-run
        """
    )
    (tmp_path / "test_store_helpers.py").write_text(
        "import numpy as np\nfrom phprof.store import *\n" + textwrap.dedent(_window_source())
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 9, p.stderr
    t = load(path)
    assert t.status == "recording" and not t.complete
    assert len(t.events) == 3 and len(t.windows) == 1


def _window_source() -> str:
    import inspect

    return inspect.getsource(window)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such trace file"):
        load(tmp_path / "absent.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(TraceFileError, match="not a readable HDF5 file"):
        load(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(TraceFileError, match="not a phprof trace"):
        load(tmp_path / "other.h5")
    with h5py.File(tmp_path / "future.h5", "w") as f:
        f.attrs["format"] = "phprof-trace"
        f.attrs["schema_version"] = 99
    with pytest.raises(TraceFileError, match="upgrade phprof"):
        load(tmp_path / "future.h5")


def test_writer_refuses_to_clobber_or_write_nowhere(tmp_path):
    (tmp_path / "exists.h5").write_text("")
    with pytest.raises(FileExistsError, match="exists"):
        TraceWriter(tmp_path / "exists.h5", {})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TraceWriter(tmp_path / "no" / "dir" / "t.h5", {})
    with pytest.raises(PermissionError, match="cannot write"):
        TraceWriter(tmp_path, {}, overwrite=True)  # a folder, not a file
