"""`phprof devices` as a user runs it, and what every command shares (the group, its formats).

The commands' views (`phprof report`, `flamegraph`, `compare` on real traces) are in
tests/test_commands_views.py."""
from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import phprof
from phprof.commands import main


def test_devices_on_a_machine_without_gpu_or_rapl_says_why(tmp_path):
    env = {**os.environ, "PHPROF_NVML_LIB": "", "PHPROF_POWERCAP_ROOT": str(tmp_path / "no-powercap")}
    env.pop("PHPROF_FAKE_NVML_STATE", None)
    env["LD_LIBRARY_PATH"] = ""  # no fake library in the way
    p = subprocess.run(
        [Path(sys.executable).parent / "phprof", "devices"], env=env, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    out = p.stdout
    if "nvml  available" not in out:  # this machine has no NVIDIA driver (CI, the developers' machines)
        assert "nvml  not available" in out and "cannot load the NVML library 'libnvidia-ml.so.1'" in out
        assert "No NVIDIA driver" in out
    assert "rapl  not available" in out and "does not exist" in out
    assert "none  available" in out and "energy is never measured" in out


def test_devices_lists_the_fake_gpus_and_their_fields(fake, fake_lib):
    fake.set_name(1, "NVIDIA H100 80GB HBM3")
    runner = CliRunner()
    result = runner.invoke(main, ["devices"], env={"PHPROF_NVML_LIB": str(fake_lib)})
    assert result.exit_code == 0, result.output
    assert "nvml  available: library" in result.output
    assert "GPU 1: NVIDIA H100 80GB HBM3" in result.output
    assert "refreshed every ~100 ms from a 21-25 ms window" in result.output  # nominal, H100
    for field in ("energy", "power_instant", "power_average"):
        assert re.search(rf"^ +{field} +ok +\d+ m[JW]  read in", result.output, re.M), field


@pytest.mark.integration  # samples the fake GPU for a second of real time
def test_devices_measure_reports_read_cost_and_update_interval(fake, fake_lib):
    runner = CliRunner()
    env = {"PHPROF_NVML_LIB": str(fake_lib), "PHPROF_POWERCAP_ROOT": "/nonexistent"}
    result = runner.invoke(main, ["devices", "--json", "--measure", "1"], env=env)
    assert result.exit_code == 0, result.output
    nvml = next(s for s in json.loads(result.stdout) if s["source"] == "nvml")
    rows = {o["channel"]: o for o in nvml["observed"]}
    # the a100 preset: instant power every 101 ms, energy counter every 20 ms
    assert rows["gpu0.power_instant"]["change_interval_ms_median"] == pytest_approx(101, 3)
    assert rows["gpu0.energy"]["change_interval_ms_median"] == pytest_approx(20, 3)
    assert rows["gpu0.energy"]["reads_per_s"] > 1000


def test_bad_option_is_refused():
    result = CliRunner().invoke(main, ["devices", "--measure", "-1"])
    assert result.exit_code == 2 and "Invalid value for '--measure'" in result.output


def pytest_approx(value, abs_):
    import pytest

    return pytest.approx(value, abs=abs_)


def test_flamegraph_formats_are_the_renderers():
    """`phprof flamegraph --format` lists the formats without importing the renderers: the
    list must be the registry's, in its order."""
    from phprof.commands.flamegraph import FORMATS

    assert FORMATS == phprof.render.format_names("flamegraph")
    assert FORMATS == ["html", "folded", "speedscope", "perfetto"]


def test_the_console_script_is_the_commands_group():
    """The `phprof` script the package installs runs phprof.commands.main (the group
    every subcommand registers on)."""
    p = subprocess.run([Path(sys.executable).parent / "phprof", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    for name in ("attribute", "compare", "devices", "flamegraph", "models", "report", "trace"):
        assert name in main.commands and re.search(rf"^ +{name}\b", p.stdout, re.M), name


@pytest.mark.parametrize("args, message", [
    (["--shard", "3/2"], "--shard '3/2': give i/n"),
    (["--tasks", "no-such-task"], "unknown task 'no-such-task'"),
    (["--gpus", "0,0"], "each GPU once"),
    (["somewhere"], "folders go with --merge"),
    (["--merge"], "--merge needs the study folders"),
])
def test_study_bad_options_are_usage_errors(tmp_path, args, message):
    result = CliRunner().invoke(main, ["study", "-o", str(tmp_path / "s"), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "s").exists()


def test_study_merge_of_a_folder_without_a_study_is_one_error_line(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["study", "--merge", str(tmp_path / "empty"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        f"Error: {tmp_path / 'empty'} holds no study (study-plan.json is missing)"]
