"""The traces of real (tiny) models that the tests share, made once per session.

tests/conftest.py runs this file as a background process as soon as collection shows which of
them the selected tests need (``python tests/session_traces.py JOB_DIR KEY...``): it makes them
one after the other while the fast tier runs, each into ``JOB_DIR/<key>/``, and announces each
with ``JOB_DIR/<key>.pkl`` (what the fixture returns, pickled; written last, by a rename) or
``JOB_DIR/<key>.err`` (the traceback). A fixture whose trace no job makes calls :func:`make`
itself.

Keys: ``gpt2`` (the fake GPU, every module drawing a known power, with the truth), ``t5``
(Flan-T5, the fake GPU), ``t5-small`` (a relu T5 from a config.json, the fake GPU), ``bloomz``
(the fake GPU's default power), ``none/MODEL/TASK`` (no power source), and ``study-quick`` (`phprof
study --quick` over every task, the fake GPU).
"""
from __future__ import annotations

import json
import os
import pickle
import sys
import traceback
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

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
# every (model, task) traced without power: one per task, and a convolutional image classifier
NO_POWER = [(model, task) for task, model in sorted(ONE_PER_TASK.items())] + [
    ("microsoft/resnet-18", "image-classification")]

# ---- gpt2 against the fake GPU, every module drawing a known power ------------------------------
GPT2_INFERENCES, GPT2_NEW_TOKENS = 30, 4
# Each forward busy-waits this long after switching the fake's power (and each parent again after
# a child returns): 244 waits per inference of 4 tokens, so a run of 30 lasts at least
# 30 x 244 x 1.5 ms = 11 s, ~110 updates of a 100 ms sensor, on however fast a machine: enough for
# the per-layer estimate to resolve every label (its test fails, rather than passes vacuously, if not).
GPT2_DWELL_S = 0.0015

T5_SMALL = {  # t5-small's published config (not among the study's ids): its feed-forward is
    # DenseReluDense.wi (flan-t5's is gated, wi_0/wi_1)
    "model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "d_model": 512, "d_ff": 2048, "d_kv": 64,
    "num_layers": 6, "num_decoder_layers": 6, "num_heads": 8, "vocab_size": 32128, "is_encoder_decoder": True,
    "relative_attention_num_buckets": 32, "feed_forward_proj": "relu", "decoder_start_token_id": 0,
    "pad_token_id": 0, "eos_token_id": 1,
}


# `phprof trace` runs that tests/test_trace.py interrupts with a signal (conftest.py starts them
# after the job, and parks each, SIGSTOP, once its first profiler window is in its file)
INTERRUPTED_RUN = ["gpt2", "--size", "tiny", "-n", "100000", "--warmup", "0", "--new-tokens", "2", "--idle", "0",
                   "--no-measure-pass"]
# The traces whose truth is the fake's energy per module tag run no measurement pass and no warm-up
# steps before windows: every inference the hooks draw power in is then a recorded one.
TRUTH_ONLY = {"measure_pass": False, "window_warmup": 0}


def no_power_key(model: str, task: str) -> str:
    return f"none/{model}/{task}"


def file_name(key: str) -> str:
    return key.replace("/", "--")


class _FakeGpu:
    """A fake NVML state of one A100 for one trace, with PHPROF_NVML_LIB pointing at the library."""

    def __init__(self, fake_lib, work: Path, seed: int, ring_capacity: int = 262144) -> None:
        import fake_nvml

        self.fake = fake_nvml.FakeNvml(fake_lib, work / "state", n_devices=1, preset="a100", seed=seed,
                                       ring_capacity=ring_capacity)
        self._old = os.environ.get("PHPROF_NVML_LIB")
        os.environ["PHPROF_NVML_LIB"] = str(fake_lib)

    def __enter__(self):
        return self.fake

    def __exit__(self, *exc) -> None:
        if self._old is None:
            os.environ.pop("PHPROF_NVML_LIB", None)
        else:
            os.environ["PHPROF_NVML_LIB"] = self._old
        self.fake.close()


def _gpt2(work: Path, fake_lib):
    """A tiny gpt2 traced for >= 11 s (anti-aliasing on) with every module drawing a known power in
    the fake: (path, truth) with the fake's true energy over the inferences' span, over the
    profiler windows and per module, the run's summary, and its inference and token counts."""
    from fake_nvml import OUTSIDE_TAG, OUTSIDE_W, power_per_module

    from phprof import load
    from phprof.tracing.run import trace

    levels, tags = {}, {}
    out = work / "gpt2.h5"
    with _FakeGpu(fake_lib, work, seed=3, ring_capacity=1 << 21) as fake:
        summary = trace("gpt2", inferences=GPT2_INFERENCES, warmup=1, output=out, size="tiny", idle_s=0.3,
                        source="nvml", new_tokens=GPT2_NEW_TOKENS, **TRUTH_ONLY,
                        setup=power_per_module(fake, levels, tags, dwell_s=GPT2_DWELL_S))
        fake.set_power(0, OUTSIDE_W, tag=OUTSIDE_TAG)
        # the truth, read now: another FakeNvml on the same library would supersede this one
        t = load(out)
        span = (int(t.inferences["start_ns"].min()), int(t.inferences["end_ns"].max()))
        truth = {"span": span, "span_j": fake.true_energy(0, *span),
                 "windows_j": sum(fake.true_energy(0, int(w["start_ns"]), int(w["end_ns"])) for w in t.windows),
                 "modules": {name: fake.tag_energy(0, tag) for name, tag in tags.items()},
                 "summary": summary, "inferences": GPT2_INFERENCES, "new_tokens": GPT2_NEW_TOKENS}
    return out, truth


