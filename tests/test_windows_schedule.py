"""The profiler's window schedule: warm-up steps before every window, windows sized by events and by time."""
from __future__ import annotations

from torch.profiler import ProfilerAction

from phprof.tracing.recorder import Windows

W, R, S, N = ProfilerAction.WARMUP, ProfilerAction.RECORD, ProfilerAction.RECORD_AND_SAVE, ProfilerAction.NONE


def _run(w: Windows, density, steps: int = 10_000) -> list:
    """The actions of each step, advancing after each save as the recorder does (``density(window)``:
    its events and seconds per inference)."""
    actions, windows = [], 0
    for step in range(steps):
        if w.done(step):
            break
        a = w(step)
        actions.append(a)
        if a is S:
            w.advance(*density(windows))
            windows += 1
    return actions


def test_each_window_follows_its_warm_up_steps_and_the_total_is_recorded():
    w = Windows(first=3, budget=1000, total=12, warmup=2)
    actions = _run(w, lambda i: (250.0, 0.01))  # 4 inferences per window
    assert actions == [W, W, R, R, S, W, W, R, R, R, S, W, W, R, R, R, S, W, W, S]
    assert sum(a in (R, S) for a in actions) == 12  # every one asked for is recorded
    assert w(len(actions)) is N  # and nothing after


def test_without_warm_up_every_step_is_recorded():
    w = Windows(first=2, budget=300, total=7)
    assert _run(w, lambda i: (100.0, 0.01)) == [R, S, R, R, S, R, S]


def test_a_window_is_capped_by_time_as_well_as_by_events():
    by_events = Windows(first=1, budget=1000, total=100)
    by_time = Windows(first=1, budget=1000, total=100, window_s=0.5)
    assert _run(by_events, lambda i: (10.0, 0.1)).count(S) == 2  # 1, then 99 (100 allowed by events)
    assert _run(by_time, lambda i: (10.0, 0.1)).count(S) == 1 + 20  # 1, then 5 per window (0.5 s of 0.1 s)


def test_open_ended_the_next_window_starts_after_its_warm_up():
    w = Windows(first=2, budget=100, total=None, warmup=1)
    actions = _run(w, lambda i: (50.0, None), steps=9)
    assert actions == [W, R, S, W, R, S, W, R, S]
    assert w.warming(9) and not w.done(100)
