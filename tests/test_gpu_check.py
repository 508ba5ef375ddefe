"""tools/gpu_check.sh without a GPU: it runs its first step against the fake NVML, then stops
before the GPU-only steps, saying why, with exit status 77; and the README it writes at the end
reads `phprof report --json` as that command writes it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import phprof

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import gpu_validate  # noqa: E402


@pytest.mark.integration  # `phprof devices --measure 1` samples the fake for a second, in real time
def test_without_a_gpu_the_check_stops_before_the_gpu_only_steps(fake, tmp_path):
    out = tmp_path / "check"
    env = dict(os.environ, **fake.env, PHPROF_GPU_CHECK_QUICK="1",
               PHPROF=str(Path(sys.executable).with_name("phprof")), PYTHON=sys.executable)
    run = subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh"), str(out)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 77, run.stderr
    assert "A100" in (out / "devices.txt").read_text()  # step 1 ran, against the fake
    stopped = (out / "STOPPED.txt").read_text()
    assert stopped.startswith("gpu_check: no GPU here:") and "calibrate, validation, reference traces" in stopped
    assert "no GPU here" in run.stderr
    assert not (out / "calibration.json").exists() and not list(out.glob("*.h5"))


@pytest.mark.integration
def test_the_checks_readme_tables_the_reference_reports(gpt2_trace, copy_of, tmp_path):
    report = phprof.report(copy_of(gpt2_trace[0]))
    (tmp_path / "gpt2.report.json").write_text(phprof.render(report, "json"))
    (tmp_path / "devices.txt").write_text("gpu0 ...\n")
    text = gpu_validate.readme(tmp_path)
    row = next(line for line in text.splitlines() if line.startswith("| gpt2 |"))
    summary = json.loads((tmp_path / "gpt2.report.json").read_text())["summary"]
    assert f"| {summary['inferences']} |" in row and "nan" not in row and "None" not in row
    assert f"{summary['total']['joules']:.4g} J" in row
    assert "## phprof devices --measure" in text
