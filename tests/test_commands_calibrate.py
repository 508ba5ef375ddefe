"""`phprof calibrate --from-log` as a user runs it, on the RTX 4090's recording (one field, its
step, no meter: a second of fitting): what it prints, where it writes, and bad input."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from phprof.commands import main

STEP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gpu-step-response" / "rtx4090"
needs_data = pytest.mark.skipif(not STEP.is_dir(), reason=f"{STEP} is missing (../shared is not beside the repo)")


@needs_data
def test_from_log_prints_the_fit_and_files_it_only_for_a_named_gpu(tmp_path):
    runner = CliRunner()
    args = ["calibrate", "--from-log", str(STEP / "nvml.csv"), "--schedule", str(STEP / "load_marks.csv")]
    env = {"PHPROF_CALIBRATION_DIR": str(tmp_path / "cals")}
    r = runner.invoke(main, args, env=env)
    assert r.exit_code == 0, r.output
    assert "update period      99.9" in r.stdout and "10-90% in" in r.stdout
    assert "window             not identified: window + lag is fixed together" in r.stdout  # one step, no meter
    assert "not written: the GPU is unnamed" in r.stderr and not (tmp_path / "cals").exists()
    r = runner.invoke(main, args + ["--gpu-name", "NVIDIA GeForce RTX 4090", "--driver", "535.1"], env=env)
    assert r.exit_code == 0, r.output
    files = list((tmp_path / "cals").glob("*.json"))
    assert [f.name for f in files] == ["NVIDIA-GeForce-RTX-4090-driver-535.1.json"]
    assert f"written: {files[0]}" in r.stderr


def test_bad_calibrate_input_is_one_error_line(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["calibrate", "--meter", str(tmp_path / "m.csv")])
    assert r.exit_code == 2 and "--schedule and --meter go with --from-log" in r.output
    (tmp_path / "log.csv").write_text("epoch_ms,temperature\n1700000000000,2\n1700000000010,4\n")
    r = runner.invoke(main, ["calibrate", "--from-log", str(tmp_path / "log.csv")])
    assert r.exit_code == 1 and r.output.count("Error:") == 1 and "no power column" in r.output
