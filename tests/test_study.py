"""`phprof study`: the grid, shards and merge, the resumable runner, the table and the paper's figures.

The fast tier runs the real runner (profiler/study/runner.py) with a stand-in for each cell's
`phprof trace` process (it writes a complete trace file, or fails) and a stand-in for its row,
so that retries, a killed study, shards and the one-cell-per-GPU rule are checked in well under a
second. The integration tier runs the real thing: `phprof study --quick` over every task against
the fake NVML (tests/conftest.py's ``quick_study``), and a `phprof study` killed mid-cell
(SIGKILL) and run again, with a cell that fails (a config transformers cannot build).
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import phprof
from phprof.errors import OptionError
from phprof.models import MODELS, TASKS
from phprof.store import TraceWriter
from phprof.study import grid, runner, study_merge
from phprof.study.table import COLUMNS, paper_figures

PAPER = Path(__file__).resolve().parents[2] / "shared" / "docs" / "paper.md"


# ---- the grid --------------------------------------------------------------------------------
def test_quick_is_one_model_of_the_catalogue_per_task():
    assert set(grid.QUICK) == set(TASKS)
    for task, model in grid.QUICK.items():
        assert model in MODELS and task in grid._own_tasks(MODELS[model])


def test_the_grid_is_the_studys_in_a_fixed_order():
    cells = grid.plan()
    keys = [(c.task, c.model) for c in cells]
    assert len(keys) == len(set(keys))
    # every catalogue model on its own task; the multi-purpose ones on the three zero-shot tasks
    multi = [m for m, s in MODELS.items() if s.task in grid.ZERO_SHOT_TASKS]
    assert len(multi) == 8 and len(cells) == len(MODELS) - len(multi) + 3 * len(multi)
    assert all(c.multi_purpose == (c.model in multi) for c in cells)
    assert [c.task for c in cells] == sorted((c.task for c in cells), key=list(TASKS).index)
    assert grid.plan() == cells  # the same on every call (and every machine)
    quick = grid.plan(quick=True)
    assert [c.task for c in quick] == list(TASKS) and [c.model for c in quick] == list(grid.QUICK.values())
    assert [c.model for c in grid.plan(["sentiment-analysis"], quick=True)] == [grid.QUICK["text-classification"]]
    assert {c.task for c in grid.plan(models=["google/flan-t5-base"])} == set(grid.ZERO_SHOT_TASKS)
    assert [c.task for c in grid.plan(["zero-shot-qa"], ["google/flan-t5-base"])] == ["zero-shot-qa"]
    with pytest.raises(OptionError, match="gpt2: none of its tasks .text-generation. is among --tasks zero-shot-qa"):
        grid.plan(["zero-shot-qa"], ["google/flan-t5-base", "gpt2"])
    with pytest.raises(OptionError, match="unknown task"):
        grid.plan(["no-such-task"])
    with pytest.raises(OptionError, match="unknown model"):
        grid.plan(models=["gtp2"])


@pytest.mark.parametrize("n", [1, 2, 3, 5, 200])
def test_shards_split_the_grid_once(n):
    cells = grid.plan()
    parts = [grid.shard(cells, grid.parse_shard(f"{i}/{n}")) for i in range(1, n + 1)]
    assert sorted((c for p in parts for c in p), key=cells.index) == cells
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_a_bad_shard_is_an_option_error(text):
    with pytest.raises(OptionError, match="--shard"):
        grid.parse_shard(text)


# ---- the runner, with a stand-in for `phprof trace` -------------------------------------------
class _Proc:
    """A cell's process as the runner sees it: it ends (with ``code``) after ``polls`` polls."""

    def __init__(self, code: int, polls: int, on_poll=None, on_end=None) -> None:
        self.pid = 0  # no process: a resumed study has none to wait for
        self.code, self.polls, self.returncode, self.on_poll, self.on_end = code, polls, None, on_poll, on_end
        self.signals = []

    def poll(self):
        if self.returncode is None:
            if self.on_poll is not None:
                self.on_poll(self)
            self.polls -= 1
            if self.polls <= 0:
                self.returncode = self.code
                self.on_end()
        return self.returncode

    def send_signal(self, sig):
        self.signals.append(sig)


