"""`phprof.trace` on this machine's CPU: every task, the file's contents, interruption (of the
`phprof trace` command, in a subprocess), bad input to the library (the command's one-line
errors for bad input are in test_commands_record.py)."""
from __future__ import annotations

import signal

import h5py
import numpy as np
import pytest
from session_traces import ONE_PER_TASK  # one model of every task of the study, traced once per session

from phprof import models
from phprof.energy import Method
from phprof.store import load
from phprof.tracing.run import TraceError, trace

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_one_model_per_task_covers_every_task():
    assert set(ONE_PER_TASK) == set(models.TASKS)


@pytest.mark.integration
@pytest.mark.parametrize("task, model", sorted(ONE_PER_TASK.items()))
def test_trace_every_task(traced_without_power, task, model):
    out, s = traced_without_power(model, task)  # 3 inferences after 1 warm-up, no power source
    n = 3
    assert s.status == "complete" and s.inferences == n and s.energy is None
    t = load(out)
    assert t.complete and t.meta["task"] == task and t.meta["model"] == model
    assert t.meta["options"]["warmup"] == 1 and "no power sensor (source 'none'): time only" in " ".join(s.notes)
    # no device named, and torch sees no GPU here: the CPU, and the summary says so
    assert (s.device, s.device_chosen, s.source) == ("cpu", True, "none (time only)")
    assert (t.summary["device"], t.summary["power_source"]) == ("cpu", "none (time only)")
    ev = t.events

    # every module of the model is in the file; every module that ran is a scope
    scopes = {s for i in np.unique(ev["stack"]) for s in t.stack_path(int(i))}
    called = {t.strings[m["path"]] for m in t.modules if m["calls"] > 0}
    assert len(t.modules) > 5 and called and called <= scopes
    assert scopes - called == set()  # and no scope that is not a module

    # every op falls in exactly one inference, inside that inference's span
    assert set(t.inferences["index"]) == set(range(n))
    assert (ev["inference"] >= 0).all() and (ev["inference"] < n).all()
    span = {int(i["index"]): (i["start_ns"], i["end_ns"]) for i in t.inferences}
    cpu = ev[ev["device"] < 0]
    starts = np.array([span[int(i)][0] for i in cpu["inference"]])
    ends = np.array([span[int(i)][1] for i in cpu["inference"]])
    assert ((cpu["start_ns"] >= starts) & (cpu["end_ns"] <= ends)).all()
    # the per-inference totals add up to the run's
    per_inference = np.bincount(ev["inference"], minlength=n)
    assert per_inference.sum() == len(ev) and (per_inference > 0).all()
    assert sum(w["events"] for w in t.windows) == len(ev)
    # and inferences do not overlap
    order = np.sort(t.inferences["start_ns"])
    assert (np.sort(t.inferences["end_ns"])[:-1] <= order[1:]).all()

    # phases: generation steps, denoising steps, or one forward pass per inference
    phases = [t.strings[p] for p in t.phases["name"][t.phases["inference"] == 0]]
    kind = models.get_task(task).call
    if kind == "forward":
        assert phases == ["forward"]
    elif kind == "generate":
        assert phases[0] in ("prefill", "encode") and any(p.startswith("decode.") for p in phases)
    else:
        assert any(p.startswith("denoise.") for p in phases) and "vae_decode" in phases
    assert t.meta["config_hash"] and t.meta["versions"]["torch"]


@pytest.mark.integration
def test_energy_from_the_fake_gpu_sensor(gpt2_trace):
    """A CPU run timed against the fake NVML's counter (the session's gpt2 trace): the summary's
    energy is the true energy of the traced inferences' windows, within the uncertainty it states."""
    out, truth = gpt2_trace
    s = truth["summary"]
    t = load(out)
    assert len(t.windows) >= 2 and len(t.idle.readings) > 100 and t.power.source == "nvml"
    assert s.energy.measured and s.energy.method is Method.COUNTER and s.energy.energy.method_text == "energy counter"
    assert abs(s.energy.joules - truth["windows_j"]) <= s.energy.uncertainty_j
    assert s.joules_per_inference == pytest.approx(s.energy.joules / truth["inferences"])
    assert t.summary["energy_j"] == pytest.approx(s.energy.joules)
    assert s.source.startswith("nvml (gpu0: ") and t.summary["power_source"] == s.source