def _t5(work: Path, fake_lib):
    """A tiny Flan-T5 on zero-shot summarization, 20 inferences of 4 new tokens, every module
    drawing its own power in the fake GPU."""
    from fake_nvml import power_per_module

    from phprof.tracing.run import trace

    out = work / "flan-t5.h5"
    with _FakeGpu(fake_lib, work, seed=5, ring_capacity=1 << 21) as fake:
        trace("google/flan-t5-base", task="zero-shot-summarization", inferences=20, warmup=0, output=out,
              size="tiny", idle_s=0.3, source="nvml", new_tokens=4, setup=power_per_module(fake, {}, {}), **TRUTH_ONLY)
    return out


def _t5_small(work: Path, fake_lib):
    """t5-small's config.json (a path, not a built-in id) traced on zero-shot summarization, shrunk
    to its tiny size (the same architecture and module paths), every module drawing its own power
    in the fake GPU."""
    from fake_nvml import power_per_module

    from phprof.tracing.run import trace

    config = work / "t5-small" / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps(T5_SMALL))
    out = work / "t5.h5"
    with _FakeGpu(fake_lib, work, seed=5, ring_capacity=1 << 21) as fake:
        trace(str(config), "zero-shot-summarization", inferences=8, warmup=0, output=out, size="tiny",
              idle_s=0.2, source="nvml", new_tokens=3, seq_len=32, setup=power_per_module(fake, {}, {}, dwell_s=0.0003),
              **TRUTH_ONLY)
    return out


def _bloomz(work: Path, fake_lib):
    """A tiny BLOOMz-560m, 3 inferences of 2 new tokens, timed against the fake GPU (its default
    power): a trace with energy."""
    from phprof.tracing.run import trace

    out = work / "bloomz.h5"
    with _FakeGpu(fake_lib, work, seed=1):
        trace("bigscience/bloomz-560m", inferences=3, warmup=0, output=out, size="tiny", idle_s=0.1,
              source="nvml", new_tokens=2)
    return out


def _no_power(work: Path, model: str, task: str):
    """(path, summary): `model` traced tiny for `task` on this CPU with no power source: 3
    inferences after 1 warm-up, 2 new tokens (generation) or 2 denoising steps (diffusion)."""
    from phprof import models
    from phprof.tracing.run import trace

    out = work / "trace.h5"
    options = {"new_tokens": 2} if models.get_task(task).call == "generate" else {}
    s = trace(model, task, inferences=3, warmup=1, output=out, size="tiny", idle_s=0, source="none", steps=2,
              measure_pass=False, window_warmup=0, **options)  # passes, warm-ups: test_passes, test_windows_schedule
    return out, s


def _study_quick(work: Path, fake_lib):
    """`phprof study --quick` over every task (phprof.study: each cell a `phprof trace` process, 2
    inferences of the tiny model, 2 new tokens, 2 denoising steps) timed against the fake GPU:
    the study's run (phprof.study.StudyRun)."""
    import phprof

    saved = dict(os.environ)
    with _FakeGpu(fake_lib, work, seed=2) as fake:
        os.environ.update(fake.env, HF_HUB_OFFLINE="1")  # what the cells' processes need to see the fake
        try:
            return phprof.study(quick=True, output=work / "study", gpus="none", inferences=2, size="tiny", warmup=0,
                                idle_s=0.2, source="nvml", new_tokens=2, steps=2)
        finally:
            os.environ.clear()
            os.environ.update(saved)


_MAKERS = {"gpt2": _gpt2, "t5": _t5, "t5-small": _t5_small, "bloomz": _bloomz, "study-quick": _study_quick}


def make(key: str, work: Path, fake_lib):
    """Makes the trace `key` in the folder `work`; returns what its fixture returns."""
    import warnings

    work.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # transformers' and torch's notices on tiny models
        if key.startswith("none/"):
            _, task = key.rsplit("/", 1)
            model = key[len("none/"):-len(task) - 1]
            return _no_power(work, model, task)
        return _MAKERS[key](work, fake_lib)


def _exit_with(parent: int) -> None:
    """Ends this process once its parent (the pytest session) is gone, however that ended."""
    import threading
    import time

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main(job: Path, keys: list[str]) -> None:
    _exit_with(os.getppid())
    sys.path.insert(0, str(REPO / "tools"))
    import fake_nvml

    fake_lib = None
    for key in keys:
        name = file_name(key)
        try:
            if key in _MAKERS and fake_lib is None:
                fake_lib = fake_nvml.build(job / "fake_nvml")
            result = make(key, job / name, fake_lib)
            tmp = job / f".{name}.pkl"
            tmp.write_bytes(pickle.dumps(result))
            tmp.rename(job / f"{name}.pkl")
        except BaseException:
            (job / f"{name}.err").write_text(traceback.format_exc())
            if not isinstance(sys.exc_info()[1], Exception):
                raise


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
