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
