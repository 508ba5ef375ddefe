"""Aliasing between a periodic workload and a windowed sensor: detected, and broken."""
from __future__ import annotations

import re

import numpy as np
import pytest

from phprof import load, trace
from phprof.sources.sensors import NOMINAL_INSTANT, phase_coverage
from phprof.tracing.aliasing import AliasBreaker


def windows_over(inference_ms: float, n_updates: int = 300, period_ms: float = 100.0):
    starts = np.arange(0, n_updates * period_ms + 1000, inference_ms) * 1e6
    centres = (np.arange(n_updates) * period_ms + 37.0) * 1e6
    return centres, starts, starts + inference_ms * 1e6


def test_an_inference_period_dividing_the_sensor_period_is_aliasing():
    cov = phase_coverage(*windows_over(25.0))  # 100 ms / 25 ms: every window at the same phase
    assert cov.aliased and cov.covered <= 0.05 and "aliasing" in cov.describe()


def test_an_incommensurate_period_is_not():
    cov = phase_coverage(*windows_over(27.3))
    assert not cov.aliased and cov.covered > 0.9


def test_the_breakers_pauses_restore_coverage():
    period, inference = 100.0, 25.0
    breaker = AliasBreaker(period / 1e3, seed=3)
    t, starts = 0.0, []
    while t < 30_000:
        starts.append(t)
        t += inference
        t += breaker.pause_after(inference / 1e3, t / 1e3) * 1e3
    starts = np.array(starts) * 1e6
    centres = (np.arange(290) * period + 37.0) * 1e6
    cov = phase_coverage(centres, starts, starts + inference * 1e6)
    assert not cov.aliased and cov.covered > 0.9
    # at most one inference of pause per sensor period, half on average
    assert breaker.paused_s < 0.75 * inference / 1e3 * (30_000 / period)


@pytest.mark.integration
def test_trace_pauses_and_reports_coverage_with_a_gpu_sensor(gpt2_trace):
    """The session's gpt2 run against the fake GPU (anti-aliasing on by default)."""
    out, truth = gpt2_trace
    s = truth["summary"]
    notes = " ".join(s.notes)
    assert "anti-aliasing pauses between inferences" in notes
    # with the pauses on, the run is not aliased: the coverage note says so, with enough windows
    # for aliasing to be detectable at all (phase_coverage needs as many as it has bins)
    assert "aliasing:" not in notes
    covered = re.search(r"the sensor's (\d+) windows covered (\d+)% of the inference's duration", notes)
    assert covered, s.notes
    windows, share = int(covered[1]), int(covered[2]) / 100
    assert windows >= 20 and share >= 0.9, s.notes
    t = load(out)
    assert t.meta["options"]["anti_alias"] is True
    gaps = t.inferences["start_ns"][1:] - t.inferences["end_ns"][:-1]
    assert gaps.max() > 1e6  # at least one pause of more than a millisecond
    # the file's own readings say the same: its windows fall all over its inferences
    instants, _ = t.power.instant_power("gpu0")
    centres = instants - round((NOMINAL_INSTANT.lag_s + NOMINAL_INSTANT.window_s / 2) * 1e9)
    cov = phase_coverage(centres, t.inferences["start_ns"], t.inferences["end_ns"])
    assert not cov.aliased and cov.windows >= 20 and cov.covered >= 0.9, cov


class _EagerBreaker(AliasBreaker):
    """Pauses 1 ms after every inference: were a breaker made, the run would pause and say so,
    however fast its inferences."""

    def pause_after(self, inference_s, now):
        self.paused_s += 0.001
        return 0.001


@pytest.mark.integration
def test_no_pauses_without_a_gpu_sensor(tmp_path, monkeypatch, gpt2_trace):
    """Anti-aliasing is on by default, but without a sensor there is nothing to pause for: no
    pauses and no note of them (the gpt2 run with a GPU sensor has that note)."""
    monkeypatch.setattr("phprof.tracing.session.AliasBreaker", _EagerBreaker)  # where the session makes one
    s = trace("gpt2", inferences=2, warmup=0, output=tmp_path / "t.h5", size="tiny", idle_s=0, source="none",
              new_tokens=1)
    assert load(s.path).meta["options"]["anti_alias"] is True
    assert not any("anti-aliasing" in n for n in s.notes)
    assert any("anti-aliasing pauses" in n for n in gpt2_trace[1]["summary"].notes)


@pytest.mark.parametrize("inference_ms", [10.0, 20.0, 50.0])
def test_other_divisors_are_caught(inference_ms):
    assert phase_coverage(*windows_over(inference_ms)).aliased
