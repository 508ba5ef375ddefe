"""The `phprof report`, `phprof attribute` and `phprof flamegraph` commands: what they print and
exit with, on good and bad input. The figures themselves are tested through the library
(tests/test_attribute.py, tests/test_frames.py)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from phprof import load
from phprof.commands import main
from phprof.energy import Method
from phprof.tracing.kineto import load_kineto
from power_logs import power_csv

KINETO = Path(__file__).resolve().parents[2] / "shared" / "data" / "kineto"


def _without_results(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        if "results" in f:
            del f["results"]


@pytest.mark.integration
def test_report_stores_results_and_reads_them_back(gpt2_trace, tmp_path):
    path = tmp_path / "copy.h5"
    shutil.copy(gpt2_trace[0], path)
    _without_results(path)  # whatever another test stored in the session's trace
    runner = CliRunner()
    first = runner.invoke(main, ["report", str(path), "--region", "fr", "--pue", "1.2", "--training-kwh", "100"])
    assert first.exit_code == 0, first.output
    assert "per 1,000 inferences" in first.output and "gCO2eq" in first.output and "France" in first.output
    assert "windowed least squares" in first.output and "training parity" in first.output
    stored = load(path).results
    assert stored is not None and stored.method is Method.WLS
    assert stored.layers and all(x.energy is not None for x in stored.layers)
    # the second report reads the stored results: same figures
    again = runner.invoke(main, ["report", str(path), "--json", "--region", "fr", "--pue", "1.2"])
    assert again.exit_code == 0, again.output
    data = json.loads(again.output)
    assert data["summary"]["inferences_energy"]["joules"] == pytest.approx(stored.inferences_energy.joules)
    roll = data["rollups"]
    assert roll["per_1000"]["kwh"] == pytest.approx(roll["per_1000"]["joules"] / 3.6e6)
    assert roll["carbon"]["per_1000_g"] == pytest.approx(roll["per_1000"]["kwh"] * 1.2 * roll["carbon"]["g_co2eq_per_kwh"])
    assert roll["per_token"]["joules"] == pytest.approx(data["summary"]["inferences_energy"]["joules"] / (gpt2_trace[1]["inferences"] * gpt2_trace[1]["new_tokens"]))
    md = runner.invoke(main, ["report", str(path), "--markdown", "--top", "3"])
    assert md.exit_code == 0 and md.output.count("\n| `") == 3


@pytest.mark.integration
def test_report_bad_options_and_files(tmp_path, gpt2_trace):
    runner = CliRunner()
    r = runner.invoke(main, ["report", str(gpt2_trace[0]), "--region", "atlantis"])
    assert r.exit_code == 2 and "atlantis" in r.output
    r = runner.invoke(main, ["report", str(gpt2_trace[0]), "--region", "fr", "--carbon-intensity", "100"])
    assert r.exit_code == 2 and "not both" in r.output
    r = runner.invoke(main, ["report", str(tmp_path / "missing.h5")])
    assert r.exit_code == 1 and "no such trace file" in r.output
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file at all")
    r = runner.invoke(main, ["report", str(junk)])
    assert r.exit_code == 1 and "not a readable HDF5 file" in r.output
    r = runner.invoke(main, ["report", "--list-regions", str(junk)])
    assert r.exit_code == 0 and "aws:us-east-1" in r.output


@pytest.mark.integration
def test_report_of_a_trace_without_power_says_so(silent_trace):
    out = silent_trace  # the test's own copy: the report stores its results in the file
    r = CliRunner().invoke(main, ["report", str(out), "--top", "100"])  # time per layer only, and why
    assert r.exit_code == 0 and "energy: not measured" in r.output and "lm_head" in r.output


@pytest.mark.integration
def test_a_damaged_file_is_refused(gpt2_trace, tmp_path):
    path = tmp_path / "damaged.h5"
    data = Path(gpt2_trace[0]).read_bytes()
    path.write_bytes(data[: len(data) // 3])
    r = CliRunner().invoke(main, ["report", str(path)])
    assert r.exit_code == 1 and "Error" in r.output and "Traceback" not in r.output


@pytest.mark.integration
def test_attribute_command_on_a_foreign_trace(tmp_path):
    """`phprof attribute` writes the imported trace beside the Kineto file and prints its report;
    what the import finds is tested from the library (test_attribute.py)."""
    kt = load_kineto(KINETO / "v100-resnet-ns.json.gz")
    t0, t1 = int(kt.events["start_ns"].min()), int(kt.events["end_ns"].max())
    csv_path = power_csv(tmp_path / "p.csv", t0, t1)
    trace_path = tmp_path / "trace.json.gz"
    shutil.copy(KINETO / "v100-resnet-ns.json.gz", trace_path)
    r = CliRunner().invoke(main, ["attribute", str(trace_path), str(csv_path), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output[r.output.index("{"):])
    assert data["summary"]["timeline"] == "device kernels" and data["summary"]["inferences"] == 5
    assert (tmp_path / "trace.h5").exists()
    again = CliRunner().invoke(main, ["report", str(tmp_path / "trace.h5")])
    assert again.exit_code == 0 and "per 1,000 inferences" in again.output, again.output
    # a power log on another clock: one Error: line naming the clock, no file
    bad = power_csv(tmp_path / "bad.csv", t0 + 86400 * 10**9, t1 + 86400 * 10**9)
    r = CliRunner().invoke(main, ["attribute", str(trace_path), str(bad), "-o", str(tmp_path / "x.h5")])
    assert r.exit_code == 1 and "UTC" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.integration
def test_the_studys_bloomz_training_energy_gives_the_parity_by_default(bloomz_trace, copy_of):
    out = copy_of(bloomz_trace)  # the report stores its results in the file
    r = CliRunner().invoke(main, ["report", str(out), "--json"])
    assert r.exit_code == 0, r.output
    parity = json.loads(r.output)["rollups"]["parity"]
    assert parity["training_kwh"] == 10_505.0 + 543.0  # paper.md: training + fine-tuning of BLOOMz-560m


@pytest.mark.integration
def test_flamegraph_command_bad_input(gpt2_trace, tmp_path):
    path = tmp_path / "t.h5"
    shutil.copy(gpt2_trace[0], path)
    r = CliRunner().invoke(main, ["flamegraph", str(path), "-o", str(tmp_path / "x.png")])
    assert r.exit_code == 2 and "cannot tell the format" in r.output
    r = CliRunner().invoke(main, ["flamegraph", str(path), "-o", str(tmp_path / "missing" / "x.html")])
    assert r.exit_code == 1 and "does not exist" in r.output


def test_report_and_flamegraph_of_a_jobs_rank_files(tmp_path):
    """A folder (or several files) of rank files: the merge, in text and as Perfetto; bad sets: one line."""
    from test_ranks import _rank_file

    _rank_file(tmp_path / "j.rank0.h5", 0, world=3)
    _rank_file(tmp_path / "j.rank1.h5", 1, world=3, uuid="GPU-b")
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("PARTIAL Merged run") and "GPU-a" in r.output and "GPU-b" in r.output
    r = CliRunner().invoke(main, ["report", str(tmp_path), "--region", "fr", "--top", "5"])
    assert r.exit_code == 2 and "--top, --region: these take one trace file" in r.output, r.output
    r = CliRunner().invoke(main, ["flamegraph", str(tmp_path / "j.rank0.h5"), str(tmp_path / "j.rank1.h5"),
                                  "-o", str(tmp_path / "job.perfetto.json")])
    assert r.exit_code == 0 and (tmp_path / "job.perfetto.json").exists(), r.output
    _rank_file(tmp_path / "k.rank1.h5", 1, world=3, run_id="10.0.0.9:1")
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and r.output.startswith("Error: the files are of 2 "), \
        r.output