class _Launcher:
    """Stands in for `python -m phprof trace ARGS`: writes a complete trace file at -o, or fails
    (``fail``: models that always fail, ``fail_once``: fail on their first attempt only)."""

    def __init__(self, fail=(), fail_once=(), polls=1, on_poll=None) -> None:
        self.fail, self.fail_once, self.polls, self.on_poll = set(fail), set(fail_once), polls, on_poll
        self.launched: list[tuple[str, str, str]] = []  # (model, task, device)
        self.running: dict[str, str] = {}  # device -> model, while its process runs
        self.at_once = 0  # the most cells running at once

    def __call__(self, args, log):
        model, task = args[0], args[args.index("--task") + 1]
        device, out = args[args.index("--device") + 1], Path(args[args.index("-o") + 1])
        tried = sum(1 for m, t, _ in self.launched if (m, t) == (model, task))
        self.launched.append((model, task, device))
        assert device not in self.running, f"two cells at once on {device}"
        self.running[device] = model
        failing = model in self.fail or (model in self.fail_once and tried == 0)
        if failing:
            log.write_text("Error: injected failure\n")
        else:
            meta = {"model": model, "task": task, "options": {"size": "tiny"}}
            w = TraceWriter(out, meta)
            w.close("complete", {"device": device, "power_source": "fake"})
            log.write_text("complete\n")

        def on_poll(proc):
            self.at_once = max(self.at_once, len(self.running))
            if self.on_poll is not None:
                self.on_poll(model, proc)

        def on_end():
            del self.running[device]

        return _Proc(1 if failing else 0, self.polls, on_poll, on_end)


def _row(cell, trace_path, report_path):
    """Stands in for a cell's row (phprof.study.table.cell_row), deterministic per cell."""
    h = sum(map(ord, cell.key))
    row = {k: None for k in COLUMNS}
    row.update(task=cell.task, model=cell.model, kind="task-specific", modality=cell.modality, parameters=h,
               size="tiny", status="done", device="cpu", device_name="fake", sensor="fake", inferences=2,
               seconds_per_inference=h / 1e4, energy="measured", energy_method="energy counter", interval="90%",
               j_per_inference=h / 100, j_per_inference_low=h / 110, j_per_inference_high=h / 90, why_no_energy="",
               error="", trace="trace.h5", report="report.html")
    report_path.write_text("<html></html>")
    return row


CELLS = grid.plan(["text-classification", "fill-mask"])  # 3 + 7 models: 10 cells
OPTIONS = runner.CellOptions(inferences=2, size="tiny")


def _run(folder, cells=CELLS, launcher=None, where=("cpu",), **kw):
    launcher = launcher or _Launcher()
    folder.mkdir(parents=True, exist_ok=True)
    runner.check_plan(folder, OPTIONS)
    out = runner.run_cells(folder, cells, OPTIONS, _row, where=list(where), launch=launcher, poll_s=0, **kw)
    return out, launcher


def _manifest(folder, cell):
    return json.loads((runner.cell_dir(folder, cell) / runner.MANIFEST).read_text())


