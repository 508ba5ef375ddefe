import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import fake_nvml  # noqa: E402


@pytest.fixture(scope="session")
def fake_lib(tmp_path_factory):
    """Path of the fake libnvidia-ml.so.1, built once per session."""
    return fake_nvml.build(tmp_path_factory.mktemp("fake_nvml"))


@pytest.fixture
def fake(fake_lib, tmp_path):
    """A fresh fake NVML state: 2 A100-like devices, seed 1."""
    f = fake_nvml.FakeNvml(fake_lib, tmp_path / "state", n_devices=2, preset="a100", seed=1)
    yield f
    f.close()


@pytest.fixture(scope="session")
def gpt2_trace(tmp_path_factory, fake_lib):
    """A tiny gpt2 traced for ~12 s with every module drawing a known power in the fake:
    (path, truth) with the fake's true energy over the inferences' span and per module."""
    from fake_nvml import OUTSIDE_TAG, OUTSIDE_W, power_per_module

    from phprof.tracing.run import trace

    work = tmp_path_factory.mktemp("attr")
    fake = fake_nvml.FakeNvml(fake_lib, work / "state", n_devices=1, preset="a100", seed=3,
                              ring_capacity=1 << 21)
    levels, tags = {}, {}
    out = work / "gpt2.h5"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PHPROF_NVML_LIB", str(fake_lib))
        trace("gpt2", inferences=60, warmup=0, output=out, size="tiny", idle_s=0.3, source="nvml",
              new_tokens=4, setup=power_per_module(fake, levels, tags, dwell_s=0.0005))
    fake.set_power(0, OUTSIDE_W, tag=OUTSIDE_TAG)
    # the truth, read now: another FakeNvml on the same library would supersede this one
    from phprof import load

    t = load(out)
    span = (int(t.inferences["start_ns"].min()), int(t.inferences["end_ns"].max()))
    truth = {"span": span, "span_j": fake.true_energy(0, *span),
             "modules": {name: fake.tag_energy(0, tag) for name, tag in tags.items()}}
    fake.close()
    return out, truth
