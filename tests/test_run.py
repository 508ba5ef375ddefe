"""`phprof run` and `phprof.profile`: a user's own program, run as plain `python` would run it, under
a recording session. Exit status, sys.argv and __main__, exceptions, a program with no torch module
(in this process, through the library), and Ctrl-C and SIGTERM (`phprof run` in a subprocess)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import phprof
from phprof import load
from phprof.api import run

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::UserWarning")]

# a user's program: a small model, its own Python between calls, prof.inference() marks when asked
PROGRAM = '''
import json, sys, time
import torch
import phprof

model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
what = {"argv": sys.argv, "name": __name__, "path0": sys.path[0], "file": globals().get("__file__")}
json.dump(what, open("seen.json", "w"))
n = int(sys.argv[1])
for i in range(n if n > 0 else 10**9):
    x = torch.randn(4, 8)
    with phprof.inference("step", i=i):
        y = model(x)
    total = float(y.sum())  # the program's own work between calls
    if i == 2:
        print("ready", flush=True)
    if n < 0:
        time.sleep(0.01)
ending = sys.argv[2] if len(sys.argv) > 2 else ""
if ending == "raise":
    raise ValueError("the program's own error")
if ending.isdigit():
    sys.exit(int(ending))
'''


def _program(tmp_path, text=PROGRAM, name="prog.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_script_sees_argv_and_main_as_under_python_and_its_exit_status_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prog = _program(tmp_path)
    ended = run(str(prog), ["3", "7"], output=tmp_path / "t.h5", source="none", idle_s=0)
    assert ended.code == 7 and ended.signal is None
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen == {"argv": [str(prog), "3", "7"], "name": "__main__", "path0": str(tmp_path), "file": str(prog)}
    s = ended.summary  # a program that exits non-zero says it failed: so does its file, with what it ran
    assert s.status == "failed" and s.inferences == 3 and "prof.inference() spans" in s.inference_rule
    t = load(tmp_path / "t.h5")
    assert t.status == "failed" and sorted(t.inferences["index"]) == [0, 1, 2]
    assert t.meta["program"]["argv"] == ["3", "7"] and t.meta["program"]["cwd"] == str(tmp_path)
    assert t.meta["recorded_by"] == "phprof run"
    assert {t.strings[m["path"]] for m in t.modules} >= {"0", "1", "2"}  # the Sequential's children, by path
    assert t.inference_names()[1] == ("step", {"i": 1})


def test_a_module_runs_as_under_python_dash_m(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _program(tmp_path, name="userprog.py")
    ended = run("userprog", ["2", "0"], module=True, output=tmp_path / "t.h5", source="none", idle_s=0)
    assert ended.code == 0  # sys.exit(0)
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["argv"] == [str(tmp_path / "userprog.py"), "2", "0"] and seen["name"] == "__main__"
    assert load(tmp_path / "t.h5").status == "complete"


def test_an_exception_shows_its_traceback_and_the_file_is_failed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    prog = _program(tmp_path)
    ended = run(str(prog), ["2", "raise"], output=tmp_path / "t.h5", source="none", idle_s=0)
    err = capsys.readouterr().err
    assert ended.code == 1
    assert "Traceback (most recent call last)" in err and "ValueError: the program's own error" in err
    assert str(prog) in err and "phprof" not in err.split("Traceback", 1)[1].replace(str(prog), "")
    t = load(tmp_path / "t.h5")
    assert t.status == "failed" and sorted(t.inferences["index"]) == [0, 1]  # the whole ones, kept


def test_a_program_that_runs_no_module_gives_a_time_only_file_and_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prog = _program(tmp_path, "total = sum(i * i for i in range(10000))\n")
    ended = run(str(prog), output=tmp_path / "t.h5", source="none", idle_s=0)
    assert ended.code == 0 and ended.summary.inferences == 0
    assert any("ran no torch.nn.Module" in n for n in ended.summary.notes), ended.summary.notes
    t = load(tmp_path / "t.h5")
    assert t.status == "complete" and len(t.inferences) == 0


@pytest.mark.parametrize("gpus", ["two", "-1", -1, [0, True], True, 1.5])
def test_a_bad_gpus_value_is_an_option_error_naming_it(gpus):
    with pytest.raises(phprof.errors.OptionError, match=r"gpus=.*give auto, all, none \(the CPU\), or CUDA indices"):
        phprof.profile("unused.h5", gpus=gpus)


def test_without_marks_each_outermost_call_is_an_inference(tmp_path):
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    with phprof.profile(tmp_path / "t.h5", gpus=None, source="none", idle_s=0) as prof:
        for _ in range(4):
            model(torch.randn(2, 4))
    s = prof.summary
    assert s.inferences == 4 and "each outermost call" in s.inference_rule
    assert sorted(load(s.path).inferences["index"]) == [0, 1, 2, 3]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_leave_an_interrupted_file_of_whole_inferences(tmp_path, sig):
    """`phprof run` in a subprocess on a program that never ends by itself: signalled once it has run
    3 inferences, it stops at the end of the inference, saves the file, and dies of the signal as
    plain python would."""
    prog = _program(tmp_path)
    out = tmp_path / "t.h5"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([Path(sys.executable).parent / "phprof", "run", "--idle", "0", "--source", "none",
                             "-o", str(out), str(prog), "-1"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -sig, err
    t = load(out)
    assert t.status == "interrupted" and len(t.inferences) >= 3, err
    done = set(t.inferences["index"].tolist())
    assert done == set(range(len(done)))  # no inference half-written
    assert set(np.unique(t.events["inference"]).tolist()) <= done


PROGRAMS = Path(__file__).resolve().parent / "programs"


@pytest.fixture
def saved_lm(tmp_path, monkeypatch):
    """A tiny GPT-2 and its tokenizer saved with save_pretrained (tests/programs/tiny_lm.py), offline."""
    sys.path.insert(0, str(PROGRAMS))
    try:
        import tiny_lm
    finally:
        sys.path.remove(str(PROGRAMS))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tiny_lm.save(tmp_path / "lm")


@pytest.mark.parametrize("marks", [True, False])
def test_a_pipeline_script_with_and_without_marks_has_its_generate_calls_and_phases(tmp_path, monkeypatch, marks,
                                                                                    saved_lm):
    """tests/programs/generate_text.py: a model saved with save_pretrained, loaded through a Hugging
    Face pipeline, the script's own tokenisation and post-processing between calls. Marked or not,
    each pipeline call is one inference, with the phases `phprof trace` writes."""
    monkeypatch.chdir(tmp_path)
    args = [str(saved_lm), "-n", "3", "--new-tokens", "3"] + ([] if marks else ["--no-marks"])
    ended = run(str(PROGRAMS / "generate_text.py"), args, output=tmp_path / "t.h5", source="none", idle_s=0)
    assert ended.code == 0
    s = ended.summary
    assert s.inferences == 3
    assert ("3 prof.inference() spans" if marks else "3 generate() calls") in s.inference_rule
    t = load(s.path)
    phases = [t.strings[p["name"]] for p in t.phases]
    assert sorted(phases) == sorted(["prefill", "decode.1", "decode.2"] * 3)
    paths = {t.strings[m["path"]] for m in t.modules if m["calls"] > 0}
    assert {"transformer.h.0.attn.c_attn", "lm_head"} <= paths
    if marks:
        assert t.inference_names()[0][0] == "generate"


def test_the_recordings_whole_energy_is_the_counters_however_long_the_profiler_took_to_start(tmp_path, fake,
                                                                                              monkeypatch):
    """The summary's "recorded for X s, Y J in all": the energy counter read around the recording's
    own start and end, not around the first readings after the idle period (a second of warm-up
    here, as a slow profiler start would be), and on a run shorter than the readings kept at each end."""
    import time

    import torch

    from phprof.tracing.session import Profile

    for k, v in fake.env.items():
        monkeypatch.setenv(k, v)
    model = torch.nn.Linear(8, 8)
    session = Profile(tmp_path / "t.h5", device="cpu", source="nvml", sensor_gpu=0, idle_s=0.2,
                      warmup=lambda: time.sleep(1.0))
    with session as prof:
        for _ in range(20):  # 0.6 s: longer than the readings kept at the end
            with prof.inference():
                model(torch.randn(2, 8))
            time.sleep(0.03)
    (m,) = session.summary.recording_energy
    truth = fake.true_energy(0, session.started_ns, session.ended_ns)
    assert m.low_j <= truth <= m.high_j and m.joules == pytest.approx(truth, rel=0.1), (m, truth)


# Issue 18's ground truth on a user's script, at a length CI affords: 20 calls of 4 tokens, each
# module's forward busy-waiting 1.5 ms after switching the fake's power (260 waits a call), so a run
# lasts >= 8 s (~80 updates of the 101 ms sensor) on however fast a machine. The script cleans and
# tokenises a context document of 40,000 words in Python around each call (~0.1 s on a 2-core VM,
# ~20% of the run). tools/bench_attribution.py --script runs the same for >= 60 s, over seeds,
# against the issue's targets (worst layer <= 3% of the inferences' energy, truth in the 90% interval
# for >= 85% of layers). At this length (6 runs, seeds 2-4, marked and not, on a busy 2-core VM):
# worst layer 0.46-1.69%, truth inside its interval for 71% of 182 layers (65-81% a run), the time
# between inferences within 0.2% of its truth: the test holds the 3% and a coverage of 45%.
GROUND_TRUTH = {"calls": 48, "new_tokens": 4, "context_words": 40_000, "dwell_s": 0.0015, "coverage": 0.45}


@pytest.mark.parametrize("marks", [True, False])
def test_a_pipeline_scripts_layers_and_its_python_between_calls_get_their_true_energy(tmp_path, monkeypatch, marks,
                                                                                     saved_lm, fake_lib):
    """tests/programs/generate_text.py under `phprof run` against the fake GPU, every module the
    script's pipeline calls drawing its own known power (OUTSIDE_W while none runs): each resolved
    layer's energy within 3% of the inferences' energy of its truth (the fake's power over the
    layer's own time), most truths inside their 90% intervals, and the time between inferences
    (the script's own tokenising and counting, phprof's pauses and saves) a row of its own, the
    report's "between them", with its own true energy. Marked (prof.inference()) or not (each
    generate() call)."""
    import dataclasses

    import fake_nvml
    from fake_nvml.truth import compare, errors, run_program

    from phprof.energy import Method
    from phprof.render.units import joules

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PHPROF_NVML_LIB", str(fake_lib))  # restored after the test (run_program sets it)
    g = GROUND_TRUTH
    fake = fake_nvml.FakeNvml(fake_lib, tmp_path / "state", n_devices=1, preset="a100", seed=5,
                              ring_capacity=1 << 21)
    fake.configure(0, "power_instant", dataclasses.replace(fake.get_model(0, "power_instant"), lag_s=0.005))
    out = tmp_path / "t.h5"
    args = [saved_lm, "-n", g["calls"], "--new-tokens", g["new_tokens"], "--context-words", g["context_words"]]
    try:
        ended, tags = run_program(fake, PROGRAMS / "generate_text.py", args + ([] if marks else ["--no-marks"]), out,
                                  g["dwell_s"], idle_s=0.5)
        assert ended.code == 0
        s = ended.summary
        assert s.inferences == g["calls"] and s.source.startswith("nvml")
        rule = f"{g['calls']} prof.inference() spans" if marks else f"marked none ({g['calls']} generate() calls)"
        assert rule in s.inference_rule, s.inference_rule
        r = compare(out, fake, tags)
    finally:
        fake.close()
    err, inside = errors(r)
    res = r["results"]
    # not vacuous: resolved by the sensor's windows into many layers, not split by time
    assert res.method is Method.WLS and len(r["rows"]) >= 15, (res.method, len(r["rows"]), res.notes)
    assert max(err) <= 0.03, sorted(zip(err, r["rows"]))[-3:]
    assert np.mean(inside) >= g["coverage"], [row for row, ok in zip(r["rows"], inside) if not ok]
    # the Python between calls: its own row, with its own energy, none of it given to the modules
    label, truth, e, lo, hi = r["between"]
    assert r["between_s"] >= g["calls"] * 0.005  # the script's tokenising and counting, at the least
    assert abs(e - truth) <= 0.01 * r["inferences_j"], r["between"]
    text = phprof.render(phprof.report(out), "text")
    # the report's line: the (idle) row with phprof's window saves beside it (rows of their own)
    between = f"between them: {joules(res.between_inferences_j)} in {res.span_s - res.inference_s:.1f} s"
    assert between in text, text[:2000]