def test_a_failed_cell_is_retried_once_then_reported_and_the_rest_complete(tmp_path):
    bad, flaky = CELLS[1].model, CELLS[4].model
    out, launched = _run(tmp_path, launcher=_Launcher(fail={bad}, fail_once={flaky}))
    assert [c.model for c in out.failed] == [bad] and len(out.done) == len(CELLS) - 1 and not out.interrupted
    assert [m for m, _, _ in launched.launched].count(bad) == 2 and [m for m, _, _ in launched.launched].count(flaky) == 2
    m = _manifest(tmp_path, CELLS[1])
    assert m["status"] == "failed" and [a["outcome"] for a in m["attempts"]] == ["failed", "failed"]
    assert m["attempts"][-1]["error"] == "Error: injected failure"
    assert [a["outcome"] for a in _manifest(tmp_path, CELLS[4])["attempts"]] == ["failed", "complete"]
    # run again: nothing is run (done cells kept, the failed one reported), unless asked
    again, launched = _run(tmp_path)
    assert launched.launched == [] and len(again.skipped) == len(CELLS) - 1 and [c.model for c in again.failed] == [bad]
    again, launched = _run(tmp_path, retry_failed=True)
    assert launched.launched == [(bad, CELLS[1].task, "cpu")] and not again.failed
    assert [a["outcome"] for a in _manifest(tmp_path, CELLS[1])["attempts"]] == \
        ["failed before", "failed before", "complete"]


class _Killed(BaseException):
    """The study's process dying (SIGKILL): nothing of the runner runs after it."""


def test_a_study_killed_mid_cell_continues_and_runs_every_cell_once(tmp_path):
    victim = CELLS[3]

    def kill(model, proc):
        if model == victim.model:
            raise _Killed

    with pytest.raises(_Killed):
        _run(tmp_path, launcher=_Launcher(on_poll=kill))
    m = _manifest(tmp_path, victim)
    assert m["status"] == "running" and m["attempts"][-1]["outcome"] is None
    assert (runner.cell_dir(tmp_path, victim) / runner.PARTIAL).exists()  # what the killed trace left
    assert not (runner.cell_dir(tmp_path, victim) / runner.TRACE).exists()
    out, launched = _run(tmp_path)
    assert [(m, t) for m, t, _ in launched.launched] == [(c.model, c.task) for c in CELLS[3:]]
    assert len(out.skipped) == 3 and len(out.done) == len(CELLS) - 3 and not out.failed
    assert [a["outcome"] for a in _manifest(tmp_path, victim)["attempts"]] == ["interrupted", "complete"]
    assert not (runner.cell_dir(tmp_path, victim) / runner.PARTIAL).exists()
    merged = study_merge([tmp_path], output=tmp_path / "tables")
    assert [(r["task"], r["model"]) for r in merged.view.rows] == [(c.task, c.model) for c in CELLS]


def test_ctrl_c_stops_the_running_cell_after_its_inference_and_the_study_continues_later(tmp_path):
    victim = CELLS[2]

    def interrupt(model, proc):
        if model == victim.model and not proc.signals:
            os.kill(os.getpid(), signal.SIGINT)  # the study's own handler takes it: no KeyboardInterrupt
            proc.code = 130  # `phprof trace` stops after its current inference, marked interrupted
        proc.polls = 1 if proc.signals or model != victim.model else 2

    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a shell's background job
    out, launched = _run(tmp_path, launcher=_Launcher(on_poll=interrupt, polls=2))
    assert out.interrupted and [c.model for c in out.done] == [c.model for c in CELLS[:2]]
    assert [c.model for c in out.left] == [c.model for c in CELLS[2:]] and not out.failed
    assert [a["outcome"] for a in _manifest(tmp_path, victim)["attempts"]] == ["interrupted"]
    assert signal.getsignal(signal.SIGINT) is before  # put back
    again, launched = _run(tmp_path)
    assert len(again.done) == len(CELLS) - 2 and launched.launched[0][0] == victim.model


def test_a_cell_whose_report_fails_is_reported_and_the_rest_complete(tmp_path):
    def row(cell, trace_path, report_path):
        if cell == CELLS[0]:
            raise ValueError("a bug")
        return _row(cell, trace_path, report_path)

    runner.check_plan(tmp_path, OPTIONS)
    out = runner.run_cells(tmp_path, CELLS, OPTIONS, row, where=["cpu"], launch=_Launcher(), poll_s=0)
    assert out.failed == [CELLS[0]] and len(out.done) == len(CELLS) - 1
    m = _manifest(tmp_path, CELLS[0])
    assert [a["error"] for a in m["attempts"]] == ["its report failed: ValueError: a bug"] * 2
    assert "Traceback" in (runner.cell_dir(tmp_path, CELLS[0]) / "attempt-2.log").read_text()