def test_the_default_device_is_the_first_cuda_device_torch_sees(monkeypatch):
    import torch

    from phprof.tracing.session import default_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device() == "cuda:0"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == "cpu"


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_leaves_a_valid_file_marked_incomplete(interrupted_runs, sig):
    """`phprof trace` in a subprocess (tests/conftest.py started it, and stopped it once its first
    window was in its file), signalled, and resumed to handle the signal."""
    run = interrupted_runs[sig]
    assert run.parked.wait(timeout=1800), "the run was never started"
    if run.error:
        pytest.fail(run.error)
    with h5py.File(run.out, "r", locking=False) as f:  # its first window is in the file
        assert f["windows"].shape[0] >= 1
    run.proc.send_signal(sig)
    run.proc.send_signal(signal.SIGCONT)
    run.proc.wait(timeout=300)
    err, out = run.stderr(), run.out
    assert run.proc.returncode != 0 and "stopping after this inference" in err, err
    t = load(out)
    assert t.status == "interrupted" and not t.complete
    assert len(t.windows) >= 1 and len(t.inferences) >= 1
    done = set(t.inferences["index"])
    for w in t.windows:  # no inference half-written: each window's, from its first to its last (the warm-up
        # steps before each window are not recorded)
        assert set(t.inferences["index"][t.inferences["window"] == w["index"]]) == \
            set(range(w["first_inference"], w["last_inference"] + 1))
    assert set(np.unique(t.events["inference"])) <= done


def _twice(sig=signal.SIGINT):
    """Ctrl-C (or SIGTERM) twice, each handled at once (raise_signal runs the handler before it returns)."""
    signal.raise_signal(sig)
    signal.raise_signal(sig)


def _twice_during_one_cxx_call():
    """Ctrl-C twice, 50 ms apart, from another thread while this one is inside one long C++ call
    (as in a profiler window's hand-over): Python runs the handler only once that call returns."""
    import os
    import threading
    import time

    import torch

    def send():
        time.sleep(0.2)  # this thread is in the C++ call by then
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)

    a = torch.ones(1500, 1500)  # 40th power: 1.6 s on one idle core
    sender = threading.Thread(target=send)
    sender.start()
    while sender.is_alive():
        torch.linalg.matrix_power(a, 40)  # C++ from start to end, signals or not
    sender.join()


@pytest.mark.integration
@pytest.mark.parametrize("during", ["between inferences", "an inference", "one C++ call"])
def test_a_second_ctrl_c_aborts_and_the_file_holds_the_windows_saved(tmp_path, during):
    """The first signal asks to stop after the inference, the second aborts: between inferences it
    drops the window being saved; during an inference it cuts it short; two that come while Python
    waits for a C++ call are two. Either way the file is valid, interrupted, and holds only whole
    inferences: the first window's 10."""
    out = tmp_path / "t.h5"
    calls = []

    def progress(done, total):
        if done == 14 and during != "an inference":
            _twice() if during == "between inferences" else _twice_during_one_cxx_call()

    def setup(model):
        def hook(module, args, output):
            calls.append(1)
            if during == "an inference" and len(calls) == 14 * 2:  # the 14th inference's 2nd forward
                _twice(signal.SIGTERM)
        model.register_forward_hook(hook)

    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    s = trace("gpt2", inferences=1000, warmup=0, output=out, size="tiny", idle_s=0, source="none", new_tokens=2,
              progress=progress, setup=setup, measure_pass=False, window_warmup=0)
    assert s.status == "interrupted" and s.inferences == 10, s.notes
    note = next(n for n in s.notes if n.startswith("aborted after"))
    assert f"aborted after {13 if during == 'an inference' else 14} of 1000 inferences" in note
    assert "the last window was dropped" in note
    t = load(out)
    assert t.status == "interrupted" and sorted(t.inferences["index"]) == list(range(10))
    assert set(np.unique(t.events["inference"])) == set(range(10))
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # put back
    assert signal.set_wakeup_fd(-1) == -1  # and the wakeup pipe taken away


def test_python_api_errors_are_trace_errors():
    with pytest.raises(TraceError, match="at least 1"):
        trace("gpt2", inferences=0)
