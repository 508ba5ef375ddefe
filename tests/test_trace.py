"""`phprof.trace` on this machine's CPU: every task, the file's contents, interruption (of the
`phprof trace` command, in a subprocess), bad input to the library (the command's one-line
errors for bad input are in test_commands_record.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from phprof import models
from phprof.energy import Method
from phprof.store import load
from phprof.tracing.run import TraceError, trace

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# one model of every task of the study (tiny sizes: the architecture, two narrow layers)
ONE_PER_TASK = {
    "text-classification": "distilbert-base-uncased-finetuned-sst-2-english",
    "token-classification": "elastic/distilbert-base-cased-finetuned-conll03-english",
    "question-answering": "deepset/roberta-base-squad2",
    "fill-mask": "bert-base-uncased",
    "text-generation": "gpt2",
    "summarization": "sshleifer/distilbart-xsum-12-6",
    "image-classification": "google/vit-base-patch16-224",
    "object-detection": "hustvl/yolos-tiny",
    "image-to-text": "nlpconnect/vit-gpt2-image-captioning",
    "text-to-image": "segmind/tiny-sd",
    "zero-shot-sentiment": "google/flan-t5-base",
    "zero-shot-qa": "bigscience/bloomz-560m",
    "zero-shot-summarization": "google/flan-t5-base",
}


def test_one_model_per_task_covers_every_task():
    assert set(ONE_PER_TASK) == set(models.TASKS)


@pytest.mark.parametrize("task, model", sorted(ONE_PER_TASK.items()))
def test_trace_every_task(tmp_path, task, model):
    out = tmp_path / "t.h5"
    n = 3
    s = trace(model, task, inferences=n, warmup=1, output=out, size="tiny", idle_s=0, source="none", steps=2)
    assert s.status == "complete" and s.inferences == n and s.energy is None
    t = load(out)
    assert t.complete and t.meta["task"] == task and t.meta["model"] == model
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


def test_energy_from_the_fake_gpu_sensor(tmp_path, fake, fake_lib, monkeypatch):
    """A CPU run timed against the fake NVML's counter: the summary's energy is the
    true energy of the traced inferences, within the uncertainty it states."""
    monkeypatch.setenv("PHPROF_NVML_LIB", str(fake_lib))
    fake.set_power(0, 250.0)
    out = tmp_path / "t.h5"
    s = trace("gpt2", inferences=40, warmup=1, output=out, size="tiny", idle_s=0.3, source="nvml",
              events_per_window=20_000)
    t = load(out)
    assert len(t.windows) >= 2 and len(t.idle.readings) > 100 and t.power.source == "nvml"
    truth = sum(fake.true_energy(0, int(w["start_ns"]), int(w["end_ns"])) for w in t.windows)
    assert s.energy.measured and s.energy.method is Method.COUNTER and s.energy.energy.method_text == "energy counter"
    assert abs(s.energy.joules - truth) <= s.energy.uncertainty_j
    assert s.joules_per_inference == pytest.approx(s.energy.joules / 40)
    assert t.summary["energy_j"] == pytest.approx(s.energy.joules)


def _start_cli(args, tmp_path, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.Popen([Path(sys.executable).parent / "phprof", "trace", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_leaves_a_valid_file_marked_incomplete(tmp_path, sig):
    out = tmp_path / "t.h5"
    p = _start_cli(["gpt2", "--size", "tiny", "-n", "100000", "--idle", "0", "-o", str(out)], tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait for a finished window (peeking past the writer's file lock)
        time.sleep(0.2)
        try:
            with h5py.File(out, "r", locking=False) as f:
                if f["windows"].shape[0] >= 1:
                    break
        except (OSError, KeyError):
            pass
    else:
        pytest.fail("no window was written within 120 s")
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0
    t = load(out)
    assert t.status == "interrupted" and not t.complete
    assert len(t.windows) >= 1 and len(t.inferences) >= 1
    done = set(t.inferences["index"])
    assert done == set(range(len(done)))  # no inference half-written
    assert set(np.unique(t.events["inference"])) <= done


def test_python_api_errors_are_trace_errors():
    with pytest.raises(TraceError, match="at least 1"):
        trace("gpt2", inferences=0)