def test_one_cell_per_gpu_at_a_time_and_every_gpu_used(tmp_path):
    launcher = _Launcher(polls=3)  # (it fails a launch on a device whose last cell still runs)
    out, _ = _run(tmp_path, launcher=launcher, where=runner.devices("0,1"))
    assert len(out.done) == len(CELLS) and launcher.at_once == 2
    cpu = _Launcher(polls=3)
    _run(tmp_path / "cpu", launcher=cpu)
    assert cpu.at_once == 1
    used = [d for _, _, d in launcher.launched]
    assert abs(used.count("cuda:0") - used.count("cuda:1")) <= 1
    assert runner.devices("none") == ["cpu"]
    with pytest.raises(OptionError):
        runner.devices("0,0")


def test_shards_merged_equal_the_unsharded_study_cell_for_cell(tmp_path):
    _run(tmp_path / "all")
    whole = study_merge([tmp_path / "all"], output=tmp_path / "all")
    for i in (1, 2):
        _run(tmp_path / f"s{i}", cells=grid.shard(CELLS, (i, 2)))
    merged = study_merge([tmp_path / "s1", tmp_path / "s2"], output=tmp_path / "merged")

    def identity(rows):
        return [{k: v for k, v in r.items() if k not in ("trace", "report")} for r in rows]

    assert identity(merged.view.rows) == identity(whole.view.rows) and len(whole.view.rows) == len(CELLS)
    assert [r["report"] for r in merged.view.rows][:2] == [
        f"../s1/cells/{CELLS[0].key}/report.html", f"../s2/cells/{CELLS[1].key}/report.html"]
    with open(tmp_path / "merged" / "study.csv") as f:
        assert [(r["task"], r["model"]) for r in csv.DictReader(f)] == [(c.task, c.model) for c in CELLS]
    with pytest.raises(runner.StudyError, match="done in both"):
        study_merge([tmp_path / "all", tmp_path / "s1"], output=tmp_path / "bad")


def test_a_folder_holds_one_study_of_one_set_of_options(tmp_path):
    runner.check_plan(tmp_path, OPTIONS)
    with pytest.raises(runner.StudyError, match="inferences 2 .now 3."):
        runner.check_plan(tmp_path, runner.CellOptions(inferences=3, size="tiny"))
    with runner.locked(tmp_path), pytest.raises(runner.StudyError, match="another phprof study"):
        with runner.locked(tmp_path):
            pass


# ---- the paper's figures ---------------------------------------------------------------------------
def test_the_papers_figures_are_paper_mds():
    """Every figure of the data file is in paper.md's text, with its name, and every figure of
    paper.md's mean-kWh paragraphs is in the data file."""
    text = " ".join(PAPER.read_text().split())
    figures = paper_figures()
    for f in figures:
        assert f"{f.paper_text} {f.kwh_per_1000:g}" in text, f
        assert f.key in (TASKS if f.kind == "task" else MODELS)
    means = re.search(r"Mean kWh per 1,000 inferences: (.*?)\. Multi-purpose, kWh per 1,000: (.*?)\. Training", text)
    quoted = re.findall(r"\d+\.\d+", means.group(1) + " " + means.group(2))
    assert sorted(map(float, quoted)) == sorted(f.kwh_per_1000 for f in figures)
    assert {f.key for f in figures if f.kind == "task"} == set(TASKS) - set(grid.ZERO_SHOT_TASKS)


# ---- the views --------------------------------------------------------------------------------------
def _view(tmp_path, energy=True):
    _run(tmp_path)
    if not energy:
        for cell in CELLS:
            m = _manifest(tmp_path, cell)
            m["row"].update(energy="not measured", energy_method="", interval="", j_per_inference=None,
                            j_per_inference_low=None, j_per_inference_high=None,
                            why_no_energy="no power readings (source 'none')", sensor="none (time only)")
            runner.write_json(runner.cell_dir(tmp_path, cell) / runner.MANIFEST, m)
    return study_merge([tmp_path], output=tmp_path, region="fr").view


def test_the_page_says_time_on_every_figure_without_a_sensor(tmp_path):
    page = phprof.render(_view(tmp_path, energy=False), "html")
    assert "kWh per 1,000" not in page.split("This run beside the paper")[0]
    assert page.count("time, energy not measured") >= 6 and "Energy was not measured in this run" in page
    # a point per cell in the scatter, per task and per modality, and the 3 text classifiers as the
    # task-specific side of sentiment (the grid has no zero-shot cell)
    assert page.count('class="pt"') == 3 * len(CELLS) + 3
    text = phprof.render(_view(tmp_path / "e"), "markdown")
    assert "## text-classification (paper: 0.002 kWh / 1,000)" in text and "## fill-mask" in text


def test_the_tables_hold_the_rows_with_carbon(tmp_path):
    view = _view(tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "study.csv")))
    cells = json.loads((tmp_path / "study.json").read_text())["cells"]
    assert list(rows[0]) == COLUMNS and len(rows) == len(cells) == len(CELLS)
    for r, j in zip(rows, cells):
        assert float(r["kwh_per_1000"]) == j["kwh_per_1000"] == pytest.approx(j["j_per_inference"] * 1000 / 3.6e6)
        assert j["gco2eq_per_1000"] == pytest.approx(j["kwh_per_1000"] * phprof.grid_intensity("fr").g_co2eq_per_kwh)
        assert j["carbon_grid"] == "France"
    text_cls = next(c for c in view.comparison if c.key == "text-classification")
    assert text_cls.cells == 3 and text_cls.ratio == pytest.approx(text_cls.kwh / 0.002)


# ---- the real thing ------------------------------------------------------------------------------
@pytest.mark.integration
def test_quick_runs_every_task_end_to_end(quick_study):
    run = quick_study
    assert [c.task for c in run.outcome.done] == list(TASKS) and not run.outcome.failed
    rows = list(csv.DictReader(open(run.directory / "study.csv")))
    cells = json.loads((run.directory / "study.json").read_text())["cells"]
    assert [(r["task"], r["model"]) for r in rows] == [(c.task, c.model) for c in grid.plan(quick=True)]
    for r, j in zip(rows, cells):
        assert r["status"] == "done" and r["size"] == "tiny" and int(r["inferences"]) == 2
        assert r["sensor"].startswith("nvml (gpu0: NVIDIA A100") and r["device"] == "cpu"
        assert r["energy"] == "estimated" and r["energy_method"] and r["run_energy"] == "measured"
        assert r["run_method"] == "energy counter"
        assert 0 <= j["run_kwh_per_1000_low"] <= j["run_kwh_per_1000"] <= j["run_kwh_per_1000_high"]
        assert 0 < j["kwh_per_1000"] and float(r["kwh_per_1000"]) == j["kwh_per_1000"]
        assert j["gco2eq_per_1000"] == pytest.approx(j["kwh_per_1000"] * j["carbon_g_per_kwh"])
        assert (run.directory / r["report"]).is_file() and (run.directory / r["trace"]).is_file()
        generates = TASKS[r["task"]].call == "generate"
        assert (j["j_per_token"] is not None) == generates and (j["j_per_image"] is not None) == (
            r["task"] == "text-to-image")
        assert 0 < int(r["parameters"]) < 20e6  # the tiny models, as traced
    md = (run.directory / "study.md").read_text()
    assert all(f"## {task}" in md for task in TASKS) and "## This run beside the paper" in md
    compared = {c.key: c for c in run.view.comparison if c.cells}
    assert set(compared) == (set(TASKS) - set(grid.ZERO_SHOT_TASKS)) | {"google/flan-t5-base"}
    assert compared["google/flan-t5-base"].cells == 3


def _wait(what, ready, timeout_s=600.0):
    deadline = time.monotonic() + timeout_s
    while not (value := ready()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.05)
    return value


@pytest.mark.integration
def test_a_study_killed_mid_cell_and_run_again_finishes_every_cell_once(tmp_path, monkeypatch):
    """`phprof study` (the command, in a subprocess) over a real cell and one that fails (a config
    with an activation transformers does not know: `phprof trace` refuses it), killed (SIGKILL) while the first cell's trace
    is recording, then run again: every cell once, the failed one tried twice and reported. Then
    the same grid in two shards (as two machines would run them), merged: the same cells, with
    the same figures of what ran (the energies and times of two runs differ)."""
    bad = tmp_path / "crashes" / "config.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                               "activation_function": "no-such-activation"}))
    good = grid.QUICK["text-classification"]
    folder = tmp_path / "study"
    command = [sys.executable, "-m", "phprof", "study", "--models", f"{good},{bad}", "-n", "2", "--size", "tiny", "--warmup", "0", "--idle", "1",
               "--source", "none", "--gpus", "none", "-o", str(folder)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    cell = next(c for c in grid.plan(models=[good]))
    manifest, partial = runner.cell_dir(folder, cell) / runner.MANIFEST, runner.cell_dir(folder, cell) / runner.PARTIAL
    # the known point: the cell's trace has started recording (its file exists: the idle second runs)
    _wait("the first cell's trace file", partial.exists)
    pid = json.loads(manifest.read_text())["attempts"][0]["pid"]
    os.kill(pid, signal.SIGSTOP)  # held there while the study dies
    assert not (runner.cell_dir(folder, cell) / runner.TRACE).exists(), "the cell ended before the kill"
    first.kill()
    first.wait()
    os.kill(pid, signal.SIGCONT)  # it was told to stop when the study died (SIGTERM): it does
    _wait("the killed study's cell process to end", lambda: not runner._alive(pid), timeout_s=120)
    assert json.loads(manifest.read_text())["status"] == "running"
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 1, again.stderr  # a cell failed
    assert "1 cells failed" in again.stderr and "crashes" in again.stderr
    rows = list(csv.DictReader(open(folder / "study.csv")))
    assert [(r["model"], r["status"]) for r in rows] == [(good, "done"), (str(bad), "failed")]
    assert rows[1]["error"].startswith("Error: ") and "it names 'no-such-activation'" in rows[1]["error"]
    assert [a["outcome"] for a in json.loads(manifest.read_text())["attempts"]] == ["interrupted", "complete"]
    bad_cell = next(c for c in grid.plan(models=[str(bad)]))
    assert [a["outcome"] for a in _manifest(folder, bad_cell)["attempts"]] == ["failed", "failed"]
    assert rows[0]["energy"] == "not measured" and float(rows[0]["seconds_per_inference"]) > 0
    assert not partial.exists()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    shards = []
    for i in (1, 2):
        run = phprof.study(models=[good, str(bad)], shard_of=f"{i}/2", output=tmp_path / f"shard{i}", gpus="none",
                           inferences=2, size="tiny", warmup=0, idle_s=1, source="none")
        shards.append([(c.task, c.model) for c in run.cells])
    assert shards == [[("text-classification", good)], [("text-generation", str(bad))]]
    study_merge([tmp_path / "shard1", tmp_path / "shard2"], output=tmp_path / "merged")
    merged = list(csv.DictReader(open(tmp_path / "merged" / "study.csv")))
    same = ("task", "model", "kind", "modality", "parameters", "size", "status", "device", "device_name", "sensor",
            "inferences", "energy", "run_energy", "error")
    assert [{k: r[k] for k in same} for r in merged] == [{k: r[k] for k in same} for r in rows]
    assert (tmp_path / "merged" / merged[0]["report"]).is_file()
